//! Data: the files and datasets the models train on.
//!
//! - [`dir`]: where the data folder is (`--data-dir`, `DDPM_DATA_DIR`, the checkout's `data/`).
//! - [`idx`]: the IDX file format, read with bounds on every size.
//! - [`mnist`]: MNIST digits from the committed `data/mnist/` files, and batches of them.
//! - [`toy`]: 2-D toy datasets generated from a seed.

pub mod dir;
pub mod idx;
pub mod mnist;
pub mod toy;

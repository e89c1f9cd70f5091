//! Data: the files and datasets the models train on.
//!
//! - [`idx`]: the IDX file format, read with bounds on every size.
//! - [`mnist`]: MNIST digits from the committed `data/mnist/` files, and batches of them.
//! - [`toy`]: 2-D toy datasets generated from a seed.

pub mod idx;
pub mod mnist;
pub mod toy;

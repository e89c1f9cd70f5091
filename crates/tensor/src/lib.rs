//! n-dimensional tensors with hand-written reverse-mode autograd, and the SIMD
//! kernels that make them fast enough to train a UNet on a laptop CPU.
//!
//! Shape legend used across the crate: `N` batch, `C` input channels, `K` output
//! channels, `H`, `W` height and width, `m x k` by `k x n` for matrix products.
//!
//! The tree follows the architecture:
//! - [`shape`], [`layout`]: dimensions, strides and broadcasting;
//! - [`tensor`]: the `Tensor` type (storage + layout + the op that made it);
//! - [`op`]: the enum of primitives; [`backprop`]: the reverse pass over them;
//! - `ops/`: each primitive's forward beside its backward;
//! - [`kernels`]: GEMM and convolution on raw slices;
//! - [`pool`]: tensor buffers reused from one training step to the next;
//! - [`awake`]: rayon's workers kept busy-waiting through a training loop;
//! - [`gradcheck`](mod@gradcheck): finite-difference verification of every gradient.
//!
//! ```
//! use tensor::{no_grad, rng, Tensor};
//! let mut rng = rng(0);
//! let x = Tensor::<f32>::randn(&[4, 3], &mut rng);
//! let w = Tensor::<f32>::randn(&[2, 3], &mut rng).requires_grad();
//! let loss = x.linear(&w, None)?.silu().mean_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[2, 3]);
//! let y = no_grad(|| x.linear(&w, None))?; // no graph recorded
//! assert!(!y.requires_grad_flag());
//! # Ok::<(), tensor::Error>(())
//! ```

pub mod awake;
pub mod backprop;
pub mod element;
pub mod error;
pub mod gradcheck;
pub mod kernels;
pub mod layout;
pub mod op;
pub mod ops;
pub mod pool;
pub mod random;
pub mod shape;
pub mod tensor;

pub use awake::KeepAwake;
pub use backprop::{is_grad_enabled, no_grad, GradStore, NoGradGuard};
pub use element::Float;
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, GradCheck};
pub use layout::Layout;
pub use op::{Op, OpKind};
pub use ops::attention::{attention, attention_composed};
pub use ops::norm::{group_norm_composed, Addend, GroupNormSilu};
pub use random::{rng, Rng};
pub use tensor::{Tensor, TensorId};

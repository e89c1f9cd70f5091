//! The fast numeric kernels under the tensor ops: slice-level functions with
//! out-parameters, no shapes checked beyond `assert!`s, no autograd.
//!
//! - [`gemm`]: general matrix multiply `C <- alpha A B + beta C` on strided
//!   views, BLIS-style (packing + a SIMD microkernel chosen at run time).
//! - [`conv`]: 2-d convolution forward and backward, as im2col + [`gemm`].
//! - [`elementwise`]: the loops of the elementwise ops, compiled for AVX-512
//!   or AVX2 when the CPU has them.
//! - [`peak`]: the machine's f32 peak, measured with an FMA loop on registers.
//! - [`transpose`]: strided matrix transpose (channel-major <-> channels last).
//!
//! Each fast kernel has a naive twin beside it (`gemm_naive`,
//! `conv2d_forward_naive`, ...) that the tests use as the oracle.

pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod peak;
#[cfg(test)]
mod test_scalar;
pub mod transpose;

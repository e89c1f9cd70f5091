//! Compute kernels on raw slices.
pub mod conv;
pub mod gemm;

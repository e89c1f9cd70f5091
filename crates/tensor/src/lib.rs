//! tensor
pub mod kernels;

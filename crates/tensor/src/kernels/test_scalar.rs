//! The element type under test in the kernel tests (GEMM, convolution), seen from
//! their f64 oracles: its unit roundoff, which scales every error bound, and the
//! conversions to and from f64.

use super::gemm::GemmScalar;

/// An element type the kernels run on, as the tests' f64 oracles see it.
pub(crate) trait TestScalar: GemmScalar {
    /// Unit roundoff.
    const U: f64;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl TestScalar for f32 {
    const U: f64 = f32::EPSILON as f64 / 2.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl TestScalar for f64 {
    const U: f64 = f64::EPSILON / 2.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

//! The element type under test in the kernel tests (GEMM, convolution), seen from
//! their f64 oracles: its unit roundoff, the error bound every fast kernel is held
//! to against its naive twin, and the conversions to and from f64.

use super::gemm::GemmScalar;

/// An element type the kernels run on, as the tests' f64 oracles see it.
pub(crate) trait TestScalar: GemmScalar {
    /// Unit roundoff.
    const U: f64;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;

    /// How far a sum of `terms` products, computed in this type in any order, may be
    /// from the f64 oracle: `2 (terms + 2) u sum_p |a_p b_p|`. A dot product of length
    /// k satisfies `|fl(a.b) - a.b| <= gamma_k sum_p |a_p b_p|`, `gamma_k ~ k u`
    /// (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1); the `+ 2`
    /// covers a scaling product and a final addition (GEMM's alpha and beta, the
    /// convolution's bias), the factor 2 is a safety margin.
    fn tolerance(terms: usize, sum_of_abs_products: f64) -> f64 {
        2.0 * (terms as f64 + 2.0) * Self::U * sum_of_abs_products
    }
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

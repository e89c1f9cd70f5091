//! The baseline our GEMM is measured against: `matrixmultiply::sgemm` (bluss's
//! BLIS-style crate, with its threading feature), behind a safe function that
//! takes the same checked views as [`gemm`](super::gemm), so the benchmarks
//! that compare the two need no `unsafe` of their own.

use super::{MatMut, MatRef};

/// `C (m, n) <- alpha A (m, k) B (k, n) + beta C` by `matrixmultiply::sgemm`.
///
/// # Panics
/// If the shapes do not match, or a stride does not fit `isize` (possible
/// only along a dimension of length 1, where a view never steps by it).
pub fn matrixmultiply_sgemm(alpha: f32, a: MatRef<f32>, b: MatRef<f32>, beta: f32, mut c: MatMut<f32>) {
    super::assert_shapes("matrixmultiply_sgemm", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let stride = |s: usize| isize::try_from(s).expect("matrixmultiply_sgemm: a stride beyond isize::MAX");
    let (rsa, csa, rsb, csb) = (stride(a.row_stride()), stride(a.col_stride()), stride(b.row_stride()), stride(b.col_stride()));
    let (rsc, csc) = (stride(c.row_stride()), stride(c.col_stride()));
    let (a, b, c) = (a.data().as_ptr(), b.data().as_ptr(), c.data_mut().as_mut_ptr());
    // SAFETY: each view was checked, when it was made, to hold every element
    // its shape and strides reach inside its slice (`MatRef::new`,
    // `MatMut::new`, `submatrix`), and C's to reach no slot twice; C is
    // borrowed mutably, so nothing else reads it while sgemm writes it.
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::gemm_naive;

    /// Against the naive twin on odd shapes, row-major and transposed A, C
    /// poisoned with NaN (beta = 0 must not read it).
    #[test]
    fn matches_the_naive_product() {
        for (m, k, n) in [(1, 1, 1), (7, 17, 5), (33, 9, 65), (0, 3, 4), (4, 0, 3)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            // A stored transposed too: (m, k) read with strides (1, m).
            let a_t: Vec<f32> = (0..k * m).map(|j| a[(j % m) * k + j / m]).collect();
            for a_view in [MatRef::new(&a, m, k, k, 1).unwrap(), MatRef::new(&a_t, m, k, 1, m).unwrap()] {
                let b_view = MatRef::new(&b, k, n, n, 1).unwrap();
                let mut got = vec![f32::NAN; m * n];
                matrixmultiply_sgemm(1.0, a_view, b_view, 0.0, MatMut::new(&mut got, m, n, n, 1).unwrap());
                let mut want = vec![f32::NAN; m * n];
                gemm_naive(1.0, a_view, b_view, 0.0, MatMut::new(&mut want, m, n, n, 1).unwrap());
                assert_eq!(got, want, "({m}, {k}, {n})");
            }
        }
    }
}

//! The oracle: the textbook triple loop, with no blocking, packing or SIMD.
//!
//! `C[i, j] <- alpha * sum_p A[i, p] B[p, j] + beta * C[i, j]`, summing `p`
//! in increasing order. Every fast path is tested against this.

use super::{assert_shapes, GemmScalar, MatMut, MatRef};

/// `C <- alpha A B + beta C` by three nested loops. A is (m, k), B is (k, n),
/// C is (m, n). With `beta == 0`, C is only written, never read.
///
/// # Panics
/// If the shapes of the views do not match.
pub fn gemm_naive<T: GemmScalar>(alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, mut c: MatMut<T>) {
    assert_shapes("gemm_naive", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    for i in 0..m {
        for j in 0..n {
            let mut sum = T::ZERO;
            for p in 0..k {
                sum = sum + a.at(i, p) * b.at(p, j);
            }
            let c_ij = c.at_mut(i, j);
            *c_ij = if beta == T::ZERO { alpha * sum } else { alpha * sum + beta * *c_ij };
        }
    }
}

//! Single-head dot-product attention, the self-attention of the UNet's 7x7 level.
//!
//! Shapes: `qkv` `[B, 3C, L]`, the queries in channels `0..C`, the keys in
//! `C..2C`, the values in `2C..3C`, over `L` positions; the output `[B, C, L]`.
//! Per image, with `q`, `k`, `v` its three `(C, L)` parts:
//!
//! ```text
//! S (L, L) = q^T k / sqrt(C)          S[i, j] = q[:, i] . k[:, j] / sqrt(C)
//! P (L, L) = softmax of each row of S  (over the keys j)
//! out (C, L) = v P^T                  out[:, i] = sum_j P[i, j] v[:, j]
//! ```
//!
//! [`Tensor::attention_qkv`] runs an image at a time on the threads: its two
//! products and the softmax between them while its `(L, L)` scores are in
//! cache, and it keeps the weights `P` for the backward, which is five passes
//! over the same small matrices. [`attention_composed`] builds the same
//! function from primitives (`matmul`, `softmax`) and is the test oracle of
//! the fused op.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::kernels::conv::{row_major, row_major_mut};
use crate::kernels::elementwise::{lane_dot, lane_sum, vectorized};
use crate::kernels::gemm::scratch::with_scratch;
use crate::kernels::gemm::{gemm_with, Kernel, MatMut, MatRef, Threading};
use crate::op::Op;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Single-head dot-product attention over `L` positions with `C` channels.
///
/// Shapes: `q`, `k`, `v` `[B, C, L]`, output `[B, C, L]`:
/// `out[b, :, i] = sum_j softmax_j(q[b, :, i] . k[b, :, j] / sqrt(C)) v[b, :, j]`.
/// The three are stacked into one `[B, 3C, L]` tensor for
/// [`Tensor::attention_qkv`] (a model computes them stacked, as one 1x1
/// convolution, and calls that directly).
///
/// # Errors
/// [`Error::ShapeMismatch`] unless the three shapes are equal and of rank 3.
pub fn attention<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<Tensor<T>> {
    check_parts(q, k, v)?;
    Tensor::cat(&[q.clone(), k.clone(), v.clone()], 1)?.attention_qkv()
}

/// [`attention`] composed from primitives, with no backward code of its own:
/// the fused op's reference.
///
/// # Errors
/// As [`attention`].
pub fn attention_composed<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<Tensor<T>> {
    check_parts(q, k, v)?;
    let c = q.dims()[1];
    // scores[b, i, j] = q[b, :, i] . k[b, :, j] / sqrt(C): (B, L, C) @ (B, C, L).
    let scores = q.t()?.matmul(k)?.mul_scalar(score_scale(c));
    // Over the keys j.
    let weights = scores.softmax(2)?;
    // out[b, c, i] = sum_j v[b, c, j] weights[b, i, j]: (B, C, L) @ (B, L, L)^T.
    v.matmul(&weights.t()?)
}

fn check_parts<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<()> {
    if q.rank() != 3 || q.dims() != k.dims() || q.dims() != v.dims() {
        return Err(Error::ShapeMismatch {
            op: "attention",
            msg: format!("q {:?}, k {:?}, v {:?} must all be [B, C, L]", q.dims(), k.dims(), v.dims()),
        });
    }
    Ok(())
}

impl<T: Float> Tensor<T> {
    /// [`attention`] of the queries, keys and values stacked along the
    /// channels: `self` is `[B, 3C, L]`, the result `[B, C, L]`.
    ///
    /// ```
    /// use tensor::{attention, rng, Tensor};
    /// let qkv = Tensor::<f64>::randn(&[2, 3 * 4, 5], &mut rng(0));
    /// let (q, k, v) = (qkv.narrow(1, 0, 4)?, qkv.narrow(1, 4, 4)?, qkv.narrow(1, 8, 4)?);
    /// assert!(qkv.attention_qkv()?.allclose(&attention(&q, &k, &v)?, 1e-12));
    /// # Ok::<(), tensor::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `self` has rank 3 and a multiple of 3 channels.
    pub fn attention_qkv(&self) -> Result<Tensor<T>> {
        if self.rank() != 3 || !self.dims()[1].is_multiple_of(3) {
            return Err(Error::ShapeMismatch {
                op: "attention",
                msg: format!("qkv {:?} must be [B, 3C, L]: queries, keys and values stacked along axis 1", self.dims()),
            });
        }
        let (b, c, l) = (self.dims()[0], self.dims()[1] / 3, self.dims()[2]);
        let qkv = self.contiguous_data();
        let mut out = crate::pool::for_overwrite(b * c * l);
        // The weights are the backward's; without a graph to record, each
        // image's stay in a scratch buffer.
        let keep = crate::is_grad_enabled() && self.requires_grad_flag();
        let mut weights = if keep { crate::pool::for_overwrite(b * l * l) } else { Vec::new() };
        if b * c * l > 0 {
            let images = out.par_chunks_exact_mut(c * l).zip(qkv.par_chunks_exact(3 * c * l));
            if keep {
                images.zip(weights.par_chunks_exact_mut((l * l).max(1))).for_each(|((out, qkv), p)| image_forward(qkv, (c, l), p, out));
            } else {
                images.for_each(|(out, qkv)| with_scratch(l * l, |p: &mut [T]| image_forward(qkv, (c, l), p, out)));
            }
        }
        let weights = if keep { Tensor::from_vec(weights, &[b, l, l])? } else { Tensor::zeros(&[0]) };
        Ok(Tensor::from_op(out, &[b, c, l], Op::Attention { qkv: self.clone(), weights }))
    }
}

/// `1 / sqrt(C)`, the scale of the scores.
fn score_scale<T: Float>(c: usize) -> T {
    T::from_f64(1.0 / (c as f64).sqrt())
}

/// `c = alpha a b` on the calling thread: the images are the parallel tasks.
fn product<T: Float>(alpha: T, a: MatRef<T>, b: MatRef<T>, c: MatMut<T>) {
    gemm_with(Kernel::best(), Threading::Single, alpha, a, b, T::ZERO, c);
}

/// One image's forward: `qkv` (3C, L) -> the weights `p` (L, L) and `out` (C, L).
fn image_forward<T: Float>(qkv: &[T], (c, l): (usize, usize), p: &mut [T], out: &mut [T]) {
    let (q, rest) = qkv.split_at(c * l);
    let (k, v) = rest.split_at(c * l);
    // S = q^T k / sqrt(C): (L, C) @ (C, L).
    product(score_scale(c), row_major(q, c, l).t(), row_major(k, c, l), row_major_mut(p, l, l));
    vectorized(
        #[inline(always)]
        || {
            for row in p.chunks_exact_mut(l) {
                softmax_row(row);
            }
        },
    );
    // out = v P^T: (C, L) @ (L, L)^T.
    product(T::ONE, row_major(v, c, l), row_major(p, l, l).t(), row_major_mut(out, c, l));
}

/// `row <- softmax(row)`: `exp(s_j - m) / sum_j' exp(s_j' - m)`, `m` the row's
/// largest score, subtracted so that no `exp` overflows.
#[inline(always)]
fn softmax_row<T: Float>(row: &mut [T]) {
    // Plain loops (not iterator folds, which may stay out of line and so
    // outside the vector instructions `vectorized` compiles this for).
    let mut m = T::neg_infinity();
    for &s in row.iter() {
        if s > m {
            m = s;
        }
    }
    for s in row.iter_mut() {
        *s = (*s - m).exp();
    }
    let total = lane_sum(row);
    for s in row.iter_mut() {
        *s = *s / total;
    }
}

// With g = dL/d(out) (C, L) of one image and its weights P:
//   out = v P^T              -> dv = g P               (C, L) @ (L, L)
//                               dP = g^T v             (L, C) @ (C, L)
//   P[i, :] = softmax(S[i, :]) -> dS[i, j] = P[i, j] (dP[i, j] - sum_j' P[i, j'] dP[i, j'])
//                                (the softmax's Jacobian diag(p) - p p^T, row by row)
//   S = q^T k / sqrt(C)      -> dq = k dS^T / sqrt(C)  (C, L) @ (L, L)^T
//                               dk = q dS / sqrt(C)    (C, L) @ (L, L)
// written into the three parts of d(qkv) (3C, L), the order of the stacked input.
pub(crate) fn attention_backward<T: Float>(qkv: &Tensor<T>, weights: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    let (b, c, l) = (qkv.dims()[0], qkv.dims()[1] / 3, qkv.dims()[2]);
    let (qkv_data, gd, weights) = (qkv.contiguous_data(), g.contiguous_data(), weights.contiguous_data());
    let mut grad = crate::pool::for_overwrite(b * 3 * c * l);
    if b * c * l > 0 {
        let images = grad.par_chunks_exact_mut(3 * c * l).zip(qkv_data.par_chunks_exact(3 * c * l));
        images.zip(gd.par_chunks_exact(c * l)).zip(weights.par_chunks_exact((l * l).max(1))).for_each(|(((grad, qkv), g), p)| {
            with_scratch(l * l, |ds: &mut [T]| image_backward(qkv, (c, l), p, g, ds, grad));
        });
    }
    Tensor::from_vec(grad, qkv.dims())
}

/// One image's backward (see above): `ds` (L, L) is scratch, `grad` (3C, L)
/// is overwritten.
fn image_backward<T: Float>(qkv: &[T], (c, l): (usize, usize), p: &[T], g: &[T], ds: &mut [T], grad: &mut [T]) {
    let (q, rest) = qkv.split_at(c * l);
    let (k, v) = rest.split_at(c * l);
    let (dq, rest) = grad.split_at_mut(c * l);
    let (dk, dv) = rest.split_at_mut(c * l);
    let g = row_major(g, c, l);
    product(T::ONE, g, row_major(p, l, l), row_major_mut(dv, c, l));
    // dP, then dS in its place.
    product(T::ONE, g.t(), row_major(v, c, l), row_major_mut(ds, l, l));
    vectorized(
        #[inline(always)]
        || {
            for (ds, p) in ds.chunks_exact_mut(l).zip(p.chunks_exact(l)) {
                let dot = lane_dot(ds, p);
                for (d, &w) in ds.iter_mut().zip(p) {
                    *d = w * (*d - dot);
                }
            }
        },
    );
    let ds = row_major(ds, l, l);
    product(score_scale(c), row_major(k, c, l), ds.t(), row_major_mut(dq, c, l));
    product(score_scale(c), row_major(q, c, l), ds, row_major_mut(dk, c, l));
}

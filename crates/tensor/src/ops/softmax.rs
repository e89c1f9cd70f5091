//! Composite ops built from primitives, with no backward code of their own:
//! softmax, log-softmax, attention, and the losses.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl<T: Float> Tensor<T> {
    /// `softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)` along `axis`, where
    /// `m = max_j x_j` is subtracted for stability. `m` is detached: the softmax
    /// does not depend on it, so no gradient needs to flow through it.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`].
    pub fn softmax(&self, axis: usize) -> Result<Tensor<T>> {
        let m = self.max(&[axis], true)?.detach();
        let e = self.sub(&m)?.exp();
        e.div(&e.sum(&[axis], true)?)
    }

    /// `log softmax(x)_i = x_i - m - log sum_j exp(x_j - m)` along `axis`.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`].
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor<T>> {
        let m = self.max(&[axis], true)?.detach();
        let shifted = self.sub(&m)?;
        shifted.sub(&shifted.exp().sum(&[axis], true)?.log())
    }

    /// Mean squared error `mean((pred - target)^2)`, a scalar. The shapes must be
    /// equal: a silent broadcast here is a classic bug.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the shapes differ.
    pub fn mse_loss(&self, target: &Tensor<T>) -> Result<Tensor<T>> {
        if self.dims() != target.dims() {
            return Err(Error::ShapeMismatch {
                op: "mse_loss",
                msg: format!("prediction {:?} and target {:?} must have the same shape", self.dims(), target.dims()),
            });
        }
        self.sub(target)?.sqr().mean_all()
    }

    /// Cross-entropy of logits `[N, classes]` against integer labels, averaged
    /// over the batch: `-mean_n log softmax(x_n)[label_n]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong shape or label count,
    /// [`Error::InvalidArgument`] for a label out of range.
    pub fn cross_entropy(&self, labels: &[usize]) -> Result<Tensor<T>> {
        if self.rank() != 2 || self.dims()[0] != labels.len() {
            return Err(Error::ShapeMismatch {
                op: "cross_entropy",
                msg: format!("logits {:?} with {} labels; expected [N, classes] and N labels", self.dims(), labels.len()),
            });
        }
        let picked = self.log_softmax(1)?.gather(1, labels, &[labels.len(), 1])?;
        Ok(picked.mean_all()?.neg())
    }
}

/// Single-head dot-product attention over `L` positions with `C` channels.
///
/// Shapes: `q`, `k`, `v` `[B, C, L]`, output `[B, C, L]`:
/// `out[b, :, i] = sum_j softmax_j(q[b, :, i] . k[b, :, j] / sqrt(C)) v[b, :, j]`.
///
/// # Errors
/// [`Error::ShapeMismatch`] unless the three shapes are equal and of rank 3.
pub fn attention<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<Tensor<T>> {
    if q.rank() != 3 || q.dims() != k.dims() || q.dims() != v.dims() {
        return Err(Error::ShapeMismatch {
            op: "attention",
            msg: format!("q {:?}, k {:?}, v {:?} must all be [B, C, L]", q.dims(), k.dims(), v.dims()),
        });
    }
    let c = q.dims()[1];
    // scores[b, i, j] = q[b, :, i] . k[b, :, j] / sqrt(C): (B, L, C) @ (B, C, L).
    let scores = q.t()?.matmul(k)?.mul_scalar(T::from_f64(1.0 / (c as f64).sqrt()));
    let weights = scores.softmax(2)?; // over the keys j
                                      // out[b, c, i] = sum_j v[b, c, j] weights[b, i, j]: (B, C, L) @ (B, L, L)^T.
    v.matmul(&weights.t()?)
}

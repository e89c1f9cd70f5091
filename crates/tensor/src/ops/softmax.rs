//! Composite ops built from primitives, with no backward code of their own:
//! softmax, log-softmax and the losses (attention, fused, is `attention.rs`).

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

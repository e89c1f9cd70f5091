//! Reductions over any set of axes: sum and max are primitives; mean and var are
//! composed from them.
//!
//! A reduction permutes the kept axes to the front and the reduced axes to the
//! back, so that each output element reduces one contiguous row.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::op::Op;
use crate::shape::{broadcast_shape, check_axes};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// The rows to reduce: kept axes first, then the reduced ones.
struct Rows<'a, T: Float> {
    data: std::borrow::Cow<'a, [T]>,
    row_len: usize,
    /// The output shape with the reduced axes kept as size 1.
    keepdim_dims: Vec<usize>,
    /// The permutation that brought the reduced axes to the back.
    perm: Vec<usize>,
}

fn rows<'a, T: Float>(op: &'static str, x: &'a Tensor<T>, axes: &[usize]) -> Result<(Rows<'a, T>, Vec<usize>)> {
    let axes = check_axes(op, axes, x.rank())?;
    let kept: Vec<usize> = (0..x.rank()).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes.iter()).copied().collect();
    let row_len: usize = axes.iter().map(|&a| x.dims()[a]).product();
    let keepdim_dims: Vec<usize> = x.dims().iter().enumerate().map(|(a, &d)| if axes.contains(&a) { 1 } else { d }).collect();
    let data = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x.contiguous_data()
    } else {
        let permuted = permuted_layout(x.layout(), &perm);
        let storage = x.storage();
        std::borrow::Cow::Owned(permuted.storage_indices().into_iter().map(|s| storage[s]).collect())
    };
    Ok((Rows { data, row_len, keepdim_dims, perm }, axes))
}

fn permuted_layout(layout: &Layout, perm: &[usize]) -> Layout {
    Layout::new(perm.iter().map(|&p| layout.dims()[p]).collect(), perm.iter().map(|&p| layout.strides()[p]).collect(), layout.offset())
}

fn output_dims(keepdim_dims: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    if keepdim {
        keepdim_dims.to_vec()
    } else {
        keepdim_dims.iter().enumerate().filter(|(a, _)| !axes.contains(a)).map(|(_, &d)| d).collect()
    }
}

/// Applies `f` to each row; rows are reduced in parallel when there is enough work.
fn reduce_rows<T: Float, R: Send>(rows: &Rows<'_, T>, f: impl Fn(&[T]) -> R + Sync + Send) -> Vec<R> {
    let n_rows = rows.keepdim_dims.iter().product::<usize>();
    if rows.row_len == 0 {
        return (0..n_rows).map(|_| f(&[])).collect();
    }
    if rows.data.len() < super::PARALLEL_MIN_ELEMS {
        rows.data.chunks(rows.row_len).map(f).collect()
    } else {
        rows.data.par_chunks(rows.row_len).map(f).collect()
    }
}

impl<T: Float> Tensor<T> {
    /// Sum over `axes`; with `keepdim` the reduced axes stay as size 1.
    /// Accumulates in f64 so long f32 sums keep their precision.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or a repeated axis.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let (rows, axes) = rows("sum", self, axes)?;
        let data = reduce_rows(&rows, |r| T::from_f64(r.iter().map(|v| v.to_f64()).sum::<f64>()));
        let dims = output_dims(&rows.keepdim_dims, &axes, keepdim);
        Ok(Tensor::from_op(data, &dims, Op::Sum { x: self.clone(), axes }))
    }

    /// Sum of all elements, as a scalar.
    ///
    /// # Errors
    /// None in practice; the signature matches the other reductions.
    pub fn sum_all(&self) -> Result<Tensor<T>> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes` (composed: sum / count).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or a repeated axis.
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let count: usize = check_axes("mean", axes, self.rank())?.iter().map(|&a| self.dims()[a]).product();
        Ok(self.sum(axes, keepdim)?.div_scalar(T::from_f64(count as f64)))
    }

    /// Mean of all elements, as a scalar.
    ///
    /// # Errors
    /// None in practice.
    pub fn mean_all(&self) -> Result<Tensor<T>> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.mean(&axes, false)
    }

    /// Variance over `axes` (composed): `sum((x - mean)^2) / (n - 1)` when
    /// `unbiased` (the sample variance), else `/ n`.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or a repeated axis.
    pub fn var(&self, axes: &[usize], keepdim: bool, unbiased: bool) -> Result<Tensor<T>> {
        let count: usize = check_axes("var", axes, self.rank())?.iter().map(|&a| self.dims()[a]).product();
        let centred = self.sub(&self.mean(axes, true)?)?;
        let denom = if unbiased { count.saturating_sub(1) } else { count };
        Ok(centred.sqr().sum(axes, keepdim)?.div_scalar(T::from_f64(denom as f64)))
    }

    /// Maximum over `axes`. The gradient goes to the first maximal element.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], a repeated axis, or reducing an empty axis.
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let (rows, axes) = rows("max", self, axes)?;
        if rows.row_len == 0 {
            return Err(Error::InvalidArgument { op: "max", msg: format!("reducing an empty axis of {:?}", self.dims()) });
        }
        let best = reduce_rows(&rows, |r| {
            let mut at = 0;
            for (i, &v) in r.iter().enumerate() {
                // NaN wins, so that a NaN is never hidden by a max.
                if v > r[at] || (v.is_nan() && !r[at].is_nan()) {
                    at = i;
                }
            }
            (r[at], at)
        });
        // Where each element of the permuted rows sits in `x`'s row-major order.
        let permuted = permuted_layout(&Layout::contiguous(self.dims()), &rows.perm).storage_indices();
        let argmax: Vec<usize> = best.iter().enumerate().map(|(row, &(_, j))| permuted[row * rows.row_len + j]).collect();
        let data = best.into_iter().map(|(v, _)| v).collect();
        let dims = output_dims(&rows.keepdim_dims, &axes, keepdim);
        Ok(Tensor::from_op(data, &dims, Op::Max { x: self.clone(), argmax: Arc::new(argmax) }))
    }

    /// The index of the first maximum along `axis` for every other index
    /// (not differentiable). Output shape: `dims` without `axis`.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] or an empty axis.
    pub fn argmax(&self, axis: usize) -> Result<Vec<usize>> {
        let (rows, _) = rows("argmax", self, &[axis])?;
        if rows.row_len == 0 {
            return Err(Error::InvalidArgument { op: "argmax", msg: format!("empty axis {axis} of {:?}", self.dims()) });
        }
        Ok(reduce_rows(&rows, |r| {
            let mut at = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[at] {
                    at = i;
                }
            }
            at
        }))
    }

    /// Sums a broadcast result back to `dims`: over the leading axes `dims` lacks
    /// and over the axes where `dims` has size 1. The adjoint of broadcasting.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `dims` does not broadcast to this shape.
    pub fn sum_to_shape(&self, dims: &[usize]) -> Result<Tensor<T>> {
        if self.dims() == dims {
            return Ok(self.clone());
        }
        if broadcast_shape("sum_to_shape", dims, self.dims())? != self.dims() {
            return Err(Error::Broadcast { op: "sum_to_shape", lhs: self.dims().to_vec(), rhs: dims.to_vec() });
        }
        let lead = self.rank() - dims.len();
        let axes: Vec<usize> = (0..self.rank()).filter(|&a| a < lead || (dims[a - lead] == 1 && self.dims()[a] != 1)).collect();
        self.sum(&axes, true)?.reshape(dims)
    }
}

// y = sum over axes of x: every x element feeds its output once, so dL/dx is g
// broadcast back over the reduced axes.
pub(crate) fn sum_backward<T: Float>(x: &Tensor<T>, axes: &[usize], g: &Tensor<T>) -> Result<Tensor<T>> {
    let keep: Vec<usize> = x.dims().iter().enumerate().map(|(a, &d)| if axes.contains(&a) { 1 } else { d }).collect();
    g.reshape(&keep)?.broadcast_to(x.dims())?.contiguous()
}

// y = max over axes of x: the gradient of each output flows to its argmax only.
pub(crate) fn max_backward<T: Float>(x: &Tensor<T>, argmax: &[usize], g: &Tensor<T>) -> Result<Tensor<T>> {
    let mut grad = crate::pool::zeroed(x.elem_count());
    for (&at, &gv) in argmax.iter().zip(g.contiguous_data().iter()) {
        grad[at] += gv;
    }
    Tensor::from_vec(grad, x.dims())
}

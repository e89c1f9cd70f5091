//! Selection by mask or index: `where`, `index_select`, `gather`, and the
//! comparisons that build masks. Masks and indices carry no gradient.

use super::binary::broadcast_map;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::shape::{broadcast_shape, check_axis, contiguous_strides};
use crate::tensor::Tensor;
use std::sync::Arc;

impl<T: Float> Tensor<T> {
    /// `mask != 0 ? a : b` elementwise, all three broadcast together (`self` is the mask).
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes do not broadcast.
    pub fn where_cond(&self, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
        let dims = broadcast_shape("where", &broadcast_shape("where", self.dims(), a.dims())?, b.dims())?;
        let (mask, a_full, b_full) = (self.broadcast_to(&dims)?.to_vec(), a.broadcast_to(&dims)?.to_vec(), b.broadcast_to(&dims)?.to_vec());
        let data = mask.iter().zip(a_full.iter().zip(&b_full)).map(|(&m, (&x, &y))| if m != T::ZERO { x } else { y }).collect();
        Ok(Tensor::from_op(data, &dims, Op::Where { mask: self.detach(), a: a.clone(), b: b.clone() }))
    }

    /// `1` where `self > rhs`, else `0` (broadcast; no gradient).
    ///
    /// # Errors
    /// [`Error::Broadcast`].
    pub fn gt(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        compare("gt", self, rhs, |x, y| x > y)
    }

    /// `1` where `self >= rhs`, else `0`.
    ///
    /// # Errors
    /// [`Error::Broadcast`].
    pub fn ge(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        compare("ge", self, rhs, |x, y| x >= y)
    }

    /// `1` where `self < rhs`, else `0`.
    ///
    /// # Errors
    /// [`Error::Broadcast`].
    pub fn lt(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        compare("lt", self, rhs, |x, y| x < y)
    }

    /// Picks entries `indices` along `axis`: output size along `axis` is `indices.len()`.
    /// Used to read schedule coefficients at a batch of timesteps.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], or [`Error::InvalidArgument`] for an index past the end.
    pub fn index_select(&self, axis: usize, indices: &[usize]) -> Result<Tensor<T>> {
        check_axis("index_select", axis, self.rank())?;
        let size = self.dims()[axis];
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(Error::InvalidArgument {
                op: "index_select",
                msg: format!("index {bad} out of range for axis {axis} of {:?}", self.dims()),
            });
        }
        let outer: usize = self.dims()[..axis].iter().product();
        let inner: usize = self.dims()[axis + 1..].iter().product();
        let x = self.contiguous_data();
        let mut out = crate::pool::with_capacity(outer * indices.len() * inner);
        for o in 0..outer {
            for &i in indices {
                out.extend_from_slice(&x[(o * size + i) * inner..][..inner]);
            }
        }
        let mut dims = self.dims().to_vec();
        dims[axis] = indices.len();
        Ok(Tensor::from_op(out, &dims, Op::IndexSelect { x: self.clone(), axis, indices: Arc::new(indices.to_vec()) }))
    }

    /// PyTorch's `gather`: `out[.., j, ..] = x[.., index[.., j, ..], ..]` along `axis`.
    /// `index` is row-major with shape `index_dims`, which equals `x`'s shape except
    /// along `axis`. Used to pick the log-probability of each label.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong index shape, [`Error::InvalidArgument`]
    /// for an index past the end, [`Error::AxisOutOfRange`].
    pub fn gather(&self, axis: usize, index: &[usize], index_dims: &[usize]) -> Result<Tensor<T>> {
        check_axis("gather", axis, self.rank())?;
        let shape_ok = index_dims.len() == self.rank()
            && index.len() == index_dims.iter().product::<usize>()
            && index_dims.iter().zip(self.dims()).enumerate().all(|(a, (i, d))| a == axis || i == d);
        if !shape_ok {
            return Err(Error::ShapeMismatch {
                op: "gather",
                msg: format!("index of shape {index_dims:?} ({} values) for x {:?} along axis {axis}", index.len(), self.dims()),
            });
        }
        let positions = gather_positions(self.dims(), axis, index, index_dims)?;
        let x = self.contiguous_data();
        let out = positions.iter().map(|&p| x[p]).collect();
        Ok(Tensor::from_op(out, index_dims, Op::Gather { x: self.clone(), axis, index: Arc::new(index.to_vec()) }))
    }
}

/// The row-major position in `x` that each gathered element reads.
fn gather_positions(dims: &[usize], axis: usize, index: &[usize], index_dims: &[usize]) -> Result<Vec<usize>> {
    let x_strides = contiguous_strides(dims);
    let i_strides = contiguous_strides(index_dims);
    index
        .iter()
        .enumerate()
        .map(|(flat, &ix)| {
            if ix >= dims[axis] {
                return Err(Error::InvalidArgument { op: "gather", msg: format!("index {ix} out of range for axis {axis} of {dims:?}") });
            }
            let mut pos = 0;
            for a in 0..dims.len() {
                let coord = if a == axis { ix } else { (flat / i_strides[a]) % index_dims[a] };
                pos += coord * x_strides[a];
            }
            Ok(pos)
        })
        .collect()
}

fn compare<T: Float>(op: &'static str, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> bool + Sync) -> Result<Tensor<T>> {
    let (data, dims) = broadcast_map(op, a, b, move |x, y| if f(x, y) { T::ONE } else { T::ZERO })?;
    Tensor::from_vec(data, &dims)
}

// y = mask ? a : b: g flows to a where the mask holds and to b elsewhere.
pub(crate) fn where_backward<T: Float>(mask: &Tensor<T>, a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    let zero = Tensor::zeros(&[]);
    let ga = mask.where_cond(g, &zero)?.sum_to_shape(a.dims())?;
    let gb = mask.where_cond(&zero, g)?.sum_to_shape(b.dims())?;
    Ok((ga, gb))
}

// Each selected slice gets its g; an index picked twice gets both (scatter-add).
pub(crate) fn index_select_backward<T: Float>(x: &Tensor<T>, axis: usize, indices: &[usize], g: &Tensor<T>) -> Result<Tensor<T>> {
    let size = x.dims()[axis];
    let outer: usize = x.dims()[..axis].iter().product();
    let inner: usize = x.dims()[axis + 1..].iter().product();
    let gd = g.contiguous_data();
    let mut grad = crate::pool::zeroed(x.elem_count());
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            let src = &gd[(o * indices.len() + j) * inner..][..inner];
            for (d, &s) in grad[(o * size + i) * inner..][..inner].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    Tensor::from_vec(grad, x.dims())
}

// Gather reads x at the gathered positions: scatter-add g back to them.
pub(crate) fn gather_backward<T: Float>(x: &Tensor<T>, axis: usize, index: &[usize], g: &Tensor<T>) -> Result<Tensor<T>> {
    let positions = gather_positions(x.dims(), axis, index, g.dims())?;
    let mut grad = crate::pool::zeroed(x.elem_count());
    for (&p, &gv) in positions.iter().zip(g.contiguous_data().iter()) {
        grad[p] += gv;
    }
    Tensor::from_vec(grad, x.dims())
}

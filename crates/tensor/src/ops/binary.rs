//! Elementwise binary ops with NumPy broadcasting, and their gradients.
//!
//! Broadcasting reads a size-1 (or missing) axis once for every index of the
//! other operand. The backward must undo that: the gradient of a broadcast input
//! is the output gradient summed over the axes it was repeated along
//! ([`Tensor::sum_to_shape`]).

use super::{broadcast_strides, zip_map, zip_strided};
use crate::element::Float;
use crate::error::Result;
use crate::op::Op;
use crate::shape::broadcast_shape;
use crate::tensor::Tensor;

/// `f(a, b)` elementwise over the broadcast shape; returns the data and the shape.
pub(crate) fn broadcast_map<T: Float>(
    op: &'static str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<(Vec<T>, Vec<usize>)> {
    let dims = broadcast_shape(op, a.dims(), b.dims())?;
    if a.dims() == b.dims() && a.layout().is_contiguous() && b.layout().is_contiguous() {
        return Ok((zip_map(&a.contiguous_data(), &b.contiguous_data(), f), dims));
    }
    let sa = broadcast_strides(a.layout(), &dims);
    let sb = broadcast_strides(b.layout(), &dims);
    let data = zip_strided(&dims, (a.storage(), a.layout().offset(), sa), (b.storage(), b.layout().offset(), sb), f);
    Ok((data, dims))
}

fn binary<T: Float>(name: &'static str, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T + Sync, op: Op<T>) -> Result<Tensor<T>> {
    let (data, dims) = broadcast_map(name, a, b, f)?;
    Ok(Tensor::from_op(data, &dims, op))
}

impl<T: Float> Tensor<T> {
    /// `a + b` with broadcasting.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn add(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        binary("add", self, rhs, |x, y| x + y, Op::Add(self.clone(), rhs.clone()))
    }

    /// `a - b` with broadcasting.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn sub(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        binary("sub", self, rhs, |x, y| x - y, Op::Sub(self.clone(), rhs.clone()))
    }

    /// `a * b` with broadcasting.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn mul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        binary("mul", self, rhs, |x, y| x * y, Op::Mul(self.clone(), rhs.clone()))
    }

    /// `a / b` with broadcasting.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn div(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        binary("div", self, rhs, |x, y| x / y, Op::Div(self.clone(), rhs.clone()))
    }

    /// `max(a, b)` elementwise with broadcasting.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn maximum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        binary("maximum", self, rhs, |x, y| if x >= y { x } else { y }, Op::Maximum(self.clone(), rhs.clone()))
    }

    /// `min(a, b)`, composed: `-max(-a, -b)`.
    ///
    /// # Errors
    /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
    pub fn minimum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(self.neg().maximum(&rhs.neg())?.neg())
    }
}

// y = a + b: dy/da = 1, dy/db = 1 (then undo the broadcast).
pub(crate) fn add_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    Ok((g.sum_to_shape(a.dims())?, g.sum_to_shape(b.dims())?))
}

// y = a - b: dy/da = 1, dy/db = -1.
pub(crate) fn sub_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    Ok((g.sum_to_shape(a.dims())?, g.neg().sum_to_shape(b.dims())?))
}

// y = a b: dy/da = b, dy/db = a.
pub(crate) fn mul_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    Ok((g.mul(b)?.sum_to_shape(a.dims())?, g.mul(a)?.sum_to_shape(b.dims())?))
}

// y = a / b: dy/da = 1 / b, dy/db = -a / b^2.
pub(crate) fn div_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    let ga = g.div(b)?;
    let gb = g.mul(a)?.div(&b.mul(b)?)?.neg();
    Ok((ga.sum_to_shape(a.dims())?, gb.sum_to_shape(b.dims())?))
}

// y = max(a, b): the gradient goes to the larger input. Trap: at a tie the
// function has a kink; like PyTorch we split the gradient evenly.
pub(crate) fn maximum_backward<T: Float>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    let half = T::from_f64(0.5);
    let (share_a, dims) = broadcast_map("maximum_backward", a, b, move |x, y| {
        if x > y {
            T::ONE
        } else if x < y {
            T::ZERO
        } else {
            half
        }
    })?;
    let share_a = Tensor::from_vec(share_a, &dims)?;
    let ga = g.mul(&share_a)?;
    let gb = g.sub(&ga)?;
    Ok((ga.sum_to_shape(a.dims())?, gb.sum_to_shape(b.dims())?))
}

//! Shapes and NumPy broadcasting.
//!
//! A shape is the list of dimension sizes, outermost first: `[N, C, H, W]` for an
//! image batch. Row-major ("C order") strides count elements, not bytes: the last
//! axis has stride 1 and axis i has stride `prod(dims[i+1..])`.

use crate::error::{Error, Result};

/// Row-major strides of a contiguous tensor of the given dims.
///
/// ```
/// assert_eq!(tensor::shape::contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
/// ```
#[must_use]
pub fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

/// The number of elements of a shape (1 for a scalar, shape `[]`).
#[must_use]
pub fn elem_count(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The broadcast shape of `lhs` and `rhs` under NumPy rules: align the shapes on
/// the right; each pair of sizes must be equal or one of them 1.
///
/// # Errors
/// [`Error::Broadcast`] naming `op` and both shapes when a pair is incompatible.
pub fn broadcast_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        // Axis i of the output, counted from the left; missing leading axes are 1.
        let l = if i + lhs.len() >= rank { lhs[i + lhs.len() - rank] } else { 1 };
        let r = if i + rhs.len() >= rank { rhs[i + rhs.len() - rank] } else { 1 };
        out[i] = match (l, r) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return Err(Error::Broadcast { op, lhs: lhs.to_vec(), rhs: rhs.to_vec() }),
        };
    }
    Ok(out)
}

/// Checks that `axis < rank`.
///
/// # Errors
/// [`Error::AxisOutOfRange`] naming `op`.
pub fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<usize> {
    if axis < rank {
        Ok(axis)
    } else {
        Err(Error::AxisOutOfRange { op, axis, rank })
    }
}

/// Checks a set of axes: each in range, none repeated; returns them sorted.
///
/// # Errors
/// [`Error::AxisOutOfRange`] or [`Error::InvalidArgument`] for a repeated axis.
pub fn check_axes(op: &'static str, axes: &[usize], rank: usize) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            return Err(Error::InvalidArgument { op, msg: format!("axis {} repeated in {axes:?}", w[0]) });
        }
    }
    for &a in &sorted {
        check_axis(op, a, rank)?;
    }
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape("t", &[], &[5]).unwrap(), vec![5]);
        let err = broadcast_shape("add", &[2, 3], &[4]).unwrap_err();
        assert_eq!(err.to_string(), "add: cannot broadcast shape [2, 3] with shape [4]");
    }
}

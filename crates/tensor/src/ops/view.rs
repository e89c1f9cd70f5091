//! Views (reshape, permute, narrow, broadcast) share the storage and change only
//! the layout; `contiguous`, `cat` and `stack` copy.

use super::broadcast_strides;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::op::Op;
use crate::shape::{broadcast_shape, check_axis, contiguous_strides, elem_count};
use crate::tensor::Tensor;
use rayon::prelude::*;

impl<T: Float> Tensor<T> {
    /// The same elements under a new shape (a view when contiguous, else a copy).
    ///
    /// # Errors
    /// [`Error::ElementCount`] when `dims` has a different number of elements.
    pub fn reshape(&self, dims: &[usize]) -> Result<Tensor<T>> {
        if elem_count(dims) != self.elem_count() {
            return Err(Error::ElementCount { op: "reshape", from: self.dims().to_vec(), to: dims.to_vec() });
        }
        let x = self.contiguous()?;
        let layout = Layout::new(dims.to_vec(), contiguous_strides(dims), x.layout().offset());
        Ok(x.view(layout, Op::Reshape(x.clone())))
    }

    /// Inserts a size-1 axis at `axis` (`0..=rank`).
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] when `axis > rank`.
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut dims = self.dims().to_vec();
        dims.insert(axis, 1);
        self.reshape(&dims)
    }

    /// Removes the size-1 axis `axis`.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], or [`Error::InvalidArgument`] if the axis is not size 1.
    pub fn squeeze(&self, axis: usize) -> Result<Tensor<T>> {
        check_axis("squeeze", axis, self.rank())?;
        if self.dims()[axis] != 1 {
            return Err(Error::InvalidArgument {
                op: "squeeze",
                msg: format!("axis {axis} of {:?} has size {}, not 1", self.dims(), self.dims()[axis]),
            });
        }
        let mut dims = self.dims().to_vec();
        dims.remove(axis);
        self.reshape(&dims)
    }

    /// Reorders the axes: output axis i is input axis `perm[i]`. A view.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `perm` is not a permutation of `0..rank`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor<T>> {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank() && perm.iter().all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::InvalidArgument {
                op: "permute",
                msg: format!("{perm:?} is not a permutation of the axes of {:?}", self.dims()),
            });
        }
        let l = self.layout();
        let layout = Layout::new(perm.iter().map(|&p| l.dims()[p]).collect(), perm.iter().map(|&p| l.strides()[p]).collect(), l.offset());
        Ok(self.view(layout, Op::Permute(self.clone(), perm.to_vec())))
    }

    /// Swaps two axes. A view.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`].
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor<T>> {
        check_axis("transpose", a, self.rank())?;
        check_axis("transpose", b, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The matrix transpose of the last two axes. A view.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a tensor of rank below 2.
    pub fn t(&self) -> Result<Tensor<T>> {
        if self.rank() < 2 {
            return Err(Error::InvalidArgument { op: "t", msg: format!("needs rank >= 2, the shape is {:?}", self.dims()) });
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// Elements `start .. start + len` along `axis`. A view.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`], or [`Error::InvalidArgument`] when the range passes the end.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Tensor<T>> {
        check_axis("narrow", axis, self.rank())?;
        let size = self.dims()[axis];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::InvalidArgument {
                op: "narrow",
                msg: format!("range {start}..{} along axis {axis} of {:?}", start.saturating_add(len), self.dims()),
            });
        }
        let l = self.layout();
        let mut dims = l.dims().to_vec();
        dims[axis] = len;
        let offset = if len == 0 { l.offset() } else { l.offset() + start * l.strides()[axis] };
        let layout = Layout::new(dims, l.strides().to_vec(), offset);
        Ok(self.view(layout, Op::Narrow { x: self.clone(), axis, start }))
    }

    /// Repeats size-1 (or missing leading) axes to reach `dims`, without copying
    /// (stride 0). NumPy rules.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shape cannot be broadcast to `dims`.
    pub fn broadcast_to(&self, dims: &[usize]) -> Result<Tensor<T>> {
        if broadcast_shape("broadcast_to", self.dims(), dims)? != dims {
            return Err(Error::Broadcast { op: "broadcast_to", lhs: self.dims().to_vec(), rhs: dims.to_vec() });
        }
        if dims == self.dims() {
            return Ok(self.clone());
        }
        let layout = Layout::new(dims.to_vec(), broadcast_strides(self.layout(), dims), self.layout().offset());
        Ok(self.view(layout, Op::BroadcastTo(self.clone())))
    }

    /// Same as [`Tensor::broadcast_to`] (PyTorch's name).
    ///
    /// # Errors
    /// [`Error::Broadcast`].
    pub fn expand(&self, dims: &[usize]) -> Result<Tensor<T>> {
        self.broadcast_to(dims)
    }

    /// A row-major copy, or `self` when already contiguous.
    ///
    /// # Errors
    /// None in practice.
    pub fn contiguous(&self) -> Result<Tensor<T>> {
        if self.layout().is_contiguous() {
            return Ok(self.clone());
        }
        Ok(Tensor::from_op(self.to_vec(), self.dims(), Op::Copy(self.clone())))
    }

    /// Joins tensors along an existing axis; all other sizes must agree.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty list, [`Error::ShapeMismatch`] for
    /// disagreeing shapes, [`Error::AxisOutOfRange`].
    pub fn cat(xs: &[Tensor<T>], axis: usize) -> Result<Tensor<T>> {
        let first = xs.first().ok_or(Error::InvalidArgument { op: "cat", msg: "no tensors to join".into() })?;
        check_axis("cat", axis, first.rank())?;
        for x in xs {
            let agree = x.rank() == first.rank() && x.dims().iter().zip(first.dims()).enumerate().all(|(a, (d, f))| a == axis || d == f);
            if !agree {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    msg: format!("{:?} and {:?} differ outside axis {axis}", first.dims(), x.dims()),
                });
            }
        }
        let mut dims = first.dims().to_vec();
        dims[axis] = xs.iter().map(|x| x.dims()[axis]).sum();
        let outer: usize = dims[..axis].iter().product();
        let inner: usize = dims[axis + 1..].iter().product();
        let parts: Vec<_> = xs.iter().map(|x| x.contiguous_data()).collect();
        let blocks: Vec<usize> = xs.iter().map(|x| x.dims()[axis] * inner).collect();
        // Row o of the output (one index of the axes before `axis`) is block o
        // of each input, side by side; the rows go to the threads when large.
        let row = dims[axis] * inner;
        let fill_row = |(o, out_o): (usize, &mut [T])| {
            let mut at = 0;
            for (data, &block) in parts.iter().zip(&blocks) {
                out_o[at..at + block].copy_from_slice(&data[o * block..(o + 1) * block]);
                at += block;
            }
        };
        let mut out = crate::pool::for_overwrite(outer * row);
        if row > 0 {
            if out.len() >= super::PARALLEL_MIN_ELEMS {
                out.par_chunks_mut(row).enumerate().for_each(fill_row);
            } else {
                out.chunks_mut(row).enumerate().for_each(fill_row);
            }
        }
        Ok(Tensor::from_op(out, &dims, Op::Cat { xs: xs.to_vec(), axis }))
    }

    /// Joins tensors of one shape along a new axis (composed: unsqueeze, cat).
    ///
    /// # Errors
    /// As [`Tensor::cat`].
    pub fn stack(xs: &[Tensor<T>], axis: usize) -> Result<Tensor<T>> {
        let expanded = xs.iter().map(|x| x.unsqueeze(axis)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&expanded, axis)
    }
}

// Reshape keeps every element; the gradient is reshaped back.
pub(crate) fn reshape_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    g.reshape(x.dims())
}

// Permute moves elements; the gradient moves back by the inverse permutation.
pub(crate) fn permute_backward<T: Float>(perm: &[usize], g: &Tensor<T>) -> Result<Tensor<T>> {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    g.permute(&inverse)?.contiguous()
}

// Narrow picks a block; the gradient is g inside the block and 0 outside.
pub(crate) fn narrow_backward<T: Float>(x: &Tensor<T>, axis: usize, start: usize, g: &Tensor<T>) -> Result<Tensor<T>> {
    let mut grad = crate::pool::zeroed(x.elem_count());
    let strides = contiguous_strides(x.dims());
    let block = Layout::new(g.dims().to_vec(), strides.clone(), start * strides[axis]);
    let gd = g.contiguous_data();
    // Runs of the block at a time (g is contiguous, so its runs follow each other).
    let mut from = 0;
    block
        .for_each_run(|s, len| {
            grad[s..s + len].copy_from_slice(&gd[from..from + len]);
            from += len;
        })
        .expect("contiguous strides end in a unit stride");
    Tensor::from_vec(grad, x.dims())
}

// Broadcasting reads an element many times; its gradient is the sum of those uses.
pub(crate) fn broadcast_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    g.sum_to_shape(x.dims())
}

// Cat places the inputs side by side; each gets its block of g, as a view:
// a rule that needs it in order copies it then (`contiguous_data`), and a
// gradient added onto another one (a UNet's skip connection, read by the
// concatenation and by the next block down) is added from where it lies.
pub(crate) fn cat_backward<T: Float>(xs: &[Tensor<T>], axis: usize, g: &Tensor<T>) -> Result<Vec<Tensor<T>>> {
    let mut start = 0;
    xs.iter()
        .map(|x| {
            let part = g.narrow(axis, start, x.dims()[axis]);
            start += x.dims()[axis];
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[n, c, h, w]` with element `i` (row-major) equal to `scale * i + shift`.
    fn ramp(dims: &[usize], scale: f32, shift: f32) -> Result<Tensor<f32>> {
        Tensor::from_vec((0..elem_count(dims)).map(|i| scale * i as f32 + shift).collect(), dims)
    }

    /// Joined along channels at a size that takes the threads (and along the
    /// batch and the last axis at a small one), against the definition
    /// `out[n, c, ..] = a[n, c, ..]` for `c < Ca`, else `b[n, c - Ca, ..]`;
    /// the gradient of each part is its block of the upstream gradient.
    #[test]
    fn cat_and_its_gradient_match_the_definition_on_and_off_the_threads() -> Result<()> {
        for (da, db, axis) in [([64, 32, 7, 7], [64, 16, 7, 7], 1), ([2, 3, 2, 5], [1, 3, 2, 5], 0), ([2, 3, 2, 5], [2, 3, 2, 1], 3)] {
            let a = ramp(&da, 0.25, -7.0)?.requires_grad();
            let b = ramp(&db, -0.5, 3.0)?.requires_grad();
            let out = Tensor::cat(&[a.clone(), b.clone()], axis)?;
            let (av, bv, ov) = (a.to_vec(), b.to_vec(), out.to_vec());
            let dims = out.dims().to_vec();
            Layout::new(dims.clone(), contiguous_strides(&dims), 0).for_each_index(|i, _| {
                let mut index: Vec<usize> = Vec::new();
                let mut rest = i;
                for &d in dims.iter().rev() {
                    index.push(rest % d);
                    rest /= d;
                }
                index.reverse();
                let in_a = index[axis] < da[axis];
                let (source, source_dims) = if in_a { (&av, &da) } else { (&bv, &db) };
                let mut at = index.clone();
                if !in_a {
                    at[axis] -= da[axis];
                }
                let flat = at.iter().zip(contiguous_strides(source_dims)).map(|(i, s)| i * s).sum::<usize>();
                assert_eq!(ov[i], source[flat], "{dims:?} at {index:?}");
            });
            // L = sum(out * w): dL/dout = w, so each part's gradient is w's block.
            let w = ramp(&dims, 0.125, 1.0)?;
            let mut grads = out.mul(&w)?.sum_all()?.backward()?;
            let (ga, gb) = (grads.remove(&a).expect("a took part"), grads.remove(&b).expect("b took part"));
            assert_eq!(ga.to_vec(), w.narrow(axis, 0, da[axis])?.to_vec(), "{dims:?}");
            assert_eq!(gb.to_vec(), w.narrow(axis, da[axis], db[axis])?.to_vec(), "{dims:?}");
            if axis == 1 {
                assert!(out.elem_count() >= super::super::PARALLEL_MIN_ELEMS, "the large case takes the threads");
            }
        }
        Ok(())
    }

    /// The gradient of a narrowed view: g inside the block, exactly zero outside.
    #[test]
    fn narrow_gradient_is_g_in_the_block_and_zero_elsewhere() -> Result<()> {
        let x = ramp(&[4, 12, 5, 5], 0.5, 0.0)?.requires_grad();
        let part = x.narrow(1, 4, 4)?;
        let w = ramp(part.dims(), -0.25, 2.0)?;
        let grad = part.mul(&w)?.sum_all()?.backward()?.remove(&x).expect("x took part").to_vec();
        let wv = w.to_vec();
        for (i, &gi) in grad.iter().enumerate() {
            let (n, c, pixel) = (i / (12 * 25), i / 25 % 12, i % 25);
            let expected = if (4..8).contains(&c) { wv[(n * 4 + c - 4) * 25 + pixel] } else { 0.0 };
            assert_eq!(gi.to_bits(), expected.to_bits(), "element {i} (n {n}, c {c})");
        }
        Ok(())
    }
}

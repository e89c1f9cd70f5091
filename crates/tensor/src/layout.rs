//! Layout: how a tensor's elements sit in its storage.
//!
//! Element `(i0, i1, ..., in)` lives at `offset + i0*s0 + i1*s1 + ... + in*sn` of the
//! storage, with strides `s` in elements. Views change only the layout and share the
//! storage: a transpose swaps two strides, a narrow moves the offset, a broadcast sets
//! a stride to 0 so that one element is read for every index along that axis.

use crate::shape::{contiguous_strides, elem_count};

/// Shape, strides (in elements, 0 on broadcast axes) and offset into the storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    dims: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// The row-major layout of a fresh tensor.
    #[must_use]
    pub fn contiguous(dims: &[usize]) -> Self {
        Layout { dims: dims.to_vec(), strides: contiguous_strides(dims), offset: 0 }
    }

    /// A layout from its parts; the caller guarantees it stays inside the storage.
    pub(crate) fn new(dims: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(dims.len(), strides.len());
        Layout { dims, strides, offset }
    }

    /// Dimension sizes, outermost first.
    #[must_use]
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Strides in elements.
    #[must_use]
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of element `(0, ..., 0)` in the storage.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements.
    #[must_use]
    pub fn elem_count(&self) -> usize {
        elem_count(&self.dims)
    }

    /// True when the elements are in row-major order with no gaps (size-1 axes may
    /// have any stride), so that `storage[offset .. offset + n]` is the tensor.
    #[must_use]
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Calls `f(i, storage_index)` for every element in row-major order.
    ///
    /// The innermost axis is a plain strided loop; the outer axes advance an index
    /// like an odometer, so the cost per element is one add.
    pub fn for_each_index(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.elem_count();
        if n == 0 {
            return;
        }
        let rank = self.dims.len();
        if rank == 0 {
            f(0, self.offset);
            return;
        }
        let inner = self.dims[rank - 1];
        let inner_stride = self.strides[rank - 1];
        let mut index = vec![0usize; rank - 1];
        let mut base = self.offset;
        let mut i = 0;
        loop {
            let mut at = base;
            for _ in 0..inner {
                f(i, at);
                i += 1;
                at += inner_stride;
            }
            // Odometer step over the outer axes.
            let mut axis = rank - 1;
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                base += self.strides[axis];
                if index[axis] < self.dims[axis] {
                    break;
                }
                base -= self.strides[axis] * self.dims[axis];
                index[axis] = 0;
            }
        }
    }

    /// The storage index of every element, in row-major order.
    #[must_use]
    pub fn storage_indices(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.elem_count());
        self.for_each_index(|_, s| out.push(s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_layout_walks_columns() {
        // A 2x3 row-major matrix seen transposed as 3x2: strides (1, 3).
        let l = Layout::new(vec![3, 2], vec![1, 3], 0);
        assert!(!l.is_contiguous());
        assert_eq!(l.storage_indices(), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn broadcast_layout_repeats() {
        let l = Layout::new(vec![2, 3], vec![0, 1], 4);
        assert_eq!(l.storage_indices(), vec![4, 5, 6, 4, 5, 6]);
    }
}

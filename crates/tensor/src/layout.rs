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
        if self.elem_count() == 0 {
            return;
        }
        let rank = self.dims.len();
        if rank == 0 {
            f(0, self.offset);
            return;
        }
        let (inner, inner_stride) = (self.dims[rank - 1], self.strides[rank - 1]);
        let mut i = 0;
        self.for_each_outer(rank - 1, |base| {
            for at in (0..inner).map(|j| base + j * inner_stride) {
                f(i, at);
                i += 1;
            }
        });
    }

    /// Calls `f(storage_start, len)` for each run of elements that lie next to each
    /// other in storage, in row-major order: the trailing axes that a unit stride
    /// walks as one block (`[N, C, H, W]` narrowed on C gives runs of `H * W`).
    /// `None` when the innermost stride is not 1 (there are no runs).
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize)) -> Option<()> {
        let rank = self.dims.len();
        if rank == 0 || self.elem_count() == 0 {
            f(self.offset, self.elem_count());
            return Some(());
        }
        let (run_axes, run) = self.run_axes()?;
        self.for_each_outer(rank - run_axes, |base| f(base, run));
        Some(())
    }

    /// The length of the runs [`Layout::for_each_run`] walks, without walking
    /// them; `None` when it has none.
    pub(crate) fn run_len(&self) -> Option<usize> {
        if self.dims.is_empty() || self.elem_count() == 0 {
            return Some(self.elem_count());
        }
        self.run_axes().map(|(_, run)| run)
    }

    /// `(axes, elements)` of a run of a layout with at least one axis and one
    /// element: the longest suffix of axes laid out back to back, `None` when
    /// the innermost stride is not 1.
    fn run_axes(&self) -> Option<(usize, usize)> {
        let rank = self.dims.len();
        if self.strides[rank - 1] != 1 && self.dims[rank - 1] != 1 {
            return None;
        }
        let (mut run_axes, mut run) = (1, self.dims[rank - 1]);
        while run_axes < rank && self.strides[rank - 1 - run_axes] == run {
            run *= self.dims[rank - 1 - run_axes];
            run_axes += 1;
        }
        Some((run_axes, run))
    }

    /// The storage offset of each matrix of a layout whose last two axes are
    /// swapped in storage (the second-to-last has stride 1, the last does not:
    /// a transposed matrix, or a batch of them, as a permute leaves it), in
    /// row-major order of the other axes. `None` for any other layout.
    pub(crate) fn transposed_blocks(&self) -> Option<Vec<usize>> {
        let rank = self.dims.len();
        if rank < 2 || self.strides[rank - 2] != 1 || self.strides[rank - 1] == 1 || self.elem_count() == 0 {
            return None;
        }
        let mut bases = Vec::new();
        self.for_each_outer(rank - 2, |base| bases.push(base));
        Some(bases)
    }

    /// Calls `f(storage offset)` for every index of the first `outer` axes, in
    /// row-major order, advancing the offset like an odometer (one add a step).
    /// The layout has at least one element.
    fn for_each_outer(&self, outer: usize, mut f: impl FnMut(usize)) {
        let mut index = vec![0usize; outer];
        let mut base = self.offset;
        loop {
            f(base);
            let mut axis = outer;
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

    /// The runs, laid end to end, are the element order of `for_each_index`, for
    /// a channel slice of NCHW, a narrowed row, size-1 axes, a broadcast and an
    /// offset, each as long as `run_len` says; a non-unit innermost stride has no runs.
    #[test]
    fn runs_cover_the_elements_in_row_major_order() {
        let layouts = [
            Layout::new(vec![2, 3, 4, 5], vec![120, 20, 5, 1], 7), // [2, 6, 4, 5] narrowed to 3 channels
            Layout::new(vec![3, 4], vec![10, 1], 2),               // rows of 10 narrowed to 4
            Layout::new(vec![2, 1, 3, 1], vec![3, 9, 1, 5], 0),    // size-1 axes with odd strides
            Layout::new(vec![2, 3], vec![0, 1], 4),                // a broadcast row
            Layout::new(vec![4, 5], vec![5, 1], 3),                // contiguous, offset: one run
            Layout::new(vec![], vec![], 6),                        // a scalar
            Layout::new(vec![2, 0, 3], vec![3, 3, 1], 0),          // empty
        ];
        for l in &layouts {
            let mut from_runs = Vec::new();
            let mut runs = 0;
            let run_len = l.run_len().expect("unit inner stride");
            l.for_each_run(|start, len| {
                assert_eq!(len, run_len, "{l:?}: run_len names the runs' length");
                from_runs.extend(start..start + len);
                runs += 1;
            })
            .expect("unit inner stride");
            assert_eq!(from_runs, if l.elem_count() == 0 { vec![] } else { l.storage_indices() }, "{l:?}");
            assert!(l.elem_count() == 0 || runs <= l.elem_count() / l.dims().last().copied().unwrap_or(1).max(1), "{l:?}: {runs} runs");
        }
        assert_eq!(Layout::new(vec![4, 5], vec![5, 1], 0).for_each_run(|_, _| {}).map(|()| 1), Some(1));
        assert!(Layout::new(vec![3, 2], vec![1, 3], 0).for_each_run(|_, _| unreachable!()).is_none());
        assert_eq!(Layout::new(vec![3, 2], vec![1, 3], 0).run_len(), None);
    }
}

//! The tensor: shared storage, a layout over it, and the op that produced it.
//!
//! A `Tensor<T>` is a cheap handle (`Arc`) to an immutable node. Views (reshape,
//! permute, narrow, broadcast) make a new node that shares the storage; every other
//! op allocates a new buffer. When a result depends on a tensor that requires a
//! gradient, the node keeps its [`Op`] (which holds its inputs), so the nodes form a
//! graph that [`Tensor::backward`] walks. Dropping the last handle to the loss drops
//! the graph and frees the intermediate buffers.

use crate::backprop::is_grad_enabled;
use crate::element::Float;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::op::Op;
use crate::shape::elem_count;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Shortest run of contiguous elements that [`Tensor::zip_runs`] hands to a
/// thread as one task (a 7 x 7 channel plane is 49): the runs of
/// [`Tensor::contiguous_data`]'s copy, and of a gradient added from a view.
const PARALLEL_MIN_RUN: usize = 32;

/// Whether the `run`-long runs of a view of `count` elements go to the
/// threads: long runs, many elements.
fn threaded_runs(run: usize, count: usize) -> bool {
    run >= PARALLEL_MIN_RUN && count >= crate::ops::PARALLEL_MIN_ELEMS
}

/// A unique id per tensor node, the key of the gradient store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// The op behind a node: recorded by the forward and taken out, with the inputs
/// it keeps, by the backward pass that uses it (an empty cell: consumed). A node
/// and its shape-only twin share one cell, so the backward frees it through
/// either.
type OpCell<T> = Arc<Mutex<Option<Op<T>>>>;

/// The cell's contents; a panic while it was locked cannot leave it half-written
/// (every access is one read, clone or take), so a poisoned lock is still good.
fn lock<T: Float>(cell: &OpCell<T>) -> MutexGuard<'_, Option<Op<T>>> {
    cell.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner<T: Float> {
    id: TensorId,
    storage: Arc<Vec<T>>,
    layout: Layout,
    /// The op that produced this node, kept only while gradients are tracked
    /// (`None` for a leaf or an untracked result).
    op: Option<OpCell<T>>,
    /// A leaf variable (a parameter) or a result that depends on one.
    requires_grad: bool,
}

impl<T: Float> Drop for Inner<T> {
    /// The last holder of a buffer gives it back to the [`pool`](crate::pool)
    /// (a view shares its buffer, so a view's drop gives nothing back).
    fn drop(&mut self) {
        if let Some(values) = Arc::get_mut(&mut self.storage) {
            crate::pool::recycle(std::mem::take(values));
        }
    }
}

/// An n-dimensional array of `f32` or `f64` with reverse-mode autograd.
///
/// ```
/// use tensor::Tensor;
/// let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?.requires_grad();
/// let loss = w.mul(&w)?.sum_all()?; // sum_i w_i^2
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![2.0, 4.0, 6.0]); // d/dw = 2w
/// # Ok::<(), tensor::Error>(())
/// ```
pub struct Tensor<T: Float>(Arc<Inner<T>>);

impl<T: Float> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor(Arc::clone(&self.0))
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.to_vec();
        let shown: Vec<T> = data.iter().copied().take(8).collect();
        write!(f, "Tensor<{}>{:?} {:?}", T::DTYPE, self.dims(), shown)?;
        if data.len() > 8 {
            write!(f, "...")?;
        }
        if self.requires_grad_flag() {
            write!(f, " (requires_grad)")?;
        }
        Ok(())
    }
}

impl<T: Float> Tensor<T> {
    // ---------------------------------------------------------------- constructors

    /// A tensor owning `data`, read in row-major order as `dims`.
    ///
    /// # Errors
    /// [`Error::ElementCount`] when `data.len()` is not the product of `dims`.
    pub fn from_vec(data: Vec<T>, dims: &[usize]) -> Result<Self> {
        if data.len() != elem_count(dims) {
            return Err(Error::ElementCount { op: "from_vec", from: vec![data.len()], to: dims.to_vec() });
        }
        Ok(Self::leaf(data, dims))
    }

    /// Like [`Tensor::from_vec`], copying a slice.
    ///
    /// # Errors
    /// [`Error::ElementCount`] when the length does not match `dims`.
    pub fn from_slice(data: &[T], dims: &[usize]) -> Result<Self> {
        Self::from_vec(data.to_vec(), dims)
    }

    /// A scalar (shape `[]`).
    #[must_use]
    pub fn scalar(value: T) -> Self {
        Self::leaf(vec![value], &[])
    }

    /// A tensor of the given shape filled with `value`.
    #[must_use]
    pub fn full(dims: &[usize], value: T) -> Self {
        Self::leaf(vec![value; elem_count(dims)], dims)
    }

    /// All zeros.
    #[must_use]
    pub fn zeros(dims: &[usize]) -> Self {
        Self::full(dims, T::ZERO)
    }

    /// All ones.
    #[must_use]
    pub fn ones(dims: &[usize]) -> Self {
        Self::full(dims, T::ONE)
    }

    /// `[0, 1, ..., n - 1]`.
    #[must_use]
    pub fn arange(n: usize) -> Self {
        Self::leaf((0..n).map(|i| T::from_f64(i as f64)).collect(), &[n])
    }

    pub(crate) fn leaf(data: Vec<T>, dims: &[usize]) -> Self {
        debug_assert_eq!(data.len(), elem_count(dims));
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage: Arc::new(data),
            layout: Layout::contiguous(dims),
            op: None,
            requires_grad: false,
        }))
    }

    /// The result of an op: a fresh contiguous buffer. The op (and with it the
    /// inputs) is kept only when gradients are enabled and some input needs one.
    pub(crate) fn from_op(data: Vec<T>, dims: &[usize], op: Op<T>) -> Self {
        debug_assert_eq!(data.len(), elem_count(dims));
        Self::node(Arc::new(data), Layout::contiguous(dims), op)
    }

    /// A view: the same storage under a new layout.
    pub(crate) fn view(&self, layout: Layout, op: Op<T>) -> Self {
        Self::node(Arc::clone(&self.0.storage), layout, op)
    }

    fn node(storage: Arc<Vec<T>>, layout: Layout, op: Op<T>) -> Self {
        let track = is_grad_enabled() && op.inputs().iter().any(|t| t.requires_grad_flag());
        let op = track.then(|| Arc::new(Mutex::new(Some(op.keeping_only_read_values()))));
        Tensor(Arc::new(Inner { id: TensorId::next(), storage, layout, op, requires_grad: track }))
    }

    /// This node without its values, for an op whose gradient rule needs only
    /// the input's shape: the same id, dims, graph behind it and `requires_grad`,
    /// and an empty storage. The backward finds and accumulates into it exactly
    /// as into `self`, while `self`'s values are freed once its owner drops it.
    /// A node whose own rule reads its output ([`Op::rule_reads_output`]) keeps
    /// its values: the backward may reach it through this twin.
    pub(crate) fn shape_only(&self) -> Self {
        let reads_output = self.0.op.as_ref().is_some_and(|cell| lock(cell).as_ref().is_some_and(Op::rule_reads_output));
        if reads_output || self.0.storage.is_empty() {
            return self.clone();
        }
        Tensor(Arc::new(Inner {
            id: self.0.id,
            storage: Arc::new(Vec::new()),
            layout: Layout::contiguous(self.dims()),
            op: self.0.op.clone(),
            requires_grad: self.0.requires_grad,
        }))
    }

    /// Marks this tensor as a leaf variable whose gradient [`Tensor::backward`]
    /// computes. Shares the storage; forgets any graph behind it.
    #[must_use]
    pub fn requires_grad(self) -> Self {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage: Arc::clone(&self.0.storage),
            layout: self.0.layout.clone(),
            op: None,
            requires_grad: true,
        }))
    }

    /// The same values cut from the graph: no gradient flows through the result.
    #[must_use]
    pub fn detach(&self) -> Self {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage: Arc::clone(&self.0.storage),
            layout: self.0.layout.clone(),
            op: None,
            requires_grad: false,
        }))
    }

    // ------------------------------------------------------------------ accessors

    /// The node's unique id.
    #[must_use]
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// Dimension sizes, outermost first.
    #[must_use]
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }

    /// Number of axes.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.dims().len()
    }

    /// Number of elements.
    #[must_use]
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }

    /// The layout (shape, strides, offset).
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// The whole storage buffer this tensor (maybe a view) reads from.
    #[must_use]
    pub fn storage(&self) -> &[T] {
        &self.0.storage
    }

    /// True for leaf variables and for results that depend on one.
    #[must_use]
    pub fn requires_grad_flag(&self) -> bool {
        self.0.requires_grad
    }

    /// The op that produced this node (a copy: its inputs are shared), if the
    /// graph was recorded and no backward pass has consumed it yet.
    #[must_use]
    pub fn op(&self) -> Option<Op<T>> {
        self.0.op.as_ref().and_then(|cell| lock(cell).clone())
    }

    /// The op behind this node for the backward pass: `Ok(None)` for a leaf or an
    /// untracked result, an error if an earlier backward pass consumed it.
    pub(crate) fn recorded_op(&self) -> Result<Option<Op<T>>> {
        match &self.0.op {
            None => Ok(None),
            Some(cell) => lock(cell).clone().map(Some).ok_or_else(|| Error::Backward {
                msg: "the graph behind this tensor was already used by a backward pass, which frees it as it goes; \
                      run the forward again to build a new one"
                    .into(),
            }),
        }
    }

    /// Takes the op out of this node (and its shape-only twin): the backward pass,
    /// once the node's gradient is passed on, so the inputs the op kept are freed.
    pub(crate) fn take_op(&self) -> Option<Op<T>> {
        self.0.op.as_ref().and_then(|cell| lock(cell).take())
    }

    /// The elements in row-major order, borrowed when the layout is contiguous.
    #[must_use]
    pub fn contiguous_data(&self) -> Cow<'_, [T]> {
        let layout = &self.0.layout;
        if layout.is_contiguous() {
            let start = layout.offset();
            Cow::Borrowed(&self.0.storage[start..start + layout.elem_count()])
        } else if let Some(bases) = layout.transposed_blocks() {
            // A permuted view with its last two axes swapped (attention's
            // heads and pixels): each (rows, cols) matrix copied column by
            // column, reading runs of `rows`, the matrices on the threads.
            let (rank, storage) = (layout.dims().len(), &self.0.storage);
            let (rows, cols, col_stride) = (layout.dims()[rank - 2], layout.dims()[rank - 1], layout.strides()[rank - 1]);
            let mut out = crate::pool::for_overwrite(layout.elem_count());
            let transpose = |(block, &base): (&mut [T], &usize)| {
                for c in 0..cols {
                    let column = &storage[base + c * col_stride..][..rows];
                    for (v, &x) in block[c..].iter_mut().step_by(cols).zip(column) {
                        *v = x;
                    }
                }
            };
            if out.len() >= crate::ops::PARALLEL_MIN_ELEMS {
                out.par_chunks_mut(rows * cols).zip(bases.par_iter()).for_each(transpose);
            } else {
                out.chunks_mut(rows * cols).zip(&bases).for_each(transpose);
            }
            Cow::Owned(out)
        } else {
            let storage = &self.0.storage;
            let count = layout.elem_count();
            // Whole runs at a time where the innermost axis is contiguous (a
            // channel slice of NCHW: runs of H * W), else element by element.
            // A large copy of long runs goes to the threads, run by run (the
            // gradient of a concatenation, split back into its parts: a serial
            // copy there left the other thread idle).
            if layout.run_len().is_some_and(|run| threaded_runs(run, count)) {
                let mut out = crate::pool::for_overwrite(count);
                self.zip_runs(&mut out, <[T]>::copy_from_slice).expect("run_len found runs");
                return Cow::Owned(out);
            }
            let mut out = crate::pool::with_capacity(count);
            if layout.for_each_run(|start, len| out.extend_from_slice(&storage[start..start + len])).is_none() {
                layout.for_each_index(|_, s| out.push(storage[s]));
            }
            Cow::Owned(out)
        }
    }

    /// Calls `f(out_run, run)` for each run of this tensor's elements (its
    /// innermost axes that lie back to back), in row-major order, with the
    /// stretch of `out` (as long as the tensor) that the run fills there; on
    /// the threads, run by run, when the runs are long and many. `None`, and
    /// `f` never called, when the innermost axis is not contiguous.
    pub(crate) fn zip_runs(&self, out: &mut [T], f: impl Fn(&mut [T], &[T]) + Sync) -> Option<()> {
        let (layout, storage) = (&self.0.layout, &self.0.storage);
        let run = layout.run_len()?;
        debug_assert_eq!(out.len(), layout.elem_count(), "zip_runs: out is not as long as the tensor");
        if threaded_runs(run, out.len()) {
            let mut starts = Vec::with_capacity(out.len() / run);
            layout.for_each_run(|start, _| starts.push(start))?;
            out.par_chunks_mut(run).zip(starts.par_iter()).for_each(|(o, &start)| f(o, &storage[start..start + run]));
        } else {
            let mut at = 0;
            layout.for_each_run(|start, len| {
                f(&mut out[at..at + len], &storage[start..start + len]);
                at += len;
            })?;
        }
        Some(())
    }

    /// The elements in row-major order, copied.
    #[must_use]
    pub fn to_vec(&self) -> Vec<T> {
        self.contiguous_data().into_owned()
    }

    /// The one value of a tensor with one element.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the tensor has more or fewer elements.
    pub fn item(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::InvalidArgument { op: "item", msg: format!("needs exactly one element, the shape is {:?}", self.dims()) });
        }
        Ok(self.contiguous_data()[0])
    }

    /// Converts to another element type (no gradient flows through a cast).
    #[must_use]
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        let data = self.contiguous_data().iter().map(|v| U::from_f64(v.to_f64())).collect();
        Tensor::<U>::leaf(data, self.dims())
    }

    /// The elements in row-major order, to write in place, if nothing else
    /// shares this tensor or its buffer and the buffer is exactly its
    /// elements in order (not a view of part of one).
    pub(crate) fn data_in_place(&mut self) -> Option<&mut [T]> {
        let whole_buffer =
            self.0.layout.is_contiguous() && self.0.layout.offset() == 0 && self.0.storage.len() == self.0.layout.elem_count();
        if !whole_buffer {
            return None;
        }
        Arc::get_mut(&mut self.0).and_then(|inner| Arc::get_mut(&mut inner.storage)).map(Vec::as_mut_slice)
    }

    /// Changes the values of a leaf in place (optimizer steps, EMA, loading).
    ///
    /// `f` sees the elements in row-major order. The storage is written in place
    /// when nothing else shares it; otherwise it is copied first (copy on write), so
    /// a graph that still holds the old values is never changed behind its back.
    pub fn update_data(&mut self, f: impl FnOnce(&mut [T])) {
        if let Some(data) = self.data_in_place() {
            f(data);
            return;
        }
        let mut data = self.to_vec();
        f(&mut data);
        let requires_grad = self.0.requires_grad;
        let dims = self.dims().to_vec();
        *self = Self::leaf(data, &dims);
        if requires_grad {
            *self = self.clone().requires_grad();
        }
    }

    /// True when every element is finite (no NaN, no infinity).
    #[must_use]
    pub fn all_finite(&self) -> bool {
        self.contiguous_data().iter().all(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;

    /// A view's values in row-major order, read one index at a time: the
    /// definition the copies of `contiguous_data` are checked against.
    fn by_index(t: &Tensor<f64>) -> Vec<f64> {
        let mut out = Vec::new();
        t.layout().for_each_index(|_, s| out.push(t.0.storage[s]));
        out
    }

    /// Permuted views with the last two axes swapped take the transposed
    /// copy (on one thread, and on the threads above the parallel size),
    /// others the runs or the index walk: every one equals the definition,
    /// also narrowed, offset, and with a broadcast last axis.
    #[test]
    fn contiguous_copies_of_permuted_views_match_the_definition() -> Result<()> {
        let tensor = |dims: &[usize]| {
            let n: usize = dims.iter().product();
            Tensor::from_vec((0..n).map(|i| i as f64 * 0.5 - 3.0).collect(), dims)
        };
        let views = [
            tensor(&[5, 3])?.t()?,
            tensor(&[2, 7, 5])?.permute(&[0, 2, 1])?,
            tensor(&[3, 2, 5, 4])?.permute(&[1, 0, 3, 2])?,
            tensor(&[2, 3, 4])?.permute(&[2, 1, 0])?,
            tensor(&[4, 9, 6])?.narrow(1, 2, 5)?.permute(&[0, 2, 1])?,
            tensor(&[3, 1])?.broadcast_to(&[3, 4])?,
            tensor(&[64, 49, 32])?.permute(&[0, 2, 1])?,
            // Runs of 49 (a 7 x 7 plane), enough of them for the threaded run copy.
            tensor(&[16, 96, 7, 7])?.narrow(1, 16, 48)?,
            // Runs of 5: too short for it, copied on one thread.
            tensor(&[16, 96, 7, 7])?.narrow(3, 1, 5)?,
        ];
        for view in &views {
            assert!(!view.layout().is_contiguous());
            assert_eq!(view.contiguous_data().into_owned(), by_index(view), "{:?} {:?}", view.dims(), view.layout().strides());
        }
        assert!(views[6].elem_count() >= crate::ops::PARALLEL_MIN_ELEMS, "one view takes the threaded copy");
        assert!(views[7].elem_count() >= crate::ops::PARALLEL_MIN_ELEMS && 49 >= PARALLEL_MIN_RUN, "one takes the threaded run copy");
        assert!(views[8].elem_count() >= crate::ops::PARALLEL_MIN_ELEMS && 5 < PARALLEL_MIN_RUN, "and one of that size does not");
        Ok(())
    }

    /// A handle on `t`'s values that does not keep them alive.
    fn values_of(t: &Tensor<f64>) -> Weak<Vec<f64>> {
        Arc::downgrade(&t.0.storage)
    }

    #[test]
    fn the_graph_keeps_only_the_values_a_gradient_rule_reads() -> Result<()> {
        let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3])?.requires_grad();
        let w = Tensor::from_vec(vec![0.5, 4.0, -1.0], &[3])?.requires_grad();
        let h = x.mul(&w)?;
        // No rule reads h's values: the add and the reshape need only its shape.
        let y = h.add(&x)?.reshape(&[3, 1])?;
        // exp's rule reads its output, so the graph keeps e whole, even behind a reshape.
        let e = h.exp();
        let z = e.reshape(&[1, 3])?.sum_all()?;
        // mul's rule reads both factors, so the graph keeps f whole.
        let f = x.add(&w)?;
        let u = f.mul(&x)?.sum_all()?;
        let (h_values, e_values, f_values) = (values_of(&h), values_of(&e), values_of(&f));
        drop((h, e, f));
        assert!(h_values.upgrade().is_none(), "h's values are freed with h");
        assert!(e_values.upgrade().is_some(), "e's values live on in the graph");
        assert!(f_values.upgrade().is_some(), "f's values live on in the graph");
        // The backward still reaches h (by id, through its shape-only twin); the gradients are exact.
        let grads = y.sum_all()?.add(&z)?.add(&u)?.backward()?;
        let (xv, wv) = (x.to_vec(), w.to_vec());
        let expected_x = xv.iter().zip(&wv).map(|(x, w)| w + 1.0 + w * (x * w).exp() + (2.0 * x + w));
        let expected_w = xv.iter().zip(&wv).map(|(x, w)| x + x * (x * w).exp() + x);
        for (name, t, expected) in [("x", &x, expected_x.collect::<Vec<_>>()), ("w", &w, expected_w.collect())] {
            let got = grads.get(t).expect("a leaf that took part").to_vec();
            assert!(got.iter().zip(&expected).all(|(g, e)| (g - e).abs() <= 1e-14 * e.abs()), "d/d{name}: {got:?} vs {expected:?}");
        }
        Ok(())
    }

    #[test]
    fn the_backward_frees_the_graph_as_it_goes_and_says_so_if_asked_again() -> Result<()> {
        let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3])?.requires_grad();
        let f = x.add_scalar(1.0);
        let loss = f.mul(&x)?.sum_all()?; // sum (x + 1) x: d/dx = 2x + 1
        let f_values = values_of(&f);
        drop(f);
        assert!(f_values.upgrade().is_some(), "the product's rule still needs f");
        let grads = loss.backward()?;
        assert_eq!(grads.get(&x).expect("x took part").to_vec(), vec![3.0, -3.0, 7.0]);
        assert!(f_values.upgrade().is_none(), "used by the backward, f is freed while the loss lives on");
        assert_eq!(loss.item()?, 2.0 + 2.0 + 12.0, "the values of the loss itself stay");
        let again = loss.backward().expect_err("the graph is consumed");
        assert!(again.to_string().contains("already used by a backward pass"), "{again}");
        Ok(())
    }
}

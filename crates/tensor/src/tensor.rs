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
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A unique id per tensor node, the key of the gradient store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

struct Inner<T: Float> {
    id: TensorId,
    storage: Arc<Vec<T>>,
    layout: Layout,
    /// The op that produced this node, kept only while gradients are tracked.
    op: Option<Op<T>>,
    /// A leaf variable (a parameter) or a result that depends on one.
    requires_grad: bool,
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
        Tensor(Arc::new(Inner { id: TensorId::next(), storage, layout, op: if track { Some(op) } else { None }, requires_grad: track }))
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

    /// The op that produced this node, if the graph was recorded.
    #[must_use]
    pub fn op(&self) -> Option<&Op<T>> {
        self.0.op.as_ref()
    }

    /// The elements in row-major order, borrowed when the layout is contiguous.
    #[must_use]
    pub fn contiguous_data(&self) -> Cow<'_, [T]> {
        let layout = &self.0.layout;
        if layout.is_contiguous() {
            let start = layout.offset();
            Cow::Borrowed(&self.0.storage[start..start + layout.elem_count()])
        } else {
            let storage = &self.0.storage;
            let mut out = Vec::with_capacity(layout.elem_count());
            // Whole runs at a time where the innermost axis is contiguous (a
            // channel slice of NCHW: runs of H * W), else element by element.
            if layout.for_each_run(|start, len| out.extend_from_slice(&storage[start..start + len])).is_none() {
                layout.for_each_index(|_, s| out.push(storage[s]));
            }
            Cow::Owned(out)
        }
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

    /// Changes the values of a leaf in place (optimizer steps, EMA, loading).
    ///
    /// `f` sees the elements in row-major order. The storage is written in place
    /// when nothing else shares it; otherwise it is copied first (copy on write), so
    /// a graph that still holds the old values is never changed behind its back.
    pub fn update_data(&mut self, f: impl FnOnce(&mut [T])) {
        let unique_contiguous =
            self.0.layout.is_contiguous() && self.0.layout.offset() == 0 && self.0.storage.len() == self.0.layout.elem_count();
        if unique_contiguous {
            if let Some(inner) = Arc::get_mut(&mut self.0) {
                if let Some(data) = Arc::get_mut(&mut inner.storage) {
                    f(data);
                    return;
                }
            }
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

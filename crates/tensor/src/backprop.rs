//! Reverse-mode automatic differentiation.
//!
//! `loss.backward()` sorts the graph behind `loss` topologically (every node after
//! the nodes it was computed from), then walks that order in reverse: each node's
//! gradient is complete once every node that used it has been visited, and the
//! node's op turns it into gradients for its inputs by the chain rule. Gradients of
//! a tensor used twice add up (`+=`), as in micrograd.
//!
//! The gradients of intermediate nodes are dropped as soon as they have been passed
//! on, and so is each node's op, with the inputs it kept for its rule: the backward
//! pass consumes the graph as it goes, freeing each activation once the last rule
//! that reads it has run. So the peak memory of a training step is the forward's
//! activations, not those plus every gradient. As in PyTorch (without
//! `retain_graph`), a second backward through the same graph is an error that says
//! so; run the forward again.

use crate::element::Float;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::ops::{attention, binary, conv, matmul, norm, reduce, select, unary, upsample, view};
use crate::tensor::{Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether ops record the graph on this thread (false inside [`no_grad`]).
#[must_use]
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// While alive, ops on this thread record no graph (inference, optimizer updates).
#[derive(Debug)]
pub struct NoGradGuard(());

impl NoGradGuard {
    /// Disables graph recording until the guard is dropped.
    #[must_use]
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(())
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `f` without recording a graph.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// The gradients of a backward pass, keyed by tensor id.
#[derive(Debug)]
pub struct GradStore<T: Float> {
    grads: HashMap<TensorId, Tensor<T>>,
}

impl<T: Float> Default for GradStore<T> {
    fn default() -> Self {
        GradStore { grads: HashMap::new() }
    }
}

impl<T: Float> GradStore<T> {
    /// The gradient of the loss with respect to `t`, if `t` took part.
    #[must_use]
    pub fn get(&self, t: &Tensor<T>) -> Option<&Tensor<T>> {
        self.grads.get(&t.id())
    }

    /// Takes the gradient of `t` out of the store.
    pub fn remove(&mut self, t: &Tensor<T>) -> Option<Tensor<T>> {
        self.grads.remove(&t.id())
    }

    /// Adds `grad` to the gradient stored for `t` (gradients accumulate).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `grad` does not have the shape of `t`.
    pub fn accumulate(&mut self, t: &Tensor<T>, grad: Tensor<T>) -> Result<()> {
        if grad.dims() != t.dims() {
            return Err(Error::ShapeMismatch {
                op: "accumulate_grad",
                msg: format!("gradient {:?} for a tensor of shape {:?}", grad.dims(), t.dims()),
            });
        }
        let _guard = NoGradGuard::new();
        let sum = match self.grads.remove(&t.id()) {
            Some(previous) => sum_in_place(previous, grad),
            None => grad,
        };
        self.grads.insert(t.id(), sum);
        Ok(())
    }

    /// Number of stored gradients.
    #[must_use]
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no gradient is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// `a + b` for two gradients of one tensor, added into the buffer of `a`, or
/// of `b`, when nothing else holds it (else into a copy of `a`): no new
/// buffer per addition, and the same sums as `add` (a floating-point sum of
/// two terms does not depend on their order). The other operand is read
/// where it lies: a view, such as a concatenation's gradient split back
/// into its parts (`cat_backward`), is added run by run, not copied first.
fn sum_in_place<T: Float>(mut a: Tensor<T>, mut b: Tensor<T>) -> Tensor<T> {
    if let Some(acc) = a.data_in_place() {
        add_view(acc, &b);
        return a;
    }
    if let Some(acc) = b.data_in_place() {
        add_view(acc, &a);
        return b;
    }
    a.update_data(|acc| add_view(acc, &b));
    a
}

/// `acc += view` (row-major), the view read in place: each run of its
/// innermost contiguous axes added to its stretch of `acc` ([`Tensor::zip_runs`]),
/// element by element (through a copy) when it has no runs.
fn add_view<T: Float>(acc: &mut [T], view: &Tensor<T>) {
    // A contiguous view is borrowed, not copied, and added on the threads in chunks.
    if view.layout().is_contiguous() || view.zip_runs(acc, crate::ops::add_run).is_none() {
        crate::ops::add_assign(acc, &view.contiguous_data());
    }
}

impl<T: Float> Tensor<T> {
    /// Gradients of this scalar with respect to every tensor it depends on that
    /// requires a gradient.
    ///
    /// # Errors
    /// [`Error::Backward`] when the tensor has more than one element (use
    /// [`Tensor::backward_with`]) or does not depend on any variable.
    pub fn backward(&self) -> Result<GradStore<T>> {
        if self.elem_count() != 1 {
            return Err(Error::Backward { msg: format!("backward() needs a scalar, the shape is {:?}; use backward_with", self.dims()) });
        }
        self.backward_with(&Tensor::ones(self.dims()))
    }

    /// Backward pass seeded with the upstream gradient `grad` (the shape of `self`):
    /// the gradients of `sum(self * grad)`.
    ///
    /// # Errors
    /// [`Error::Backward`] on a shape mismatch or when nothing requires a gradient.
    pub fn backward_with(&self, grad: &Tensor<T>) -> Result<GradStore<T>> {
        if grad.dims() != self.dims() {
            return Err(Error::Backward { msg: format!("upstream gradient {:?} for an output of shape {:?}", grad.dims(), self.dims()) });
        }
        if !self.requires_grad_flag() {
            return Err(Error::Backward { msg: "the tensor does not depend on any tensor that requires a gradient".into() });
        }
        let _guard = NoGradGuard::new();
        let mut order = self.topological_order()?;
        let mut store = GradStore::default();
        store.grads.insert(self.id(), grad.detach());
        while let Some(node) = order.pop() {
            // An interior node's gradient is complete here and used only once; so is
            // its op, taken out of the graph here: when it and `node` drop at the end
            // of this iteration, every value that only this rule read is freed.
            let Some(op) = node.take_op() else { continue };
            let Some(g) = store.grads.remove(&node.id()) else { continue };
            // A gradient that is still a view (a concatenation's block, nothing
            // added onto it) is made whole once here, not once by every rule
            // that reads it (an add hands it to both of its inputs).
            let g = if g.layout().is_contiguous() { g } else { g.contiguous()? };
            let input_grads = backward_op(&op, &node, &g)?;
            for (input, input_grad) in op.inputs().into_iter().zip(input_grads) {
                if let Some(ig) = input_grad {
                    if input.requires_grad_flag() {
                        store.accumulate(input, ig)?;
                    }
                }
            }
        }
        Ok(store)
    }

    /// Every node behind `self` that requires a gradient, inputs before outputs.
    /// An explicit stack instead of recursion: deep graphs do not overflow it.
    ///
    /// # Errors
    /// [`Error::Backward`] if a backward pass already consumed part of the graph.
    pub(crate) fn topological_order(&self) -> Result<Vec<Tensor<T>>> {
        let mut order = Vec::new();
        let mut visited = HashSet::new();
        // (node, children pushed?)
        let mut stack = vec![(self.clone(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                order.push(node);
                continue;
            }
            if !visited.insert(node.id()) {
                continue;
            }
            stack.push((node.clone(), true));
            if let Some(op) = node.recorded_op()? {
                for input in op.inputs() {
                    if input.requires_grad_flag() && !visited.contains(&input.id()) {
                        stack.push((input.clone(), false));
                    }
                }
            }
        }
        Ok(order)
    }
}

/// The chain rule for one op: given `g = dL/d(out)`, the gradients for each of
/// `op.inputs()`, in that order (`None` where no gradient flows, e.g. a mask).
fn backward_op<T: Float>(op: &Op<T>, out: &Tensor<T>, g: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
    let one = |t: Result<Tensor<T>>| t.map(|t| vec![Some(t)]);
    let two = |t: Result<(Tensor<T>, Tensor<T>)>| t.map(|(a, b)| vec![Some(a), Some(b)]);
    match op {
        Op::Neg(_) => one(unary::neg_backward(g)),
        Op::Exp(_) => one(unary::exp_backward(out, g)),
        Op::Log(x) => one(unary::log_backward(x, g)),
        Op::Sqrt(_) => one(unary::sqrt_backward(out, g)),
        Op::Tanh(_) => one(unary::tanh_backward(out, g)),
        Op::Sigmoid(_) => one(unary::sigmoid_backward(out, g)),
        Op::Relu(x) => one(unary::relu_backward(x, g)),
        Op::Silu(x) => one(unary::silu_backward(x, g)),
        Op::Gelu(x) => one(unary::gelu_backward(x, g)),
        Op::Abs(x) => one(unary::abs_backward(x, g)),
        Op::Powf(x, e) => one(unary::powf_backward(x, *e, g)),
        Op::Clamp(x, lo, hi) => one(unary::clamp_backward(x, *lo, *hi, g)),
        Op::Affine(_, mul, _) => one(unary::affine_backward(*mul, g)),
        Op::Add(a, b) => two(binary::add_backward(a, b, g)),
        Op::Sub(a, b) => two(binary::sub_backward(a, b, g)),
        Op::Mul(a, b) => two(binary::mul_backward(a, b, g)),
        Op::Div(a, b) => two(binary::div_backward(a, b, g)),
        Op::Maximum(a, b) => two(binary::maximum_backward(a, b, g)),
        Op::Sum { x, axes } => one(reduce::sum_backward(x, axes, g)),
        Op::Max { x, argmax } => one(reduce::max_backward(x, argmax, g)),
        Op::Reshape(x) => one(view::reshape_backward(x, g)),
        Op::Permute(_, perm) => one(view::permute_backward(perm, g)),
        Op::Narrow { x, axis, start } => one(view::narrow_backward(x, *axis, *start, g)),
        Op::BroadcastTo(x) => one(view::broadcast_backward(x, g)),
        Op::Copy(_) => one(Ok(g.clone())),
        Op::Cat { xs, axis } => view::cat_backward(xs, *axis, g).map(|v| v.into_iter().map(Some).collect()),
        Op::Matmul(a, b) => two(matmul::matmul_backward(a, b, g)),
        Op::Conv2d { x, weight, bias, stride, padding } => {
            conv::conv2d_backward(x, weight, bias.is_some(), *stride, *padding, g, x.requires_grad_flag())
        }
        Op::GroupNorm { x, weight, bias, groups, mean, rstd, silu } => {
            let grads = if *silu {
                norm::group_norm_silu_backward(x, weight, bias, *groups, mean, rstd, g)
            } else {
                norm::group_norm_backward(x, weight, *groups, mean, rstd, g)
            };
            grads.map(|(gx, gw, gb)| vec![Some(gx), Some(gw), Some(gb)])
        }
        Op::UpsampleNearest2d { x, scale } => one(upsample::upsample_nearest2d_backward(x, *scale, g)),
        Op::Attention { qkv, weights } => one(attention::attention_backward(qkv, weights, g)),
        Op::Where { mask, a, b } => select::where_backward(mask, a, b, g).map(|(ga, gb)| vec![None, Some(ga), Some(gb)]),
        Op::IndexSelect { x, axis, indices } => one(select::index_select_backward(x, *axis, indices, g)),
        Op::Gather { x, axis, index } => one(select::gather_backward(x, *axis, index, g)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_store_holds_one_gradient_per_leaf_and_hands_it_over() -> Result<()> {
        // L = sum(a * b): dL/da = b, dL/db = a; the product node's gradient is passed on and dropped.
        let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?.requires_grad();
        let b = Tensor::from_vec(vec![3.0f64, -4.0], &[2])?.requires_grad();
        let mut grads = a.mul(&b)?.sum_all()?.backward()?;
        assert_eq!((grads.len(), grads.is_empty()), (2, false), "the two leaves, no interior node");
        assert_eq!(grads.remove(&a).expect("a took part").to_vec(), vec![3.0, -4.0]);
        assert!(grads.remove(&a).is_none(), "removed once");
        assert_eq!(grads.len(), 1);
        assert_eq!(grads.remove(&b).expect("b took part").to_vec(), vec![1.0, 2.0]);
        assert!(grads.is_empty() && GradStore::<f64>::default().is_empty());
        Ok(())
    }

    /// Gradients that meet are added into the stored buffer in place, or into a
    /// copy when another gradient shares it (`x + x` hands the same upstream
    /// gradient to both inputs): the shared one is never changed behind its back.
    #[test]
    fn accumulating_adds_in_place_and_copies_what_is_shared() -> Result<()> {
        let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], &[3])?.requires_grad();
        let upstream = Tensor::from_vec(vec![0.5f64, 1.0, 2.0], &[3])?;
        // d/dx of sum(g (x + x)) = 2 g: both inputs of the add receive g itself.
        let grads = x.add(&x)?.backward_with(&upstream)?;
        assert_eq!(grads.get(&x).unwrap().to_vec(), vec![1.0, 2.0, 4.0]);
        assert_eq!(upstream.to_vec(), vec![0.5, 1.0, 2.0], "the upstream gradient is unchanged");
        // d/dx of sum(x * x + x + x) = 2x + 2, three contributions.
        let grads = x.mul(&x)?.add(&x)?.add(&x)?.sum_all()?.backward()?;
        assert_eq!(grads.get(&x).unwrap().to_vec(), vec![4.0, -2.0, 8.0]);
        // Large enough for the parallel chunks.
        let n = 100_003;
        let big = Tensor::from_vec((0..n).map(|i| i as f64).collect(), &[n])?.requires_grad();
        let grads = big.mul(&big)?.add(&big)?.sum_all()?.backward()?;
        let want: Vec<f64> = (0..n).map(|i| 2.0 * i as f64 + 1.0).collect();
        assert_eq!(grads.get(&big).unwrap().to_vec(), want);
        Ok(())
    }

    /// A tensor read by a concatenation and by another op (a UNet's skip
    /// connection) gets its block of the concatenation's gradient as a view,
    /// added onto the other gradient where it lies: the same bits as `add` of
    /// the two gradients made whole, whichever arrives first: along the
    /// channels (runs of a plane) on the threads and off, and along the last
    /// axis (short runs, many of them); and a view that is the whole
    /// gradient (the other input of the concatenation) reads as its block.
    #[test]
    fn a_concatenation_s_gradient_is_added_from_where_it_lies() -> Result<()> {
        let mut r = crate::rng(5);
        for (dx, dy, axis) in
            [(vec![64, 32, 7, 7], vec![64, 16, 7, 7], 1), (vec![2, 3, 5], vec![2, 4, 5], 1), (vec![300, 2, 70], vec![300, 2, 3], 2)]
        {
            let x = Tensor::<f32>::randn(&dx, &mut r).requires_grad();
            let y = Tensor::<f32>::randn(&dy, &mut r).requires_grad();
            let joined = Tensor::cat(&[x.clone(), y.clone()], axis)?;
            let u = Tensor::<f32>::randn(joined.dims(), &mut r);
            let v = Tensor::<f32>::randn(&dx, &mut r);
            let u_x = u.narrow(axis, 0, dx[axis])?.contiguous()?;
            let u_y = u.narrow(axis, dx[axis], dy[axis])?.contiguous()?;
            let want = no_grad(|| u_x.add(&v))?.to_vec();
            // sum(cat(x, y) u) + sum(x v) and the other way round: the two
            // gradients of x reach the store in both orders.
            let cat_first = joined.mul(&u)?.sum_all()?.add(&x.mul(&v)?.sum_all()?)?.backward()?;
            let joined = Tensor::cat(&[x.clone(), y.clone()], axis)?;
            let cat_last = x.mul(&v)?.sum_all()?.add(&joined.mul(&u)?.sum_all()?)?.backward()?;
            for grads in [&cat_first, &cat_last] {
                let got = grads.get(&x).expect("x took part").to_vec();
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{dx:?} + {dy:?} along {axis}");
                assert_eq!(grads.get(&y).expect("y took part").to_vec(), u_y.to_vec());
            }
        }
        Ok(())
    }
}

//! Gradient checking by central finite differences in f64.
//!
//! For a function `f` of some tensors, the checker compares the autograd gradient
//! of `L = sum(f(x) * R)` (with a fixed random `R`, so that every output element
//! gets a different upstream weight) against
//!
//! `dL/dx_j ~ (L(x + h e_j) - L(x - h e_j)) / (2 h)`,
//!
//! whose error is O(h^2) from truncation plus O(eps / h) from rounding; with
//! h = 1e-6 in f64 both are far below the tolerance the tests use.

use crate::backprop::no_grad;
use crate::element::Float;
use crate::error::Result;
use crate::op::OpKind;
use crate::random::rng;
use crate::tensor::Tensor;
use std::collections::BTreeSet;

/// The outcome of a gradient check.
#[derive(Clone, Debug)]
pub struct GradCheck {
    /// The largest `|analytic - numeric| / max(1, |numeric|)` over all elements.
    pub max_error: f64,
    /// Where it occurred: (input index, element index).
    pub worst_at: (usize, usize),
    /// Every primitive in the checked function's graph.
    pub kinds: BTreeSet<OpKind>,
}

/// Step of the central differences.
pub const FD_STEP: f64 = 1e-6;

/// Checks the gradients of `f` at `inputs` (see the module docs).
///
/// # Errors
/// Whatever `f` returns, or a backward error.
pub fn gradcheck(f: impl Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>, inputs: &[Tensor<f64>]) -> Result<GradCheck> {
    let vars: Vec<Tensor<f64>> =
        inputs.iter().map(|x| Tensor::from_vec(x.to_vec(), x.dims()).map(Tensor::requires_grad)).collect::<Result<_>>()?;
    let y = f(&vars)?;
    let upstream = Tensor::<f64>::randn(y.dims(), &mut rng(0x6772_6164));
    let kinds = y.topological_order()?.iter().filter_map(|t| t.op().map(|op| op.kind())).collect();
    let grads = y.backward_with(&upstream)?;
    let r = upstream.to_vec();
    let loss = |xs: &[Tensor<f64>]| -> Result<f64> {
        let out = no_grad(|| f(xs))?.to_vec();
        Ok(out.iter().zip(&r).map(|(a, b)| a * b).sum())
    };
    let mut report = GradCheck { max_error: 0.0, worst_at: (0, 0), kinds };
    for (i, var) in vars.iter().enumerate() {
        let analytic = grads.get(var).map_or_else(|| vec![0.0; var.elem_count()], Tensor::to_vec);
        let base = var.to_vec();
        for j in 0..base.len() {
            let h = FD_STEP * base[j].abs().max(1.0);
            let mut shifted: Vec<Tensor<f64>> = vars.iter().map(Tensor::detach).collect();
            let mut plus = base.clone();
            plus[j] += h;
            shifted[i] = Tensor::from_vec(plus, var.dims())?;
            let l_plus = loss(&shifted)?;
            let mut minus = base.clone();
            minus[j] -= h;
            shifted[i] = Tensor::from_vec(minus, var.dims())?;
            let l_minus = loss(&shifted)?;
            let numeric = (l_plus - l_minus) / (2.0 * h);
            let error = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            if error > report.max_error || error.is_nan() {
                report.max_error = error;
                report.worst_at = (i, j);
            }
        }
    }
    Ok(report)
}

impl<T: Float> Tensor<T> {
    /// True when every element is within `tol` (relative to `max(1, |b|)`) of `other`.
    #[must_use]
    pub fn allclose(&self, other: &Tensor<T>, tol: f64) -> bool {
        self.dims() == other.dims()
            && self.contiguous_data().iter().zip(other.contiguous_data().iter()).all(|(a, b)| {
                let (a, b) = (a.to_f64(), b.to_f64());
                (a - b).abs() <= tol * b.abs().max(1.0)
            })
    }
}

//! Gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`: when the global L2
//! norm of all gradients, `||g|| = sqrt(sum_p sum_i g_{p,i}^2)`, exceeds `max_norm`,
//! every gradient is scaled by `max_norm / (||g|| + 1e-6)`.

use rayon::prelude::*;

use crate::error::Result;
use crate::module::Module;
use tensor::{Float, GradStore};

/// Clips the gradients of `model`'s parameters in `grads` to global norm
/// `max_norm` and returns the norm before clipping.
///
/// # Errors
/// None in practice (the scaled gradients keep their shapes).
pub fn clip_grad_norm<T: Float>(model: &dyn Module<T>, grads: &mut GradStore<T>, max_norm: f64) -> Result<f64> {
    let (mut params, mut with_grads) = (Vec::new(), Vec::new());
    model.visit_params("", &mut |_, p| {
        if let Some(g) = grads.get(p) {
            with_grads.push(g.clone());
            params.push(p.clone());
        }
    });
    // Each parameter's sum of squares on the threads, each in its own order;
    // then added up in parameter order: the same bits as one loop over both.
    let per_param: Vec<f64> = with_grads.par_iter().map(|g| g.contiguous_data().iter().map(|v| v.to_f64().powi(2)).sum::<f64>()).collect();
    let mut sum_of_squares = 0.0;
    for s in per_param {
        sum_of_squares += s;
    }
    let norm = sum_of_squares.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for p in &params {
            if let Some(g) = grads.remove(p) {
                grads.accumulate(p, g.mul_scalar(T::from_f64(scale)))?;
            }
        }
    }
    Ok(norm)
}

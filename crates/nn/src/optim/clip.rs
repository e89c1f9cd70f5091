//! Gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`: when the global L2
//! norm of all gradients, `||g|| = sqrt(sum_p sum_i g_{p,i}^2)`, exceeds `max_norm`,
//! every gradient is scaled by `max_norm / (||g|| + 1e-6)`.

use crate::error::Result;
use crate::module::Module;
use tensor::{Float, GradStore};

/// Clips the gradients of `model`'s parameters in `grads` to global norm
/// `max_norm` and returns the norm before clipping.
///
/// # Errors
/// None in practice (the scaled gradients keep their shapes).
pub fn clip_grad_norm<T: Float>(model: &dyn Module<T>, grads: &mut GradStore<T>, max_norm: f64) -> Result<f64> {
    let mut params = Vec::new();
    let mut sum_of_squares = 0.0;
    model.visit_params("", &mut |_, p| {
        if let Some(g) = grads.get(p) {
            sum_of_squares += g.contiguous_data().iter().map(|v| v.to_f64().powi(2)).sum::<f64>();
            params.push(p.clone());
        }
    });
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

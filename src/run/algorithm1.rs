//! Algorithm 1 of Ho et al. 2020, the training step, in one function:
//!
//! ```text
//! 1: repeat
//! 2:   x_0 ~ q(x_0)
//! 3:   t ~ Uniform({1, ..., T})
//! 4:   eps ~ N(0, I)
//! 5:   take a gradient descent step on
//!        grad_theta |eps - eps_theta(sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, t)|^2
//! 6: until converged
//! ```
//!
//! [`train_step`] is lines 3 to 5 for one minibatch: line 2 (which images) and
//! line 6 (how many steps) belong to the caller, the training run of
//! [`crate::run::train`], the step benchmark of [`crate::bench::step`] and
//! chapter 8 of the course. Line 5's loss is [`ddpm::training_losses`], which also
//! covers the bound and the hybrid objective and x_0 prediction.
//!
//! Shapes: `x_start` is `[B, ...]` (`[B, 1, 28, 28]` for MNIST, `[B, 2]` for the toy
//! sets); `t` holds one 0-based code timestep per item (code index = paper t - 1).

use crate::error::Result;
use ddpm::{training_losses, NoisePredictor, NoiseSchedule, TrainingOptions};
use nn::{clip_grad_norm, Module, Optimizer};
use tensor::{Rng, Tensor};

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The loss on the minibatch, before the update.
    pub loss: f64,
    /// The global norm of the gradient before clipping; NaN when the loss was not
    /// finite, since then no gradient is taken.
    pub grad_norm: f64,
}

impl StepOutcome {
    /// Whether the optimizer stepped: only when the loss and the gradient norm are
    /// finite, so a diverged step leaves the weights as they were.
    #[must_use]
    pub fn stepped(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }
}

/// One step of Algorithm 1 on the minibatch `x_start` (x_0, line 2):
/// - line 3: `t ~ Uniform({0, ..., T - 1})` (code indices), one per item, from `rng`
///   (independently, or one per stratum with `options.timestep_sampling`, see
///   [`ddpm::stratified_timesteps`]; or, in place of the paper's uniform law,
///   crowding the middle of `0..T`: [`ddpm::logit_normal_timesteps`], the quick
///   preset's);
/// - line 4: `eps ~ N(0, I)` of the shape of `x_start`, from `rng` after `t`;
/// - line 5: the loss on `x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps`
///   ([`training_losses`]; L_simple by default), its gradient, the gradient clipped
///   to a global norm of `max_grad_norm` (`f64::INFINITY` for none) and one step of
///   `optimizer` at its current learning rate.
///
/// A non-finite loss or gradient norm is returned without an update (see
/// [`StepOutcome::stepped`]); the caller decides that the run has diverged.
///
/// # Errors
/// Model or shape errors, a schedule whose `T` is not the timesteps' range.
pub fn train_step<M: Module<f32> + NoisePredictor<f32>>(
    schedule: &NoiseSchedule,
    model: &mut M,
    optimizer: &mut dyn Optimizer<f32>,
    x_start: &Tensor<f32>,
    options: TrainingOptions,
    max_grad_norm: f64,
    rng: &mut Rng,
) -> Result<StepOutcome> {
    let t = options.timestep_sampling.draw(schedule.num_timesteps(), x_start.dims()[0], rng);
    let noise = Tensor::<f32>::randn(x_start.dims(), rng);
    let loss = training_losses(schedule, &*model, x_start, &t, &noise, options)?.loss;
    let loss_value = f64::from(loss.item()?);
    if !loss_value.is_finite() {
        return Ok(StepOutcome { loss: loss_value, grad_norm: f64::NAN });
    }
    let mut grads = loss.backward()?;
    drop(loss); // free the graph so the optimizer updates the weights in place
    let grad_norm = clip_grad_norm(&*model, &mut grads, max_grad_norm)?;
    if grad_norm.is_finite() {
        optimizer.step(model, &grads)?;
    }
    Ok(StepOutcome { loss: loss_value, grad_norm })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::model::Model;
    use ddpm::{sample_timesteps, BetaSchedule};
    use nn::{Adam, MlpConfig, MlpDenoiser, Mode};
    use std::cell::RefCell;
    use tensor::rng;

    #[test]
    fn only_a_finite_loss_with_a_finite_gradient_norm_steps() {
        let outcome = |loss: f64, grad_norm: f64| StepOutcome { loss, grad_norm }.stepped();
        assert!(outcome(0.5, 2.0));
        assert!(!outcome(f64::NAN, f64::NAN));
        assert!(!outcome(0.5, f64::NAN));
        assert!(!outcome(f64::INFINITY, 2.0));
        assert!(!outcome(0.5, f64::INFINITY));
    }

    /// The MLP denoiser, recording every input it is asked about: its output
    /// depends on x_t and on t, so a wrong x_t or t changes the loss.
    #[derive(Clone)]
    struct Recording {
        inner: MlpDenoiser<f32>,
        seen: RefCell<Vec<(Vec<f32>, Vec<usize>)>>,
    }

    impl Module<f32> for Recording {
        fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<f32>)) {
            self.inner.visit_params(prefix, f);
        }
        fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<f32>)) {
            self.inner.visit_params_mut(prefix, f);
        }
        fn set_mode(&mut self, mode: Mode) {
            self.inner.set_mode(mode);
        }
    }

    impl NoisePredictor<f32> for Recording {
        fn predict(&self, x_t: &Tensor<f32>, t: &[usize]) -> tensor::Result<Tensor<f32>> {
            self.seen.borrow_mut().push((x_t.to_vec(), t.to_vec()));
            self.inner.forward(x_t, t).map_err(nn::Error::into_tensor_error)
        }
    }

    /// A 100-step linear schedule, a recording toy MLP and a batch of 8 points.
    fn recording_toy() -> Result<(NoiseSchedule, Recording, Tensor<f32>)> {
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, 100)?;
        let mut r = rng(1);
        let inner = MlpDenoiser::new(&MlpConfig::toy_2d(), &mut r)?;
        let model = Recording { inner, seen: RefCell::new(Vec::new()) };
        let x_start = Tensor::<f32>::rand_uniform(&[8, 2], -1.0, 1.0, &mut r);
        Ok((schedule, model, x_start))
    }

    fn params(model: &impl Module<f32>) -> Vec<Vec<f32>> {
        model.named_params().into_iter().map(|(_, p)| p.to_vec()).collect()
    }

    #[test]
    fn one_step_is_lines_3_to_5_of_algorithm_1() -> Result<()> {
        let (schedule, mut model, x_start) = recording_toy()?;
        let options = TrainingOptions::default();
        let max_norm = 0.5;

        // The same draws by hand: t first, then eps, from the same stream.
        let mut draws = rng(7);
        let t = sample_timesteps(100, 8, &mut draws);
        let noise = Tensor::<f32>::randn(&[8, 2], &mut draws);
        let mut reference = model.clone();
        let mut reference_optimizer = Adam::adamw(1e-2, 0.0);
        let loss = training_losses(&schedule, &reference, &x_start, &t, &noise, options)?.loss;
        let mut grads = loss.backward()?;
        let expected_norm = clip_grad_norm(&reference, &mut grads, max_norm)?;
        reference_optimizer.step(&mut reference, &grads)?;

        let before = params(&model);
        let mut optimizer = Adam::adamw(1e-2, 0.0);
        let outcome = train_step(&schedule, &mut model, &mut optimizer, &x_start, options, max_norm, &mut rng(7))?;

        // Line 5's loss is training_losses on the same (t, eps), bit for bit.
        assert_eq!(outcome.loss, f64::from(loss.item()?));
        assert_eq!(outcome.grad_norm, expected_norm);
        assert!(outcome.stepped() && expected_norm > max_norm, "the clip must have acted: norm {expected_norm}");
        // The model saw x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps at t,
        // recomputed here in f64 from alpha-bar alone.
        let seen = model.seen.borrow();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, t);
        let (x0, eps) = (x_start.to_vec(), noise.to_vec());
        for (i, &x_t) in seen[0].0.iter().enumerate() {
            let alpha_bar = schedule.alphas_cumprod[t[i / 2]];
            let want = alpha_bar.sqrt() * f64::from(x0[i]) + (1.0 - alpha_bar).sqrt() * f64::from(eps[i]);
            assert!((f64::from(x_t) - want).abs() < 1e-6, "x_t[{i}] = {x_t}, want {want}");
        }
        // The update is one clipped AdamW step: the weights moved, as the reference's did.
        assert_ne!(params(&model), before);
        assert_eq!(params(&model), params(&reference));
        Ok(())
    }

    /// With `--timestep-sampling stratified`, line 3 draws the batch's
    /// timesteps with `stratified_timesteps` from the same stream: one in each
    /// eighth of 0..100 for a batch of 8.
    #[test]
    fn the_stratified_option_draws_one_timestep_per_stratum() -> Result<()> {
        let (schedule, mut model, x_start) = recording_toy()?;
        let options = TrainingOptions { timestep_sampling: ddpm::TimestepSampling::Stratified, ..TrainingOptions::default() };
        let mut optimizer = Adam::adamw(1e-2, 0.0);
        train_step(&schedule, &mut model, &mut optimizer, &x_start, options, f64::INFINITY, &mut rng(7))?;
        let seen = model.seen.borrow();
        assert_eq!(seen[0].1, ddpm::stratified_timesteps(100, 8, &mut rng(7)));
        for (i, &t) in seen[0].1.iter().enumerate() {
            assert!(
                (100 * i..100 * (i + 1)).contains(&(8 * t)),
                "item {i} at t = {t}, outside its stratum [{}, {})",
                12.5 * i as f64,
                12.5 * (i + 1) as f64
            );
        }
        Ok(())
    }

    /// With `--timestep-sampling logit-normal`, line 3 draws with
    /// `logit_normal_timesteps` from the same stream.
    #[test]
    fn the_logit_normal_option_draws_with_its_sampler() -> Result<()> {
        let (schedule, mut model, x_start) = recording_toy()?;
        let options = TrainingOptions { timestep_sampling: ddpm::TimestepSampling::LogitNormal, ..TrainingOptions::default() };
        let mut optimizer = Adam::adamw(1e-2, 0.0);
        train_step(&schedule, &mut model, &mut optimizer, &x_start, options, f64::INFINITY, &mut rng(7))?;
        let seen = model.seen.borrow();
        assert_eq!(seen[0].1, ddpm::logit_normal_timesteps(100, 8, &mut rng(7)));
        assert_ne!(seen[0].1, ddpm::sample_timesteps(100, 8, &mut rng(7)));
        Ok(())
    }

    #[test]
    fn a_non_finite_loss_leaves_the_weights_alone() -> Result<()> {
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, 100)?;
        let mut model = Model::Mlp(MlpDenoiser::new(&MlpConfig::toy_2d(), &mut rng(1))?);
        let before = params(&model);
        let x_start = Tensor::from_vec(vec![f32::NAN, 0.0], &[1, 2])?;
        let mut optimizer = Adam::adamw(1e-2, 0.0);
        let outcome = train_step(&schedule, &mut model, &mut optimizer, &x_start, TrainingOptions::default(), f64::INFINITY, &mut rng(0))?;
        assert!(outcome.loss.is_nan() && !outcome.stepped());
        assert_eq!(params(&model), before);
        Ok(())
    }
}

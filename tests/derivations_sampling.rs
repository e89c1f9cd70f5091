//! The samplers, verified: Algorithm 2 against the posterior construction, DDIM's
//! two limits, the exact predictor of a tiny dataset sampling its points, Langevin
//! dynamics against its known stationary law, respacing, and reproducibility.
//! Code t = paper t - 1 throughout.

mod derivations_common;

use ddpm::{
    ddim_step, evenly_spaced_timesteps, p_mean_variance, p_sample, predict_eps_from_xstart, sample_ancestral, sample_ddim,
    sample_langevin, BetaSchedule, DatasetOptimalPredictor, DdimOptions, GaussianOptimalPredictor, LangevinOptions, NoiseSchedule,
    Parameterization, ReverseOptions, VarianceKind,
};
use derivations_common::{assert_mean_close, assert_variance_close, max_abs_diff};
use tensor::{rng, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn algorithm_2_update_equals_a_draw_from_the_reverse_posterior_step() -> TestResult {
    // Algorithm 2 line 4: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_theta) + sigma_t z
    // equals mu-tilde_t(x_t, x0_theta) + sigma_t z with x0_theta predicted from eps_theta
    // (Ho et al. eqs. 7, 11; notes 003 eq. 13); no noise at code t = 0.
    let mut rng = rng(43);
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let t = [0, 1, 10, 500, 999];
        let dims = [5, 3];
        let (x_t, eps_theta, z) = (Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
        for variance in [VarianceKind::FixedLarge, VarianceKind::FixedSmall] {
            let options = ReverseOptions { variance, parameterization: Parameterization::Epsilon, clip_denoised: false };
            let library = p_sample(&schedule, &eps_theta, &x_t, &t, options, &z)?.sample.to_vec();
            let (sigma_squared, _) = variance.variances(&schedule);
            let (x, e, z) = (x_t.to_vec(), eps_theta.to_vec(), z.to_vec());
            for (b, &step) in t.iter().enumerate() {
                let (alpha, beta, alpha_bar) = (schedule.alphas[step], schedule.betas[step], schedule.alphas_cumprod[step]);
                let sigma = if step == 0 { 0.0 } else { sigma_squared[step].sqrt() };
                for d in 0..3 {
                    let i = b * 3 + d;
                    let algorithm_2 = (x[i] - beta / (1.0 - alpha_bar).sqrt() * e[i]) / alpha.sqrt() + sigma * z[i];
                    assert!((library[i] - algorithm_2).abs() < 1e-10 * algorithm_2.abs().max(1.0), "{kind:?} {variance:?} t={step}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn predicting_x0_or_eps_gives_the_same_reverse_step() -> TestResult {
    // The x_0 parameterisation: a model that outputs x0_theta defines the same p(x_{t-1} | x_t) as one
    // that outputs eps_theta = (x_t - sqrt(alpha-bar_t) x0_theta) / sqrt(1 - alpha-bar_t).
    let schedule = NoiseSchedule::new(BetaSchedule::Cosine, 1000)?;
    let mut rng = rng(47);
    let t = [0, 7, 600, 999];
    let (x_t, x0_theta) = (Tensor::<f64>::randn(&[4, 5], &mut rng), Tensor::<f64>::rand_uniform(&[4, 5], -1.0, 1.0, &mut rng));
    let eps_theta = predict_eps_from_xstart(&schedule, &x_t, &t, &x0_theta)?;
    let base = ReverseOptions { variance: VarianceKind::FixedSmall, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let from_eps = p_mean_variance(&schedule, &eps_theta, &x_t, &t, base)?;
    let from_x0 = p_mean_variance(&schedule, &x0_theta, &x_t, &t, ReverseOptions { parameterization: Parameterization::StartX, ..base })?;
    assert!(max_abs_diff(&from_eps.mean.to_vec(), &from_x0.mean.to_vec()) < 1e-9);
    assert!(max_abs_diff(&from_eps.pred_xstart.to_vec(), &x0_theta.to_vec()) < 1e-9);
    Ok(())
}

#[test]
fn ddim_with_eta_one_matches_ancestral_and_with_eta_zero_is_deterministic() -> TestResult {
    // DDIM eq. 12 with sigma_t = eta sqrt((1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)) sqrt(1 - alpha-bar_t / alpha-bar_{t-1}):
    // at eta = 1, sigma_t^2 = beta-tilde_t and the mean sqrt(alpha-bar_{t-1}) x0 + sqrt(1 - alpha-bar_{t-1} - sigma_t^2) eps
    // equals mu-tilde_t(x_t, x0), so a DDIM step is distributed as the ancestral step with sigma^2 = beta-tilde;
    // at eta = 0 the step does not depend on the noise.
    let mut rng = rng(53);
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let t = [0, 1, 10, 500, 999];
        let dims = [5, 4];
        let (x_t, eps_theta) = (Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
        let (z1, z2, zero) = (Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::zeros(&dims));
        for clip_denoised in [false, true] {
            let ddim = |eta: f64, noise: &Tensor<f64>| {
                ddim_step(&schedule, &eps_theta, &x_t, &t, DdimOptions { eta, parameterization: Parameterization::Epsilon, clip_denoised }, noise)
            };
            let ancestral = ReverseOptions { variance: VarianceKind::FixedSmall, parameterization: Parameterization::Epsilon, clip_denoised };
            let posterior = p_mean_variance(&schedule, &eps_theta, &x_t, &t, ancestral)?;
            let ddim_mean = ddim(1.0, &zero)?.sample;
            assert!(max_abs_diff(&ddim_mean.to_vec(), &posterior.mean.to_vec()) < 1e-9, "{kind:?} eta=1 mean");
            // the noise enters as sigma_t z with sigma_t^2 = beta-tilde_t (0 at code t = 0)
            let spread = ddim(1.0, &z1)?.sample.sub(&ddim_mean)?.to_vec();
            let expected: Vec<f64> = z1.to_vec().iter().enumerate().map(|(i, z)| schedule.posterior_variance[t[i / 4]].sqrt() * z).collect();
            assert!(max_abs_diff(&spread, &expected) < 1e-9, "{kind:?} eta=1 variance");
            assert_eq!(ddim(0.0, &z1)?.sample.to_vec(), ddim(0.0, &z2)?.sample.to_vec(), "{kind:?} eta=0 depends on the noise");
        }
    }
    Ok(())
}

#[test]
fn ancestral_sampling_with_the_exact_predictor_returns_the_data_points() -> TestResult {
    // With eps* = E[eps | x_t] for a dataset of 3 points, the reverse chain inverts the forward one:
    // every sample lands on a data point (at code t = 0 the sample is E[x_0 | x_1], which is a data
    // point up to a weight of order exp(-distance^2 / (2 (1 - alpha-bar_1)))), and every point is reached.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let points = vec![vec![-0.8, 0.5], vec![0.3, -0.6], vec![0.7, 0.9]];
    let predictor = DatasetOptimalPredictor::new(schedule.clone(), points.clone());
    let batch = 48;
    let trajectory = sample_ancestral::<f64>(&schedule, &predictor, &[batch, 2], ReverseOptions::default(), &[999, 500, 0], &mut rng(59))?;
    let samples = trajectory.sample.to_vec();
    let mut hits = [0; 3];
    for sample in samples.chunks(2) {
        let (nearest, distance) = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i, ((sample[0] - p[0]).powi(2) + (sample[1] - p[1]).powi(2)).sqrt()))
            .fold((0, f64::MAX), |best, c| if c.1 < best.1 { c } else { best });
        assert!(distance < 1e-6, "sample {sample:?} is {distance} from the nearest data point");
        hits[nearest] += 1;
    }
    assert!(hits.iter().all(|&h| h > 0), "not every data point was sampled: {hits:?}");
    assert_eq!(trajectory.frames.iter().map(|f| f.t).collect::<Vec<_>>(), vec![999, 500, 0]);
    Ok(())
}

#[test]
fn langevin_dynamics_with_the_exact_score_reaches_its_stationary_law() -> TestResult {
    // At one level t with the exact score of q(x_t) = N(mu, v) (Gaussian data, mu = sqrt(alpha-bar_t) m,
    // v = alpha-bar_t s^2 + 1 - alpha-bar_t), the step x <- x + delta/2 score + sqrt(delta) z with
    // delta = r (1 - alpha-bar_t) is the AR(1) chain x - mu <- (1 - delta / (2v)) (x - mu) + sqrt(delta) z,
    // whose stationary law is N(mu, v / (1 - delta / (4v))) (the discretisation bias of Langevin).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let (data_mean, data_std) = (0.5, 0.3);
    let predictor = GaussianOptimalPredictor::new(schedule.clone(), data_mean, data_std);
    let (level, ratio) = (200, 0.5);
    let options = LangevinOptions { levels: vec![level], steps_per_level: 150, step_size_ratio: ratio };
    let samples = sample_langevin(&schedule, &predictor, &[20_000, 1], &options, &[], &mut rng(61))?.sample.to_vec();
    let alpha_bar = schedule.alphas_cumprod[level];
    let v = alpha_bar * data_std * data_std + 1.0 - alpha_bar;
    let delta = ratio * (1.0 - alpha_bar);
    assert_mean_close("Langevin mean", &samples, alpha_bar.sqrt() * data_mean);
    assert_variance_close("Langevin variance", &samples, v / (1.0 - delta / (4.0 * v)));
    Ok(())
}

#[test]
fn respaced_ddim_keeps_the_marginals_and_samples_the_data_distribution() -> TestResult {
    // Respacing keeps alpha-bar at the kept steps, so q(x_t | x_0) is unchanged there. DDIM (eta = 0) on 100
    // kept steps with the exact predictor of Gaussian data N(0.5, 0.3^2) returns that distribution, up to the
    // ODE discretisation (allowed: 0.01 on the mean and 3% on the variance beyond Monte-Carlo error).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let kept = evenly_spaced_timesteps(1000, 100)?;
    assert_eq!((kept[0], kept[99]), (0, 999));
    let respaced = schedule.respaced(&kept)?;
    for (k, &s) in kept.iter().enumerate() {
        assert!((respaced.alphas_cumprod[k] - schedule.alphas_cumprod[s]).abs() < 1e-14);
    }
    let (data_mean, data_std) = (0.5, 0.3);
    let predictor = GaussianOptimalPredictor::new(schedule.clone(), data_mean, data_std);
    let options = DdimOptions { eta: 0.0, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let samples = sample_ddim(&schedule, &predictor, &[4000, 1], &kept, options, &[], &mut rng(67))?.sample.to_vec();
    let (mean, var) = derivations_common::mean_var(&samples);
    let se = (var / samples.len() as f64).sqrt();
    assert!((mean - data_mean).abs() < 0.01 + 5.0 * se, "DDIM mean {mean}");
    let var_se = var * (2.0 / (samples.len() as f64 - 1.0)).sqrt();
    assert!((var - data_std * data_std).abs() < 0.03 * data_std * data_std + 5.0 * var_se, "DDIM variance {var}");
    Ok(())
}

#[test]
fn sampling_is_reproducible_from_a_seed() -> TestResult {
    // The same seed gives the same samples; another seed gives others.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 50)?;
    let predictor = GaussianOptimalPredictor::new(schedule.clone(), 0.0, 0.5);
    let run = |seed| sample_ancestral::<f32>(&schedule, &predictor, &[3, 1, 2, 2], ReverseOptions::default(), &[], &mut rng(seed));
    assert_eq!(run(1)?.sample.to_vec(), run(1)?.sample.to_vec());
    assert_ne!(run(1)?.sample.to_vec(), run(2)?.sample.to_vec());
    let kept = evenly_spaced_timesteps(50, 10)?;
    let ddim = |seed| sample_ddim::<f32>(&schedule, &predictor, &[3, 4], &kept, DdimOptions { eta: 0.5, ..DdimOptions::default() }, &[49], &mut rng(seed));
    assert_eq!(ddim(3)?.sample.to_vec(), ddim(3)?.sample.to_vec());
    Ok(())
}

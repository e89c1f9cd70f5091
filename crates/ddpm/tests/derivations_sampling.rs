//! The samplers, verified: Algorithm 2 against the posterior construction, DDIM's
//! two limits, the exact predictor of a tiny dataset sampling its points, Langevin
//! dynamics against its known stationary law, respacing, and reproducibility.
//! Code t = paper t - 1 throughout.

mod derivations_common;

use ddpm::{
    ddim_step, evenly_spaced_timesteps, p_mean_variance, p_sample, predict_eps_from_xstart, sample_ancestral, sample_ancestral_respaced,
    sample_ddim, sample_langevin, BetaSchedule, DatasetOptimalPredictor, DdimOptions, GaussianOptimalPredictor, LangevinOptions,
    NoiseSchedule, Parameterization, ReverseOptions, VarianceKind,
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
        let (x_t, eps_theta, z) =
            (Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
        for variance in [VarianceKind::FixedLarge, VarianceKind::FixedSmall] {
            let options = ReverseOptions { variance, parameterization: Parameterization::Epsilon, clip_denoised: false };
            let library = p_sample(&schedule, &eps_theta, &x_t, &t, options, &z)?.sample.to_vec();
            let library_mean = p_mean_variance(&schedule, &eps_theta, &x_t, &t, options)?.mean.to_vec();
            let (sigma_squared, _) = variance.variances(&schedule);
            let (x, e, z) = (x_t.to_vec(), eps_theta.to_vec(), z.to_vec());
            for (b, &step) in t.iter().enumerate() {
                let (alpha, beta, alpha_bar) = (schedule.alphas[step], schedule.betas[step], schedule.alphas_cumprod[step]);
                let sigma = if step == 0 { 0.0 } else { sigma_squared[step].sqrt() };
                for d in 0..3 {
                    let i = b * 3 + d;
                    let algorithm_2_mean = (x[i] - beta / (1.0 - alpha_bar).sqrt() * e[i]) / alpha.sqrt();
                    let algorithm_2 = algorithm_2_mean + sigma * z[i];
                    assert!((library[i] - algorithm_2).abs() < 1e-10 * algorithm_2.abs().max(1.0), "{kind:?} {variance:?} t={step}");
                    assert!(
                        (library_mean[i] - algorithm_2_mean).abs() < 1e-10 * algorithm_2_mean.abs().max(1.0),
                        "{kind:?} {variance:?} t={step} mean"
                    );
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
                ddim_step(
                    &schedule,
                    &eps_theta,
                    &x_t,
                    &t,
                    DdimOptions { eta, parameterization: Parameterization::Epsilon, clip_denoised },
                    noise,
                )
            };
            let ancestral =
                ReverseOptions { variance: VarianceKind::FixedSmall, parameterization: Parameterization::Epsilon, clip_denoised };
            let posterior = p_mean_variance(&schedule, &eps_theta, &x_t, &t, ancestral)?;
            let ddim_mean = ddim(1.0, &zero)?.sample;
            assert!(max_abs_diff(&ddim_mean.to_vec(), &posterior.mean.to_vec()) < 1e-9, "{kind:?} eta=1 mean");
            // the noise enters as sigma_t z with sigma_t^2 = beta-tilde_t (0 at code t = 0)
            let spread = ddim(1.0, &z1)?.sample.sub(&ddim_mean)?.to_vec();
            let expected: Vec<f64> =
                z1.to_vec().iter().enumerate().map(|(i, z)| schedule.posterior_variance[t[i / 4]].sqrt() * z).collect();
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
fn respaced_ancestral_sampling_with_the_posterior_variance_is_ddim_with_eta_one() -> TestResult {
    // Algorithm 2 on the respaced schedule (Nichol & Dhariwal §4) with sigma^2 = beta-tilde' draws, step for
    // step, what DDIM with eta = 1 draws on the same kept steps: the same mean mu-tilde' (DDIM's eq. 12 written
    // as the posterior's mean) and the same sigma z, so from the same seed the samples agree to rounding.
    // On every step the respaced sampler is Algorithm 2 itself; 50 kept steps with the larger beta' differ.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let predictor = GaussianOptimalPredictor::new(schedule.clone(), 0.5, 0.3);
    let kept = evenly_spaced_timesteps(1000, 50)?;
    let record = [kept[49], kept[20], 0];
    for clip_denoised in [false, true] {
        let options = |variance| ReverseOptions { variance, parameterization: Parameterization::Epsilon, clip_denoised };
        let ancestral = sample_ancestral_respaced::<f64>(
            &schedule,
            &predictor,
            &[64, 3],
            &kept,
            options(VarianceKind::FixedSmall),
            &record,
            &mut rng(71),
        )?;
        let ddim_options = DdimOptions { eta: 1.0, parameterization: Parameterization::Epsilon, clip_denoised };
        let ddim = sample_ddim::<f64>(&schedule, &predictor, &[64, 3], &kept, ddim_options, &record, &mut rng(71))?;
        assert!(max_abs_diff(&ancestral.sample.to_vec(), &ddim.sample.to_vec()) < 1e-9, "clip {clip_denoised}");
        assert_eq!(ancestral.frames.iter().map(|f| f.t).collect::<Vec<_>>(), vec![kept[49], kept[20], 0]);
        for (a, d) in ancestral.frames.iter().zip(&ddim.frames) {
            assert!(max_abs_diff(&a.x_t.to_vec(), &d.x_t.to_vec()) < 1e-9, "frame at t = {}", a.t);
        }
        let large =
            sample_ancestral_respaced::<f64>(&schedule, &predictor, &[64, 3], &kept, options(VarianceKind::FixedLarge), &[], &mut rng(71))?;
        assert!(max_abs_diff(&large.sample.to_vec(), &ddim.sample.to_vec()) > 1e-3, "clip {clip_denoised}: beta' is not beta-tilde'");
        let all: Vec<usize> = (0..1000).collect();
        let every_step =
            sample_ancestral_respaced::<f64>(&schedule, &predictor, &[8, 3], &all, options(VarianceKind::FixedLarge), &[], &mut rng(73))?;
        let plain = sample_ancestral::<f64>(&schedule, &predictor, &[8, 3], options(VarianceKind::FixedLarge), &[], &mut rng(73))?;
        assert!(max_abs_diff(&every_step.sample.to_vec(), &plain.sample.to_vec()) < 1e-9, "clip {clip_denoised}");
    }
    Ok(())
}

#[test]
fn evenly_spaced_timesteps_keep_both_ends_and_even_gaps() -> TestResult {
    // DDIM's "linear" skip: `count` kept steps from 0 to T - 1, strictly increasing, gaps that differ by at
    // most one; 2 <= count <= T (count = T keeps every step), anything else is refused.
    for steps in [10, 50, 1000] {
        for count in [2, 3, 7, steps] {
            let kept = evenly_spaced_timesteps(steps, count)?;
            let gaps: Vec<usize> = kept.windows(2).map(|w| w[1] - w[0]).collect();
            let (shortest, longest) = (gaps.iter().min().copied(), gaps.iter().max().copied());
            assert!(kept.len() == count && kept[0] == 0 && kept[count - 1] == steps - 1, "T = {steps}, count = {count}: {kept:?}");
            assert!(shortest >= Some(1) && longest <= shortest.map(|g| g + 1), "T = {steps}, count = {count}: gaps {gaps:?}");
        }
        for count in [0, 1, steps + 1] {
            assert!(
                matches!(evenly_spaced_timesteps(steps, count), Err(ddpm::Error::InvalidArgument { .. })),
                "T = {steps}, count = {count}"
            );
        }
    }
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
    let ddim = |seed| {
        sample_ddim::<f32>(&schedule, &predictor, &[3, 4], &kept, DdimOptions { eta: 0.5, ..DdimOptions::default() }, &[49], &mut rng(seed))
    };
    assert_eq!(ddim(3)?.sample.to_vec(), ddim(3)?.sample.to_vec());
    Ok(())
}

#[test]
fn predicting_the_posterior_mean_is_a_third_equivalent_parameterisation() -> TestResult {
    // Ho et al. §3.2: "the most straightforward parameterisation of mu_theta is a model that predicts mu-tilde_t".
    // (1) Outputs that agree (mu_theta = mu-tilde_t(x_t, x0_theta), eps_theta from x0_theta, v_theta from both) give
    //     the same p(x_{t-1} | x_t) under all four parameterisations.
    // (2) Each error enters the bound with its own weight: L_{t-1} = lambda_t |target - prediction|^2 + C with
    //     mu-tilde - mu_theta = error (mean), coef1 (x_0 - x0_theta), -beta / (sqrt(alpha) sqrt(1 - alpha-bar)) (eps - eps_theta),
    //     -coef1 sqrt(1 - alpha-bar) (v - v_theta);
    //     checked against vb_terms_bpd in nats, C = (D/2)(beta-tilde/sigma^2 - 1 - ln(beta-tilde/sigma^2)).
    // (3) L_simple for this parameterisation regresses mu-tilde_t(x_t, x_0), built here from the coefficients.
    let schedule = NoiseSchedule::new(BetaSchedule::Cosine, 1000)?;
    let mut rng = rng(101);
    let t = [0, 7, 600, 999];
    let dims = [4, 5];
    let (x_start, noise) = (Tensor::<f64>::rand_uniform(&dims, -1.0, 1.0, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
    let x_t = ddpm::q_sample(&schedule, &x_start, &t, &noise)?;
    let x0_theta = Tensor::<f64>::rand_uniform(&dims, -1.0, 1.0, &mut rng);
    let eps_theta = predict_eps_from_xstart(&schedule, &x_t, &t, &x0_theta)?;
    let (xt, x0) = (x_t.to_vec(), x0_theta.to_vec());
    let mean_theta: Vec<f64> =
        (0..20).map(|i| schedule.posterior_mean_coef1[t[i / 5]] * x0[i] + schedule.posterior_mean_coef2[t[i / 5]] * xt[i]).collect();
    let mean_theta = Tensor::from_vec(mean_theta, &dims)?;
    let recovered = ddpm::predict_xstart_from_posterior_mean(&schedule, &x_t, &t, &mean_theta)?;
    assert!(max_abs_diff(&recovered.to_vec(), &x0) < 1e-9);
    // And the velocity that agrees with them, v = sqrt(alpha-bar) eps - sqrt(1 - alpha-bar) x_0, by hand.
    let velocity_by_hand = |eps: &[f64], x0: &[f64]| -> Vec<f64> {
        (0..20)
            .map(|i| schedule.sqrt_alphas_cumprod[t[i / 5]] * eps[i] - schedule.sqrt_one_minus_alphas_cumprod[t[i / 5]] * x0[i])
            .collect()
    };
    let v_theta = Tensor::from_vec(velocity_by_hand(&eps_theta.to_vec(), &x0), &dims)?;
    let base = ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let outputs = [
        (Parameterization::Epsilon, &eps_theta),
        (Parameterization::StartX, &x0_theta),
        (Parameterization::PosteriorMean, &mean_theta),
        (Parameterization::Velocity, &v_theta),
    ];
    let means: Vec<Vec<f64>> = outputs
        .iter()
        .map(|(parameterization, output)| {
            Ok(p_mean_variance(&schedule, output, &x_t, &t, ReverseOptions { parameterization: *parameterization, ..base })?.mean.to_vec())
        })
        .collect::<ddpm::Result<_>>()?;
    assert!(means[1..].iter().all(|mean| max_abs_diff(&means[0], mean) < 1e-9));

    let (true_x0, true_eps) = (x_start.to_vec(), noise.to_vec());
    let true_v = velocity_by_hand(&true_eps, &true_x0);
    let true_mean = ddpm::q_posterior_mean_variance(&schedule, &x_start, &x_t, &t)?.mean.to_vec();
    for variance in [VarianceKind::FixedLarge, VarianceKind::FixedSmall] {
        let (sigma_squared, _) = variance.variances(&schedule);
        for (parameterization, output) in outputs {
            let options = ReverseOptions { variance, parameterization, clip_denoised: false };
            let kl_nats = ddpm::vb_terms_bpd(&schedule, output, &x_start, &x_t, &t, options)?.bpd.to_vec();
            let target = match parameterization {
                Parameterization::Epsilon => &true_eps,
                Parameterization::StartX => &true_x0,
                Parameterization::PosteriorMean => &true_mean,
                Parameterization::Velocity => &true_v,
            };
            let output = output.to_vec();
            for (b, &step) in t.iter().enumerate().skip(1) {
                let squared_error: f64 = (b * 5..b * 5 + 5).map(|i| (target[i] - output[i]).powi(2)).sum();
                let ratio = schedule.posterior_variance[step] / sigma_squared[step];
                let constant = 5.0 / 2.0 * (ratio - 1.0 - ratio.ln());
                let weight = ddpm::parameterization_mse_weight(&schedule, parameterization, step, sigma_squared[step])?;
                let expected = weight * squared_error + constant;
                let kl = kl_nats[b] * std::f64::consts::LN_2 * 5.0;
                assert!(
                    (kl - expected).abs() < 1e-8 * expected.max(1e-12),
                    "{parameterization:?} {variance:?} t={step}: {kl} vs {expected}"
                );
            }
        }
    }
    assert!(ddpm::parameterization_mse_weight(&schedule, Parameterization::PosteriorMean, 0, 0.1).is_err());
    for bad_sigma_squared in [0.0, -0.1, f64::NAN] {
        assert!(
            ddpm::parameterization_mse_weight(&schedule, Parameterization::Epsilon, 5, bad_sigma_squared).is_err(),
            "sigma^2 = {bad_sigma_squared}"
        );
    }

    let options = ddpm::TrainingOptions { parameterization: Parameterization::PosteriorMean, ..ddpm::TrainingOptions::default() };
    let model = |_: &Tensor<f64>, _: &[usize]| Ok(mean_theta.clone());
    let mse = ddpm::training_losses(&schedule, &model, &x_start, &t, &noise, options)?.mse.ok_or("no mse")?.to_vec();
    let output = mean_theta.to_vec();
    let (x0, xt) = (x_start.to_vec(), x_t.to_vec());
    for (b, &step) in t.iter().enumerate() {
        let expected: f64 = (b * 5..b * 5 + 5)
            .map(|i| (schedule.posterior_mean_coef1[step] * x0[i] + schedule.posterior_mean_coef2[step] * xt[i] - output[i]).powi(2))
            .sum::<f64>()
            / 5.0;
        assert!((mse[b] - expected).abs() < 1e-12 * expected.max(1.0), "t={step}: {} vs {expected}", mse[b]);
    }
    Ok(())
}

#[test]
fn the_velocity_is_a_rotation_of_the_image_and_its_noise() -> TestResult {
    // Salimans & Ho 2022 §4: with cos(phi) = sqrt(alpha-bar_t), sin(phi) = sqrt(1 - alpha-bar_t),
    //   x_t = cos(phi) x_0 + sin(phi) eps,   v = cos(phi) eps - sin(phi) x_0,
    // a rotation of (x_0, eps) by phi. So (1) it turns back: x_0 = cos x_t - sin v and eps = sin x_t + cos v;
    // (2) it keeps lengths: x_t^2 + v^2 = x_0^2 + eps^2 element by element; (3) v = d x_t / d phi, checked by a
    // central difference in phi; (4) L_simple for velocity prediction regresses v; (5) a DDIM step from
    // v_theta is the step from the eps_theta it encodes.
    let schedule = NoiseSchedule::new(BetaSchedule::Cosine, 1000)?;
    let mut rng = rng(202);
    let t = [0, 3, 250, 700, 999];
    let dims = [5, 6];
    let (x_start, noise) = (Tensor::<f64>::rand_uniform(&dims, -1.0, 1.0, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
    let x_t = ddpm::q_sample(&schedule, &x_start, &t, &noise)?;
    let v = ddpm::velocity(&schedule, &x_start, &t, &noise)?;
    let (x0, eps, xt, vv) = (x_start.to_vec(), noise.to_vec(), x_t.to_vec(), v.to_vec());
    let phi = |i: usize| schedule.sqrt_one_minus_alphas_cumprod[t[i / 6]].atan2(schedule.sqrt_alphas_cumprod[t[i / 6]]);
    for i in 0..30 {
        let (c, s) = (phi(i).cos(), phi(i).sin());
        assert!((vv[i] - (c * eps[i] - s * x0[i])).abs() < 1e-12, "v[{i}]");
        assert!((xt[i] * xt[i] + vv[i] * vv[i] - x0[i] * x0[i] - eps[i] * eps[i]).abs() < 1e-12, "length at {i}");
        assert!((s * xt[i] + c * vv[i] - eps[i]).abs() < 1e-12, "eps from v at {i}");
        let h = 1e-6;
        let at = |p: f64| p.cos() * x0[i] + p.sin() * eps[i];
        let derivative = (at(phi(i) + h) - at(phi(i) - h)) / (2.0 * h);
        assert!((derivative - vv[i]).abs() < 1e-8, "d x_t / d phi at {i}: {derivative} vs {}", vv[i]);
    }
    let recovered = ddpm::predict_xstart_from_v(&schedule, &x_t, &t, &v)?;
    assert!(max_abs_diff(&recovered.to_vec(), &x0) < 1e-12);

    let v_theta = Tensor::<f64>::randn(&dims, &mut rng);
    let options = ddpm::TrainingOptions { parameterization: Parameterization::Velocity, ..ddpm::TrainingOptions::default() };
    let model = |_: &Tensor<f64>, _: &[usize]| Ok(v_theta.clone());
    let mse = ddpm::training_losses(&schedule, &model, &x_start, &t, &noise, options)?.mse.ok_or("no mse")?.to_vec();
    let output = v_theta.to_vec();
    for (b, &step) in t.iter().enumerate() {
        let expected = (b * 6..b * 6 + 6).map(|i| (vv[i] - output[i]).powi(2)).sum::<f64>() / 6.0;
        assert!((mse[b] - expected).abs() < 1e-12 * expected.max(1.0), "t={step}: {} vs {expected}", mse[b]);
    }

    let x0_theta = ddpm::predict_xstart_from_v(&schedule, &x_t, &t, &v_theta)?;
    let eps_theta = predict_eps_from_xstart(&schedule, &x_t, &t, &x0_theta)?;
    let step = |output: &Tensor<f64>, parameterization| -> ddpm::Result<Vec<f64>> {
        let options = DdimOptions { eta: 0.0, parameterization, clip_denoised: false };
        Ok(ddim_step(&schedule, output, &x_t, &t, options, &noise)?.sample.to_vec())
    };
    assert!(max_abs_diff(&step(&v_theta, Parameterization::Velocity)?, &step(&eps_theta, Parameterization::Epsilon)?) < 1e-9);
    Ok(())
}

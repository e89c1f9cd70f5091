//! The posterior q(x_{t-1} | x_t, x_0), verified: Bayes' rule pointwise, completing
//! the square against a grid-normalised product, its mean in eps form, and the two
//! fixed reverse variances that bracket the true one. Code t = paper t - 1.

mod derivations_common;

use ddpm::{
    predict_xstart_from_eps, q_mean_variance, q_posterior_mean_from_eps, q_posterior_mean_variance, q_sample, BetaSchedule, NoiseSchedule,
    VarianceKind,
};
use derivations_common::{column, grid, log_normal_pdf, max_abs_diff, normal_pdf, simpson};
use tensor::{rng, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The posterior's (mean, variance) at one scalar (x_0, x_t) from the library.
fn posterior_at(schedule: &NoiseSchedule, x_start: f64, x_t: f64, t: usize) -> ddpm::Result<(f64, f64)> {
    let q = q_posterior_mean_variance(schedule, &column(&[x_start]), &column(&[x_t]), &[t])?;
    Ok((q.mean.item()?, q.variance.item()?))
}

#[test]
fn bayes_rule_for_the_posterior_holds_pointwise() -> TestResult {
    // q(x_t | x_{t-1}, x_0) = q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0)
    // (notes 002 §2.5.1), checked in log space on a grid of x_{t-1}; q(x_t | x_{t-1}, x_0) =
    // q(x_t | x_{t-1}) by the Markov property. Code t >= 1 (the posterior at t = 0 is a point mass).
    let (x_start, x_t) = (0.7, -0.3);
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        for t in [1, 10, 500, 999] {
            let (post_mean, post_var) = posterior_at(&schedule, x_start, x_t, t)?;
            let q_t = q_mean_variance(&schedule, &column(&[x_start]), &[t])?;
            let q_prev = q_mean_variance(&schedule, &column(&[x_start]), &[t - 1])?;
            let (points, _) = grid(post_mean - 8.0 * post_var.sqrt(), post_mean + 8.0 * post_var.sqrt(), 101);
            for x_prev in points {
                let lhs = log_normal_pdf(x_t, schedule.alphas[t].sqrt() * x_prev, schedule.betas[t]);
                let rhs = log_normal_pdf(x_prev, post_mean, post_var) + log_normal_pdf(x_t, q_t.mean.item()?, q_t.variance.item()?)
                    - log_normal_pdf(x_prev, q_prev.mean.item()?, q_prev.variance.item()?);
                assert!((lhs - rhs).abs() < 1e-8 * lhs.abs().max(1.0), "{kind:?} t={t} x_prev={x_prev}: {lhs} vs {rhs}");
            }
        }
    }
    Ok(())
}

#[test]
fn completing_the_square_gives_the_posterior_mean_and_variance() -> TestResult {
    // q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0) as a function of x_{t-1}
    // (notes 002 §2.6, notes 003 §3): normalise the product numerically on a grid and
    // compare its mass, mean and variance with N(mu-tilde_t, beta-tilde_t).
    let (x_start, eps) = (-0.4, 0.9);
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    for t in [1, 10, 500, 999] {
        let x_t = schedule.sqrt_alphas_cumprod[t] * x_start + schedule.sqrt_one_minus_alphas_cumprod[t] * eps;
        let (post_mean, post_var) = posterior_at(&schedule, x_start, x_t, t)?;
        let (sqrt_alpha_cumprod_prev, alpha_cumprod_prev) = (schedule.alphas_cumprod_prev[t].sqrt(), schedule.alphas_cumprod_prev[t]);
        // In log space: the factors are far below f64's range away from their peaks.
        let log_product = |x: f64| {
            log_normal_pdf(x_t, schedule.alphas[t].sqrt() * x, schedule.betas[t])
                + log_normal_pdf(x, sqrt_alpha_cumprod_prev * x_start, 1.0 - alpha_cumprod_prev)
        };
        // The grid is found from the product itself: centred on its maximum, 12 times the
        // narrower factor's scale wide on each side.
        let (wide, _) = grid(-5.0, 5.0, 200_001);
        let (peak, peak_log) =
            wide.iter().map(|&x| (x, log_product(x))).fold((0.0, f64::NEG_INFINITY), |best, (x, l)| if l > best.1 { (x, l) } else { best });
        let half_width = 12.0 * (schedule.betas[t] / schedule.alphas[t]).min(1.0 - alpha_cumprod_prev).sqrt();
        let (points, h) = grid(peak - half_width, peak + half_width, 20_001);
        let values: Vec<f64> = points.iter().map(|&x| (log_product(x) - peak_log).exp()).collect();
        let mass = simpson(&values, h);
        let mean = simpson(&points.iter().zip(&values).map(|(x, v)| x * v).collect::<Vec<_>>(), h) / mass;
        let var = simpson(&points.iter().zip(&values).map(|(x, v)| (x - mean).powi(2) * v).collect::<Vec<_>>(), h) / mass;
        assert!((mean - post_mean).abs() < 1e-9, "t={t}: mean {mean} vs mu-tilde {post_mean}");
        assert!((var - post_var).abs() < 1e-7 * post_var, "t={t}: variance {var} vs beta-tilde {post_var}");
        let density_mass = simpson(&points.iter().map(|&x| normal_pdf(x, post_mean, post_var)).collect::<Vec<_>>(), h);
        assert!((density_mass - 1.0).abs() < 1e-9, "t={t}: N(mu-tilde, beta-tilde) has mass {density_mass} on the grid");
    }
    Ok(())
}

#[test]
fn posterior_mean_in_eps_form_matches_the_x0_form() -> TestResult {
    // mu-tilde_t(x_t, x_0) with x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t) equals
    // 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps)   (Ho et al. eq. 10; notes 002 §3.2)
    let mut rng = rng(21);
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let t = [0, 1, 10, 500, 998, 999];
        let x_start = Tensor::<f64>::rand_uniform(&[6, 4], -1.0, 1.0, &mut rng);
        let eps = Tensor::<f64>::randn(&[6, 4], &mut rng);
        let x_t = q_sample(&schedule, &x_start, &t, &eps)?;
        let from_x_start = q_posterior_mean_variance(&schedule, &x_start, &x_t, &t)?.mean;
        let from_eps = q_posterior_mean_from_eps(&schedule, &x_t, &t, &eps)?;
        assert!(max_abs_diff(&from_x_start.to_vec(), &from_eps.to_vec()) < 1e-10, "{kind:?}");
        // and through the library's own inversion
        let via_prediction = q_posterior_mean_variance(&schedule, &predict_xstart_from_eps(&schedule, &x_t, &t, &eps)?, &x_t, &t)?.mean;
        assert!(max_abs_diff(&via_prediction.to_vec(), &from_eps.to_vec()) < 1e-9, "{kind:?}");
    }
    Ok(())
}

#[test]
fn beta_and_beta_tilde_bracket_the_reverse_variance() -> TestResult {
    // Ho et al. §3.2 / notes 002 §3.2: sigma_t^2 = beta_t and sigma_t^2 = beta-tilde_t are the two
    // extremes. beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t <= beta_t, and for
    // data x_0 ~ N(0, s^2) the true reverse variance Var[x_{t-1} | x_t] = v beta_t / (alpha_t v + beta_t),
    // v = Var x_{t-1} = alpha-bar_{t-1} s^2 + 1 - alpha-bar_{t-1} (Gaussian conditioning), lies
    // between them: beta-tilde_t at s = 0 (a deterministic x_0) and beta_t at s = 1 (x_0 ~ N(0, I)).
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let (large, _) = VarianceKind::FixedLarge.variances(&schedule);
        let (small, _) = VarianceKind::FixedSmall.variances(&schedule);
        for t in 0..1000 {
            let (beta, beta_tilde) = (schedule.betas[t], schedule.posterior_variance[t]);
            assert!(beta_tilde <= beta, "{kind:?} t={t}");
            assert_eq!(small[t], beta_tilde);
            let reverse_variance = |s: f64| {
                let v = schedule.alphas_cumprod_prev[t] * s * s + 1.0 - schedule.alphas_cumprod_prev[t];
                v * beta / (schedule.alphas[t] * v + beta)
            };
            assert!((reverse_variance(0.0) - beta_tilde).abs() < 1e-12 * beta.max(1e-300), "{kind:?} t={t}");
            assert!((reverse_variance(1.0) - beta).abs() < 1e-12, "{kind:?} t={t}");
            for s in [0.1, 0.5, 0.9] {
                let r = reverse_variance(s);
                assert!(beta_tilde <= r && r <= beta, "{kind:?} t={t} s={s}");
            }
            if t > 0 {
                assert_eq!(large[t], beta);
            }
        }
        // Conventions at code t = 0 (paper t = 1): beta-tilde is 0 (x_0 is known exactly);
        // fixed_large uses beta-tilde at index 1 there instead of beta, and the clipped log
        // variance repeats log beta-tilde at index 1.
        assert_eq!(schedule.posterior_variance[0], 0.0);
        assert_eq!(large[0], schedule.posterior_variance[1]);
        assert_eq!(schedule.posterior_log_variance_clipped[0], schedule.posterior_variance[1].ln());
    }
    Ok(())
}

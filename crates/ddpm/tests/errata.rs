//! The errata of the four course notes (`notebooks-md/guides/`), each checked numerically:
//! the corrected form against an independent computation (a closed form, quadrature,
//! finite differences or a Monte-Carlo estimate within 5 standard errors), and, where a
//! slipped form is a formula, that it gives a different number.
//!
//! Test names start with the note (`note000_` .. `note003_`) and name the slip; the
//! guide of each note lists its errata in the same order. Code t = paper t - 1 (see
//! `ddpm::schedule`): "code t = 1" below is the paper's t = 2.

mod derivations_common;

use ddpm::{
    coefficient_at, normal_kl, normal_log_density, p_mean_variance, p_sample, predict_xstart_from_eps, prior_bpd, q_mean_variance,
    q_posterior_mean_from_eps, q_posterior_mean_variance, q_sample, q_step_mean_variance, q_step_sample, vb_terms_bpd, BetaSchedule,
    DatasetOptimalPredictor, GaussianOptimalPredictor, NoisePredictor, NoiseSchedule, Parameterization, ReverseOptions, VarianceKind,
};
use derivations_common::{assert_mean_close, assert_variance_close, column, grid, log_normal_pdf, mean_var, normal_pdf, simpson};
use tensor::{rng, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn linear() -> ddpm::Result<NoiseSchedule> {
    NoiseSchedule::new(BetaSchedule::Linear, 1000)
}

/// T = 4 with large steps, so every slipped coefficient is far from the right one.
fn four_steps() -> ddpm::Result<NoiseSchedule> {
    NoiseSchedule::from_betas(vec![0.05, 0.15, 0.3, 0.5])
}

/// log N(x; mean, variance) through the library, for scalars.
fn log_density(x: f64, mean: f64, variance: f64) -> ddpm::Result<f64> {
    Ok(normal_log_density(&Tensor::scalar(x), &Tensor::scalar(mean), &Tensor::scalar(variance.ln()))?.item()?)
}

/// The Monte-Carlo standard error of the mean of `xs`.
fn standard_error(xs: &[f64]) -> f64 {
    (mean_var(xs).1 / xs.len() as f64).sqrt()
}

// ---------------------------------------------------------------------------------------
// Note 000 (lecture notes)
// ---------------------------------------------------------------------------------------

#[test]
fn note000_closed_form_needs_alpha_bar_not_alpha() -> TestResult {
    // x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, not sqrt(alpha_t) / sqrt(1 - alpha_t):
    // run the one-step chain 100 times and compare its moments with both.
    let s = linear()?;
    let (n, last, x0) = (20_000, 99, 0.8);
    let mut rng = rng(100);
    let mut chain = Tensor::full(&[n, 1], x0);
    for step in 0..=last {
        chain = q_step_sample(&s, &chain, &vec![step; n], &Tensor::randn(&[n, 1], &mut rng))?;
    }
    let xs = chain.to_vec();
    assert_mean_close("chain mean vs sqrt(alpha-bar) x_0", &xs, s.alphas_cumprod[last].sqrt() * x0);
    assert_variance_close("chain variance vs 1 - alpha-bar", &xs, 1.0 - s.alphas_cumprod[last]);
    let (mean, var) = mean_var(&xs);
    let se = standard_error(&xs);
    assert!((mean - s.alphas[last].sqrt() * x0).abs() > 10.0 * se, "the slipped mean sqrt(alpha_t) x_0 should be far off");
    assert!((var - (1.0 - s.alphas[last])).abs() > 0.05, "the slipped variance 1 - alpha_t = beta_t should be far off");

    // The inversion x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t) needs the bars too.
    let (x_start, eps) = (column(&[x0]), column(&[0.3]));
    let x_t = q_sample(&s, &x_start, &[last], &eps)?;
    assert!((predict_xstart_from_eps(&s, &x_t, &[last], &eps)?.item()? - x0).abs() < 1e-12);
    let slipped = (x_t.item()? - (1.0 - s.alphas[last]).sqrt() * 0.3) / s.alphas[last].sqrt();
    assert!((slipped - x0).abs() > 0.02, "slipped inversion {slipped}");
    Ok(())
}

#[test]
fn note000_marginal_integrates_the_data_density_not_q_of_x_t() -> TestResult {
    // q(x_t) = integral q(x_0) q(x_t | x_0) dx_0. For data N(m, s^2) this is
    // N(sqrt(alpha-bar) m, alpha-bar s^2 + 1 - alpha-bar) (Gaussian algebra). The note's
    // integrand q(x_t) q(x_t | x_0) integrates to q(x_t) / sqrt(alpha-bar_t) instead.
    let s = linear()?;
    let (m, sd, t) = (0.3, 0.5, 200);
    let abar = s.alphas_cumprod[t];
    let (x0s, h) = grid(m - 10.0 * sd, m + 10.0 * sd, 4001);
    let q_t_given_0 = q_mean_variance(&s, &column(&x0s), &vec![t; x0s.len()])?;
    for x_t in [-1.2, 0.0, 0.4, 1.5] {
        let conditional =
            normal_log_density(&Tensor::full(&[x0s.len(), 1], x_t), &q_t_given_0.mean, &q_t_given_0.log_variance)?.exp().to_vec();
        let integrand: Vec<f64> = x0s.iter().zip(&conditional).map(|(x0, c)| normal_pdf(*x0, m, sd * sd) * c).collect();
        let marginal = simpson(&integrand, h);
        let closed = normal_pdf(x_t, abar.sqrt() * m, abar * sd * sd + 1.0 - abar);
        assert!((marginal - closed).abs() < 1e-10, "x_t={x_t}: {marginal} vs {closed}");
        // The slipped integrand: q(x_t) times a density in x_t integrated over x_0.
        let (wide, hw) = grid(-30.0, 30.0, 60_001);
        let mass = simpson(&wide.iter().map(|x0| normal_pdf(x_t, abar.sqrt() * x0, 1.0 - abar)).collect::<Vec<_>>(), hw);
        assert!((mass - 1.0 / abar.sqrt()).abs() < 1e-8 && (closed * mass - closed).abs() > 0.1 * closed);
    }
    Ok(())
}

#[test]
fn note000_product_of_one_step_kernels_is_the_joint_and_its_integral_the_closed_form() -> TestResult {
    // q(x_2 | x_0) = integral q(x_2 | x_1) q(x_1 | x_0) dx_1 (Chapman-Kolmogorov); the product
    // itself is the joint q(x_1, x_2 | x_0), a function of x_1, ending in q(x_1 | x_0), not q(x_0).
    let s = four_steps()?;
    let x0 = 0.6;
    let (x1s, h) = grid(-8.0, 8.0, 16_001);
    let closed = q_mean_variance(&s, &column(&[x0]), &[1])?;
    let (mean2, var2) = (closed.mean.item()?, closed.variance.item()?);
    for x2 in [-0.7, 0.2, 1.1] {
        let joint: Vec<f64> = x1s
            .iter()
            .map(|&x1| normal_pdf(x2, s.alphas[1].sqrt() * x1, s.betas[1]) * normal_pdf(x1, s.alphas[0].sqrt() * x0, s.betas[0]))
            .collect();
        let integral = simpson(&joint, h);
        assert!((integral - normal_pdf(x2, mean2, var2)).abs() < 1e-10, "x_2={x2}");
        // Unintegrated, the product depends on x_1: it is not q(x_2 | x_0).
        let (at_a, at_b) = (joint[8_000], joint[8_600]);
        assert!((at_a - at_b).abs() > 0.01 * at_a.max(at_b));
    }
    Ok(())
}

#[test]
fn note000_langevin_drift_has_a_plus_sign() -> TestResult {
    // sqrt(1 - beta) x = x + (beta/2) grad log N(x; 0, 1) + O(beta^2), grad log N = -x:
    // the drift enters with +, not with -.
    let s = linear()?;
    let (x, z) = (0.9, 0.4);
    for t in [0, 300, 999] {
        let beta = s.betas[t];
        let step = q_step_sample(&s, &column(&[x]), &[t], &column(&[z]))?.item()?;
        let plus = x + beta / 2.0 * -x + beta.sqrt() * z;
        let minus = x - beta / 2.0 * -x + beta.sqrt() * z;
        assert!((step - plus).abs() <= 0.13 * beta * beta * x, "t={t}: {step} vs {plus}");
        assert!((step - minus).abs() > 0.9 * beta * x, "t={t}");
    }
    // Run as Langevin dynamics toward N(0, 1): the + sign is stationary near variance 1
    // (exactly 1 / (1 - delta / 4)); the - sign pushes away from 0 and the variance explodes.
    let (n, delta) = (4_000, 0.02f64);
    let mut rng = rng(101);
    let (mut good, mut bad) = (Tensor::<f64>::randn(&[n], &mut rng), Tensor::<f64>::randn(&[n], &mut rng));
    for _ in 0..1_000 {
        let z = Tensor::<f64>::randn(&[n], &mut rng).mul_scalar(delta.sqrt());
        good = good.mul_scalar(1.0 - delta / 2.0).add(&z)?;
        bad = bad.mul_scalar(1.0 + delta / 2.0).add(&z)?;
    }
    assert_variance_close("Langevin with +", &good.to_vec(), 1.0 / (1.0 - delta / 4.0));
    assert!(mean_var(&bad.to_vec()).1 > 1e6);
    Ok(())
}

#[test]
fn note000_reparameterised_step_keeps_sqrt_one_minus_beta_on_x() -> TestResult {
    // x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps; the note swaps beta and 1 - beta.
    let s = four_steps()?;
    let x_prev = 0.9;
    let exact = q_step_mean_variance(&s, &column(&[x_prev]), &[1])?;
    assert!((exact.mean.item()? - (1.0 - s.betas[1]).sqrt() * x_prev).abs() < 1e-15);
    assert!((exact.mean.item()? - s.betas[1].sqrt() * x_prev).abs() > 0.4);
    // Two steps from x_0: variance 1 - alpha_1 alpha_2 (= 1 - alpha-bar_2), measured by Monte
    // Carlo. The note's second line (noise sqrt(beta_t) sqrt(1 - beta_{t-1}) plus sqrt(1 - beta_t))
    // would give beta_2 (1 - beta_1) + 1 - beta_2.
    let n = 40_000;
    let mut rng = rng(102);
    let x1 = q_step_sample(&s, &Tensor::full(&[n, 1], 0.5), &vec![0; n], &Tensor::randn(&[n, 1], &mut rng))?;
    let x2 = q_step_sample(&s, &x1, &vec![1; n], &Tensor::randn(&[n, 1], &mut rng))?.to_vec();
    let right = 1.0 - s.alphas[0] * s.alphas[1];
    assert_variance_close("two steps", &x2, right);
    let slipped = s.betas[1] * (1.0 - s.betas[0]) + 1.0 - s.betas[1];
    assert!((mean_var(&x2).1 - slipped).abs() > 0.5);
    Ok(())
}

#[test]
fn note000_posterior_section_q_xt_given_x0_uses_alpha_bar() -> TestResult {
    // Bayes: q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0) with
    // q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, 1 - alpha-bar_t); the note writes beta_t there
    // (and x_{t+1} for x_{t-1}). With beta_t the identity fails.
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 1.0, 0.9);
    let post = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?;
    let (mu, var) = (post.mean.item()?, post.variance.item()?);
    let (abar, abar_prev) = (s.alphas_cumprod[t], s.alphas_cumprod_prev[t]);
    for x_prev in [-1.0, 0.0, 0.7] {
        let forward =
            log_density(x_t, s.alphas[t].sqrt() * x_prev, s.betas[t])? + log_density(x_prev, abar_prev.sqrt() * x0, 1.0 - abar_prev)?;
        let right = forward - log_density(x_t, abar.sqrt() * x0, 1.0 - abar)?;
        let slipped = forward - log_density(x_t, s.betas[t].sqrt() * x0, 1.0 - s.betas[t])?;
        let posterior = log_density(x_prev, mu, var)?;
        assert!((right - posterior).abs() < 1e-12, "x_prev={x_prev}");
        assert!((slipped - posterior).abs() > 0.1, "x_prev={x_prev}");
    }
    Ok(())
}

#[test]
fn note000_completed_square_has_a_minus_sign() -> TestResult {
    // log q(x_{t-1} | x_t, x_0) = -(x_{t-1} - mu-tilde)^2 / (2 beta-tilde) + C: its second
    // derivative in x_{t-1} is -1 / beta-tilde (a peak), not +1 / beta-tilde as exp(+1/2 ...) says.
    let s = four_steps()?;
    let (t, x0, x_t, h) = (2, 0.5, -0.2, 1e-3);
    let log_product = |x: f64| -> ddpm::Result<f64> {
        Ok(log_density(x_t, s.alphas[t].sqrt() * x, s.betas[t])?
            + log_density(x, s.alphas_cumprod_prev[t].sqrt() * x0, 1.0 - s.alphas_cumprod_prev[t])?)
    };
    for x in [-0.5, 0.1, 0.9] {
        let second = (log_product(x + h)? - 2.0 * log_product(x)? + log_product(x - h)?) / (h * h);
        assert!((second + 1.0 / s.posterior_variance[t]).abs() < 1e-5 / s.posterior_variance[t], "x={x}: {second}");
    }
    Ok(())
}

#[test]
fn note000_beta_tilde_is_one_over_the_summed_precisions() -> TestResult {
    // 1 / beta-tilde = alpha_t / beta_t + 1 / (1 - alpha-bar_{t-1}); the note's
    // beta-tilde = beta_t + beta_t / (1 - beta_t) adds variances instead and exceeds beta_t.
    for s in [linear()?, four_steps()?] {
        for t in 1..s.num_timesteps() {
            let (alpha, beta, abar_prev) = (s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]);
            let right = 1.0 / (alpha / beta + 1.0 / (1.0 - abar_prev));
            assert!((right - s.posterior_variance[t]).abs() < 1e-12 * s.posterior_variance[t]);
            let slipped = beta + beta / (1.0 - beta);
            assert!(slipped > 2.0 * beta && right <= beta);
        }
    }
    Ok(())
}

#[test]
fn note000_beta_tilde_denominator_is_one_minus_alpha_bar_t() -> TestResult {
    // beta-tilde = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t. With the bar lost in
    // the denominator, (1 - alpha-bar_{t-1}) / (1 - alpha_t) beta_t = 1 - alpha-bar_{t-1}.
    let s = linear()?;
    for t in [1, 10, 500] {
        let (beta, abar, abar_prev) = (s.betas[t], s.alphas_cumprod[t], s.alphas_cumprod_prev[t]);
        assert!(((1.0 - abar_prev) / (1.0 - abar) * beta - s.posterior_variance[t]).abs() < 1e-15);
        let slipped = (1.0 - abar_prev) / (1.0 - s.alphas[t]) * beta;
        assert!((slipped - (1.0 - abar_prev)).abs() < 1e-12 && slipped > 1.5 * s.posterior_variance[t], "t={t}");
        // The mean's last line has the same denominator: (x_t sqrt(alpha_t) (1 - abar_{t-1}) + beta_t sqrt(abar_{t-1}) x_0) / (1 - abar_t).
        let (x0, x_t) = (0.5, -0.2);
        let numerator = x_t * s.alphas[t].sqrt() * (1.0 - abar_prev) + beta * abar_prev.sqrt() * x0;
        let mu = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?.mean.item()?;
        assert!((numerator / (1.0 - abar) - mu).abs() < 1e-12);
        assert!((numerator / (1.0 - s.alphas[t]) - mu).abs() > 0.1, "t={t}");
    }
    Ok(())
}

#[test]
fn note000_posterior_mean_keeps_the_factor_minus_two_on_x0() -> TestResult {
    // mu-tilde = beta-tilde / (-2) (-2 sqrt(alpha_t) x_t / beta_t - 2 sqrt(alpha-bar_{t-1}) x_0 / (1 - alpha-bar_{t-1})).
    // Dropping the -2 from the x_0 term (as one line of the note does) halves x_0's coefficient.
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 0.5, -0.2);
    let (alpha, beta, abar_prev, beta_tilde) = (s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t], s.posterior_variance[t]);
    let library = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?.mean.item()?;
    let right = beta_tilde / -2.0 * (-2.0 * alpha.sqrt() * x_t / beta - 2.0 * abar_prev.sqrt() * x0 / (1.0 - abar_prev));
    let slipped = beta_tilde / -2.0 * (-2.0 * alpha.sqrt() * x_t / beta + abar_prev.sqrt() * x0 / (1.0 - abar_prev));
    assert!((right - library).abs() < 1e-14);
    assert!((slipped - library).abs() > 0.1);
    Ok(())
}

#[test]
fn note000_eps_form_mean_divides_by_sqrt_one_minus_alpha_bar() -> TestResult {
    // mu-tilde = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) / sqrt(alpha_t); the note has sqrt(1 - alpha_t).
    let s = linear()?;
    let (x0, eps) = (0.4, -1.1);
    for t in [10, 300] {
        let x_t = q_sample(&s, &column(&[x0]), &[t], &column(&[eps]))?;
        let from_eps = q_posterior_mean_from_eps(&s, &x_t, &[t], &column(&[eps]))?.item()?;
        let from_x0 = q_posterior_mean_variance(&s, &column(&[x0]), &x_t, &[t])?.mean.item()?;
        assert!((from_eps - from_x0).abs() < 1e-12);
        let slipped = (x_t.item()? - s.betas[t] / (1.0 - s.alphas[t]).sqrt() * eps) / s.alphas[t].sqrt();
        let noise_term = (x_t.item()? / s.alphas[t].sqrt() - from_x0).abs();
        assert!((slipped - from_x0).abs() > 0.5 * noise_term, "t={t}: the eps term is off by more than half");
    }
    Ok(())
}

#[test]
fn note000_sampling_step_adds_sqrt_beta_tilde_times_fresh_noise() -> TestResult {
    // x_{t-1} = mu + sigma_t z with sigma_t = sqrt(beta-tilde_t) and a fresh z ~ N(0, I);
    // the note adds beta-tilde_t eps_t: the variance beta-tilde^2 and the noise already in x_t.
    let s = four_steps()?;
    let (n, t) = (40_000, 2);
    let mut rng = rng(103);
    let x_t = Tensor::full(&[n, 1], -0.2);
    let eps_theta = Tensor::full(&[n, 1], 0.3);
    let options = ReverseOptions { variance: VarianceKind::FixedSmall, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let draws = p_sample(&s, &eps_theta, &x_t, &vec![t; n], options, &Tensor::randn(&[n, 1], &mut rng))?.sample.to_vec();
    let beta_tilde = s.posterior_variance[t];
    assert_variance_close("x_{t-1} given x_t", &draws, beta_tilde);
    assert!((mean_var(&draws).1 - beta_tilde * beta_tilde).abs() > 0.5 * beta_tilde);
    Ok(())
}

#[test]
fn note000_optimal_predictor_averages_eps_over_the_posterior_of_x0() -> TestResult {
    // eps*(x_t, t) = integral eps(x_t, x_0) q(x_0 | x_t) dx_0, eps(x_t, x_0) = (x_t - sqrt(abar) x_0) / sqrt(1 - abar),
    // q(x_0 | x_t) ∝ q(x_0) q(x_t | x_0) (quadrature), against the closed form of
    // GaussianOptimalPredictor for data N(0.2, 0.4^2).
    let s = linear()?;
    let (m, sd) = (0.2, 0.4);
    let model = GaussianOptimalPredictor::new(s.clone(), m, sd);
    let (x0s, h) = grid(m - 10.0 * sd, m + 10.0 * sd, 4001);
    for t in [20, 250, 700] {
        let (root_abar, noise_var) = (s.sqrt_alphas_cumprod[t], 1.0 - s.alphas_cumprod[t]);
        for x_t in [-1.0, 0.1, 0.8] {
            let weight: Vec<f64> = x0s.iter().map(|&x0| normal_pdf(x0, m, sd * sd) * normal_pdf(x_t, root_abar * x0, noise_var)).collect();
            let eps_avg: Vec<f64> = x0s.iter().zip(&weight).map(|(x0, w)| (x_t - root_abar * x0) / noise_var.sqrt() * w).collect();
            let by_quadrature = simpson(&eps_avg, h) / simpson(&weight, h);
            let closed = model.predict(&column(&[x_t]), &[t])?.item()?;
            assert!((by_quadrature - closed).abs() < 1e-9, "t={t} x_t={x_t}: {by_quadrature} vs {closed}");
        }
    }
    Ok(())
}

/// A linear-Gaussian model on the 4-step schedule, where p_theta(x_0) is known exactly:
/// eps_theta is the exact predictor of data N(0, 0.05^2), so every reverse mean is
/// a_t x_t and x_0 ~ N(0, V) with V from the recursion V <- a_t^2 V + sigma_t^2.
/// a_t and sigma_t^2 are computed here from the schedule, not by `p_mean_variance`,
/// which the Monte-Carlo side uses, so a slip in it cannot cancel out.
/// Returns (log p_theta(x_0), the Monte-Carlo mean of log q(x_{1:T} | x_0) / p_theta(x_{0:T}), its standard error).
fn narrow_model_bound(x0: f64) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let s = four_steps()?;
    let model = GaussianOptimalPredictor::new(s.clone(), 0.0, 0.05);
    let options = ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let mut variance = 1.0;
    for t in (0..4).rev() {
        // eps_theta(x_t) = e_t x_t, so mu = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) / sqrt(alpha_t)
        // (Ho eq. 11) is a_t x_t; sigma_t^2 = beta_t, but beta-tilde_1 at t = 0, as the
        // reference's fixed-large variance takes it.
        let e_t = model.predict(&column(&[1.0]), &[t])?.item()?;
        let a_t = (1.0 - s.betas[t] / (1.0 - s.alphas_cumprod[t]).sqrt() * e_t) / (1.0 - s.betas[t]).sqrt();
        let sigma2 = if t == 0 { s.posterior_variance[1] } else { s.betas[t] };
        variance = a_t * a_t * variance + sigma2;
    }
    let log_p = log_normal_pdf(x0, 0.0, variance);

    let n = 20_000;
    let mut rng = rng(104);
    let mut xs = vec![Tensor::full(&[n, 1], x0)];
    for k in 1..=4 {
        let next = q_step_sample(&s, &xs[k - 1], &vec![k - 1; n], &Tensor::randn(&[n, 1], &mut rng))?;
        xs.push(next);
    }
    let zero = Tensor::scalar(0.0);
    let mut r = normal_log_density(&xs[4], &zero, &zero)?.neg();
    for k in 1..=4 {
        let code = vec![k - 1; n];
        let q = q_step_mean_variance(&s, &xs[k - 1], &code)?;
        let p = p_mean_variance(&s, &model.predict(&xs[k], &code)?, &xs[k], &code, options)?;
        r = r.add(&normal_log_density(&xs[k], &q.mean, &q.log_variance)?)?.sub(&normal_log_density(
            &xs[k - 1],
            &p.mean,
            &p.log_variance,
        )?)?;
    }
    let r = r.to_vec();
    Ok((log_p, mean_var(&r).0, standard_error(&r)))
}

#[test]
fn note000_the_bound_is_on_minus_log_likelihood() -> TestResult {
    // -E log p_theta(x_0) <= E_q[log q(x_{1:T} | x_0) / p_theta(x_{0:T})] = L. The note drops
    // the minus on the left. For a narrow model p_theta(x_0) > 1, so log p_theta(x_0) > 0, and
    // "log p_theta(x_0) <= L" is false while "-log p_theta(x_0) <= L" holds.
    let (log_p, bound, se) = narrow_model_bound(0.0)?;
    assert!(log_p > 0.0, "p_theta(x_0) = {}", log_p.exp());
    assert!(bound + 5.0 * se >= -log_p, "L = {bound} < -log p = {}", -log_p);
    assert!(log_p > bound + 5.0 * se, "log p = {log_p}, L = {bound}");
    Ok(())
}

#[test]
fn note000_prior_term_compares_q_of_x_t_at_capital_t() -> TestResult {
    // L_T = KL(q(x_T | x_0) || N(0, I)); the note writes q(x_1 | x_0) || p(x_1).
    let s = linear()?;
    let x_start = Tensor::from_vec(vec![0.7, -0.3], &[2, 1])?;
    let bits = prior_bpd(&s, &x_start)?.to_vec();
    let zero = Tensor::scalar(0.0);
    let last = q_mean_variance(&s, &x_start, &[999, 999])?;
    let first = q_mean_variance(&s, &x_start, &[0, 0])?;
    let at_t = normal_kl(&last.mean, &last.log_variance, &zero, &zero)?.to_vec();
    let at_1 = normal_kl(&first.mean, &first.log_variance, &zero, &zero)?.to_vec();
    for b in 0..2 {
        // one value per item: nats / ln 2 = bits
        assert!((bits[b] - at_t[b] / std::f64::consts::LN_2).abs() < 1e-15);
        assert!(bits[b] < 1e-4 && at_1[b] > 3.0, "item {b}: L_T {} bits, KL at x_1 {} nats", bits[b], at_1[b]);
    }
    Ok(())
}

#[test]
fn note000_forward_chain_ends_at_the_standard_normal_not_at_the_data() -> TestResult {
    // As the chain runs on, x_t forgets x_0 and tends to N(0, I), the law whose score is -x;
    // it is the *reverse* chain that ends at the data.
    let s = linear()?;
    let ends = q_mean_variance(&s, &column(&[-1.0, 1.0]), &[999, 999])?;
    let (means, vars) = (ends.mean.to_vec(), ends.variance.to_vec());
    assert!(means.iter().all(|m| m.abs() < 0.007) && vars.iter().all(|v| (v - 1.0).abs() < 1e-4));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Note 001 (paper summary)
// ---------------------------------------------------------------------------------------

#[test]
fn note001_alpha_bar_of_a_batch_of_timesteps_must_be_reshaped_to_broadcast() -> TestResult {
    // `alpha_bar[t]` for a batch of B timesteps has shape [B]; against x0 of shape [B, 1, 28, 28]
    // NumPy rules align it with the last axis (28): an error for B != 28, a silent per-column
    // scaling for B = 28. Reshaped to [B, 1, 1, 1] (`coefficient_at`, `.view(-1, 1, 1, 1)`), it is
    // one coefficient per image, which is what q_sample computes.
    let s = linear()?;
    let mut rng = rng(105);
    let t4 = [3, 100, 500, 999];
    let x4 = Tensor::<f64>::rand_uniform(&[4, 1, 28, 28], -1.0, 1.0, &mut rng);
    let flat = Tensor::from_vec(t4.iter().map(|&t| s.sqrt_alphas_cumprod[t]).collect(), &[4])?;
    let err = flat.mul(&x4).err().ok_or("a [4] coefficient should not broadcast against [4, 1, 28, 28]")?;
    assert!(err.to_string().contains("[4]") && err.to_string().contains("[4, 1, 28, 28]"), "{err}");

    let t28: Vec<usize> = (0..28).map(|i| i * 37).collect();
    let x28 = Tensor::<f64>::rand_uniform(&[28, 1, 28, 28], -1.0, 1.0, &mut rng);
    let zero_noise = Tensor::<f64>::zeros(&[28, 1, 28, 28]);
    let reference = q_sample(&s, &x28, &t28, &zero_noise)?.to_vec();
    let silent = Tensor::from_vec(t28.iter().map(|&t| s.sqrt_alphas_cumprod[t]).collect(), &[28])?.mul(&x28)?.to_vec();
    let per_image = coefficient_at::<f64>("errata", &s.sqrt_alphas_cumprod, &t28, x28.dims())?;
    assert_eq!(per_image.dims(), &[28, 1, 1, 1]);
    let reshaped = per_image.mul(&x28)?.to_vec();
    let worst = |a: &[f64]| a.iter().zip(&reference).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst(&reshaped) < 1e-15);
    assert!(worst(&silent) > 0.1);
    Ok(())
}

#[test]
fn note001_reverse_mean_conditions_on_x_t_and_x0_not_on_x_t_plus_one() -> TestResult {
    // mu-tilde_t is the mean of q(x_{t-1} | x_t, x_0): regress x_{t-1} on x_t for a fixed x_0;
    // slope posterior_mean_coef2[t], intercept coef1[t] x_0, residual variance beta-tilde_t.
    // The note's q(x_t | x_{t+1}) would be the next step's coefficients (coef2[t + 1]).
    let s = linear()?;
    let (n, t, x0) = (100_000, 1, 0.5);
    let mut rng = rng(106);
    let x_prev = q_sample(&s, &Tensor::full(&[n, 1], x0), &vec![t - 1; n], &Tensor::randn(&[n, 1], &mut rng))?;
    let x_t = q_step_sample(&s, &x_prev, &vec![t; n], &Tensor::randn(&[n, 1], &mut rng))?.to_vec();
    let x_prev = x_prev.to_vec();
    let ((mp, vp), (mt, vt)) = (mean_var(&x_prev), mean_var(&x_t));
    let cov = x_prev.iter().zip(&x_t).map(|(a, b)| (a - mp) * (b - mt)).sum::<f64>() / (n - 1) as f64;
    let slope = cov / vt;
    // the slope's standard error: sqrt(residual variance / (n var(x_t)))
    let residual = vp - cov * cov / vt;
    let se = (residual / (n as f64 * vt)).sqrt();
    assert!((slope - s.posterior_mean_coef2[t]).abs() < 5.0 * se, "slope {slope} vs coef2 {}", s.posterior_mean_coef2[t]);
    assert!((slope - s.posterior_mean_coef2[t + 1]).abs() > 20.0 * se);
    // the intercept's standard error: sqrt(residual / n + mean(x_t)^2 se^2)
    let se_intercept = (residual / n as f64 + mt * mt * se * se).sqrt();
    assert!((mp - slope * mt - s.posterior_mean_coef1[t] * x0).abs() < 5.0 * se_intercept);
    assert!((residual - s.posterior_variance[t]).abs() < 5.0 * s.posterior_variance[t] * (2.0 / n as f64).sqrt());
    Ok(())
}

#[test]
fn note001_l0_depends_on_the_model() -> TestResult {
    // L_T has no trainable parameter (prior_bpd takes no model), but L_0 = -log p_theta(x_0 | x_1)
    // does: its gradient with respect to the model output is non-zero and matches a central
    // finite difference in f64. L_simple's t = 1 term is what stands in for it.
    let s = linear()?;
    let mut rng = rng(107);
    let x_start = Tensor::from_vec(vec![-1.0, -0.2, 0.4, 1.0], &[1, 4])?;
    let x_1 = q_sample(&s, &x_start, &[0], &Tensor::randn(&[1, 4], &mut rng))?;
    let eps = Tensor::<f64>::randn(&[1, 4], &mut rng).mul_scalar(0.5);
    let options = ReverseOptions { clip_denoised: false, ..ReverseOptions::default() };
    let out = eps.clone().requires_grad();
    let grads = vb_terms_bpd(&s, &out, &x_start, &x_1, &[0], options)?.bpd.sum(&[0], false)?.backward()?;
    let analytic = grads.get(&out).ok_or("no gradient for the model output")?.to_vec();
    let base = eps.to_vec();
    let h = 1e-6;
    let l0 = |v: Vec<f64>| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(vb_terms_bpd(&s, &Tensor::from_vec(v, &[1, 4])?, &x_start, &x_1, &[0], options)?.bpd.item()?)
    };
    for i in 0..4 {
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (l0(up)? - l0(down)?) / (2.0 * h);
        assert!((numeric - analytic[i]).abs() < 1e-5 * (1.0 + numeric.abs()), "coordinate {i}: {numeric} vs {}", analytic[i]);
    }
    assert!(analytic.iter().any(|g| g.abs() > 1e-3), "{analytic:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Note 002 (paper reading)
// ---------------------------------------------------------------------------------------

#[test]
fn note002_markov_step_depends_on_the_previous_state_only() -> TestResult {
    // The Markov property: given x_{t-1}, x_t does not depend on the earlier past. Regress x_2 on
    // (x_1, x_0) by least squares: the coefficient of x_1 is sqrt(alpha_2), that of x_0 is 0
    // (within 5 standard errors), and the residual variance is beta_2. x_0 alone predicts x_2
    // (coefficient sqrt(alpha-bar_2)), so "depends on the past" is true only through x_1.
    let s = four_steps()?;
    let n = 40_000;
    let mut rng = rng(111);
    let x0 = Tensor::<f64>::randn(&[n, 1], &mut rng);
    let x1 = q_step_sample(&s, &x0, &vec![0; n], &Tensor::randn(&[n, 1], &mut rng))?;
    let x2 = q_step_sample(&s, &x1, &vec![1; n], &Tensor::randn(&[n, 1], &mut rng))?.to_vec();
    let (x0, x1) = (x0.to_vec(), x1.to_vec());
    let centred = |v: &[f64]| {
        let m = mean_var(v).0;
        v.iter().map(|x| x - m).collect::<Vec<f64>>()
    };
    let (a, b, y) = (centred(&x1), centred(&x0), centred(&x2));
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(p, q)| p * q).sum::<f64>();
    // normal equations of y = c1 a + c0 b
    let (saa, sbb, sab, say, sby) = (dot(&a, &a), dot(&b, &b), dot(&a, &b), dot(&a, &y), dot(&b, &y));
    let det = saa * sbb - sab * sab;
    let (c1, c0) = ((sbb * say - sab * sby) / det, (saa * sby - sab * say) / det);
    let residual: Vec<f64> = (0..n).map(|i| y[i] - c1 * a[i] - c0 * b[i]).collect();
    let sigma2 = dot(&residual, &residual) / (n - 3) as f64;
    let (se1, se0) = ((sigma2 * sbb / det).sqrt(), (sigma2 * saa / det).sqrt());
    assert!((c1 - s.alphas[1].sqrt()).abs() < 5.0 * se1, "coefficient of x_1 {c1}");
    assert!(c0.abs() < 5.0 * se0, "coefficient of x_0 {c0} (se {se0})");
    assert!((sigma2 - s.betas[1]).abs() < 5.0 * s.betas[1] * (2.0 / n as f64).sqrt());
    let alone = sby / sbb; // the slope of x_2 on x_0 alone, residual variance 1 - alpha-bar_2
    assert!((alone - s.alphas_cumprod[1].sqrt()).abs() < 5.0 * ((1.0 - s.alphas_cumprod[1]) / sbb).sqrt());
    Ok(())
}

#[test]
fn note002_tangent_of_the_log_touches_at_one_over_lambda_only_for_ln() -> TestResult {
    // d/dx (lambda x + b - ln x) = 0 at x = 1/lambda, where min_x (lambda x - ln x) = 1 + ln lambda,
    // so ln x = min_lambda (lambda x - ln lambda - 1). The note says "base 10" but
    // differentiates ln; for log10 the tangent point is 1 / (lambda ln 10).
    let (xs, _) = grid(1e-3, 20.0, 400_001);
    let argmin = |f: &dyn Fn(f64) -> f64| xs.iter().copied().fold((0.0, f64::MAX), |best, x| if f(x) < best.1 { (x, f(x)) } else { best });
    for lambda in [0.3, 1.0, 4.0] {
        let (x_ln, v_ln) = argmin(&|x: f64| lambda * x - x.ln());
        assert!((x_ln - 1.0 / lambda).abs() < 1e-3 && (v_ln - (1.0 + f64::ln(lambda))).abs() < 1e-6);
        let (x_10, _) = argmin(&|x: f64| lambda * x - x.log10());
        assert!((x_10 - 1.0 / (lambda * std::f64::consts::LN_10)).abs() < 1e-3 && (x_10 - 1.0 / lambda).abs() > 0.1);
    }
    let (lambdas, _) = grid(1e-3, 50.0, 500_001);
    for x in [0.2, 1.0, 3.0] {
        let dual = lambdas.iter().map(|l| l * x - l.ln() - 1.0).fold(f64::MAX, f64::min);
        assert!((dual - f64::ln(x)).abs() < 1e-6, "x={x}: {dual}");
    }
    Ok(())
}

#[test]
fn note002_the_upper_bound_on_minus_log_likelihood_is_the_negative_elbo() -> TestResult {
    // ELBO = E_q[log p_theta(x_{0:T}) / q(x_{1:T} | x_0)] <= log p_theta(x_0); what §2.3.2 calls
    // "ELBO" is its negative, L = -ELBO >= -log p_theta(x_0).
    // At an x_0 in the model's tail log p_theta(x_0) < 0, and L is not below log p_theta(x_0).
    let (log_p, bound, se) = narrow_model_bound(0.3)?;
    let elbo = -bound;
    assert!(elbo <= log_p + 5.0 * se, "ELBO {elbo} > log p {log_p}");
    assert!(bound > log_p + 5.0 * se, "L = {bound}, log p = {log_p}");
    Ok(())
}

#[test]
fn note002_each_term_averages_over_its_own_x_t_not_over_x_capital_t() -> TestResult {
    // L_{t-1} = E_{x_t ~ q(x_t | x_0)} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), which is the
    // full-path average of log q(x_{t-1} | x_t, x_0) / p_theta(x_{t-1} | x_t). Read literally,
    // "E_{x_T ~ q(x_T | x_0)}" puts x_T where x_t belongs and gives another number.
    let s = four_steps()?;
    let (n, t, x0) = (40_000, 1, 0.4);
    let options = ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let mut rng = rng(108);
    let x_start = Tensor::full(&[n, 1], x0);
    let code = vec![t; n];
    let kl_at = |x: &Tensor<f64>| -> ddpm::Result<Vec<f64>> {
        let post = q_posterior_mean_variance(&s, &x_start, x, &code)?;
        let p = p_mean_variance(&s, &x.mul_scalar(0.5), x, &code, options)?;
        Ok(normal_kl(&post.mean, &post.log_variance, &p.mean, &p.log_variance)?.to_vec())
    };
    let x_t = q_sample(&s, &x_start, &code, &Tensor::randn(&[n, 1], &mut rng))?;
    let by_kl = kl_at(&x_t)?;
    // the same term along full forward paths: x_{t-1} then x_t
    let x_prev = q_sample(&s, &x_start, &vec![t - 1; n], &Tensor::randn(&[n, 1], &mut rng))?;
    let x_t_path = q_step_sample(&s, &x_prev, &code, &Tensor::randn(&[n, 1], &mut rng))?;
    let post = q_posterior_mean_variance(&s, &x_start, &x_t_path, &code)?;
    let p = p_mean_variance(&s, &x_t_path.mul_scalar(0.5), &x_t_path, &code, options)?;
    let by_path =
        normal_log_density(&x_prev, &post.mean, &post.log_variance)?.sub(&normal_log_density(&x_prev, &p.mean, &p.log_variance)?)?.to_vec();
    let x_capital_t = q_sample(&s, &x_start, &vec![3; n], &Tensor::randn(&[n, 1], &mut rng))?;
    let literal = kl_at(&x_capital_t)?;
    let (m_kl, m_path, m_lit) = (mean_var(&by_kl).0, mean_var(&by_path).0, mean_var(&literal).0);
    let se = (standard_error(&by_kl).powi(2) + standard_error(&by_path).powi(2)).sqrt();
    assert!((m_kl - m_path).abs() < 5.0 * se, "{m_kl} vs {m_path}");
    let se_lit = (standard_error(&by_kl).powi(2) + standard_error(&literal).powi(2)).sqrt();
    assert!((m_kl - m_lit).abs() > 20.0 * se_lit, "{m_kl} vs {m_lit}");
    Ok(())
}

#[test]
fn note002_merged_noise_is_a_standard_normal_scaled_once() -> TestResult {
    // sqrt(a(1 - b)) e1 + sqrt(1 - a) e2 = sqrt(1 - ab) e with e ~ N(0, 1). If e-bar := e1' + e2'
    // (the unscaled sum of the two scaled noises, variance 1 - ab) is then multiplied by
    // sqrt(1 - ab) again, the variance becomes (1 - ab)^2.
    let s = NoiseSchedule::new(BetaSchedule::Cosine, 1000)?;
    let (a, b) = (s.alphas[500], s.alphas[499]);
    let n = 40_000;
    let mut rng = rng(109);
    let (e1, e2) = (Tensor::<f64>::randn(&[n], &mut rng), Tensor::<f64>::randn(&[n], &mut rng));
    let sum = e1.mul_scalar((a * (1.0 - b)).sqrt()).add(&e2.mul_scalar((1.0 - a).sqrt()))?;
    assert_variance_close("merged", &sum.to_vec(), 1.0 - a * b);
    let standard = sum.mul_scalar(1.0 / (1.0 - a * b).sqrt()).to_vec();
    assert_variance_close("standardised", &standard, 1.0);
    let double = sum.mul_scalar((1.0 - a * b).sqrt()).to_vec();
    assert!((mean_var(&double).1 - (1.0 - a * b)).abs() > 0.5 * (1.0 - a * b));
    Ok(())
}

#[test]
fn note002_section_2_6_derives_the_posterior_not_the_forward_kernel() -> TestResult {
    // The heading's q(x_t | x_{t-1}, x_0) is the forward step (variance beta_t, Markov); the
    // section derives q(x_{t-1} | x_t, x_0) (variance beta-tilde_t).
    let s = four_steps()?;
    let t = 1;
    let forward = q_step_mean_variance(&s, &column(&[0.3]), &[t])?;
    let post = q_posterior_mean_variance(&s, &column(&[0.5]), &column(&[0.3]), &[t])?;
    assert_eq!(forward.variance.item()?, s.betas[t]);
    assert!((post.variance.item()? - s.posterior_variance[t]).abs() < 1e-15);
    assert!(s.betas[t] / s.posterior_variance[t] > 3.8);
    Ok(())
}

#[test]
fn note002_minus_one_half_multiplies_all_three_squares() -> TestResult {
    // log[q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0)] = -1/2 (A / beta + B / (1 - abar_prev) - C / (1 - abar)) + const.
    // Compared between two x_{t-1} (the constants cancel): with the bracket the difference
    // matches the library's densities; with -1/2 on the first square only it does not.
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 0.5, -0.2);
    let (alpha, beta, abar, abar_prev) = (s.alphas[t], s.betas[t], s.alphas_cumprod[t], s.alphas_cumprod_prev[t]);
    let log_ratio = |x: f64| -> ddpm::Result<f64> {
        Ok(log_density(x_t, alpha.sqrt() * x, beta)? + log_density(x, abar_prev.sqrt() * x0, 1.0 - abar_prev)?
            - log_density(x_t, abar.sqrt() * x0, 1.0 - abar)?)
    };
    let squares = |x: f64| ((x_t - alpha.sqrt() * x).powi(2), (x - abar_prev.sqrt() * x0).powi(2), (x_t - abar.sqrt() * x0).powi(2));
    let bracket = |x: f64| {
        let (a, b, c) = squares(x);
        -0.5 * (a / beta + b / (1.0 - abar_prev) - c / (1.0 - abar))
    };
    let slipped = |x: f64| {
        let (a, b, c) = squares(x);
        -0.5 * a / beta + b / (1.0 - abar_prev) - c / (1.0 - abar)
    };
    let (u, v) = (-0.6, 0.7);
    let truth = log_ratio(u)? - log_ratio(v)?;
    assert!((bracket(u) - bracket(v) - truth).abs() < 1e-12);
    assert!((slipped(u) - slipped(v) - truth).abs() > 0.1);
    Ok(())
}

#[test]
fn note002_completing_the_square_gives_mean_b_over_2a() -> TestResult {
    // -1/2 (a x^2 - b x) with b = 2 sqrt(alpha)/beta x_t + 2 sqrt(abar_prev)/(1 - abar_prev) x_0
    // = -a/2 (x - b/(2a))^2 + const: the mean is b / (2a), not b / a (which is twice mu-tilde).
    for s in [linear()?, four_steps()?] {
        let (x0, x_t) = (0.6, -0.2);
        for t in [1, 2, s.num_timesteps() - 1] {
            let (alpha, beta, abar_prev) = (s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]);
            let a = alpha / beta + 1.0 / (1.0 - abar_prev);
            let b = 2.0 * alpha.sqrt() / beta * x_t + 2.0 * abar_prev.sqrt() / (1.0 - abar_prev) * x0;
            let mu = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?.mean.item()?;
            assert!((b / (2.0 * a) - mu).abs() < 1e-12 * (1.0 + mu.abs()), "t={t}");
            assert!((b / a - 2.0 * mu).abs() < 1e-12 * (1.0 + mu.abs()) && mu.abs() > 1e-3);
            assert!((1.0 / a - s.posterior_variance[t]).abs() < 1e-12 * s.posterior_variance[t]);
        }
    }
    Ok(())
}

#[test]
fn note002_constants_multiply_the_density_they_do_not_add_to_it() -> TestResult {
    // exp(-1/2 (a x^2 - b x + C)) = exp(-a/2 (x - b/(2a))^2) * C', with C' a factor: the ratio of the
    // unnormalised product to N(mu-tilde, beta-tilde) is the same at every x, the difference is not.
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 0.5, -0.2);
    let (alpha, beta, abar_prev) = (s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]);
    let post = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?;
    let (mu, var) = (post.mean.item()?, post.variance.item()?);
    let unnormalised =
        |x: f64| (-0.5 * ((x_t - alpha.sqrt() * x).powi(2) / beta + (x - abar_prev.sqrt() * x0).powi(2) / (1.0 - abar_prev))).exp();
    let (ratios, differences): (Vec<f64>, Vec<f64>) = [-0.8, -0.1, 0.3, 0.9]
        .iter()
        .map(|&x| (unnormalised(x) / normal_pdf(x, mu, var), unnormalised(x) - normal_pdf(x, mu, var)))
        .unzip();
    assert!(ratios.iter().all(|r| (r / ratios[0] - 1.0).abs() < 1e-12));
    assert!(differences.iter().any(|d| (d - differences[0]).abs() > 1e-3));
    Ok(())
}

#[test]
fn note002_prior_term_is_a_kl_of_densities_not_a_ratio_of_samples() -> TestResult {
    // L_T = E_{x_T ~ q(x_T | x_0)}[log q(x_T | x_0) - log N(x_T; 0, 1)] (Monte Carlo) = prior_bpd * ln 2.
    // The note puts the samples eps and x_T in place of the densities: that ratio is negative for
    // a large share of draws, so its log is not even defined.
    let s = four_steps()?;
    let (n, x0) = (40_000, 0.7);
    let mut rng = rng(110);
    let x_start = Tensor::full(&[n, 1], x0);
    let eps = Tensor::<f64>::randn(&[n, 1], &mut rng);
    let x_t = q_sample(&s, &x_start, &vec![3; n], &eps)?;
    let q = q_mean_variance(&s, &x_start, &vec![3; n])?;
    let zero = Tensor::scalar(0.0);
    let log_ratio = normal_log_density(&x_t, &q.mean, &q.log_variance)?.sub(&normal_log_density(&x_t, &zero, &zero)?)?.to_vec();
    let nats = prior_bpd(&s, &column(&[x0]))?.item()? * std::f64::consts::LN_2;
    assert_mean_close("L_T by Monte Carlo", &log_ratio, nats);
    let negative = eps.to_vec().iter().zip(x_t.to_vec()).filter(|(e, x)| *e / x < 0.0).count() as f64 / n as f64;
    assert!(negative > 0.1, "share of negative ratios {negative}");
    Ok(())
}

/// Var[x_{t-1} | x_t] by quadrature over x_{t-1}, for data that is an equal-weight mixture of
/// Gaussians N(c, w) (w = 0: points). q(x_{t-1}) is then the mixture of
/// N(sqrt(abar_prev) c, abar_prev w + 1 - abar_prev), and p(x_{t-1} | x_t) ∝ q(x_t | x_{t-1}) q(x_{t-1}).
fn reverse_variance_by_quadrature(s: &NoiseSchedule, t: usize, data: &[(f64, f64)], x_t: f64) -> f64 {
    let abar_prev = s.alphas_cumprod_prev[t];
    let density = |x: f64| {
        let prior: f64 = data.iter().map(|&(c, w)| normal_pdf(x, abar_prev.sqrt() * c, abar_prev * w + 1.0 - abar_prev)).sum::<f64>();
        normal_pdf(x_t, s.alphas[t].sqrt() * x, s.betas[t]) * prior
    };
    let (xs, h) = grid(-12.0, 12.0, 48_001);
    let values: Vec<f64> = xs.iter().map(|&x| density(x)).collect();
    let mass = simpson(&values, h);
    let mean = simpson(&xs.iter().zip(&values).map(|(x, v)| x * v).collect::<Vec<_>>(), h) / mass;
    simpson(&xs.iter().zip(&values).map(|(x, v)| (x - mean).powi(2) * v).collect::<Vec<_>>(), h) / mass
}

#[test]
fn note002_and_crate_docs_beta_tilde_and_beta_bracket_the_reverse_variance_only_under_conditions() -> TestResult {
    // By the law of total variance, Var[x_{t-1} | x_t] = beta-tilde_t + coef1_t^2 Var[x_0 | x_t]
    // (coef1 = posterior_mean_coef1), and beta_t - beta-tilde_t = coef1_t^2 (1 - alpha-bar_t). So
    //   - beta-tilde_t <= Var[x_{t-1} | x_t] always, at every x_t, for any data;
    //   - Var[x_{t-1} | x_t] <= beta_t exactly where Var[x_0 | x_t] <= 1 - alpha-bar_t. That holds
    //     at every x_t for Gaussian data of variance s^2 <= 1, and on average over x_t for any data
    //     with Var x_0 <= 1 (the best linear predictor's residual bounds the average). It fails for
    //     Gaussian data with s > 1, and pointwise for two-point data between the points.
    let s = four_steps()?;
    let t = 1;
    let (beta, beta_tilde, coef1, abar) = (s.betas[t], s.posterior_variance[t], s.posterior_mean_coef1[t], s.alphas_cumprod[t]);
    assert!((beta - beta_tilde - coef1 * coef1 * (1.0 - abar)).abs() < 1e-14);

    // Two points +-0.8 (variance 0.64 <= 1): pointwise formula against quadrature.
    let a = 0.8;
    let points = DatasetOptimalPredictor::new(s.clone(), vec![vec![-a], vec![a]]);
    let pointwise = |x_t: f64| {
        let m = points.posterior_mean_xstart(&[x_t], t)[0];
        beta_tilde + coef1 * coef1 * (a * a - m * m) // Var[x_0 | x_t] = a^2 - E[x_0 | x_t]^2 for +-a
    };
    for x_t in [-1.5, -0.3, 0.0, 0.5, 2.0] {
        let by_quadrature = reverse_variance_by_quadrature(&s, t, &[(-a, 0.0), (a, 0.0)], x_t);
        assert!((by_quadrature - pointwise(x_t)).abs() < 1e-9, "x_t={x_t}: {by_quadrature} vs {}", pointwise(x_t));
        assert!(by_quadrature >= beta_tilde);
    }
    let between = reverse_variance_by_quadrature(&s, t, &[(-a, 0.0), (a, 0.0)], 0.0);
    assert!(between > 2.0 * beta, "between the points: {between} vs beta {beta}"); // the upper bound fails here
                                                                                   // ... but holds on average over x_t ~ q(x_t) (a mixture of N(+-sqrt(abar) a, 1 - abar)).
    let (xts, h) = grid(-8.0, 8.0, 4001);
    let marginal = |x: f64| 0.5 * (normal_pdf(x, -abar.sqrt() * a, 1.0 - abar) + normal_pdf(x, abar.sqrt() * a, 1.0 - abar));
    let average = simpson(&xts.iter().map(|&x| marginal(x) * pointwise(x)).collect::<Vec<_>>(), h);
    assert!(beta_tilde < average && average <= beta, "average {average} not in [{beta_tilde}, {beta}]");

    // Gaussian data N(0, sd^2): inside the bracket for sd <= 1, above beta for sd > 1.
    for (sd, inside) in [(0.0, true), (0.5, true), (1.0, true), (1.5, false)] {
        let var = reverse_variance_by_quadrature(&s, t, &[(0.0, sd * sd)], 0.4);
        let v = s.alphas_cumprod_prev[t] * sd * sd + 1.0 - s.alphas_cumprod_prev[t];
        assert!((var - v * beta / (s.alphas[t] * v + beta)).abs() < 1e-9, "sd={sd}");
        assert!(var >= beta_tilde - 1e-12);
        assert_eq!(var <= beta + 1e-12, inside, "sd={sd}: {var} vs beta {beta}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Note 003 (derivation document)
// ---------------------------------------------------------------------------------------

#[test]
fn note003_two_steps_merge_under_one_square_root() -> TestResult {
    // x_t = sqrt(alpha_t alpha_{t-1}) x_{t-2} + sqrt(1 - alpha_t alpha_{t-1}) e, and in the end
    // sqrt(alpha-bar_t) x_0: not sqrt(alpha_t) alpha_{t-1}, sqrt(1 - alpha_t) alpha_{t-1}, sqrt(alpha_t) x_0.
    let s = four_steps()?;
    let x0 = 0.5;
    let two = q_mean_variance(&s, &column(&[x0]), &[1])?;
    let (a2, a1) = (s.alphas[1], s.alphas[0]);
    assert!((two.mean.item()? - (a2 * a1).sqrt() * x0).abs() < 1e-15);
    assert!((two.variance.item()? - (1.0 - a2 * a1)).abs() < 1e-15);
    assert!((two.mean.item()? - a2.sqrt() * a1 * x0).abs() > 0.01);
    assert!((two.variance.item()? - ((1.0 - a2).sqrt() * a1).powi(2)).abs() > 0.05);
    let last = q_mean_variance(&s, &column(&[x0]), &[3])?;
    assert!((last.mean.item()? - s.alphas_cumprod[3].sqrt() * x0).abs() < 1e-15);
    assert!((last.mean.item()? - s.alphas[3].sqrt() * x0).abs() > 0.05);
    Ok(())
}

#[test]
fn note003_posterior_factors_use_alpha_bar_and_the_variance_of_q_xt_given_x0() -> TestResult {
    // q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}) and q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t);
    // the note has sqrt(alpha_{t-1}) x_0 in the first and 1 - abar_{t-1} in the second.
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 1.0, 0.9);
    let prev = q_mean_variance(&s, &column(&[x0]), &[t - 1])?;
    let now = q_mean_variance(&s, &column(&[x0]), &[t])?;
    assert!((prev.mean.item()? - s.alphas_cumprod_prev[t].sqrt() * x0).abs() < 1e-15);
    assert!((now.variance.item()? - (1.0 - s.alphas_cumprod[t])).abs() < 1e-15);
    let post = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?;
    let (mu, var) = (post.mean.item()?, post.variance.item()?);
    let (abar, abar_prev) = (s.alphas_cumprod[t], s.alphas_cumprod_prev[t]);
    for x in [-0.7, 0.2, 1.0] {
        let step = log_density(x_t, s.alphas[t].sqrt() * x, s.betas[t])?;
        let right = step + log_density(x, abar_prev.sqrt() * x0, 1.0 - abar_prev)? - log_density(x_t, abar.sqrt() * x0, 1.0 - abar)?;
        let slipped =
            step + log_density(x, s.alphas[t - 1].sqrt() * x0, 1.0 - abar_prev)? - log_density(x_t, abar.sqrt() * x0, 1.0 - abar_prev)?;
        assert!((right - log_density(x, mu, var)?).abs() < 1e-12);
        assert!((slipped - log_density(x, mu, var)?).abs() > 0.05, "x={x}");
    }
    Ok(())
}

#[test]
fn note003_linear_term_keeps_its_factor_two_inside_minus_one_half() -> TestResult {
    // -1/2 (A x^2 - 2 B x) = -A/2 (x - B/A)^2 + const, B = sqrt(alpha)/beta x_t + sqrt(abar_prev)/(1 - abar_prev) x_0:
    // mean B / A. Dropping the 2 while -1/2 still multiplies the bracket gives B / (2A).
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 0.5, -0.2);
    let (alpha, beta, abar_prev) = (s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]);
    let big_a = alpha / beta + 1.0 / (1.0 - abar_prev);
    let big_b = alpha.sqrt() / beta * x_t + abar_prev.sqrt() / (1.0 - abar_prev) * x0;
    let mu = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?.mean.item()?;
    assert!((big_b / big_a - mu).abs() < 1e-14);
    assert!((big_b / (2.0 * big_a) - mu).abs() > 0.05);
    Ok(())
}

#[test]
fn note003_inverting_the_precision_gives_beta_tilde_not_beta() -> TestResult {
    // (alpha_t / beta_t + 1 / (1 - abar_{t-1}))^{-1} = beta-tilde_t; the note's left side reads beta_t.
    let s = linear()?;
    for t in [1, 2, 5] {
        let inverse = 1.0 / (s.alphas[t] / s.betas[t] + 1.0 / (1.0 - s.alphas_cumprod_prev[t]));
        assert!((inverse - s.posterior_variance[t]).abs() < 1e-12 * inverse);
        assert!((inverse - s.betas[t]).abs() > 0.05 * s.betas[t], "t={t}");
    }
    Ok(())
}

#[test]
fn note003_mean_bracket_divides_x0_by_one_minus_alpha_bar_prev() -> TestResult {
    // mu-tilde = beta-tilde (sqrt(alpha)/beta x_t + sqrt(abar_prev)/(1 - abar_prev) x_0); with 1 - abar_t
    // in that bracket (as the note writes) the x_0 coefficient shrinks by (1 - abar_prev) / (1 - abar_t).
    let s = four_steps()?;
    let (t, x0, x_t) = (2, 0.5, -0.2);
    let (alpha, beta, abar, abar_prev, beta_tilde) =
        (s.alphas[t], s.betas[t], s.alphas_cumprod[t], s.alphas_cumprod_prev[t], s.posterior_variance[t]);
    let mu = q_posterior_mean_variance(&s, &column(&[x0]), &column(&[x_t]), &[t])?.mean.item()?;
    let right = beta_tilde * (alpha.sqrt() / beta * x_t + abar_prev.sqrt() / (1.0 - abar_prev) * x0);
    let slipped = beta_tilde * (alpha.sqrt() / beta * x_t + abar_prev.sqrt() / (1.0 - abar) * x0);
    assert!((right - mu).abs() < 1e-14);
    assert!((slipped - mu).abs() > 0.05);
    Ok(())
}

#[test]
fn note003_chain_rule_divides_the_joint_by_p_x0() -> TestResult {
    // p_theta(x_{1:T} | x_0) = p_theta(x_{0:T}) / p_theta(x_0): a density in x_{1:T} of mass 1.
    // The note's third line has p_theta(x_{1:T} | x_0) / p_theta(x_0), of mass 1 / p_theta(x_0).
    // T = 2, eps_theta = 0.5 x (linear), 2-D Simpson over (x_1, x_2); p_theta(x_0) = N(0, V) in closed form.
    let s = NoiseSchedule::from_betas(vec![0.1, 0.3])?;
    let options = ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let mut coefficient = [0.0; 2];
    let mut sigma2 = [0.0; 2];
    for t in 0..2 {
        let one = column(&[1.0]);
        let step = p_mean_variance(&s, &one.mul_scalar(0.5), &one, &[t], options)?;
        (coefficient[t], sigma2[t]) = (step.mean.item()?, step.variance.item()?);
    }
    let x1_variance = coefficient[1].powi(2) + sigma2[1];
    let x0_variance = coefficient[0].powi(2) * x1_variance + sigma2[0];
    let x0 = 0.3;
    let p_x0 = normal_pdf(x0, 0.0, x0_variance);
    let joint = |x1: f64, x2: f64| {
        normal_pdf(x2, 0.0, 1.0) * normal_pdf(x1, coefficient[1] * x2, sigma2[1]) * normal_pdf(x0, coefficient[0] * x1, sigma2[0])
    };
    let (xs, h) = grid(-7.0, 7.0, 1401);
    let inner: Vec<f64> = xs.iter().map(|&x2| simpson(&xs.iter().map(|&x1| joint(x1, x2)).collect::<Vec<_>>(), h)).collect();
    let marginal = simpson(&inner, h);
    assert!((marginal - p_x0).abs() < 1e-9 * p_x0, "{marginal} vs {p_x0}");
    let conditional_mass = marginal / p_x0; // integral of p(x_{0:T}) / p(x_0)
    let slipped_mass = conditional_mass / p_x0; // integral of p(x_{1:T} | x_0) / p(x_0)
    assert!((conditional_mass - 1.0).abs() < 1e-9);
    assert!((slipped_mass - 1.0).abs() > 0.1, "p(x_0) = {p_x0}");
    Ok(())
}

#[test]
fn note003_last_sampling_step_adds_no_noise() -> TestResult {
    // Algorithm 2: z ~ N(0, I) if t > 1, else z = 0. At code t = 0 the draw is the mean whatever the
    // noise; at code t = 1 two noises move the draw by sigma_t (z1 - z2).
    let s = linear()?;
    let options = ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let (x_t, eps) = (column(&[0.2, -0.4]), column(&[0.1, 0.3]));
    let (z1, z2) = (column(&[1.0, -2.0]), column(&[-0.5, 0.7]));
    let at = |t: usize, z: &Tensor<f64>| -> ddpm::Result<Vec<f64>> { Ok(p_sample(&s, &eps, &x_t, &[t, t], options, z)?.sample.to_vec()) };
    let mean0 = p_mean_variance(&s, &eps, &x_t, &[0, 0], options)?.mean.to_vec();
    assert_eq!(at(0, &z1)?, mean0);
    assert_eq!(at(0, &z2)?, mean0);
    let (d1, d2) = (at(1, &z1)?, at(1, &z2)?);
    let sigma = s.betas[1].sqrt();
    assert!((d1[0] - d2[0] - sigma * 1.5).abs() < 1e-12 && (d1[1] - d2[1] - sigma * -2.7).abs() < 1e-12);
    Ok(())
}

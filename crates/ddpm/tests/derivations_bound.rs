//! The variational bound, verified: the Gaussian KL, its equal-variance and
//! noise-MSE forms, the bound computed two ways, the bound being a bound, L_T, the
//! decoder, the optimal noise predictor, erf, and the gradient of the vb loss.
//! Code t = paper t - 1 throughout.

mod derivations_common;

use ddpm::likelihood::{
    approx_standard_normal_cdf_f64, discretized_log_probability_exact, BIN_HALF_WIDTH, HIGHEST_BIN_EDGE, LOWEST_BIN_EDGE,
};
use ddpm::{
    approx_standard_normal_cdf, discretized_gaussian_log_likelihood, discretized_gaussian_log_likelihood_exact, erf, erfc,
    noise_mse_weight, normal_kl, p_mean_variance, prior_bpd, q_sample, q_step_sample, standard_normal_cdf, training_losses, vb_terms_bpd,
    BetaSchedule, DatasetOptimalPredictor, GaussianOptimalPredictor, LossKind, NoisePredictor, NoiseSchedule, Parameterization,
    ReverseOptions, TrainingOptions, VarianceKind,
};
use derivations_common::{assert_mean_close, column, grid, log_normal_pdf, normal_pdf, simpson};
use std::f64::consts::LN_2;
use tensor::{gradcheck, rng, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn closed_form_gaussian_kl_equals_its_monte_carlo_estimate() -> TestResult {
    // KL(N(m1, v1) || N(m2, v2)) = E_{x ~ N(m1, v1)}[log N(x; m1, v1) - log N(x; m2, v2)]
    let n = 100_000;
    for (m1, v1, m2, v2) in [(0.0, 1.0, 0.5, 2.0), (1.0, 0.1, -1.0, 0.3), (0.3, 4.0, 0.0, 1.0)] {
        let closed =
            normal_kl(&Tensor::scalar(m1), &Tensor::scalar(f64::ln(v1)), &Tensor::scalar(m2), &Tensor::scalar(f64::ln(v2)))?.item()?;
        let x = Tensor::<f64>::randn(&[n], &mut rng(17)).affine(v1.sqrt(), m1).to_vec();
        let log_ratios: Vec<f64> = x.iter().map(|&x| log_normal_pdf(x, m1, v1) - log_normal_pdf(x, m2, v2)).collect();
        assert_mean_close(&format!("KL(N({m1}, {v1}) || N({m2}, {v2}))"), &log_ratios, closed);
    }
    Ok(())
}

#[test]
fn equal_variance_kl_is_a_weighted_noise_mse() -> TestResult {
    // KL(N(mu1, s^2 I) || N(mu2, s^2 I)) = |mu1 - mu2|^2 / (2 s^2), and with both means in eps
    // form (Ho et al. eq. 12; notes 002 §3.2, notes 003 §3.1)
    // L_{t-1} = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)) |eps - eps_theta|^2 for sigma_t^2 = beta-tilde_t,
    // plus (D/2)(beta-tilde/beta - 1 - ln(beta-tilde/beta)) for sigma_t^2 = beta_t; any eps_theta.
    let mut rng = rng(19);
    let (mu1, mu2) = (Tensor::<f64>::randn(&[10], &mut rng), Tensor::<f64>::randn(&[10], &mut rng));
    let log_var = Tensor::full(&[10], f64::ln(0.3));
    let kl = normal_kl(&mu1, &log_var, &mu2, &log_var)?.sum_all()?.item()?;
    let squared: f64 = mu1.to_vec().iter().zip(mu2.to_vec()).map(|(a, b)| (a - b).powi(2)).sum();
    assert!((kl - squared / (2.0 * 0.3)).abs() < 1e-12 * kl);

    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let dims = [4, 2, 3];
    let data_dim = 6.0;
    let t = [1, 10, 500, 999];
    let x_start = Tensor::<f64>::rand_uniform(&dims, -1.0, 1.0, &mut rng);
    let (eps, eps_theta) = (Tensor::<f64>::randn(&dims, &mut rng), Tensor::<f64>::randn(&dims, &mut rng));
    let x_t = q_sample(&schedule, &x_start, &t, &eps)?;
    let squared_error: Vec<f64> = eps.sub(&eps_theta)?.sqr().sum(&[1, 2], false)?.to_vec();
    for variance in [VarianceKind::FixedSmall, VarianceKind::FixedLarge] {
        let options = ReverseOptions { variance, parameterization: Parameterization::Epsilon, clip_denoised: false };
        let kl_nats: Vec<f64> =
            vb_terms_bpd(&schedule, &eps_theta, &x_start, &x_t, &t, options)?.bpd.to_vec().iter().map(|b| b * LN_2 * data_dim).collect();
        for (b, &step) in t.iter().enumerate() {
            let (sigma_squared, beta_tilde) = (variance.variances(&schedule).0[step], schedule.posterior_variance[step]);
            let ratio = beta_tilde / sigma_squared;
            let variance_mismatch = data_dim / 2.0 * (ratio - 1.0 - ratio.ln());
            let expected = noise_mse_weight(&schedule, step, sigma_squared)? * squared_error[b] + variance_mismatch;
            assert!((kl_nats[b] - expected).abs() < 1e-9 * expected, "{variance:?} t={step}: {} vs {expected}", kl_nats[b]);
        }
    }
    Ok(())
}

// ---- the bound on a small chain: items "the bound two ways" and "the bound is a bound"

/// A 4-step schedule with large betas, so every term of the bound matters.
fn small_schedule() -> NoiseSchedule {
    NoiseSchedule::from_betas(vec![0.05, 0.15, 0.3, 0.5]).unwrap()
}

/// An arbitrary linear noise predictor eps_theta(x, t) = a_t x + b_t (not the optimal one).
const SLOPES: [f64; 4] = [0.3, 0.5, 0.7, 0.9];
const OFFSETS: [f64; 4] = [0.1, -0.2, 0.05, 0.0];

fn linear_eps_theta(x: &Tensor<f64>, t: &[usize]) -> tensor::Result<Tensor<f64>> {
    let slopes = Tensor::from_vec(t.iter().map(|&s| SLOPES[s]).collect(), &[t.len(), 1])?;
    let offsets = Tensor::from_vec(t.iter().map(|&s| OFFSETS[s]).collect(), &[t.len(), 1])?;
    x.mul(&slopes)?.add(&offsets)
}

const OPTIONS: ReverseOptions =
    ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };

/// The bound in nats for one 1-D x_0, from the closed-form terms: L_T by `prior_bpd`,
/// each L_{t-1} by `vb_terms_bpd` integrated over x_t ~ q(x_t | x_0) by Simpson's rule, and
/// L_0 with a *Gaussian* decoder density N(x_0; mu_theta(x_1, 1), sigma_1^2) (a continuous x_0,
/// so both sides of the comparison use the same continuous decoder).
fn closed_form_bound_nats(schedule: &NoiseSchedule, x_start: f64) -> ddpm::Result<f64> {
    let mut total = prior_bpd(schedule, &column(&[x_start]))?.item()? * LN_2;
    for t in 0..schedule.num_timesteps() {
        let (mean, std) = (schedule.sqrt_alphas_cumprod[t] * x_start, schedule.sqrt_one_minus_alphas_cumprod[t]);
        let (points, h) = grid(mean - 12.0 * std, mean + 12.0 * std, 2001);
        let n = points.len();
        let x_t = column(&points);
        let eps_theta = linear_eps_theta(&x_t, &vec![t; n])?;
        let x_start_batch = Tensor::full(&[n, 1], x_start);
        let term_nats: Vec<f64> = if t == 0 {
            let p = p_mean_variance(schedule, &eps_theta, &x_t, &vec![0; n], OPTIONS)?;
            p.mean.to_vec().iter().zip(p.log_variance.to_vec()).map(|(m, lv)| -log_normal_pdf(x_start, *m, lv.exp())).collect()
        } else {
            vb_terms_bpd(schedule, &eps_theta, &x_start_batch, &x_t, &vec![t; n], OPTIONS)?.bpd.to_vec().iter().map(|b| b * LN_2).collect()
        };
        let weighted: Vec<f64> = points.iter().zip(&term_nats).map(|(x, l)| l * normal_pdf(*x, mean, std * std)).collect();
        total += simpson(&weighted, h);
    }
    Ok(total)
}

/// Per-path log q(x_{1:T} | x_0) - log p_theta(x_{0:T}) for `n` paths drawn by running the
/// forward chain one step at a time, with every density written out from its definition
/// (Gaussian decoder at the last reverse step).
fn sampled_log_ratios(schedule: &NoiseSchedule, x_start: f64, n: usize, seed: u64) -> ddpm::Result<Vec<f64>> {
    let mut rng = rng(seed);
    let mut path = vec![Tensor::full(&[n, 1], x_start)];
    let mut log_ratio = vec![0.0; n];
    for t in 0..schedule.num_timesteps() {
        let next = q_step_sample(schedule, &path[t], &vec![t; n], &Tensor::randn(&[n, 1], &mut rng))?;
        let (prev, now) = (path[t].to_vec(), next.to_vec());
        let sqrt_alpha = schedule.alphas[t].sqrt();
        for i in 0..n {
            log_ratio[i] += log_normal_pdf(now[i], sqrt_alpha * prev[i], schedule.betas[t]);
        }
        path.push(next);
    }
    let last = path[schedule.num_timesteps()].to_vec();
    for i in 0..n {
        log_ratio[i] -= log_normal_pdf(last[i], 0.0, 1.0);
    }
    for t in 0..schedule.num_timesteps() {
        let p = p_mean_variance(schedule, &linear_eps_theta(&path[t + 1], &vec![t; n])?, &path[t + 1], &vec![t; n], OPTIONS)?;
        let (target, mean, log_variance) = (path[t].to_vec(), p.mean.to_vec(), p.log_variance.to_vec());
        for i in 0..n {
            log_ratio[i] -= log_normal_pdf(target[i], mean[i], log_variance[i].exp());
        }
    }
    Ok(log_ratio)
}

#[test]
fn the_bound_two_ways_monte_carlo_equals_the_sum_of_closed_form_terms() -> TestResult {
    // E_q[log q(x_{1:T} | x_0) / p_theta(x_{0:T})] = L_T + sum_{t>=2} L_{t-1} + L_0
    // (Ho et al. eq. 5; the telescoping rewrite of notes 002 §2.5 eqs. 1-13, notes 003 §3.1).
    // Left: Monte Carlo over forward paths. Right: closed-form KLs (the posterior trick), the
    // Gaussian decoder's expected NLL, integrated over x_t on a grid.
    let schedule = small_schedule();
    for (k, x_start) in [-0.7, 0.2, 0.9].into_iter().enumerate() {
        let closed = closed_form_bound_nats(&schedule, x_start)?;
        let log_ratios = sampled_log_ratios(&schedule, x_start, 100_000, 100 + k as u64)?;
        assert_mean_close(&format!("bound at x_0 = {x_start}"), &log_ratios, closed);
    }
    Ok(())
}

/// The model's marginal p_theta(x_0) for the linear eps_theta: every reverse step is
/// x_{t-1} = A_t x_t + B_t + sigma_t z with mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) (a_t x_t + b_t))
/// (Ho et al. eq. 11), so from x_T ~ N(0, 1) the mean and variance follow
/// m <- A m + B, v <- A^2 v + sigma^2. Returns (mean, variance) of x_0.
fn exact_model_marginal(schedule: &NoiseSchedule) -> (f64, f64) {
    let (mut mean, mut variance) = (0.0, 1.0);
    for t in (0..schedule.num_timesteps()).rev() {
        let eps_scale = schedule.betas[t] / schedule.sqrt_one_minus_alphas_cumprod[t];
        let recip_sqrt_alpha = 1.0 / schedule.alphas[t].sqrt();
        let (a, b) = (recip_sqrt_alpha * (1.0 - eps_scale * SLOPES[t]), -recip_sqrt_alpha * eps_scale * OFFSETS[t]);
        // fixed_large: sigma^2 = beta_t, except beta-tilde at index 1 for the first entry
        let sigma_squared = if t == 0 { schedule.posterior_variance[1] } else { schedule.betas[t] };
        mean = a * mean + b;
        variance = a * a * variance + sigma_squared;
    }
    (mean, variance)
}

#[test]
fn the_bound_is_a_bound_and_its_gap_is_the_path_kl() -> TestResult {
    // -log p_theta(x_0) <= L(x_0), and L(x_0) + log p_theta(x_0) = KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0))
    // (notes 003 eq. 9, notes 000 "Loss function"). For 1-D Gaussian data and a linear eps_theta,
    // p_theta(x_0) is Gaussian and exact ([`exact_model_marginal`]); the KL is estimated by Monte
    // Carlo with log p_theta(x_{1:T} | x_0) = log p_theta(x_{0:T}) - log p_theta(x_0).
    let schedule = small_schedule();
    let (model_mean, model_variance) = exact_model_marginal(&schedule);
    let data = Tensor::<f64>::randn(&[4], &mut rng(23)).affine(0.5, 0.2).to_vec(); // x_0 ~ N(0.2, 0.5^2)
    for (k, &x_start) in data.iter().enumerate() {
        let bound = closed_form_bound_nats(&schedule, x_start)?;
        let log_likelihood = log_normal_pdf(x_start, model_mean, model_variance);
        let gap = bound + log_likelihood;
        assert!(gap > 0.0, "x_0 = {x_start}: bound {bound} is below -log p = {}", -log_likelihood);
        let path_kl: Vec<f64> =
            sampled_log_ratios(&schedule, x_start, 100_000, 200 + k as u64)?.iter().map(|r| r + log_likelihood).collect();
        assert_mean_close(&format!("gap at x_0 = {x_start}"), &path_kl, gap);
    }
    Ok(())
}

#[test]
fn calc_bpd_loop_sums_one_sample_estimates_of_every_term() -> TestResult {
    // calc_bpd_loop draws one x_t ~ q(x_t | x_0) per timestep, so over many copies of the same x_0
    // its column t averages to E_{x_t}[L_{t-1}] (the integral in `closed_form_bound_nats`; column 0
    // is the decoder's L_0), and
    // total_bpd = L_T + sum_t vb[t] exactly.
    let schedule = small_schedule();
    let (n, x_start) = (20_000, 0.2);
    let terms = ddpm::calc_bpd_loop(&schedule, &linear_eps_theta, &Tensor::full(&[n, 1], x_start), OPTIONS, &mut rng(43))?;
    assert_eq!(terms.vb.dims(), &[n, 4]);
    assert_eq!((terms.mse.dims(), terms.xstart_mse.dims()), (&[n, 4][..], &[n, 4][..]));
    let (vb, total, prior) = (terms.vb.to_vec(), terms.total_bpd.to_vec(), terms.prior_bpd.to_vec());
    for i in 0..n {
        let row_sum: f64 = vb[i * 4..(i + 1) * 4].iter().sum();
        assert!((total[i] - (row_sum + prior[i])).abs() < 1e-12);
    }
    for t in 0..4 {
        let (mean, std) = (schedule.sqrt_alphas_cumprod[t] * x_start, schedule.sqrt_one_minus_alphas_cumprod[t]);
        let (points, h) = grid(mean - 12.0 * std, mean + 12.0 * std, 2001);
        let m = points.len();
        let x_t = column(&points);
        let kl =
            vb_terms_bpd(&schedule, &linear_eps_theta(&x_t, &vec![t; m])?, &Tensor::full(&[m, 1], x_start), &x_t, &vec![t; m], OPTIONS)?
                .bpd
                .to_vec();
        let expected = simpson(&points.iter().zip(&kl).map(|(x, k)| k * normal_pdf(*x, mean, std * std)).collect::<Vec<_>>(), h);
        let column_t: Vec<f64> = vb.iter().skip(t).step_by(4).copied().collect();
        assert_mean_close(&format!("calc_bpd_loop column {t}"), &column_t, expected);
    }
    Ok(())
}

#[test]
fn prior_term_is_near_zero_and_has_no_trainable_parameter() -> TestResult {
    // L_T = KL(q(x_T | x_0) || N(0, I)) = 1/2 (alpha-bar_T x_0^2 - alpha-bar_T - ln(1 - alpha-bar_T)) nats
    // per coordinate (the Gaussian KL with mean sqrt(alpha-bar_T) x_0 and variance 1 - alpha-bar_T),
    // averaged over the coordinates and divided by ln 2 (notes 002 §3.1). alpha-bar_T is rebuilt here
    // as the product of all T factors (1 - beta). For the linear schedule at T = 1000 (alpha-bar_T ~ 4e-5)
    // L_T is negligible; on a 4-step chain it is not, which makes the check sensitive.
    let mut data_rng = rng(29);
    for betas in [BetaSchedule::Linear.betas(1000), vec![0.05, 0.15, 0.3, 0.5]] {
        let schedule = NoiseSchedule::from_betas(betas.clone())?;
        let alpha_bar_last: f64 = betas.iter().map(|b| 1.0 - b).product();
        let x_start = Tensor::<f64>::rand_uniform(&[8, 1, 4, 4], -1.0, 1.0, &mut data_rng);
        let prior = prior_bpd(&schedule, &x_start)?.to_vec();
        for (b, row) in x_start.to_vec().chunks(16).enumerate() {
            // -a - ln(1 - a) by ln_1p, without the cancellation of 1 - a near 1
            let constant = -alpha_bar_last - (-alpha_bar_last).ln_1p();
            let expected = row.iter().map(|x| 0.5 * (alpha_bar_last * x * x + constant)).sum::<f64>() / 16.0 / LN_2;
            assert!((prior[b] - expected).abs() < 1e-9 * expected, "T = {}: L_T = {} bits, expected {expected}", betas.len(), prior[b]);
            if betas.len() == 1000 {
                assert!(expected < alpha_bar_last, "L_T = {expected} bits is not negligible");
            }
        }
    }
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let x_start = Tensor::<f64>::rand_uniform(&[8, 1, 4, 4], -1.0, 1.0, &mut rng(29));
    let prior = prior_bpd(&schedule, &x_start)?;
    assert!(!prior.requires_grad_flag());
    // With a parameter w in the model, the gradient of L_T + L_{t-1} equals that of L_{t-1}.
    let w = Tensor::scalar(0.7).requires_grad();
    let t = [0, 3, 500, 999, 10, 20, 30, 40];
    let noise = Tensor::<f64>::randn(x_start.dims(), &mut rng(31));
    let x_t = q_sample(&schedule, &x_start, &t, &noise)?;
    let options = ReverseOptions { clip_denoised: false, ..ReverseOptions::default() };
    // Each backward consumes its graph, so the bound is built once for each.
    let vb = || -> ddpm::Result<Tensor<f64>> { Ok(vb_terms_bpd(&schedule, &x_t.mul(&w)?, &x_start, &x_t, &t, options)?.bpd.sum_all()?) };
    let with_prior = vb()?.add(&prior.sum_all()?)?;
    let (grad_vb, grad_total) = (vb()?.backward()?, with_prior.backward()?);
    assert_eq!(grad_vb.get(&w).unwrap().item()?, grad_total.get(&w).unwrap().item()?);
    Ok(())
}

/// The 256 pixel values of [-1, 1].
fn pixel_grid() -> Vec<f64> {
    (0..256).map(|k| 2.0 * k as f64 / 255.0 - 1.0).collect()
}

#[test]
fn discretized_decoder_bin_probabilities_sum_to_one() -> TestResult {
    // sum over the 256 bins of p(x_0 = bin | mean, scale) = 1: the bins tile the real line
    // (edge bins open), so the CDF differences telescope to Phi(inf) - Phi(-inf) = 1 (Ho et al. eq. 13),
    // up to the 1e-12 floor on each bin.
    let pixels = Tensor::from_vec(pixel_grid(), &[256])?;
    for mean in [-1.3, -0.5, 0.0, 0.31, 0.99] {
        for scale in [0.003, 0.05, 0.4, 2.0] {
            let means = Tensor::full(&[256], mean);
            let log_scales = Tensor::full(&[256], f64::ln(scale));
            for (name, log_probs) in [
                ("tanh", discretized_gaussian_log_likelihood(&pixels, &means, &log_scales)?),
                ("erf", discretized_gaussian_log_likelihood_exact(&pixels, &means, &log_scales)?),
            ] {
                let total: f64 = log_probs.to_vec().iter().map(|l| l.exp()).sum();
                assert!((total - 1.0).abs() < 1e-9, "{name} decoder, mean {mean}, scale {scale}: the bins sum to {total}");
            }
        }
    }
    Ok(())
}

#[test]
fn exact_decoder_bins_far_in_either_tail_match_their_integral() -> TestResult {
    // A bin z sigma from the mean holds about phi(z) * width, down to 5e-12 here (above the 1e-12 floor).
    // Taken as a difference of two CDFs near 1 (upper tail) or of two upper tails near 1 (lower tail), it would
    // lose its digits to cancellation; the exact decoder subtracts on the side where both terms are small.
    // Against Simpson's rule on the standard normal density over the bin: ln p within 1e-10.
    let (mean, scale) = (0.0, 0.05);
    for k in [140, 150, 160, 168, 171] {
        for pixel in [k, 255 - k] {
            let x = 2.0 * pixel as f64 / 255.0 - 1.0;
            let (lower, upper) = ((x - 1.0 / 255.0 - mean) / scale, (x + 1.0 / 255.0 - mean) / scale);
            let (points, h) = grid(lower, upper, 2001);
            let mass = simpson(&points.iter().map(|&z| normal_pdf(z, 0.0, 1.0)).collect::<Vec<_>>(), h);
            let log_probability = discretized_log_probability_exact(x, mean, f64::ln(scale));
            assert!(mass > 1e-12 && (log_probability - mass.ln()).abs() < 1e-10, "pixel {x}: ln p {log_probability} vs {}", mass.ln());
        }
    }
    Ok(())
}

#[test]
fn both_decoders_draw_the_edge_bins_at_the_same_place() -> TestResult {
    // A value below LOWEST_BIN_EDGE is pixel 0 and gets the whole lower tail Phi(upper); above
    // HIGHEST_BIN_EDGE, pixel 255 gets the upper tail. Exactly at an edge (no pixel sits there) both
    // decoders treat x as an inner bin. With the mean at x and sigma = one bin half-width the three
    // answers differ by far more than the tanh CDF's error: Phi(1) - Phi(-1) = 0.6827 inside, Phi(1) =
    // 0.8413 as an edge bin.
    let sigma = BIN_HALF_WIDTH;
    let inner_mass = standard_normal_cdf(1.0) - standard_normal_cdf(-1.0);
    for (x, expected) in
        [(LOWEST_BIN_EDGE, inner_mass), (HIGHEST_BIN_EDGE, inner_mass), (-1.0, standard_normal_cdf(1.0)), (1.0, standard_normal_cdf(1.0))]
    {
        let exact = discretized_log_probability_exact(x, x, sigma.ln()).exp();
        let tanh = discretized_gaussian_log_likelihood(&Tensor::scalar(x), &Tensor::scalar(x), &Tensor::scalar(sigma.ln()))?.item()?.exp();
        assert!((exact - expected).abs() < 1e-12, "x = {x}: exact decoder mass {exact} vs {expected}");
        assert!((tanh - expected).abs() < 1e-3, "x = {x}: tanh decoder mass {tanh} vs {expected}");
    }
    Ok(())
}

#[test]
fn erf_matches_reference_values_and_the_integral_of_the_gaussian() {
    // erf(x) = 2/sqrt(pi) int_0^x exp(-s^2) ds; reference values from A&S table 7.1 / DLMF.
    for (x, expected) in [(0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.0, 0.995_322_265_018_952_7)] {
        assert!((erf(x) - expected).abs() < 1e-15, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + expected).abs() < 1e-15);
    }
    for (x, expected) in [(3.0, 2.209_049_699_858_544e-5), (4.0, 1.541_725_790_028_002e-8), (6.0, 2.151_973_671_249_891e-17)] {
        assert!((erfc(x) - expected).abs() < 1e-13 * expected, "erfc({x}) = {}", erfc(x));
    }
    for x in [0.1, 0.7, 1.3, 2.2, 2.99, 3.01, 3.6, 4.5] {
        let (points, h) = grid(0.0, x, 4001);
        let integral = std::f64::consts::FRAC_2_SQRT_PI * simpson(&points.iter().map(|s| (-s * s).exp()).collect::<Vec<_>>(), h);
        assert!((erf(x) - integral).abs() < 1e-13, "erf({x}) = {} vs the integral {integral}", erf(x));
    }
}

#[test]
fn erfc_keeps_its_relative_precision_deep_in_the_tail() {
    // For large x, erfc(x) = exp(-x^2) / (x sqrt(pi)) sum_k (-1)^k (2k - 1)!! / (2 x^2)^k (A&S 7.1.23), an
    // asymptotic series whose terms shrink while k < x^2; cut after 16 terms, its error at x >= 10 is below the
    // first omitted term, 31!! / 200^16 < 1e-19. Where erfc is as small as 1e-272 it stays within 1e-15 of it.
    for x in [10.0, 12.0, 15.0, 20.0, 25.0] {
        let (mut sum, mut term) = (0.0, 1.0);
        for k in 0..16 {
            sum += term;
            term *= -(2 * k + 1) as f64 / (2.0 * x * x);
        }
        let series = (-x * x).exp() / (x * std::f64::consts::PI.sqrt()) * sum;
        assert!((erfc(x) - series).abs() < 1e-15 * series, "erfc({x}) = {:e} vs the series {series:e}", erfc(x));
    }
}

#[test]
fn tanh_cdf_approximation_error_is_measured_and_bounded() -> TestResult {
    // The reference's decoder uses Phi(x) ~ 1/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))). Measured
    // against the exact Phi = erfc(-x/sqrt 2)/2: (1) the CDF error; (2) the decoder's log-likelihood
    // difference for a pixel at d standard deviations from the mean, with sigma_1^2 = beta-tilde_2 of
    // the linear T = 1000 schedule (the decoder variance at t = 0); (3) the expected difference when
    // x_0 is drawn from the decoder itself, E_{x ~ p_exact}[log p_tanh(x) - log p_exact(x)] = -KL(p_exact || p_tanh),
    // summed exactly over the 256 bins.
    let (points, _) = grid(-8.0, 8.0, 160_001);
    let cdf_error = points.iter().map(|&x| (approx_standard_normal_cdf_f64(x) - standard_normal_cdf(x)).abs()).fold(0.0, f64::max);
    eprintln!("max |Phi_tanh - Phi| = {cdf_error:.3e}");
    assert!(cdf_error < 2.0e-4);
    // the differentiable tensor version is the same curve
    let some_points: Vec<f64> = points.iter().step_by(1000).copied().collect();
    let tensor_cdf = approx_standard_normal_cdf(&Tensor::from_vec(some_points.clone(), &[some_points.len()])?)?.to_vec();
    assert!(some_points.iter().zip(&tensor_cdf).all(|(&x, c)| (approx_standard_normal_cdf_f64(x) - c).abs() < 1e-15));

    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let decoder_log_scale = 0.5 * schedule.posterior_log_variance_clipped[0];
    let tanh_log_probability = |x: f64, mean: f64, log_scale: f64| -> ddpm::Result<f64> {
        Ok(discretized_gaussian_log_likelihood(&Tensor::scalar(x), &Tensor::scalar(mean), &Tensor::scalar(log_scale))?.item()?)
    };
    for (max_distance, bound) in [(2.5, 1e-2), (3.0, 3e-2), (6.0, 3.0)] {
        let (distances, _) = grid(0.0, max_distance, 61);
        let mut worst: f64 = 0.0;
        for d in distances {
            let mean = 0.2 + d * decoder_log_scale.exp();
            worst = worst.max(
                (tanh_log_probability(0.2, mean, decoder_log_scale)? - discretized_log_probability_exact(0.2, mean, decoder_log_scale))
                    .abs(),
            );
        }
        eprintln!("|log p_tanh - log p_exact| up to {max_distance} sigma from the mean: max {worst:.3e} nats");
        assert!(worst < bound, "up to {max_distance} sigma: {worst:.3e} nats");
    }
    let pixels = pixel_grid();
    for (mean, scale) in [(0.1037, decoder_log_scale.exp()), (-0.52, 0.05), (0.0, 0.3)] {
        let log_scale = f64::ln(scale);
        let mut expected_difference = 0.0;
        for &x in &pixels {
            let exact = discretized_log_probability_exact(x, mean, log_scale);
            expected_difference += exact.exp() * (tanh_log_probability(x, mean, log_scale)? - exact);
        }
        eprintln!("E_p_exact[log p_tanh - log p_exact] at mean {mean}, sigma {scale:.4}: {expected_difference:.3e} nats");
        assert!((-1e-4..=0.0).contains(&expected_difference));
    }
    Ok(())
}

#[test]
fn the_exact_noise_predictor_minimises_l_simple() -> TestResult {
    // For a finite dataset, L_simple(f) = E_{x_0, eps} |eps - f(x_t)|^2 is minimised by the posterior
    // expectation f*(x_t) = E[eps | x_t] (notes 000: the optimal eps_theta averages over the x_0 that
    // could have produced x_t). Since E[(eps - f*(x_t)) g(x_t)] = 0 for any g,
    // L(f* + delta g) - L(f*) = delta^2 E[g(x_t)^2] > 0. The expectation over eps is a 1-D integral,
    // done by Simpson's rule; the mean over the data is exact.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let data = [-0.6, 0.1, 0.8];
    let optimal = DatasetOptimalPredictor::new(schedule.clone(), data.iter().map(|&x| vec![x]).collect());
    let (eps_grid, h) = grid(-12.0, 12.0, 8001);
    for t in [50, 300, 700] {
        let (s, n) = (schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]);
        // loss(perturbation) = mean over data of int phi(e) (e - f*(x_t) - delta g(x_t))^2 de
        let loss = |perturbation: &dyn Fn(f64) -> f64| -> ddpm::Result<f64> {
            let mut total = 0.0;
            for &x_start in &data {
                let x_t: Vec<f64> = eps_grid.iter().map(|e| s * x_start + n * e).collect();
                let f_star = optimal.predict(&column(&x_t), &vec![t; x_t.len()])?.to_vec();
                let integrand: Vec<f64> = eps_grid
                    .iter()
                    .zip(x_t.iter().zip(&f_star))
                    .map(|(e, (x, f))| normal_pdf(*e, 0.0, 1.0) * (e - f - perturbation(*x)).powi(2))
                    .collect();
                total += simpson(&integrand, h) / data.len() as f64;
            }
            Ok(total)
        };
        let best = loss(&|_| 0.0)?;
        type Perturbation = Box<dyn Fn(f64) -> f64>;
        let perturbations: [(&str, Perturbation); 3] =
            [("constant", Box::new(|_| 1.0)), ("linear", Box::new(|x| x)), ("sine", Box::new(|x: f64| (3.0 * x).sin()))];
        for (name, g) in &perturbations {
            for delta in [0.1, -0.03] {
                let perturbed = loss(&|x| delta * g(x))?;
                let increase = perturbed - best;
                let g_squared = {
                    let mut total = 0.0;
                    for &x_start in &data {
                        let values: Vec<f64> = eps_grid.iter().map(|e| normal_pdf(*e, 0.0, 1.0) * g(s * x_start + n * e).powi(2)).collect();
                        total += simpson(&values, h) / data.len() as f64;
                    }
                    total
                };
                assert!(perturbed > best, "t={t} {name} delta={delta}: {perturbed} <= {best}");
                assert!(
                    (increase - delta * delta * g_squared).abs() < 1e-9,
                    "t={t} {name} delta={delta}: increase {increase} vs delta^2 E g^2 = {}",
                    delta * delta * g_squared
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_dataset_posterior_is_bayes_rule_even_where_every_likelihood_underflows() -> TestResult {
    // E[x_0 | x_t] = sum_i w_i x^(i) with w_i ∝ q(x_t | x^(i)) = N(x_t; sqrt(alpha-bar_t) x^(i), 1 - alpha-bar_t)
    // (equal priors), here from the densities written out. At t = 0 (1 - alpha-bar = 1e-4) and x_t = 3, every
    // q(x_t | x^(i)) is below exp(-20000) and underflows to 0; the weights, ratios of them, do not: all the
    // mass is on the nearest point, so E[x_0 | x_t] = 1 and eps* = (x_t - sqrt(alpha-bar) 1) / sqrt(1 - alpha-bar).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let data = [-1.0, 0.25, 1.0];
    let optimal = DatasetOptimalPredictor::new(schedule.clone(), data.iter().map(|&x| vec![x]).collect());
    for (t, x_t) in [(300, 0.4), (700, -1.2), (50, 0.7)] {
        let (root_alpha_bar, noise_variance) = (schedule.sqrt_alphas_cumprod[t], 1.0 - schedule.alphas_cumprod[t]);
        let likelihoods: Vec<f64> = data.iter().map(|&x0| normal_pdf(x_t, root_alpha_bar * x0, noise_variance)).collect();
        let bayes = data.iter().zip(&likelihoods).map(|(x0, l)| x0 * l).sum::<f64>() / likelihoods.iter().sum::<f64>();
        let posterior_mean = optimal.posterior_mean_xstart(&[x_t], t)[0];
        assert!((posterior_mean - bayes).abs() < 1e-12, "t = {t}, x_t = {x_t}: E[x_0 | x_t] = {posterior_mean}, Bayes {bayes}");
    }
    let (t, x_t) = (0, 3.0);
    assert!(data.iter().all(|&x0| normal_pdf(x_t, schedule.sqrt_alphas_cumprod[t] * x0, 1.0 - schedule.alphas_cumprod[t]) == 0.0));
    assert_eq!(optimal.posterior_mean_xstart(&[x_t], t), vec![1.0]);
    let eps = optimal.predict(&column(&[x_t]), &[t])?.item()?;
    let expected = (x_t - schedule.sqrt_alphas_cumprod[t]) / schedule.sqrt_one_minus_alphas_cumprod[t];
    assert!((eps - expected).abs() < 1e-12 * expected, "eps* = {eps} vs {expected}");
    Ok(())
}

#[test]
fn the_exact_predictors_read_each_batch_item_at_its_own_timestep() -> TestResult {
    // The items of a batch are independent: predicting a [3, 2, 2] batch at timesteps t_b gives, item by item,
    // what predicting each item alone at its t_b gives (one item is checked against quadrature in
    // `note000_optimal_predictor_averages_eps_over_the_posterior_of_x0` and the test above).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let points = vec![vec![0.5, -0.2, 0.9, 0.0], vec![-0.7, 0.3, 0.1, 0.8]];
    let predictors: [(&str, Box<dyn NoisePredictor<f64>>); 2] = [
        ("Gaussian", Box::new(GaussianOptimalPredictor::new(schedule.clone(), 0.2, 0.6))),
        ("dataset", Box::new(DatasetOptimalPredictor::new(schedule.clone(), points))),
    ];
    let x_t = Tensor::<f64>::randn(&[3, 2, 2], &mut rng(43));
    let t = [5, 400, 900];
    for (name, predictor) in &predictors {
        let batch = predictor.predict(&x_t, &t)?.to_vec();
        for (b, &step) in t.iter().enumerate() {
            let alone = predictor.predict(&x_t.narrow(0, b, 1)?, &[step])?.to_vec();
            assert_eq!(&batch[b * 4..(b + 1) * 4], &alone[..], "{name} predictor, item {b} at t = {step}");
        }
    }
    Ok(())
}

#[test]
fn l_simple_of_the_exact_predictor_equals_its_quadrature_floor() -> TestResult {
    // With eps_theta = eps* = E[eps | x_t] (the dataset-optimal predictor), the expected L_simple at
    // timestep t is its floor E_{x_0, eps} |eps - eps*(x_t)|^2 = E Var[eps | x_t] (Ho et al. eq. 14;
    // notes 000). The floor is an integral over eps per data point, done by Simpson's rule; the library's
    // `training_losses` averaged over many (x_0, eps) must reach it within Monte-Carlo error. Feeding the
    // predictor x_0 instead of x_t, or scoring against x_0, or drawing x_t at another t, misses it.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let data = [-0.6, 0.1, 0.8];
    let optimal = DatasetOptimalPredictor::new(schedule.clone(), data.iter().map(|&x| vec![x]).collect());
    let (eps_grid, h) = grid(-12.0, 12.0, 8001);
    let n = 30_000;
    let mut rng = rng(37);
    for t in [50, 150, 300] {
        let (s, sigma) = (schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]);
        let mut floor = 0.0;
        for &x_start in &data {
            let x_t: Vec<f64> = eps_grid.iter().map(|e| s * x_start + sigma * e).collect();
            let f_star = optimal.predict(&column(&x_t), &vec![t; x_t.len()])?.to_vec();
            let integrand: Vec<f64> = eps_grid.iter().zip(&f_star).map(|(e, f)| normal_pdf(*e, 0.0, 1.0) * (e - f).powi(2)).collect();
            floor += simpson(&integrand, h) / data.len() as f64;
        }
        // every data point equally often, so the mean over the data is exact
        let x_start = Tensor::from_vec(data.iter().copied().cycle().take(n).collect(), &[n, 1])?;
        let noise = Tensor::<f64>::randn(&[n, 1], &mut rng);
        let losses = training_losses(&schedule, &optimal, &x_start, &vec![t; n], &noise, TrainingOptions::default())?;
        let per_item = losses.mse.ok_or("L_simple without its mse")?.to_vec();
        assert!(floor < 0.99, "t={t}: the floor {floor} should be below the loss of eps_theta = 0");
        assert_mean_close(&format!("L_simple of eps* at t={t}"), &per_item, floor);
    }
    Ok(())
}

#[test]
fn vb_loss_gradient_matches_finite_differences() -> TestResult {
    // d L_vb / d eps_theta by autograd vs central differences, in f64, for the KL terms and the
    // decoder term (t = 0), both variances, and the hybrid training loss.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let mut rng = rng(41);
    let dims = [4, 1, 2, 2];
    let t = [0, 1, 500, 999];
    let x_start = Tensor::<f64>::rand_uniform(&dims, -1.0, 1.0, &mut rng).affine(127.5, 127.5).to_vec();
    let x_start = Tensor::from_vec(x_start.iter().map(|v| 2.0 * v.round() / 255.0 - 1.0).collect(), &dims)?; // on the pixel grid
    let noise = Tensor::<f64>::randn(&dims, &mut rng);
    let x_t = q_sample(&schedule, &x_start, &t, &noise)?;
    let model_eps = noise.add(&Tensor::<f64>::randn(&dims, &mut rng).mul_scalar(0.3))?;
    for variance in [VarianceKind::FixedLarge, VarianceKind::FixedSmall] {
        let options = ReverseOptions { variance, parameterization: Parameterization::Epsilon, clip_denoised: false };
        let report = gradcheck(
            |v| Ok(vb_terms_bpd(&schedule, &v[0], &x_start, &x_t, &t, options).map_err(to_tensor_error)?.bpd),
            std::slice::from_ref(&model_eps),
        )?;
        assert!(report.max_error < 1e-6, "{variance:?}: max gradient error {:.3e} at {:?}", report.max_error, report.worst_at);
    }
    let hybrid = TrainingOptions { loss: LossKind::Hybrid, hybrid_lambda: 0.001, ..TrainingOptions::default() };
    let report = gradcheck(
        |v| {
            let model = |_: &Tensor<f64>, _: &[usize]| Ok(v[0].clone());
            Ok(training_losses(&schedule, &model, &x_start, &t, &noise, hybrid).map_err(to_tensor_error)?.loss)
        },
        std::slice::from_ref(&model_eps),
    )?;
    assert!(report.max_error < 1e-6, "hybrid loss: max gradient error {:.3e}", report.max_error);
    Ok(())
}

fn to_tensor_error(e: ddpm::Error) -> tensor::Error {
    match e {
        ddpm::Error::Tensor(e) => e,
        other => tensor::Error::InvalidArgument { op: "ddpm", msg: other.to_string() },
    }
}

#[test]
fn the_variational_transform_bounds_the_log_by_its_tangents() -> TestResult {
    // Notes 002 §2.3.1: the tangent of ln with slope lambda is g(x) = lambda x + b(lambda); it touches ln where
    // d/dx (g - ln) = lambda - 1/x = 0, i.e. x = 1/lambda, so b(lambda) = ln(1/lambda) - 1. Checked:
    // (1) g touches ln at x = 1/lambda with slope 1/x (central differences of ln); (2) g >= ln everywhere
    // (concavity), and the minimum of g_lambda(x) over a grid of lambda is ln x; (3) averaging the tangent at
    // lambda = 1 / E[w] over samples w gives Jensen, E ln w <= ln E w, the step from log p_theta(x_0) to the bound
    // (notes 002 §2.3.2) with w = p_theta(x_{0:T}) / q(x_{1:T} | x_0).
    for x in [0.05, 0.7, 1.0, 3.0, 40.0] {
        let lambda = ddpm::log_tangent_slope(x)?;
        assert!((ddpm::log_tangent(lambda, x)? - x.ln()).abs() < 1e-14, "tangent at x = {x} does not touch ln");
        let h = 1e-6 * x;
        let slope = ((x + h).ln() - (x - h).ln()) / (2.0 * h);
        assert!((slope - lambda).abs() < 1e-8 * lambda, "x = {x}: ln'(x) = {slope}, tangent slope {lambda}");
        let (log_lambdas, _) = grid(-6.0, 6.0, 120_001);
        let mut smallest = f64::INFINITY;
        for log_lambda in log_lambdas {
            let g = ddpm::log_tangent(log_lambda.exp(), x)?;
            assert!(g >= x.ln() - 1e-14, "x = {x}, lambda = {}: tangent {g} below ln x", log_lambda.exp());
            smallest = smallest.min(g);
        }
        // on a grid of spacing 1e-4 in ln lambda, g - ln x = e^u - 1 - u <= u^2 ~ (5e-5)^2 near the minimum
        assert!((smallest - x.ln()).abs() < 1e-8, "x = {x}: min over lambda {smallest} vs ln x {}", x.ln());
    }
    // w = exp(0.8 z), z ~ N(0, 1): E ln w = 0 and ln E w = 0.32, so Jensen's gap is 0.32 here.
    let w: Vec<f64> = Tensor::<f64>::randn(&[10_000], &mut rng(97)).to_vec().iter().map(|z| (0.8 * z).exp()).collect();
    let mean_w = w.iter().sum::<f64>() / w.len() as f64;
    let lambda = ddpm::log_tangent_slope(mean_w)?;
    let tangents: Vec<f64> = w.iter().map(|&wi| ddpm::log_tangent(lambda, wi)).collect::<ddpm::Result<_>>()?;
    assert!(w.iter().zip(&tangents).all(|(wi, g)| wi.ln() <= *g + 1e-14), "a sample lies above the tangent");
    let mean_tangent = tangents.iter().sum::<f64>() / w.len() as f64;
    assert!((mean_tangent - mean_w.ln()).abs() < 1e-12, "the averaged tangent is {mean_tangent}, ln E w = {}", mean_w.ln());
    assert_mean_close("E ln w", &w.iter().map(|wi| wi.ln()).collect::<Vec<_>>(), 0.0);
    assert_mean_close("E w", &w, (0.32f64).exp());
    assert!(ddpm::log_tangent_intercept(0.0).is_err() && ddpm::log_tangent(1.0, -1.0).is_err() && ddpm::log_tangent_slope(0.0).is_err());
    Ok(())
}

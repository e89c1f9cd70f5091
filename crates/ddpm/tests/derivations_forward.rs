//! The forward process, verified: one step, the reparameterisation trick, merging
//! noises, the closed form q(x_t | x_0), its inversion, and the Langevin view.
//! Timesteps are 0-based code indices (code t = paper t - 1).

mod derivations_common;

use ddpm::{
    linear_betas, predict_eps_from_xstart, predict_xstart_from_eps, q_mean_variance, q_sample, q_step_mean_variance, q_step_sample,
    reparameterize, BetaSchedule, NoiseSchedule,
};
use derivations_common::{assert_mean_close, assert_variance_close, max_abs_diff};
use tensor::{rng, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Column `d` of a row-major `[n, dim]` buffer.
fn column_of(data: &[f64], dim: usize, d: usize) -> Vec<f64> {
    data.iter().skip(d).step_by(dim).copied().collect()
}

#[test]
fn the_named_schedules_follow_their_definitions() -> TestResult {
    // Linear (Ho et al. §4): T = 1000 betas evenly spaced from beta_1 = 1e-4 to beta_T = 0.02; any other T
    // scales both ends by 1000 / T. NumPy's linspace of one point is its start, of none is empty.
    for (steps, first, last) in [(1000, 1e-4, 0.02), (250, 4e-4, 0.08), (21, 1000.0 / 21.0 * 1e-4, 1000.0 / 21.0 * 0.02)] {
        let betas = linear_betas(steps);
        assert_eq!(betas.len(), steps);
        assert!(
            (betas[0] - first).abs() < 1e-14 * first && (betas[steps - 1] - last).abs() < 1e-14 * last,
            "T = {steps}: {} .. {}",
            betas[0],
            betas[steps - 1]
        );
        let spacing = (last - first) / (steps - 1) as f64;
        assert!(betas.windows(2).all(|w| (w[1] - w[0] - spacing).abs() < 1e-15), "T = {steps}: betas not evenly spaced");
    }
    assert_eq!((linear_betas(1), linear_betas(0)), (vec![0.1], vec![]));
    for steps in [0, 1] {
        assert!(matches!(NoiseSchedule::new(BetaSchedule::Linear, steps), Err(ddpm::Error::InvalidSchedule { .. })), "T = {steps}");
    }
    // Cosine (Nichol & Dhariwal 2021 eq. 17): alpha-bar_t = f(t / T) / f(0), f(s) = cos^2((s + 0.008) / 1.008 pi / 2),
    // with paper t = code t + 1. f(1) = 0 would make the last beta 1; it is capped at 0.999 instead.
    let f = |s: f64| ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    for steps in [1000, 50] {
        let schedule = NoiseSchedule::new(BetaSchedule::Cosine, steps)?;
        for t in 0..steps - 1 {
            let expected = f((t + 1) as f64 / steps as f64) / f(0.0);
            assert!((schedule.alphas_cumprod[t] - expected).abs() < 1e-12 * expected, "T = {steps}, t = {t}");
        }
        assert_eq!(schedule.betas[steps - 1], 0.999);
    }
    Ok(())
}

#[test]
fn every_schedule_array_has_one_value_per_step() -> TestResult {
    // Every derived array is [T], indexed by the code timestep; alpha-bar_{t-1} is 1 before the first
    // step and alpha-bar_{t+1} is 0 after the last (the reference's `alphas_cumprod_prev` / `_next`).
    let schedule = NoiseSchedule::new(BetaSchedule::Cosine, 50)?;
    let s = &schedule;
    let arrays = [
        &s.betas,
        &s.alphas,
        &s.sqrt_alphas,
        &s.sqrt_betas,
        &s.log_betas,
        &s.alphas_cumprod,
        &s.alphas_cumprod_prev,
        &s.alphas_cumprod_next,
        &s.sqrt_alphas_cumprod,
        &s.one_minus_alphas_cumprod,
        &s.sqrt_one_minus_alphas_cumprod,
        &s.log_one_minus_alphas_cumprod,
        &s.sqrt_recip_alphas_cumprod,
        &s.sqrt_recipm1_alphas_cumprod,
        &s.posterior_variance,
        &s.posterior_log_variance_clipped,
        &s.posterior_mean_coef1,
        &s.posterior_mean_coef2,
        &s.recip_sqrt_alphas,
        &s.posterior_mean_eps_coef,
    ];
    assert!(arrays.iter().all(|a| a.len() == 50), "lengths {:?}", arrays.iter().map(|a| a.len()).collect::<Vec<_>>());
    for t in 0..50 {
        let prev = if t == 0 { 1.0 } else { s.alphas_cumprod[t - 1] };
        let next = if t == 49 { 0.0 } else { s.alphas_cumprod[t + 1] };
        assert_eq!((s.alphas_cumprod_prev[t], s.alphas_cumprod_next[t]), (prev, next), "t = {t}");
    }
    Ok(())
}

#[test]
fn one_forward_step_is_gaussian_with_mean_sqrt_alpha_x_and_variance_beta() -> TestResult {
    // q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   (Ho et al. eq. 2)
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let (n, x_prev_row) = (20_000, [0.9, -0.4, 0.0]);
    let x_prev = Tensor::from_vec(x_prev_row.iter().copied().cycle().take(n * 3).collect(), &[n, 3])?;
    for step in [0, 400, 999] {
        let t = vec![step; n];
        let noise = Tensor::randn(&[n, 3], &mut rng(step as u64));
        let x_t = q_step_sample(&schedule, &x_prev, &t, &noise)?.to_vec();
        let exact = q_step_mean_variance(&schedule, &x_prev, &t)?;
        let beta = schedule.betas[step];
        for (d, &x) in x_prev_row.iter().enumerate() {
            let mean = (1.0 - beta).sqrt() * x;
            assert!((exact.mean.to_vec()[d] - mean).abs() < 1e-15 && (exact.variance.to_vec()[d] - beta).abs() < 1e-15);
            let samples = column_of(&x_t, 3, d);
            assert_mean_close(&format!("t={step} d={d} mean"), &samples, mean);
            assert_variance_close(&format!("t={step} d={d} variance"), &samples, beta);
        }
    }
    Ok(())
}

#[test]
fn reparameterisation_gives_the_moments_of_the_gaussian() -> TestResult {
    // z = mu + sigma eps with eps ~ N(0, 1) has E z = mu, Var z = sigma^2   (notes 002 §2.4.1)
    let n = 20_000;
    for (mu, sigma) in [(0.0, 1.0), (1.5, 0.2), (-3.0, 4.0)] {
        let mean = Tensor::full(&[n], mu);
        let log_variance = Tensor::full(&[n], 2.0 * f64::ln(sigma));
        let noise = Tensor::randn(&[n], &mut rng(7));
        let z = reparameterize(&mean, &log_variance, &noise)?.to_vec();
        assert_mean_close("mean", &z, mu);
        assert_variance_close("variance", &z, sigma * sigma);
    }
    Ok(())
}

#[test]
fn two_independent_gaussian_noises_merge_into_one() -> TestResult {
    // One closed-form jump to x_{t-1} followed by one forward step is one closed-form jump to x_t:
    // x_t = sqrt(alpha_t) (sqrt(alpha-bar_{t-1}) x_0 + sqrt(1 - alpha-bar_{t-1}) e1) + sqrt(1 - alpha_t) e2
    //     = sqrt(alpha-bar_t) x_0 + [sqrt(a (1 - b)) e1 + sqrt(1 - a) e2],   a = alpha_t, b = alpha-bar_{t-1},
    // and the bracket is sqrt(1 - a b) e with e ~ N(0, I): independent Gaussians add their variances,
    // a (1 - b) + (1 - a) = 1 - a b   (notes 002 §2.4.2, notes 003 eq. 2). Path by path, `q_sample` with the
    // merged e must equal `q_sample` then `q_step_sample`; at t = 1, two `q_step_sample` steps from x_0.
    // alpha and alpha-bar are rebuilt here from the betas.
    let betas = BetaSchedule::Cosine.betas(1000);
    let schedule = NoiseSchedule::from_betas(betas.clone())?;
    let n = 40_000;
    let mut rng = rng(3);
    let x_start = Tensor::<f64>::rand_uniform(&[n, 1], -1.0, 1.0, &mut rng);
    for step in [1, 500, 998] {
        let a = 1.0 - betas[step];
        let b: f64 = betas[..step].iter().map(|beta| 1.0 - beta).product();
        let (e1, e2) = (Tensor::<f64>::randn(&[n, 1], &mut rng), Tensor::<f64>::randn(&[n, 1], &mut rng));
        let x_prev = if step == 1 {
            q_step_sample(&schedule, &x_start, &vec![0; n], &e1)?
        } else {
            q_sample(&schedule, &x_start, &vec![step - 1; n], &e1)?
        };
        let two_steps = q_step_sample(&schedule, &x_prev, &vec![step; n], &e2)?;
        let merged = e1.mul_scalar((a * (1.0 - b)).sqrt()).add(&e2.mul_scalar((1.0 - a).sqrt()))?.mul_scalar(1.0 / (1.0 - a * b).sqrt());
        let one_step = q_sample(&schedule, &x_start, &vec![step; n], &merged)?;
        assert!(max_abs_diff(&two_steps.to_vec(), &one_step.to_vec()) < 1e-12, "t={step}: two steps differ from one jump");
        // The merged noise is a standard normal: its moments, and its Gaussian shape through
        // P(|e| < 1) = erf(1 / sqrt 2) = 0.682689... (binomial standard error).
        let merged = merged.to_vec();
        assert_mean_close("merged mean", &merged, 0.0);
        assert_variance_close("merged variance", &merged, 1.0);
        let inside: Vec<f64> = merged.iter().map(|e| if e.abs() < 1.0 { 1.0 } else { 0.0 }).collect();
        assert_mean_close("mass within one sigma", &inside, ddpm::erf(std::f64::consts::FRAC_1_SQRT_2));
    }
    Ok(())
}

#[test]
fn iterating_the_one_step_chain_gives_the_closed_form() -> TestResult {
    // Applying q(x_s | x_{s-1}) for s = 1..t gives q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I)
    // (Ho et al. eq. 4). Exact recursion: mean scale m_s = sqrt(alpha_s) m_{s-1}, variance
    // v_s = alpha_s v_{s-1} + beta_s, from m = 1, v = 0.
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let (mut mean_scale, mut variance) = (1.0, 0.0);
        for s in 0..1000 {
            mean_scale *= schedule.alphas[s].sqrt();
            variance = schedule.alphas[s] * variance + schedule.betas[s];
            assert!((mean_scale - schedule.sqrt_alphas_cumprod[s]).abs() < 1e-12, "{kind:?} t={s}");
            assert!((variance - (1.0 - schedule.alphas_cumprod[s])).abs() < 1e-12, "{kind:?} t={s}");
        }
    }
    // Monte Carlo: run the chain 150 steps with the library's one-step sampler.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let (n, x_start) = (10_000, 0.8);
    let mut rng = rng(11);
    let mut x = Tensor::full(&[n, 1], x_start);
    let last = 149;
    for s in 0..=last {
        x = q_step_sample(&schedule, &x, &vec![s; n], &Tensor::randn(&[n, 1], &mut rng))?;
    }
    let closed = q_mean_variance(&schedule, &Tensor::full(&[1, 1], x_start), &[last])?;
    assert_mean_close("chain mean", &x.to_vec(), closed.mean.item()?);
    assert_variance_close("chain variance", &x.to_vec(), closed.variance.item()?);
    Ok(())
}

#[test]
fn predict_xstart_from_eps_inverts_q_sample() -> TestResult {
    // x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps  =>  x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t),
    // and eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t)   (Ho et al. §3.2)
    let mut rng = rng(5);
    for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let schedule = NoiseSchedule::new(kind, 1000)?;
        let t = [0, 1, 250, 500, 998, 999];
        let x_start = Tensor::<f64>::rand_uniform(&[6, 2, 3], -1.0, 1.0, &mut rng);
        let eps = Tensor::<f64>::randn(&[6, 2, 3], &mut rng);
        let x_t = q_sample(&schedule, &x_start, &t, &eps)?;
        let recovered = predict_xstart_from_eps(&schedule, &x_t, &t, &eps)?;
        // Dividing by sqrt(alpha-bar) ~ 1e-4 at the cosine schedule's end amplifies rounding.
        assert!(max_abs_diff(&recovered.to_vec(), &x_start.to_vec()) < 1e-9, "{kind:?} x_0");
        let eps_back = predict_eps_from_xstart(&schedule, &x_t, &t, &x_start)?;
        assert!(max_abs_diff(&eps_back.to_vec(), &eps.to_vec()) < 1e-9, "{kind:?} eps");
    }
    Ok(())
}

#[test]
fn a_forward_step_is_a_langevin_step_toward_the_standard_normal() -> TestResult {
    // sqrt(1 - beta) x = x - beta/2 x + O(beta^2), and -x is the score of N(0, I), so
    // x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) z is the Langevin step
    // x + (delta/2) grad log N(x; 0, I) + sqrt(delta) z with delta = beta, up to O(beta^2)
    // (notes 000, "DDPM <-> Langevin dynamics"). The remainder is beta^2/8 + O(beta^3).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    for &beta in &schedule.betas {
        let remainder = (1.0 - beta / 2.0) - (1.0 - beta).sqrt();
        assert!(remainder > 0.0 && (remainder / (beta * beta) - 0.125).abs() < 0.125 * beta * 1.01, "beta {beta}");
    }
    // N(0, I) is stationary under the forward chain: if Var x_{t-1} = 1 then
    // Var x_t = (1 - beta) + beta = 1; checked exactly and by Monte Carlo over 50 steps.
    let n = 20_000;
    let mut rng = rng(13);
    let mut x = Tensor::<f64>::randn(&[n, 1], &mut rng);
    for s in 500..550 {
        assert!(((1.0 - schedule.betas[s]) + schedule.betas[s] - 1.0).abs() < 1e-15);
        x = q_step_sample(&schedule, &x, &vec![s; n], &Tensor::randn(&[n, 1], &mut rng))?;
    }
    assert_mean_close("stationary mean", &x.to_vec(), 0.0);
    assert_variance_close("stationary variance", &x.to_vec(), 1.0);
    Ok(())
}

//! The continuous-time and small-step claims of the notes, verified: ancestral sampling
//! is a discretisation of Anderson's reverse-time SDE, deterministic DDIM of the
//! probability-flow ODE, and the true reverse step q(x_{t-1} | x_t) tends to a Gaussian
//! as beta_t -> 0 at the rate the cumulants predict. Code t = paper t - 1 throughout.

mod derivations_common;

use ddpm::{
    evenly_spaced_timesteps, gaussian_probability_flow, q_reverse_step, sample_ancestral, sample_ddim, sample_reverse_sde, BetaSchedule,
    DatasetOptimalPredictor, DdimOptions, GaussianOptimalPredictor, NoiseSchedule, Parameterization, ReverseOptions, VarianceKind,
};
use derivations_common::{assert_mean_close, assert_variance_close, grid, log_normal_pdf, simpson};
use tensor::rng;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DATA_MEAN: f64 = 0.5;
const DATA_STD: f64 = 0.3;
const ANCESTRAL: ReverseOptions =
    ReverseOptions { variance: VarianceKind::FixedLarge, parameterization: Parameterization::Epsilon, clip_denoised: false };

/// The exact final (mean, variance) of the reverse-SDE sampler and of ancestral sampling for
/// data N(DATA_MEAN, DATA_STD^2), from x_T ~ N(0, 1). With the exact score
/// -(x - sqrt(alpha-bar) m) / v, v = alpha-bar s^2 + 1 - alpha-bar, both steps are affine in x plus
/// independent noise, x' = A x + c + noise, so mean' = A mean + c and variance' = A^2 variance + noise variance:
/// - Euler-Maruyama of the reverse SDE: x' = x + beta (x / 2 + score) + sqrt(beta) z;
/// - Algorithm 2 (sigma^2 = beta, none at code t = 0): x' = (x + beta score) / sqrt(1 - beta) + sigma z.
fn exact_final_moments(schedule: &NoiseSchedule) -> ((f64, f64), (f64, f64)) {
    let (mut sde, mut ancestral) = ((0.0, 1.0), (0.0, 1.0));
    for t in (0..schedule.num_timesteps()).rev() {
        let (beta, alpha_bar) = (schedule.betas[t], schedule.alphas_cumprod[t]);
        let v = alpha_bar * DATA_STD * DATA_STD + 1.0 - alpha_bar;
        let score_offset = beta * alpha_bar.sqrt() * DATA_MEAN / v; // beta * score = -beta x / v + score_offset
        let (a, c) = (1.0 + beta / 2.0 - beta / v, score_offset);
        sde = (a * sde.0 + c, a * a * sde.1 + beta);
        let (a, c) = ((1.0 - beta / v) / (1.0 - beta).sqrt(), score_offset / (1.0 - beta).sqrt());
        let sigma_squared = if t == 0 { 0.0 } else { beta };
        ancestral = (a * ancestral.0 + c, a * a * ancestral.1 + sigma_squared);
    }
    (sde, ancestral)
}

#[test]
fn ancestral_sampling_discretises_andersons_reverse_time_sde() -> TestResult {
    // Notes 000: "DDPM = Anderson's reverse time SDE". The reverse of dx = -1/2 beta x ds + sqrt(beta) dw is
    // dx = [-1/2 beta x - beta grad log q_s(x)] ds + sqrt(beta) dw-bar (Anderson 1982; Song et al. 2021 eq. 6).
    // (1) The library's Euler-Maruyama sampler and its ancestral sampler reach the exact final moments of
    //     their own recursions (Monte Carlo, 5 standard errors).
    // (2) The two recursions differ by O(1/T): the gap halves when T doubles, and both reach the data law
    //     N(0.5, 0.3^2) to within 1/T.
    let mut gaps = Vec::new();
    for num_timesteps in [250, 500, 1000] {
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, num_timesteps)?;
        let ((sde_mean, sde_var), (anc_mean, anc_var)) = exact_final_moments(&schedule);
        let tolerance = 1.0 / num_timesteps as f64;
        for (name, mean, var) in [("SDE", sde_mean, sde_var), ("ancestral", anc_mean, anc_var)] {
            assert!(
                (mean - DATA_MEAN).abs() < tolerance && (var - DATA_STD * DATA_STD).abs() < tolerance,
                "T={num_timesteps} {name}: N({mean}, {var})"
            );
        }
        gaps.push(((sde_mean - anc_mean).abs(), (sde_var - anc_var).abs()));
        if num_timesteps == 1000 {
            let predictor = GaussianOptimalPredictor::new(schedule.clone(), DATA_MEAN, DATA_STD);
            let n = 20_000;
            let sde = sample_reverse_sde::<f64>(&schedule, &predictor, &[n, 1], &mut rng(71))?.to_vec();
            assert_mean_close("reverse SDE mean", &sde, sde_mean);
            assert_variance_close("reverse SDE variance", &sde, sde_var);
            let ancestral = sample_ancestral::<f64>(&schedule, &predictor, &[n, 1], ANCESTRAL, &[], &mut rng(73))?.sample.to_vec();
            assert_mean_close("ancestral mean", &ancestral, anc_mean);
            assert_variance_close("ancestral variance", &ancestral, anc_var);
        }
    }
    for pair in gaps.windows(2) {
        let (mean_ratio, var_ratio) = (pair[0].0 / pair[1].0, pair[0].1 / pair[1].1);
        assert!((1.9..2.1).contains(&mean_ratio) && (1.9..2.1).contains(&var_ratio), "gap ratios {mean_ratio}, {var_ratio} for T doubled");
    }
    Ok(())
}

#[test]
fn the_reverse_sde_and_ancestral_sampling_reach_the_same_mixture_marginal() -> TestResult {
    // Beyond Gaussian data: for the dataset {-0.6, -0.6, 0.1, 0.8} (probabilities 1/2, 1/4, 1/4) and the
    // exact score, both samplers land on the data points (within 6 sqrt(beta_1) of the SDE's last noise)
    // in the data's proportions (binomial standard errors, 5 of them).
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let points = [-0.6, -0.6, 0.1, 0.8];
    let predictor = DatasetOptimalPredictor::new(schedule.clone(), points.iter().map(|&p| vec![p]).collect());
    let n = 2000;
    let sde = sample_reverse_sde::<f64>(&schedule, &predictor, &[n, 1], &mut rng(79))?.to_vec();
    let ancestral = sample_ancestral::<f64>(&schedule, &predictor, &[n, 1], ANCESTRAL, &[], &mut rng(83))?.sample.to_vec();
    for (name, samples) in [("reverse SDE", sde), ("ancestral", ancestral)] {
        for (value, probability) in [(-0.6, 0.5), (0.1, 0.25), (0.8, 0.25)] {
            let hits: Vec<f64> =
                samples.iter().map(|x| if (x - value).abs() < 6.0 * schedule.betas[0].sqrt() { 1.0 } else { 0.0 }).collect();
            assert_mean_close(&format!("{name}: fraction at {value}"), &hits, probability);
        }
    }
    Ok(())
}

#[test]
fn the_gaussian_probability_flow_solves_its_ode() -> TestResult {
    // dx/ds = -1/2 beta(s) (x + grad log q_s(x)), q_s = N(sqrt(alpha-bar(s)) m, alpha-bar(s) s_d^2 + 1 - alpha-bar(s))
    // (Song et al. 2021 eq. 13), with the continuous linear schedule beta(s) = b0 + (b1 - b0) s on s in [0, 1],
    // alpha-bar(s) = exp(-(b0 s + (b1 - b0) s^2 / 2)). The closed-form flow from s0 = 0.9 is differentiated by
    // central differences and compared with the ODE's right-hand side.
    let (b0, b1) = (0.1, 20.0);
    let beta = |s: f64| b0 + (b1 - b0) * s;
    let alpha_bar = |s: f64| (-(b0 * s + (b1 - b0) * s * s / 2.0)).exp();
    let start = 0.9;
    for x_start in [-2.0, 0.3, 1.7] {
        let flow = |s: f64| gaussian_probability_flow(alpha_bar(start), alpha_bar(s), DATA_MEAN, DATA_STD, x_start);
        for s in [0.05, 0.3, 0.6, 0.9] {
            let h = 1e-5;
            let derivative = (flow(s + h)? - flow(s - h)?) / (2.0 * h);
            let (x, a) = (flow(s)?, alpha_bar(s));
            let score = -(x - a.sqrt() * DATA_MEAN) / (a * DATA_STD * DATA_STD + 1.0 - a);
            let rhs = -0.5 * beta(s) * (x + score);
            assert!((derivative - rhs).abs() < 1e-6 * rhs.abs().max(1.0), "x={x_start} s={s}: dx/ds {derivative} vs {rhs}");
        }
        assert!((flow(start)? - x_start).abs() < 1e-15);
    }
    // Edges: alpha-bar in (0, 1] and std >= 0, else an error; data of std 0 (a point) flows from any noise level
    // onto the point at alpha-bar = 1, but no flow starts at the point itself (alpha-bar_from = 1 with std = 0).
    for (from, to, std) in [(0.5, 1.5, 1.0), (0.0, 0.5, 1.0), (0.5, 0.0, 1.0), (0.5, 1.0, -0.1), (0.5, 1.0, f64::NAN), (1.0, 0.5, 0.0)] {
        assert!(gaussian_probability_flow(from, to, 0.0, std, 0.3).is_err(), "alpha-bar {from} -> {to}, std {std}");
    }
    for x in [-1.0, 0.4, 2.0] {
        assert!((gaussian_probability_flow(0.5, 1.0, DATA_MEAN, 0.0, x)? - DATA_MEAN).abs() < 1e-15, "x = {x}");
    }
    Ok(())
}

#[test]
fn deterministic_ddim_converges_to_the_probability_flow_map_at_first_order() -> TestResult {
    // Notes 000: "DDIM = Fokker-Planck equation". DDIM with eta = 0 and the exact eps of Gaussian data
    // N(0.5, 0.3^2) maps each x_T to x_0; the probability-flow ODE's exact map is
    // x_0 = m + s / sqrt(v_T) (x_T - sqrt(alpha-bar_T) m) (`gaussian_probability_flow`). On K evenly spaced
    // steps the largest error over 64 starting points is first order in 1/K: it halves when K doubles
    // (measured order in [0.9, 1.1]), and is below 0.03 at K = 160.
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let predictor = GaussianOptimalPredictor::new(schedule.clone(), DATA_MEAN, DATA_STD);
    let options = DdimOptions { eta: 0.0, parameterization: Parameterization::Epsilon, clip_denoised: false };
    let mut errors = Vec::new();
    for steps in [20, 40, 80, 160] {
        let kept = evenly_spaced_timesteps(1000, steps)?;
        let trajectory = sample_ddim::<f64>(&schedule, &predictor, &[64, 1], &kept, options, &[999], &mut rng(89))?;
        let x_last = trajectory.frames.first().ok_or("no frame recorded at t = 999")?.x_t.to_vec();
        let exact: Vec<f64> = x_last
            .iter()
            .map(|&x| gaussian_probability_flow(schedule.alphas_cumprod[999], 1.0, DATA_MEAN, DATA_STD, x))
            .collect::<ddpm::Result<_>>()?;
        errors.push(derivations_common::max_abs_diff(&trajectory.sample.to_vec(), &exact));
    }
    for pair in errors.windows(2) {
        let order = (pair[0] / pair[1]).log2();
        assert!((0.9..1.1).contains(&order), "errors {errors:?}: order {order}");
    }
    assert!(errors[3] < 0.03, "errors {errors:?}");
    Ok(())
}

/// A 2-step schedule whose second step has the given beta, with alpha-bar_{t-1} = 0.5 before it.
fn two_step_schedule(beta: f64) -> ddpm::Result<NoiseSchedule> {
    NoiseSchedule::from_betas(vec![0.5, beta])
}

#[test]
fn the_true_reverse_step_is_the_bayes_mixture() -> TestResult {
    // q(x_{t-1} | x_t) ∝ q(x_t | x_{t-1}) q(x_{t-1}), with q(x_{t-1}) = mean_i N(sqrt(alpha-bar_{t-1}) x^(i), 1 - alpha-bar_{t-1}):
    // normalised on a grid by Simpson's rule, it must equal the library's mixture density pointwise.
    let points = vec![vec![-1.0], vec![0.2], vec![1.0]];
    for beta in [0.3, 0.02] {
        let schedule = two_step_schedule(beta)?;
        let x_t = 0.4;
        let mixture = q_reverse_step(&schedule, &points, &[x_t], 1)?;
        let log_unnormalised = |x: f64| {
            let prior: f64 = points.iter().map(|p| log_normal_pdf(x, 0.5f64.sqrt() * p[0], 0.5).exp()).sum::<f64>() / 3.0;
            log_normal_pdf(x_t, (1.0 - beta).sqrt() * x, beta) + prior.ln()
        };
        let (xs, h) = grid(-6.0, 6.0, 24_001);
        let mass = simpson(&xs.iter().map(|&x| log_unnormalised(x).exp()).collect::<Vec<_>>(), h);
        for &x in xs.iter().step_by(500) {
            let bayes = log_unnormalised(x) - mass.ln();
            if bayes > -30.0 {
                assert!((mixture.log_density(&[x]) - bayes).abs() < 1e-8, "beta={beta} x={x}: {} vs {bayes}", mixture.log_density(&[x]));
            }
        }
    }
    // In D = 2 each component is isotropic, N(x; m_i, v I) = prod_d N(x_d; m_id, v): the mixture density from its definition.
    let points_2d = vec![vec![-1.0, 0.5], vec![0.2, -0.3], vec![1.0, 1.0]];
    let mixture = q_reverse_step(&two_step_schedule(0.3)?, &points_2d, &[0.4, -0.1], 1)?;
    for x in [[0.0, 0.0], [0.7, -0.4], [-1.1, 0.9]] {
        let component = |m: &[f64]| (0..2).map(|d| log_normal_pdf(x[d], m[d], mixture.variance)).sum::<f64>().exp();
        let density: f64 = mixture.weights.iter().zip(&mixture.means).map(|(w, m)| w * component(m)).sum();
        assert!((mixture.log_density(&x) - density.ln()).abs() < 1e-12, "x = {x:?}: {} vs {}", mixture.log_density(&x), density.ln());
    }
    assert!(q_reverse_step(&two_step_schedule(0.1)?, &points, &[0.0], 0).is_err());
    assert!(q_reverse_step(&two_step_schedule(0.1)?, &points, &[0.0, 1.0], 1).is_err());
    Ok(())
}

#[test]
fn the_true_reverse_step_becomes_gaussian_as_beta_shrinks() -> TestResult {
    // Ho et al. §2 / notes 000: for small beta_t, q(x_{t-1} | x_t) is nearly Gaussian. For the two-point data
    // {-1, 1} it is a two-component mixture whose means are 2 coef1 = O(beta) apart and whose width is
    // sqrt(beta-tilde) = O(sqrt(beta)), so in units of its standard deviation the separation is
    // delta = O(sqrt(beta)). Its distance from the best Gaussian (the moment-matched one, which minimises
    // KL(q || N)) is, by the Edgeworth expansion, KL = kappa_3^2 / 12 + O(kappa_4^2) with the standardised
    // third cumulant kappa_3 = O(delta^3): KL = O(beta^3) when the weights differ (x_t = 0.3), and
    // O(beta^4) when they are equal (x_t = 0, kappa_3 = 0, KL ~ kappa_4^2 / 48). KL by Simpson's rule.
    let points = vec![vec![-1.0], vec![1.0]];
    let betas = [0.02, 0.01, 0.005, 0.0025, 0.00125];
    for (x_t, order) in [(0.3, 3.0), (0.0, 4.0)] {
        let mut kls = Vec::new();
        for &beta in &betas {
            let mixture = q_reverse_step(&two_step_schedule(beta)?, &points, &[x_t], 1)?;
            let (mean, variance) = (mixture.mean()[0], mixture.coordinate_variances()[0]);
            let std = variance.sqrt();
            let (xs, h) = grid(mean - 12.0 * std, mean + 12.0 * std, 4001);
            let integrand: Vec<f64> = xs
                .iter()
                .map(|&x| {
                    let log_q = mixture.log_density(&[x]);
                    log_q.exp() * (log_q - log_normal_pdf(x, mean, variance))
                })
                .collect();
            let kl = simpson(&integrand, h);
            if x_t != 0.0 {
                let third: f64 = mixture.weights.iter().zip(&mixture.means).map(|(w, m)| w * (m[0] - mean).powi(3)).sum();
                let edgeworth = (third / variance.powf(1.5)).powi(2) / 12.0;
                assert!((kl / edgeworth - 1.0).abs() < 2.0 * beta, "beta={beta}: KL {kl:.4e} vs kappa_3^2 / 12 = {edgeworth:.4e}");
            }
            kls.push(kl);
        }
        let rates: Vec<f64> = kls.windows(2).map(|pair| (pair[0] / pair[1]).log2()).collect();
        eprintln!("x_t = {x_t}: KL {kls:?} for beta {betas:?}; measured orders {rates:.3?}");
        assert!(rates.windows(2).all(|r| r[1] > r[0]), "x_t = {x_t}: orders {rates:?} do not approach {order}");
        assert!(rates.iter().all(|r| (order - 0.2..order + 0.05).contains(r)), "x_t = {x_t}: orders {rates:?}, predicted {order}");
    }
    Ok(())
}

//! The batch's timesteps, three ways (Algorithm 1, line 3). A batch's loss is a
//! Monte Carlo estimate of the average over t of each timestep's loss; drawing one
//! timestep per stratum keeps that estimate's mean and narrows its spread, while
//! logit-normal draws change what it averages, each timestep weighted by its
//! probability. Each claim is checked here against closed forms, by Monte Carlo
//! with stated tolerances.

use ddpm::{logit_normal_timestep_probability, logit_normal_timesteps, sample_timesteps, stratified_timesteps, TimestepSampling};
use tensor::rng;

const T: usize = 1000;
const BATCH: usize = 8;
const BATCHES: usize = 20_000;

/// Mean and variance (over `BATCHES` batches) of the batch mean of `t / T`.
fn batch_mean_moments(mut draw: impl FnMut() -> Vec<usize>) -> (f64, f64) {
    let means: Vec<f64> = (0..BATCHES).map(|_| draw().iter().map(|&t| t as f64 / T as f64).sum::<f64>() / BATCH as f64).collect();
    let mean = means.iter().sum::<f64>() / BATCHES as f64;
    let variance = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (BATCHES - 1) as f64;
    (mean, variance)
}

#[test]
fn each_stratum_holds_one_timestep() {
    let mut r = rng(3);
    for _ in 0..1000 {
        let t = stratified_timesteps(T, BATCH, &mut r);
        assert_eq!(t.len(), BATCH);
        // Item i lies in [i T / B, (i + 1) T / B) = [125 i, 125 (i + 1)).
        for (i, &t_i) in t.iter().enumerate() {
            assert!((125 * i..125 * (i + 1)).contains(&t_i), "item {i}: t = {t_i}");
        }
    }
    // A batch larger than T still stays in range, each timestep at most ceil(B / T) times.
    let t = stratified_timesteps(5, 12, &mut r);
    assert!(t.iter().all(|&t_i| t_i < 5) && (0..5).all(|s| t.iter().filter(|&&t_i| t_i == s).count() <= 3), "{t:?}");
}

#[test]
fn every_timestep_is_equally_likely_either_way() {
    // Counts of each t over 4,000 batches of 8 with T = 16: 2,000 expected each,
    // a binomial standard deviation of sqrt(32,000 (1/16)(15/16)) = 43.3; allow 5.
    let t_small = 16;
    for sampling in [TimestepSampling::Uniform, TimestepSampling::Stratified] {
        let mut counts = [0usize; 16];
        let mut r = rng(11);
        for _ in 0..4000 {
            for t in sampling.draw(t_small, BATCH, &mut r) {
                counts[t] += 1;
            }
        }
        for (t, &n) in counts.iter().enumerate() {
            assert!((n as f64 - 2000.0).abs() < 5.0 * 43.3, "{sampling}: t = {t} drawn {n} times, 2,000 expected");
        }
    }
}

#[test]
fn strata_keep_the_mean_and_divide_the_variance_by_the_batch() {
    let t = T as f64;
    let (uniform_mean, uniform_var) = batch_mean_moments({
        let mut r = rng(5);
        move || sample_timesteps(T, BATCH, &mut r)
    });
    let (strata_mean, strata_var) = batch_mean_moments({
        let mut r = rng(5);
        move || stratified_timesteps(T, BATCH, &mut r)
    });
    // Both means are E[t / T] = (T - 1) / (2 T). The batch mean's standard error is
    // sqrt(var / BATCHES); 5 of them.
    let mean = (t - 1.0) / (2.0 * t);
    assert!((uniform_mean - mean).abs() < 5.0 * (uniform_var / BATCHES as f64).sqrt(), "uniform mean {uniform_mean}, want {mean}");
    assert!((strata_mean - mean).abs() < 5.0 * (strata_var / BATCHES as f64).sqrt(), "stratified mean {strata_mean}, want {mean}");
    // Independent draws: Var(t / T) / B, t uniform on 0..T: (T^2 - 1) / (12 T^2 B).
    // Strata (B divides T): t_i = i T / B + s with one s uniform on 0..T/B, so the
    // batch mean varies only by Var(s) / T^2 = ((T / B)^2 - 1) / (12 T^2).
    let want_uniform = (t * t - 1.0) / (12.0 * t * t * BATCH as f64);
    let stratum = t / BATCH as f64;
    let want_strata = (stratum * stratum - 1.0) / (12.0 * t * t);
    // A sample variance of n draws of a uniform-like quantity has a relative standard
    // error near sqrt((kurtosis - 1) / n) <= sqrt(2 / 20,000) = 1%; allow 5%.
    assert!((uniform_var / want_uniform - 1.0).abs() < 0.05, "uniform variance {uniform_var}, want {want_uniform}");
    assert!((strata_var / want_strata - 1.0).abs() < 0.05, "stratified variance {strata_var}, want {want_strata}");
    assert!(strata_var * 7.0 < uniform_var, "B = 8 strata should cut the variance about 8-fold: {strata_var} vs {uniform_var}");
}

#[test]
fn logit_normal_probabilities_sum_to_one_and_mirror() {
    for t_max in [1, 2, 7, 16, 1000] {
        let p: Vec<f64> = (0..t_max).map(|t| logit_normal_timestep_probability(t_max, t)).collect();
        let total: f64 = p.iter().sum();
        assert!((total - 1.0).abs() < 1e-12, "T = {t_max}: the probabilities sum to {total}");
        // z and -z are equally likely and sigmoid(-z) = 1 - sigmoid(z), so t and
        // T - 1 - t are too.
        for t in 0..t_max {
            assert!(
                (p[t] - p[t_max - 1 - t]).abs() < 1e-12,
                "T = {t_max}: P({t}) = {} but P({}) = {}",
                p[t],
                t_max - 1 - t,
                p[t_max - 1 - t]
            );
        }
    }
    // At T = 1000 the middle is the mode: the density of logit-normal u at 1/2 is
    // phi(0) / (1/4) = 4 / sqrt(2 pi) = 1.596, so P(500) is about 1.596 / 1000; and
    // the first timestep needs z < logit(1/1000) = -6.9, a chance of 2.5e-12.
    let mode = logit_normal_timestep_probability(T, 500);
    assert!((mode * T as f64 / (4.0 / (2.0 * std::f64::consts::PI).sqrt()) - 1.0).abs() < 1e-4, "P(500) = {mode}");
    let first = logit_normal_timestep_probability(T, 0);
    assert!(first > 2.4e-12 && first < 2.6e-12, "P(0) = {first}");
}

#[test]
fn logit_normal_draws_follow_their_closed_form() {
    // 4,000 batches of 8 with T = 16: each count is binomial(32,000, P(t)); allow 5
    // of its standard deviations. The ends are thin (P(0) = 3.4e-3, 108 draws
    // expected, against P(7) = P(8) = 0.099), and they are tested too.
    let t_small = 16;
    let draws = 4000 * BATCH;
    let mut counts = [0usize; 16];
    let mut r = rng(13);
    for _ in 0..4000 {
        for t in TimestepSampling::LogitNormal.draw(t_small, BATCH, &mut r) {
            counts[t] += 1;
        }
    }
    for (t, &n) in counts.iter().enumerate() {
        let p = logit_normal_timestep_probability(t_small, t);
        let (mean, sd) = (draws as f64 * p, (draws as f64 * p * (1.0 - p)).sqrt());
        assert!((n as f64 - mean).abs() < 5.0 * sd, "t = {t} drawn {n} times, {mean:.1} +- {sd:.1} expected");
    }
    // The draws stay in range at T = 1000, and the middle holds most of them: P(t in
    // 100..900) = 1 - 2 Phi(logit(0.1)) = 0.972.
    let mut r = rng(17);
    let t: Vec<usize> = (0..1000).flat_map(|_| logit_normal_timesteps(T, BATCH, &mut r)).collect();
    assert!(t.iter().all(|&t| t < T));
    let middle = t.iter().filter(|&&t| (100..900).contains(&t)).count() as f64 / t.len() as f64;
    // 8,000 draws: standard deviation sqrt(0.972 * 0.028 / 8000) = 0.0018; allow 5.
    assert!((middle - 0.972).abs() < 0.01, "{middle} of the draws in 100..900, 0.972 expected");
}

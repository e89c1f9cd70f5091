//! The batch's timesteps, two ways (Algorithm 1, line 3). A batch's loss is a Monte
//! Carlo estimate of the average over t of each timestep's loss; drawing one
//! timestep per stratum keeps that estimate's mean and narrows its spread. Both
//! claims are checked here against closed forms, by Monte Carlo with stated
//! tolerances.

use ddpm::{sample_timesteps, stratified_timesteps, TimestepSampling};
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

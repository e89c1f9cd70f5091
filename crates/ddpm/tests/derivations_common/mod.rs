//! Helpers shared by the derivation tests: sample moments with their standard
//! errors, a Gaussian density written out from its definition, and quadrature.

#![allow(dead_code)] // each test file uses a different subset

use tensor::Tensor;

/// Monte-Carlo checks accept |estimate - truth| < this many standard errors.
pub const STANDARD_ERRORS: f64 = 5.0;

/// Sample mean and (unbiased) variance of `xs`.
pub fn mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Asserts that the sample mean of `xs` is within 5 standard errors of `truth`,
/// where the standard error is sqrt(sample variance / n).
pub fn assert_mean_close(what: &str, xs: &[f64], truth: f64) {
    let (mean, var) = mean_var(xs);
    let se = (var / xs.len() as f64).sqrt();
    assert!(
        (mean - truth).abs() < STANDARD_ERRORS * se,
        "{what}: Monte-Carlo mean {mean:.6} vs {truth:.6}: off by {:.2} standard errors (se {se:.2e})",
        (mean - truth).abs() / se
    );
}

/// Asserts that the sample variance of `xs` is within 5 standard errors of `truth`.
/// For a sample of n, Var(s^2) = (mu_4 - sigma^4 (n - 3) / (n - 1)) / n, estimated
/// with the sample fourth central moment (valid for any distribution).
pub fn assert_variance_close(what: &str, xs: &[f64], truth: f64) {
    let n = xs.len() as f64;
    let (mean, var) = mean_var(xs);
    let fourth = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
    let se = ((fourth - var * var * (n - 3.0) / (n - 1.0)) / n).sqrt();
    assert!(
        (var - truth).abs() < STANDARD_ERRORS * se,
        "{what}: Monte-Carlo variance {var:.6} vs {truth:.6}: off by {:.2} standard errors (se {se:.2e})",
        (var - truth).abs() / se
    );
}

/// log N(x; mean, variance), written out from the density's definition.
pub fn log_normal_pdf(x: f64, mean: f64, variance: f64) -> f64 {
    -0.5 * ((2.0 * std::f64::consts::PI * variance).ln() + (x - mean).powi(2) / variance)
}

/// N(x; mean, variance).
pub fn normal_pdf(x: f64, mean: f64, variance: f64) -> f64 {
    log_normal_pdf(x, mean, variance).exp()
}

/// `n` evenly spaced points from `lo` to `hi` inclusive, and their spacing.
pub fn grid(lo: f64, hi: f64, n: usize) -> (Vec<f64>, f64) {
    let h = (hi - lo) / (n - 1) as f64;
    ((0..n).map(|i| lo + i as f64 * h).collect(), h)
}

/// Simpson's rule over a grid of odd length with spacing `h`.
pub fn simpson(values: &[f64], h: f64) -> f64 {
    assert!(values.len() % 2 == 1, "Simpson's rule needs an odd number of points");
    let n = values.len() - 1;
    let inner: f64 = (1..n).map(|i| if i % 2 == 1 { 4.0 * values[i] } else { 2.0 * values[i] }).sum();
    h / 3.0 * (values[0] + inner + values[n])
}

/// A `[values.len(), 1]` column tensor.
pub fn column(values: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(values.to_vec(), &[values.len(), 1]).unwrap()
}

/// The largest |a - b|.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

//! The numbers `ddpm eval` reports about a set of samples, in f64:
//! the Frechet distance between two Gaussians fitted to classifier features (the
//! "MNIST-FID"), the matrix square root it needs, and the entropy of a class
//! histogram.
//!
//! The Frechet (2-Wasserstein) distance between N(mu_1, S_1) and N(mu_2, S_2) is
//!
//! ```text
//! d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^(1/2) S_2 S_1^(1/2))^(1/2))
//! ```
//!
//! Both square roots are of symmetric positive semi-definite matrices, so an
//! eigendecomposition gives them: `S = Q diag(lambda) Q^T` and
//! `S^(1/2) = Q diag(sqrt(lambda)) Q^T`. The eigendecomposition is the cyclic
//! Jacobi method, small and exact enough for the 128x128 matrices here.

use crate::error::{Error, Result};

/// A symmetric `n x n` matrix, row-major, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct SymMatrix {
    pub n: usize,
    pub values: Vec<f64>,
}

impl SymMatrix {
    fn at(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.n + j]
    }

    /// `Q diag(f(lambda)) Q^T` for the eigenpairs `(lambda, Q)`.
    fn from_eigen(eigen: &Eigen, f: impl Fn(f64) -> f64) -> SymMatrix {
        let n = eigen.values.len();
        let scaled: Vec<f64> = eigen.values.iter().map(|&l| f(l)).collect();
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                values[i * n + j] = (0..n).map(|k| eigen.vectors[i * n + k] * scaled[k] * eigen.vectors[j * n + k]).sum();
            }
        }
        SymMatrix { n, values }
    }

    /// `A B`, `n x n` each.
    fn matmul(&self, other: &SymMatrix) -> Vec<f64> {
        let n = self.n;
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                let a = self.at(i, k);
                for j in 0..n {
                    out[i * n + j] += a * other.at(k, j);
                }
            }
        }
        out
    }

    #[must_use]
    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum()
    }
}

/// Eigenvalues and eigenvectors of a symmetric matrix: `vectors` row-major
/// `n x n` with the eigenvector of `values[k]` in column `k`.
#[derive(Clone, Debug)]
pub struct Eigen {
    pub values: Vec<f64>,
    pub vectors: Vec<f64>,
    /// Sweeps over all pairs it took: 0 for a diagonal matrix, 1 for a 2 x 2
    /// one; on random positive definite matrices 5 at n = 7, 8 at 33, 10 at
    /// 128 (the size of `ddpm eval`'s covariances): the method converges
    /// quadratically once the off-diagonal entries are small.
    pub sweeps: usize,
}

/// The eigendecomposition of a symmetric matrix by the cyclic Jacobi method: each
/// rotation zeroes one off-diagonal pair, and sweeps over all pairs repeat until
/// the off-diagonal mass is below `1e-22` of the total (or 100 sweeps).
#[must_use]
pub fn symmetric_eigen(a: &SymMatrix) -> Eigen {
    let n = a.n;
    let mut m = a.values.clone();
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    let total: f64 = m.iter().map(|v| v * v).sum();
    let mut sweeps = 0;
    while sweeps < 100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i * n + j].powi(2)).sum();
        if off <= 1e-22 * total || off == 0.0 {
            break;
        }
        sweeps += 1;
        for p in 0..n {
            for r in p + 1..n {
                let apr = m[p * n + r];
                if apr == 0.0 {
                    continue;
                }
                // The rotation by theta in the (p, r) plane with
                // tan(2 theta) = 2 a_pr / (a_rr - a_pp), in its stable form
                // (t = tan theta, the smaller root; signum(0) = 1 gives 45 degrees).
                let tau = (m[r * n + r] - m[p * n + p]) / (2.0 * apr);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkr) = (m[k * n + p], m[k * n + r]);
                    m[k * n + p] = c * mkp - s * mkr;
                    m[k * n + r] = s * mkp + c * mkr;
                }
                for k in 0..n {
                    let (mpk, mrk) = (m[p * n + k], m[r * n + k]);
                    m[p * n + k] = c * mpk - s * mrk;
                    m[r * n + k] = s * mpk + c * mrk;
                }
                for k in 0..n {
                    let (qkp, qkr) = (q[k * n + p], q[k * n + r]);
                    q[k * n + p] = c * qkp - s * qkr;
                    q[k * n + r] = s * qkp + c * qkr;
                }
            }
        }
    }
    Eigen { values: (0..n).map(|i| m[i * n + i]).collect(), vectors: q, sweeps }
}

/// The square root of a symmetric positive semi-definite matrix. Eigenvalues
/// below zero (round-off of a singular covariance) are taken as zero.
#[must_use]
pub fn sqrt_psd(a: &SymMatrix) -> SymMatrix {
    SymMatrix::from_eigen(&symmetric_eigen(a), |l| l.max(0.0).sqrt())
}

/// The mean and covariance (divided by `N - 1`) of `N` vectors of size `d`.
#[derive(Clone, Debug)]
pub struct Gaussian {
    pub mean: Vec<f64>,
    pub cov: SymMatrix,
}

impl Gaussian {
    /// Fits `features`, `N x d` row-major.
    ///
    /// # Errors
    /// Fewer than two vectors, or a length that is not a multiple of `d`.
    pub fn fit(features: &[f32], d: usize) -> Result<Self> {
        if d == 0 || !features.len().is_multiple_of(d) || features.len() / d < 2 {
            return Err(Error::InvalidArgument {
                what: "features",
                reason: format!("{} values are not at least two vectors of {d}", features.len()),
            });
        }
        let n = features.len() / d;
        let mut mean = vec![0.0; d];
        for row in features.chunks(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x) / n as f64;
            }
        }
        let mut values = vec![0.0; d * d];
        for row in features.chunks(d) {
            let centred: Vec<f64> = row.iter().zip(&mean).map(|(&x, m)| f64::from(x) - m).collect();
            for i in 0..d {
                for j in i..d {
                    values[i * d + j] += centred[i] * centred[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                values[i * d + j] /= (n - 1) as f64;
                values[j * d + i] = values[i * d + j];
            }
        }
        Ok(Gaussian { mean, cov: SymMatrix { n: d, values } })
    }
}

/// The squared Frechet distance between two Gaussians of the same size.
///
/// `S_1^(1/2) S_2 S_1^(1/2)` is symmetric PSD with the same eigenvalues as
/// `S_1 S_2`, so the trace of its square root is the trace term of the formula.
#[must_use]
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let root_a = sqrt_psd(&a.cov);
    let mut middle = SymMatrix { n: a.cov.n, values: SymMatrix { n: a.cov.n, values: root_a.matmul(&b.cov) }.matmul(&root_a) };
    // Round-off makes the product slightly asymmetric; symmetrise it.
    let n = middle.n;
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (middle.values[i * n + j] + middle.values[j * n + i]);
            middle.values[i * n + j] = v;
            middle.values[j * n + i] = v;
        }
    }
    let cross: f64 = symmetric_eigen(&middle).values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    mean_term + a.cov.trace() + b.cov.trace() - 2.0 * cross
}

/// The frequencies `p_k` of the classes that occur among `classes` (of `k`), in
/// class order; classes that never occur are left out (`0 ln 0 = 0`).
fn class_frequencies(classes: &[usize], k: usize) -> Vec<f64> {
    let mut counts = vec![0usize; k];
    for &c in classes {
        counts[c] += 1;
    }
    let n = classes.len().max(1) as f64;
    counts.into_iter().filter(|&c| c > 0).map(|c| c as f64 / n).collect()
}

/// `H = -sum p_k ln p_k` (nats).
fn entropy(frequencies: &[f64]) -> f64 {
    // (+ 0.0 turns the -0.0 of a single class into 0.)
    frequencies.iter().map(|p| -p * p.ln()).sum::<f64>() + 0.0
}

/// The entropy (nats) of the histogram of `classes` over `k` classes; `ln k`
/// when every class is equally frequent, 0 when one class takes all.
#[must_use]
pub fn class_entropy(classes: &[usize], k: usize) -> f64 {
    entropy(&class_frequencies(classes, k))
}

/// The standard error of a fraction `p` of `n` independent trials (binomial):
/// `sqrt(p (1 - p) / n)`.
#[must_use]
pub fn fraction_stderr(p: f64, n: usize) -> f64 {
    (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

/// The standard error of the plug-in entropy of a class histogram, by the delta
/// method: with `H = -sum p_k ln p_k`, `Var(H) ~ (sum p_k (ln p_k)^2 - H^2) / n`
/// (Basharin 1959).
#[must_use]
pub fn class_entropy_stderr(classes: &[usize], k: usize) -> f64 {
    let frequencies = class_frequencies(classes, k);
    let h = entropy(&frequencies);
    let second_moment: f64 = frequencies.iter().map(|p| p * p.ln().powi(2)).sum();
    ((second_moment - h * h).max(0.0) / classes.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    fn random_spd(n: usize, seed: u64) -> SymMatrix {
        // B B^T + n I: symmetric positive definite.
        let mut r = tensor::rng(seed);
        let b: Vec<f64> = (0..n * n).map(|_| r.random_range(-1.0..1.0)).collect();
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                values[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() + if i == j { 0.1 } else { 0.0 };
            }
        }
        SymMatrix { n, values }
    }

    #[test]
    fn eigenpairs_satisfy_a_q_equals_q_lambda() {
        for n in [1, 2, 7, 33] {
            let a = random_spd(n, n as u64);
            let Eigen { values, vectors, .. } = symmetric_eigen(&a);
            for k in 0..n {
                for i in 0..n {
                    let aq: f64 = (0..n).map(|j| a.at(i, j) * vectors[j * n + k]).sum();
                    assert!(
                        (aq - values[k] * vectors[i * n + k]).abs() < 1e-9 * values.iter().fold(1.0f64, |m, v| m.max(v.abs())),
                        "n {n}, pair {k}, row {i}"
                    );
                }
            }
        }
    }

    /// A diagonal matrix takes no sweep; a 2 x 2 one a single rotation. The
    /// stopping rule is relative to the matrix's own size (`1e-22` of the
    /// sum of squares): scaled by 1e-6 or 1e6, the same matrices take the
    /// same number of sweeps, few, and come out as accurate relative to their
    /// eigenvalues.
    #[test]
    fn jacobi_stops_after_few_sweeps_at_any_scale() {
        let mut diagonal = SymMatrix { n: 3, values: vec![0.0; 9] };
        for (i, v) in [3.0, -1.0, 0.5].into_iter().enumerate() {
            diagonal.values[i * 3 + i] = v;
        }
        let e = symmetric_eigen(&diagonal);
        assert_eq!((e.sweeps, e.values.as_slice()), (0, [3.0, -1.0, 0.5].as_slice()));
        assert_eq!(symmetric_eigen(&SymMatrix { n: 2, values: vec![5.0, 2.0, 2.0, 3.0] }).sweeps, 1);
        // A NaN never converges: the loop ends at its cap of 100 sweeps, NaN out.
        let nan = symmetric_eigen(&SymMatrix { n: 2, values: vec![1.0, f64::NAN, f64::NAN, 1.0] });
        assert!(nan.sweeps == 100 && nan.values.iter().all(|v| v.is_nan()), "{nan:?}");
        for n in [7, 33] {
            let base = random_spd(n, 40 + n as u64);
            let sweeps_at_one = symmetric_eigen(&base).sweeps;
            assert!((3..=10).contains(&sweeps_at_one), "n {n}: {sweeps_at_one} sweeps");
            for scale in [1e-6, 1e6] {
                let a = SymMatrix { n, values: base.values.iter().map(|v| v * scale).collect() };
                let Eigen { values, vectors, sweeps } = symmetric_eigen(&a);
                assert_eq!(sweeps, sweeps_at_one, "n {n}, scale {scale}");
                let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for k in 0..n {
                    for i in 0..n {
                        let aq: f64 = (0..n).map(|j| a.at(i, j) * vectors[j * n + k]).sum();
                        assert!((aq - values[k] * vectors[i * n + k]).abs() < 1e-9 * largest, "n {n}, scale {scale}, pair {k}, row {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_square_root_squares_back_and_matches_the_2x2_closed_form() {
        let a = random_spd(20, 3);
        let root = sqrt_psd(&a);
        for (x, y) in root.matmul(&root).iter().zip(&a.values) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        // For a 2x2 SPD matrix M, sqrt(M) = (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M)).
        let m = SymMatrix { n: 2, values: vec![5.0, 2.0, 2.0, 3.0] };
        let s = (m.at(0, 0) * m.at(1, 1) - m.at(0, 1) * m.at(1, 0)).sqrt();
        let t = (m.trace() + 2.0 * s).sqrt();
        let want = [(5.0 + s) / t, 2.0 / t, 2.0 / t, (3.0 + s) / t];
        for (x, y) in sqrt_psd(&m).values.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    #[test]
    fn frechet_distance_matches_the_closed_forms() {
        // Diagonal covariances: d^2 = |mu_1 - mu_2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
        let diag = |d: &[f64]| {
            let n = d.len();
            let mut values = vec![0.0; n * n];
            for (i, v) in d.iter().enumerate() {
                values[i * n + i] = *v;
            }
            SymMatrix { n, values }
        };
        let a = Gaussian { mean: vec![0.0, 1.0, 2.0], cov: diag(&[1.0, 4.0, 0.25]) };
        let b = Gaussian { mean: vec![1.0, 1.0, 0.0], cov: diag(&[9.0, 1.0, 0.25]) };
        let want = 1.0 + 4.0 + (1.0f64 - 3.0).powi(2) + (2.0f64 - 1.0).powi(2);
        assert!((frechet_distance(&a, &b) - want).abs() < 1e-10);
        // Same covariance in any basis: only the means count, and d(a, a) = 0.
        let s = random_spd(16, 9);
        let (g1, g2) = (Gaussian { mean: vec![0.5; 16], cov: s.clone() }, Gaussian { mean: vec![0.0; 16], cov: s });
        assert!((frechet_distance(&g1, &g2) - 16.0 * 0.25).abs() < 1e-8);
        assert!(frechet_distance(&g1, &g1).abs() < 1e-8);
    }

    #[test]
    fn fitted_gaussians_recover_mean_and_covariance() {
        // x = (u, u + v) with u, v uniform on [-1, 1]: var u = 1/3, cov = 1/3, var = 2/3.
        let mut r = tensor::rng(1);
        let n = 200_000;
        let features: Vec<f32> = (0..n)
            .flat_map(|_| {
                let (u, v) = (r.random_range(-1.0f32..1.0), r.random_range(-1.0f32..1.0));
                [u + 2.0, u + v]
            })
            .collect();
        let g = Gaussian::fit(&features, 2).unwrap();
        // Standard errors are below 0.003 at this N; 0.01 is more than three of them.
        assert!((g.mean[0] - 2.0).abs() < 0.01 && g.mean[1].abs() < 0.01, "{:?}", g.mean);
        for (x, y) in g.cov.values.iter().zip([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0]) {
            assert!((x - y).abs() < 0.01, "{:?}", g.cov.values);
        }
        assert!(Gaussian::fit(&features[..2], 2).is_err());
    }

    /// Three vectors by hand: the mean, and the covariance divided by N - 1
    /// (not N, nor N + 1); two vectors are the fewest it fits, and each way
    /// to be wrong is refused alone.
    #[test]
    fn fit_divides_by_n_minus_one_and_refuses_each_bad_shape() {
        // Rows (0, 1), (2, 1), (4, 4): mean (2, 2); centred (-2, -1), (0, -1), (2, 2);
        // sums of products: xx 8, xy 6, yy 6; divided by N - 1 = 2.
        let g = Gaussian::fit(&[0.0, 1.0, 2.0, 1.0, 4.0, 4.0], 2).unwrap();
        assert_eq!(g.mean, [2.0, 2.0]);
        assert_eq!(g.cov.values, [4.0, 3.0, 3.0, 3.0]);
        let two = Gaussian::fit(&[1.0, 3.0], 1).unwrap();
        assert_eq!((two.mean[0], two.cov.values[0]), (2.0, 2.0));
        // d = 0 (also with no values, where len / d would divide by zero), a
        // length that is no multiple of d though it holds two vectors, one vector.
        let bad: [(&[f32], usize); 5] = [(&[1.0, 2.0], 0), (&[], 0), (&[1.0, 2.0, 3.0, 4.0, 5.0], 2), (&[1.0, 2.0], 2), (&[], 3)];
        for (features, d) in bad {
            let err = Gaussian::fit(features, d).expect_err("a bad shape");
            assert!(err.to_string().contains("features"), "{err}");
        }
    }

    #[test]
    fn class_entropy_is_log_k_when_uniform_and_zero_when_one_class() {
        let uniform: Vec<usize> = (0..1000).map(|i| i % 10).collect();
        assert!((class_entropy(&uniform, 10) - 10f64.ln()).abs() < 1e-12);
        assert_eq!(class_entropy(&[3; 50], 10), 0.0);
        // +0, not -0 (which compares equal but prints as "-0.000").
        assert!(class_entropy(&[3; 50], 10).is_sign_positive());
        // Two classes at 1/4 and 3/4.
        let want = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((class_entropy(&[0, 1, 1, 1], 10) - want).abs() < 1e-12);
    }

    /// The delta-method standard error of the entropy against a Monte-Carlo
    /// estimate: the spread of the entropy over 2,000 histograms of n = 500 draws
    /// from a skewed 10-class distribution. The estimate's own relative error is
    /// about 1/sqrt(2 * 2000) = 1.6%, the delta method's O(1/n) bias a few percent
    /// more; 10% leaves room for both.
    #[test]
    fn class_entropy_stderr_matches_the_spread_of_resampled_histograms() {
        let weights: Vec<f64> = (1..=10).map(f64::from).collect();
        let total: f64 = weights.iter().sum();
        let cumulative: Vec<f64> = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        let mut r = tensor::rng(7);
        let (n, replicates) = (500, 2000);
        // Inverse-CDF draws; the last class also takes u at the rounding edge.
        let mut draw = || -> Vec<usize> {
            (0..n)
                .map(|_| {
                    let u: f64 = r.random();
                    cumulative.iter().position(|&c| u < c).unwrap_or(9)
                })
                .collect()
        };
        let entropies: Vec<f64> = (0..replicates).map(|_| class_entropy(&draw(), 10)).collect();
        let mean = entropies.iter().sum::<f64>() / replicates as f64;
        let spread = (entropies.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (replicates - 1) as f64).sqrt();
        let formula = class_entropy_stderr(&draw(), 10);
        assert!((formula / spread - 1.0).abs() < 0.1, "delta method {formula}, Monte Carlo {spread}");
        // A binomial fraction: sqrt(0.9 * 0.1 / 100) = 0.03.
        assert!((fraction_stderr(0.9, 100) - 0.03).abs() < 1e-12);
        // Classes that never occur add nothing (0 ln 0 = 0): two of ten classes at
        // 1/4 and 3/4 of n = 4 give sqrt((sum p (ln p)^2 - H^2) / 4).
        let (p, q) = (0.25f64, 0.75f64);
        let h = -(p * p.ln() + q * q.ln());
        let want = ((p * p.ln().powi(2) + q * q.ln().powi(2) - h * h) / 4.0).sqrt();
        assert!((class_entropy_stderr(&[0, 1, 1, 1], 10) - want).abs() < 1e-12);
    }
}

//! Toy 2-D datasets for a diffusion model small enough to train in seconds.
//!
//! Shapes:
//!
//! ```text
//! N = number of points
//! points  [f32; 2] x N   (or flat f32 (N, 2) through `flatten`)
//! ```
//!
//! Each set is drawn from a `ChaCha8Rng` seeded with `seed_from_u64(seed)`, so the same
//! `(n, seed)` gives the same points on every machine, and each is centred and scaled
//! once, by constants, so that its mean is near 0 and the average of its two coordinate
//! variances near 1 (trace of the covariance near 2): the scale of the N(0, I) prior a
//! diffusion model ends in. A set's individual coordinate variances may differ (the two
//! moons are wider than tall).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::Error;

use std::f32::consts::PI;

/// The four toy datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Toy {
    /// See [`swiss_roll`].
    SwissRoll,
    /// See [`two_moons`].
    TwoMoons,
    /// See [`eight_gaussians`].
    EightGaussians,
    /// See [`checkerboard`].
    Checkerboard,
}

impl Toy {
    /// All four, in a fixed order.
    pub const ALL: [Toy; 4] = [Toy::SwissRoll, Toy::TwoMoons, Toy::EightGaussians, Toy::Checkerboard];

    /// The name used on the command line and by [`Toy::from_str`].
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Toy::SwissRoll => "swiss-roll",
            Toy::TwoMoons => "two-moons",
            Toy::EightGaussians => "eight-gaussians",
            Toy::Checkerboard => "checkerboard",
        }
    }

    /// Draws `n` points of this dataset from `seed`.
    #[must_use]
    pub fn sample(self, n: usize, seed: u64) -> Vec<[f32; 2]> {
        match self {
            Toy::SwissRoll => swiss_roll(n, seed),
            Toy::TwoMoons => two_moons(n, seed),
            Toy::EightGaussians => eight_gaussians(n, seed),
            Toy::Checkerboard => checkerboard(n, seed),
        }
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy {
    type Err = Error;

    /// Parses a name from [`Toy::name`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] listing the valid names.
    fn from_str(name: &str) -> Result<Self, Error> {
        Toy::ALL.into_iter().find(|toy| toy.name() == name).ok_or_else(|| Error::InvalidArgument {
            what: "toy dataset",
            reason: format!("unknown name {name:?}, expected one of {:?}", Toy::ALL.map(Toy::name)),
        })
    }
}

/// Standard deviation of the noise added to the swiss roll, before scaling.
pub const SWISS_ROLL_NOISE: f32 = 0.5;
/// Standard deviation of the noise added to the moons, before scaling.
pub const MOONS_NOISE: f32 = 0.1;
/// Standard deviation of each of the eight Gaussians.
pub const EIGHT_GAUSSIANS_STD: f32 = 0.1;

/// The swiss roll: a spiral of 1.5 turns, as in scikit-learn's `make_swiss_roll` seen
/// from above.
///
/// Construction: t ~ U(1.5 pi, 4.5 pi), the point is `t (cos t, sin t) + noise` with
/// noise ~ N(0, 0.5^2 I), then the spiral's exact mean is subtracted,
/// `E[t cos t] = 2` and `E[t sin t] = 2 / (3 pi)` (integrate by parts over t), and the
/// result divided by 6.8, the square root of the average coordinate variance
/// (43.9 and 48.3 for the spiral, plus 0.25 of noise).
///
/// # Example
///
/// ```
/// use course::data::toy::swiss_roll;
///
/// let points = swiss_roll(1000, 0);
/// assert_eq!(points.len(), 1000);
/// assert_eq!(points, swiss_roll(1000, 0)); // reproducible
/// ```
#[must_use]
pub fn swiss_roll(n: usize, seed: u64) -> Vec<[f32; 2]> {
    const SCALE: f32 = 6.8;
    let mean = [2.0, 2.0 / (3.0 * PI)];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let t = rng.random_range(1.5 * PI..4.5 * PI);
            let noise = gaussian_pair(&mut rng, SWISS_ROLL_NOISE);
            [(t * t.cos() + noise[0] - mean[0]) / SCALE, (t * t.sin() + noise[1] - mean[1]) / SCALE]
        })
        .collect()
}

/// Two interleaved half circles, as in scikit-learn's `make_moons`.
///
/// Construction: point i lies on the upper moon if i is even, the lower one if odd
/// (so any prefix is balanced), at an angle theta ~ U(0, pi). The upper moon is
/// `(cos theta, sin theta)`, the lower one `(1 - cos theta, 1/2 - sin theta)`; noise
/// ~ N(0, 0.1^2 I) is added, the exact mean (1/2, 1/4) subtracted, and the result divided
/// by 0.71, the square root of the average coordinate variance (0.76 across, 0.25 up).
#[must_use]
pub fn two_moons(n: usize, seed: u64) -> Vec<[f32; 2]> {
    const SCALE: f32 = 0.71;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let theta = rng.random_range(0.0..PI);
            let (x, y) = if i % 2 == 0 { (theta.cos(), theta.sin()) } else { (1.0 - theta.cos(), 0.5 - theta.sin()) };
            let noise = gaussian_pair(&mut rng, MOONS_NOISE);
            [(x + noise[0] - 0.5) / SCALE, (y + noise[1] - 0.25) / SCALE]
        })
        .collect()
}

/// The radius of the circle of the eight Gaussians' centres, chosen so that each
/// coordinate has variance `r^2 / 2 + std^2 = 1`.
pub fn eight_gaussians_radius() -> f32 {
    (2.0 * (1.0 - EIGHT_GAUSSIANS_STD * EIGHT_GAUSSIANS_STD)).sqrt()
}

/// A mixture of eight equally weighted Gaussians on a circle.
///
/// Construction: a centre k ~ U{0, ..., 7}, at angle k pi / 4 on the circle of radius
/// r = sqrt(2 (1 - 0.1^2)) ~ 1.407, plus noise ~ N(0, 0.1^2 I). The mean is exactly 0,
/// and since the average of cos^2 over the eight angles is 1/2, each coordinate's
/// variance is r^2 / 2 + 0.1^2 = 1.
#[must_use]
pub fn eight_gaussians(n: usize, seed: u64) -> Vec<[f32; 2]> {
    let radius = eight_gaussians_radius();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let angle = rng.random_range(0..8u8) as f32 * PI / 4.0;
            let noise = gaussian_pair(&mut rng, EIGHT_GAUSSIANS_STD);
            [radius * angle.cos() + noise[0], radius * angle.sin() + noise[1]]
        })
        .collect()
}

/// The side of one checkerboard square, `sqrt(3) / 2`.
pub fn checkerboard_square() -> f32 {
    3f32.sqrt() / 2.0
}

/// A 4x4 checkerboard with points uniform on its eight dark squares.
///
/// Construction: on the grid [-2, 2]^2 of unit squares, a column c ~ U{0, 1, 2, 3} is
/// drawn, then one of the two rows r with c + r even, then a point uniform in square
/// (c, r); the result is shifted by -2 and scaled by sqrt(3) / 2. Each column and each
/// row holds two dark squares, so both coordinates are uniform on [-sqrt 3, sqrt 3]:
/// mean 0 and variance (2 sqrt 3)^2 / 12 = 1 exactly.
#[must_use]
pub fn checkerboard(n: usize, seed: u64) -> Vec<[f32; 2]> {
    let side = checkerboard_square();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let column = rng.random_range(0..4u8);
            let row = 2 * rng.random_range(0..2u8) + column % 2;
            let x = f32::from(column) + rng.random::<f32>() - 2.0;
            let y = f32::from(row) + rng.random::<f32>() - 2.0;
            [x * side, y * side]
        })
        .collect()
}

/// Flattens points into one row-major buffer (N, 2), the layout of a tensor.
#[must_use]
pub fn flatten(points: &[[f32; 2]]) -> Vec<f32> {
    points.iter().flatten().copied().collect()
}

/// Two independent draws from N(0, std^2).
fn gaussian_pair(rng: &mut ChaCha8Rng, std: f32) -> [f32; 2] {
    [std * rng.sample::<f32, _>(StandardNormal), std * rng.sample::<f32, _>(StandardNormal)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample mean and (biased) variance of each coordinate.
    fn moments(points: &[[f32; 2]]) -> ([f64; 2], [f64; 2]) {
        let n = points.len() as f64;
        let mut mean = [0.0; 2];
        let mut var = [0.0; 2];
        for axis in 0..2 {
            mean[axis] = points.iter().map(|p| f64::from(p[axis])).sum::<f64>() / n;
            var[axis] = points.iter().map(|p| (f64::from(p[axis]) - mean[axis]).powi(2)).sum::<f64>() / n;
        }
        (mean, var)
    }

    #[test]
    fn same_seed_same_points_different_seed_different_points() {
        for toy in Toy::ALL {
            assert_eq!(toy.sample(500, 7), toy.sample(500, 7), "{toy}");
            assert_ne!(toy.sample(500, 7), toy.sample(500, 8), "{toy}");
            assert_eq!(toy.sample(0, 7), Vec::<[f32; 2]>::new());
        }
    }

    /// With N = 20,000 the standard error of a mean is about 0.007 and of a variance
    /// about 0.01-0.02, so the ranges below are 5-10 standard errors wide around the
    /// constructed values: mean 0, average coordinate variance 1.
    #[test]
    fn moments_are_near_zero_mean_unit_variance() {
        for toy in Toy::ALL {
            let (mean, var) = moments(&toy.sample(20_000, 1));
            assert!(mean.iter().all(|m| m.abs() < 0.05), "{toy}: mean {mean:?}");
            let average_var = (var[0] + var[1]) / 2.0;
            assert!((0.93..1.07).contains(&average_var), "{toy}: variances {var:?}");
            assert!(var.iter().all(|v| (0.4..1.6).contains(v)), "{toy}: variances {var:?}");
        }
        // The eight Gaussians and the checkerboard have unit variance on each axis.
        for toy in [Toy::EightGaussians, Toy::Checkerboard] {
            let (_, var) = moments(&toy.sample(20_000, 2));
            assert!(var.iter().all(|v| (0.95..1.05).contains(v)), "{toy}: variances {var:?}");
        }
    }

    #[test]
    fn checkerboard_points_lie_on_dark_squares() {
        let side = checkerboard_square();
        for [x, y] in checkerboard(10_000, 3) {
            // Grid coordinates in [0, 4); f32 rounding may put a point on an edge.
            let (gx, gy) = (x / side + 2.0, y / side + 2.0);
            let on_edge = |g: f32| (g - g.round()).abs() < 1e-4;
            assert!((-1e-4..4.0 + 1e-4).contains(&gx) && (-1e-4..4.0 + 1e-4).contains(&gy));
            let dark = (gx.floor() as i32 + gy.floor() as i32) % 2 == 0;
            assert!(dark || on_edge(gx) || on_edge(gy), "({x}, {y}) is on a light square");
        }
    }

    /// Noise of std s in 2-D exceeds 6 s with probability exp(-18) ~ 1.5e-8 per point.
    #[test]
    fn eight_gaussians_points_lie_near_a_centre() {
        let radius = eight_gaussians_radius();
        for [x, y] in eight_gaussians(10_000, 4) {
            let nearest = (0..8)
                .map(|k| {
                    let angle = k as f32 * PI / 4.0;
                    (x - radius * angle.cos()).hypot(y - radius * angle.sin())
                })
                .fold(f32::INFINITY, f32::min);
            assert!(nearest < 6.0 * EIGHT_GAUSSIANS_STD, "({x}, {y}) is {nearest} from a centre");
        }
    }

    #[test]
    fn two_moons_points_lie_near_their_arcs() {
        // Distance from q to the upper unit half circle centred at the origin.
        let to_upper_arc = |qx: f32, qy: f32| {
            if qy >= 0.0 {
                (qx.hypot(qy) - 1.0).abs()
            } else {
                (qx - 1.0).hypot(qy).min((qx + 1.0).hypot(qy))
            }
        };
        for (i, [x, y]) in two_moons(10_000, 5).into_iter().enumerate() {
            // Undo the scaling; the lower moon is the upper one turned about (1, 1/2).
            let (px, py) = (x * 0.71 + 0.5, y * 0.71 + 0.25);
            let distance = if i % 2 == 0 { to_upper_arc(px, py) } else { to_upper_arc(1.0 - px, 0.5 - py) };
            assert!(distance < 6.0 * MOONS_NOISE, "point {i} ({x}, {y}) is {distance} off its moon");
        }
    }

    #[test]
    fn swiss_roll_points_lie_near_the_spiral() {
        // The spiral t (cos t, sin t) at 4,000 values of t; consecutive ones are at most
        // 0.035 apart, so the nearest is at most 0.02 farther than the curve itself.
        let curve: Vec<(f32, f32)> =
            (0..4000).map(|k| 1.5 * PI + 3.0 * PI * k as f32 / 3999.0).map(|t| (t * t.cos(), t * t.sin())).collect();
        for [x, y] in swiss_roll(2000, 6) {
            let (px, py) = (x * 6.8 + 2.0, y * 6.8 + 2.0 / (3.0 * PI));
            let distance = curve.iter().map(|&(cx, cy)| (px - cx).hypot(py - cy)).fold(f32::INFINITY, f32::min);
            assert!(distance < 6.0 * SWISS_ROLL_NOISE + 0.03, "({x}, {y}) is {distance} off");
        }
    }

    #[test]
    fn names_round_trip_and_flatten_is_row_major() {
        for toy in Toy::ALL {
            assert_eq!(toy.name().parse::<Toy>().unwrap(), toy);
        }
        assert!("spiral".parse::<Toy>().unwrap_err().to_string().contains("swiss-roll"));
        assert_eq!(flatten(&[[1.0, 2.0], [3.0, 4.0]]), [1.0, 2.0, 3.0, 4.0]);
    }
}

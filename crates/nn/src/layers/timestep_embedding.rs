//! The sinusoidal timestep embedding of the Transformer (Vaswani et al. 2017),
//! used by DDPM to tell the network which noise level it is denoising.
//!
//! Shapes: `t` `[B]` (timesteps), output `[B, dim]`. With `half = dim / 2`,
//!
//! `f_i = exp(-ln(10000) i / (half - 1))`, `i = 0 .. half - 1`,
//! `emb[b] = [sin(t_b f_0), ..., sin(t_b f_{half-1}), cos(t_b f_0), ..., cos(t_b f_{half-1})]`,
//!
//! so the frequencies run geometrically from 1 down to 1/10000. The values are
//! computed in f64 and rounded once; the embedding carries no gradient.

use crate::error::{Error, Result};
use tensor::{Float, Tensor};

/// The largest period is `2 pi MAX_PERIOD` timesteps.
pub const MAX_PERIOD: f64 = 10_000.0;

/// The sinusoidal embedding `[B, dim]` of the timesteps `t` (see the module docs).
///
/// ```
/// let emb = nn::timestep_embedding::<f32>(&[0.0, 10.0], 8)?;
/// assert_eq!(emb.dims(), &[2, 8]);
/// // At t = 0 every sine is 0 and every cosine is 1.
/// assert_eq!(&emb.to_vec()[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
/// # Ok::<(), nn::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] unless `dim` is even and at least 4 (the formula
/// divides by `dim / 2 - 1`).
pub fn timestep_embedding<T: Float>(t: &[f64], dim: usize) -> Result<Tensor<T>> {
    if dim < 4 || !dim.is_multiple_of(2) {
        return Err(Error::InvalidArgument { op: "timestep_embedding", msg: format!("dim must be even and at least 4, got {dim}") });
    }
    let half = dim / 2;
    let frequencies: Vec<f64> = (0..half).map(|i| (-MAX_PERIOD.ln() * i as f64 / (half - 1) as f64).exp()).collect();
    let mut data = Vec::with_capacity(t.len() * dim);
    for &time in t {
        data.extend(frequencies.iter().map(|f| T::from_f64((time * f).sin())));
        data.extend(frequencies.iter().map(|f| T::from_f64((time * f).cos())));
    }
    Ok(Tensor::from_vec(data, &[t.len(), dim])?)
}

/// Integer timesteps (code indices, `0 .. T - 1`) as the f64 values the embedding takes.
#[must_use]
pub fn timesteps_to_f64(t: &[usize]) -> Vec<f64> {
    t.iter().map(|&s| s as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frequency_is_one_and_last_is_one_over_max_period() {
        // t = 1: emb[0] = sin(1 * f_0) = sin(1), emb[half-1] = sin(1e-4).
        let emb = timestep_embedding::<f64>(&[1.0], 32).unwrap().to_vec();
        assert!((emb[0] - 1f64.sin()).abs() < 1e-15);
        assert!((emb[15] - 1e-4f64.sin()).abs() < 1e-15);
        assert!((emb[16] - 1f64.cos()).abs() < 1e-15);
    }

    #[test]
    fn each_sine_and_cosine_share_the_angle_t_times_its_frequency() {
        // Pair i is (sin a, cos a) with a = t f_i and f_i = 10000^(-i / (half - 1)),
        // written here as a power rather than the exp-of-log of the code: the pair
        // lies on the unit circle, and its angle is a modulo 2 pi.
        let (dim, half) = (12, 6);
        for t in [3.0, 17.5, 999.0] {
            let emb = timestep_embedding::<f64>(&[t], dim).unwrap().to_vec();
            for i in 0..half {
                let (sin, cos) = (emb[i], emb[half + i]);
                let angle = t * MAX_PERIOD.powf(-(i as f64) / (half - 1) as f64);
                assert!((sin * sin + cos * cos - 1.0).abs() < 1e-12, "t {t}, pair {i} off the unit circle");
                let turns = (sin.atan2(cos) - angle) / std::f64::consts::TAU;
                assert!((turns - turns.round()).abs() < 1e-9, "t {t}, pair {i}: angle {} != {angle} mod 2 pi", sin.atan2(cos));
            }
        }
    }

    #[test]
    fn rejects_odd_or_tiny_dims() {
        assert!(timestep_embedding::<f32>(&[0.0], 7).is_err());
        assert!(timestep_embedding::<f32>(&[0.0], 2).is_err());
    }
}

//! Seeded random tensors. One RNG type, passed explicitly: the same seed gives the
//! same numbers on every run and every machine (ChaCha8 is a fixed algorithm, and
//! values are drawn in f64 then rounded, so f32 and f64 tensors of one seed agree).

use crate::element::Float;
use crate::shape::elem_count;
use crate::tensor::Tensor;
use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;

/// The project's random number generator.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator seeded with `seed`.
#[must_use]
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

impl<T: Float> Tensor<T> {
    /// Independent standard normal entries, N(0, 1).
    #[must_use]
    pub fn randn(dims: &[usize], rng: &mut Rng) -> Self {
        let data = (0..elem_count(dims)).map(|_| T::from_f64(rng.sample::<f64, _>(StandardNormal))).collect();
        Tensor::leaf(data, dims)
    }

    /// Independent uniform entries in `[lo, hi)`.
    #[must_use]
    pub fn rand_uniform(dims: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Self {
        let data = (0..elem_count(dims)).map(|_| T::from_f64(lo + (hi - lo) * rng.random::<f64>())).collect();
        Tensor::leaf(data, dims)
    }
}

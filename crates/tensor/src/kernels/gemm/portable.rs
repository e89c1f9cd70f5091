//! The portable microkernel: plain Rust, no `unsafe`, any target.
//!
//! The tile lives in a local `[[T; NR]; MR]` array and the `kc` loop does
//! `acc[i][j] += a[i] * b[j]` over fixed-size arrays. With `MR` and `NR`
//! compile-time constants, LLVM unrolls the `i` and `j` loops, keeps `acc`
//! in registers and vectorises along `j` with whatever SIMD the target has
//! (SSE2 on baseline x86-64, NEON on aarch64; AVX2 when the AVX2 kernel
//! re-compiles this function under `#[target_feature]` for f64).

use std::marker::PhantomData;

use super::kernel::MicroKernel;
use super::pack::pack_panels;
use super::{GemmScalar, MatRef};

/// The portable kernel for element type `T`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable<T>(PhantomData<T>);

impl<T> Portable<T> {
    pub(crate) const fn new() -> Self {
        Portable(PhantomData)
    }
}

/// `C <- alpha * a~ b~ + beta * C` on the top `mr` rows of an `MR x NR`
/// tile, tile element `(i, j)` at `c[i * rs + j]`. All `MR` rows are
/// computed (the padding rows of a~ are zeros); only `mr` are stored.
///
/// # Panics
/// If `mr > MR`, or a slice is too short for `kc`, `MR`, `NR`, `mr` and `rs`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_rows<T: GemmScalar, const MR: usize, const NR: usize>(
    mr: usize,
    kc: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
    rs: usize,
) {
    // Fixed-size chunks: the inner loops below have constant trip counts and
    // no bounds checks.
    let a_steps = a[..kc * MR].as_chunks::<MR>().0;
    let b_steps = b[..kc * NR].as_chunks::<NR>().0;
    let mut acc = [[T::ZERO; NR]; MR];
    for (a_p, b_p) in a_steps.iter().zip(b_steps) {
        for (acc_i, &a_ip) in acc.iter_mut().zip(a_p) {
            for (acc_ij, &b_pj) in acc_i.iter_mut().zip(b_p) {
                *acc_ij = *acc_ij + a_ip * b_pj;
            }
        }
    }
    assert!(mr <= MR);
    for (i, acc_i) in acc.iter().take(mr).enumerate() {
        let c_i = &mut c[i * rs..][..NR];
        for (c_ij, &ab) in c_i.iter_mut().zip(acc_i) {
            *c_ij = if beta == T::ZERO { alpha * ab } else { alpha * ab + beta * *c_ij };
        }
    }
}

/// f32: 4 x 8, eight 4-wide SSE2 registers of accumulators (16 exist).
impl MicroKernel<f32> for Portable<f32> {
    const MR: usize = 4;
    const NR: usize = 8;

    fn pack_a(self, a: MatRef<f32>, dst: &mut [f32]) {
        pack_panels::<f32, 4>(a, dst);
    }

    fn pack_b(self, b: MatRef<f32>, dst: &mut [f32]) {
        pack_panels::<f32, 8>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32], rs: usize) {
        tile_rows::<f32, 4, 8>(mr, kc, alpha, a, b, beta, c, rs);
    }
}

/// f64: 4 x 4, eight 2-wide SSE2 registers of accumulators.
impl MicroKernel<f64> for Portable<f64> {
    const MR: usize = 4;
    const NR: usize = 4;

    fn pack_a(self, a: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, 4>(a, dst);
    }

    fn pack_b(self, b: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, 4>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64], rs: usize) {
        tile_rows::<f64, 4, 4>(mr, kc, alpha, a, b, beta, c, rs);
    }
}

//! AVX2 + FMA microkernel: a 6 x 16 f32 tile in twelve 256-bit registers.
//!
//! ```text
//!              b~ row p:  [ b0: 8 floats ][ b1: 8 floats ]     2 loads
//!   a~[p*6 + 0] (bcast)   acc[0][0]        acc[0][1]
//!   a~[p*6 + 1] (bcast)   acc[1][0]        acc[1][1]
//!        ...                 ...              ...          12 FMAs
//!   a~[p*6 + 5] (bcast)   acc[5][0]        acc[5][1]
//! ```
//!
//! Why 6 x 16: a Zen 3 / Haswell core retires two 8-wide FMAs per cycle,
//! each with a 4-5 cycle latency, so at least 2 x 5 = 10 independent
//! accumulators are needed to keep both FMA units busy. 6 x 16 gives 12
//! accumulators + 2 registers of B + 1 broadcast = 15 of the 16 ymm
//! registers, and per step does 12 FMAs for 2 loads + 6 broadcasts, well
//! within the 2-3 loads per cycle the core can issue. (8 x 8 would need 8
//! broadcasts for only 8 FMAs.) The 16 columns are two full vectors of a
//! row of C, so a row-major C tile is updated with plain vector loads/stores.
//!
//! For f64 the same token runs the portable kernel compiled with AVX2 + FMA
//! enabled (see the end of the file).

#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_storeu_ps,
};

use super::kernel::{Kernel, MicroKernel};
use super::pack::pack_panels;
use super::portable;
use super::MatRef;

/// Proof that the CPU has AVX2 and FMA: only [`Avx2Fma::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma {
    _detected: (),
}

impl Avx2Fma {
    /// `Some` if the CPU running the program supports AVX2 and FMA.
    pub(crate) fn detect() -> Option<Self> {
        Kernel::Avx2Fma.available().then_some(Avx2Fma { _detected: () })
    }
}

const MR: usize = 6;
const NR: usize = 16;

/// The 6 x 16 f32 kernel: 12 ymm accumulators, two ymm of B~ and one
/// broadcast of A~ per rank-1 update. Its cache blocks come from `blocking.rs`
/// (on a 32 KiB L1d: `KC = 256`, a `256 x 16` B~ micro-panel of 16 KiB).
impl MicroKernel<f32> for Avx2Fma {
    const MR: usize = MR;
    const NR: usize = NR;

    fn pack_a(self, a: MatRef<f32>, dst: &mut [f32]) {
        pack_panels::<f32, MR>(a, dst);
    }

    fn pack_b(self, b: MatRef<f32>, dst: &mut [f32]) {
        pack_panels::<f32, NR>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32], rs: usize) {
        assert!((1..=MR).contains(&mr));
        assert!(a.len() >= kc * MR && b.len() >= kc * NR && c.len() >= (mr - 1) * rs + NR);
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        // SAFETY: `self` exists, so AVX2 and FMA was detected at run time; the
        // asserts above make every read of a, b and every read/write of the
        // mr rows of the tile in c fall inside the slices (see `kernel_6x16`).
        unsafe {
            match mr {
                1 => kernel_6x16::<1>(kc, alpha, a, b, beta, c, rs),
                2 => kernel_6x16::<2>(kc, alpha, a, b, beta, c, rs),
                3 => kernel_6x16::<3>(kc, alpha, a, b, beta, c, rs),
                4 => kernel_6x16::<4>(kc, alpha, a, b, beta, c, rs),
                5 => kernel_6x16::<5>(kc, alpha, a, b, beta, c, rs),
                _ => kernel_6x16::<MR>(kc, alpha, a, b, beta, c, rs),
            }
        }
    }
}

/// `C <- alpha * a~ b~ + beta * C` on the top `ROWS` rows of a 6 x 16
/// tile (`ROWS = 6` but for the short last micro-panel of A~).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `ROWS <= 6`; `a` must be valid for
/// `kc * 6` reads, `b` for `kc * 16` reads, and `c` for reads and writes of
/// `c[i * rs + j]`, `i < ROWS`, `j < 16`.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16<const ROWS: usize>(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, rs: usize) {
    // acc[i][h] holds tile row i, columns 8h .. 8h + 8.
    let mut acc: [[__m256; 2]; ROWS] = [[_mm256_setzero_ps(); 2]; ROWS];
    for p in 0..kc {
        // SAFETY: p < kc, so b + p*16 .. + 16 and a + p*6 .. + 6 are in
        // bounds (caller's contract).
        let (b0, b1) = unsafe { (_mm256_loadu_ps(b.add(p * NR)), _mm256_loadu_ps(b.add(p * NR + 8))) };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, i < ROWS <= 6.
            let a_ip = unsafe { _mm256_broadcast_ss(&*a.add(p * MR + i)) };
            acc_i[0] = _mm256_fmadd_ps(a_ip, b0, acc_i[0]);
            acc_i[1] = _mm256_fmadd_ps(a_ip, b1, acc_i[1]);
        }
    }

    // C <- alpha AB + beta C, rounded as (alpha * ab) + (beta * c) like the
    // scalar edge path, so a tile gives the same bits on either path.
    let alpha = _mm256_set1_ps(alpha);
    for (i, acc_i) in acc.iter().enumerate() {
        for (h, &acc_ih) in acc_i.iter().enumerate() {
            let c_ih = c.wrapping_add(i * rs + 8 * h);
            let ab = _mm256_mul_ps(alpha, acc_ih);
            let out = if beta == 0.0 {
                ab
            } else {
                // SAFETY: c + i*rs + 8h .. + 8 is inside the tile (caller's contract).
                let c_old = unsafe { _mm256_loadu_ps(c_ih) };
                _mm256_add_ps(ab, _mm256_mul_ps(_mm256_set1_ps(beta), c_old))
            };
            // SAFETY: c + i*rs + 8h .. + 8 is inside the tile (caller's
            // contract), whether or not it was read above.
            unsafe { _mm256_storeu_ps(c_ih, out) };
        }
    }
}

const MR_F64: usize = 6;
const NR_F64: usize = 8;

/// f64: the portable kernel, compiled with AVX2 + FMA so LLVM vectorises it
/// with 4-wide registers; blocked by the same rules as f32, with 8-byte
/// elements.
impl MicroKernel<f64> for Avx2Fma {
    const MR: usize = MR_F64;
    const NR: usize = NR_F64;

    fn pack_a(self, a: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, MR_F64>(a, dst);
    }

    fn pack_b(self, b: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, NR_F64>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64], rs: usize) {
        // SAFETY: `self` exists, so AVX2 and FMA were detected at run time.
        // The kernel itself is safe code (slices, bounds-checked).
        unsafe { portable_f64_avx2(mr, kc, alpha, a, b, beta, c, rs) }
    }
}

/// The portable kernel with AVX2 + FMA enabled for code generation.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn portable_f64_avx2(mr: usize, kc: usize, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64], rs: usize) {
    portable::tile_rows::<f64, MR_F64, NR_F64>(mr, kc, alpha, a, b, beta, c, rs);
}

//! AVX-512F microkernel: a 12 x 32 f32 tile in twenty-four 512-bit registers.
//!
//! The AVX2 kernel's layout (see `avx2.rs`) with registers twice as wide and
//! twice as many of them: per step `p`, two loads of B~ (32 floats), twelve
//! broadcasts of A~ and 24 FMAs, using 24 + 2 + 1 = 27 of the 32 zmm
//! registers. Two 16-wide FMA units with 4-cycle latency need at least 8
//! independent accumulators; 24 also hides the broadcast loads.
//!
//! It is selected only when `avx512f` is detected at run time; its tests
//! compare it with the naive kernel wherever the CPU has it (and skip, saying
//! so, where it does not).
//!
//! For f64 the same token runs the portable kernel compiled with AVX-512F.

#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::direct::{DirectPanel, Masked, SEGMENT};
use super::kernel::{DirectTile, Kernel, MicroKernel};
use super::pack::pack_panels;
use super::portable;
use super::MatRef;
use crate::kernels::transpose::registers_16x16;

/// Proof that the CPU has AVX-512F: only [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _detected: (),
}

impl Avx512 {
    /// `Some` if the CPU running the program supports AVX-512F.
    pub(crate) fn detect() -> Option<Self> {
        Kernel::Avx512.available().then_some(Avx512 { _detected: () })
    }
}

const MR: usize = 12;
const NR: usize = 32;

/// How many rank-1 updates ahead the packed kernel asks for its B~ rows (8
/// rows, 1 KiB). With the largest `KC` (512, on a core with a 2 MiB L2) the
/// 64 KiB B~ micro-panel does not fit in L1 and comes from L2 for every A~
/// micro-panel, and the hardware prefetcher alone left the kernel waiting on
/// it. On the Intel Xeon (model 167), `ddpm bench` alternated five times
/// with the kernel before: 1024^3 on two threads 251.8-263.7 -> 262.4-271.5
/// GFLOP/s, 512^3 245.0-251.5 -> 253.2-260.3, the convolutions and the UNet
/// steps unchanged; 4, 16 and 32 rows ahead measured as 8 did
/// (`examples/gemm_pass`). Not yet measured on the AMD EPYC, whose `KC =
/// 192` panel stays in L1, so there it only adds two prefetch instructions
/// to 24 FMAs.
const PREFETCH_STEPS: usize = 8;

/// `C <- alpha AB + beta C` for the accumulated tile `acc` (`ROWS` x 32),
/// rounded as `(alpha * ab) + (beta * c)`; with `beta == 0`, C is not read.
///
/// A macro rather than a function: a `#[target_feature]` function cannot be
/// forced inline, and a call that takes `acc` by reference puts the 24
/// accumulators on the stack (a 1.5 KiB array zeroed before the k loop,
/// stored after it and loaded back) once per tile, which costs most where a
/// tile is short (k = 144 in a 16-channel convolution): the quick UNet's 3x3
/// convolutions ran 6% faster without it (sums of the eight shapes, nine
/// alternations of the two binaries, seven of them faster).
///
/// Expands to unsafe code: the CPU must support AVX-512F and `c` must be
/// valid for reads and writes of `c[i * rs + j]`, `i < ROWS`, `j < 32`.
macro_rules! store_tile {
    ($acc:expr, $alpha:expr, $beta:expr, $c:expr, $rs:expr) => {{
        let (alpha, beta, c, rs): (f32, f32, *mut f32, usize) = ($alpha, $beta, $c, $rs);
        let alpha_v = _mm512_set1_ps(alpha);
        for (i, acc_i) in $acc.iter().enumerate() {
            for (h, &acc_ih) in acc_i.iter().enumerate() {
                let c_ih = c.wrapping_add(i * rs + 16 * h);
                let ab = _mm512_mul_ps(alpha_v, acc_ih);
                let out = if beta == 0.0 { ab } else { _mm512_add_ps(ab, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(c_ih))) };
                _mm512_storeu_ps(c_ih, out);
            }
        }
    }};
}

/// The 12 x 32 kernel: 24 zmm accumulators. Its cache blocks come from
/// `blocking.rs`: with an L2 of 1 MiB or more `KC = 512` (a 64 KiB B~
/// micro-panel, streamed from L2).
impl MicroKernel<f32> for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const READS_UNPACKED: bool = true;

    fn pack_a(self, a: MatRef<f32>, dst: &mut [f32]) {
        let (rows, kc, rs) = (a.rows(), a.cols(), a.row_stride());
        // Micro-panels of twelve contiguous rows (A row-major) go through
        // registers; the others, and a last panel of fewer rows, element by
        // element.
        let full = if a.col_stride() == 1 && kc > 0 { rows / MR } else { 0 };
        let data = a.data();
        for (panel, out) in dst[..full * MR * kc].chunks_exact_mut(MR * kc).enumerate() {
            let first = panel * MR * rs;
            assert!(first + (MR - 1) * rs + kc <= data.len(), "pack_a: row {} of A ends past its data", panel * MR + MR - 1);
            let steps = kc / 16 * 16;
            for p0 in (0..steps).step_by(16) {
                // SAFETY: `self` exists, so AVX-512F was detected at run time.
                // Row i < 12 of the step reads data[first + i * rs + p0 ..][..16],
                // inside `data` by the assert above (p0 + 16 <= kc); the step
                // writes out[p0 * 12 ..][..192], inside the panel's 12 kc.
                unsafe { pack_a_16_steps(data.as_ptr().add(first + p0), rs, out.as_mut_ptr().add(p0 * MR)) };
            }
            for p in steps..kc {
                for (i, o) in out[p * MR..][..MR].iter_mut().enumerate() {
                    *o = data[first + i * rs + p];
                }
            }
        }
        if full * MR < rows {
            pack_panels::<f32, MR>(a.submatrix(full * MR, 0, rows - full * MR, kc), &mut dst[full * MR * kc..]);
        }
    }

    fn pack_b(self, b: MatRef<f32>, dst: &mut [f32]) {
        pack_panels::<f32, NR>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32], rs: usize) {
        assert!((1..=MR).contains(&mr));
        assert!(a.len() >= kc * MR && b.len() >= kc * NR && c.len() >= (mr - 1) * rs + NR);
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        // SAFETY: `self` exists, so AVX-512F was detected at run time; the
        // asserts above make every read of a, b and every read/write of the
        // mr rows of the tile in c fall inside the slices (see `kernel_12x32`).
        unsafe {
            match mr {
                1 => kernel_12x32::<1>(kc, alpha, a, b, beta, c, rs),
                2 => kernel_12x32::<2>(kc, alpha, a, b, beta, c, rs),
                3 => kernel_12x32::<3>(kc, alpha, a, b, beta, c, rs),
                4 => kernel_12x32::<4>(kc, alpha, a, b, beta, c, rs),
                5 => kernel_12x32::<5>(kc, alpha, a, b, beta, c, rs),
                6 => kernel_12x32::<6>(kc, alpha, a, b, beta, c, rs),
                7 => kernel_12x32::<7>(kc, alpha, a, b, beta, c, rs),
                8 => kernel_12x32::<8>(kc, alpha, a, b, beta, c, rs),
                9 => kernel_12x32::<9>(kc, alpha, a, b, beta, c, rs),
                10 => kernel_12x32::<10>(kc, alpha, a, b, beta, c, rs),
                11 => kernel_12x32::<11>(kc, alpha, a, b, beta, c, rs),
                _ => kernel_12x32::<MR>(kc, alpha, a, b, beta, c, rs),
            }
        }
    }

    fn direct_tile(self) -> Option<DirectTile<f32>> {
        Some(tile_rows_direct)
    }
}

/// Sixteen steps `p` of a 12-row A~ micro-panel: `out[q * 12 + i] =
/// a[i * rs + q]`, `i < 12`, `q < 16`. The twelve rows' runs of sixteen are
/// loaded whole, transposed in registers (four zero rows fill the 16 x 16
/// block) and each step's twelve values stored under a mask: 12 loads, 64
/// shuffles and 16 stores where element by element it is 192 loads and 192
/// stores. At 1024^3 on one thread packing A was 3.3% of the product's time
/// before (element by element), and this made it about a quarter faster: the
/// twelve rows are read from memory, which the shuffles do not change.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must be valid for reads of `a[i * rs
/// ..][..16]`, `i < 12`, and `out` for writes of `out[..192]`.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_16_steps(a: *const f32, rs: usize, out: *mut f32) {
    // SAFETY: rows i < 12 are in bounds by the caller's contract.
    let rows: [__m512; 16] = std::array::from_fn(|i| if i < MR { unsafe { _mm512_loadu_ps(a.add(i * rs)) } } else { _mm512_setzero_ps() });
    for (q, step) in registers_16x16(rows).iter().enumerate() {
        // SAFETY: lanes 0..12 of step q go to out[q * 12 ..][..12], inside
        // out[..192]; the masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(out.add(q * MR), STEP_LANES, *step) };
    }
}

/// The twelve lanes of a transposed step that hold A~'s rows.
const STEP_LANES: u16 = (1 << MR) - 1;

/// [`MicroKernel::tile_rows`] of the 12 x 32 kernel with the B~ micro-panel
/// read in place (see `direct.rs`): row `p` is the two runs
/// `base[rows[p] + segments[h] ..][..16]`, `h = 0, 1`, or with lane masks
/// those runs less the origin, only the lanes of `masks[p][h]`, zeros in
/// the others.
#[allow(clippy::too_many_arguments)]
fn tile_rows_direct(mr: usize, kc: usize, alpha: f32, a: &[f32], b: &DirectPanel<f32>, beta: f32, c: &mut [f32], rs: usize) {
    const _: () = assert!(NR == 2 * SEGMENT, "a direct panel row is two segments");
    assert!(Kernel::Avx512.available(), "the AVX-512 direct microkernel on a CPU without AVX-512F");
    assert!((1..=MR).contains(&mr));
    let (base, rows, segments, masked) = b.parts();
    assert!(a.len() >= kc * MR && rows.len() >= kc && c.len() >= (mr - 1) * rs + NR);
    assert!(b.in_bounds(), "a direct B~ panel reads past its base");
    let (a, c) = (a.as_ptr(), c.as_mut_ptr());
    macro_rules! rows_of {
        ($masked:literal, $origin:expr, $masks:expr) => {{
            let base = base.as_ptr().wrapping_sub($origin);
            // SAFETY: AVX-512F was detected (asserted above; the check is a
            // cached flag). Every read is inside `base`: without masks,
            // `in_bounds` bounds every `rows[p] + segments[h] + 16` by
            // `base.len()`; with them, it checks there is a mask for every
            // row, and each lane a mask sets lies between the origin and
            // `base.len()` past it, as the `MaskedRuns` that made the masks
            // promises (`in_bounds` checks that too in debug builds); the
            // lanes it clears are not read. The asserts above give `a` `kc *
            // 12` elements and `c` the `mr` rows of the tile (see
            // `kernel_12x32_direct`).
            unsafe {
                match mr {
                    1 => kernel_12x32_direct::<1, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    2 => kernel_12x32_direct::<2, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    3 => kernel_12x32_direct::<3, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    4 => kernel_12x32_direct::<4, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    5 => kernel_12x32_direct::<5, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    6 => kernel_12x32_direct::<6, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    7 => kernel_12x32_direct::<7, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    8 => kernel_12x32_direct::<8, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    9 => kernel_12x32_direct::<9, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    10 => kernel_12x32_direct::<10, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    11 => kernel_12x32_direct::<11, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                    _ => kernel_12x32_direct::<MR, $masked>(kc, alpha, a, base, rows, $masks, segments, beta, c, rs),
                }
            }
        }};
    }
    match masked {
        None => rows_of!(false, 0, &[]),
        Some(Masked { masks, origin }) => rows_of!(true, origin, masks),
    }
}

/// [`kernel_12x32`] with B~ row `p` loaded from `base + rows[p] +
/// segments[h]`, `h = 0, 1`, instead of a packed panel; with `MASKED`, only
/// the lanes set in `masks[p][h]`, zeros in the others (a zero-masked load,
/// which reads nothing in the lanes it leaves out). The same FMAs in the
/// same order as on a packed panel holding those values, so the same bits.
///
/// # Safety
/// The CPU must support AVX-512F; `ROWS <= 12`; `rows` must have `kc`
/// entries and, with `MASKED`, `masks` too; every lane read (all 16 of
/// `base + rows[p] + segments[h]` without `MASKED`, those `masks[p][h]` sets
/// with it) must be valid for reads; `a` must be valid for `kc * 12` reads
/// and `c` for reads and writes of `c[i * rs + j]`, `i < ROWS`, `j < 32`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32_direct<const ROWS: usize, const MASKED: bool>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    base: *const f32,
    rows: &[usize],
    masks: &[[u16; 2]],
    segments: [usize; 2],
    beta: f32,
    c: *mut f32,
    rs: usize,
) {
    let mut acc: [[__m512; 2]; ROWS] = [[_mm512_setzero_ps(); 2]; ROWS];
    let (b0_base, b1_base) = (base.wrapping_add(segments[0]), base.wrapping_add(segments[1]));
    for (p, &row) in rows[..kc].iter().enumerate() {
        // SAFETY: the lanes read at row + segments[h] are valid (caller's
        // contract), and p < kc keeps a + p*12 .. + 12 and masks[p] in bounds.
        let (b0, b1) = unsafe {
            if MASKED {
                let [m0, m1] = *masks.get_unchecked(p);
                // The run may start before the image (its first lanes
                // masked off), so its address is wrapping arithmetic.
                (_mm512_maskz_loadu_ps(m0, b0_base.wrapping_add(row)), _mm512_maskz_loadu_ps(m1, b1_base.wrapping_add(row)))
            } else {
                (_mm512_loadu_ps(b0_base.wrapping_add(row)), _mm512_loadu_ps(b1_base.wrapping_add(row)))
            }
        };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, i < ROWS <= 12.
            let a_ip = _mm512_set1_ps(unsafe { *a.add(p * MR + i) });
            acc_i[0] = _mm512_fmadd_ps(a_ip, b0, acc_i[0]);
            acc_i[1] = _mm512_fmadd_ps(a_ip, b1, acc_i[1]);
        }
    }
    // SAFETY: the tile of c is the caller's contract, as in `kernel_12x32`
    // (the loads and stores of `store_tile!`).
    unsafe { store_tile!(acc, alpha, beta, c, rs) };
}

/// `C <- alpha * a~ b~ + beta * C` on the top `ROWS` rows of a 12 x 32
/// tile (`ROWS = 12` but for the short last micro-panel of A~).
///
/// # Safety
/// The CPU must support AVX-512F; `ROWS <= 12`; `a` must be valid for
/// `kc * 12` reads, `b` for `kc * 32` reads, and `c` for reads and writes
/// of `c[i * rs + j]`, `i < ROWS`, `j < 32`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_12x32<const ROWS: usize>(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, rs: usize) {
    // acc[i][h] holds tile row i, columns 16h .. 16h + 16.
    let mut acc: [[__m512; 2]; ROWS] = [[_mm512_setzero_ps(); 2]; ROWS];
    // The tile's rows of C on their way to L1 while the k loop runs: with
    // beta = 1 (every kc block after the first) `store_tile!` reads them.
    // Each row is 128 bytes, two or three cache lines. At 1024^3 on one
    // thread, 1.1% faster (eight pairs of runs, session 40).
    for i in 0..ROWS {
        let row = c.wrapping_add(i * rs).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(127));
    }
    for p in 0..kc {
        // The B~ row PREFETCH_STEPS ahead (its two cache lines) on its way
        // to L1; past the panel's end it names some other line, harmlessly.
        let ahead = b.wrapping_add((p + PREFETCH_STEPS) * NR).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(ahead);
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        // SAFETY: p < kc, so b + p*32 .. + 32 and a + p*12 .. + 12 are in
        // bounds (caller's contract).
        let (b0, b1) = unsafe { (_mm512_loadu_ps(b.add(p * NR)), _mm512_loadu_ps(b.add(p * NR + 16))) };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, i < ROWS <= 12.
            let a_ip = _mm512_set1_ps(unsafe { *a.add(p * MR + i) });
            acc_i[0] = _mm512_fmadd_ps(a_ip, b0, acc_i[0]);
            acc_i[1] = _mm512_fmadd_ps(a_ip, b1, acc_i[1]);
        }
    }

    // SAFETY: the tile of c is the caller's contract (the loads and stores
    // of `store_tile!`).
    unsafe { store_tile!(acc, alpha, beta, c, rs) };
}

const MR_F64: usize = 8;
const NR_F64: usize = 16;

/// f64: the portable kernel compiled with AVX-512F (8-wide registers),
/// 8 x 16 tile = 16 zmm accumulators, blocked by the same rules as f32.
impl MicroKernel<f64> for Avx512 {
    const MR: usize = MR_F64;
    const NR: usize = NR_F64;

    fn pack_a(self, a: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, MR_F64>(a, dst);
    }

    fn pack_b(self, b: MatRef<f64>, dst: &mut [f64]) {
        pack_panels::<f64, NR_F64>(b.t(), dst);
    }

    fn tile_rows(self, mr: usize, kc: usize, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64], rs: usize) {
        // SAFETY: `self` exists, so AVX-512F was detected at run time. The
        // kernel itself is safe code (slices, bounds-checked).
        unsafe { portable_f64_avx512(mr, kc, alpha, a, b, beta, c, rs) }
    }
}

/// The portable kernel with AVX-512F enabled for code generation.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn portable_f64_avx512(mr: usize, kc: usize, alpha: f64, a: &[f64], b: &[f64], beta: f64, c: &mut [f64], rs: usize) {
    portable::tile_rows::<f64, MR_F64, NR_F64>(mr, kc, alpha, a, b, beta, c, rs);
}

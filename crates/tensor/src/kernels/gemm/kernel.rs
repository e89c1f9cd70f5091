//! The microkernel interface and the run-time choice of microkernel.
//!
//! A microkernel computes one `MR x NR` tile of C from an `MR x kc` A~
//! micro-panel and a `kc x NR` B~ micro-panel, keeping the whole tile in
//! registers for the `kc` rank-1 updates. Everything else in the GEMM exists
//! to feed it from cache. Each instruction set gets its own implementation
//! of [`MicroKernel`]; [`Kernel`] names them and [`Kernel::best`] picks the
//! fastest one the CPU running the program supports.

use std::sync::OnceLock;

use super::direct::DirectPanel;
use super::{GemmScalar, MatRef};

#[cfg(test)]
thread_local! {
    /// The kernel [`Kernel::best`] names on this thread, when set, so the tests
    /// run the code above the GEMM (the convolutions' packing and their paths
    /// that only another CPU would take) on every kernel this CPU has; see
    /// [`with_best`].
    static BEST_OVERRIDE: std::cell::Cell<Option<Kernel>> = const { std::cell::Cell::new(None) };
}

/// Runs `work` as if `kernel` were the best this CPU has: in a pool of one
/// thread (rayon's tasks would run on threads without the override), with
/// [`Kernel::best`] returning `kernel` there.
///
/// # Panics
/// If this CPU does not have `kernel`.
#[cfg(test)]
pub(crate) fn with_best<R: Send>(kernel: Kernel, work: impl FnOnce() -> R + Send) -> R {
    assert!(kernel.available(), "the {} kernel is not available on this CPU", kernel.name());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a pool of one thread");
    pool.install(|| {
        BEST_OVERRIDE.set(Some(kernel));
        let result = work();
        BEST_OVERRIDE.set(None);
        result
    })
}

/// The microkernels, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// x86-64 AVX-512F: 12 x 32 f32 tile in 24 zmm accumulators.
    Avx512,
    /// x86-64 AVX2 + FMA: 6 x 16 f32 tile in 12 ymm accumulators.
    Avx2Fma,
    /// Plain Rust that LLVM auto-vectorises for the target's baseline SIMD.
    Portable,
}

impl Kernel {
    /// All kernels, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2Fma, Kernel::Portable];

    /// True if the CPU running the program has the instructions this kernel needs.
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma | Kernel::Avx512 => false,
        }
    }

    /// The fastest available kernel, detected once and cached.
    pub fn best() -> Kernel {
        #[cfg(test)]
        if let Some(kernel) = BEST_OVERRIDE.get() {
            return kernel;
        }
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Kernel::ALL.into_iter().find(|k| k.available()).unwrap_or(Kernel::Portable))
    }

    /// Short name for reports: `"avx512f"`, `"avx2+fma"`, `"portable"`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512f",
            Kernel::Avx2Fma => "avx2+fma",
            Kernel::Portable => "portable",
        }
    }
}

/// One microkernel for element type `T`, with its tile size (the cache blocks
/// are chosen at run time, see `blocking.rs`).
///
/// Implementors are zero-sized tokens. A SIMD token can only be constructed
/// after run-time detection found its instructions, so holding one is the
/// proof that calling its `#[target_feature]` code is sound.
pub(crate) trait MicroKernel<T: GemmScalar>: Copy + Send + Sync {
    /// Rows of the register tile (rows of an A~ micro-panel).
    const MR: usize;
    /// Columns of the register tile (columns of a B~ micro-panel).
    const NR: usize;
    /// Whether `unpacked::gemm_small` runs this kernel's tile on `T` (small
    /// products then skip packing, see `unpacked.rs`).
    const READS_UNPACKED: bool = false;

    /// Packs the `mc x kc` block `a` into `MR`-row micro-panels (see `pack.rs`).
    fn pack_a(self, a: MatRef<T>, dst: &mut [T]);

    /// Packs the `kc x nc` block `b` into `NR`-column micro-panels.
    fn pack_b(self, b: MatRef<T>, dst: &mut [T]);

    /// The microkernel proper: `C <- alpha * a~ b~ + beta * C` on the top
    /// `mr` rows (`1 <= mr <= MR`) of a full-width tile whose columns are
    /// contiguous. `a~` is an `MR x kc` packed micro-panel (rows past `mr`
    /// are padding and may be skipped), `b~` is `kc x NR` packed, and tile
    /// element `(i, j)` is `c[i * rs + j]`. With `beta == 0`, C is not read.
    ///
    /// # Panics
    /// If `mr` is 0 or above `MR`, or if `a`, `b` or `c` is too short for
    /// `kc`, `MR`, `NR`, `mr` and `rs`.
    #[allow(clippy::too_many_arguments)]
    fn tile_rows(self, mr: usize, kc: usize, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T], rs: usize);

    /// The microkernel's direct form, if it has one: [`tile_rows`](MicroKernel::tile_rows)
    /// with the B~ micro-panel read in place from a [`DirectPanel`] (see
    /// `direct.rs`), for kernels with `NR = 2 * SEGMENT`. `None` for kernels
    /// that only read packed panels; the five loops then pack.
    fn direct_tile(self) -> Option<DirectTile<T>> {
        None
    }
}

/// A microkernel in direct form: `(mr, kc, alpha, a~, b, beta, c, rs)` as in
/// [`MicroKernel::tile_rows`], B~ read from `b`.
pub(crate) type DirectTile<T> = fn(usize, usize, T, &[T], &DirectPanel<T>, T, &mut [T], usize);

/// Largest `MR * NR` of any kernel: the stack buffer for edge tiles.
const MAX_TILE: usize = 12 * 32;

/// Computes the `mr x nr` tile `C <- alpha * a~ b~ + beta * C` at the start
/// of `c`, with strides `(rs, cs)`, for any `mr <= MR`, `nr <= NR`.
///
/// Full-width tiles with contiguous rows go straight to the microkernel,
/// which skips the padding rows of a short last A~ micro-panel (for m = 32
/// and MR = 6, the last panel has 2 real rows: computing 6 would waste 11%
/// of the whole product). Narrow tiles at the right edge, and column-strided
/// C, let the kernel write its `mr x NR` product into a stack buffer, then
/// copy out the `mr x nr` part that exists. Both paths round identically:
/// `alpha * ab + beta * c`, no fused multiply-add.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn tile<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    kc: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
    (rs, cs): (usize, usize),
    (mr, nr): (usize, usize),
) {
    if nr == K::NR && cs == 1 {
        kernel.tile_rows(mr, kc, alpha, a, b, beta, c, rs);
        return;
    }
    let mut ab = [T::ZERO; MAX_TILE];
    let ab = &mut ab[..mr * K::NR];
    kernel.tile_rows(mr, kc, T::ONE, a, b, T::ZERO, ab, K::NR);
    copy_out(ab, K::NR, alpha, beta, c, (rs, cs), nr);
}

/// [`tile`] with the B~ micro-panel read in place by a direct microkernel
/// (`NR` = its width): the same edge handling, the same rounding.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn tile_direct<T: GemmScalar>(
    direct: DirectTile<T>,
    nr_full: usize,
    kc: usize,
    alpha: T,
    a: &[T],
    b: &DirectPanel<T>,
    beta: T,
    c: &mut [T],
    (rs, cs): (usize, usize),
    (mr, nr): (usize, usize),
) {
    if nr == nr_full && cs == 1 {
        direct(mr, kc, alpha, a, b, beta, c, rs);
        return;
    }
    let mut ab = [T::ZERO; MAX_TILE];
    let ab = &mut ab[..mr * nr_full];
    direct(mr, kc, T::ONE, a, b, T::ZERO, ab, nr_full);
    copy_out(ab, nr_full, alpha, beta, c, (rs, cs), nr);
}

/// `C <- alpha * ab + beta * C` on the first `nr` columns of each `width`-wide
/// row of the edge tile `ab`.
fn copy_out<T: GemmScalar>(ab: &[T], width: usize, alpha: T, beta: T, c: &mut [T], (rs, cs): (usize, usize), nr: usize) {
    for (i, ab_row) in ab.chunks_exact(width).enumerate() {
        for (j, &ab_ij) in ab_row[..nr].iter().enumerate() {
            let c_ij = &mut c[i * rs + j * cs];
            *c_ij = if beta == T::ZERO { alpha * ab_ij } else { alpha * ab_ij + beta * *c_ij };
        }
    }
}

//! General matrix multiply, `C <- alpha * A B + beta * C`, the BLIS way.
//!
//! Shapes: A is (m, k), B is (k, n), C is (m, n). Every operand is a strided
//! view ([`MatRef`], [`MatMut`]): element (i, j) is `data[i * rs + j * cs]`,
//! strides in elements. A transpose is the same data with `rs` and `cs`
//! swapped, so `A^T B` and `A B^T` (the backward pass of a matmul) never copy.
//!
//! # The BLIS model
//!
//! A GEMM does `2 m n k` flops on `m k + k n + m n` numbers, so each number is
//! reused about `n`, `m` or `k` times. The whole game is to serve those reuses
//! from the fastest memory that can hold them. BLIS (Van Zee & van de Geijn,
//! "BLIS: A Framework for Rapidly Instantiating BLAS Functionality", 2015;
//! Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication",
//! 2008) does it with five loops around a tiny *microkernel*:
//!
//! ```text
//! LOOP 5  for jc in 0..n step NC            B block  kc x nc  -> packed B~ (L3)
//! LOOP 4    for pc in 0..k step KC          pack B[pc.., jc..] -> B~
//! LOOP 3      for ic in 0..m step MC        pack A[ic.., pc..] -> A~ (L2)
//! LOOP 2        for jr in 0..nc step NR     B~ micro-panel kc x NR (L1)
//! LOOP 1          for ir in 0..mc step MR   A~ micro-panel MR x kc
//!                   microkernel: C[ir.., jr..] (MR x NR, in registers)
//!                                 += A~ micro-panel * B~ micro-panel
//! ```
//!
//! - The microkernel keeps an `MR x NR` tile of C in registers and does `kc`
//!   rank-1 updates: per step, `MR` numbers of A and `NR` of B feed
//!   `MR * NR` multiply-adds. That ratio is what makes it fast.
//! - *Packing* copies the current block of A (and of B) into the exact order
//!   the microkernel reads, contiguous and aligned, zero-padded to whole
//!   tiles (see `pack.rs`). Strides and transposes are dealt with here once,
//!   in `O(mk + kn)` work, never in the `O(mnk)` inner loop.
//! - The block sizes `MC, KC, NC` are chosen so that each packed block stays
//!   in the cache level that serves its reuse: a B~ micro-panel in L1, the A~
//!   block in L2, the B~ block in L3. They are computed at run time from the
//!   cache sizes of the CPU (`blocking.rs`), so one binary is tuned on every
//!   machine it runs on.
//!
//! # Threads
//!
//! LOOP 3 is split across threads: C is cut into horizontal bands of whole
//! `MR`-row micro-panels, a few per thread so that rayon's work stealing
//! balances them; each band packs its own A~ and all share the B~ of LOOP 4
//! (large B~ blocks are packed by all threads together). `k` is never split,
//! so each element of C is summed in the same order whatever the thread
//! count: the result is bit-identical with 1 or 32 threads. Small products
//! run on the calling thread; how small is measured on the machine by
//! [`calibrate_split`] (`split.rs`), since what a hand-off to another worker
//! costs differs between machines by more than the work it saves.
//! Scheduling is rayon's, so a GEMM inside a rayon task (say, per image of a
//! batch) nests without deadlock.
//!
//! A call from a thread outside rayon's pool has to hand its work to a
//! worker and sleep until it is done, which costs two thread wake-ups per
//! call. A program that multiplies small matrices from its main thread
//! should make that thread part of the pool, as `ddpm` does:
//! `rayon::ThreadPoolBuilder::new().use_current_thread().build_global()`.
//!
//! # A packed once, used many times
//!
//! A convolution multiplies the same weight matrix A by the im2col matrix of
//! every image of the batch, and LOOP 3 would pack that A afresh for each
//! image. At 7 x 7 pixels an image's product is so small that packing A is a
//! quarter of its time. [`PackedA`] packs A once, in the order LOOP 3 would
//! (every `kc` block of LOOP 4, each as whole `MR`-row micro-panels), and
//! [`gemm_prepacked`] runs the same five loops reading it in place: the same
//! numbers in the same order, so the result is bit-identical to [`gemm_with`].
//!
//! # B not packed at all
//!
//! The other way round, when `m` is small (a convolution with 16 or 32
//! output channels) each B~ micro-panel meets only two or three A~
//! micro-panels, and packing B costs about as much as the arithmetic. A B
//! whose micro-panel rows are runs of memory (conv's implicit im2col
//! matrices) can say where those runs are ([`DirectB`]); the AVX-512
//! microkernel then loads them in place, LOOP 5 and the packing of LOOP 4
//! disappear, and C is bit-identical to the packed path (`direct.rs`).
//!
//! # Nothing packed
//!
//! When B is small and a band of 12 rows of A fits in L1 (Winograd's
//! products, `k` and `n` of 32-128), neither is packed: [`gemm_unpacked`]
//! runs the same 12 x 32 AVX-512 tile over A through its strides and B's
//! rows in place, masking the columns past `n` (`unpacked.rs`). [`gemm`]
//! itself takes that path for an f32 product whose B (row-major) takes at
//! most an eighth of L2, with the rows of C split between threads as above:
//! at 128^3 packing B was a serial copy before the threads could start.
//! It sums `k` in the same `kc` blocks and rounds as the packed kernel
//! does, so C is bit-identical either way.
//!
//! # Files
//!
//! `view.rs` the strided views, `blocking.rs` the cache blocks, `pack.rs` packing (and [`PackB`] for a B
//! that packs itself, as conv's implicit im2col does), `direct.rs` a B read
//! in place instead of packed (for a small `m`), `unpacked.rs` small products
//! with nothing packed, `kernel.rs` the
//! microkernel trait and run-time selection, `avx2.rs` / `avx512.rs` /
//! `portable.rs` the microkernels, `scratch.rs` the reused packing buffers,
//! `naive.rs` the triple-loop oracle, `split.rs` the measured size from which
//! a product is split between threads, `tests.rs` the tests against it.

mod baseline;
mod blocking;
mod direct;
mod kernel;
mod naive;
mod pack;
mod portable;
pub(crate) mod scratch;
mod split;
mod unpacked;
mod view;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::fmt::Debug;
use std::ops::{Add, Mul, Sub};
use std::thread::LocalKey;

pub use baseline::matrixmultiply_sgemm;
pub(crate) use blocking::MAX_KC;
pub use blocking::{Blocking, CacheSizes};
pub use direct::{DirectB, MaskedRuns, SEGMENT};
#[cfg(test)]
pub(crate) use kernel::with_best;
pub use kernel::Kernel;
pub use naive::gemm_naive;
pub use split::{calibrate_split, split_min_mnk};
pub use unpacked::gemm_unpacked;
pub use view::{MatMut, MatRef};

use direct::{DirectPanel, DirectRows, Masked};
use kernel::{DirectTile, MicroKernel};
use portable::Portable;
use scratch::with_scratch;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types the GEMM supports: f32 (SIMD microkernels) and f64 (the
/// portable kernel, compiled for the detected instruction set).
///
/// Sealed: the microkernels exist only for these two.
pub trait GemmScalar:
    sealed::Sealed + Copy + Send + Sync + 'static + Debug + PartialEq + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self>
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// One half (the Winograd transforms of `conv/winograd.rs`).
    const HALF: Self;

    /// `x` rounded to this type: the other constants of those transforms.
    fn cast(x: f64) -> Self;

    /// Runs the five loops with the microkernel `kernel` for this type.
    #[doc(hidden)]
    fn gemm_dispatch(kernel: Kernel, threading: Threading, alpha: Self, a: MatRef<Self>, b: MatRef<Self>, beta: Self, c: MatMut<Self>);

    /// [`gemm_dispatch`](Self::gemm_dispatch) with B packed by `b` itself.
    #[doc(hidden)]
    fn gemm_dispatch_packed_b(
        kernel: Kernel,
        threading: Threading,
        alpha: Self,
        a: MatRef<Self>,
        b: &dyn PackB<Self>,
        beta: Self,
        c: MatMut<Self>,
    );

    /// [`gemm_dispatch_packed_b`](Self::gemm_dispatch_packed_b) with A packed
    /// beforehand by [`PackedA::new`].
    #[doc(hidden)]
    fn gemm_dispatch_prepacked(threading: Threading, alpha: Self, a: &PackedA<Self>, b: &dyn PackB<Self>, beta: Self, c: MatMut<Self>);

    /// Packs all of `a` for `kernel` (see [`PackedA::new`]).
    #[doc(hidden)]
    fn pack_a_dispatch(kernel: Kernel, a: MatRef<Self>) -> PackedA<Self>;

    /// This thread's pool of scratch buffers (see `scratch.rs`).
    #[doc(hidden)]
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl GemmScalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;

    #[inline(always)]
    fn cast(x: f64) -> f32 {
        x as f32
    }

    fn gemm_dispatch(kernel: Kernel, threading: Threading, alpha: f32, a: MatRef<f32>, b: MatRef<f32>, beta: f32, c: MatMut<f32>) {
        dispatch(kernel, threading, alpha, ASource::Stored(a), BSource::Stored(b), beta, c);
    }

    fn gemm_dispatch_packed_b(
        kernel: Kernel,
        threading: Threading,
        alpha: f32,
        a: MatRef<f32>,
        b: &dyn PackB<f32>,
        beta: f32,
        c: MatMut<f32>,
    ) {
        dispatch(kernel, threading, alpha, ASource::Stored(a), BSource::Packer(b), beta, c);
    }

    fn gemm_dispatch_prepacked(threading: Threading, alpha: f32, a: &PackedA<f32>, b: &dyn PackB<f32>, beta: f32, c: MatMut<f32>) {
        dispatch(a.kernel, threading, alpha, ASource::Packed(a), BSource::Packer(b), beta, c);
    }

    fn pack_a_dispatch(kernel: Kernel, a: MatRef<f32>) -> PackedA<f32> {
        dispatch_pack_a(kernel, a)
    }

    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<f32>>>> {
        &SCRATCH_F32
    }
}

impl GemmScalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const HALF: Self = 0.5;

    #[inline(always)]
    fn cast(x: f64) -> f64 {
        x
    }

    fn gemm_dispatch(kernel: Kernel, threading: Threading, alpha: f64, a: MatRef<f64>, b: MatRef<f64>, beta: f64, c: MatMut<f64>) {
        dispatch(kernel, threading, alpha, ASource::Stored(a), BSource::Stored(b), beta, c);
    }

    fn gemm_dispatch_packed_b(
        kernel: Kernel,
        threading: Threading,
        alpha: f64,
        a: MatRef<f64>,
        b: &dyn PackB<f64>,
        beta: f64,
        c: MatMut<f64>,
    ) {
        dispatch(kernel, threading, alpha, ASource::Stored(a), BSource::Packer(b), beta, c);
    }

    fn gemm_dispatch_prepacked(threading: Threading, alpha: f64, a: &PackedA<f64>, b: &dyn PackB<f64>, beta: f64, c: MatMut<f64>) {
        dispatch(a.kernel, threading, alpha, ASource::Packed(a), BSource::Packer(b), beta, c);
    }

    fn pack_a_dispatch(kernel: Kernel, a: MatRef<f64>) -> PackedA<f64> {
        dispatch_pack_a(kernel, a)
    }

    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<f64>>>> {
        &SCRATCH_F64
    }
}

/// Thread policy of one GEMM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// Everything on the calling thread.
    Single,
    /// Bands of C on rayon's pool (the current one, if called from inside
    /// rayon), when the product is large enough to pay for it (see
    /// [`calibrate_split`]).
    Rayon,
    /// Bands of C on rayon's pool whatever the size of the product: for
    /// measuring what a split costs, and for tests.
    Split,
}

/// `C <- alpha * A B + beta * C` with the fastest kernel and rayon threads.
///
/// A is (m, k), B is (k, n), C is (m, n), all strided views. With
/// `beta == 0`, C is only written: NaN or garbage in it does not leak.
///
/// # Panics
/// If the shapes of the views do not match (callers check shapes first and
/// return their own errors).
pub fn gemm<T: GemmScalar>(alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, c: MatMut<T>) {
    gemm_with(Kernel::best(), Threading::Rayon, alpha, a, b, beta, c);
}

/// [`gemm`] with a chosen microkernel and thread policy, for tests and benches.
///
/// # Panics
/// If the shapes of the views do not match, or if `kernel` is not
/// [`available`](Kernel::available) on this CPU.
pub fn gemm_with<T: GemmScalar>(kernel: Kernel, threading: Threading, alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, c: MatMut<T>) {
    assert_shapes("gemm", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    assert!(kernel.available(), "gemm: the {} kernel is not available on this CPU", kernel.name());
    T::gemm_dispatch(kernel, threading, alpha, a, b, beta, c);
}

/// A B operand that packs itself: the five loops never read B, they only
/// ask for B~ micro-panels of one `kc x nc` block at a time (LOOP 4). So B
/// need not exist in memory at all. Conv's implicit im2col matrix is the
/// example: its entries are read from the image while packing, and the
/// im2col matrix is never stored.
pub trait PackB<T>: Sync {
    /// Rows of B (`k` of the product).
    fn rows(&self) -> usize;

    /// Columns of B (`n` of the product).
    fn cols(&self) -> usize;

    /// Packs the block of rows `pc .. pc + kc` and columns `jc .. jc + nc`
    /// into `nc.div_ceil(nr)` micro-panels of `kc x nr`, one after the other:
    /// `dst[panel * kc * nr + p * nr + j] = B[pc + p, jc + panel * nr + j]`,
    /// and zero where that column is past `jc + nc` (see `pack.rs`). The
    /// five loops ask for `kc <= MAX_KC` (512) rows at a time.
    #[allow(clippy::too_many_arguments)]
    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]);

    /// The same B as a [`DirectB`], read in place instead of packed when the
    /// product is small enough for that to pay (see `direct.rs`); `None` if
    /// its micro-panel rows are not runs of memory.
    fn direct(&self) -> Option<&dyn DirectB<T>> {
        None
    }
}

/// [`gemm_with`] where B is not a stored matrix but a [`PackB`].
///
/// C must have disjoint rows (row-major, say): the transpose trick that
/// handles a column-major C needs B as a view.
///
/// # Panics
/// If the shapes do not match, if `kernel` is not available, or if C's rows
/// are not disjoint.
pub fn gemm_packed_b<T: GemmScalar>(kernel: Kernel, threading: Threading, alpha: T, a: MatRef<T>, b: &dyn PackB<T>, beta: T, c: MatMut<T>) {
    assert_shapes("gemm_packed_b", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    assert!(c.rows_disjoint(), "gemm_packed_b: C needs disjoint rows");
    assert!(kernel.available(), "gemm: the {} kernel is not available on this CPU", kernel.name());
    T::gemm_dispatch_packed_b(kernel, threading, alpha, a, b, beta, c);
}

/// An A operand packed once, for a product repeated with many Bs (a
/// convolution's weight against each image): the A~ micro-panels of LOOP 3
/// for every `kc` block of LOOP 4, one block after the other. Packed for one
/// microkernel and this CPU's cache blocks; [`gemm_prepacked`] runs with the
/// same kernel.
#[derive(Clone, Debug)]
pub struct PackedA<T> {
    kernel: Kernel,
    /// Rows `m` and columns `k` of A.
    rows: usize,
    cols: usize,
    /// The `kc` of LOOP 4 it was packed for (every block but the last).
    kc: usize,
    /// `MR` of the kernel: rows of one micro-panel.
    mr: usize,
    /// True if the kernel has a direct form (see `direct.rs`).
    direct: bool,
    /// Block `pc` (`kc` columns from column `pc`) starts at `panels * mr * pc`
    /// and holds `panels = rows.div_ceil(mr)` micro-panels of `mr x kc`.
    data: Vec<T>,
}

impl<T: GemmScalar> PackedA<T> {
    /// Packs all of `a` (m, k) for `kernel`.
    ///
    /// # Panics
    /// If `kernel` is not [`available`](Kernel::available) on this CPU.
    #[must_use]
    pub fn new(kernel: Kernel, a: MatRef<T>) -> Self {
        assert!(kernel.available(), "PackedA: the {} kernel is not available on this CPU", kernel.name());
        T::pack_a_dispatch(kernel, a)
    }

    /// Rows of A (`m` of the product).
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of A (`k` of the product).
    #[must_use]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// True if [`gemm_prepacked`] with this A reads a [`PackB`] that has a
    /// [`DirectB`] form in place rather than packing it (see `direct.rs`).
    #[must_use]
    pub fn reads_b_in_place(&self) -> bool {
        self.direct && self.rows <= DIRECT_MAX_M
    }

    /// The micro-panels of the `kc`-column block at column `pc`.
    fn block(&self, pc: usize, kc: usize) -> &[T] {
        let panel_rows = self.rows.div_ceil(self.mr) * self.mr;
        &self.data[panel_rows * pc..panel_rows * (pc + kc)]
    }
}

/// [`gemm_packed_b`] with A packed beforehand: `C <- alpha * A B + beta * C`
/// with the kernel `a` was packed for. Bit-identical to [`gemm_with`] on the
/// same operands (the same packed numbers meet in the same order).
///
/// # Panics
/// If the shapes do not match, if C's rows are not disjoint, or if the CPU's
/// cache blocks are not the ones `a` was packed for.
pub fn gemm_prepacked<T: GemmScalar>(threading: Threading, alpha: T, a: &PackedA<T>, b: &dyn PackB<T>, beta: T, c: MatMut<T>) {
    assert_shapes("gemm_prepacked", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    assert!(c.rows_disjoint(), "gemm_prepacked: C needs disjoint rows");
    T::gemm_dispatch_prepacked(threading, alpha, a, b, beta, c);
}

/// B as the five loops see it: a stored view, packed by the microkernel's
/// own `pack_b`, or a [`PackB`] that packs itself.
#[derive(Clone, Copy)]
enum BSource<'a, T> {
    Stored(MatRef<'a, T>),
    Packer(&'a dyn PackB<T>),
}

impl<T: GemmScalar> BSource<'_, T> {
    fn rows(&self) -> usize {
        match self {
            BSource::Stored(b) => b.rows(),
            BSource::Packer(b) => b.rows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            BSource::Stored(b) => b.cols(),
            BSource::Packer(b) => b.cols(),
        }
    }

    /// Packs the `kc x nc` block at `(pc, jc)` into `K::NR`-column micro-panels.
    #[allow(clippy::too_many_arguments)]
    fn pack<K: MicroKernel<T>>(&self, kernel: K, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [T]) {
        match self {
            BSource::Stored(b) => kernel.pack_b(b.submatrix(pc, jc, kc, nc), dst),
            BSource::Packer(b) => b.pack_b(pc, kc, jc, nc, K::NR, dst),
        }
    }
}

/// A as the five loops see it: a stored view, packed by LOOP 3 block by
/// block, or a [`PackedA`] packed beforehand.
#[derive(Clone, Copy)]
enum ASource<'a, T> {
    Stored(MatRef<'a, T>),
    Packed(&'a PackedA<T>),
}

impl<'a, T: GemmScalar> ASource<'a, T> {
    fn rows(&self) -> usize {
        match self {
            ASource::Stored(a) => a.rows(),
            ASource::Packed(a) => a.rows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            ASource::Stored(a) => a.cols(),
            ASource::Packed(a) => a.cols(),
        }
    }

    /// The `kc` columns from column `pc`, all rows.
    fn block(&self, pc: usize, kc: usize) -> ABlock<'a, T> {
        match *self {
            ASource::Stored(a) => ABlock::Stored(a.submatrix(0, pc, a.rows(), kc)),
            ASource::Packed(a) => ABlock::Packed { panels: a.block(pc, kc), rows: a.rows(), kc },
        }
    }
}

/// One `kc`-column block of A for LOOP 3: a view to pack, or its micro-panels.
#[derive(Clone, Copy)]
enum ABlock<'a, T> {
    Stored(MatRef<'a, T>),
    /// `rows.div_ceil(MR)` micro-panels of `MR x kc`.
    Packed {
        panels: &'a [T],
        rows: usize,
        kc: usize,
    },
}

impl<T: GemmScalar> ABlock<'_, T> {
    /// Rows `0..row` and `row..`; `row` is a multiple of `mr` (or all rows).
    fn split_at_row(self, row: usize, mr: usize) -> (Self, Self) {
        match self {
            ABlock::Stored(a) => {
                let (top, bottom) = a.split_at_row(row);
                (ABlock::Stored(top), ABlock::Stored(bottom))
            }
            ABlock::Packed { panels, rows, kc } => {
                debug_assert!(row.is_multiple_of(mr) || row == rows);
                let (top, bottom) = panels.split_at((row.div_ceil(mr) * mr * kc).min(panels.len()));
                (ABlock::Packed { panels: top, rows: row, kc }, ABlock::Packed { panels: bottom, rows: rows - row, kc })
            }
        }
    }
}

/// Panics with the three shapes unless A is (m, k), B is (k, n), C is (m, n).
/// `a`, `b`, `c` are the (rows, columns) of A, B, C, however each is stored.
pub(crate) fn assert_shapes(op: &str, a: (usize, usize), b: (usize, usize), c: (usize, usize)) {
    let ((a_rows, a_cols), (b_rows, b_cols), (c_rows, c_cols)) = (a, b, c);
    assert!(
        a_cols == b_rows && a_rows == c_rows && b_cols == c_cols,
        "{op}: A is {a_rows}x{a_cols}, B is {b_rows}x{b_cols}, C is {c_rows}x{c_cols}; need A (m, k), B (k, n), C (m, n)"
    );
}

/// Runs the five loops with the microkernel token for `kernel`.
#[cfg(target_arch = "x86_64")]
fn dispatch<T: GemmScalar>(kernel: Kernel, threading: Threading, alpha: T, a: ASource<T>, b: BSource<T>, beta: T, c: MatMut<T>)
where
    Portable<T>: MicroKernel<T>,
    avx2::Avx2Fma: MicroKernel<T>,
    avx512::Avx512: MicroKernel<T>,
{
    const CHECKED: &str = "gemm_with checked Kernel::available";
    match kernel {
        Kernel::Portable => gemm_loops(Portable::new(), threading, alpha, a, b, beta, c),
        Kernel::Avx2Fma => {
            let token = avx2::Avx2Fma::detect().expect(CHECKED);
            gemm_loops(token, threading, alpha, a, b, beta, c);
        }
        Kernel::Avx512 => {
            let token = avx512::Avx512::detect().expect(CHECKED);
            gemm_loops(token, threading, alpha, a, b, beta, c);
        }
    }
}

/// Runs the five loops with the microkernel token for `kernel`.
#[cfg(not(target_arch = "x86_64"))]
fn dispatch<T: GemmScalar>(kernel: Kernel, threading: Threading, alpha: T, a: ASource<T>, b: BSource<T>, beta: T, c: MatMut<T>)
where
    Portable<T>: MicroKernel<T>,
{
    match kernel {
        Kernel::Portable => gemm_loops(Portable::new(), threading, alpha, a, b, beta, c),
        Kernel::Avx2Fma | Kernel::Avx512 => panic!("gemm: the {} kernel is not available on this CPU", kernel.name()),
    }
}

/// Packs all of A with the microkernel token for `kernel`.
#[cfg(target_arch = "x86_64")]
fn dispatch_pack_a<T: GemmScalar>(kernel: Kernel, a: MatRef<T>) -> PackedA<T>
where
    Portable<T>: MicroKernel<T>,
    avx2::Avx2Fma: MicroKernel<T>,
    avx512::Avx512: MicroKernel<T>,
{
    const CHECKED: &str = "PackedA::new checked Kernel::available";
    match kernel {
        Kernel::Portable => pack_all_of_a(Portable::new(), kernel, a),
        Kernel::Avx2Fma => pack_all_of_a(avx2::Avx2Fma::detect().expect(CHECKED), kernel, a),
        Kernel::Avx512 => pack_all_of_a(avx512::Avx512::detect().expect(CHECKED), kernel, a),
    }
}

/// Packs all of A with the microkernel token for `kernel`.
#[cfg(not(target_arch = "x86_64"))]
fn dispatch_pack_a<T: GemmScalar>(kernel: Kernel, a: MatRef<T>) -> PackedA<T>
where
    Portable<T>: MicroKernel<T>,
{
    match kernel {
        Kernel::Portable => pack_all_of_a(Portable::new(), kernel, a),
        Kernel::Avx2Fma | Kernel::Avx512 => panic!("PackedA: the {} kernel is not available on this CPU", kernel.name()),
    }
}

/// Every `kc` block of A packed as LOOP 3 would pack it (the blocks of
/// LOOP 4 as [`five_loops`] cuts them), one after the other.
fn pack_all_of_a<T: GemmScalar, K: MicroKernel<T>>(token: K, kernel: Kernel, a: MatRef<T>) -> PackedA<T> {
    let (m, k) = (a.rows(), a.cols());
    let kc_max = kc_block(k, blocks::<T, K>());
    let panel_rows = m.div_ceil(K::MR) * K::MR;
    let mut data = vec![T::ZERO; panel_rows * k];
    for pc in (0..k).step_by(kc_max.max(1)) {
        let kc = kc_max.min(k - pc);
        token.pack_a(a.submatrix(0, pc, m, kc), &mut data[panel_rows * pc..panel_rows * (pc + kc)]);
    }
    let direct = K::NR == 2 * SEGMENT && token.direct_tile().is_some();
    PackedA { kernel, rows: m, cols: k, kc: kc_max, mr: K::MR, direct, data }
}

/// A GEMM called from a rayon worker is split from `split::split_min_mnk`
/// multiply-adds on (measured, see `split.rs`). One called from outside the
/// pool (say, a thread of its own) is split from this many: it must hand the
/// work to a worker and sleep until it is done, two thread wake-ups, 10-30 us
/// together on the machines we measured.
const PARALLEL_MIN_MNK_OUTSIDE: usize = 112 * 112 * 112;

/// A product whose B takes at most `1 / UNPACKED_MAX_B_L2_SHARE` of L2 is
/// read unpacked, by kernels that can (`unpacked.rs`).
const UNPACKED_MAX_B_L2_SHARE: usize = 8;

/// Below this many elements (`kc * nc`) a B~ block is packed by one thread:
/// a quarter of a millisecond of copying is worth waking a second one for.
const PARALLEL_PACK_MIN: usize = 256 * 256;

/// Bands of C per thread in LOOP 3. More bands than threads let rayon
/// balance the load: a worker that wakes late, or shares its core with
/// another process, steals fewer bands instead of holding everyone up.
const BANDS_PER_THREAD: usize = 4;

/// The f32 cache blocks `kernel` uses on this CPU (for reports).
///
/// # Panics
/// If `kernel` is not [`available`](Kernel::available) on this CPU.
pub fn blocking_f32(kernel: Kernel) -> Blocking {
    fn of<K: MicroKernel<f32>>(_: K) -> Blocking {
        blocks::<f32, K>()
    }
    const CHECKED: &str = "blocking_f32: the kernel is not available on this CPU";
    match kernel {
        Kernel::Portable => of(Portable::<f32>::new()),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => of(avx2::Avx2Fma::detect().expect(CHECKED)),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => of(avx512::Avx512::detect().expect(CHECKED)),
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2Fma | Kernel::Avx512 => panic!("{CHECKED}"),
    }
}

/// The f32 GFLOP/s of `kernel`'s register tile by itself, on every thread of
/// the current rayon pool at once: each thread multiplies one packed A~
/// micro-panel (`MR x KC`) by one packed B~ micro-panel (`KC x NR`) into one
/// C tile (`beta = 1`), over and over, for about `seconds`, with this CPU's
/// `KC`. The panels never leave the thread's caches (the B~ micro-panel
/// stays in L2 where it is larger than L1), so this is the tile's ceiling:
/// between it and a whole product lie packing, the C tiles read and written
/// from memory, and the five loops (`benches/SPEED.md`, session 44).
///
/// # Panics
/// If `kernel` is not [`available`](Kernel::available) on this CPU.
#[must_use]
pub fn microkernel_gflops(kernel: Kernel, seconds: f64) -> f64 {
    fn of<K: MicroKernel<f32>>(kernel: K, seconds: f64) -> f64 {
        let kc = blocks::<f32, K>().kc;
        crate::kernels::peak::pool_gflops(seconds, (1 << 6, 1 << 30), |calls| std::hint::black_box(tile_alone(kernel, kc, calls)).0)
    }
    const CHECKED: &str = "microkernel_gflops: the kernel is not available on this CPU";
    match kernel {
        Kernel::Portable => of(Portable::<f32>::new(), seconds),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => of(avx2::Avx2Fma::detect().expect(CHECKED), seconds),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => of(avx512::Avx512::detect().expect(CHECKED), seconds),
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2Fma | Kernel::Avx512 => panic!("{CHECKED}"),
    }
}

/// [`microkernel_gflops`]'s loop on this thread: `calls` tiles of depth `kc`
/// from panels and a tile that start at 1e-3 everywhere, so each call adds
/// `kc x 1e-6` to every element of C (small enough to stay finite however
/// long it runs). Returns the flops and C's first element, which says how
/// many multiply-adds were done.
fn tile_alone<K: MicroKernel<f32>>(kernel: K, kc: usize, calls: usize) -> (f64, f32) {
    with_scratch(K::MR * kc + kc * K::NR + K::MR * K::NR, |buffer: &mut [f32]| {
        buffer.fill(1e-3);
        let (a, rest) = buffer.split_at_mut(K::MR * kc);
        let (b, c) = rest.split_at_mut(kc * K::NR);
        for _ in 0..calls {
            kernel.tile_rows(K::MR, kc, 1.0, a, b, 1.0, c, K::NR);
        }
        ((calls * 2 * K::MR * K::NR * kc) as f64, c[0])
    })
}

/// The caches the blocks are sized for: the CPU's, or in tests the ones a
/// test chose, to run every kernel under other machines' blocks.
fn caches() -> CacheSizes {
    #[cfg(test)]
    if let Some(caches) = tests::CACHES_OVERRIDE.get() {
        return caches;
    }
    CacheSizes::detect()
}

/// The cache blocks of kernel `K` on `T` for this CPU's caches.
fn blocks<T: GemmScalar, K: MicroKernel<T>>() -> Blocking {
    Blocking::for_caches(caches(), K::MR, K::NR, std::mem::size_of::<T>())
}

/// The `kc` of LOOP 4 for an inner dimension `k`: the five loops and
/// [`PackedA`] must cut A's columns at the same places.
fn kc_block(k: usize, blocking: Blocking) -> usize {
    even_block(k, blocking.kc, 1)
}

/// Splits `len` into equal blocks of at most `max` (a multiple of `unit`),
/// returning the block size. Equal blocks avoid a tiny last block: k = 288
/// with KC = 256 gives two blocks of 144, not 256 + 32.
fn even_block(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max).max(1);
    len.div_ceil(blocks).next_multiple_of(unit).min(max)
}

/// The five loops. Shapes are already checked.
fn gemm_loops<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    threading: Threading,
    alpha: T,
    a: ASource<T>,
    b: BSource<T>,
    beta: T,
    c: MatMut<T>,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == T::ZERO {
        scale(beta, c);
        return;
    }
    // Threads own bands of rows of C, which must be disjoint sub-slices. If
    // C's rows interleave in memory (column-major C), its columns do not:
    // compute C^T = B^T A^T instead.
    if !c.rows_disjoint() {
        let (ASource::Stored(a), BSource::Stored(b)) = (a, b) else {
            unreachable!("gemm_packed_b and gemm_prepacked checked that C has disjoint rows")
        };
        gemm_loops(kernel, threading, alpha, ASource::Stored(b.t()), BSource::Stored(a.t()), beta, c.t());
        return;
    }

    let blocking = blocks::<T, K>();
    let in_pool = rayon::current_thread_index().is_some();
    let parallel_min = if in_pool { split::split_min_mnk() } else { PARALLEL_MIN_MNK_OUTSIDE };
    let threads = match threading {
        Threading::Rayon if m * n * k >= parallel_min => rayon::current_num_threads().min(m.div_ceil(K::MR)),
        Threading::Split => rayon::current_num_threads().min(m.div_ceil(K::MR)),
        Threading::Rayon | Threading::Single => 1,
    };
    // Outside the pool, every rayon::join is a round trip through a condition
    // variable; inside, it is a push on a work-stealing deque. So enter the
    // pool once, here.
    let enter_pool = threads > 1 && !in_pool;
    if let Some((a, b)) = unpacked_operands::<T, K>(a, b, c.col_stride()) {
        in_pool_once(enter_pool, || {
            let ran = unpacked::gemm_small(alpha, a, b, beta, c, threads);
            assert!(ran, "gemm: {} reads small products unpacked, but declined", std::any::type_name::<K>());
        });
        return;
    }
    in_pool_once(enter_pool, || five_loops(kernel, blocking, threads, alpha, a, b, beta, c));
}

/// Runs `work` inside rayon's pool if `enter`, else right here.
fn in_pool_once(enter: bool, work: impl FnOnce() + Send) {
    if enter {
        rayon::scope(|_| work());
    } else {
        work();
    }
}

/// A and B as stored views, if the product is small enough to be read
/// unpacked (`unpacked.rs`): a kernel that can, B of at most
/// [`UNPACKED_MAX_B_L2_SHARE`] of L2, B's and C's columns contiguous.
fn unpacked_operands<'a, T: GemmScalar, K: MicroKernel<T>>(
    a: ASource<'a, T>,
    b: BSource<'a, T>,
    c_col_stride: usize,
) -> Option<(MatRef<'a, T>, MatRef<'a, T>)> {
    let (ASource::Stored(a), BSource::Stored(b)) = (a, b) else { return None };
    let b_bytes = b.rows() * b.cols() * std::mem::size_of::<T>();
    let fits = b_bytes * UNPACKED_MAX_B_L2_SHARE <= caches().l2;
    (K::READS_UNPACKED && fits && b.col_stride() == 1 && c_col_stride == 1).then_some((a, b))
}

/// LOOPS 5 and 4, and the bands of LOOP 3 on `threads` threads.
#[allow(clippy::too_many_arguments)]
fn five_loops<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    blocking: Blocking,
    threads: usize,
    alpha: T,
    a: ASource<T>,
    b: BSource<T>,
    beta: T,
    mut c: MatMut<T>,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    debug_assert_eq!(k, b.rows());
    let kc_max = kc_block(k, blocking);
    let nc_max = even_block(n, blocking.nc, K::NR);
    if let ASource::Packed(packed) = a {
        assert!(
            packed.kc == kc_max && packed.mr == K::MR,
            "gemm_prepacked: A was packed in blocks of {} x {}, this CPU's blocks are {} x {kc_max}",
            packed.mr,
            packed.kc,
            K::MR
        );
    }

    if let Some((direct_tile, direct_b)) = direct_source(kernel, m, b) {
        direct_loops(kernel, direct_tile, direct_b, blocking, threads, alpha, a, beta, c);
        return;
    }

    with_scratch(kc_max * nc_max, |b_packed: &mut [T]| {
        // LOOP 5: split n into nc parts
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let mut c_j = c.rb().columns(jc, nc);
            // LOOP 4: split k into kc parts; pack B -> B~
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                let b_packed = &mut b_packed[..nc.div_ceil(K::NR) * K::NR * kc];
                let pack_threads = if kc * nc >= PARALLEL_PACK_MIN { threads } else { 1 };
                pack_b(kernel, pack_threads, b, (pc, kc), (jc, nc), b_packed);
                let b_packed = &*b_packed;
                // Only the first kc block sees the caller's beta; later
                // blocks add onto what the first wrote.
                let beta = if pc == 0 { beta } else { T::ONE };
                let a_p = a.block(pc, kc);
                let bands = band_count::<T, K>(threads, m);
                for_each_band::<T, K>(bands, a_p, c_j.rb(), &|a_band, c_band| {
                    loop_3(kernel, blocking.mc, alpha, a_band, BPanels::Packed(b_packed), beta, c_band);
                });
            }
        }
    });
}

/// Largest `m` for which B is read in place rather than packed. Every
/// convolution of the quick UNet and all but one kind of the course UNet's
/// have `m <= 64` (output channels, or input channels for the grad input);
/// there reading in place was measured faster on the Intel Xeon of session
/// 11 at every shape (see `direct.rs`). At `m = 128` (the course UNet's grad
/// input into 128 channels) each B~ micro-panel meets 11 A~ micro-panels, and
/// reading in place there too left the course UNet's step where it was (four
/// alternations, medians 1.07-1.17 s against 1.10-1.13), so larger products pack.
const DIRECT_MAX_M: usize = 64;

/// The direct microkernel and the [`DirectB`] view of `b`, if the kernel has
/// a direct form, `b` can be read in place and `m` is small enough to gain.
fn direct_source<'a, T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    m: usize,
    b: BSource<'a, T>,
) -> Option<(DirectTile<T>, &'a dyn DirectB<T>)> {
    let BSource::Packer(packer) = b else { return None };
    if m > DIRECT_MAX_M || K::NR != 2 * SEGMENT {
        return None;
    }
    Some((kernel.direct_tile()?, packer.direct()?))
}

/// LOOPS 4 to 1 with B read in place: no LOOP 5 (B~ takes no cache space of
/// its own) and no packing in LOOP 4, only the `kc` row offsets of the block.
#[allow(clippy::too_many_arguments)]
fn direct_loops<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    tile: DirectTile<T>,
    b: &dyn DirectB<T>,
    blocking: Blocking,
    threads: usize,
    alpha: T,
    a: ASource<T>,
    beta: T,
    mut c: MatMut<T>,
) {
    let (m, k, n) = (a.rows(), a.cols(), c.cols());
    let kc_max = kc_block(k, blocking);
    let mut offsets = [0; MAX_KC];
    // LOOP 4: split k into kc parts; B~ rows located, not packed
    for pc in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - pc);
        b.row_offsets(pc, &mut offsets[..kc]);
        let rows = DirectRows::new(&offsets[..kc]);
        let beta = if pc == 0 { beta } else { T::ONE };
        let a_p = a.block(pc, kc);
        let bands = band_count::<T, K>(threads, m);
        let panels = BPanels::Direct { tile, b, rows: &rows, pc, n };
        for_each_band::<T, K>(bands, a_p, c.rb(), &|a_band, c_band| {
            loop_3(kernel, blocking.mc, alpha, a_band, panels, beta, c_band);
        });
    }
}

/// The B~ micro-panels of one `kc` block, as LOOP 2 walks them.
#[derive(Clone, Copy)]
enum BPanels<'a, T> {
    /// Packed, `kc x NR` each, one after the other.
    Packed(&'a [T]),
    /// Read in place from `b`, rows `pc ..` of it, whose `n` columns make
    /// `n.div_ceil(NR)` panels.
    Direct { tile: DirectTile<T>, b: &'a dyn DirectB<T>, rows: &'a DirectRows<'a>, pc: usize, n: usize },
}

/// Packs the `kc x nc` block of `b` at `(pc, jc)` into B~, the
/// `NR`-column micro-panels split between `threads` threads.
fn pack_b<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    threads: usize,
    b: BSource<T>,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    dst: &mut [T],
) {
    let panels = nc.div_ceil(K::NR);
    if threads <= 1 || panels < 2 {
        b.pack(kernel, pc, kc, jc, nc, dst);
        return;
    }
    let left = (panels / 2) * K::NR;
    let (dst_left, dst_right) = dst.split_at_mut(left * kc);
    rayon::join(
        || pack_b(kernel, threads / 2, b, (pc, kc), (jc, left), dst_left),
        || pack_b(kernel, threads - threads / 2, b, (pc, kc), (jc + left, nc - left), dst_right),
    );
}

/// The bands LOOP 3 is cut into on `threads` threads: a few per thread, so
/// that work stealing balances them, and never less than a micro-panel each.
fn band_count<T: GemmScalar, K: MicroKernel<T>>(threads: usize, m: usize) -> usize {
    if threads > 1 {
        (threads * BANDS_PER_THREAD).min(m.div_ceil(K::MR))
    } else {
        1
    }
}

/// Cuts A (m, kc) and C (m, nc) into `bands` horizontal bands of whole
/// `MR`-row micro-panels and runs `f` on each pair, in parallel.
fn for_each_band<T: GemmScalar, K: MicroKernel<T>>(bands: usize, a: ABlock<T>, c: MatMut<T>, f: &(dyn Fn(ABlock<T>, MatMut<T>) + Sync)) {
    if bands <= 1 {
        f(a, c);
        return;
    }
    let top_bands = bands / 2;
    let panels = c.rows().div_ceil(K::MR);
    let split = (panels * top_bands / bands * K::MR).min(c.rows());
    let (a_top, a_bottom) = a.split_at_row(split, K::MR);
    let (c_top, c_bottom) = c.split_at_row(split);
    rayon::join(|| for_each_band::<T, K>(top_bands, a_top, c_top, f), || for_each_band::<T, K>(bands - top_bands, a_bottom, c_bottom, f));
}

/// LOOP 3 over one band: A (mb, kc), B~ (kc, nc), C (mb, nc).
fn loop_3<T: GemmScalar, K: MicroKernel<T>>(kernel: K, mc_block: usize, alpha: T, a: ABlock<T>, b: BPanels<T>, beta: T, mut c: MatMut<T>) {
    let a = match a {
        ABlock::Stored(a) => a,
        ABlock::Packed { panels, rows, kc } => {
            // LOOP 3 over A~ packed beforehand: the same blocks, read in place.
            debug_assert_eq!(mc_block % K::MR, 0);
            for ic in (0..rows).step_by(mc_block) {
                let mc = mc_block.min(rows - ic);
                let a_packed = &panels[ic * kc..(ic + mc.div_ceil(K::MR) * K::MR) * kc];
                let (_, c_i) = c.rb().split_at_row(ic);
                loops_2_1(kernel, kc, alpha, a_packed, b, beta, c_i, mc);
            }
            return;
        }
    };
    let (m, kc) = (a.rows(), a.cols());
    let mc_max = mc_block.min(m.next_multiple_of(K::MR));
    with_scratch(mc_max * kc, |a_packed: &mut [T]| {
        // LOOP 3: split m into mc parts; pack A -> A~
        for ic in (0..m).step_by(mc_block) {
            let mc = mc_block.min(m - ic);
            let a_packed = &mut a_packed[..mc.div_ceil(K::MR) * K::MR * kc];
            kernel.pack_a(a.submatrix(ic, 0, mc, kc), a_packed);
            let (_, c_i) = c.rb().split_at_row(ic);
            loops_2_1(kernel, kc, alpha, a_packed, b, beta, c_i, mc);
        }
    });
}

/// LOOPS 2 and 1 over one packed block: A~ (mc, kc), B~ (kc, nc), into the
/// top `mc` rows of C.
#[allow(clippy::too_many_arguments)]
fn loops_2_1<T: GemmScalar, K: MicroKernel<T>>(
    kernel: K,
    kc: usize,
    alpha: T,
    a_packed: &[T],
    b: BPanels<T>,
    beta: T,
    mut c: MatMut<T>,
    mc: usize,
) {
    let nc = c.cols();
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let c = c.data_mut();
    match b {
        BPanels::Packed(b_packed) => {
            // LOOP 2: split nc into NR-column micro-panels of B~
            for (jr, b_panel) in b_packed.chunks_exact(kc * K::NR).enumerate() {
                let nr = K::NR.min(nc - jr * K::NR);
                // LOOP 1: split mc into MR-row micro-panels of A~
                for (ir, a_panel) in a_packed.chunks_exact(kc * K::MR).enumerate() {
                    let mr = K::MR.min(mc - ir * K::MR);
                    let c_tile = &mut c[ir * K::MR * rs + jr * K::NR * cs..];
                    kernel::tile(kernel, kc, alpha, a_panel, b_panel, beta, c_tile, (rs, cs), (mr, nr));
                }
            }
        }
        BPanels::Direct { tile, b, rows, pc, n } => {
            debug_assert_eq!(n, nc);
            // LOOP 2 over micro-panels read in place; a panel's second
            // segment past the last column (junk columns, dropped by
            // `tile_direct`) reads the first one again, which exists.
            for jr in 0..n.div_ceil(K::NR) {
                let first = jr * K::NR;
                let nr = K::NR.min(n - first);
                let segment_0 = b.segment_offset(first);
                let segment_1 = if first + SEGMENT < n { b.segment_offset(first + SEGMENT) } else { segment_0 };
                let masked = b.masked().map(|runs| Masked { masks: &runs.lane_masks(pc, first)[..kc], origin: runs.origin() });
                let panel = DirectPanel::new(b.base(), rows, [segment_0, segment_1], masked);
                // LOOP 1: split mc into MR-row micro-panels of A~
                for (ir, a_panel) in a_packed.chunks_exact(kc * K::MR).enumerate() {
                    let mr = K::MR.min(mc - ir * K::MR);
                    let c_tile = &mut c[ir * K::MR * rs + first * cs..];
                    kernel::tile_direct(tile, K::NR, kc, alpha, a_panel, &panel, beta, c_tile, (rs, cs), (mr, nr));
                }
            }
        }
    }
}

/// `C <- beta * C`, and with `beta == 0` plain zeros (no NaN from `0 * NaN`).
fn scale<T: GemmScalar>(beta: T, mut c: MatMut<T>) {
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let c_ij = c.at_mut(i, j);
            *c_ij = if beta == T::ZERO { T::ZERO } else { beta * *c_ij };
        }
    }
}

//! GEMM tests: every kernel against the naive triple loop, over odd shapes,
//! all four transpose combinations, strided views and alpha/beta pairs.
//!
//! Error bound. Each C[i, j] is a dot product of length k, scaled by alpha and
//! added to beta C[i, j], so it is checked against the f64 oracle within
//! [`TestScalar::tolerance`]`(k, |alpha| (|A| |B|)[i, j] + |beta C[i, j]|)`,
//! `2 (k + 2) u` times that sum (Higham's bound for a dot product in any order).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::*;
use crate::kernels::test_scalar::TestScalar;

thread_local! {
    /// The caches `gemm_loops` sizes its blocks for on this thread, when set.
    pub(super) static CACHES_OVERRIDE: std::cell::Cell<Option<CacheSizes>> = const { std::cell::Cell::new(None) };
}

/// Another machine's caches for the tests that run under its blocks: a core
/// with a 256 KiB L2 (`KC = 128` for AVX-512).
const SMALL_L2_CACHES: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 256 << 10, l3: 8 << 20, source: "test" };

/// Caches so small that every block is at its minimum (`KC = 64`, `MC = MR`,
/// `NC = 8 NR`).
const TINY_CACHES: CacheSizes = CacheSizes { l1d: 1 << 10, l2: 1 << 10, l3: 1 << 10, source: "test" };

/// How a logical `rows x cols` matrix sits in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    RowMajor,
    /// Stored as its transpose, row-major: the view is `.t()` of that.
    ColMajor,
    /// Row-major inside a bigger buffer: leading dimension `cols + 5`, offset 3.
    Strided,
    /// Column-major inside a bigger buffer: leading dimension `rows + 2`, offset 1.
    StridedColMajor,
}

/// A matrix stored with some [`Layout`]; the slots outside the view hold
/// sentinels that must survive a GEMM into it untouched.
struct Stored<T> {
    data: Vec<T>,
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

const SENTINEL: f64 = 12345.0;

impl<T: GemmScalar> Stored<T> {
    fn new(rows: usize, cols: usize, layout: Layout, mut value: impl FnMut() -> T, sentinel: T) -> Self {
        let (offset, rs, cs, len) = match layout {
            Layout::RowMajor => (0, cols, 1, rows * cols),
            Layout::ColMajor => (0, 1, rows, rows * cols),
            Layout::Strided => (3, cols + 5, 1, 3 + rows * (cols + 5)),
            Layout::StridedColMajor => (1, 1, rows + 2, 1 + cols * (rows + 2)),
        };
        let mut data = vec![sentinel; len.max(1)];
        for i in 0..rows {
            for j in 0..cols {
                data[offset + i * rs + j * cs] = value();
            }
        }
        Stored { data, offset, rows, cols, rs, cs }
    }

    fn view(&self) -> MatRef<'_, T> {
        MatRef::new(&self.data[self.offset..], self.rows, self.cols, self.rs, self.cs).unwrap()
    }

    fn view_mut(&mut self) -> MatMut<'_, T> {
        MatMut::new(&mut self.data[self.offset..], self.rows, self.cols, self.rs, self.cs).unwrap()
    }

    fn get(&self, i: usize, j: usize) -> T {
        self.data[self.offset + i * self.rs + j * self.cs]
    }

    /// Same layout, elements mapped by `f` (to f64 for the oracle, or to |x|).
    fn map<U: GemmScalar>(&self, f: impl Fn(T) -> U) -> Stored<U> {
        Stored {
            data: self.data.iter().map(|&x| f(x)).collect(),
            offset: self.offset,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }

    /// True if every slot outside the view still holds `sentinel`.
    fn padding_untouched(&self, sentinel: T) -> bool {
        let mut inside = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                inside[self.offset + i * self.rs + j * self.cs] = true;
            }
        }
        self.data.iter().zip(&inside).all(|(&x, &inside)| inside || x == sentinel)
    }
}

const DIMS: [usize; 5] = [1, 7, 17, 65, 255];
const ALPHA_BETA: [(f64, f64); 4] = [(1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (-2.0, 0.25)];

/// One case: shapes, layouts of A, B, C, and (alpha, beta).
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Layout,
    b: Layout,
    c: Layout,
    alpha: f64,
    beta: f64,
}

/// All four transpose combinations for every (m, n, k) from `DIMS` with at
/// most one dimension 255 (the rest stay fast), cycling through alpha/beta
/// pairs, C layouts, and strided A and B.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let transposes = [
        (Layout::RowMajor, Layout::RowMajor), // A B
        (Layout::ColMajor, Layout::RowMajor), // A^T B
        (Layout::RowMajor, Layout::ColMajor), // A B^T
        (Layout::ColMajor, Layout::ColMajor), // A^T B^T
        (Layout::Strided, Layout::StridedColMajor),
        (Layout::StridedColMajor, Layout::Strided),
    ];
    let c_layouts = [Layout::RowMajor, Layout::Strided, Layout::ColMajor, Layout::StridedColMajor];
    for &m in &DIMS {
        for &n in &DIMS {
            for &k in &DIMS {
                if [m, n, k].iter().filter(|&&d| d == 255).count() > 1 {
                    continue;
                }
                for (t, &(a, b)) in transposes.iter().enumerate() {
                    let idx = cases.len();
                    let (alpha, beta) = ALPHA_BETA[(idx + t) % 4];
                    let c = c_layouts[(idx / 4 + t) % 4];
                    cases.push(Case { m, n, k, a, b, c, alpha, beta });
                }
            }
        }
    }
    // Every row count up to 13 (and 2 x 16 + 1 columns): each remainder of
    // m by MR = 4, 6, 8, 12 ends in a short last micro-panel, which the
    // SIMD kernels compute with a row-count-specialised variant.
    for m in 1..=13 {
        for (alpha, beta) in [(1.0, 0.0), (-2.0, 0.25)] {
            let (a, b, c) = (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor);
            cases.push(Case { m, n: 33, k: 9, a, b, c, alpha, beta });
        }
    }
    cases
}

/// Runs `case` through `gemm_with(kernel, threading)` and checks it against
/// the f64 oracle within the bound at the top of this file. With beta = 0
/// the output starts as NaN, which must not survive.
fn check_case<T: TestScalar>(kernel: Kernel, threading: Threading, case: Case, rng: &mut ChaCha8Rng) {
    let Case { m, n, k, alpha, beta, .. } = case;
    let mut uniform = || T::from_f64(rng.random_range(-1.0..1.0));
    let a = Stored::new(m, k, case.a, &mut uniform, T::from_f64(SENTINEL));
    let b = Stored::new(k, n, case.b, &mut uniform, T::from_f64(SENTINEL));
    let mut c = if beta == 0.0 {
        Stored::new(m, n, case.c, || T::from_f64(f64::NAN), T::from_f64(SENTINEL))
    } else {
        Stored::new(m, n, case.c, &mut uniform, T::from_f64(SENTINEL))
    };

    // Oracle in f64, and |alpha| |A| |B| + |beta C| for the error bound.
    let (a64, b64, c64) = (a.map(T::to_f64), b.map(T::to_f64), c.map(T::to_f64));
    let mut expect = c64.map(|x| x);
    gemm_naive(alpha, a64.view(), b64.view(), beta, expect.view_mut());
    let mut bound = c64.map(|x| if beta == 0.0 { 0.0 } else { x.abs() });
    let (a_abs, b_abs) = (a64.map(f64::abs), b64.map(f64::abs));
    gemm_naive(alpha.abs(), a_abs.view(), b_abs.view(), beta.abs(), bound.view_mut());

    gemm_with(kernel, threading, T::from_f64(alpha), a.view(), b.view(), T::from_f64(beta), c.view_mut());

    for i in 0..m {
        for j in 0..n {
            let (got, want) = (c.get(i, j).to_f64(), expect.get(i, j));
            let tol = T::tolerance(k, bound.get(i, j));
            assert!((got - want).abs() <= tol, "{kernel:?} {threading:?} {case:?}: C[{i}, {j}] = {got}, oracle {want}, tolerance {tol}");
        }
    }
    assert!(c.padding_untouched(T::from_f64(SENTINEL)), "{kernel:?} {case:?}: wrote outside C");
}

fn check_all_cases<T: TestScalar>(kernel: Kernel) {
    if !kernel.available() {
        eprintln!("skipping {kernel:?}: not available on this CPU");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e44);
    for case in cases() {
        check_case::<T>(kernel, Threading::Single, case, &mut rng);
    }
}

#[test]
fn avx512_f32_matches_naive() {
    check_all_cases::<f32>(Kernel::Avx512);
}

#[test]
fn avx2_f32_matches_naive() {
    check_all_cases::<f32>(Kernel::Avx2Fma);
}

#[test]
fn portable_f32_matches_naive() {
    check_all_cases::<f32>(Kernel::Portable);
}

#[test]
fn avx512_f64_matches_naive() {
    check_all_cases::<f64>(Kernel::Avx512);
}

#[test]
fn avx2_f64_matches_naive() {
    check_all_cases::<f64>(Kernel::Avx2Fma);
}

#[test]
fn portable_f64_matches_naive() {
    check_all_cases::<f64>(Kernel::Portable);
}

/// Every kernel under the blocks other machines choose: a core with a 256 KiB
/// L2 (`KC = 128` for AVX-512), and caches so small that every block is at
/// its minimum (`KC = 64`, `MC = MR`, `NC = 8 NR`), so the k = 255 and n = 255
/// cases run several LOOP 4 and LOOP 5 iterations and every LOOP 3 block is
/// one micro-panel.
#[test]
fn every_kernel_matches_naive_under_other_machines_blocks() {
    for caches in [SMALL_L2_CACHES, TINY_CACHES] {
        CACHES_OVERRIDE.set(Some(caches));
        for kernel in Kernel::ALL {
            check_all_cases::<f32>(kernel);
            check_all_cases::<f64>(kernel);
        }
    }
    CACHES_OVERRIDE.set(None);
}

/// Threaded runs, called from inside a rayon pool and from outside it.
#[test]
fn rayon_matches_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for case in cases() {
        pool.install(|| check_case::<f32>(Kernel::best(), Threading::Split, case, &mut rng));
        if case.m * case.n * case.k >= PARALLEL_MIN_MNK_OUTSIDE {
            check_case::<f32>(Kernel::best(), Threading::Rayon, case, &mut rng);
        }
    }
}

/// Runs `gemm_with` on fresh copies of the same inputs, returns C.
fn run_f32(kernel: Kernel, threading: Threading, (m, n, k): (usize, usize, usize), b_layout: Layout, c_layout: Layout) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64((m * 1_000_000 + n * 1000 + k) as u64);
    let mut uniform = || rng.random_range(-1.0f32..1.0);
    let a = Stored::new(m, k, Layout::RowMajor, &mut uniform, 0.0);
    let b = Stored::new(k, n, b_layout, &mut uniform, 0.0);
    let mut c = Stored::new(m, n, c_layout, &mut uniform, 0.0);
    gemm_with(kernel, threading, 1.5, a.view(), b.view(), 0.5, c.view_mut());
    c.data
}

/// Splitting rows of C across threads must not change a single bit: k is
/// never split, so every element is summed in the same order. B row-major
/// and C row-major is the unpacked path for the small shapes (`unpacked.rs`).
#[test]
fn single_and_rayon_are_bit_identical() {
    let shapes = [(255, 255, 255), (130, 300, 70), (65, 1000, 17), (32, 784, 288), (7, 65, 1025), (128, 128, 128), (49, 49, 64)];
    for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
        for &shape in &shapes {
            for (b_layout, c_layout) in
                [(Layout::ColMajor, Layout::RowMajor), (Layout::ColMajor, Layout::ColMajor), (Layout::RowMajor, Layout::RowMajor)]
            {
                let single = run_f32(kernel, Threading::Single, shape, b_layout, c_layout);
                for threads in [2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    for threading in [Threading::Rayon, Threading::Split] {
                        let parallel = pool.install(|| run_f32(kernel, threading, shape, b_layout, c_layout));
                        let same = single.iter().zip(&parallel).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{kernel:?} {shape:?} B {b_layout:?} C {c_layout:?}: {threads} threads ({threading:?}) differ from 1"
                        );
                    }
                }
            }
        }
    }
}

/// A GEMM called from inside a rayon task (conv batched over images).
#[test]
fn gemm_nests_inside_rayon() {
    let (m, n, k) = (96, 200, 130);
    let expect = run_f32(Kernel::best(), Threading::Single, (m, n, k), Layout::ColMajor, Layout::RowMajor);
    let results: Vec<Vec<f32>> =
        (0..8).into_par_iter().map(|_| run_f32(Kernel::best(), Threading::Rayon, (m, n, k), Layout::ColMajor, Layout::RowMajor)).collect();
    for got in results {
        assert_eq!(got, expect);
    }
}

/// k = 0 or alpha = 0: C <- beta C, and with beta = 0 zeros, not NaN.
#[test]
fn empty_inner_dimension_scales_c() {
    let a = [0.0f32; 0];
    let b = [0.0f32; 0];
    for (beta, want) in [(0.0, 0.0), (2.0, 6.0)] {
        let mut c = [3.0f32; 6];
        let a_view = MatRef::new(&a, 2, 0, 0, 1).unwrap();
        let b_view = MatRef::new(&b, 0, 3, 3, 1).unwrap();
        gemm(1.0, a_view, b_view, beta, MatMut::new(&mut c, 2, 3, 3, 1).unwrap());
        assert_eq!(c, [want; 6]);
    }
    let a = [f32::NAN; 4];
    let mut c = [f32::NAN; 4];
    let nan = MatRef::new(&a, 2, 2, 2, 1).unwrap();
    gemm(0.0, nan, nan, 0.0, MatMut::new(&mut c, 2, 2, 2, 1).unwrap());
    assert_eq!(c, [0.0; 4]);
}

#[test]
#[should_panic(expected = "gemm: A is 2x3, B is 2x2")]
fn shape_mismatch_panics() {
    let x = [0.0f32; 6];
    let mut c = [0.0f32; 4];
    gemm(1.0, MatRef::new(&x, 2, 3, 3, 1).unwrap(), MatRef::new(&x, 2, 2, 2, 1).unwrap(), 0.0, MatMut::new(&mut c, 2, 2, 2, 1).unwrap());
}

#[test]
fn views_check_bounds_and_aliasing() {
    let mut x = [0.0f32; 12];
    assert!(MatRef::new(&x, 3, 4, 4, 1).is_some());
    assert!(MatRef::new(&x, 3, 5, 4, 1).is_none(), "past the end");
    assert!(MatRef::new(&x, 12, 12, 0, 0).is_some(), "a broadcast read view may repeat elements");
    assert!(MatMut::new(&mut x, 3, 4, 4, 1).is_some());
    assert!(MatMut::new(&mut x, 4, 3, 1, 4).is_some(), "column-major");
    assert!(MatMut::new(&mut x, 3, 4, 2, 1).is_none(), "rows overlap");
    assert!(MatMut::new(&mut x, 2, 2, 0, 1).is_none(), "both rows are the same");
    assert!(MatMut::new(&mut x, 1, 12, 0, 1).is_some(), "one row: its stride is never used");
    assert!(MatMut::new(&mut x, 3, 4, usize::MAX, 1).is_none(), "index overflow");
}

/// A stored B behind the [`PackB`] interface, packed entry by entry as the
/// trait's contract states (no SIMD packing code shared with the kernels).
struct PackFromView<'a, T>(MatRef<'a, T>);

impl<T: GemmScalar> PackB<T> for PackFromView<'_, T> {
    fn rows(&self) -> usize {
        self.0.rows()
    }

    fn cols(&self) -> usize {
        self.0.cols()
    }

    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        pack_entry_by_entry(|p, j| self.0.at(p, j), (pc, kc), (jc, nc), nr, dst);
    }
}

/// [`PackB::pack_b`] written out from its contract, one entry `at(row, col)`
/// of B at a time.
fn pack_entry_by_entry<T: GemmScalar>(
    at: impl Fn(usize, usize) -> T,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    nr: usize,
    dst: &mut [T],
) {
    for panel in 0..nc.div_ceil(nr) {
        for p in 0..kc {
            for j in 0..nr {
                let col = panel * nr + j;
                dst[panel * kc * nr + p * nr + j] = if col < nc { at(pc + p, jc + col) } else { T::ZERO };
            }
        }
    }
}

/// `gemm_prepacked` reads A~ packed beforehand in place of LOOP 3's packing:
/// the same numbers in the same order, so C must equal `gemm_with`'s bit for
/// bit, for every kernel, every case with a row-major C (NaN there when
/// beta = 0), on one thread and on two, and under the other machines' blocks
/// (the tiny caches make every LOOP 3 block one micro-panel and split k).
#[test]
fn prepacked_a_is_bit_identical_to_packing_in_loop_3() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xa11);
    for caches in [None, Some(SMALL_L2_CACHES), Some(TINY_CACHES)] {
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            for case in cases().into_iter().filter(|c| matches!(c.c, Layout::RowMajor | Layout::Strided)) {
                let Case { m, n, k, alpha, beta, .. } = case;
                let mut uniform = || rng.random_range(-1.0f32..1.0);
                let a = Stored::new(m, k, case.a, &mut uniform, SENTINEL as f32);
                let b = Stored::new(k, n, case.b, &mut uniform, SENTINEL as f32);
                let c0 = if beta == 0.0 {
                    Stored::new(m, n, case.c, || f32::NAN, SENTINEL as f32)
                } else {
                    Stored::new(m, n, case.c, &mut uniform, SENTINEL as f32)
                };
                let (alpha, beta) = (alpha as f32, beta as f32);
                for threading in [Threading::Single, Threading::Rayon] {
                    let (want, got) = pool.install(|| {
                        CACHES_OVERRIDE.set(caches);
                        let mut want = c0.map(|x| x);
                        gemm_with(kernel, threading, alpha, a.view(), b.view(), beta, want.view_mut());
                        let packed = PackedA::new(kernel, a.view());
                        let mut got = c0.map(|x| x);
                        gemm_prepacked(threading, alpha, &packed, &PackFromView(b.view()), beta, got.view_mut());
                        CACHES_OVERRIDE.set(None);
                        (want, got)
                    });
                    let same = want.data.iter().zip(&got.data).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{kernel:?} {threading:?} {caches:?} {case:?}: prepacked A differs from gemm_with");
                    assert!(!got.data.iter().any(|x| x.is_nan()), "{kernel:?} {case:?}: NaN survived");
                }
            }
        }
    }
}

/// A packed under one machine's blocks and run under another's is refused,
/// not silently misread.
#[test]
#[should_panic(expected = "gemm_prepacked: A was packed in blocks of")]
fn prepacked_a_from_other_blocks_is_refused() {
    let (m, k, n) = (5, 300, 4);
    let (a, b) = (vec![1.0f32; m * k], vec![1.0f32; k * n]);
    let mut c = vec![0.0f32; m * n];
    CACHES_OVERRIDE.set(Some(TINY_CACHES));
    let packed = PackedA::new(Kernel::Portable, MatRef::new(&a, m, k, k, 1).unwrap());
    CACHES_OVERRIDE.set(None);
    let b = PackFromView(MatRef::new(&b, k, n, n, 1).unwrap());
    gemm_prepacked(Threading::Single, 1.0, &packed, &b, 0.0, MatMut::new(&mut c, m, n, n, 1).unwrap());
}

/// A B (k, n) that can be read in place, laid out to catch a wrong offset:
/// rows stored bottom-up with a gap after each, the 16-column segments of a
/// row stored right to left, and every slot that is not an entry of B (the
/// gaps, the columns past n of the last segment) holding NaN, which must
/// never reach C. Packed entry by entry for the kernels without a direct form.
struct ScatteredB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl ScatteredB {
    fn new(b: MatRef<f32>) -> Self {
        let (k, n) = (b.rows(), b.cols());
        let mut scattered = ScatteredB { k, n, data: vec![f32::NAN; k * Self::row_len(n)] };
        for p in 0..k {
            for j in 0..n {
                let at = scattered.row_offset(p) + scattered.segment_offset(j / SEGMENT * SEGMENT) + j % SEGMENT;
                scattered.data[at] = b.at(p, j);
            }
        }
        scattered
    }

    /// Whole segments and a gap of 5.
    fn row_len(n: usize) -> usize {
        n.div_ceil(SEGMENT).max(2) * SEGMENT + 5
    }

    fn row_offset(&self, p: usize) -> usize {
        (self.k - 1 - p) * Self::row_len(self.n)
    }

    fn at(&self, p: usize, j: usize) -> f32 {
        self.data[self.row_offset(p) + self.segment_offset(j / SEGMENT * SEGMENT) + j % SEGMENT]
    }
}

impl PackB<f32> for ScatteredB {
    fn rows(&self) -> usize {
        self.k
    }

    fn cols(&self) -> usize {
        self.n
    }

    fn pack_b(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        pack_entry_by_entry(|p, j| self.at(p, j), (pc, kc), (jc, nc), nr, dst);
    }

    fn direct(&self) -> Option<&dyn DirectB<f32>> {
        Some(self)
    }
}

impl DirectB<f32> for ScatteredB {
    fn base(&self) -> &[f32] {
        &self.data
    }

    fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
        for (p, offset) in offsets.iter_mut().enumerate() {
            *offset = self.row_offset(pc + p);
        }
    }

    fn segment_offset(&self, col: usize) -> usize {
        let segments = self.n.div_ceil(SEGMENT).max(2);
        (segments - 1 - col / SEGMENT) * SEGMENT
    }
}

/// B read in place (the AVX-512 kernel's direct form, for m up to
/// `DIRECT_MAX_M`) gives C bit for bit as B packed from a stored copy, and
/// matches the f64 oracle: every short last micro-panel of A, n around the
/// segment and panel widths (junk columns read NaN), k over several `kc`
/// blocks (the tiny caches make `kc` small), m on both sides of
/// `DIRECT_MAX_M`, one thread and two, C poisoned with NaN when beta = 0.
#[test]
fn direct_b_is_bit_identical_to_packed_b() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xd1ec7);
    let ms = (1..=13).chain([16, 24, 37, DIRECT_MAX_M, DIRECT_MAX_M + 1]);
    for (case, m) in ms.enumerate() {
        for (n, k) in [(1, 5), (15, 200), (16, 7), (17, 33), (32, 1), (33, 64), (100, 300)] {
            let (alpha, beta) = ALPHA_BETA[(case + n) % 4];
            let mut uniform = || rng.random_range(-1.0f32..1.0);
            let a = Stored::new(m, k, Layout::RowMajor, &mut uniform, SENTINEL as f32);
            let b = Stored::new(k, n, Layout::RowMajor, &mut uniform, SENTINEL as f32);
            let c0 = if beta == 0.0 {
                Stored::new(m, n, Layout::RowMajor, || f32::NAN, SENTINEL as f32)
            } else {
                Stored::new(m, n, Layout::RowMajor, &mut uniform, SENTINEL as f32)
            };
            let scattered = ScatteredB::new(b.view());
            let (a64, b64, c64) = (a.map(f64::from), b.map(f64::from), c0.map(f64::from));
            let mut expect = c64.map(|x| x);
            gemm_naive(alpha, a64.view(), b64.view(), beta, expect.view_mut());
            let mut bound = c64.map(|x| if beta == 0.0 { 0.0 } else { x.abs() });
            gemm_naive(alpha.abs(), a64.map(f64::abs).view(), b64.map(f64::abs).view(), beta.abs(), bound.view_mut());
            let (alpha, beta) = (alpha as f32, beta as f32);
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                for caches in [None, Some(TINY_CACHES)] {
                    for threading in [Threading::Single, Threading::Rayon] {
                        let (want, got) = pool.install(|| {
                            CACHES_OVERRIDE.set(caches);
                            let mut want = c0.map(|x| x);
                            gemm_with(kernel, threading, alpha, a.view(), b.view(), beta, want.view_mut());
                            let mut got = c0.map(|x| x);
                            gemm_packed_b(kernel, threading, alpha, a.view(), &scattered, beta, got.view_mut());
                            CACHES_OVERRIDE.set(None);
                            (want, got)
                        });
                        let what = format!("{kernel:?} {threading:?} {caches:?} m {m} n {n} k {k} alpha {alpha} beta {beta}");
                        let same = want.data.iter().zip(&got.data).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{what}: B read in place differs from B packed");
                        for i in 0..m {
                            for j in 0..n {
                                let (got, want) = (f64::from(got.get(i, j)), expect.get(i, j));
                                let tol = f32::tolerance(k, bound.get(i, j));
                                assert!((got - want).abs() <= tol, "{what}: C[{i}, {j}] = {got}, oracle {want}, tolerance {tol}");
                            }
                        }
                        assert!(got.padding_untouched(SENTINEL as f32), "{what}: wrote outside C");
                    }
                }
            }
        }
    }
}

/// `gemm_unpacked` (the convolutions' call for a B that fits in L2) gives C
/// bit for bit as the AVX-512 kernel with B packed or read in place, so the
/// size of L2, which picks the path, never changes a result: `k` over one and
/// several `kc` blocks (784 is a pointwise conv's 28 x 28 image), under this
/// CPU's blocks and two others', m on both sides of `DIRECT_MAX_M`, A
/// row-major (`dout`) and column-major, C poisoned with NaN when it is not
/// accumulated into.
#[test]
fn unpacked_is_bit_identical_to_packed_b() {
    if !Kernel::Avx512.available() {
        eprintln!("skipped: this CPU has no AVX-512F, so gemm_unpacked declines (unpacked.rs tests that)");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x0b1);
    for caches in [None, Some(SMALL_L2_CACHES), Some(TINY_CACHES)] {
        CACHES_OVERRIDE.set(caches);
        for (m, k, n) in [(16, 784, 16), (13, 1100, 33), (96, 784, 48), (DIRECT_MAX_M + 1, 300, 17), (5, 200, 7)] {
            for a_layout in [Layout::RowMajor, Layout::ColMajor] {
                let mut uniform = || rng.random_range(-1.0f32..1.0);
                let a = Stored::new(m, k, a_layout, &mut uniform, SENTINEL as f32);
                let b = Stored::new(k, n, Layout::RowMajor, &mut uniform, SENTINEL as f32);
                let c_start = Stored::new(m, n, Layout::RowMajor, &mut uniform, SENTINEL as f32);
                for accumulate in [false, true] {
                    let c0 = if accumulate { c_start.map(|x| x) } else { c_start.map(|_| f32::NAN) };
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    let mut want = c0.map(|x| x);
                    gemm_packed_b(Kernel::Avx512, Threading::Single, 1.0, a.view(), &PackFromView(b.view()), beta, want.view_mut());
                    let mut got = c0.map(|x| x);
                    assert!(gemm_unpacked(a.view(), b.view(), accumulate, got.view_mut()));
                    let what = format!("{caches:?} m {m} k {k} n {n} A {a_layout:?} accumulate {accumulate}");
                    assert!(!got.data.iter().any(|x| x.is_nan()), "{what}: NaN survived");
                    let same = want.data.iter().zip(&got.data).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{what}: gemm_unpacked differs from B packed");
                }
            }
        }
    }
    CACHES_OVERRIDE.set(None);
}

/// A [`DirectB`] whose base is too short for the reads its offsets imply is
/// refused before the microkernel runs, not read out of bounds.
#[test]
fn direct_b_past_its_base_is_refused() {
    if !Kernel::Avx512.available() {
        eprintln!("skipping: no AVX-512 on this CPU, the only kernel with a direct form");
        return;
    }
    /// A base, and where its rows start in it.
    struct Short(Vec<f32>, usize);
    impl PackB<f32> for Short {
        fn rows(&self) -> usize {
            2
        }
        fn cols(&self) -> usize {
            32
        }
        fn pack_b(&self, _: usize, _: usize, _: usize, _: usize, _: usize, _: &mut [f32]) {
            unreachable!("the direct path does not pack")
        }
        fn direct(&self) -> Option<&dyn DirectB<f32>> {
            Some(self)
        }
    }
    impl DirectB<f32> for Short {
        fn base(&self) -> &[f32] {
            &self.0
        }
        fn row_offsets(&self, pc: usize, offsets: &mut [usize]) {
            for (p, offset) in offsets.iter_mut().enumerate() {
                *offset = self.1.wrapping_add((pc + p) * 32);
            }
        }
        fn segment_offset(&self, col: usize) -> usize {
            col
        }
    }
    let a = vec![1.0f32; 4];
    let run_from = |base_len: usize, start: usize| {
        let b = Short(vec![1.0; base_len], start);
        let mut c = vec![0.0f32; 64];
        let c_view = MatMut::new(&mut c, 2, 32, 32, 1).unwrap();
        gemm_packed_b(Kernel::Avx512, Threading::Single, 1.0, MatRef::new(&a, 2, 2, 2, 1).unwrap(), &b, 0.0, c_view);
        c
    };
    // Two rows of 32: 64 elements are enough, 63 are not; and rows starting
    // near usize::MAX, whose last read wraps round to 23 (inside 64), are
    // refused too, not read before the base.
    assert_eq!(run_from(64, 0), vec![2.0; 64]);
    for (base_len, start, what) in [(63, 0, "a base one element short"), (64, usize::MAX - 40, "offsets that wrap")] {
        let refused = std::panic::catch_unwind(|| run_from(base_len, start)).expect_err(what);
        let message = refused.downcast_ref::<String>().map(String::as_str).or(refused.downcast_ref::<&str>().copied()).unwrap_or("");
        assert!(message.contains("reads past its base"), "{what}: unexpected panic: {message}");
    }
}

/// The AVX-512 kernel packs twelve contiguous rows of A through registers,
/// sixteen steps at a time, and the rest element by element: its A~ must be
/// `pack_panels`' bit for bit, for row counts around a panel, depths around
/// sixteen steps, rows with a gap between them and a column-major A, with
/// every element of the panels written (NaN before) and none past them.
#[test]
fn avx512_pack_a_matches_pack_panels() {
    let Some(kernel) = avx512::Avx512::detect() else {
        eprintln!("skipping: no AVX-512 on this CPU");
        return;
    };
    const MR: usize = <avx512::Avx512 as MicroKernel<f32>>::MR;
    for (rows, kc) in [(1, 1), (11, 17), (12, 16), (13, 15), (24, 33), (25, 512), (37, 100), (48, 31)] {
        for (rs, cs) in [(kc, 1), (kc + 5, 1), (1, rows)] {
            let len = (rows - 1) * rs + (kc - 1) * cs + 1;
            let data: Vec<f32> = (0..len).map(|i| (i % 97) as f32 * 0.25 - 7.0).collect();
            let a = MatRef::new(&data, rows, kc, rs, cs).unwrap();
            let packed = rows.div_ceil(MR) * MR * kc;
            let (mut got, mut want) = (vec![f32::NAN; packed + 16], vec![f32::NAN; packed + 16]);
            kernel.pack_a(a, &mut got);
            pack::pack_panels::<f32, MR>(a, &mut want);
            let case = format!("{rows} x {kc}, strides ({rs}, {cs})");
            for (i, (g, w)) in got[..packed].iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{case}: A~[{i}] = {g}, pack_panels {w}");
            }
            assert!(got[packed..].iter().all(|v| v.is_nan()), "{case}: wrote past the panels");
        }
    }
}

/// The register tile alone does what its flop count says: after `calls`
/// tiles of depth `kc` from panels of 1e-3, C's first element is `1e-3 +
/// calls x kc x 1e-6` (each call adds kc products of 1e-6), and the count is
/// `2 MR NR kc` a call. Then every available kernel's timing runs and
/// reports a finite, positive speed.
#[test]
fn the_register_tile_alone_counts_its_flops() {
    fn check<K: MicroKernel<f32>>(kernel: K) {
        for (kc, calls) in [(1, 1), (16, 3), (512, 5)] {
            let (flops, c0) = tile_alone(kernel, kc, calls);
            assert_eq!(flops, (calls * 2 * K::MR * K::NR * kc) as f64);
            let want = 1e-3 + (calls * kc) as f64 * 1e-6;
            assert!(
                (f64::from(c0) - want).abs() < 1e-4 * want,
                "{}: kc {kc}, {calls} calls: {c0} against {want}",
                std::any::type_name::<K>()
            );
        }
    }
    check(Portable::<f32>::new());
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(kernel) = avx2::Avx2Fma::detect() {
            check(kernel);
        }
        if let Some(kernel) = avx512::Avx512::detect() {
            check(kernel);
        }
    }
    for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
        let gflops = microkernel_gflops(kernel, 0.01);
        assert!(gflops.is_finite() && gflops > 0.0, "{kernel:?}: {gflops}");
    }
}

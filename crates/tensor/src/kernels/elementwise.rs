//! Elementwise loops, compiled three times: for the baseline instruction set,
//! with AVX2 and FMA, and with AVX-512F, the copy chosen at run time.
//!
//! The loop body is the same Rust code. `#[target_feature]` on the outer function
//! lets LLVM use 16-wide AVX-512 or 8-wide AVX registers when it vectorises the
//! inlined body (the closure `f` included); the baseline copy gets 4-wide SSE2.
//! This is the cheapest way to make every elementwise op (silu, exp, add, ...)
//! use the wide registers without writing intrinsics per op. Each lane computes
//! what the plain loop computes (Rust never fuses a multiply and an add on its
//! own), so the copies agree bit for bit. On the Intel Xeon of session 14 the
//! AVX-512 copy took the group norm + SiLU of the quick UNet's 28 x 28 level
//! (batch 64, 16 channels) from 0.76-1.18 to 0.65-0.86 ms forward and from
//! 1.18-1.32 to 0.82-0.94 ms backward (five and four alternations).
//!
//! The `*_to_vec` forms return a new vector written once, element by element: an
//! op's output is never zero-filled before it is overwritten.

use crate::kernels::gemm::GemmScalar;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `f(x[i])` for every `i`, as a new vector written once: never zero-filled
/// first. With `parallel`, chunks of `chunk` elements run as rayon tasks (the
/// result does not depend on how they are scheduled).
pub fn map_to_vec<T: Copy + Send + Sync + 'static, F: Fn(T) -> T + Sync>(x: &[T], chunk: usize, parallel: bool, f: F) -> Vec<T> {
    let n = x.len();
    let mut out: Vec<T> = crate::pool::with_capacity(n);
    let slots = &mut out.spare_capacity_mut()[..n];
    if parallel {
        slots.par_chunks_mut(chunk.max(1)).zip(x.par_chunks(chunk.max(1))).for_each(|(o, x)| map_uninit(x, o, &f));
    } else {
        map_uninit(x, slots, &f);
    }
    // SAFETY: every one of the n slots was written: `slots` and `x` both have n
    // elements and are cut into chunks of the same size, so the chunks pair up one
    // to one with equal lengths, and `map_uninit` writes every slot of its chunk.
    unsafe { out.set_len(n) };
    out
}

/// `f(a[i], b[i])` for every `i`, as a new vector written once (see [`map_to_vec`]).
///
/// # Panics
/// If the lengths differ.
pub fn zip_to_vec<T: Copy + Send + Sync + 'static, F: Fn(T, T) -> T + Sync>(
    a: &[T],
    b: &[T],
    chunk: usize,
    parallel: bool,
    f: F,
) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "zip_to_vec: input lengths differ");
    let n = a.len();
    let mut out: Vec<T> = crate::pool::with_capacity(n);
    let slots = &mut out.spare_capacity_mut()[..n];
    if parallel {
        let chunk = chunk.max(1);
        slots.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).zip(b.par_chunks(chunk)).for_each(|((o, a), b)| zip_uninit(a, b, o, &f));
    } else {
        zip_uninit(a, b, slots, &f);
    }
    // SAFETY: as in `map_to_vec`: equal-length chunks of `slots`, `a` and `b` pair
    // up one to one, and `zip_uninit` writes every slot of its chunk.
    unsafe { out.set_len(n) };
    out
}

/// A new vector of `rows * inner` elements, row `r` taken from the iterator
/// `row(r)`, written once (never zero-filled first); rows run as rayon tasks with
/// `parallel`.
///
/// # Panics
/// If an iterator yields fewer than `inner` elements (extra ones are ignored).
pub fn rows_to_vec<T, I, F>(rows: usize, inner: usize, parallel: bool, row: F) -> Vec<T>
where
    T: Copy + Send + Sync + 'static,
    I: Iterator<Item = T>,
    F: Fn(usize) -> I + Sync,
{
    let n = rows * inner;
    let mut out: Vec<T> = crate::pool::with_capacity(n);
    if inner > 0 {
        let fill = |(r, slots): (usize, &mut [MaybeUninit<T>])| {
            let mut written = 0;
            for (slot, v) in slots.iter_mut().zip(row(r)) {
                slot.write(v);
                written += 1;
            }
            assert_eq!(written, inner, "rows_to_vec: row {r} has {written} elements, not {inner}");
        };
        let slots = &mut out.spare_capacity_mut()[..n];
        if parallel {
            slots.par_chunks_mut(inner).enumerate().for_each(fill);
        } else {
            slots.chunks_mut(inner).enumerate().for_each(fill);
        }
    }
    // SAFETY: every one of the n slots was written: the slots are cut into `rows`
    // chunks of exactly `inner`, and each chunk's fill asserts (panicking, so
    // `set_len` is never reached otherwise) that it wrote `inner` values.
    unsafe { out.set_len(n) };
    out
}

/// `out[i] = f(x[i])` over an existing slice, through the same two copies (AVX2
/// and FMA where the CPU has them): for loops inside an op's own parallel split,
/// such as the fused group norm's per-channel epilogue.
///
/// # Panics
/// If the lengths differ.
pub fn map_into<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [T], f: F) {
    assert_eq!(x.len(), out.len(), "map_into: input and output lengths differ");
    zip_into(x, x, out, |v, _| f(v));
}

/// `acc[i] = f(acc[i], b[i])` in place, compiled for the CPU's widest vectors;
/// with `parallel`, chunks of `chunk` elements run as rayon tasks.
///
/// # Panics
/// If the lengths differ.
pub fn zip_assign<T: Copy + Send + Sync, F: Fn(T, T) -> T + Sync>(acc: &mut [T], b: &[T], chunk: usize, parallel: bool, f: F) {
    assert_eq!(acc.len(), b.len(), "zip_assign: lengths differ");
    let run = |acc: &mut [T], b: &[T]| {
        vectorized(
            #[inline(always)]
            || {
                for (o, &y) in acc.iter_mut().zip(b) {
                    *o = f(*o, y);
                }
            },
        )
    };
    if parallel {
        acc.par_chunks_mut(chunk.max(1)).zip(b.par_chunks(chunk.max(1))).for_each(|(acc, b)| run(acc, b));
    } else {
        run(acc, b);
    }
}

/// `out[i] = f(a[i], b[i])` over an existing slice (see [`map_into`]).
///
/// # Panics
/// If the lengths differ.
pub fn zip_into<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    assert!(a.len() == out.len() && b.len() == out.len(), "zip_into: input and output lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, checked at run time just above.
        unsafe { zip_into_avx512(a, b, out, f) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        unsafe { zip_into_avx2(a, b, out, f) };
        return;
    }
    zip_into_portable(a, b, out, f);
}

// Each dispatcher calls its own `#[target_feature]` copies rather than
// running its loop through [`vectorized`]: tried in session 14, the map loops
// came out scalar there (`vmulss` in the profile; group norm + SiLU forward
// at 16 x 28 x 28 took 3.7-4.6 ms instead of 0.5-0.7), most likely because
// `out` then arrives through the closure's captures instead of as a `&mut`
// argument, whose no-alias guarantee lets LLVM vectorise without checks.
#[inline(always)]
fn zip_into_portable<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn zip_into_avx2<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    zip_into_portable(a, b, out, f);
}

/// `out[i].write(f(x[i]))` for every slot of `out`.
fn map_uninit<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [MaybeUninit<T>], f: F) {
    assert_eq!(x.len(), out.len(), "map_uninit: input and output lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, checked at run time just above.
        unsafe { map_uninit_avx512(x, out, f) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        unsafe { map_uninit_avx2(x, out, f) };
        return;
    }
    map_uninit_portable(x, out, f);
}

/// `out[i].write(f(a[i], b[i]))` for every slot of `out`.
fn zip_uninit<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: F) {
    assert!(a.len() == out.len() && b.len() == out.len(), "zip_uninit: input and output lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, checked at run time just above.
        unsafe { zip_uninit_avx512(a, b, out, f) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        unsafe { zip_uninit_avx2(a, b, out, f) };
        return;
    }
    zip_uninit_portable(a, b, out, f);
}

#[inline(always)]
fn map_uninit_portable<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [MaybeUninit<T>], f: F) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(f(v));
    }
}

#[inline(always)]
fn zip_uninit_portable<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: F) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        o.write(f(x, y));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_uninit_avx2<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [MaybeUninit<T>], f: F) {
    map_uninit_portable(x, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn zip_uninit_avx2<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: F) {
    zip_uninit_portable(a, b, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn zip_into_avx512<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    zip_into_portable(a, b, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn map_uninit_avx512<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [MaybeUninit<T>], f: F) {
    map_uninit_portable(x, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn zip_uninit_avx512<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: F) {
    zip_uninit_portable(a, b, out, f);
}

/// Runs `f` compiled for the widest vector instructions this CPU has
/// (AVX-512F, else AVX2 and FMA, else the baseline): for loops that are not
/// one of the maps above, such as Winograd's transforms over the channels of
/// a tile or the sums of the group norm. `f` must be an `#[inline(always)]`
/// closure, so that it, and what it inlines, is compiled into the
/// `#[target_feature]` copies below. The instructions change how many lanes
/// a loop runs at once, never what a lane computes (no fused multiply-add
/// unless written), so results do not depend on the copy.
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F, checked at run time just above.
            return unsafe { with_avx512(f) };
        }
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    // The std macro caches the CPUID answer, so this is a load and a test.
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Lanes of [`lane_sum`] and [`lane_dot`]: four 16-float vectors, four
/// independent chains of additions, where one vector waited on each addition's
/// latency.
pub(crate) const SUM_LANES: usize = 64;

/// `sum_i a_i b_i` in `SUM_LANES` interleaved partial sums, as [`lane_sum`].
#[inline(always)]
pub(crate) fn lane_dot<T: GemmScalar>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len(), "lane_dot of slices of different lengths");
    let mut lanes = [T::ZERO; SUM_LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(SUM_LANES), b.chunks_exact(SUM_LANES));
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane = *lane + x * y;
        }
    }
    for ((lane, &x), &y) in lanes.iter_mut().zip(tail_a).zip(tail_b) {
        *lane = *lane + x * y;
    }
    fold_lanes(lanes)
}

/// `sum(row)`, added in `SUM_LANES` interleaved partial sums and then across
/// them in lane order: a fixed order (the same bits on every machine) that the
/// compiler turns into vector adds. A plain fold is one dependent add after
/// another, four cycles each; at 28 x 28 with 16 channels the bias gradient
/// summed that way was a fifth of the weight-gradient pass.
#[inline(always)]
pub(crate) fn lane_sum<T: GemmScalar>(row: &[T]) -> T {
    let mut lanes = [T::ZERO; SUM_LANES];
    let mut chunks = row.chunks_exact(SUM_LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = *lane + v;
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane = *lane + v;
    }
    fold_lanes(lanes)
}

/// The lanes of a lane sum added pairwise, `lanes[i] + lanes[i + LANES / 2]` and
/// so on down to one: a fixed order (the same bits on every machine), log2(LANES)
/// vector adds deep. A fold across them is LANES dependent adds, four cycles
/// each; after the 784 values of a 28 x 28 row summed in four chains of 16 lanes,
/// such a fold of 64 lanes would take longer than the row itself.
#[inline(always)]
pub(crate) fn fold_lanes<T: Copy + std::ops::Add<Output = T>, const LANES: usize>(mut lanes: [T; LANES]) -> T {
    const { assert!(LANES.is_power_of_two(), "fold_lanes halves the lanes down to one") };
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        let (low, high) = lanes.split_at_mut(width);
        for (l, &h) in low.iter_mut().zip(high.iter()) {
            *l = *l + h;
        }
    }
    lanes[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lane_sum` and `lane_dot` against plain sums on lengths around the 64
    /// lanes: exact on integer-valued data, where every order of the adds gives
    /// the same sum, and the order itself on random data: element `i` goes to
    /// lane `i % 64`, and the lanes are folded pairwise, bit for bit.
    #[test]
    fn lane_sums_match_their_definition() {
        for len in [0, 1, 5, 63, 64, 65, 127, 200, 1001] {
            let ints: Vec<f64> = (0..len).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
            let other: Vec<f64> = (0..len).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
            assert_eq!(lane_sum(&ints), ints.iter().sum::<f64>(), "lane_sum, {len} values");
            assert_eq!(lane_dot(&ints, &other), ints.iter().zip(&other).map(|(a, b)| a * b).sum::<f64>(), "lane_dot, {len}");
            let random: Vec<f32> = (0..len).map(|i| ((i as f32 * 0.7312).sin() * 1e3).fract() * 3.0).collect();
            let mut lanes = [0f32; SUM_LANES];
            for (i, &v) in random.iter().enumerate() {
                lanes[i % SUM_LANES] += v;
            }
            let mut width = SUM_LANES;
            while width > 1 {
                width /= 2;
                for l in 0..width {
                    lanes[l] += lanes[l + width];
                }
            }
            assert_eq!(lane_sum(&random).to_bits(), lanes[0].to_bits(), "lane_sum's order, {len} values");
        }
    }

    /// Every copy (AVX-512 and AVX2 where the CPU has them, and the portable
    /// one) against a plain loop, bit for bit, on odd lengths; and
    /// [`vectorized`] running the plain loop.
    #[test]
    fn dispatched_loops_match_the_plain_loop() {
        for n in [0, 1, 7, 8, 9, 33, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let f = |v: f32| crate::element::exp_f32(v) * v - 1.0;
            let g = |a: f32, b: f32| a * b + a;
            let written = |fill: &dyn Fn(&mut [MaybeUninit<f32>])| {
                let mut out = vec![MaybeUninit::new(f32::NAN); n];
                fill(&mut out);
                // SAFETY: every slot holds an f32: NaN from `MaybeUninit::new`, or
                // the value `fill` wrote over it (a NaN left behind fails the test).
                out.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect::<Vec<_>>()
            };
            let mapped: Vec<u32> = x.iter().map(|&v| f(v).to_bits()).collect();
            let zipped: Vec<u32> = x.iter().zip(&y).map(|(&a, &b)| g(a, b).to_bits()).collect();
            assert_eq!(written(&|o| map_uninit(&x, o, f)), mapped);
            assert_eq!(written(&|o| map_uninit_portable(&x, o, f)), mapped);
            assert_eq!(written(&|o| zip_uninit(&x, &y, o, g)), zipped);
            assert_eq!(written(&|o| zip_uninit_portable(&x, &y, o, g)), zipped);
            let in_place = |fill: &dyn Fn(&mut [f32])| {
                let mut out = vec![f32::NAN; n];
                fill(&mut out);
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(in_place(&|o| map_into(&x, o, f)), mapped);
            assert_eq!(in_place(&|o| zip_into(&x, &y, o, g)), zipped);
            assert_eq!(in_place(&|o| zip_into_portable(&x, &y, o, g)), zipped);
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    unsafe {
                        assert_eq!(written(&|o| map_uninit_avx2(&x, o, f)), mapped);
                        assert_eq!(written(&|o| zip_uninit_avx2(&x, &y, o, g)), zipped);
                        assert_eq!(in_place(&|o| zip_into_avx2(&x, &y, o, g)), zipped);
                    }
                }
                if has_avx512() {
                    // SAFETY: the CPU has AVX-512F, AVX2 and FMA, checked just above.
                    unsafe {
                        assert_eq!(written(&|o| map_uninit_avx512(&x, o, f)), mapped);
                        assert_eq!(written(&|o| zip_uninit_avx512(&x, &y, o, g)), zipped);
                        assert_eq!(in_place(&|o| zip_into_avx512(&x, &y, o, g)), zipped);
                    }
                } else {
                    eprintln!("no AVX-512F here: its copies are not run");
                }
            }
            let mut acc = x.clone();
            zip_assign(&mut acc, &y, 5, true, g);
            assert_eq!(acc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), zipped);
            let plain = vectorized(
                #[inline(always)]
                || x.iter().map(|&v| f(v).to_bits()).collect::<Vec<_>>(),
            );
            assert_eq!(plain, mapped);
        }
    }

    /// Rows from iterators fill the vector in order, serial and parallel; a short
    /// row panics instead of leaving slots unwritten.
    #[test]
    fn rows_from_iterators_fill_the_vector_in_order() {
        for (rows, inner) in [(0, 3), (3, 0), (1, 1), (7, 5), (300, 129)] {
            let want: Vec<u64> = (0..rows * inner).map(|i| i as u64 * 3 + 1).collect();
            for parallel in [false, true] {
                let got = rows_to_vec(rows, inner, parallel, |r| (0..inner).map(move |i| ((r * inner + i) * 3 + 1) as u64));
                assert_eq!(got, want, "{rows} x {inner}, parallel {parallel}");
            }
        }
        let short = std::panic::catch_unwind(|| rows_to_vec(4, 3, false, |r| (0..if r == 2 { 2 } else { 3 }).map(|i| i as f32)));
        assert!(short.is_err(), "a row of 2 elements where 3 are needed");
    }

    /// The vectors written once equal the plain loop, serial and in parallel
    /// chunks that do not divide the length.
    #[test]
    fn vectors_written_once_match_the_plain_loop() {
        for n in [0, 1, 7, 33, 1000, 40_001] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let f = |v: f32| crate::element::exp_f32(v) * v - 1.0;
            let g = |a: f32, b: f32| a * b + a;
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mapped: Vec<f32> = x.iter().map(|&v| f(v)).collect();
            let zipped: Vec<f32> = x.iter().zip(&y).map(|(&a, &b)| g(a, b)).collect();
            for (chunk, parallel) in [(8192, false), (8192, true), (999, true), (1, true)] {
                if n > 1000 && chunk == 1 {
                    continue;
                }
                assert_eq!(bits(&map_to_vec(&x, chunk, parallel, f)), bits(&mapped), "map n={n} chunk={chunk}");
                assert_eq!(bits(&zip_to_vec(&x, &y, chunk, parallel, g)), bits(&zipped), "zip n={n} chunk={chunk}");
            }
        }
    }
}

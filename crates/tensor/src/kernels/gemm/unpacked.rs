//! Small products with nothing packed: `C (m, n) <- alpha A (m, k) B (k, n) +
//! beta C` where B fits in L2 and a 12-row band of A in L1, read where they lie.
//!
//! Packing (see `pack.rs`) pays when each packed number is read many times.
//! Winograd's 16 products (`conv/winograd.rs`) are (tiles, C) by (C, K) with
//! C and K of 32-128: each number of A meets K / 16 = 4 vector FMAs, and
//! packing A cost as much as the arithmetic (21% of a 28 x 28 x 32 pass, 14%
//! at 14 x 14 x 64). The same holds for any product whose B is small: at
//! 128^3 packing B is a serial copy before the threads can start, and packing
//! A~ per band another. Here the 12 x 32 AVX-512 tile of `avx512.rs` reads A
//! through its two strides (a broadcast per entry, as from a packed panel)
//! and B's rows in place; columns past `n` are masked off. f32 with AVX-512F
//! only: [`gemm_unpacked`] says whether it ran, and the caller falls back.
//!
//! [`gemm_small`] is the five loops' shortcut for such products. It sums `k`
//! in the `kc` blocks LOOP 4 would cut, each block into fresh registers
//! added to C as the packed microkernel adds it (`alpha * ab + beta * C`,
//! no fused multiply-add), so C is bit-identical to the packed path's.
//! [`gemm_unpacked`], called by the convolutions, cuts `k` at the same places:
//! where a caller picks the unpacked or the packed path by the size of L2,
//! the choice changes the speed, never a bit of the result.

#![deny(unsafe_op_in_unsafe_fn)]

use super::{GemmScalar, Kernel, MatMut, MatRef};

/// Rows of A per tile, and columns of B (two 16-lane registers).
const MR: usize = 12;
const NR: usize = 32;

/// `C <- A B` (`accumulate` false) or `C <- A B + C` (true): A any
/// strides, B and C with unit column stride; if `T` is f32 and the best
/// kernel is AVX-512F's ([`Kernel::best`]). Returns false, touching nothing,
/// otherwise. `k` is summed in the `kc` blocks the five loops cut for the
/// AVX-512 kernel on this CPU's caches, so C is what `gemm_packed_b` with
/// that kernel gives, bit for bit.
///
/// # Panics
/// If it runs and the shapes do not match, or B's or C's columns are not
/// contiguous.
pub fn gemm_unpacked<T: GemmScalar>(a: MatRef<T>, b: MatRef<T>, accumulate: bool, c: MatMut<T>) -> bool {
    let beta = if accumulate { T::ONE } else { T::ZERO };
    Kernel::best() == Kernel::Avx512 && gemm_small(T::ONE, a, b, beta, c, 1)
}

/// `C <- alpha A B + beta C` with `k` summed in the `kc` blocks the five
/// loops cut for the AVX-512 kernel on this CPU's caches, and the rows of C
/// split between `threads` rayon tasks: A any strides, B and C with unit
/// column stride; if `T` is f32 and the CPU has AVX-512F. Returns false,
/// touching nothing, otherwise. With `beta == 0`, C is not read.
///
/// # Panics
/// If the shapes do not match, or B's or C's columns are not contiguous.
pub(super) fn gemm_small<T: GemmScalar>(alpha: T, a: MatRef<T>, b: MatRef<T>, beta: T, mut c: MatMut<T>, threads: usize) -> bool {
    super::assert_shapes("gemm_unpacked", (a.rows(), a.cols()), (b.rows(), b.cols()), (c.rows(), c.cols()));
    assert!(b.col_stride() == 1 || b.cols() <= 1, "gemm_unpacked: B's columns are not contiguous");
    assert!(c.col_stride() == 1 || c.cols() <= 1, "gemm_unpacked: C's columns are not contiguous");
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && is_x86_feature_detected!("avx512f") {
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        let ((ars, acs), brs, crs) = ((a.row_stride(), a.col_stride()), b.row_stride(), c.row_stride());
        let (a, b, c) = (a.data(), b.data(), c.data_mut());
        // SAFETY: T is f32 (the same type id), so these are slices of f32
        // and alpha, beta are f32 (`transmute_copy` between the same type).
        let (a, b, c, alpha, beta) = unsafe {
            (
                &*(a as *const [T] as *const [f32]),
                &*(b as *const [T] as *const [f32]),
                &mut *(c as *mut [T] as *mut [f32]),
                std::mem::transmute_copy::<T, f32>(&alpha),
                std::mem::transmute_copy::<T, f32>(&beta),
            )
        };
        // The same views over the same slices, which they were checked to fit.
        let fits = "a view re-made over the slice it was checked to fit";
        let a = MatRef::new(a, m, k, ars, acs).expect(fits);
        let b = MatRef::new(b, k, n, brs, 1).expect(fits);
        let c = MatMut::new(c, m, n, crs, 1).expect(fits);
        let kc = super::kc_block(k, super::blocks::<f32, super::avx512::Avx512>());
        split_rows(threads.max(1), alpha, a, b, beta, c, kc.max(1));
        return true;
    }
    let _ = (alpha, a, b, beta, c.rb(), threads);
    false
}

/// Runs the tiles on `parts` rayon tasks, each a band of C's rows of equal
/// height (a band need not be whole tiles: each runs its own short last tile).
#[cfg(target_arch = "x86_64")]
fn split_rows(parts: usize, alpha: f32, a: MatRef<f32>, b: MatRef<f32>, beta: f32, mut c: MatMut<f32>, kc: usize) {
    let m = a.rows();
    let Some((top, top_parts, bottom_parts)) = halves(m, parts) else {
        let shape = (m, a.cols(), b.cols());
        let strides = (a.row_stride(), a.col_stride(), b.row_stride(), c.row_stride());
        // SAFETY: this function runs only after AVX-512F was detected
        // (`gemm_small`); the views were checked to fit their slices when
        // they were made (`MatRef::new`, `MatMut::new`), the shapes to agree,
        // and B's and C's columns to be contiguous.
        unsafe { avx512::gemm(a.data(), b.data(), c.data_mut(), shape, strides, (alpha, beta), kc) };
        return;
    };
    let (a_top, a_bottom) = a.split_at_row(top);
    let (c_top, c_bottom) = c.split_at_row(top);
    rayon::join(
        || split_rows(top_parts, alpha, a_top, b, beta, c_top, kc),
        || split_rows(bottom_parts, alpha, a_bottom, b, beta, c_bottom, kc),
    );
}

/// How [`split_rows`] halves `m` rows for `parts` tasks: `(top rows, tasks
/// for them, tasks for the rest)`, the rows in proportion to the tasks, so
/// that the `parts` bands in the end differ by at most a row; `None` when
/// there is nothing to split.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn halves(m: usize, parts: usize) -> Option<(usize, usize, usize)> {
    if parts <= 1 || m < 2 {
        return None;
    }
    let top_parts = parts / 2;
    Some((m * top_parts / parts, top_parts, parts - top_parts))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
        _mm512_setzero_ps,
    };

    use super::{MR, NR};

    /// The tiles of C, 12 rows by 32 columns, rows outer (a band of A stays
    /// in L1 while it meets all of B): `c[i crs + j] <- alpha sum_p a[i ars +
    /// p acs] b[p brs + j] + beta c[i crs + j]`, `(m, k, n)` the shape, `p`
    /// summed in blocks of `kc`, each added to C (with `beta` the first time,
    /// 1 after) as LOOP 4 of the packed path adds them.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and every index above must be in bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        (m, k, n): (usize, usize, usize),
        (ars, acs, brs, crs): (usize, usize, usize, usize),
        (alpha, beta): (f32, f32),
        kc: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let (a_ptr, b_ptr, c_ptr) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            for j0 in (0..n).step_by(NR) {
                let width = NR.min(n - j0);
                let masks = [lane_mask(width), lane_mask(width.saturating_sub(16))];
                // k = 0 still runs one (empty) block: C <- beta C.
                for block in 0..k.div_ceil(kc).max(1) {
                    let (p0, beta) = (block * kc, if block == 0 { beta } else { 1.0 });
                    let depth = kc.min(k - p0);
                    // SAFETY: rows <= 12 rows of A from i0 and its columns p0 ..
                    // p0 + depth, B's rows p0 .. p0 + depth from column j0 with
                    // `masks` covering only the `width` columns that exist, and
                    // C's tile (`rows` x `width`, masked the same way) are
                    // inside the slices (the caller's contract).
                    unsafe {
                        let (a_tile, b_tile, c_tile) = (a_ptr.add(i0 * ars + p0 * acs), b_ptr.add(p0 * brs + j0), c_ptr.add(i0 * crs + j0));
                        let args = (depth, a_tile, (ars, acs), b_tile, brs, (alpha, beta), c_tile, crs, masks);
                        match rows {
                            1 => tile_12x32::<1>(args),
                            2 => tile_12x32::<2>(args),
                            3 => tile_12x32::<3>(args),
                            4 => tile_12x32::<4>(args),
                            5 => tile_12x32::<5>(args),
                            6 => tile_12x32::<6>(args),
                            7 => tile_12x32::<7>(args),
                            8 => tile_12x32::<8>(args),
                            9 => tile_12x32::<9>(args),
                            10 => tile_12x32::<10>(args),
                            11 => tile_12x32::<11>(args),
                            _ => tile_12x32::<MR>(args),
                        }
                    }
                }
            }
        }
    }

    /// The lanes of a 16-lane register that hold one of the first `width` columns.
    fn lane_mask(width: usize) -> u16 {
        if width >= 16 {
            u16::MAX
        } else {
            (1u16 << width) - 1
        }
    }

    /// One tile: `c[i * c_rs + j] <- alpha sum_p a[i * ars + p * acs] b[p * brs + j]
    /// + beta c[i * c_rs + j]` for `p < k`, `i < ROWS` and the columns `j < 32`
    /// that `masks` lets through; C is not read when `beta == 0`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; every entry named above, for `p < k`,
    /// must be in bounds (masked-off lanes are neither read nor written).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::type_complexity)]
    unsafe fn tile_12x32<const ROWS: usize>(
        (k, a, (ars, acs), b, brs, (alpha, beta), c, c_rs, masks): (
            usize,
            *const f32,
            (usize, usize),
            *const f32,
            usize,
            (f32, f32),
            *mut f32,
            usize,
            [u16; 2],
        ),
    ) {
        let mut acc: [[__m512; 2]; ROWS] = [[_mm512_setzero_ps(); 2]; ROWS];
        for p in 0..k {
            // wrapping_add: the second register's address may lie past B
            // when its lanes are all masked off.
            let b_row = b.wrapping_add(p * brs);
            // SAFETY: the loads touch only the masked lanes of row p of B's 32
            // columns, inside B by the caller's contract.
            let (b0, b1) = unsafe { (_mm512_maskz_loadu_ps(masks[0], b_row), _mm512_maskz_loadu_ps(masks[1], b_row.wrapping_add(16))) };
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: a[i, p], i < ROWS, p < k: the caller's contract.
                let a_ip = _mm512_set1_ps(unsafe { *a.add(i * ars + p * acs) });
                acc_i[0] = _mm512_fmadd_ps(a_ip, b0, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(a_ip, b1, acc_i[1]);
            }
        }
        // `alpha * ab + beta * C` with no fused multiply-add, as the packed
        // kernel's `store_tile!` rounds it.
        let alpha_v = _mm512_set1_ps(alpha);
        for (i, acc_i) in acc.iter().enumerate() {
            let row = c.wrapping_add(i * c_rs);
            for (h, (&sum, &mask)) in acc_i.iter().zip(&masks).enumerate() {
                let at = row.wrapping_add(16 * h);
                let ab = _mm512_mul_ps(alpha_v, sum);
                // SAFETY: the masked lanes of row i of the tile: the caller's contract.
                unsafe {
                    let value = if beta == 0.0 {
                        ab
                    } else {
                        _mm512_add_ps(ab, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, at)))
                    };
                    _mm512_mask_storeu_ps(at, mask, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::gemm_naive;

    /// Odd shapes around the tile (12 x 32) and the lane width (16), A
    /// row-major and column-major, C with a padded row stride: against the
    /// naive product, the gap columns of C still NaN; accumulating adds to C.
    #[test]
    fn matches_the_naive_product() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F (gemm_unpacked then returns false, checked below)");
            let a = [1.0f32];
            assert!(!gemm_unpacked(
                MatRef::new(&a, 1, 1, 1, 1).unwrap(),
                MatRef::new(&a, 1, 1, 1, 1).unwrap(),
                false,
                MatMut::new(&mut [0.0f32], 1, 1, 1, 1).unwrap()
            ));
            return;
        }
        for (m, k, n) in [(1, 1, 1), (12, 64, 32), (13, 7, 17), (49, 64, 64), (98, 33, 70), (5, 1, 16), (11, 128, 33)] {
            let a_rm: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let a_cm: Vec<f32> = (0..k).flat_map(|p| (0..m).map(move |i| (i, p))).map(|(i, p)| a_rm[i * k + p]).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0).collect();
            let b_view = MatRef::new(&b, k, n, n, 1).unwrap();
            let ldc = n + 3;
            for (a_data, ars, acs) in [(&a_rm, k, 1), (&a_cm, 1, m)] {
                let a_view = MatRef::new(a_data, m, k, ars, acs).unwrap();
                let mut want = vec![0.0f32; m * n];
                gemm_naive(1.0, a_view, b_view, 0.0, MatMut::new(&mut want, m, n, n, 1).unwrap());
                for accumulate in [false, true] {
                    let start = |i: usize, j: usize| if j < n { (i + 2 * j) as f32 * 0.5 } else { f32::NAN };
                    let mut c: Vec<f32> = (0..m * ldc).map(|idx| if accumulate { start(idx / ldc, idx % ldc) } else { f32::NAN }).collect();
                    assert!(gemm_unpacked(a_view, b_view, accumulate, MatMut::new(&mut c, m, n, ldc, 1).unwrap()));
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j];
                            if j >= n {
                                assert!(got.is_nan(), "({m}, {k}, {n}) gap column {j} of row {i} was written");
                                continue;
                            }
                            let base = if accumulate { start(i, j) } else { 0.0 };
                            let expect = want[i * n + j] + base;
                            let tol = 1e-5 * (k as f32 + 2.0) * (1.0 + expect.abs());
                            assert!(
                                (got - expect).abs() <= tol,
                                "({m}, {k}, {n}) acs {acs} accumulate {accumulate}: c[{i}, {j}] = {got}, want {expect}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The bands `split_rows` cuts: as many as tasks (or rows, if fewer),
    /// covering every row once, heights within one row of each other.
    #[test]
    fn rows_split_into_bands_of_equal_height() {
        fn bands(m: usize, parts: usize, out: &mut Vec<usize>) {
            match halves(m, parts) {
                None => out.push(m),
                Some((top, top_parts, bottom_parts)) => {
                    bands(top, top_parts, out);
                    bands(m - top, bottom_parts, out);
                }
            }
        }
        for m in [1, 2, 3, 7, 12, 13, 64, 128, 1000] {
            for parts in 1..=9 {
                let mut heights = Vec::new();
                bands(m, parts, &mut heights);
                heights.retain(|&h| h > 0);
                assert_eq!(heights.iter().sum::<usize>(), m, "{m} rows, {parts} tasks: {heights:?}");
                assert_eq!(heights.len(), parts.min(m), "{m} rows, {parts} tasks: {heights:?}");
                let (lo, hi) = (heights.iter().min().unwrap(), heights.iter().max().unwrap());
                assert!(hi - lo <= 1, "{m} rows, {parts} tasks: {heights:?}");
            }
        }
        assert_eq!(halves(1, 2), None, "one row is not split");
        assert_eq!(halves(128, 1), None, "one task does not split");
        assert_eq!(halves(128, 2), Some((64, 1, 1)));
    }

    /// Not f32: the caller's fallback runs.
    #[test]
    fn declines_f64() {
        let a = [1.0f64; 4];
        let mut c = [f64::NAN; 4];
        let view = MatRef::new(&a, 2, 2, 2, 1).unwrap();
        assert!(!gemm_unpacked(view, view, false, MatMut::new(&mut c, 2, 2, 2, 1).unwrap()));
        assert!(c.iter().all(|x| x.is_nan()));
    }
}

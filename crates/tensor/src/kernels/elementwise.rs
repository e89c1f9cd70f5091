//! Elementwise loops, compiled twice: once for the baseline instruction set and
//! once with AVX2 and FMA enabled, the copy chosen at run time.
//!
//! The loop body is the same Rust code. `#[target_feature]` on the outer function
//! lets LLVM use 8-wide AVX registers when it vectorises the inlined body (the
//! closure `f` included); the baseline copy gets 4-wide SSE2. This is the cheapest
//! way to make every elementwise op (silu, exp, add, ...) use the wide registers
//! without writing intrinsics per op.

/// `out[i] = f(x[i])`.
///
/// # Panics
/// If the lengths differ.
pub fn map_into<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [T], f: F) {
    assert_eq!(x.len(), out.len(), "map_into: input and output lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above;
        // that is the only requirement of a `#[target_feature]` function.
        unsafe { map_into_avx2(x, out, f) };
        return;
    }
    map_into_portable(x, out, f);
}

/// `out[i] = f(a[i], b[i])`.
///
/// # Panics
/// If the lengths differ.
pub fn zip_into<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    assert!(a.len() == out.len() && b.len() == out.len(), "zip_into: input and output lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
        unsafe { zip_into_avx2(a, b, out, f) };
        return;
    }
    zip_into_portable(a, b, out, f);
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    // The std macro caches the CPUID answer, so this is a load and a test.
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[inline(always)]
fn map_into_portable<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [T], f: F) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
fn zip_into_portable<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_into_avx2<T: Copy, F: Fn(T) -> T>(x: &[T], out: &mut [T], f: F) {
    map_into_portable(x, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn zip_into_avx2<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    zip_into_portable(a, b, out, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both copies against a plain loop, on odd lengths, with NaN-poisoned outputs.
    #[test]
    fn dispatched_loops_match_the_plain_loop() {
        for n in [0, 1, 7, 8, 9, 33, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let f = |v: f32| crate::element::exp_f32(v) * v - 1.0;
            let mut out = vec![f32::NAN; n];
            map_into(&x, &mut out, f);
            let mut portable = vec![f32::NAN; n];
            map_into_portable(&x, &mut portable, f);
            assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), x.iter().map(|&v| f(v).to_bits()).collect::<Vec<_>>());
            assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let mut sum = vec![f32::NAN; n];
            zip_into(&x, &y, &mut sum, |a, b| a * b + a);
            assert!(sum.iter().zip(x.iter().zip(&y)).all(|(s, (a, b))| s.to_bits() == (a * b + a).to_bits()));
        }
    }
}

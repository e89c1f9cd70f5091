//! The machine's f32 compute peak, measured: a loop of fused multiply-adds on
//! registers only, no memory traffic, on every thread of the pool at once.
//!
//! The roofline of a kernel is `min(peak, bandwidth x intensity)`; this is the
//! flat part. Twelve independent accumulators cover the FMA latency (4 cycles)
//! times the FMA units (2) with room to spare, so the loop runs at the units'
//! throughput: `lanes x 2 flops x units x clock` per core.

use super::gemm::Kernel;
use std::time::Instant;

/// Independent accumulator chains in the loop.
const CHAINS: usize = 12;

/// Runs `iterations` rounds of `CHAINS` FMAs on the widest vectors `kernel`
/// has, returning the flop count and a value that depends on every result (so
/// the loop cannot be optimised away).
fn fma_loop(kernel: Kernel, iterations: usize) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Avx512 && kernel.available() {
            // SAFETY: AVX-512F was detected at run time just above.
            let sum = unsafe { avx512_loop(iterations) };
            return ((iterations * CHAINS * 16 * 2) as f64, sum);
        }
        if kernel == Kernel::Avx2Fma && kernel.available() {
            // SAFETY: AVX2 and FMA were detected at run time just above.
            let sum = unsafe { avx2_loop(iterations) };
            return ((iterations * CHAINS * 8 * 2) as f64, sum);
        }
    }
    let mut acc = [1.0f32; CHAINS];
    for _ in 0..iterations {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    ((iterations * CHAINS * 2) as f64, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512_loop(iterations: usize) -> f32 {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_reduce_add_ps, _mm512_set1_ps};
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for r in &mut acc {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_loop(iterations: usize) -> f32 {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for r in &mut acc {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut sum = 0.0;
    for r in acc {
        // SAFETY: `lanes` holds 8 floats, the width of one 256-bit store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
        sum += lanes.iter().sum::<f32>();
    }
    sum
}

/// The peak f32 GFLOP/s of `kernel`'s vectors on all threads of the current
/// rayon pool together: each thread runs the FMA loop for about `seconds`.
#[must_use]
pub fn peak_gflops(kernel: Kernel, seconds: f64) -> f64 {
    pool_gflops(seconds, (1 << 16, 1 << 34), |iterations| std::hint::black_box(fma_loop(kernel, iterations)).0)
}

/// GFLOP/s of `run` on every thread of the current rayon pool at once, each
/// thread for about `seconds`: `run(n)` does `n` repetitions of some work and
/// returns the flops it did (`run` keeps its results alive, with
/// `std::hint::black_box`). The repetitions are calibrated on one thread
/// first, doubling from `first` (up to about `cap`) until a run takes a
/// quarter of `seconds`; the pool then runs four times that many.
pub(crate) fn pool_gflops(seconds: f64, (first, cap): (usize, usize), run: impl Fn(usize) -> f64 + Sync) -> f64 {
    let mut repetitions = first;
    loop {
        let started = Instant::now();
        std::hint::black_box(run(repetitions));
        if started.elapsed().as_secs_f64() > seconds / 4.0 || repetitions > cap {
            break;
        }
        repetitions *= 2;
    }
    let repetitions = repetitions * 4;
    let started = Instant::now();
    let flops: f64 = rayon::broadcast(|_| std::hint::black_box(run(repetitions))).iter().sum();
    flops / started.elapsed().as_secs_f64() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_computes_the_same_recurrence() {
        // x <- 0.999999 x + 1e-7 from 1, n times, on every lane of every chain.
        let n = 1000;
        let mut x = 1.0f32;
        for _ in 0..n {
            x = x.mul_add(0.999_999, 1e-7);
        }
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            let (flops, sum) = fma_loop(kernel, n);
            let lanes = flops / (2 * n * CHAINS) as f64;
            assert!((f64::from(sum) - lanes * CHAINS as f64 * f64::from(x)).abs() < 1e-3, "{kernel:?}: {sum} vs {x} x {lanes} lanes");
        }
        assert!(peak_gflops(Kernel::Portable, 0.01) > 0.0);
    }
}

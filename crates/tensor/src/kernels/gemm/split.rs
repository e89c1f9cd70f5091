//! When a product is worth splitting between threads, measured on the machine.
//!
//! Handing bands of C to another rayon worker costs a steal and, if that
//! worker has gone idle, a wake-up. How much depends on the machine, not on
//! the CPU alone: on the AMD EPYC this project was tuned on, two threads do a
//! 128^3 product 1.5 times faster than one; on the Intel Xeon virtual machine
//! of session 9, where an idle worker spins on `sched_yield` system calls,
//! they do it 1.6 times slower, and win only from about 256^3 on.
//!
//! So the smallest product a worker splits is measured: [`calibrate_split`]
//! times square products of growing side on one thread and on the pool,
//! alternating, and keeps the smallest side from which the pool is not more
//! than 5% slower at that side and every larger one, once per process. Until
//! it runs, the default of 64^3 stands. Splitting never changes a result (k is
//! never split, see "Threads" in the module docs), only its speed, so a
//! measurement disturbed by other work costs time, never reproducibility.
//!
//! A tie goes to the pool. When the other workers do not run during the
//! measurement (a process's threads start on their parent's core until the
//! scheduler moves one away, or another program holds the other core), the
//! split products run whole on the calling thread, as fast as unsplit ones: on
//! the Intel Xeon (model 167) of session 19 such starts timed the pool at
//! 0.98-1.04 of one thread at every side up to 256^3, for ten milliseconds and
//! more. The old rule (split only where the pool wins by 10%) read that as
//! "never split" at some sides: 3 starts in 30 kept products up to 256^3 on
//! one thread for the whole run (GEMM 128^3 at 144 against 255 GFLOP/s in
//! `ddpm bench`); measuring three times (30 ms instead of 10) and keeping the
//! smallest threshold still did in 4 starts of 40 in a busier hour. With this
//! rule 80 starts in 80 measured 64^3. A pool that truly loses, like session
//! 9's (1.6 times slower), is slower by far more than 5%.

use std::sync::OnceLock;
use std::time::Instant;

use super::{gemm_with, Kernel, MatMut, MatRef, Threading};

/// The split threshold before any measurement: about 64^3 multiply-adds
/// (~5 us on one core), which paid for a fork on the AMD machine.
const DEFAULT_SPLIT_MIN_MNK: usize = 64 * 64 * 64;

/// Sides of the square products timed, ascending.
const SIDES: [usize; 5] = [64, 96, 128, 192, 256];

/// Rounds of timings over all sides; the fastest of them counts.
const ROUNDS: usize = 15;

/// The pool's time over one thread's above which a side counts as a loss.
const LOSS_RATIO: f64 = 1.05;

/// The threshold [`calibrate_split`] measured, once set.
static MEASURED_MIN_MNK: OnceLock<usize> = OnceLock::new();

/// Below this many multiply-adds (`m * n * k`) a GEMM called from a rayon
/// worker runs on one thread: the default, or what [`calibrate_split`] measured.
pub fn split_min_mnk() -> usize {
    MEASURED_MIN_MNK.get().copied().unwrap_or(DEFAULT_SPLIT_MIN_MNK)
}

/// Measures from which product size (`m * n * k`) two or more threads beat one
/// on this machine, makes it the threshold of every later f32 and f64 GEMM
/// called from the pool, and returns it. Takes a few milliseconds, the first
/// time; later calls return the same threshold without measuring again.
///
/// Call it from a thread of the rayon pool the GEMMs will run in (the `ddpm`
/// program's main thread is one); from anywhere else, or with a pool of one
/// thread, it measures nothing and returns the threshold in force.
pub fn calibrate_split() -> usize {
    if rayon::current_thread_index().is_none() || rayon::current_num_threads() < 2 {
        return split_min_mnk();
    }
    *MEASURED_MIN_MNK.get_or_init(measure_split_min_mnk)
}

/// Times each of [`SIDES`] on one thread and split on the pool; the rule of
/// [`split_threshold`] on the best times. The rounds go over all sides in
/// turn, so a stretch of a few milliseconds in which the other core is busy
/// elsewhere (a virtual machine's host, another process) spoils a round of
/// every side, not every round of one side; the best of the rounds counts.
/// The pool's other workers busy-wait meanwhile, as they do through the long
/// runs of parallel work (training, sampling) the threshold is for.
fn measure_split_min_mnk() -> usize {
    let _awake = crate::KeepAwake::new();
    let kernel = Kernel::best();
    let mut buffers: Vec<(Vec<f32>, Vec<f32>)> =
        SIDES.iter().map(|&side| ((0..side * side).map(|i| (i % 17) as f32 - 8.0).collect(), vec![0.0f32; side * side])).collect();
    let mut time = |i: usize, threading: Threading| {
        let side = SIDES[i];
        let (a, c) = &mut buffers[i];
        let start = Instant::now();
        // A and B (side, side) row-major (the same numbers), C (side, side).
        let square = "a side x side view of side^2 numbers";
        let a_view = MatRef::new(a, side, side, side, 1).expect(square);
        let c_view = MatMut::new(c, side, side, side, 1).expect(square);
        gemm_with(kernel, threading, 1.0, a_view, a_view, 0.0, c_view);
        start.elapsed().as_secs_f64()
    };
    let mut timings: Vec<SideTiming> = SIDES.iter().map(|&side| SideTiming { side, single: f64::INFINITY, split: f64::INFINITY }).collect();
    // A first round warms the caches and the scratch pools and does not count.
    for round in 0..=ROUNDS {
        for (i, timing) in timings.iter_mut().enumerate() {
            let (single, split) = (time(i, Threading::Single), time(i, Threading::Split));
            if round > 0 {
                timing.single = timing.single.min(single);
                timing.split = timing.split.min(split);
            }
        }
    }
    split_threshold(&timings)
}

/// The best time of a `side^3` product on one thread and split on the pool.
#[derive(Clone, Copy, Debug)]
struct SideTiming {
    side: usize,
    single: f64,
    split: f64,
}

/// The rule: the smallest side from which the pool loses (by [`LOSS_RATIO`])
/// at no measured side, cubed. If it loses even at the largest side, products
/// up to twice that side stay on one thread.
fn split_threshold(timings: &[SideTiming]) -> usize {
    let holds_from = timings.iter().rev().take_while(|t| t.split <= LOSS_RATIO * t.single).last();
    match (holds_from, timings.last()) {
        (Some(t), _) => t.side.pow(3),
        (None, Some(largest)) => (2 * largest.side).pow(3),
        (None, None) => DEFAULT_SPLIT_MIN_MNK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(ratios: &[(usize, f64)]) -> Vec<SideTiming> {
        ratios.iter().map(|&(side, ratio)| SideTiming { side, single: 1.0, split: ratio }).collect()
    }

    #[test]
    fn the_threshold_is_the_smallest_side_from_which_the_pool_never_loses() {
        // AMD-like: the pool wins everywhere.
        assert_eq!(split_threshold(&timings(&[(64, 0.8), (96, 0.7), (128, 0.6)])), 64 * 64 * 64);
        // Intel-VM-like: loses small, wins from 192 on.
        assert_eq!(split_threshold(&timings(&[(64, 1.9), (128, 1.6), (192, 0.85), (256, 0.7)])), 192 * 192 * 192);
        // A win below a loss does not count: it must hold for every larger side.
        assert_eq!(split_threshold(&timings(&[(64, 0.8), (128, 1.1), (256, 0.7)])), 256 * 256 * 256);
        // Other workers that never ran: a tie at every side splits everything.
        assert_eq!(split_threshold(&timings(&[(64, 1.02), (128, 1.0), (256, 0.99)])), 64 * 64 * 64);
        // 5% slower is still a tie, more is a loss.
        assert_eq!(split_threshold(&timings(&[(64, 1.06), (128, 1.05), (256, 0.9)])), 128 * 128 * 128);
        // A loss even at the largest side: twice that side.
        assert_eq!(split_threshold(&timings(&[(128, 1.2), (256, 1.1)])), 512 * 512 * 512);
        assert_eq!(split_threshold(&[]), DEFAULT_SPLIT_MIN_MNK);
    }

    #[test]
    fn calibration_measures_only_inside_a_pool_of_several_threads() {
        let outside = calibrate_split();
        assert_eq!(outside, split_min_mnk(), "outside a pool nothing is measured");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(calibrate_split), split_min_mnk(), "one thread: nothing to split");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let measured = pool.install(calibrate_split);
        assert_eq!(pool.install(calibrate_split), measured, "measured once per process");
        let candidates: Vec<usize> = SIDES.iter().map(|s| s.pow(3)).chain([(2 * SIDES[SIDES.len() - 1]).pow(3)]).collect();
        assert!(candidates.contains(&measured), "{measured} is not one of {candidates:?}");
        assert_eq!(split_min_mnk(), measured);
    }
}

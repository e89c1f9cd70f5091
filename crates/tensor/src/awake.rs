//! Keeping rayon's idle workers awake through a long run of parallel ops.
//!
//! A rayon worker that finds nothing to do looks again for a few dozen rounds,
//! each a `sched_yield` system call, and then sleeps on a futex until the next
//! parallel op wakes it. A training step is hundreds of parallel ops (every
//! convolution, norm and elementwise loop of the forward and backward passes)
//! with short sequential stretches between them (the autograd tape, small ops,
//! allocation) that are long enough for the workers to fall asleep, so op after
//! op waits for a thread to wake up. On the Intel Xeon virtual machine of
//! session 12, a profile of the quick UNet's step put 7% of it in the operating
//! system's scheduler.
//!
//! [`KeepAwake`] gives every other worker of the pool a job that keeps asking
//! rayon for work ([`rayon::yield_now`]) until the guard is dropped, and
//! between two looks offers its core to any other thread that wants it
//! (`sched_yield`, as rayon's own idle rounds do), but never sleeps: the tasks
//! of each op are stolen as soon as they are pushed, and nobody has to be
//! woken. Measured there, alternating steps with and without the guard in one
//! process: the quick UNet's step (batch 64) 268 -> 251 ms (medians of 20),
//! the course UNet's 968 -> 884 ms (medians of 4). The price is that the
//! workers' cores stay busy while the guard lives, also between ops, so hold
//! it only around a loop of parallel work (training, sampling). It changes no
//! result: which thread runs a task never changes what the task computes.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Set while a [`KeepAwake`] lives: a second guard (sampling inside a training
/// run) is a no-op instead of a second set of spinners.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Spinner jobs running right now (for the tests).
static SPINNING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// True on a worker that is running a spinner.
    static SPINNER_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the other workers of the current rayon pool busy-waiting for work
/// until dropped (see the module docs). A no-op with a pool of one thread, or
/// while another guard lives.
#[must_use = "the workers stay awake only while the guard lives"]
#[derive(Debug)]
pub struct KeepAwake {
    stop: Option<Arc<AtomicBool>>,
}

impl KeepAwake {
    /// Starts one spinner per worker other than the calling thread (every
    /// worker if the caller is not one of the pool's).
    pub fn new() -> KeepAwake {
        let threads = rayon::current_num_threads();
        let caller = rayon::current_thread_index();
        let spinners = threads - usize::from(caller.is_some());
        if threads < 2 || spinners == 0 || ACTIVE.swap(true, Ordering::AcqRel) {
            return KeepAwake { stop: None };
        }
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..spinners {
            spawn_spinner(Arc::clone(&stop), caller);
        }
        KeepAwake { stop: Some(stop) }
    }

    /// Spinner jobs running right now, across all guards.
    pub fn spinning() -> usize {
        SPINNING.load(Ordering::Acquire)
    }
}

impl Default for KeepAwake {
    fn default() -> Self {
        KeepAwake::new()
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.store(true, Ordering::Release);
            ACTIVE.store(false, Ordering::Release);
        }
    }
}

/// A job that runs other jobs until `stop`. It must not run on the thread that
/// made the guard (that thread would spin instead of returning to its own
/// work) nor on a worker that already spins; there it hands itself back to the
/// pool for another worker to take.
fn spawn_spinner(stop: Arc<AtomicBool>, caller: Option<usize>) {
    rayon::spawn(move || {
        if stop.load(Ordering::Acquire) {
            return;
        }
        if rayon::current_thread_index() == caller || SPINNER_HERE.with(Cell::get) {
            spawn_spinner(stop, caller);
            return;
        }
        SPINNER_HERE.with(|here| here.set(true));
        SPINNING.fetch_add(1, Ordering::AcqRel);
        while !stop.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::yield_now();
            }
        }
        SPINNING.fetch_sub(1, Ordering::AcqRel);
        SPINNER_HERE.with(|here| here.set(false));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    /// In a pool of three threads the two other workers spin, a second guard
    /// adds none, parallel work still runs (on the spinners) with the same
    /// result, and dropping the guard stops them.
    #[test]
    fn spinners_run_the_pools_work_and_stop_with_the_guard() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            let expected: u64 = (0..100_000u64).map(|i| i * i % 7).sum();
            let guard = KeepAwake::new();
            wait_until("two spinners run", || KeepAwake::spinning() == 2);
            let nested = KeepAwake::new();
            assert!(nested.stop.is_none(), "a second guard starts nothing");
            for _ in 0..20 {
                let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i % 7).sum();
                assert_eq!(sum, expected);
            }
            drop(nested);
            assert_eq!(KeepAwake::spinning(), 2, "dropping the no-op guard stops nothing");
            drop(guard);
            wait_until("the spinners stop", || KeepAwake::spinning() == 0);
            let again = KeepAwake::new();
            wait_until("a new guard spins again", || KeepAwake::spinning() == 2);
            drop(again);
            wait_until("the spinners stop", || KeepAwake::spinning() == 0);
        });
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        single.install(|| assert!(KeepAwake::new().stop.is_none(), "one thread: nothing to keep awake"));
    }
}

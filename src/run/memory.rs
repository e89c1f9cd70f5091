//! Will a batch fit in memory? Measured, not guessed.
//!
//! The memory of a step grows linearly in the batch: activations (kept for the
//! backward pass in training) per example, plus the weights, gradients and
//! optimizer state, which do not depend on it. [`bytes_per_example`] runs the step
//! once on a small probe batch in this fresh process and reads the growth of the
//! peak resident set (Linux's `VmHWM`); dividing it all by the probe's size
//! over-states the cost per example a little, so a refusal is never a false alarm
//! for a batch far below the limit. [`check_batch`] refuses a batch whose estimate
//! exceeds the memory available (`MemAvailable`), before the kernel kills the
//! process without a word.

use crate::error::{Error, Result};

/// Examples in the probe batch.
pub const PROBE_BATCH: usize = 8;

/// A `kB` field of a `/proc` file, in bytes.
fn proc_kb(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let kb: u64 = text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory the system can give without swapping (Linux), in bytes.
#[must_use]
pub fn available_bytes() -> Option<u64> {
    proc_kb("/proc/meminfo", "MemAvailable:")
}

/// The growth of this process's peak resident memory while `step` runs on
/// [`PROBE_BATCH`] examples, per example; `None` where Linux's counters are absent.
///
/// # Errors
/// Whatever `step` returns.
pub fn bytes_per_example(step: impl FnOnce(usize) -> Result<()>) -> Result<Option<u64>> {
    // Writing 5 to clear_refs resets VmHWM to the current resident size.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_kb("/proc/self/status", "VmHWM:");
    step(PROBE_BATCH)?;
    let after = proc_kb("/proc/self/status", "VmHWM:");
    Ok(match (reset, before, after) {
        (true, Some(before), Some(after)) => Some(after.saturating_sub(before) / PROBE_BATCH as u64),
        _ => None,
    })
}

/// Refuses `batch` examples of `per_example` bytes when they exceed `available` bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag`, the estimate, what is available and the
/// largest batch that fits.
pub fn check_batch(flag: &'static str, batch: usize, per_example: u64, available: u64) -> Result<()> {
    let needed = per_example.saturating_mul(batch as u64);
    if needed <= available {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    Err(Error::InvalidArgument {
        what: flag,
        reason: format!(
            "a batch of {batch} needs about {:.1} GB ({:.2} MB per example, measured on {PROBE_BATCH}) but {:.1} GB is available; use {flag} {} or less",
            gb(needed),
            per_example as f64 / 1e6,
            gb(available),
            available / per_example.max(1)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_fits_up_to_the_available_bytes() {
        assert!(check_batch("--batch", 10, 100, 1000).is_ok());
        let e = check_batch("--batch", 11, 100, 1000).unwrap_err().to_string();
        assert!(e.contains("--batch 10 or less"), "{e}");
        // 300 examples of 20 MB are 6 GB; 4 GB hold 200 of them.
        let e = check_batch("--batch", 300, 20_000_000, 4_000_000_000).unwrap_err().to_string();
        assert!(
            e.contains(
                "a batch of 300 needs about 6.0 GB (20.00 MB per example, measured on 8) but 4.0 GB is available; use --batch 200 or less"
            ),
            "{e}"
        );
    }

    // The probe itself is tested in `tests/memory_probe.rs`, alone in its process:
    // here other tests allocate and free at the same time, which moves the peak.
}

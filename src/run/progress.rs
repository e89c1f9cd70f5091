//! Progress of a long command: a bar with an ETA on a terminal, and plain log lines
//! when stderr goes to a file or a pipe (a log, a scheduler, CI).
//!
//! A log line is written when the work crosses another tenth of its total, or
//! [`LOG_EVERY`] after the last line, whichever comes first: a short run logs ten
//! lines, a run of hours one line every half minute.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest time between two log lines.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The progress of one piece of work of `total` units.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    log: Option<Mutex<Log>>,
}

#[derive(Debug)]
struct Log {
    started: Instant,
    /// Units done before this process started (a resumed run).
    offset: u64,
    position: u64,
    /// The units done when the last line was written, and when.
    last_position: u64,
    last_time: Instant,
    message: String,
}

impl Progress {
    /// Progress of `total` `unit`s of `what` (e.g. "sample", "steps"): a bar if stderr
    /// is a terminal, log lines otherwise.
    #[must_use]
    pub fn new(what: &'static str, total: u64, unit: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{what} {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  [{{elapsed_precise}} < ETA {{eta_precise}}]"
                ))
                .expect("a valid template"),
            );
            Progress { what, unit, total, bar: Some(bar), log: None }
        } else {
            Progress::logged(what, total, unit)
        }
    }

    /// Progress written as log lines, whatever stderr is.
    #[must_use]
    pub fn logged(what: &'static str, total: u64, unit: &'static str) -> Self {
        let now = Instant::now();
        let log = Log { started: now, offset: 0, position: 0, last_position: 0, last_time: now, message: String::new() };
        Progress { what, unit, total, bar: None, log: Some(Mutex::new(log)) }
    }

    /// No output at all (`--quiet`, and work inside another command's progress).
    #[must_use]
    pub fn hidden() -> Self {
        Progress { what: "", unit: "", total: 0, bar: None, log: None }
    }

    /// Starts at `position` units already done (a resumed run): the ETA counts only
    /// the rate of this process.
    pub fn start_at(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.reset_eta();
        }
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (log.offset, log.position, log.last_position) = (position, position, position);
        }
    }

    /// Moves to `position` units done.
    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.position = position;
            self.maybe_log(&mut log);
        }
    }

    /// One more unit done.
    pub fn inc(&self) {
        if self.bar.is_some() || self.log.is_some() {
            self.set_position(self.position() + 1);
        }
    }

    /// The units done so far (0 when hidden).
    #[must_use]
    pub fn position(&self) -> u64 {
        match (&self.bar, &self.log) {
            (Some(bar), _) => bar.position(),
            (None, Some(log)) => log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).position,
            (None, None) => 0,
        }
    }

    /// A note shown after the counts (e.g. the current loss).
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        } else if let Some(log) = &self.log {
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).message = message;
        }
    }

    /// Removes the bar; the command's result follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn maybe_log(&self, log: &mut Log) {
        if !self.line_due(log, log.last_time.elapsed()) {
            return;
        }
        eprintln!("{}", self.line(log, log.started.elapsed().as_secs_f64()));
        log.last_position = log.position;
        log.last_time = Instant::now();
    }

    /// Whether a line is due: the position moved, and into another tenth of the
    /// total or at least [`LOG_EVERY`] (`since_last`) after the last line.
    fn line_due(&self, log: &Log, since_last: Duration) -> bool {
        let tenth = self.total.div_ceil(10).max(1);
        let crossed = log.position / tenth > log.last_position / tenth;
        (crossed || since_last >= LOG_EVERY) && log.position != log.last_position
    }

    /// The log line after `elapsed` seconds of this process.
    fn line(&self, log: &Log, elapsed: f64) -> String {
        // The rate so far, applied to the rest.
        let eta = elapsed / (log.position - log.offset).max(1) as f64 * self.total.saturating_sub(log.position) as f64;
        let percent = 100.0 * log.position as f64 / self.total.max(1) as f64;
        let mut line = format!(
            "{}: {}/{} {} ({percent:.0}%), {} elapsed, ETA {}",
            self.what,
            log.position,
            self.total,
            self.unit,
            clock(elapsed),
            clock(eta)
        );
        if !log.message.is_empty() {
            line.push_str(", ");
            line.push_str(&log.message);
        }
        line
    }
}

/// Seconds as `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_hours_minutes_seconds() {
        assert_eq!(clock(0.4), "0:00:00");
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn a_resumed_count_starts_where_the_run_stopped_and_times_only_the_new_units() {
        let progress = Progress::logged("train", 100, "steps");
        progress.start_at(40);
        assert_eq!(progress.position(), 40);
        let log = progress.log.as_ref().unwrap().lock().unwrap();
        // The ETA divides the time of this process by the units it did: position - offset.
        assert_eq!((log.offset, log.last_position), (40, 40));
    }

    #[test]
    fn a_line_gives_the_count_the_share_and_an_eta_from_this_process_s_rate() {
        let progress = Progress::logged("train", 100, "steps");
        progress.start_at(40);
        progress.set_message("loss 0.1".into());
        let mut log = progress.log.as_ref().unwrap().lock().unwrap();
        log.position = 50;
        // 10 steps in 20 s: 2 s a step, so the 50 left take 100 s.
        assert_eq!(progress.line(&log, 20.0), "train: 50/100 steps (50%), 0:00:20 elapsed, ETA 0:01:40, loss 0.1");
    }

    #[test]
    fn a_line_is_due_at_each_tenth_or_after_log_every_if_the_count_moved() {
        let progress = Progress::logged("train", 100, "steps");
        let log = progress.log.as_ref().unwrap().lock().unwrap();
        let soon = Duration::from_secs(1);
        let due = |log: &Log, last: u64, position: u64, since: Duration| {
            let log = Log { last_position: last, position, message: String::new(), ..*log };
            progress.line_due(&log, since)
        };
        // Tenths of 100 steps: 10, 20, ...
        assert!(due(&log, 9, 10, soon) && due(&log, 5, 25, soon));
        assert!(!due(&log, 10, 11, soon) && !due(&log, 11, 19, soon));
        assert!(due(&log, 10, 11, LOG_EVERY) && !due(&log, 11, 11, LOG_EVERY));
    }
}

//! The `ddpm` program: parses the command line, runs one command, and turns any
//! error into one line on stderr with exit code 2 (bad flags or files) or 1 (a run
//! that failed), never a panic or a backtrace.

use clap::Parser;
use course::cli::args::Cli;
use course::error::Error;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that Ctrl-C sets: training loops stop after the current step and save.
fn interrupt_flag() -> Result<Arc<AtomicBool>, Error> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::InvalidArgument { what: "signal handler", reason: e.to_string() })?;
    Ok(interrupt)
}

fn main() -> ExitCode {
    // The main thread joins rayon's pool, so its kernels fork work into the pool
    // instead of handing it all over and sleeping.
    if let Err(e) = rayon::ThreadPoolBuilder::new().use_current_thread().build_global() {
        eprintln!("warning: could not set up the thread pool: {e}");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints --help and --version itself (exit 0) and bad flags (exit 2).
        Err(e) => e.exit(),
    };
    match course::cli::run(cli, interrupt_flag) {
        Ok(text) => {
            // A reader that stops early (`ddpm info | head`) is not an error.
            if !text.is_empty() {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

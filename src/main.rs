//! The `ddpm` program: parses the command line, runs one command, and turns any
//! error into one line on stderr with the exit codes of [`course::cli::args::EXIT_CODES`]
//! (0 done, 1 diverged, 2 bad input, 130 interrupted), never a panic or a backtrace.
#![forbid(unsafe_code)]

use clap::Parser;
use course::cli::args::{Cli, Command};
use std::io::Write as _;
use std::process::ExitCode;

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
    course::data::dir::set_flag(cli.data_dir.clone());
    // From which size a GEMM is split between the threads, measured here (a few
    // ms) for the commands that multiply matrices; reading a file's header does not.
    if !matches!(cli.command, Command::Info(_) | Command::Export(_)) {
        tensor::kernels::gemm::calibrate_split();
    }
    // Training stops after its current step and saves; everything else quits at once.
    let graceful = matches!(cli.command, Command::Train(_) | Command::Ablation(_));
    let result = course::cli::signals::install(graceful).and_then(|interrupt| course::cli::run(cli, &interrupt));
    match result {
        Ok((text, code)) => {
            // A reader that stops early (`ddpm info | head`) is not an error.
            if !text.is_empty() {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

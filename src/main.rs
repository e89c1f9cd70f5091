//! The `ddpm` program: parses the command line, runs one command, and turns any
//! error into one line on stderr with exit code 2 (bad flags or files) or 1 (a run
//! that failed), never a panic or a backtrace.

use clap::Parser;
use course::cli::args::{ClassifierCommand, Cli, Command};
use course::error::Error;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs the command and returns what it prints on stdout.
fn run(cli: Cli) -> Result<String, Error> {
    Ok(match cli.command {
        Command::Train(args) => course::run::train::train(&args, &*interrupt_flag()?)?.line(),
        Command::Ablation(args) => course::run::ablation::run(&args, &*interrupt_flag()?)?,
        Command::Sample(args) => course::run::commands::sample(&args)?,
        Command::Forward(args) => course::run::commands::forward(&args)?,
        Command::Nll(args) => {
            let (report, plot) = course::run::commands::nll(&args)?;
            if args.json {
                serde_json::json!({
                    "images": report.images,
                    "total_bpd": report.total_bpd,
                    "total_bpd_stderr": report.total_bpd_stderr,
                    "prior_bpd": report.prior_bpd,
                    "vb_bpd": report.vb_bpd,
                    "decoder_bpd": report.decoder_bpd,
                })
                .to_string()
            } else {
                format!("{}\nper-timestep curve -> {}", report.table(), plot.display())
            }
        }
        Command::Eval(args) => {
            let (report, line) = course::eval::judge::eval(&args)?;
            if args.json {
                serde_json::to_string(&report).expect("serialises")
            } else {
                format!("{line}\n{}", report.table())
            }
        }
        Command::Classifier(ClassifierCommand::Train(args)) => course::eval::classifier::train(&args)?,
        Command::Classifier(ClassifierCommand::Test(args)) => course::eval::classifier::test(&args)?,
        Command::Export(args) => course::run::commands::export(&args)?,
        Command::Info(args) => course::run::commands::info(&args)?,
        // The report prints its rows itself, as they are measured.
        Command::Bench(args) => match course::bench::report::run(args.json) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(Error::Io { path: "bench".into(), source: e }),
            _ => String::new(),
        },
    })
}

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
    match run(cli) {
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

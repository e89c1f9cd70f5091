//! The `ddpm` program: parses the command line, runs one command, and turns any
//! error into one line on stderr with exit code 2 (bad flags or files) or 1 (a run
//! that failed), never a panic or a backtrace.

use clap::Parser;
use course::cli::{ClassifierCommand, Cli, Command};
use course::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Train(args) => println!("{}", course::train::train(&args, &*interrupt_flag()?)?.line()),
        Command::Ablation(args) => println!("{}", course::ablation::run(&args, &*interrupt_flag()?)?),
        Command::Sample(args) => println!("{}", course::commands::sample(&args)?),
        Command::Forward(args) => println!("{}", course::commands::forward(&args)?),
        Command::Nll(args) => {
            let (report, plot) = course::commands::nll(&args)?;
            if args.json {
                println!("{}", serde_json::json!({
                    "images": report.images,
                    "total_bpd": report.total_bpd,
                    "total_bpd_stderr": report.total_bpd_stderr,
                    "prior_bpd": report.prior_bpd,
                    "vb_bpd": report.vb_bpd,
                    "decoder_bpd": report.decoder_bpd,
                }));
            } else {
                println!("{}\nper-timestep curve -> {}", report.table(), plot.display());
            }
        }
        Command::Eval(args) => {
            let (report, line) = course::eval::eval(&args)?;
            if args.json {
                println!("{}", serde_json::to_string(&report).expect("serialises"));
            } else {
                println!("{line}\n{}", report.table());
            }
        }
        Command::Classifier(ClassifierCommand::Train(args)) => println!("{}", course::classifier::train(&args)?),
        Command::Classifier(ClassifierCommand::Test(args)) => println!("{}", course::classifier::test(&args)?),
        Command::Export(args) => println!("{}", course::commands::export(&args)?),
        Command::Info(args) => println!("{}", course::commands::info(&args)?),
        Command::Bench(args) => course::bench_report::run(args.json).map_err(|e| Error::Io { path: "bench".into(), source: e })?,
    }
    Ok(())
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

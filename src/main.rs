//! The `ddpm` program: parses the command line, runs one command, and turns any
//! error into one line on stderr with the exit codes of [`course::cli::EXIT_CODES`]
//! (0 done, 1 diverged, 2 bad input, 130 interrupted), never a panic or a backtrace.

use clap::Parser;
use course::cli::{ClassifierCommand, Cli, Command};
use course::error::Error;
use course::signals::EXIT_INTERRUPTED;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

/// Runs the command and returns what it prints on stdout, and the exit code.
fn run(cli: Cli, interrupt: &AtomicBool) -> Result<(String, u8), Error> {
    let done = |text: String| Ok((text, 0));
    match cli.command {
        Command::Train(args) => {
            let summary = course::train::train(&args, interrupt)?;
            Ok((summary.line(), if summary.interrupted { EXIT_INTERRUPTED } else { 0 }))
        }
        Command::Ablation(args) => done(course::ablation::run(&args, interrupt)?),
        Command::Sample(args) => done(course::commands::sample(&args)?),
        Command::Forward(args) => done(course::commands::forward(&args)?),
        Command::Nll(args) => {
            let (report, plot) = course::commands::nll(&args)?;
            done(if args.json {
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
            })
        }
        Command::Eval(args) => {
            let (report, line) = course::eval::eval(&args)?;
            for warning in course::validate::fid_sample_size(&report) {
                eprintln!("warning: {warning}");
            }
            done(if args.json {
                serde_json::to_string(&report).expect("serialises")
            } else {
                format!("{line}\n{}", report.table())
            })
        }
        Command::Classifier(ClassifierCommand::Train(args)) => done(course::classifier::train(&args)?),
        Command::Classifier(ClassifierCommand::Test(args)) => done(course::classifier::test(&args)?),
        Command::Export(args) => done(course::commands::export(&args)?),
        Command::Info(args) => done(course::commands::info(&args)?),
        // The report prints its rows itself, as they are measured.
        Command::Bench(args) => match course::bench_report::run(args.json) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io { path: "bench".into(), source: e }),
            _ => done(String::new()),
        },
    }
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
    course::data_dir::set_flag(cli.data_dir.clone());
    // Training stops after its current step and saves; everything else quits at once.
    let graceful = matches!(cli.command, Command::Train(_) | Command::Ablation(_));
    let result = course::signals::install(graceful).and_then(|interrupt| run(cli, &interrupt));
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

//! `ddpm ablation`: Table 2 of Ho et al. at MNIST scale. The same model, data,
//! budget and seed, trained with each objective and sampled with each fixed
//! reverse variance:
//!
//! | objective            | sigma_t^2   |
//! |----------------------|-------------|
//! | L_simple (eq. 14)    | beta_t      |
//! | L_simple             | beta-tilde_t|
//! | the true bound L     | beta_t      |
//! | the true bound L     | beta-tilde_t|
//!
//! L_simple does not involve sigma_t, so its two rows share one trained model and
//! differ only in sampling and in the bound; the bound's terms L_{t-1} weigh the
//! noise error by beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)), so each of
//! its rows is a training run of its own. Samples are ancestral (Algorithm 2, all
//! T steps), since the variance is what the rows compare; every row is scored by
//! `ddpm eval`'s figures and the bound by `ddpm nll`'s.
//!
//! Each run lives in its own folder under `--out`; running the command again
//! resumes unfinished runs and reuses finished ones.

use crate::error::{Error, Result};
use crate::eval::bound::{bound_on_test_images, NllReport};
use crate::eval::judge::{draw_many, save_sample_grid, EvalReport, Judge};
use crate::run::config::{ModelConfig, TrainConfig};
use crate::run::model::Loaded;
use crate::run::progress::Progress;
use crate::run::sampling::SamplerChoice;
use crate::run::train::Session;
use ddpm::{LossKind, VarianceKind};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// What the ablation measures besides the training runs.
#[derive(Clone, Debug)]
pub struct Ablation {
    /// The training run of every row but its loss and variance (a UNet on MNIST).
    pub base: TrainConfig,
    /// Folder of the runs, the tables and the sample grids.
    pub out: PathBuf,
    /// Ancestral samples scored per row.
    pub samples: usize,
    /// Test images of the bound per row.
    pub nll_images: usize,
    /// Classifier weights.
    pub classifier: PathBuf,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
struct Row {
    loss: LossKind,
    variance: VarianceKind,
}

const ROWS: [Row; 4] = [
    Row { loss: LossKind::Simple, variance: VarianceKind::FixedLarge },
    Row { loss: LossKind::Simple, variance: VarianceKind::FixedSmall },
    Row { loss: LossKind::Vlb, variance: VarianceKind::FixedLarge },
    Row { loss: LossKind::Vlb, variance: VarianceKind::FixedSmall },
];

impl Row {
    fn objective(self) -> &'static str {
        match self.loss {
            LossKind::Simple => "L_simple",
            LossKind::Vlb => "L (true bound)",
            LossKind::Hybrid => "L_hybrid",
        }
    }

    fn sigma(self) -> &'static str {
        match self.variance {
            VarianceKind::FixedLarge => "beta_t",
            VarianceKind::FixedSmall => "beta-tilde_t",
        }
    }

    fn slug(self) -> &'static str {
        match (self.loss, self.variance) {
            (LossKind::Simple, VarianceKind::FixedLarge) => "simple-beta",
            (LossKind::Simple, VarianceKind::FixedSmall) => "simple-beta-tilde",
            (LossKind::Vlb, VarianceKind::FixedLarge) => "vlb-beta",
            (LossKind::Vlb, VarianceKind::FixedSmall) => "vlb-beta-tilde",
            (LossKind::Hybrid, _) => "hybrid",
        }
    }

    /// The training run behind the row: L_simple's rows share one.
    fn run_name(self) -> &'static str {
        match self.loss {
            LossKind::Simple => "simple",
            _ => self.slug(),
        }
    }
}

/// What one row measured, or why it has no numbers.
enum Outcome {
    Measured { eval: EvalReport, bound: NllReport },
    Diverged(String),
}

/// Trains (or resumes) the run of `row` in `dir`: the base config with the row's
/// loss and variance.
fn train_row(ablation: &Ablation, row: Row, dir: &Path, interrupt: &AtomicBool) -> Result<()> {
    let config = TrainConfig { loss: row.loss, variance: row.variance, ..ablation.base.clone() };
    let resume = dir.join("checkpoint.safetensors").exists();
    if resume && Loaded::read(dir)?.step >= config.steps {
        return Ok(()); // trained already, e.g. the other row of L_simple
    }
    let session = Session { dir: dir.to_path_buf(), resume, quiet: true };
    let summary = crate::run::train::train(&config, &session, interrupt)?;
    eprintln!("ablation: {}", summary.line());
    if summary.interrupted {
        return Err(Error::Interrupted { what: format!("{} saved; run the same command again to resume it", dir.display()) });
    }
    Ok(())
}

/// `ddpm ablation`: trains the runs, measures every row, and writes `table.md`,
/// `table.csv` and one sample grid per row under `--out`. Returns the Markdown.
///
/// # Errors
/// Bad flags, an interrupt, data or I/O errors. A run whose loss diverges is
/// not an error: its row says so.
pub fn run(args: &Ablation, interrupt: &AtomicBool) -> Result<String> {
    if args.nll_images == 0 {
        return Err(Error::InvalidArgument { what: "--nll-images", reason: "must be at least 1".into() });
    }
    crate::run::validate::sample_count("--samples", args.samples, 2)?;
    // Every row trains a variant of this config: refused now, not after a row's work.
    args.base.validate()?;
    let ModelConfig::Unet(unet) = &args.base.model else {
        return Err(Error::InvalidArgument { what: "ablation", reason: "its rows train the UNet on MNIST".into() });
    };
    let base_channels = unet.base_channels;
    crate::run::validate::writable_dir("--out", &args.out)?;
    let judge = Judge::new(crate::eval::classifier::load(&args.classifier)?)?;
    // One unit per row: training, samples and the bound of one objective and variance.
    let progress = Progress::new("ablation", ROWS.len() as u64, "rows");
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for row in ROWS {
        let dir = args.out.join(row.run_name());
        let outcome = match train_row(args, row, &dir, interrupt) {
            Err(Error::Diverged { step, what, .. }) => Outcome::Diverged(format!("{what} was not finite at step {step}")),
            Err(e) => return Err(e),
            Ok(()) => {
                let loaded = Loaded::read(&dir)?;
                let model = loaded.model(false)?;
                let mut config = loaded.config.clone();
                config.variance = row.variance;
                let ancestral = SamplerChoice::ANCESTRAL;
                let samples = draw_many(&model, &config, ancestral, args.samples, args.base.seed, &Progress::hidden())?;
                save_sample_grid(&args.out.join(format!("{}.png", row.slug())), &samples)?;
                let eval = judge.score(&samples, args.base.seed)?;
                let bound = bound_on_test_images(&model, &config, args.nll_images, 64, args.base.seed, false)?;
                eprintln!(
                    "ablation: {} / {}: {:.3} bits/dim, FID {:.2}, {:.1}% recognisable ({:.0} s so far)",
                    row.objective(),
                    row.sigma(),
                    bound.total_bpd,
                    eval.fid,
                    100.0 * eval.recognisable,
                    started.elapsed().as_secs_f64()
                );
                Outcome::Measured { eval, bound }
            }
        };
        outcomes.push((row, outcome));
        progress.inc();
    }
    progress.finish();
    let (markdown, csv) = tables(args, base_channels, &outcomes);
    for (name, text) in [("table.md", &markdown), ("table.csv", &csv)] {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io { path: path.clone(), source })?;
    }
    Ok(format!(
        "{markdown}\n-> {}, {} ({:.0} s)",
        args.out.join("table.md").display(),
        args.out.join("table.csv").display(),
        started.elapsed().as_secs_f64()
    ))
}

fn tables(args: &Ablation, base_channels: usize, outcomes: &[(Row, Outcome)]) -> (String, String) {
    let mut md = format!(
        "Ho et al. Table 2 at MNIST scale: UNet with {} base channels, T = {}, {} steps of batch 64, seed {}; \
         {} ancestral samples per row (all T steps), bound on {} test images.\n\n\
         | objective | sigma_t^2 | bits/dim (+- s.e.) | L_T | sum L_(t-1) | L_0 | MNIST-FID | recognisable | class entropy | samples |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        base_channels, args.base.timesteps, args.base.steps, args.base.seed, args.samples, args.nll_images
    );
    let mut csv =
        String::from("objective,sigma,bpd,bpd_stderr,prior_bpd,vb_bpd,decoder_bpd,fid,fid_floor,recognisable,class_entropy,samples\n");
    let mut floor = None;
    for (row, outcome) in outcomes {
        let grid = PathBuf::from(format!("{}.png", row.slug()));
        match outcome {
            Outcome::Measured { eval, bound } => {
                floor = Some(eval.fid_floor);
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.3} +- {:.3} | {:.4} | {:.3} | {:.3} | {:.2} | {:.1}% | {:.3} | [{}]({}) |",
                    row.objective(),
                    row.sigma(),
                    bound.total_bpd,
                    bound.total_bpd_stderr,
                    bound.prior_bpd,
                    bound.vb_bpd,
                    bound.decoder_bpd,
                    eval.fid,
                    100.0 * eval.recognisable,
                    eval.class_entropy,
                    grid.display(),
                    grid.display()
                );
                let _ = writeln!(
                    csv,
                    "{},{},{:.5},{:.5},{:.6},{:.5},{:.5},{:.4},{:.4},{:.4},{:.4},{}",
                    row.objective(),
                    row.sigma(),
                    bound.total_bpd,
                    bound.total_bpd_stderr,
                    bound.prior_bpd,
                    bound.vb_bpd,
                    bound.decoder_bpd,
                    eval.fid,
                    eval.fid_floor,
                    eval.recognisable,
                    eval.class_entropy,
                    grid.display()
                );
            }
            Outcome::Diverged(why) => {
                let _ = writeln!(md, "| {} | {} | diverged: {why} | | | | | | | |", row.objective(), row.sigma());
                let _ = writeln!(csv, "{},{},,,,,,,,,,", row.objective(), row.sigma());
            }
        }
    }
    if let Some(floor) = floor {
        let _ = writeln!(
            md,
            "\nMNIST-FID floor ({} training images against the test set): {floor:.2}. Class entropy of a uniform histogram: ln 10 = {:.3}.",
            args.samples,
            10f64.ln()
        );
    }
    (md, csv)
}

//! The top layer: the command line. It turns flags into the resolved settings of
//! the layers below and calls them; nothing below imports it.
//!
//! - [`args`]: the clap types, one per subcommand;
//! - [`signals`]: Ctrl-C, SIGTERM and SIGHUP, and the exit code of an interrupted run;
//! - [`run`]: the dispatch, one arm per subcommand.

pub mod args;
pub mod signals;

use crate::error::{Error, Result};
use crate::eval::bound::nll;
use crate::eval::classifier::{self, ClassifierTraining};
use crate::eval::judge::{eval, fid_sample_size};
use crate::run::ablation::{self, Ablation};
use crate::run::commands::{export, forward, info, sample, ForwardFigure, SampleSet};
use crate::run::config::{Dataset, LossWeightKind, LrScheduleKind, ModelConfig, ModelKind, Preset, TrainConfig};
use crate::run::model::Loaded;
use crate::run::sampling::SamplerChoice;
use crate::run::train::{train, Session};
use args::{AblationArgs, ClassifierCommand, Cli, Command, Resolutions, SamplerArgs, TrainArgs};
use ddpm::{BetaSchedule, TimestepSampling};
use std::sync::atomic::AtomicBool;

/// Runs the command and returns what it prints on stdout and the exit code (0, or
/// [`signals::EXIT_INTERRUPTED`] for a run that stopped at a signal and saved).
/// `interrupt` is the flag Ctrl-C or SIGTERM sets (training stops after the current
/// step and saves).
///
/// # Errors
/// Whatever the command reports.
pub fn run(cli: Cli, interrupt: &AtomicBool) -> Result<(String, u8)> {
    let set = |sampling: &SamplerArgs, count: usize, seed: u64| SampleSet {
        sampler: SamplerChoice {
            kind: sampling.sampler,
            steps: sampling.steps.or(SamplerChoice::default_steps(sampling.sampler)),
            eta: sampling.eta,
        },
        count,
        seed,
    };
    let text = match cli.command {
        Command::Train(args) => {
            let dir = args.run.clone().unwrap_or_else(|| TrainConfig::default_run_dir(args.preset));
            if args.resume && !dir.is_dir() {
                return Err(invalid("--resume", &format!("{} does not exist", dir.display())));
            }
            if args.resume {
                // A run still training there is named before its config is read
                // (it may not have written a checkpoint yet); training takes the lock again.
                drop(crate::run::run_lock::RunLock::acquire(&dir)?);
            }
            // A resumed run starts from its own config, a new one from the preset.
            let base = if args.resume { Loaded::read(&dir)?.config } else { TrainConfig::preset(args.preset) };
            let config = resolve(&args, base)?;
            let summary = train(&config, &Session { dir, resume: args.resume, quiet: args.quiet }, interrupt)?;
            return Ok((summary.line(), if summary.interrupted { signals::EXIT_INTERRUPTED } else { 0 }));
        }
        Command::Ablation(args) => ablation::run(&ablation_settings(&args), interrupt)?,
        Command::Sample(args) => {
            let loaded = Loaded::read(&args.checkpoint)?;
            sample(&loaded, args.raw_weights, set(&args.sampling, args.count, args.seed), &args.out, args.trajectory.as_deref())?
        }
        Command::Forward(args) => {
            let figure =
                ForwardFigure { t: args.t, images: args.images, schedule: args.schedule, timesteps: args.timesteps, seed: args.seed };
            forward(&figure, &args.out)?
        }
        Command::Nll(args) => {
            let loaded = Loaded::read(&args.checkpoint)?;
            let (report, plot) = nll(&loaded, args.raw_weights, args.images, args.batch, args.seed, args.out.as_deref())?;
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
            let loaded = Loaded::read(&args.checkpoint)?;
            let samples = set(&args.sampling, args.samples, args.seed);
            let classifier = args.classifier.clone().unwrap_or_else(classifier::default_path);
            let (report, line) =
                eval(&loaded, args.raw_weights, samples, args.variance, &classifier, args.grid.as_deref(), args.samples_out.as_deref())?;
            for warning in fid_sample_size(&report) {
                eprintln!("warning: {warning}");
            }
            if args.json {
                // The figures, and the sampler and seed that drew the samples they score.
                let mut json = serde_json::to_value(&report).expect("serialises");
                json["sampler"] = samples.sampler.describe(loaded.config.timesteps).into();
                json["seed"] = samples.seed.into();
                json.to_string()
            } else {
                format!("{line}\n{}", report.table())
            }
        }
        Command::Classifier(ClassifierCommand::Train(args)) => {
            let training = ClassifierTraining { epochs: args.epochs, batch: args.batch, lr: args.lr, seed: args.seed };
            classifier::train(&training, &args.out.clone().unwrap_or_else(classifier::default_path))?
        }
        Command::Classifier(ClassifierCommand::Test(args)) => {
            classifier::test(&args.classifier.clone().unwrap_or_else(classifier::default_path))?
        }
        Command::Export(args) => export(&Loaded::read(&args.checkpoint)?, &args.out, args.force)?,
        Command::Info(args) => info(&Loaded::read(&args.checkpoint)?)?,
        // The report prints its rows itself, as they are measured.
        Command::Bench(args) => match crate::bench::report::run(args.json) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(Error::Io { path: "bench".into(), source: e }),
            _ => String::new(),
        },
    };
    Ok((text, 0))
}

/// `base` (a preset, or the config of the run being resumed), overridden by every
/// flag that was given.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the flag when a value is out of range or does
/// not fit the chosen model or data.
pub fn resolve(args: &TrainArgs, base: TrainConfig) -> Result<TrainConfig> {
    let mut c = base;
    if let Some(data) = args.data {
        c.data = data;
    }
    // Changing the data between MNIST and a toy set also changes the model's
    // input, so the model follows the data unless it is chosen explicitly.
    let kind = args.model.unwrap_or(match (&c.model, c.data) {
        (_, Dataset::Mnist) if args.data.is_some() => ModelKind::Unet,
        (_, d) if d != Dataset::Mnist => ModelKind::Mlp,
        (ModelConfig::Unet(_), _) => ModelKind::Unet,
        (ModelConfig::Mlp(_), _) => ModelKind::Mlp,
    });
    c.model = match (kind, &c.model) {
        (ModelKind::Unet, ModelConfig::Unet(_)) => c.model.clone(),
        (ModelKind::Unet, _) => ModelConfig::Unet(nn::UNetConfig::default()),
        (ModelKind::Mlp, ModelConfig::Mlp(_)) if (c.data == Dataset::Mnist) == (c.model_data_dim() == Some(784)) => c.model.clone(),
        (ModelKind::Mlp, _) if c.data == Dataset::Mnist => ModelConfig::Mlp(nn::MlpConfig::mnist()),
        (ModelKind::Mlp, _) => ModelConfig::Mlp(nn::MlpConfig::toy_2d()),
    };
    match &mut c.model {
        ModelConfig::Unet(unet) => {
            if let Some(b) = args.base_channels {
                unet.base_channels = b;
            }
            if let Some(m) = &args.channel_mults {
                unet.channel_mults = m.clone();
            }
            if let Some(r) = args.res_blocks {
                unet.num_res_blocks = r;
            }
            if let Some(Resolutions(sides)) = &args.attention_resolutions {
                let levels = unet.resolutions();
                if let Some(side) = sides.iter().find(|side| !levels.contains(side)) {
                    return Err(invalid(
                        "--attention-resolutions",
                        &format!("no level of the UNet is {side} x {side}; its levels are {levels:?} pixels a side"),
                    ));
                }
                unet.attention_resolutions = sides.clone();
            }
            if args.hidden.is_some() || args.depth.is_some() {
                return Err(invalid("--hidden/--depth", "they set the MLP; the model is the UNet (use --model mlp)"));
            }
        }
        ModelConfig::Mlp(mlp) => {
            if let Some(h) = args.hidden {
                mlp.hidden_dim = h;
            }
            if let Some(d) = args.depth {
                mlp.depth = d;
            }
            if args.base_channels.is_some()
                || args.channel_mults.is_some()
                || args.res_blocks.is_some()
                || args.attention_resolutions.is_some()
            {
                return Err(invalid(
                    "--base-channels/--channel-mults/--res-blocks/--attention-resolutions",
                    "they set the UNet; the model is the MLP (use --model unet)",
                ));
            }
        }
    }
    if kind == ModelKind::Unet && c.data != Dataset::Mnist {
        return Err(invalid("--model", "the UNet takes 28x28 images; use --model mlp for 2-D toy data"));
    }
    macro_rules! take {
        ($($field:ident),*) => { $(if let Some(v) = args.$field.clone() { c.$field = v; })* };
    }
    take!(
        schedule,
        timesteps,
        loss,
        hybrid_lambda,
        variance,
        prediction,
        batch,
        lr,
        warmup,
        lr_schedule,
        loss_weight,
        min_snr_gamma,
        timestep_sampling,
        grad_clip,
        adam_beta2,
        ema_decay,
        ema_warmup,
        zero_init,
        steps,
        time_budget,
        seed,
        checkpoint_every,
        sample_every,
        samples
    );
    if args.init.is_some() {
        c.init.clone_from(&args.init);
    }
    c.validate()?;
    Ok(c)
}

/// The ablation's runs: the quick preset's UNet on MNIST, sized by the flags,
/// with no time budget and no grids during training, trained by the paper's
/// recipe rather than the preset's short-run one: the linear noise schedule, a
/// constant rate, a plain EMA of decay 0.995, L_simple unweighted (min-SNR would
/// change the L_simple rows) and timesteps drawn uniformly as Algorithm 1 draws
/// them (logit-normal draws would reweight the true bound's terms too), from
/// PyTorch's initialisation (the paper's code zeroes each branch's last layer;
/// `--zero-init` came after the table). Chapter 10's table was measured with
/// these; each of them is set here, so a change of the preset cannot move the rows.
fn ablation_settings(args: &AblationArgs) -> Ablation {
    let mut base = TrainConfig {
        schedule: BetaSchedule::Linear,
        timesteps: args.timesteps,
        steps: args.steps,
        seed: args.seed,
        time_budget: 0.0,
        sample_every: 0,
        lr: 1e-3,
        lr_schedule: LrScheduleKind::Constant,
        loss_weight: LossWeightKind::Uniform,
        warmup: 100,
        timestep_sampling: TimestepSampling::Uniform,
        ema_decay: 0.995,
        ema_warmup: false,
        zero_init: false,
        ..TrainConfig::preset(Preset::Quick)
    };
    // The UNet of the paper's layout (two residual blocks a level), whatever
    // the quick preset's model: the table of chapter 10 was measured with it.
    base.model = ModelConfig::Unet(nn::UNetConfig { base_channels: args.base_channels, ..nn::UNetConfig::default() });
    let classifier = args.classifier.clone().unwrap_or_else(classifier::default_path);
    Ablation { base, out: args.out.clone(), samples: args.samples, nll_images: args.nll_images, classifier }
}

fn invalid(what: &'static str, reason: &str) -> Error {
    Error::InvalidArgument { what, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The flags of `ddpm train ARGS`.
    fn train_args(args: &[&str]) -> TrainArgs {
        match Cli::try_parse_from(["ddpm", "train"].into_iter().chain(args.iter().copied())).unwrap().command {
            Command::Train(t) => t,
            _ => unreachable!(),
        }
    }

    /// `ddpm train ARGS` resolved over its preset, as a new run resolves them.
    fn parse(args: &[&str]) -> Result<TrainConfig> {
        let t = train_args(args);
        resolve(&t, TrainConfig::preset(t.preset))
    }

    #[test]
    fn quick_preset_is_a_small_unet_on_mnist() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.data, Dataset::Mnist);
        assert!(matches!(&c.model, ModelConfig::Unet(unet) if unet.base_channels == 16));
    }

    #[test]
    fn flags_override_the_preset_and_the_model_follows_the_data() {
        let c = parse(&["--data", "two-moons", "--steps", "7", "--lr", "0.01"]).unwrap();
        assert_eq!((c.steps, c.lr), (7, 0.01));
        assert!(matches!(&c.model, ModelConfig::Mlp(mlp) if mlp.data_dim == 2));
        let c = parse(&["--preset", "toy", "--data", "mnist"]).unwrap();
        assert!(matches!(c.model, ModelConfig::Unet(_)));
        let c = parse(&["--model", "mlp"]).unwrap();
        assert!(matches!(&c.model, ModelConfig::Mlp(mlp) if mlp.data_dim == 784));
    }

    #[test]
    fn the_kinds_parse_into_the_ddpm_crate_s_own_types() {
        let c = parse(&["--loss", "hybrid", "--variance", "fixed-small", "--prediction", "x0", "--schedule", "cosine"]).unwrap();
        assert_eq!(
            (c.loss, c.variance, c.prediction, c.schedule),
            (ddpm::LossKind::Hybrid, ddpm::VarianceKind::FixedSmall, ddpm::Parameterization::StartX, ddpm::BetaSchedule::Cosine)
        );
        let err = Cli::try_parse_from(["ddpm", "train", "--variance", "fixed_small"]).unwrap_err().to_string();
        assert!(err.contains("fixed-large, fixed-small"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(parse(&["--batch", "0"]).unwrap_err().to_string().contains("--batch"));
        assert!(parse(&["--ema-decay", "1.5"]).unwrap_err().to_string().contains("--ema-decay"));
        assert!(parse(&["--data", "swiss-roll", "--model", "unet"]).unwrap_err().to_string().contains("--model"));
        assert!(parse(&["--hidden", "4"]).unwrap_err().to_string().contains("--hidden"));
        // The linear schedule's ends are scaled by 1000 / T, which needs T large enough;
        // the quick preset's cosine schedule takes any T.
        assert!(parse(&["--schedule", "linear", "--timesteps", "20"]).unwrap_err().to_string().contains("--timesteps"));
        assert!(parse(&["--timesteps", "20"]).is_ok());
        assert!(parse(&["--res-blocks", "0"]).unwrap_err().to_string().contains("--res-blocks"));
        assert!(parse(&["--model", "mlp", "--res-blocks", "2"]).unwrap_err().to_string().contains("--res-blocks"));
        assert!(parse(&["--model", "mlp", "--zero-init", "true"]).unwrap_err().to_string().contains("--zero-init"));
    }

    /// `ddpm train ARGS` resolved over `base`, as `--resume` resolves them over the
    /// run's own config.
    fn over(base: TrainConfig, args: &[&str]) -> Result<TrainConfig> {
        resolve(&train_args(args), base)
    }

    #[test]
    fn a_run_keeps_its_model_unless_the_data_changes_its_input() {
        let hidden = |c: &TrainConfig| match &c.model {
            ModelConfig::Mlp(mlp) => (mlp.data_dim, mlp.hidden_dim),
            ModelConfig::Unet(_) => panic!("a UNet where an MLP was expected"),
        };
        // An MLP on MNIST, resumed without flags, stays that MLP (not the preset's UNet).
        let mnist_mlp = parse(&["--model", "mlp", "--hidden", "64"]).unwrap();
        assert_eq!(hidden(&over(mnist_mlp.clone(), &[]).unwrap()), (784, 64));
        // The toy preset's MLP keeps its width.
        assert_eq!(hidden(&parse(&["--preset", "toy"]).unwrap()), (2, 256));
        // An MLP whose input no longer fits the data is rebuilt for the new data.
        assert_eq!(hidden(&parse(&["--preset", "toy", "--data", "mnist", "--model", "mlp"]).unwrap()), (784, 1024));
        assert_eq!(hidden(&over(mnist_mlp, &["--data", "two-moons"]).unwrap()), (2, 128));
    }

    #[test]
    fn unet_flags_on_an_mlp_are_refused_each_on_its_own() {
        for flag in [&["--base-channels", "8"][..], &["--channel-mults", "1,2"], &["--res-blocks", "2"], &["--attention-resolutions", "7"]]
        {
            let args: Vec<&str> = ["--model", "mlp"].into_iter().chain(flag.iter().copied()).collect();
            let err = parse(&args).unwrap_err().to_string();
            assert!(err.contains("--base-channels/--channel-mults/--res-blocks/--attention-resolutions"), "{flag:?}: {err}");
        }
    }

    #[test]
    fn res_blocks_set_the_unet_depth() {
        let c = parse(&["--res-blocks", "3"]).unwrap();
        assert!(matches!(&c.model, ModelConfig::Unet(unet) if unet.num_res_blocks == 3));
    }

    #[test]
    fn attention_resolutions_pick_the_levels_with_attention() {
        let sides = |args: &[&str]| match parse(args).unwrap().model {
            ModelConfig::Unet(unet) => unet.attention_resolutions,
            ModelConfig::Mlp(_) => unreachable!(),
        };
        assert_eq!(sides(&[]), [7]);
        assert_eq!(sides(&["--attention-resolutions", "none"]), Vec::<usize>::new());
        assert_eq!(sides(&["--attention-resolutions", "14,7"]), [14, 7]);
        // A side no level has is refused, naming the levels; so is a word that is not one.
        let err = parse(&["--attention-resolutions", "8"]).unwrap_err().to_string();
        assert!(err.contains("--attention-resolutions") && err.contains("[28, 14, 7]"), "{err}");
        let err = Cli::try_parse_from(["ddpm", "train", "--attention-resolutions", "seven"]).unwrap_err().to_string();
        assert!(err.contains("--attention-resolutions") && err.contains("\"seven\" is not an image side"), "{err}");
    }

    #[test]
    fn the_ablation_rows_are_the_paper_s_recipe_sized_by_the_flags() {
        let flags = ["ddpm", "ablation", "--steps", "5", "--base-channels", "8", "--timesteps", "200", "--seed", "3"];
        let args = match Cli::try_parse_from(flags).unwrap().command {
            Command::Ablation(a) => a,
            _ => unreachable!(),
        };
        let base = ablation_settings(&args).base;
        let quick = TrainConfig::preset(Preset::Quick);
        assert_eq!((base.steps, base.timesteps, base.seed), (5, 200, 3));
        assert_eq!((base.time_budget, base.sample_every, base.loss, base.batch), (0.0, 0, quick.loss, 64));
        assert!(matches!(&base.model, ModelConfig::Unet(unet) if unet.base_channels == 8));
        // The paper's recipe and layout, whatever the quick preset uses: chapter 10's
        // table was measured with them (the preset has moved to the cosine schedule,
        // min-SNR, a cosine rate, logit-normal timesteps and one block a level since).
        assert_eq!(base.schedule, BetaSchedule::Linear);
        assert_eq!(
            (base.lr, base.lr_schedule, base.loss_weight, base.ema_warmup, base.zero_init),
            (1e-3, LrScheduleKind::Constant, LossWeightKind::Uniform, false, false)
        );
        assert_eq!((base.timestep_sampling, base.ema_decay, base.warmup), (TimestepSampling::Uniform, 0.995, 100));
        assert!(matches!(&base.model, ModelConfig::Unet(unet) if unet.num_res_blocks == 2));
    }
}

//! The commands other than `train`, `eval`, `ablation` and `bench`: `sample`,
//! `forward`, `nll`, `info`, `export`.

use crate::cli::{Dataset, ForwardArgs, InfoArgs, NllArgs, SampleArgs, SamplerArgs, SamplerKind};
use crate::config::TrainConfig;
use crate::data::mnist::Split;
use crate::data_dir::load_mnist;
use crate::progress::Progress;
use crate::validate;
use crate::watched::Watched;
use crate::error::{Error, Result};
use crate::image::save_grid;
use crate::model::{Loaded, ELAPSED_KEY};
use crate::plot::{Plot, Series};
use crate::raster::save_png;
use crate::sampling::{draw_in_batches, model_calls, save_samples, SamplerChoice, SAMPLE_BATCH};
use ddpm::schedule::{evenly_spaced_timesteps, BetaSchedule, NoiseSchedule};
use ddpm::{calc_bpd_loop, q_sample, ReverseOptions};
use nn::Module;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tensor::{rng, Tensor};

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn require_images(config: &TrainConfig, what: &'static str) -> Result<()> {
    if config.data == Dataset::Mnist {
        Ok(())
    } else {
        Err(Error::InvalidArgument { what, reason: "this needs a checkpoint trained on MNIST images, not 2-D points".into() })
    }
}

/// `ddpm sample`: a grid of samples, and optionally the reverse trajectory.
///
/// # Errors
/// A bad checkpoint or sampler setting, or an I/O error.
pub fn sample(args: &SampleArgs) -> Result<String> {
    let loaded = Loaded::read(&args.checkpoint)?;
    let config = &loaded.config;
    let SamplerArgs { sampler: kind, steps, eta } = args.sampling;
    if args.count == 0 {
        return Err(Error::InvalidArgument { what: "--count", reason: "must be at least 1".into() });
    }
    validate::sampler(&args.sampling, config.timesteps)?;
    validate::png_output("--out", &args.out)?;
    if let Some(path) = &args.trajectory {
        validate::png_output("--trajectory", path)?;
    }
    let model = loaded.model(args.raw_weights)?;
    let sampler = SamplerChoice { kind, steps, eta };
    // The timesteps whose state the trajectory shows: ten along the sampler's path.
    let path_steps = match kind {
        SamplerKind::Ddpm => (0..config.timesteps).collect(),
        SamplerKind::Ddim | SamplerKind::Langevin => evenly_spaced_timesteps(config.timesteps, steps.clamp(2, config.timesteps))?,
    };
    let record: Vec<usize> = if args.trajectory.is_some() {
        require_images(config, "--trajectory")?;
        let frames = 10.min(path_steps.len());
        (0..frames).map(|i| path_steps[i * (path_steps.len() - 1) / (frames - 1).max(1)]).collect()
    } else {
        Vec::new()
    };
    let started = std::time::Instant::now();
    let progress = Progress::new("sample", (args.count.div_ceil(SAMPLE_BATCH) * model_calls(config, sampler)) as u64, "model calls");
    let trajectory = draw_in_batches(&model, config, sampler, args.count, args.seed, &record, &progress)?;
    progress.finish();
    save_samples(&args.out, config, &trajectory.sample)?;
    let mut report = format!(
        "{} samples ({:?}, {} steps) from {} at step {} in {:.1} s -> {}",
        args.count,
        kind,
        if kind == SamplerKind::Ddpm { config.timesteps } else { steps },
        loaded.path.display(),
        loaded.step,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    if let Some(path) = &args.trajectory {
        // Rows: for each of the first four samples, x_t then the predicted x_0;
        // columns: the recorded timesteps, noisiest first, then the final sample.
        let side = config.example_dims().iter().product::<usize>().isqrt();
        let shown = args.count.min(4);
        let pixels = side * side;
        let final_images = trajectory.sample.to_vec();
        let mut images = Vec::new();
        for i in 0..shown {
            for row in 0..2 {
                for frame in &trajectory.frames {
                    let t = if row == 0 { &frame.x_t } else { &frame.pred_xstart };
                    images.extend_from_slice(&t.to_vec()[i * pixels..(i + 1) * pixels]);
                }
                images.extend_from_slice(&final_images[i * pixels..(i + 1) * pixels]);
            }
        }
        let cols = trajectory.frames.len() + 1;
        save_grid(path, &images, shown * 2 * cols, side, side, cols).map_err(io(path))?;
        let ts: Vec<String> = trajectory.frames.iter().map(|f| f.t.to_string()).collect();
        let _ = write!(report, "; trajectory at t = {} -> {}", ts.join(","), path.display());
    }
    Ok(report)
}

/// `ddpm forward`: the noising figure q(x_t | x_0) and the schedule plots (PNG).
///
/// # Errors
/// Bad timesteps, or I/O errors.
pub fn forward(args: &ForwardArgs) -> Result<String> {
    let kind = match args.schedule {
        crate::cli::ScheduleKind::Linear => BetaSchedule::Linear,
        crate::cli::ScheduleKind::Cosine => BetaSchedule::Cosine,
    };
    let schedule = NoiseSchedule::new(kind, args.timesteps)?;
    validate::writable_dir("--out", &args.out)?;
    if let Some(&bad) = args.t.iter().find(|&&t| t >= args.timesteps) {
        return Err(Error::InvalidArgument { what: "--t", reason: format!("timestep {bad} is not below T = {}", args.timesteps) });
    }
    if args.images == 0 || args.t.is_empty() {
        return Err(Error::InvalidArgument { what: "--images/--t", reason: "need at least one image and one timestep".into() });
    }
    let test = load_mnist(Split::Test)?;
    let n = args.images.min(test.len());
    let x0 = Tensor::from_vec(test.gather_images(&(0..n).collect::<Vec<_>>())?, &[n, 1, 28, 28])?;
    // One noise draw per image, shared by every t: each row shows one path of noising.
    let noise = Tensor::<f32>::randn(x0.dims(), &mut rng(args.seed));
    let mut columns = Vec::new();
    for &t in &args.t {
        columns.push(q_sample(&schedule, &x0, &vec![t; n], &noise)?.to_vec());
    }
    let mut images = Vec::new();
    for i in 0..n {
        for column in &columns {
            images.extend_from_slice(&column[i * 784..(i + 1) * 784]);
        }
    }
    let picture = args.out.join("forward.png");
    save_grid(&picture, &images, n * args.t.len(), 28, 28, args.t.len()).map_err(io(&picture))?;
    let curves = |f: &dyn Fn(f64) -> f64| -> Result<Vec<Series>> {
        [("linear", BetaSchedule::Linear), ("cosine", BetaSchedule::Cosine)]
            .into_iter()
            // The linear schedule needs T > 20 (beta_T = 20 / T < 1); with fewer
            // steps only the cosine curve is drawn.
            .filter(|(_, k)| *k != BetaSchedule::Linear || args.timesteps > 20)
            .map(|(label, k)| {
                let s = NoiseSchedule::new(k, args.timesteps)?;
                let points = s.alphas_cumprod.iter().enumerate().map(|(t, &a)| (t as f64, f(a))).collect();
                Ok(Series { label: label.into(), points, dots: false })
            })
            .collect()
    };
    let alpha_bar = Plot { title: "alpha-bar_t".into(), x_label: "t (code index)".into(), y_label: "alpha-bar".into(), log_y: false, series: curves(&|a| a)? };
    let snr = Plot { title: "SNR_t = alpha-bar / (1 - alpha-bar)".into(), x_label: "t (code index)".into(), y_label: "SNR".into(), log_y: true, series: curves(&|a| a / (1.0 - a))? };
    let plots = args.out.join("schedule.png");
    save_png(&plots, &[alpha_bar, snr]).map_err(io(&plots))?;
    Ok(format!("q(x_t | x_0) for {n} test images at t = {:?} -> {}; schedules -> {}", args.t, picture.display(), plots.display()))
}

/// The bound measured by `ddpm nll`, in bits per dimension.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NllReport {
    pub images: usize,
    pub total_bpd: f64,
    pub total_bpd_stderr: f64,
    pub prior_bpd: f64,
    pub vb_bpd: f64,
    pub decoder_bpd: f64,
    pub per_timestep: Vec<f64>,
}

/// The bound in bits/dim of `model` on the first `images` MNIST test images (all
/// of them if fewer), `batch` at a time, with the reverse variance of `config`;
/// with `show_progress`, a bar (or log lines) over the model calls.
///
/// # Errors
/// Zero images or batch, data errors, or [`Error::NonFinite`] when the model
/// predicts NaN or infinity.
pub fn bound_on_test_images(model: &crate::model::Model, config: &TrainConfig, images: usize, batch: usize, seed: u64, show_progress: bool) -> Result<NllReport> {
    let schedule = config.noise_schedule()?;
    if images == 0 || batch == 0 {
        return Err(Error::InvalidArgument { what: "--images/--batch", reason: "must be at least 1".into() });
    }
    let test = load_mnist(Split::Test)?;
    let n = images.min(test.len());
    let calls = (n.div_ceil(batch) * config.timesteps) as u64;
    let progress = if show_progress { Progress::new("nll", calls, "model calls") } else { Progress::hidden() };
    let watched = Watched::new(model, &progress);
    let options = ReverseOptions { variance: config.variance_kind(), parameterization: config.parameterization(), clip_denoised: true };
    let mut r = rng(seed);
    let (mut totals, mut priors, mut decoders, mut vbs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_timestep = vec![0.0f64; config.timesteps];
    for start in (0..n).step_by(batch) {
        let indices: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x0 = Tensor::from_vec(test.gather_images(&indices)?, &[indices.len(), 1, 28, 28])?;
        let terms = watched.verdict(calc_bpd_loop(&schedule, &watched, &x0, options, &mut r))?;
        let vb = terms.vb.to_vec();
        for (i, row) in vb.chunks(config.timesteps).enumerate() {
            decoders.push(f64::from(row[0]));
            vbs.push(row[1..].iter().map(|&v| f64::from(v)).sum::<f64>());
            for (acc, &v) in per_timestep.iter_mut().zip(row) {
                *acc += f64::from(v);
            }
            priors.push(f64::from(terms.prior_bpd.to_vec()[i]));
            totals.push(f64::from(terms.total_bpd.to_vec()[i]));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let total = mean(&totals);
    let stderr = (totals.iter().map(|x| (x - total).powi(2)).sum::<f64>() / (totals.len().max(2) - 1) as f64 / totals.len() as f64).sqrt();
    progress.finish();
    per_timestep.iter_mut().for_each(|v| *v /= n as f64);
    Ok(NllReport {
        images: n,
        total_bpd: total,
        total_bpd_stderr: stderr,
        prior_bpd: mean(&priors),
        vb_bpd: mean(&vbs),
        decoder_bpd: mean(&decoders),
        per_timestep,
    })
}

/// `ddpm nll`: L_T + sum L_{t-1} + L_0 on test images, with the per-timestep curve.
///
/// # Errors
/// A bad checkpoint, a toy-data checkpoint, or I/O errors.
pub fn nll(args: &NllArgs) -> Result<(NllReport, PathBuf)> {
    let loaded = Loaded::read(&args.checkpoint)?;
    require_images(&loaded.config, "--checkpoint")?;
    // A run's figures go into its folder; a single file's (a shipped or exported
    // model, e.g. in data/) into the current folder, not beside it.
    let in_run_folder = args.checkpoint.is_dir() || loaded.path.file_name().is_some_and(|n| n == "checkpoint.safetensors");
    let out = match (&args.out, loaded.path.parent()) {
        (Some(out), _) => out.clone(),
        (None, Some(dir)) if in_run_folder => dir.to_path_buf(),
        (None, _) => PathBuf::from("."),
    };
    validate::writable_dir("--out", &out)?;
    let model = loaded.model(args.raw_weights)?;
    let report = bound_on_test_images(&model, &loaded.config, args.images, args.batch, args.seed, true)?;
    let n = report.images;
    let plot_path = out.join("nll_per_timestep.png");
    let plot = Plot {
        title: format!("bits/dim per timestep ({n} test images)"),
        x_label: "t (code index; t = 0 is L_0)".into(),
        y_label: "bits/dim".into(),
        log_y: true,
        series: vec![Series { label: "L_t".into(), points: report.per_timestep.iter().enumerate().map(|(t, &v)| (t as f64, v)).collect(), dots: false }],
    };
    save_png(&plot_path, &[plot]).map_err(io(&plot_path))?;
    let csv_path = out.join("nll_per_timestep.csv");
    let mut csv = String::from("t,bpd\n");
    for (t, v) in report.per_timestep.iter().enumerate() {
        let _ = writeln!(csv, "{t},{v:.8}");
    }
    std::fs::write(&csv_path, csv).map_err(io(&csv_path))?;
    Ok((report, plot_path))
}

impl NllReport {
    /// The table printed by `ddpm nll`.
    #[must_use]
    pub fn table(&self) -> String {
        format!(
            "bound on {} test images, bits/dim\n  L_T (prior)        {:>9.5}\n  sum L_(t-1)        {:>9.5}\n  L_0 (decoder)      {:>9.5}\n  total              {:>9.5} +- {:.5} (standard error)",
            self.images, self.prior_bpd, self.vb_bpd, self.decoder_bpd, self.total_bpd, self.total_bpd_stderr
        )
    }
}

/// `ddpm info`: config, step, parameters.
///
/// # Errors
/// A missing or bad checkpoint.
pub fn info(args: &InfoArgs) -> Result<String> {
    let loaded = Loaded::read(&args.checkpoint)?;
    let model = loaded.model(true)?;
    let mut out = format!("checkpoint {}\nstep {}", loaded.path.display(), loaded.step);
    if let Some(elapsed) = loaded.checkpoint.metadata.get(ELAPSED_KEY) {
        let _ = write!(out, " (trained for {elapsed} s)");
    }
    let _ = writeln!(out, "\nconfig {}", serde_json::to_string_pretty(&loaded.config).expect("serialises"));
    let _ = writeln!(out, "EMA weights: {}; optimizer state tensors: {}", if loaded.checkpoint.ema.is_empty() { "no" } else { "yes" }, loaded.checkpoint.optimizer.len());
    let params = model.named_params();
    for (name, p) in &params {
        let _ = writeln!(out, "  {name:<48} {:?}", p.dims());
    }
    let _ = write!(out, "{} parameter tensors, {} parameters", params.len(), model.num_params());
    Ok(out)
}

/// `ddpm export`: the EMA weights of a checkpoint (the raw ones if it kept no
/// EMA) as the model of a new checkpoint without EMA or optimizer state, a
/// quarter of the size. It samples and evaluates like the original; it cannot
/// resume training.
///
/// # Errors
/// A missing or bad checkpoint, or I/O errors.
pub fn export(args: &crate::cli::ExportArgs) -> Result<String> {
    let loaded = Loaded::read(&args.checkpoint)?;
    validate::writable_file("--out", &args.out)?;
    // The optimizer state is what makes a checkpoint resumable; an export has none.
    if !args.force && args.out.is_file() {
        if let Ok(existing) = nn::Checkpoint::<f32>::load(&args.out) {
            if !existing.optimizer.is_empty() {
                return Err(Error::InvalidArgument {
                    what: "--out",
                    reason: format!(
                        "{} is a resumable checkpoint (it holds optimizer state); exporting over it would end its run. Choose another --out, or add --force",
                        args.out.display()
                    ),
                });
            }
        }
    }
    let weights = if loaded.checkpoint.ema.is_empty() { "raw" } else { "ema" };
    let mut metadata = loaded.checkpoint.metadata.clone();
    metadata.insert("weights".into(), weights.into());
    let exported = nn::Checkpoint {
        model: loaded.model(false)?.named_params(),
        ema: Vec::new(),
        optimizer: Vec::new(),
        metadata,
    };
    exported.save(&args.out)?;
    let bytes = std::fs::metadata(&args.out).map_err(io(&args.out))?.len();
    Ok(format!("{} weights of {} at step {} -> {} ({:.1} MB)", weights, loaded.path.display(), loaded.step, args.out.display(), bytes as f64 / 1e6))
}

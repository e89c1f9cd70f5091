//! The commands that read a checkpoint or draw the forward process: `sample`,
//! `forward`, `info`, `export`.

use crate::data::dir::load_mnist;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::render::image::save_grid;
use crate::render::plot::{Plot, Series};
use crate::render::raster::save_png;
use crate::run::config::{Dataset, TrainConfig};
use crate::run::model::{Loaded, ELAPSED_KEY};
use crate::run::progress::Progress;
use crate::run::sampling::{draw_in_batches, model_calls, save_samples, SamplerChoice, SamplerKind, SAMPLE_BATCH};
use crate::run::validate;
use ddpm::q_sample;
use ddpm::schedule::{evenly_spaced_timesteps, BetaSchedule, NoiseSchedule};
use nn::Module;
use std::fmt::Write as _;
use std::path::Path;
use tensor::{rng, Tensor};

/// The metadata key of an exported file naming its weights: `ema` or `raw`.
const WEIGHTS_KEY: &str = "weights";

/// An I/O error naming `path`.
pub fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Refuses a checkpoint trained on 2-D points where images are needed.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what`.
pub fn require_images(config: &TrainConfig, what: &'static str) -> Result<()> {
    if config.data == Dataset::Mnist {
        Ok(())
    } else {
        Err(Error::InvalidArgument { what, reason: "this needs a checkpoint trained on MNIST images, not 2-D points".into() })
    }
}

/// A set of samples to draw: how, how many, from which seed.
#[derive(Clone, Copy, Debug)]
pub struct SampleSet {
    pub sampler: SamplerChoice,
    pub count: usize,
    /// Seed of the starting noise and every step's noise.
    pub seed: u64,
}

/// `ddpm sample`: a grid of `set` drawn from `loaded` (its raw weights with `raw`)
/// into `out`, and optionally the reverse trajectory into `trajectory`.
///
/// # Errors
/// A bad checkpoint or sampler setting, or an I/O error.
pub fn sample(loaded: &Loaded, raw: bool, set: SampleSet, out: &Path, trajectory: Option<&Path>) -> Result<String> {
    let config = &loaded.config;
    let SampleSet { sampler, count, seed } = set;
    let (kind, steps) = (sampler.kind, sampler.steps);
    if count == 0 {
        return Err(Error::InvalidArgument { what: "--count", reason: "must be at least 1".into() });
    }
    validate::sampler(&sampler, config.timesteps)?;
    validate::png_output("--out", out)?;
    if let Some(path) = trajectory {
        validate::png_output("--trajectory", path)?;
    }
    let model = loaded.model(raw)?;
    // The timesteps whose state the trajectory shows: ten along the sampler's path.
    let path_steps = match kind {
        SamplerKind::Ddpm => (0..config.timesteps).collect(),
        SamplerKind::Ddim | SamplerKind::Langevin => evenly_spaced_timesteps(config.timesteps, steps.clamp(2, config.timesteps))?,
    };
    let record: Vec<usize> = if trajectory.is_some() {
        require_images(config, "--trajectory")?;
        let frames = 10.min(path_steps.len());
        (0..frames).map(|i| path_steps[i * (path_steps.len() - 1) / (frames - 1).max(1)]).collect()
    } else {
        Vec::new()
    };
    let started = std::time::Instant::now();
    let progress = Progress::new("sample", (count.div_ceil(SAMPLE_BATCH) * model_calls(config, sampler)) as u64, "model calls");
    let drawn = draw_in_batches(&model, config, sampler, count, seed, &record, &progress)?;
    progress.finish();
    save_samples(out, config, &drawn.sample)?;
    let mut report = format!(
        "{} samples ({}) from {} at step {} in {:.1} s -> {}",
        count,
        sampler.describe(config.timesteps),
        loaded.path.display(),
        loaded.step,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    if let Some(path) = trajectory {
        // Rows: for each of the first four samples, x_t then the predicted x_0;
        // columns: the recorded timesteps, noisiest first, then the final sample.
        let side = config.example_dims().iter().product::<usize>().isqrt();
        let shown = count.min(4);
        let pixels = side * side;
        let final_images = drawn.sample.to_vec();
        let mut images = Vec::new();
        for i in 0..shown {
            for row in 0..2 {
                for frame in &drawn.frames {
                    let t = if row == 0 { &frame.x_t } else { &frame.pred_xstart };
                    images.extend_from_slice(&t.to_vec()[i * pixels..(i + 1) * pixels]);
                }
                images.extend_from_slice(&final_images[i * pixels..(i + 1) * pixels]);
            }
        }
        let cols = drawn.frames.len() + 1;
        save_grid(path, &images, shown * 2 * cols, side, side, cols).map_err(io(path))?;
        let ts: Vec<String> = drawn.frames.iter().map(|f| f.t.to_string()).collect();
        let _ = write!(report, "; trajectory at t = {} -> {}", ts.join(","), path.display());
    }
    Ok(report)
}

/// What `ddpm forward` draws.
#[derive(Clone, Debug)]
pub struct ForwardFigure {
    /// Timesteps (0-based code indices), one column each.
    pub t: Vec<usize>,
    /// MNIST test images, one row each.
    pub images: usize,
    pub schedule: BetaSchedule,
    /// T.
    pub timesteps: usize,
    /// Seed of the noise.
    pub seed: u64,
}

/// `ddpm forward`: the noising figure q(x_t | x_0) and the schedule plots (PNG)
/// into the folder `out`.
///
/// # Errors
/// Bad timesteps, or I/O errors.
pub fn forward(figure: &ForwardFigure, out: &Path) -> Result<String> {
    let schedule = NoiseSchedule::new(figure.schedule, figure.timesteps)?;
    validate::writable_dir("--out", out)?;
    if let Some(&bad) = figure.t.iter().find(|&&t| t >= figure.timesteps) {
        return Err(Error::InvalidArgument { what: "--t", reason: format!("timestep {bad} is not below T = {}", figure.timesteps) });
    }
    if figure.images == 0 || figure.t.is_empty() {
        return Err(Error::InvalidArgument { what: "--images/--t", reason: "need at least one image and one timestep".into() });
    }
    let test = load_mnist(Split::Test)?;
    let n = figure.images.min(test.len());
    let x0 = Tensor::from_vec(test.gather_images(&(0..n).collect::<Vec<_>>())?, &[n, 1, 28, 28])?;
    // One noise draw per image, shared by every t: each row shows one path of noising.
    let noise = Tensor::<f32>::randn(x0.dims(), &mut rng(figure.seed));
    let mut columns = Vec::new();
    for &t in &figure.t {
        columns.push(q_sample(&schedule, &x0, &vec![t; n], &noise)?.to_vec());
    }
    let mut images = Vec::new();
    for i in 0..n {
        for column in &columns {
            images.extend_from_slice(&column[i * 784..(i + 1) * 784]);
        }
    }
    let picture = out.join("forward.png");
    save_grid(&picture, &images, n * figure.t.len(), 28, 28, figure.t.len()).map_err(io(&picture))?;
    let curves = |f: &dyn Fn(f64) -> f64| -> Result<Vec<Series>> {
        [("linear", BetaSchedule::Linear), ("cosine", BetaSchedule::Cosine)]
            .into_iter()
            // The linear schedule needs T > 20 (beta_T = 20 / T < 1); with fewer
            // steps only the cosine curve is drawn.
            .filter(|(_, k)| *k != BetaSchedule::Linear || figure.timesteps > 20)
            .map(|(label, k)| {
                let s = NoiseSchedule::new(k, figure.timesteps)?;
                let points = s.alphas_cumprod.iter().enumerate().map(|(t, &a)| (t as f64, f(a))).collect();
                Ok(Series { label: label.into(), points, dots: false })
            })
            .collect()
    };
    let alpha_bar = Plot {
        title: "alpha-bar_t".into(),
        x_label: "t (code index)".into(),
        y_label: "alpha-bar".into(),
        log_y: false,
        series: curves(&|a| a)?,
    };
    let snr = Plot {
        title: "SNR_t = alpha-bar / (1 - alpha-bar)".into(),
        x_label: "t (code index)".into(),
        y_label: "SNR".into(),
        log_y: true,
        series: curves(&|a| a / (1.0 - a))?,
    };
    let plots = out.join("schedule.png");
    save_png(&plots, &[alpha_bar, snr]).map_err(io(&plots))?;
    Ok(format!("q(x_t | x_0) for {n} test images at t = {:?} -> {}; schedules -> {}", figure.t, picture.display(), plots.display()))
}

/// `ddpm info`: config, step, parameters.
///
/// # Errors
/// A bad checkpoint.
pub fn info(loaded: &Loaded) -> Result<String> {
    let model = loaded.model(true)?;
    let mut out = format!("checkpoint {}\nstep {}", loaded.path.display(), loaded.step);
    if let Some(elapsed) = loaded.checkpoint.metadata.get(ELAPSED_KEY) {
        let _ = write!(out, " (trained for {elapsed} s)");
    }
    let _ = writeln!(out, "\nconfig {}", serde_json::to_string_pretty(&loaded.config).expect("serialises"));
    // An exported file keeps the EMA weights as its model tensors and says so in
    // its metadata (`weights=ema`), so it has EMA weights without an `ema.` part.
    let ema = match (loaded.checkpoint.ema.is_empty(), loaded.checkpoint.metadata.get(WEIGHTS_KEY).map(String::as_str)) {
        (false, _) => "yes",
        (true, Some("ema")) => "yes (exported: the model tensors are the run's EMA weights)",
        (true, _) => "no",
    };
    let _ = writeln!(out, "EMA weights: {ema}; optimizer state tensors: {}", loaded.checkpoint.optimizer.len());
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
pub fn export(loaded: &Loaded, out: &Path, force: bool) -> Result<String> {
    validate::writable_file("--out", out)?;
    // The optimizer state is what makes a checkpoint resumable; an export has none.
    if !force && out.is_file() {
        if let Ok(existing) = nn::Checkpoint::<f32>::load(out) {
            if !existing.optimizer.is_empty() {
                return Err(Error::InvalidArgument {
                    what: "--out",
                    reason: format!(
                        "{} is a resumable checkpoint (it holds optimizer state); exporting over it would end its run. Choose another --out, or add --force",
                        out.display()
                    ),
                });
            }
        }
    }
    let weights = if loaded.checkpoint.ema.is_empty() { "raw" } else { "ema" };
    let mut metadata = loaded.checkpoint.metadata.clone();
    metadata.insert(WEIGHTS_KEY.into(), weights.into());
    let exported = nn::Checkpoint { model: loaded.model(false)?.named_params(), ema: Vec::new(), optimizer: Vec::new(), metadata };
    exported.save(out)?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(format!(
        "{} weights of {} at step {} -> {} ({:.1} MB)",
        weights,
        loaded.path.display(),
        loaded.step,
        out.display(),
        bytes as f64 / 1e6
    ))
}

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
use crate::run::sampling::{draw_in_batches, model_calls, save_samples, SamplerChoice, SAMPLE_BATCH};
use crate::run::validate;
use ddpm::q_sample;
use ddpm::sampler::Frame;
use ddpm::schedule::{BetaSchedule, NoiseSchedule};
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
    validate::sample_count("--count", count, 1)?;
    validate::sampler(&sampler, config.timesteps)?;
    validate::png_output("--out", out)?;
    if let Some(path) = trajectory {
        validate::png_output("--trajectory", path)?;
    }
    let model = loaded.model(raw)?;
    // The timesteps whose state the trajectory shows: ten along the sampler's path.
    let path_steps = sampler.timesteps(config.timesteps)?;
    let record: Vec<usize> = if trajectory.is_some() {
        require_images(config, "--trajectory")?;
        trajectory_timesteps(&path_steps)
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
        let images = trajectory_tiles(&drawn.frames, &drawn.sample.to_vec(), shown, side * side);
        let cols = drawn.frames.len() + 1;
        save_grid(path, &images, shown * 2 * cols, side, side, cols).map_err(io(path))?;
        let ts: Vec<String> = drawn.frames.iter().map(|f| f.t.to_string()).collect();
        let _ = write!(report, "; trajectory at t = {} -> {}", ts.join(","), path.display());
    }
    Ok(report)
}

/// The timesteps a trajectory shows: ten (or all, if fewer) of the sampler's
/// timesteps `path` (ascending), evenly spaced, its first and last included.
/// The frames come back in sampling order, noisiest first.
fn trajectory_timesteps(path: &[usize]) -> Vec<usize> {
    let frames = 10.min(path.len());
    (0..frames).map(|i| path[i * (path.len() - 1) / (frames - 1).max(1)]).collect()
}

/// The tiles of a trajectory figure, row by row: for each of the first `shown`
/// samples, its x_t at every frame then the final sample, and after that its
/// predicted x_0 at every frame then the final sample again (a figure of
/// `2 (frames + 1)` columns shows it as two rows). `pixels` values an image.
fn trajectory_tiles(frames: &[Frame<f32>], final_images: &[f32], shown: usize, pixels: usize) -> Vec<f32> {
    let x_t: Vec<Vec<f32>> = frames.iter().map(|f| f.x_t.to_vec()).collect();
    let pred: Vec<Vec<f32>> = frames.iter().map(|f| f.pred_xstart.to_vec()).collect();
    let mut columns: Vec<&[f32]> = x_t.iter().map(Vec::as_slice).collect();
    columns.push(final_images);
    columns.extend(pred.iter().map(Vec::as_slice));
    columns.push(final_images);
    tiles_by_row(&columns, shown, pixels)
}

/// Tiles for a grid whose row `i` is image `i` of every column in turn: each
/// column holds images of `pixels` values, of which the first `rows` are used.
fn tiles_by_row(columns: &[&[f32]], rows: usize, pixels: usize) -> Vec<f32> {
    let mut tiles = Vec::with_capacity(rows * columns.len() * pixels);
    for i in 0..rows {
        for column in columns {
            tiles.extend_from_slice(&column[i * pixels..(i + 1) * pixels]);
        }
    }
    tiles
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
    let images = tiles_by_row(&columns.iter().map(Vec::as_slice).collect::<Vec<_>>(), n, 784);
    let picture = out.join("forward.png");
    save_grid(&picture, &images, n * figure.t.len(), 28, 28, figure.t.len()).map_err(io(&picture))?;
    let plots = out.join("schedule.png");
    save_png(&plots, &schedule_plots(figure.timesteps)?).map_err(io(&plots))?;
    Ok(format!("q(x_t | x_0) for {n} test images at t = {:?} -> {}; schedules -> {}", figure.t, picture.display(), plots.display()))
}

/// The two plots of `ddpm forward`'s `schedule.png`: alpha-bar_t and
/// SNR_t = alpha-bar_t / (1 - alpha-bar_t) against t, one curve per schedule.
/// The linear schedule needs T > 20 (beta_T = 20 / T < 1); with fewer steps
/// only the cosine curve is drawn.
fn schedule_plots(timesteps: usize) -> Result<[Plot; 2]> {
    let curves = |f: &dyn Fn(f64) -> f64| -> Result<Vec<Series>> {
        [("linear", BetaSchedule::Linear), ("cosine", BetaSchedule::Cosine)]
            .into_iter()
            .filter(|(_, k)| *k != BetaSchedule::Linear || timesteps > 20)
            .map(|(label, k)| {
                let s = NoiseSchedule::new(k, timesteps)?;
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
    Ok([alpha_bar, snr])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trajectory_shows_ten_evenly_spaced_timesteps_from_first_to_last() {
        let path: Vec<usize> = (0..20).map(|k| 100 + k).collect();
        // Frame i of 10 is path index floor(i * 19 / 9).
        let picked: Vec<usize> = [0, 2, 4, 6, 8, 10, 12, 14, 16, 19].iter().map(|k| 100 + k).collect();
        assert_eq!(trajectory_timesteps(&path), picked);
        assert_eq!(trajectory_timesteps(&path[..10]), path[..10].to_vec());
        assert_eq!(trajectory_timesteps(&path[..4]), path[..4].to_vec());
        assert_eq!(trajectory_timesteps(&path[..1]), path[..1].to_vec());
    }

    #[test]
    fn trajectory_tiles_put_each_samples_states_then_predictions_in_rows() {
        // Three samples of two values each; two frames. A value names its tile:
        // x_t of frame f is 10 f + i, the prediction 100 + 10 f + i, the final 1000 + i.
        let frame = |f: usize| {
            let values = |base: f32| -> Tensor<f32> {
                let data = (0..3).flat_map(|i| [base + i as f32; 2]).collect();
                Tensor::from_vec(data, &[3, 1, 1, 2]).unwrap()
            };
            Frame { t: 9 - f, x_t: values(10.0 * f as f32), pred_xstart: values(100.0 + 10.0 * f as f32) }
        };
        let final_images: Vec<f32> = (0..3).flat_map(|i| [1000.0 + i as f32; 2]).collect();
        let tiles = trajectory_tiles(&[frame(0), frame(1)], &final_images, 2, 2);
        let names: Vec<f32> = tiles.chunks(2).map(|tile| tile[0]).collect();
        assert!(tiles.chunks(2).all(|tile| tile[0] == tile[1]), "a tile mixes two images");
        assert_eq!(names, [0.0, 10.0, 1000.0, 100.0, 110.0, 1000.0, 1.0, 11.0, 1001.0, 101.0, 111.0, 1001.0]);
    }

    #[test]
    fn tiles_by_row_take_image_i_of_every_column_for_row_i() {
        let (a, b) = ([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], [4.0, 4.0, 5.0, 5.0, 6.0, 6.0]);
        assert_eq!(tiles_by_row(&[&a, &b], 2, 2), [1.0, 1.0, 4.0, 4.0, 2.0, 2.0, 5.0, 5.0]);
    }

    #[test]
    fn schedule_plots_show_alpha_bar_and_its_snr_for_each_schedule_that_exists() {
        let labels = |plot: &Plot| plot.series.iter().map(|s| s.label.clone()).collect::<Vec<_>>();
        let [alpha_bar, snr] = schedule_plots(1000).unwrap();
        assert_eq!(labels(&alpha_bar), ["linear", "cosine"]);
        assert_eq!(labels(&snr), ["linear", "cosine"]);
        // The linear schedule's first step: beta_0 = 1e-4, so alpha-bar_0 = 0.9999 and
        // SNR_0 = 0.9999 / 0.0001 = 9999.
        let (t0, a0) = alpha_bar.series[0].points[0];
        assert!(t0 == 0.0 && (a0 - 0.9999).abs() < 1e-12, "{a0}");
        let (_, snr0) = snr.series[0].points[0];
        assert!((snr0 / 9999.0 - 1.0).abs() < 1e-8, "{snr0}");
        assert_eq!((alpha_bar.series[1].points.len(), snr.series[1].points.len()), (1000, 1000));
        // beta_T of the linear schedule is 20 / T: a schedule only above T = 20.
        assert_eq!(labels(&schedule_plots(21).unwrap()[0]), ["linear", "cosine"]);
        assert_eq!(labels(&schedule_plots(20).unwrap()[0]), ["cosine"]);
        assert_eq!(labels(&schedule_plots(20).unwrap()[1]), ["cosine"]);
    }

    #[test]
    fn forward_refuses_no_images_and_no_timesteps_each_on_its_own() {
        let out = std::env::temp_dir().join(format!("ddpm-forward-args-{}", std::process::id()));
        let figure = ForwardFigure { t: vec![0, 500], images: 3, schedule: BetaSchedule::Linear, timesteps: 1000, seed: 0 };
        for bad in [ForwardFigure { images: 0, ..figure.clone() }, ForwardFigure { t: Vec::new(), ..figure.clone() }] {
            let err = forward(&bad, &out).unwrap_err().to_string();
            assert!(err.contains("--images/--t"), "{err}");
        }
        let err = forward(&ForwardFigure { t: vec![1000], ..figure }, &out).unwrap_err().to_string();
        assert!(err.contains("--t") && err.contains("1000"), "{err}");
        let _ = std::fs::remove_dir_all(out);
    }
}

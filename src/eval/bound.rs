//! `ddpm nll`: the variational bound in bits/dim on MNIST test images, L_T +
//! sum L_{t-1} + L_0, with its curve over the timesteps.

use crate::data::dir::load_mnist;
use crate::data::mnist::Split;
use crate::error::{Error, Result};
use crate::render::plot::{Plot, Series};
use crate::render::raster::save_png;
use crate::run::commands::{io, require_images};
use crate::run::config::TrainConfig;
use crate::run::model::{Loaded, Model};
use crate::run::progress::Progress;
use crate::run::validate;
use crate::run::watched::Watched;
use ddpm::calc_bpd_loop;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tensor::{rng, Tensor};

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
pub fn bound_on_test_images(
    model: &Model,
    config: &TrainConfig,
    images: usize,
    batch: usize,
    seed: u64,
    show_progress: bool,
) -> Result<NllReport> {
    let schedule = config.noise_schedule()?;
    if images == 0 || batch == 0 {
        return Err(Error::InvalidArgument { what: "--images/--batch", reason: "must be at least 1".into() });
    }
    let test = load_mnist(Split::Test)?;
    let n = images.min(test.len());
    let calls = (n.div_ceil(batch) * config.timesteps) as u64;
    let progress = if show_progress { Progress::new("nll", calls, "model calls") } else { Progress::hidden() };
    let watched = Watched::new(model, &progress);
    let options = config.reverse_options(true);
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

/// `ddpm nll`: L_T + sum L_{t-1} + L_0 on `images` test images (`batch` at a
/// time, noise from `seed`) for `loaded` (its raw weights with `raw`), with the
/// per-timestep curve as PNG and CSV in `out` (default: the run folder of a run's
/// checkpoint, else the current folder).
///
/// # Errors
/// A bad checkpoint, a toy-data checkpoint, or I/O errors.
pub fn nll(loaded: &Loaded, raw: bool, images: usize, batch: usize, seed: u64, out: Option<&Path>) -> Result<(NllReport, PathBuf)> {
    require_images(&loaded.config, "--checkpoint")?;
    // A run's figures go into its folder; a single file's (a shipped or exported
    // model, e.g. in data/) into the current folder, not beside it.
    let in_run_folder = loaded.path.file_name().is_some_and(|n| n == "checkpoint.safetensors");
    let out = match (out, loaded.path.parent()) {
        (Some(out), _) => out.to_path_buf(),
        (None, Some(dir)) if in_run_folder => dir.to_path_buf(),
        (None, _) => PathBuf::from("."),
    };
    validate::writable_dir("--out", &out)?;
    let model = loaded.model(raw)?;
    let report = bound_on_test_images(&model, &loaded.config, images, batch, seed, true)?;
    let n = report.images;
    let plot_path = out.join("nll_per_timestep.png");
    let plot = Plot {
        title: format!("bits/dim per timestep ({n} test images)"),
        x_label: "t (code index; t = 0 is L_0)".into(),
        y_label: "bits/dim".into(),
        log_y: true,
        series: vec![Series {
            label: "L_t".into(),
            points: report.per_timestep.iter().enumerate().map(|(t, &v)| (t as f64, v)).collect(),
            dots: false,
        }],
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

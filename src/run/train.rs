//! `ddpm train`: Algorithm 1 of Ho et al. ([`train_step`]) in a loop, with
//! everything a long run needs.
//!
//! A run folder holds `config.json`, `metrics.csv` (step, loss, lr, grad-norm,
//! throughput), `checkpoint.safetensors` (weights, EMA, optimizer state, config and
//! step), sample pictures under `samples/`, and `loss.png`.
//!
//! Reproducibility: the weights depend on the seed only; the minibatch and the noise
//! of step `s` come from a random stream keyed by (seed, s), so a run resumed from a
//! checkpoint at step `s` continues exactly as the uninterrupted run would have.
//! Ctrl-C finishes the current step, saves a checkpoint and exits cleanly.

use crate::data::mnist::{MnistSplit, Split};
use crate::error::{Error, Result};
use crate::render::plot::{Plot, Series};
use crate::render::raster::save_png;
use crate::run::algorithm1::train_step;
use crate::run::config::{Dataset, LrScheduleKind, TrainConfig};
use crate::run::model::{Model, CONFIG_KEY, ELAPSED_KEY, FORMAT, FORMAT_KEY, STEP_KEY};
use crate::run::progress::Progress;
use crate::run::run_lock::{remove_stale_temp_files, RunLock};
use crate::run::sampling::{draw, draw_in_batches, save_samples, toy_points, SamplerChoice};
use ddpm::{sample_timesteps, training_losses};
use nn::{Adam, Checkpoint, Ema, Module, Optimizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tensor::{Rng, Tensor};

/// Where a run lives and how it reports: the parts of a training command that do
/// not change its math.
#[derive(Clone, Debug)]
pub struct Session {
    /// The run folder.
    pub dir: PathBuf,
    /// Continue the run folder's last checkpoint instead of starting anew.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// Points in a toy 2-D training set.
const TOY_POINTS: usize = 20_000;

/// What a finished (or interrupted) run reports.
#[derive(Debug)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub steps_done: usize,
    pub steps_this_session: usize,
    pub seconds_this_session: f64,
    pub final_loss: f64,
    pub samples: Option<PathBuf>,
    pub interrupted: bool,
    /// The `--time-budget` that stopped the run before its last step, in seconds.
    pub out_of_time: Option<f64>,
}

impl Summary {
    /// The one line printed at the end.
    #[must_use]
    pub fn line(&self) -> String {
        let rate = self.steps_this_session as f64 / self.seconds_this_session.max(1e-9);
        let mut s = format!(
            "{} at step {} ({} steps in {:.1} s, {:.2} steps/s)",
            if self.interrupted {
                "interrupted"
            } else if self.out_of_time.is_some() {
                "stopped early"
            } else {
                "done"
            },
            self.steps_done,
            self.steps_this_session,
            self.seconds_this_session,
            rate,
        );
        // A run resumed at its last step takes no step and has no loss to show.
        if self.steps_this_session > 0 {
            s.push_str(&format!(", loss {:.4}", self.final_loss));
        }
        if let Some(budget) = self.out_of_time {
            s.push_str(&format!(", by --time-budget {budget} s before --steps was reached (--resume goes on)"));
        }
        s.push_str(&format!(", run folder {}", self.run_dir.display()));
        if let Some(p) = &self.samples {
            s.push_str(&format!(", samples {}", p.display()));
        }
        s
    }
}

/// A random stream for one purpose and one index (a step, an epoch), from the seed.
fn stream(seed: u64, purpose: u64, index: u64) -> Rng {
    let mut r = Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(index);
    r
}

const DATA_ORDER: u64 = 1;
const STEP_NOISE: u64 = 2;
const MEMORY_PROBE: u64 = 3;

/// The training examples, gathered into batches in a seeded shuffled order.
enum TrainData {
    Mnist(MnistSplit),
    Points(Vec<[f32; 2]>),
}

impl TrainData {
    fn load(config: &TrainConfig) -> Result<Self> {
        Ok(match config.data {
            Dataset::Mnist => TrainData::Mnist(crate::data::dir::load_mnist(Split::Train)?),
            toy => TrainData::Points(toy_points(toy, TOY_POINTS, config.seed)),
        })
    }

    fn len(&self) -> usize {
        match self {
            TrainData::Mnist(m) => m.len(),
            TrainData::Points(p) => p.len(),
        }
    }

    fn gather(&self, indices: &[usize], example_dims: &[usize]) -> Result<Tensor<f32>> {
        let values = match self {
            TrainData::Mnist(m) => m.gather_images(indices)?,
            TrainData::Points(p) => indices.iter().flat_map(|&i| p[i]).collect(),
        };
        let mut dims = vec![indices.len()];
        dims.extend(example_dims);
        Ok(Tensor::from_vec(values, &dims)?)
    }
}

/// The epoch-by-epoch shuffled order: example `k` of the whole run (k = step * B + j)
/// is `perm_e[k mod N]` with `e = k / N` and `perm_e` seeded by (seed, e).
struct BatchOrder {
    seed: u64,
    len: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl BatchOrder {
    fn indices(&mut self, step: usize, batch: usize) -> Vec<usize> {
        (step * batch..(step + 1) * batch)
            .map(|k| {
                let epoch = k / self.len;
                if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
                    let mut perm: Vec<usize> = (0..self.len).collect();
                    perm.shuffle(&mut stream(self.seed, DATA_ORDER, epoch as u64));
                    self.epoch = Some((epoch, perm));
                }
                self.epoch.as_ref().map_or(0, |(_, p)| p[k % self.len])
            })
            .collect()
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// The state of a run between steps.
struct Run {
    dir: PathBuf,
    config: TrainConfig,
    model: Model,
    optimizer: Adam<f32>,
    ema: Ema<f32>,
    step: usize,
    elapsed_before: f64,
    /// Held while the run trains; dropping it frees the folder.
    _lock: RunLock,
}

impl Run {
    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    fn save_checkpoint(&self, elapsed: f64) -> Result<()> {
        let metadata = BTreeMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            (CONFIG_KEY.to_string(), serde_json::to_string(&self.config).expect("the config serialises")),
            (STEP_KEY.to_string(), self.step.to_string()),
            (ELAPSED_KEY.to_string(), format!("{elapsed:.3}")),
            ("ema_updates".to_string(), self.ema.num_updates.to_string()),
        ]);
        let checkpoint = Checkpoint {
            model: self.model.named_params(),
            ema: self.ema.shadow.clone(),
            optimizer: self.optimizer.state_tensors(),
            metadata,
        };
        checkpoint.save(self.checkpoint_path())?;
        Ok(())
    }

    fn ema_model(&self) -> Result<Model> {
        let mut model = self.ema.averaged_copy(&self.model)?;
        model.set_mode(nn::Mode::Eval);
        Ok(model)
    }
}

/// Starts a new run of `config` (validated) or resumes one, per `session`; a resumed
/// run keeps every setting of its checkpoint's config but the budget and the outputs.
fn open_run(config: &TrainConfig, session: &Session) -> Result<Run> {
    let dir = session.dir.clone();
    let checkpoint_file = dir.join("checkpoint.safetensors");
    let config = config.clone();
    if session.resume {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument { what: "--resume", reason: format!("{} does not exist", dir.display()) });
        }
        let lock = lock_run(&dir)?;
        let loaded = crate::run::model::Loaded::read(&checkpoint_file)?;
        let fixed = config.fixed_on_resume(&loaded.config);
        if !fixed.is_empty() {
            return Err(Error::InvalidArgument {
                what: "--resume",
                reason: format!("{} cannot change when resuming; the run's config.json fixes them", fixed.join(", ")),
            });
        }
        if config.lr_schedule == LrScheduleKind::Cosine && config.steps != loaded.config.steps {
            return Err(Error::InvalidArgument {
                what: "--steps",
                reason: format!(
                    "the run's cosine learning rate reaches 0 at step {}; resuming it to another length would change the schedule mid-run",
                    loaded.config.steps
                ),
            });
        }
        // The weights come from the checkpoint; the file the run started from is
        // the saved config's, whether or not --init is given again.
        let config = TrainConfig { init: config.init.or_else(|| loaded.config.init.clone()), ..config };
        let mut model = Model::new(&config.model, config.seed)?;
        model.load_named_params(&loaded.checkpoint.model)?;
        let mut optimizer = config.optimizer();
        optimizer.load_state_tensors(&loaded.checkpoint.optimizer)?;
        let mut ema = Ema::new(&model, config.ema_decay).with_warmup(config.ema_warmup);
        let source = checkpoint_file.display().to_string();
        if ema.shadow.iter().map(|(n, _)| n).ne(loaded.checkpoint.ema.iter().map(|(n, _)| n)) {
            return Err(Error::Format { file: source, offset: 0, reason: "its EMA weights do not match the model's parameters".into() });
        }
        ema.shadow = loaded.checkpoint.ema.clone();
        ema.num_updates = loaded.checkpoint.metadata.get("ema_updates").and_then(|v| v.parse().ok()).unwrap_or(loaded.step as u64);
        let elapsed_before = loaded.checkpoint.metadata.get(ELAPSED_KEY).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config).expect("serialises").as_bytes())?;
        truncate_metrics(&dir.join("metrics.csv"), loaded.step)?;
        return Ok(Run { dir, config, model, optimizer, ema, step: loaded.step, elapsed_before, _lock: lock });
    }
    // The model first, so that a bad --init makes no run folder.
    let model = match &config.init {
        Some(init) => initial_weights(init, &config)?,
        None => {
            let mut model = Model::new(&config.model, config.seed)?;
            if let (Model::Unet(unet), true) = (&mut model, config.zero_init) {
                unet.zero_branch_outputs();
            }
            model
        }
    };
    crate::run::validate::writable_dir("--run", &dir)?;
    fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let lock = lock_run(&dir)?;
    if checkpoint_file.exists() {
        return Err(Error::InvalidArgument {
            what: "--run",
            reason: format!("{} already holds a checkpoint; add --resume to continue it, or choose another --run", dir.display()),
        });
    }
    write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config).expect("serialises").as_bytes())?;
    write_atomic(&dir.join("metrics.csv"), b"step,loss,lr,grad_norm,examples_per_second\n")?;
    let optimizer = config.optimizer();
    let ema = Ema::new(&model, config.ema_decay).with_warmup(config.ema_warmup);
    Ok(Run { dir, config, model, optimizer, ema, step: 0, elapsed_before: 0.0, _lock: lock })
}

/// The model of `--init`: the weights a new run starts from, read from a checkpoint
/// or an exported file (its EMA weights) whose architecture is the run's.
fn initial_weights(init: &Path, config: &TrainConfig) -> Result<Model> {
    let loaded = crate::run::model::Loaded::read(init).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument { what: "--init", reason },
        other => other,
    })?;
    if loaded.config.model != config.model {
        return Err(Error::InvalidArgument {
            what: "--init",
            reason: format!(
                "{} holds a model of another architecture ({:?}) than this run's ({:?})",
                loaded.path.display(),
                loaded.config.model,
                config.model
            ),
        });
    }
    let mut model = loaded.model(false)?;
    model.set_mode(nn::Mode::Train);
    Ok(model)
}

/// Takes the run folder's lock, then clears what killed writes left in it.
fn lock_run(dir: &Path) -> Result<RunLock> {
    let lock = RunLock::acquire(dir)?;
    for file in remove_stale_temp_files(dir)? {
        eprintln!("removed {}, left by a write that was killed", file.display());
    }
    Ok(lock)
}

/// Keeps the header and the rows up to `step`: the steps after the checkpoint are
/// trained again, and their rows written again.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let text = fs::read_to_string(path).unwrap_or_else(|_| "step,loss,lr,grad_norm,examples_per_second\n".into());
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, line)| *i == 0 || line.split(',').next().and_then(|s| s.parse::<usize>().ok()).is_some_and(|s| s <= step))
        .map(|(_, l)| l)
        .collect();
    write_atomic(path, format!("{}\n", kept.join("\n")).as_bytes())
}

/// The loss curve of `metrics.csv` as `loss.png`.
fn plot_loss(dir: &Path) -> Result<()> {
    let text = fs::read_to_string(dir.join("metrics.csv")).map_err(|source| Error::Io { path: dir.join("metrics.csv"), source })?;
    let points: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    // A running mean over 50 steps shows the trend under the minibatch noise.
    let window = 50;
    let losses: Vec<f64> = points.iter().map(|p| p.1).collect();
    let smooth = points.iter().map(|p| p.0).zip(running_mean(&losses, window)).collect();
    let plot = Plot {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        log_y: true,
        series: vec![
            Series { label: "per step".into(), points, dots: false },
            Series { label: format!("mean of {window}"), points: smooth, dots: false },
        ],
    };
    save_png(&dir.join("loss.png"), &[plot]).map_err(|source| Error::Io { path: dir.join("loss.png"), source })
}

/// The mean of each value and the `window - 1` before it (fewer at the start,
/// where there are fewer before it).
fn running_mean(values: &[f64], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            values[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64
        })
        .collect()
}

/// Refuses a batch too large for the memory available, before the kernel kills the
/// process: one forward and backward pass on a probe batch, measured. The probe runs
/// on a copy of the model with its own noise, so the run itself is unchanged.
fn check_batch_fits(model: &Model, config: &TrainConfig, data: &TrainData, example_dims: &[usize]) -> Result<()> {
    let Some(available) = crate::run::memory::available_bytes() else { return Ok(()) };
    if config.batch <= crate::run::memory::PROBE_BATCH {
        return Ok(());
    }
    let probe_model = model.clone();
    let schedule = config.noise_schedule()?;
    let per_example = crate::run::memory::bytes_per_example(|batch| {
        let x_start = data.gather(&(0..batch.min(data.len())).collect::<Vec<_>>(), example_dims)?;
        let mut r = stream(config.seed, MEMORY_PROBE, 0);
        let t = sample_timesteps(config.timesteps, x_start.dims()[0], &mut r);
        let noise = Tensor::<f32>::randn(x_start.dims(), &mut r);
        let loss = training_losses(&schedule, &probe_model, &x_start, &t, &noise, config.training_options())?.loss;
        drop(loss.backward()?);
        Ok(())
    })?;
    match per_example {
        Some(per_example) => crate::run::memory::check_batch("--batch", config.batch, per_example, available),
        None => Ok(()),
    }
}

/// Trains `config` in the run folder of `session`; see the module docs.
///
/// # Errors
/// Bad settings or files, I/O errors, or [`Error::Diverged`] on a non-finite loss or
/// gradient (after which nothing is written).
pub fn train(config: &TrainConfig, session: &Session, interrupt: &AtomicBool) -> Result<Summary> {
    // Whatever can refuse the settings or the data does so before the run folder is
    // touched (a resumed run's config is `config`: the settings these read are fixed).
    config.validate()?;
    let schedule = config.noise_schedule()?;
    let data = TrainData::load(config)?;
    let mut run = open_run(config, session)?;
    let config = run.config.clone();
    let options = config.training_options();
    let mut order = BatchOrder { seed: config.seed, len: data.len(), epoch: None };
    let example_dims = config.example_dims();
    check_batch_fits(&run.model, &config, &data, &example_dims)?;
    let start_step = run.step;
    let mut metrics = fs::OpenOptions::new()
        .append(true)
        .open(run.dir.join("metrics.csv"))
        .map_err(|source| Error::Io { path: run.dir.join("metrics.csv"), source })?;
    let samples_dir = run.dir.join("samples");
    let progress = if session.quiet { Progress::hidden() } else { Progress::new("train", config.steps as u64, "steps") };
    progress.start_at(start_step as u64);
    let started = Instant::now();
    // The other rayon workers busy-wait for the next op instead of sleeping
    // between ops (see `tensor::awake`): 6-9% of a step on the Intel Xeon.
    let _awake = tensor::KeepAwake::new();
    let mut last_checkpoint = run.checkpoint_path().exists().then(|| run.checkpoint_path());
    let mut final_loss = f64::NAN;
    let mut interrupted = false;
    let mut out_of_time = false;
    while run.step < config.steps {
        let step_started = Instant::now();
        let step = run.step; // 0-based index of this step
        let lr = config.lr_at(step + 1);
        run.optimizer.set_lr(lr);
        let x_start = data.gather(&order.indices(step, config.batch), &example_dims)?;
        let max_norm = if config.grad_clip > 0.0 { config.grad_clip } else { f64::INFINITY };
        let mut r = stream(config.seed, STEP_NOISE, step as u64);
        let outcome = train_step(&schedule, &mut run.model, &mut run.optimizer, &x_start, options, max_norm, &mut r)?;
        let (loss_value, grad_norm) = (outcome.loss, outcome.grad_norm);
        if !outcome.stepped() {
            let what = if loss_value.is_finite() { "the gradient norm" } else { "the loss" };
            return Err(Error::Diverged { step: step + 1, what: what.to_string(), last_checkpoint: last_checkpoint.clone() });
        }
        run.ema.update(&run.model)?;
        run.step += 1;
        final_loss = loss_value;
        let rate = config.batch as f64 / step_started.elapsed().as_secs_f64();
        writeln!(metrics, "{},{loss_value:.6},{lr:.6e},{grad_norm:.6},{rate:.1}", run.step)
            .map_err(|source| Error::Io { path: run.dir.join("metrics.csv"), source })?;
        progress.set_position(run.step as u64);
        progress
            .set_message(format!("loss {loss_value:.4}  {:.2} steps/s", (run.step - start_step) as f64 / started.elapsed().as_secs_f64()));
        let elapsed = run.elapsed_before + started.elapsed().as_secs_f64();
        // The budget is this invocation's, so a --resume after it trains for another budget.
        out_of_time = config.time_budget > 0.0 && started.elapsed().as_secs_f64() >= config.time_budget && run.step < config.steps;
        interrupted = interrupt.load(Ordering::SeqCst);
        let finished = run.step == config.steps || out_of_time || interrupted;
        if finished || run.step % config.checkpoint_every == 0 {
            run.save_checkpoint(elapsed)?;
            last_checkpoint = Some(run.checkpoint_path());
        }
        if config.sample_every > 0 && run.step % config.sample_every == 0 && !finished {
            let path = samples_dir.join(format!("step_{:07}.{}", run.step, "png"));
            let trajectory = draw(&run.ema_model()?, &config, SamplerChoice::DDIM_50, config.samples.min(64), config.seed, &[])?;
            save_samples(&path, &config, &trajectory.sample)?;
        }
        if finished {
            break;
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let _ = metrics.flush();
    plot_loss(&run.dir)?;
    let samples = if interrupted {
        None
    } else {
        let path = run.dir.join(format!("samples.{}", "png"));
        let sampler = if config.data == Dataset::Mnist { SamplerChoice::DDIM_50 } else { SamplerChoice::ANCESTRAL };
        let trajectory = draw_in_batches(&run.ema_model()?, &config, sampler, config.samples, config.seed, &[], &Progress::hidden())?;
        save_samples(&path, &config, &trajectory.sample)?;
        Some(path)
    };
    Ok(Summary {
        run_dir: run.dir,
        steps_done: run.step,
        steps_this_session: run.step - start_step,
        seconds_this_session: seconds,
        final_loss,
        samples,
        interrupted,
        out_of_time: out_of_time.then_some(config.time_budget),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::config::Preset;
    use rand::RngCore;

    fn summary(steps_this_session: usize, interrupted: bool, out_of_time: Option<f64>, samples: Option<&str>) -> Summary {
        Summary {
            run_dir: PathBuf::from("runs/quick"),
            steps_done: 1400,
            steps_this_session,
            seconds_this_session: 200.0,
            final_loss: 0.031_25,
            samples: samples.map(PathBuf::from),
            interrupted,
            out_of_time,
        }
    }

    /// The last line says how the run ended, its rate, the loss only when
    /// this session took a step, the budget that stopped it, and where its
    /// files are.
    #[test]
    fn the_summary_line_says_how_the_run_ended() {
        assert_eq!(
            summary(1400, false, None, Some("runs/quick/samples.png")).line(),
            "done at step 1400 (1400 steps in 200.0 s, 7.00 steps/s), loss 0.0312, run folder runs/quick, samples runs/quick/samples.png"
        );
        assert_eq!(
            summary(1, true, None, None).line(),
            "interrupted at step 1400 (1 steps in 200.0 s, 0.01 steps/s), loss 0.0312, run folder runs/quick"
        );
        assert_eq!(
            summary(0, false, None, None).line(),
            "done at step 1400 (0 steps in 200.0 s, 0.00 steps/s), run folder runs/quick",
            "a resumed run that took no step has no loss"
        );
        assert_eq!(
            summary(700, false, Some(100.0), None).line(),
            "stopped early at step 1400 (700 steps in 200.0 s, 3.50 steps/s), loss 0.0312, by --time-budget 100 s before --steps was reached (--resume goes on), run folder runs/quick"
        );
    }

    fn first_draws(mut r: Rng) -> [u64; 4] {
        std::array::from_fn(|_| r.next_u64())
    }

    /// Each (seed, purpose, index) has its own stream: nine seeds, four
    /// purposes and four indices draw nine, four and four different
    /// sequences, and the same three numbers draw the same one again.
    #[test]
    fn every_seed_purpose_and_index_has_its_own_stream() {
        let distinct = |draws: Vec<[u64; 4]>| {
            let n = draws.len();
            let mut unique = draws;
            unique.sort_unstable();
            unique.dedup();
            unique.len() == n
        };
        assert!(distinct((0..9).map(|seed| first_draws(stream(seed, DATA_ORDER, 0))).collect()));
        assert!(distinct((0..4).map(|purpose| first_draws(stream(7, purpose, 0))).collect()));
        assert!(distinct((0..4).map(|index| first_draws(stream(7, STEP_NOISE, index))).collect()));
        assert_eq!(first_draws(stream(7, MEMORY_PROBE, 3)), first_draws(stream(7, MEMORY_PROBE, 3)));
    }

    /// The batches walk a new permutation each epoch (every example once
    /// per epoch, the two epochs in different orders), and a fresh order
    /// started at a later step (a resumed run) gives the same batches.
    #[test]
    fn batches_walk_each_epoch_once_and_resume_exactly() {
        let (len, batch) = (10, 4);
        let mut order = BatchOrder { seed: 3, len, epoch: None };
        let all: Vec<usize> = (0..5).flat_map(|step| order.indices(step, batch)).collect();
        for epoch in all.chunks_exact(len) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "{all:?}");
        }
        assert_ne!(all[..len], all[len..2 * len], "two epochs in the same order");
        let mut resumed = BatchOrder { seed: 3, len, epoch: None };
        assert_eq!(resumed.indices(3, batch), all[12..16]);
        assert_ne!(BatchOrder { seed: 4, len, epoch: None }.indices(0, len), all[..len], "another seed, the same order");
    }

    /// A toy data set is its points: as many examples, gathered in the
    /// order asked, each a 2-vector.
    #[test]
    fn toy_data_gathers_its_points_in_order() {
        let data = TrainData::Points(vec![[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]);
        assert_eq!(data.len(), 3);
        let batch = data.gather(&[2, 0, 2], &[2]).unwrap();
        assert_eq!(batch.dims(), &[3, 2]);
        assert_eq!(batch.to_vec(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ddpm-train-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("a scratch folder");
        dir
    }

    /// A session of the run in `dir` without a progress bar, new or resumed.
    fn quiet(dir: &Path, resume: bool) -> Session {
        Session { dir: dir.to_path_buf(), resume, quiet: true }
    }

    /// Resuming at step 2 keeps the header and the rows of steps 1 and 2,
    /// whatever the rows after; a missing file becomes the header alone.
    /// The file is replaced through a temporary that does not stay behind.
    #[test]
    fn resuming_keeps_the_metrics_up_to_the_checkpoint() {
        let dir = scratch("metrics");
        let path = dir.join("metrics.csv");
        let header = "step,loss,lr,grad_norm,examples_per_second";
        fs::write(&path, format!("{header}\n1,0.9,1e-3,2,100\n2,0.8,1e-3,2,100\n3,0.7,1e-3,2,100\n10,0.1,1e-3,2,100\n")).unwrap();
        truncate_metrics(&path, 2).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{header}\n1,0.9,1e-3,2,100\n2,0.8,1e-3,2,100\n"));
        assert!(!path.with_extension("tmp").exists());
        let missing = dir.join("none.csv");
        truncate_metrics(&missing, 5).unwrap();
        assert_eq!(fs::read_to_string(&missing).unwrap(), format!("{header}\n"));
        let _ = fs::remove_dir_all(&dir);
    }

    fn metrics_rows(dir: &Path) -> Vec<Vec<String>> {
        let text = fs::read_to_string(dir.join("metrics.csv")).unwrap();
        text.lines().skip(1).map(|line| line.split(',').map(str::to_string).collect()).collect()
    }

    /// A toy run interrupted after its first step, then resumed: it stops
    /// at step 1 with a checkpoint, goes on to step 4, and a third start
    /// takes no step. `metrics.csv` has one row a step with the rate of the
    /// schedule (`lr_at`) and a throughput no slower than the whole
    /// session's; the checkpoint's training time adds the sessions up.
    #[test]
    fn a_toy_run_interrupted_and_resumed_records_its_steps() {
        let dir = scratch("toy-run");
        let config = TrainConfig { steps: 4, checkpoint_every: 2, sample_every: 0, samples: 8, ..TrainConfig::preset(Preset::Toy) };
        let session = quiet(&dir, false);
        let elapsed = || -> f64 {
            let loaded = crate::run::model::Loaded::read(&dir.join("checkpoint.safetensors")).unwrap();
            loaded.checkpoint.metadata[ELAPSED_KEY].parse().unwrap()
        };
        let first = train(&config, &session, &AtomicBool::new(true)).unwrap();
        assert!(first.interrupted && first.steps_done == 1 && first.steps_this_session == 1, "{first:?}");
        let elapsed_first = elapsed();
        let resume = Session { resume: true, ..session.clone() };
        let second = train(&config, &resume, &AtomicBool::new(false)).unwrap();
        assert!(!second.interrupted && second.steps_done == 4 && second.steps_this_session == 3, "{second:?}");
        let elapsed_second = elapsed();
        assert!(
            elapsed_second > elapsed_first && elapsed_second <= elapsed_first + second.seconds_this_session,
            "training time {elapsed_first} then {elapsed_second} (the second session took {} s)",
            second.seconds_this_session
        );
        let rows = metrics_rows(&dir);
        assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["1", "2", "3", "4"]);
        let slowest = config.batch as f64 / (first.seconds_this_session + second.seconds_this_session);
        for (step, row) in (1..).zip(&rows) {
            assert_eq!(row[2], format!("{:.6e}", config.lr_at(step)), "the rate of step {step}");
            let throughput: f64 = row[4].parse().unwrap();
            assert!(throughput >= slowest, "step {step}: {throughput} examples/s, slower than the sessions' {slowest}");
        }
        let third = train(&config, &resume, &AtomicBool::new(false)).unwrap();
        assert_eq!((third.steps_done, third.steps_this_session), (4, 0), "{third:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// `--grad-clip` clips: with a tiny threshold the first update (Adam's
    /// `g / (|g| + eps)`, so a gradient of 1e-9 moves the weights a tenth as
    /// far) differs from the unclipped run's, and so does the loss of step 2.
    #[test]
    fn a_gradient_clip_changes_the_update() {
        let loss_of_step_2 = |grad_clip: f64| {
            let dir = scratch(&format!("clip-{grad_clip}"));
            let config = TrainConfig { steps: 2, sample_every: 0, samples: 2, grad_clip, ..TrainConfig::preset(Preset::Toy) };
            train(&config, &quiet(&dir, false), &AtomicBool::new(false)).unwrap();
            let loss = metrics_rows(&dir)[1][1].clone();
            let _ = fs::remove_dir_all(&dir);
            loss
        };
        assert_ne!(loss_of_step_2(1e-9), loss_of_step_2(0.0));
    }

    /// Each value's mean with the `window - 1` before it; the first ones
    /// average what there is.
    #[test]
    fn the_running_mean_averages_the_last_window() {
        assert_eq!(running_mean(&[1.0, 2.0, 6.0, 4.0, 8.0], 3), [1.0, 1.5, 3.0, 4.0, 6.0]);
        assert_eq!(running_mean(&[5.0, 7.0], 1), [5.0, 7.0]);
        assert_eq!(running_mean(&[2.0, 4.0], 50), [2.0, 3.0]);
        assert!(running_mean(&[], 50).is_empty());
    }

    /// A rate of 1e30 moves every weight by about 1e30 in the first Adam step
    /// (no clipping), so step 1's loss is finite and step 2's forward pass
    /// overflows: the error names step 2, counted from 1 as the metrics are.
    #[test]
    fn a_diverging_run_names_the_step_that_diverged() {
        let dir = scratch("diverge");
        let config = TrainConfig { steps: 5, lr: 1e30, grad_clip: 0.0, sample_every: 0, ..TrainConfig::preset(Preset::Toy) };
        let e = train(&config, &quiet(&dir, false), &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(&e, Error::Diverged { step: 2, what, last_checkpoint: None } if what == "the loss"), "{e:?}");
        assert_eq!(metrics_rows(&dir).len(), 1, "step 1's row, and no row for the step that diverged");
        // With a checkpoint every step, the error names step 1's.
        let _ = fs::remove_dir_all(&dir);
        let every_step = TrainConfig { checkpoint_every: 1, ..config };
        let e = train(&every_step, &quiet(&dir, false), &AtomicBool::new(false)).unwrap_err();
        let saved = dir.join("checkpoint.safetensors");
        assert!(matches!(&e, Error::Diverged { step: 2, last_checkpoint: Some(path), .. } if *path == saved), "{e:?}");
        assert_eq!(crate::run::model::Loaded::read(&saved).unwrap().step, 1);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A grid every `sample_every` steps, but none at the last step, whose grid
    /// is `samples.png`: for the toy data drawn by the ancestral sampler over
    /// every timestep (DDIM's 50 steps are for images).
    #[test]
    fn samples_come_every_sample_every_steps_and_at_the_end() {
        let dir = scratch("sample-every");
        let config = TrainConfig { steps: 4, sample_every: 2, samples: 4, ..TrainConfig::preset(Preset::Toy) };
        let summary = train(&config, &quiet(&dir, false), &AtomicBool::new(false)).unwrap();
        let mut grids: Vec<String> =
            fs::read_dir(dir.join("samples")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        grids.sort();
        assert_eq!(grids, ["step_0000002.png"]);
        assert_eq!(summary.samples, Some(dir.join("samples.png")));
        let ema = crate::run::model::Loaded::read(&dir.join("checkpoint.safetensors")).unwrap().model(false).unwrap();
        let ancestral = SamplerChoice::ANCESTRAL;
        let trajectory = draw_in_batches(&ema, &config, ancestral, config.samples, config.seed, &[], &Progress::hidden()).unwrap();
        save_samples(&dir.join("expected.png"), &config, &trajectory.sample).unwrap();
        assert!(
            fs::read(dir.join("samples.png")).unwrap() == fs::read(dir.join("expected.png")).unwrap(),
            "samples.png is not the ancestral sampler's"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// `--time-budget` stops a run short of its steps and the summary says so;
    /// a run that reaches its last step as the budget runs out is done, not
    /// stopped by the budget.
    #[test]
    fn the_time_budget_cuts_a_run_short_but_not_a_finished_one() {
        let run = |steps| {
            let dir = scratch(&format!("budget-{steps}"));
            let config = TrainConfig { steps, time_budget: 1e-9, sample_every: 0, samples: 2, ..TrainConfig::preset(Preset::Toy) };
            let summary = train(&config, &quiet(&dir, false), &AtomicBool::new(false)).unwrap();
            let _ = fs::remove_dir_all(&dir);
            (summary.steps_done, summary.out_of_time)
        };
        assert_eq!(run(3), (1, Some(1e-9)));
        assert_eq!(run(1), (1, None));
    }

    /// `--zero-init` reaches the fresh model: the quick preset's UNet with it
    /// predicts zeros (every branch's last layer and the output convolution
    /// at zero); without it, PyTorch's initialisation, it does not.
    #[test]
    fn zero_init_starts_a_new_run_at_the_zero_function() {
        let x = Tensor::<f32>::randn(&[2, 1, 28, 28], &mut tensor::rng(1));
        let first_output = |zero_init: bool| {
            let dir = scratch(&format!("zero-init-{zero_init}"));
            let config = TrainConfig { zero_init, ..TrainConfig::preset(Preset::Quick) };
            let run = open_run(&config, &quiet(&dir, false)).unwrap();
            let out = tensor::no_grad(|| run.model.forward(&x, &[10, 900])).unwrap().to_vec();
            drop(run);
            let _ = fs::remove_dir_all(&dir);
            out
        };
        assert!(first_output(true).iter().all(|&v| v == 0.0));
        assert!(first_output(false).iter().any(|&v| v != 0.0));
    }

    /// A run started from `--init` and resumed without the flag keeps the file
    /// it started from in its config, and ends where an uninterrupted run does.
    #[test]
    fn a_resumed_run_keeps_the_file_it_started_from() {
        let toy = |steps, init| TrainConfig { steps, sample_every: 0, samples: 2, init, ..TrainConfig::preset(Preset::Toy) };
        let (source, resumed, straight) = (scratch("init-source"), scratch("init-resumed"), scratch("init-straight"));
        train(&toy(2, None), &quiet(&source, false), &AtomicBool::new(false)).unwrap();
        let init = Some(source.join("checkpoint.safetensors"));
        train(&toy(3, init.clone()), &quiet(&resumed, false), &AtomicBool::new(true)).unwrap();
        train(&toy(3, None), &quiet(&resumed, true), &AtomicBool::new(false)).unwrap();
        let saved: TrainConfig = serde_json::from_str(&fs::read_to_string(resumed.join("config.json")).unwrap()).unwrap();
        assert_eq!(saved.init, init);
        train(&toy(3, init), &quiet(&straight, false), &AtomicBool::new(false)).unwrap();
        let losses = |dir: &Path| metrics_rows(dir).into_iter().map(|row| row[1].clone()).collect::<Vec<_>>();
        assert_eq!(losses(&resumed), losses(&straight));
        for dir in [source, resumed, straight] {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

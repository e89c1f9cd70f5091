//! Timing one UNet training step (forward, backward, AdamW) and one forward pass
//! without gradients, as `ddpm bench` and `benches/train_step.rs` report them.
//!
//! Effective GFLOP/s counts the model's multiply-adds (2 flops each): a training
//! step is taken as 3 forwards (the backward computes two products per forward
//! product: the gradient of the input and of the weights).

use crate::error::Result;
use crate::run::algorithm1::train_step;
use crate::run::model::Model;
use ddpm::{BetaSchedule, NoiseSchedule, TrainingOptions};
use nn::{Adam, Module, UNet, UNetConfig};
use std::time::Instant;
use tensor::{no_grad, rng, Rng, Tensor};

/// The measured figures of a UNet at one batch size.
#[derive(Clone, Debug)]
pub struct StepTiming {
    pub batch: usize,
    pub params: usize,
    /// Median milliseconds of a training step (forward, backward, AdamW).
    pub train_step_ms: f64,
    /// Median milliseconds of a forward pass under `no_grad`.
    pub forward_ms: f64,
    /// Flops of one forward pass.
    pub forward_flops: f64,
    /// Peak resident memory during the training steps, if the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

impl StepTiming {
    /// Effective GFLOP/s of a training step (3 forwards' worth of flops).
    #[must_use]
    pub fn train_gflops(&self) -> f64 {
        3.0 * self.forward_flops / (self.train_step_ms * 1e6)
    }

    /// Effective GFLOP/s of a forward pass.
    #[must_use]
    pub fn forward_gflops(&self) -> f64 {
        self.forward_flops / (self.forward_ms * 1e6)
    }
}

/// A model, an optimizer and a fixed batch, ready to step.
#[derive(Debug)]
pub struct StepBench {
    model: Model,
    optimizer: Adam<f32>,
    schedule: NoiseSchedule,
    x_start: Tensor<f32>,
    /// The timesteps of the forward pass without gradients.
    t: Vec<usize>,
    /// The stream of each training step's t and eps.
    rng: Rng,
    /// Flops of one forward pass of the batch.
    forward_flops: f64,
}

impl StepBench {
    /// The UNet of `config` with a random batch of `batch` images.
    ///
    /// # Errors
    /// An invalid config.
    pub fn new(config: &UNetConfig, batch: usize) -> Result<Self> {
        let mut r = rng(0);
        let unet = UNet::new(config, &mut r)?;
        let forward_flops = unet.flops_forward(batch);
        let dims = [batch, config.image_channels, config.image_size, config.image_size];
        Ok(StepBench {
            model: Model::Unet(unet),
            forward_flops,
            optimizer: Adam::adamw(1e-4, 0.0),
            schedule: NoiseSchedule::new(BetaSchedule::Linear, 1000)?,
            x_start: Tensor::rand_uniform(&dims, -1.0, 1.0, &mut r),
            t: ddpm::sample_timesteps(1000, batch, &mut r),
            rng: r,
        })
    }

    /// One L_simple training step: Algorithm 1 on the fixed batch, without
    /// clipping. Returns the loss.
    ///
    /// # Errors
    /// Shape errors (none for a valid config).
    pub fn train_step(&mut self) -> Result<f64> {
        let outcome = train_step(
            &self.schedule,
            &mut self.model,
            &mut self.optimizer,
            &self.x_start,
            TrainingOptions::default(),
            f64::INFINITY,
            &mut self.rng,
        )?;
        Ok(outcome.loss)
    }

    /// One forward pass without a graph.
    ///
    /// # Errors
    /// Shape errors (none for a valid config).
    pub fn forward(&self) -> Result<Tensor<f32>> {
        Ok(no_grad(|| self.model.forward(&self.x_start, &self.t))?)
    }

    /// The model's parameter count.
    #[must_use]
    pub fn params(&self) -> usize {
        self.model.num_params()
    }

    /// Flops of one forward pass.
    #[must_use]
    pub fn forward_flops(&self) -> f64 {
        self.forward_flops
    }
}

/// The peak resident set size since the last reset (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs`, value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `reps` training steps and three times as many forwards (a forward
/// takes about a third of a step's time, and a median of three is too few
/// to see a change of a few percent from one run to the next), after one
/// warm-up of each.
///
/// # Errors
/// An invalid config.
pub fn measure(config: &UNetConfig, batch: usize, reps: usize) -> Result<StepTiming> {
    // The buffers pooled by an earlier model would count in this one's memory.
    tensor::pool::release();
    let mut bench = StepBench::new(config, batch)?;
    bench.train_step()?;
    bench.forward()?;
    // As `ddpm train` does: the other workers busy-wait between ops.
    let _awake = tensor::KeepAwake::new();
    reset_peak_rss();
    let mut steps = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        bench.train_step()?;
        steps.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let peak_rss_bytes = peak_rss();
    let mut forwards = Vec::with_capacity(3 * reps);
    for _ in 0..3 * reps {
        let started = Instant::now();
        std::hint::black_box(bench.forward()?);
        forwards.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(StepTiming {
        batch,
        params: bench.params(),
        train_step_ms: median(steps),
        forward_ms: median(forwards),
        forward_flops: bench.forward_flops(),
        peak_rss_bytes,
    })
}

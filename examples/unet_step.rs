//! Times training steps of the course UNet on a batch of MNIST-sized noise, each
//! one step of Algorithm 1 ([`train_step`]: t, eps, x_t, L_simple, backward,
//! AdamW). Run with `cargo run --release --example unet_step [batch] [steps]
//! [base channels | quick]` (64, 3, 32; `quick` is the quick preset's UNet: 16,
//! 16 and 32 channels at 28 x 28, 14 x 14 and 7 x 7 since session 38, 16, 32 and 32
//! before, one residual block a level); more steps make a steadier profile (`perf
//! record`).

use course::error::Error;
use course::run::algorithm1::train_step;
use course::run::config::TrainConfig;
use course::run::model::Model;
use ddpm::{BetaSchedule, NoiseSchedule, TrainingOptions};
use nn::{Adam, Module, UNet, UNetConfig};
use std::time::Instant;
use tensor::{rng, Tensor};

fn main() -> Result<(), Error> {
    // As `ddpm` does: the main thread is one of rayon's workers, so a parallel
    // op starts on it instead of waking another thread and sleeping.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    // And, as `ddpm train` does, the other workers busy-wait between ops.
    let _awake = tensor::KeepAwake::new();
    let batch: usize = std::env::args().nth(1).and_then(|b| b.parse().ok()).unwrap_or(64);
    let steps: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut r = rng(0);
    let width = std::env::args().nth(3).unwrap_or_default();
    let config = match width.as_str() {
        "quick" => TrainConfig::quick_unet(),
        _ => UNetConfig { base_channels: width.parse().unwrap_or(32), ..UNetConfig::default() },
    };
    let unet = UNet::<f32>::new(&config, &mut r)?;
    let flops = unet.flops_forward(batch);
    let mut model = Model::Unet(unet);
    let mut adamw = Adam::adamw(2e-4, 0.0);
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000)?;
    let x_start = Tensor::rand_uniform(&[batch, 1, 28, 28], -1.0, 1.0, &mut r);
    println!("UNet: {} parameters, batch {batch}", model.num_params());
    // The first step also allocates every buffer; the later ones are the steady state.
    for step in 1..=steps {
        let start = Instant::now();
        let outcome = train_step(&schedule, &mut model, &mut adamw, &x_start, TrainingOptions::default(), f64::INFINITY, &mut r)?;
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "step {step}: loss {:.4}  {seconds:8.3} s  {:6.2} GFLOP/s (3 x {:.1} GFLOP)",
            outcome.loss,
            3.0 * flops / seconds / 1e9,
            flops / 1e9
        );
    }
    Ok(())
}

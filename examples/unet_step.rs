//! Times one training step of the course UNet on a batch of MNIST-sized noise:
//! forward, backward, AdamW update. Run with `cargo run --release -p nn --example
//! unet_step [batch]`.

use nn::{Adam, Module, Optimizer, UNet, UNetConfig};
use std::time::Instant;
use tensor::{rng, Tensor};

fn main() -> tensor::Result<()> {
    let batch: usize = std::env::args().nth(1).and_then(|b| b.parse().ok()).unwrap_or(64);
    let mut r = rng(0);
    let mut unet = UNet::<f32>::new(&UNetConfig::default(), &mut r)?;
    let mut adamw = Adam::adamw(2e-4, 0.0);
    let x_t = Tensor::randn(&[batch, 1, 28, 28], &mut r);
    let noise = Tensor::randn(&[batch, 1, 28, 28], &mut r);
    let t: Vec<usize> = (0..batch).map(|i| i * 997 % 1000).collect();
    println!("UNet: {} parameters, batch {batch}", unet.num_params());

    let start = Instant::now();
    let loss = unet.forward(&x_t, &t)?.mse_loss(&noise)?;
    let forward = start.elapsed().as_secs_f64();
    let grads = loss.backward()?;
    drop(loss);
    let backward = start.elapsed().as_secs_f64() - forward;
    adamw.step(&mut unet, &grads)?;
    let total = start.elapsed().as_secs_f64();

    let flops = unet.flops_forward(batch);
    println!("forward  {forward:8.3} s  {:6.2} GFLOP/s", flops / forward / 1e9);
    println!("backward {backward:8.3} s  {:6.2} GFLOP/s", 2.0 * flops / backward / 1e9);
    println!("adamw    {:8.3} s", total - forward - backward);
    println!("step     {total:8.3} s  {:6.2} GFLOP/s (3 x {:.1} GFLOP)", 3.0 * flops / total / 1e9, flops / 1e9);
    Ok(())
}

//! Times forward passes of the course UNet without gradients (what sampling
//! and `ddpm eval` run 50 times a batch), on a batch of MNIST-sized noise. Run
//! with `cargo run --release --example unet_forward [batch] [passes] [base
//! channels | quick]` (64, 10, 32); more passes make a steadier profile
//! (`perf record`).

use course::run::config::TrainConfig;
use nn::{Module, UNet, UNetConfig};
use std::time::Instant;
use tensor::{no_grad, rng, Tensor};

fn main() -> Result<(), nn::Error> {
    // As `ddpm` does: the main thread is one of rayon's workers, and the
    // others busy-wait between ops (as they do while sampling).
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    let _awake = tensor::KeepAwake::new();
    let arg = |i: usize| std::env::args().nth(i).unwrap_or_default();
    let batch: usize = arg(1).parse().unwrap_or(64);
    let passes: usize = arg(2).parse().unwrap_or(10);
    let config = match arg(3).as_str() {
        "quick" => TrainConfig::quick_unet(),
        width => UNetConfig { base_channels: width.parse().unwrap_or(32), ..UNetConfig::default() },
    };
    let mut r = rng(0);
    let unet = UNet::<f32>::new(&config, &mut r)?;
    let flops = unet.flops_forward(batch);
    let x_t = Tensor::rand_uniform(&[batch, 1, 28, 28], -1.0, 1.0, &mut r);
    let t: Vec<usize> = (0..batch).map(|i| i * 997 % 1000).collect();
    println!("UNet: {} parameters, batch {batch}", unet.num_params());
    for pass in 1..=passes {
        let start = Instant::now();
        let eps = no_grad(|| unet.forward(&x_t, &t))?;
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(eps.dims(), x_t.dims());
        println!("pass {pass}: {:8.1} ms  {:6.2} GFLOP/s ({:.1} GFLOP)", seconds * 1e3, flops / seconds / 1e9, flops / 1e9);
    }
    Ok(())
}

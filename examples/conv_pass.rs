//! Runs one pass of a 3x3 convolution of `ddpm bench` (batch 64, stride 1,
//! padding 1) over and over, for a profile of that pass alone (`perf record`):
//! `cargo run --release --example conv_pass C SIDE K [passes]
//! [fwd|dx|dw|all] [KERNEL] [STRIDE]`, e.g. `64 7 64 2000 dw` (`KERNEL` 1 for
//! a 1x1 convolution; 3, padding 1, by default; `STRIDE` 2 for a UNet's
//! downsampling convolution, `16 28 16 1000 all 3 2`). Prints the mean,
//! median and fastest time of a pass.

use course::bench::cases::ConvCase;
use std::time::Instant;
use tensor::kernels::conv::Conv2dGeometry;

fn main() {
    // As `ddpm bench` does: the main thread is one of rayon's workers, and the
    // split of the products is measured at start-up.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    tensor::kernels::gemm::calibrate_split();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (c, side, k, passes) = (number(0, 64), number(1, 7), number(2, 64), number(3, 1000).max(1));
    let pass: fn(&mut ConvCase) = match args.get(4).map_or("all", String::as_str) {
        "fwd" => ConvCase::forward,
        "dx" => ConvCase::backward_input,
        "dw" => ConvCase::backward_weight,
        _ => ConvCase::forward_backward,
    };
    // An optional sixth argument: the kernel's side (1: a 1x1 convolution,
    // no padding).
    // And a seventh: the stride.
    let (kernel, stride) = (number(5, 3), number(6, 1));
    let geometry = Conv2dGeometry { kh: kernel, kw: kernel, padding: kernel / 2, stride, ..ConvCase::conv3x3_geometry(c, side, k) };
    let mut case = ConvCase::new(geometry);
    let mut ms: Vec<f64> = (0..passes)
        .map(|_| {
            let start = Instant::now();
            pass(&mut case);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mean = ms.iter().sum::<f64>() / passes as f64;
    ms.sort_by(f64::total_cmp);
    println!("{}: mean {mean:.3} ms, median {:.3}, fastest {:.3}", case.label(), ms[passes / 2], ms[0]);
}

//! Times square f32 GEMMs on the calling thread alone and on rayon's pool,
//! for a kernel change measured without the rest of `ddpm bench`: `cargo run
//! --release --example gemm_pass [n ...]` (256 512 1024 2048). Prints the
//! kernel, its cache blocks, the FMA peak of the pool and the register tile
//! alone (as `ddpm bench` measures them) for scale, then the fastest of seven
//! runs of each size, in GFLOP/s.

use course::bench::cases::random_vec;
use std::time::Instant;
use tensor::kernels::gemm::{gemm_with, Kernel, MatMut, MatRef, Threading};

fn main() {
    // As `ddpm` does: the main thread is one of rayon's workers, and the
    // others busy-wait between products.
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    let _awake = tensor::KeepAwake::new();
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![256, 512, 1024, 2048] } else { sizes };
    let kernel = Kernel::best();
    let peak = tensor::kernels::peak::peak_gflops(kernel, 0.4);
    let tile = tensor::kernels::gemm::microkernel_gflops(kernel, 0.4);
    println!("kernel {}, {:?}, FMA peak of the pool {peak:.1} GFLOP/s", kernel.name(), tensor::kernels::gemm::blocking_f32(kernel));
    println!("the register tile alone, its panels in cache: {tile:.1} GFLOP/s on the pool ({:.0}% of the peak)", 100.0 * tile / peak);
    for n in sizes {
        // The inputs `ddpm bench` multiplies (the same seeds).
        let (a, b) = (random_vec(n * n, 1), random_vec(n * n, 2));
        let mut c = vec![0.0f32; n * n];
        let flops = 2.0 * (n * n * n) as f64;
        // At least 2 GFLOP per timed run, so small sizes are not all timer.
        let reps = (2e9 / flops).ceil() as usize;
        let mut line = format!("n {n:5}");
        for (name, threading) in [("1 thread", Threading::Single), ("pool", Threading::Rayon)] {
            let fastest = (0..7)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..reps {
                        let a = MatRef::new(&a, n, n, n, 1).expect("A is n x n");
                        let b = MatRef::new(&b, n, n, n, 1).expect("B is n x n");
                        let c = MatMut::new(&mut c, n, n, n, 1).expect("C is n x n");
                        gemm_with(kernel, threading, 1.0, a, b, 0.0, c);
                    }
                    start.elapsed().as_secs_f64() / reps as f64
                })
                .fold(f64::INFINITY, f64::min);
            line += &format!("   {name}: {:6.1} GFLOP/s", flops / fastest / 1e9);
        }
        println!("{line}");
    }
}

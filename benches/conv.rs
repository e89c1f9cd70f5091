//! 3x3 convolution throughput (stride 1, padding 1, f32) at the UNet's
//! shapes with batch 64: the forward pass, and forward + grad input + grad
//! weight (3x the forward flops). Throughput is set to the flop count, so
//! criterion's "elem/s" reads as flop/s.
//!
//! Run: `cargo bench --bench conv`.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::kernels::conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dGeometry};

fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn conv3x3(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv3x3");
    group.sample_size(20);
    for (channels, hw, k) in [(32, 28, 32), (64, 14, 64), (64, 7, 64)] {
        let g = Conv2dGeometry { n: 64, c: channels, h: hw, w: hw, k, kh: 3, kw: 3, stride: 1, padding: 1 };
        let label = format!("N{}xC{}x{}x{}xK{}", g.n, g.c, g.h, g.w, g.k);
        // x is (N, C, H, W), weight (K, C, 3, 3), out and grad_out (N, K, OH, OW).
        let x = random_vec(g.n * g.c * g.h * g.w, 1);
        let weight = random_vec(g.k * g.c * g.kh * g.kw, 2);
        let bias = random_vec(g.k, 3);
        let out_len = g.n * g.k * g.out_h() * g.out_w();
        let grad_out = random_vec(out_len, 4);
        let mut out = vec![0.0f32; out_len];
        let mut grad_x = vec![0.0f32; x.len()];
        let mut grad_w = vec![0.0f32; weight.len()];
        let mut grad_b = vec![0.0f32; g.k];

        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function(BenchmarkId::new("fwd", &label), |bench| {
            bench.iter(|| conv2d_forward(&g, &x, &weight, Some(&bias), &mut out));
        });
        group.throughput(Throughput::Elements(3 * g.flops() as u64));
        group.bench_function(BenchmarkId::new("fwd_bwd", &label), |bench| {
            bench.iter(|| {
                conv2d_forward(&g, &x, &weight, Some(&bias), &mut out);
                conv2d_backward_input(&g, &grad_out, &weight, &mut grad_x);
                conv2d_backward_weight(&g, &x, &grad_out, &mut grad_w, Some(&mut grad_b));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, conv3x3);
/// `criterion_main!`, after making this thread a worker of rayon's pool
/// (see "Threads" in `tensor::kernels::gemm`).
fn main() {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().expect("rayon pool built once");
    benches();
    Criterion::default().configure_from_args().final_summary();
}

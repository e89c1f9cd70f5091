//! 3x3 convolution throughput (stride 1, padding 1, f32) at the UNet's
//! shapes with batch 64: the forward pass, and forward + grad input + grad
//! weight (3x the forward flops). Throughput is set to the flop count, so
//! criterion's "elem/s" reads as flop/s. The cases are `ddpm bench`'s
//! (`course::bench::cases`).
//!
//! Run: `cargo bench --bench conv`.

use course::bench::cases::{ConvCase, UNET_CONV3X3};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

fn conv3x3(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv3x3");
    group.sample_size(20);
    for (channels, hw, k) in UNET_CONV3X3 {
        let mut case = ConvCase::conv3x3(channels, hw, k);
        let (flops, label) = (case.geometry.flops(), case.label());
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("fwd", &label), |bench| bench.iter(|| case.forward()));
        group.throughput(Throughput::Elements(3 * flops as u64));
        group.bench_function(BenchmarkId::new("fwd_bwd", &label), |bench| bench.iter(|| case.forward_backward()));
    }
    group.finish();
}

criterion_group!(benches, conv3x3);
/// `criterion_main!`, after making this thread a worker of rayon's pool
/// (see "Threads" in `tensor::kernels::gemm`).
fn main() {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().expect("rayon pool built once");
    tensor::kernels::gemm::calibrate_split();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

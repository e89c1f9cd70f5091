//! GEMM throughput, ours against `matrixmultiply::sgemm` (threading feature),
//! both on all cores, in the same criterion group so their rates sit side by
//! side. The throughput is set to the flop count `2 m n k`, so criterion's
//! "elem/s" reads as flop/s.
//!
//! Run: `cargo bench --bench gemm` (or `-- gemm_unet` for the UNet shapes).

use course::bench::cases::random_vec;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tensor::kernels::gemm::{gemm, matrixmultiply_sgemm, MatMut, MatRef};

/// Benchmarks C (m, n) = A (m, k) B (k, n), all row-major, ours and matrixmultiply.
fn bench_pair(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, label: &str, m: usize, k: usize, n: usize) {
    let a = random_vec(m * k, 1);
    let b = random_vec(k * n, 2);
    let mut c = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
    group.bench_function(BenchmarkId::new("ours", label), |bench| {
        let a = MatRef::new(&a, m, k, k, 1).expect("A fits");
        let b = MatRef::new(&b, k, n, n, 1).expect("B fits");
        bench.iter(|| gemm(1.0, a, b, 0.0, MatMut::new(&mut c, m, n, n, 1).expect("C fits")));
    });
    group.bench_function(BenchmarkId::new("matrixmultiply", label), |bench| {
        let a = MatRef::new(&a, m, k, k, 1).expect("A fits");
        let b = MatRef::new(&b, k, n, n, 1).expect("B fits");
        bench.iter(|| matrixmultiply_sgemm(1.0, a, b, 0.0, MatMut::new(&mut c, m, n, n, 1).expect("C fits")));
    });
}

fn square(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_square");
    for n in [64, 128, 256, 512, 1024, 2048] {
        if n == 2048 {
            group.sample_size(10);
        }
        bench_pair(&mut group, &n.to_string(), n, n, n);
    }
    group.finish();
}

/// The UNet's GEMMs at batch 64: im2col of a 3x3 conv per image
/// (m = K, k = C * 9, n = OH * OW) and attention at 7x7, 64 channels.
fn unet_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_unet");
    let shapes =
        [("conv28_c32_k32", 32, 288, 784), ("conv14_c64_k64", 64, 576, 196), ("conv7_c64_k64", 64, 576, 49), ("attn7_c64", 49, 64, 49)];
    for (label, m, k, n) in shapes {
        bench_pair(&mut group, label, m, k, n);
    }
    group.finish();
}

criterion_group!(benches, square, unet_shapes);
/// `criterion_main!`, after making this thread a worker of rayon's pool
/// (see "Threads" in `tensor::kernels::gemm`).
fn main() {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().expect("rayon pool built once");
    tensor::kernels::gemm::calibrate_split();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

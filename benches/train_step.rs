//! Criterion bench of one training step (forward, backward, AdamW) and one forward
//! pass of the course UNet on a batch of 64, and of the quick preset's UNet.
//! Throughput is counted in flops (3 forwards per training step).

use course::bench::step::StepBench;
use course::run::config::TrainConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nn::UNetConfig;

fn train_step(c: &mut Criterion) {
    let configs = [("course_unet", UNetConfig::default()), ("quick_unet", TrainConfig::quick_unet())];
    for (name, config) in configs {
        let mut bench = StepBench::new(&config, 64).expect("a valid config");
        let flops = bench.forward_flops();
        let mut group = c.benchmark_group(format!("{name}_B64"));
        group.sample_size(10);
        group.throughput(Throughput::Elements((3.0 * flops) as u64));
        group.bench_function("train_step", |b| b.iter(|| bench.train_step().expect("a step")));
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function("forward_no_grad", |b| b.iter(|| bench.forward().expect("a forward")));
        group.finish();
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);

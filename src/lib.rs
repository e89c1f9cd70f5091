//! The `ddpm` program and its data loaders.

pub mod bench_report;

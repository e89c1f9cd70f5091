//! The `ddpm` program: its command line, data loaders, pictures and plots.
//!
//! The binary (`src/main.rs`) only parses arguments and reports errors; the work
//! lives here so the integration tests can call it.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod render;
pub mod run;

/// The chapters of `notebooks-md/`, compiled and run as doctests so the course text
/// cannot drift from the code.
#[cfg(doctest)]
pub mod notebooks {
    #[doc = include_str!("../notebooks-md/00-why-diffusion.md")]
    pub struct Chapter00WhyDiffusion;
    #[doc = include_str!("../notebooks-md/01-tensors-and-autograd.md")]
    pub struct Chapter01TensorsAndAutograd;
    #[doc = include_str!("../notebooks-md/02-fast-kernels.md")]
    pub struct Chapter02FastKernels;
    #[doc = include_str!("../notebooks-md/03-forward-process.md")]
    pub struct Chapter03ForwardProcess;
    #[doc = include_str!("../notebooks-md/04-posterior.md")]
    pub struct Chapter04Posterior;
    #[doc = include_str!("../notebooks-md/05-the-bound.md")]
    pub struct Chapter05TheBound;
    #[doc = include_str!("../notebooks-md/06-noise-prediction.md")]
    pub struct Chapter06NoisePrediction;
    #[doc = include_str!("../notebooks-md/07-decoder-and-bits-per-dim.md")]
    pub struct Chapter07DecoderAndBitsPerDim;
    #[doc = include_str!("../notebooks-md/08-training.md")]
    pub struct Chapter08Training;
    #[doc = include_str!("../notebooks-md/09-sampling.md")]
    pub struct Chapter09Sampling;
    #[doc = include_str!("../notebooks-md/10-experiments.md")]
    pub struct Chapter10Experiments;
}

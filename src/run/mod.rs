//! Runs: the resolved configuration of a training run and its presets, the model
//! and its checkpoints, the training run itself, sampling, the ablation, and the
//! commands that read a checkpoint.
//!
//! - [`algorithm1`]: the training step of Ho et al., the paper's lines in code;
//! - [`config`]: a preset overridden by flags, saved as `config.json`;
//! - [`model`]: the UNet or the MLP behind one type, read back from a checkpoint;
//! - [`train`]: Algorithm 1 in a loop, with checkpoints, metrics and samples;
//! - [`sampling`]: drawing samples and saving them as pictures;
//! - [`ablation`]: Ho et al.'s Table 2 at MNIST scale;
//! - [`commands`]: `sample`, `forward`, `info`, `export`;
//! - [`run_lock`]: one training process per run folder, and stale temp files cleared;
//! - [`memory`]: the batch that fits, measured before training;
//! - [`progress`]: a bar on a terminal, log lines with an ETA elsewhere;
//! - [`watched`]: the model as commands run it, counted and checked finite;
//! - [`validate`]: flags and output paths checked before any work.

pub mod ablation;
pub mod algorithm1;
pub mod commands;
pub mod config;
pub mod memory;
pub mod model;
pub mod progress;
pub mod run_lock;
pub mod sampling;
pub mod train;
pub mod validate;
pub mod watched;

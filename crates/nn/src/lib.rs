//! The neural-network layer of the course: modules with named parameters, the
//! layers and blocks of the DDPM UNet, the two noise predictors (an MLP and the
//! UNet), the optimizers and the EMA of the weights.
//!
//! Shape legend: `B` (or `N`) batch, `C` channels (`Cin`, `Cout`), `H`, `W`
//! height and width, `L = H W` attention positions, `E` time embedding size, `D`
//! flattened data size.
//!
//! The tree follows the architecture, smallest pieces first:
//! - [`module`]: the [`Module`] trait (named parameters, stable order, train/eval);
//! - [`init`]: how parameters start;
//! - `layers/`: Linear, Conv2d, GroupNorm, SiLU, Dropout, the sinusoidal timestep embedding;
//! - `blocks/`: the time-embedding MLP, the residual block, attention, down/upsampling;
//! - `models/`: the MLP denoiser and the UNet with its configuration, and the
//!   MNIST classifier that judges samples;
//! - `optim/`: SGD, Adam/AdamW, gradient clipping, warmup; [`ema`]: the weight average;
//! - [`safetensors`]: the checkpoint file format; [`error`]: the crate's error type.
//!
//! ```
//! use nn::{Adam, Module, Optimizer, UNet, UNetConfig};
//! use tensor::{rng, Tensor};
//! let mut rng = rng(0);
//! let mut unet = UNet::<f32>::new(&UNetConfig::tiny(), &mut rng)?;
//! let mut opt = Adam::adamw(1e-3, 0.0);
//! let (x_t, noise) = (Tensor::randn(&[2, 1, 8, 8], &mut rng), Tensor::randn(&[2, 1, 8, 8], &mut rng));
//! let loss = unet.forward(&x_t, &[3, 500])?.mse_loss(&noise)?; // L_simple
//! let grads = loss.backward()?;
//! opt.step(&mut unet, &grads)?;
//! # Ok::<(), tensor::Error>(())
//! ```

pub mod blocks;
pub mod checkpoint;
pub mod ema;
pub mod error;
pub mod init;
pub mod layers;
pub mod models;
pub mod module;
pub mod optim;
pub mod safetensors;

pub use blocks::attention::AttentionBlock;
pub use blocks::res_block::ResBlock;
pub use blocks::resample::{Downsample, Upsample};
pub use blocks::time_embedding::TimeEmbedding;
pub use checkpoint::Checkpoint;
pub use ema::{Ema, DEFAULT_EMA_DECAY};
pub use error::{Error, Result};
pub use layers::conv2d::Conv2d;
pub use layers::dropout::Dropout;
pub use layers::group_norm::GroupNorm;
pub use layers::linear::Linear;
pub use layers::silu::Silu;
pub use layers::timestep_embedding::timestep_embedding;
pub use models::classifier::Classifier;
pub use models::mlp::{MlpConfig, MlpDenoiser};
pub use models::unet::UNet;
pub use models::unet_config::UNetConfig;
pub use module::{Mode, Module};
pub use optim::adam::{adam_update, Adam, AdamHyper, WeightDecay};
pub use optim::clip::clip_grad_norm;
pub use optim::sgd::Sgd;
pub use optim::warmup::{LinearWarmup, WarmupCosine};
pub use optim::Optimizer;

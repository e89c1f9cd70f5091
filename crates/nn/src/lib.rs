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
//! # Parameter names: one scheme
//!
//! Every parameter has one name, the path to it in the module tree joined by dots
//! (see [`module`]): a field is its name (`time_embed`, `input_conv`, `conv1`,
//! `qkv`), the `i`-th element of a list is `i` (`down.0`, `res.1`, `attn.0`,
//! `hidden.2`), and a leaf tensor is `weight` or `bias`. The same name is used by
//! the optimizer state, the EMA, and checkpoints, where a part prefix is added
//! (`model.`, `ema.`, `optim.exp_avg.`; see [`checkpoint`]). The names are those
//! PyTorch gives the same tree of `nn.Module`s (attributes, `nn.ModuleList`,
//! `nn.ModuleDict`), and the layouts are PyTorch's (conv `[K, C, kh, kw]`, linear
//! `[out, in]`, GroupNorm `[C]`), so a PyTorch module built as the same tree loads a
//! checkpoint's part with `load_state_dict(strict=True)` and nothing renamed;
//! `benches/torch/twin.py` is that twin, held equal by `tests/torch_twin.rs`.
//!
//! | model | names |
//! |---|---|
//! | UNet | `time_embed.linear{1,2}.*`, `input_conv.*`, `down.<level>.res.<j>.{norm1,conv1,time_proj,norm2,conv2,skip}.*`, `down.<level>.attn.<j>.{norm,qkv,proj}.*`, `down.<level>.downsample.conv.*`, `mid.{res1,attn,res2}.*`, `up.<level>.res.<j>.*`, `up.<level>.attn.<j>.*`, `up.<level>.upsample.conv.*`, `out.{norm,conv}.*` |
//! | MLP denoiser | `input.*`, `hidden.<i>.*`, `output.*` |
//! | classifier | `conv.<i>.*`, `features.*`, `output.*` |
//!
//! Two conventions a twin must share: the UNet's up path is keyed by the level it
//! mirrors (`up.2` is met first, at the lowest resolution; a `ModuleDict` with
//! keys `"2"`, `"1"`, `"0"`), and `attn.<j>` exists only at attention resolutions,
//! where it follows `res.<j>`. The attention's `qkv` is one 1x1 convolution whose
//! `3C` outputs are q, k, v in that order; the sinusoidal time features are
//! `[sin | cos]` (see [`timestep_embedding`]).
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
//! # Ok::<(), nn::Error>(())
//! ```
#![forbid(unsafe_code)]

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

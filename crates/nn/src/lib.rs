//! The neural-network layer of the course: modules with named parameters, the
//! layers and blocks of the DDPM UNet, the two noise predictors (an MLP and the
//! UNet).
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
//! - `models/`: the MLP denoiser and the UNet with its configuration.

pub mod blocks;
pub mod init;
pub mod layers;
pub mod models;
pub mod module;

pub use blocks::attention::AttentionBlock;
pub use blocks::res_block::ResBlock;
pub use blocks::resample::{Downsample, Upsample};
pub use blocks::time_embedding::TimeEmbedding;
pub use layers::conv2d::Conv2d;
pub use layers::dropout::Dropout;
pub use layers::group_norm::GroupNorm;
pub use layers::linear::Linear;
pub use layers::silu::Silu;
pub use layers::timestep_embedding::timestep_embedding;
pub use models::mlp::{MlpConfig, MlpDenoiser};
pub use models::unet::UNet;
pub use models::unet_config::UNetConfig;
pub use module::{Mode, Module};

//! The course UNet: a noise predictor `eps_theta(x_t, t)` for 28x28 MNIST digits,
//! in the architecture of DDPM (Ho et al. 2020), scaled down.
//!
//! Shape legend: `B` batch, `C` channels, `S` image side, `E` time embedding size.
//! With the defaults (see [`UNetConfig`]), `x_t` `[B, 1, 28, 28]`:
//!
//! ```text
//! temb = Linear(SiLU(Linear(sinusoidal(t))))             [B, 128]
//! h    = conv3x3(x_t)                                    [B, 32, 28, 28]   skip 0
//! down level 0 (28): 2 x ResBlock -> 32                  skips 1, 2
//!         downsample (stride-2 conv)                     [B, 32, 14, 14]   skip 3
//! down level 1 (14): 2 x ResBlock -> 64                  skips 4, 5
//!         downsample                                     [B, 64, 7, 7]     skip 6
//! down level 2 (7):  2 x (ResBlock -> 64, attention)     skips 7, 8
//! middle (7):        ResBlock, attention, ResBlock
//! up level 2 (7):    3 x (ResBlock(cat(h, skip)) -> 64, attention)   skips 8, 7, 6
//!         upsample (nearest x2, conv3x3)                 [B, 64, 14, 14]
//! up level 1 (14):   3 x ResBlock(cat(h, skip)) -> 64                skips 5, 4, 3
//!         upsample                                       [B, 64, 28, 28]
//! up level 0 (28):   3 x ResBlock(cat(h, skip)) -> 32                skips 2, 1, 0
//! out  = conv3x3(SiLU(GroupNorm(h)))                     [B, 1, 28, 28]
//! ```
//!
//! Parameter names follow this tree: `time_embed.linear1.weight`,
//! `input_conv.weight`, `down.0.res.1.conv1.weight`, `down.2.attn.0.qkv.bias`,
//! `down.0.downsample.conv.weight`, `mid.res1...`, `up.2.res.0.skip.weight`,
//! `up.1.upsample.conv.weight`, `out.norm.weight`, `out.conv.bias`.

use crate::blocks::attention::AttentionBlock;
use crate::blocks::res_block::ResBlock;
use crate::blocks::resample::{Downsample, Upsample};
use crate::blocks::time_embedding::TimeEmbedding;
use crate::error::{Error, Result};
use crate::layers::conv2d::Conv2d;
use crate::layers::group_norm::GroupNorm;
use crate::layers::timestep_embedding::timesteps_to_f64;
use crate::models::unet_config::UNetConfig;
use crate::module::{join, Mode, Module};
use tensor::{Float, Rng, Tensor};

/// One level of the contracting path: residual blocks (each maybe followed by
/// attention), then a downsample except at the last level.
#[derive(Clone, Debug)]
pub struct DownLevel<T: Float> {
    pub res: Vec<ResBlock<T>>,
    /// `attn[i]` follows `res[i]` at the attention resolutions.
    pub attn: Vec<Option<AttentionBlock<T>>>,
    pub downsample: Option<Downsample<T>>,
}

/// The bottleneck at the lowest resolution.
#[derive(Clone, Debug)]
pub struct MidBlock<T: Float> {
    pub res1: ResBlock<T>,
    pub attn: AttentionBlock<T>,
    pub res2: ResBlock<T>,
}

/// One level of the expanding path: residual blocks on `cat(h, skip)` (each maybe
/// followed by attention), then an upsample except at the first level.
#[derive(Clone, Debug)]
pub struct UpLevel<T: Float> {
    /// The level index, as on the way down (the deepest level comes first).
    pub level: usize,
    pub res: Vec<ResBlock<T>>,
    pub attn: Vec<Option<AttentionBlock<T>>>,
    pub upsample: Option<Upsample<T>>,
}

/// The UNet noise predictor.
#[derive(Clone, Debug)]
pub struct UNet<T: Float> {
    pub config: UNetConfig,
    pub time_embed: TimeEmbedding<T>,
    pub input_conv: Conv2d<T>,
    pub down: Vec<DownLevel<T>>,
    pub mid: MidBlock<T>,
    /// In the order of the forward pass: the deepest level first.
    pub up: Vec<UpLevel<T>>,
    pub out_norm: GroupNorm<T>,
    pub out_conv: Conv2d<T>,
}

impl<T: Float> UNet<T> {
    /// A freshly initialised UNet (see [`crate::init`]); one seed, one model.
    ///
    /// ```
    /// use nn::{Module, UNet, UNetConfig};
    /// let unet = UNet::<f32>::new(&UNetConfig::default(), &mut tensor::rng(0))?;
    /// assert_eq!(unet.num_params(), 1_623_169);
    /// # Ok::<(), nn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the configuration does not validate.
    pub fn new(config: &UNetConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let (groups, embed, dropout) = (config.groups, config.time_embed_dim, config.dropout);
        let resolutions = config.resolutions();
        let with_attention = |level: usize| config.attention_resolutions.contains(&resolutions[level]);
        let levels = config.channel_mults.len();

        let time_embed = TimeEmbedding::new(config.sinusoidal_dim, embed, rng);
        let input_conv = Conv2d::same3x3(config.image_channels, config.base_channels, rng);

        // The channels of every tensor kept for a skip connection, in push order.
        let mut skip_channels = vec![config.base_channels];
        let mut channels = config.base_channels;
        let mut down = Vec::with_capacity(levels);
        for (level, &mult) in config.channel_mults.iter().enumerate() {
            let (mut res, mut attn) = (Vec::new(), Vec::new());
            for _ in 0..config.num_res_blocks {
                res.push(ResBlock::new(channels, config.base_channels * mult, embed, groups, dropout, rng)?);
                channels = config.base_channels * mult;
                attn.push(if with_attention(level) { Some(AttentionBlock::new(channels, groups, rng)?) } else { None });
                skip_channels.push(channels);
            }
            let downsample = (level + 1 < levels).then(|| Downsample::new(channels, rng));
            if downsample.is_some() {
                skip_channels.push(channels);
            }
            down.push(DownLevel { res, attn, downsample });
        }

        let mid = MidBlock {
            res1: ResBlock::new(channels, channels, embed, groups, dropout, rng)?,
            attn: AttentionBlock::new(channels, groups, rng)?,
            res2: ResBlock::new(channels, channels, embed, groups, dropout, rng)?,
        };

        let mut up = Vec::with_capacity(levels);
        for (level, &mult) in config.channel_mults.iter().enumerate().rev() {
            let (mut res, mut attn) = (Vec::new(), Vec::new());
            for _ in 0..=config.num_res_blocks {
                let skip = skip_channels.pop().expect("one skip per up block: the counts match by construction");
                res.push(ResBlock::new(channels + skip, config.base_channels * mult, embed, groups, dropout, rng)?);
                channels = config.base_channels * mult;
                attn.push(if with_attention(level) { Some(AttentionBlock::new(channels, groups, rng)?) } else { None });
            }
            let upsample = (level > 0).then(|| Upsample::new(channels, rng));
            up.push(UpLevel { level, res, attn, upsample });
        }

        Ok(UNet {
            config: config.clone(),
            time_embed,
            input_conv,
            down,
            mid,
            up,
            out_norm: GroupNorm::new(groups, channels)?,
            out_conv: Conv2d::same3x3(channels, config.image_channels, rng),
        })
    }

    /// Zeroes the last layer of every branch that is added to a path, as the
    /// DDPM code does (its `zero_module`): the second convolution of each
    /// residual block, the output projection of each attention block, and the
    /// output convolution. Each block then starts as its skip path (the
    /// identity, or the 1x1 convolution where the channels change), and the
    /// network as the zero function: predicting the noise, it starts at the
    /// noise's mean, and the first L_simple is E[eps^2] = 1. A zeroed layer
    /// still has a weight gradient (its input times the gradient of its
    /// output), but passes none back, so the output convolution moves at the
    /// first step, each branch's zeroed layer once the gradient reaches its
    /// output along the skip paths, and the layers before it one step after
    /// that. `--zero-init` in `ddpm train`; chapter 8 of the course.
    pub fn zero_branch_outputs(&mut self) {
        for res in self.res_blocks_mut() {
            res.conv2.zero_parameters();
        }
        let down_attn = self.down.iter_mut().flat_map(|level| level.attn.iter_mut().flatten());
        let up_attn = self.up.iter_mut().flat_map(|level| level.attn.iter_mut().flatten());
        for attn in down_attn.chain([&mut self.mid.attn]).chain(up_attn) {
            attn.proj.zero_parameters();
        }
        self.out_conv.zero_parameters();
    }

    /// Every residual block: down the levels, the middle's two, up the levels.
    fn res_blocks_mut(&mut self) -> impl Iterator<Item = &mut ResBlock<T>> {
        let down = self.down.iter_mut().flat_map(|level| level.res.iter_mut());
        let up = self.up.iter_mut().flat_map(|level| level.res.iter_mut());
        down.chain([&mut self.mid.res1, &mut self.mid.res2]).chain(up)
    }

    /// The predicted noise `eps_theta(x_t, t)`: `x_t [B, C, S, S]`, `t` the `B`
    /// timesteps (0-based code indices) -> `[B, C, S, S]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x_t` is not `[B, image_channels, S, S]` with
    /// `S` divisible by `2^(levels - 1)`, or `t` does not have `B` entries.
    pub fn forward(&self, x_t: &Tensor<T>, t: &[usize]) -> Result<Tensor<T>> {
        self.forward_continuous(x_t, &timesteps_to_f64(t))
    }

    /// As [`UNet::forward`] with real-valued times (the embedding is defined for any `t`).
    ///
    /// # Errors
    /// As [`UNet::forward`].
    pub fn forward_continuous(&self, x_t: &Tensor<T>, t: &[f64]) -> Result<Tensor<T>> {
        self.check_input(x_t, t.len())?;
        let temb = self.time_embed.forward(t)?; // [B, E]
        let mut h = self.input_conv.forward(x_t)?; // [B, base, S, S]
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (res, attn) in level.res.iter().zip(&level.attn) {
                h = res.forward(&h, &temb)?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(downsample) = &level.downsample {
                h = downsample.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.res1.forward(&h, &temb)?;
        h = self.mid.attn.forward(&h)?;
        h = self.mid.res2.forward(&h, &temb)?;
        for level in &self.up {
            for (res, attn) in level.res.iter().zip(&level.attn) {
                let skip = skips.pop().expect("one skip per up block: the counts match by construction");
                h = res.forward(&Tensor::cat(&[h, skip], 1)?, &temb)?;
                if let Some(attn) = attn {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(upsample) = &level.upsample {
                h = upsample.forward(&h)?;
            }
        }
        self.out_conv.forward_after_norm_silu(&self.out_norm, &h, None)
    }

    fn check_input(&self, x: &Tensor<T>, timesteps: usize) -> Result<()> {
        let factor = 1 << (self.config.channel_mults.len() - 1);
        let ok = x.rank() == 4
            && x.dims()[1] == self.config.image_channels
            && x.dims()[0] == timesteps
            && x.dims()[2].is_multiple_of(factor)
            && x.dims()[3].is_multiple_of(factor);
        if ok {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            op: "UNet::forward",
            msg: format!(
                "x_t {:?} with {timesteps} timesteps; expected [B, {}, H, W] with B timesteps and H, W divisible by {factor}",
                x.dims(),
                self.config.image_channels
            ),
        })
    }

    /// The floating-point operations of one forward pass on a batch of `batch`
    /// images of the configured size: two per multiply-add of every convolution,
    /// linear layer and attention product. Normalisations and activations are left
    /// out (a few percent). For the default UNet and `batch = 64`: about 35.5e9;
    /// a training step (forward and backward) costs about three times as much.
    #[must_use]
    pub fn flops_forward(&self, batch: usize) -> f64 {
        let n = batch;
        let mut size = self.config.image_size;
        let mut flops = self.time_embed.linear1.flops(n) + self.time_embed.linear2.flops(n) + self.input_conv.flops(n, size);
        for level in &self.down {
            for (res, attn) in level.res.iter().zip(&level.attn) {
                flops += res.flops(n, size) + attn.as_ref().map_or(0.0, |a| a.flops(n, size));
            }
            if let Some(downsample) = &level.downsample {
                flops += downsample.conv.flops(n, size);
                size = downsample.conv.out_size(size);
            }
        }
        flops += self.mid.res1.flops(n, size) + self.mid.attn.flops(n, size) + self.mid.res2.flops(n, size);
        for level in &self.up {
            for (res, attn) in level.res.iter().zip(&level.attn) {
                flops += res.flops(n, size) + attn.as_ref().map_or(0.0, |a| a.flops(n, size));
            }
            if let Some(upsample) = &level.upsample {
                size *= 2;
                flops += upsample.conv.flops(n, size);
            }
        }
        flops + self.out_conv.flops(n, size)
    }
}

impl<T: Float> Module<T> for UNet<T> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor<T>)) {
        self.time_embed.visit_params(&join(prefix, "time_embed"), f);
        self.input_conv.visit_params(&join(prefix, "input_conv"), f);
        for (i, level) in self.down.iter().enumerate() {
            let p = join(prefix, &format!("down.{i}"));
            for (j, (res, attn)) in level.res.iter().zip(&level.attn).enumerate() {
                res.visit_params(&join(&p, &format!("res.{j}")), f);
                if let Some(attn) = attn {
                    attn.visit_params(&join(&p, &format!("attn.{j}")), f);
                }
            }
            if let Some(downsample) = &level.downsample {
                downsample.visit_params(&join(&p, "downsample"), f);
            }
        }
        self.mid.res1.visit_params(&join(prefix, "mid.res1"), f);
        self.mid.attn.visit_params(&join(prefix, "mid.attn"), f);
        self.mid.res2.visit_params(&join(prefix, "mid.res2"), f);
        for level in &self.up {
            let p = join(prefix, &format!("up.{}", level.level));
            for (j, (res, attn)) in level.res.iter().zip(&level.attn).enumerate() {
                res.visit_params(&join(&p, &format!("res.{j}")), f);
                if let Some(attn) = attn {
                    attn.visit_params(&join(&p, &format!("attn.{j}")), f);
                }
            }
            if let Some(upsample) = &level.upsample {
                upsample.visit_params(&join(&p, "upsample"), f);
            }
        }
        self.out_norm.visit_params(&join(prefix, "out.norm"), f);
        self.out_conv.visit_params(&join(prefix, "out.conv"), f);
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.time_embed.visit_params_mut(&join(prefix, "time_embed"), f);
        self.input_conv.visit_params_mut(&join(prefix, "input_conv"), f);
        for (i, level) in self.down.iter_mut().enumerate() {
            let p = join(prefix, &format!("down.{i}"));
            for (j, (res, attn)) in level.res.iter_mut().zip(&mut level.attn).enumerate() {
                res.visit_params_mut(&join(&p, &format!("res.{j}")), f);
                if let Some(attn) = attn {
                    attn.visit_params_mut(&join(&p, &format!("attn.{j}")), f);
                }
            }
            if let Some(downsample) = &mut level.downsample {
                downsample.visit_params_mut(&join(&p, "downsample"), f);
            }
        }
        self.mid.res1.visit_params_mut(&join(prefix, "mid.res1"), f);
        self.mid.attn.visit_params_mut(&join(prefix, "mid.attn"), f);
        self.mid.res2.visit_params_mut(&join(prefix, "mid.res2"), f);
        for level in &mut self.up {
            let p = join(prefix, &format!("up.{}", level.level));
            for (j, (res, attn)) in level.res.iter_mut().zip(&mut level.attn).enumerate() {
                res.visit_params_mut(&join(&p, &format!("res.{j}")), f);
                if let Some(attn) = attn {
                    attn.visit_params_mut(&join(&p, &format!("attn.{j}")), f);
                }
            }
            if let Some(upsample) = &mut level.upsample {
                upsample.visit_params_mut(&join(&p, "upsample"), f);
            }
        }
        self.out_norm.visit_params_mut(&join(prefix, "out.norm"), f);
        self.out_conv.visit_params_mut(&join(prefix, "out.conv"), f);
    }

    fn set_mode(&mut self, mode: Mode) {
        for block in self.res_blocks_mut() {
            block.set_mode(mode);
        }
    }
}

//! The hyper-parameters of the UNet, with the course defaults, and their text
//! form (`key=value` strings) for command lines and checkpoint metadata.

use crate::error::{Error, Result};

/// Everything that fixes the UNet's architecture. The defaults are the course UNet
/// for MNIST (1,623,169 parameters).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    /// Channels of the images (1 for MNIST).
    pub image_channels: usize,
    /// Side of the square images (28).
    pub image_size: usize,
    /// Channels after the input convolution (32).
    pub base_channels: usize,
    /// Channels of level `i` are `base_channels * channel_mults[i]`; one level per
    /// entry, each but the last halving the resolution ((1, 2, 2): 28, 14, 7).
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (2); the way up has one more.
    pub num_res_blocks: usize,
    /// Resolutions at which every residual block is followed by attention (`[7]`).
    pub attention_resolutions: Vec<usize>,
    /// Size of the sinusoidal timestep features (32).
    pub sinusoidal_dim: usize,
    /// Size of the time embedding after its MLP (128).
    pub time_embed_dim: usize,
    /// Groups of every GroupNorm (8).
    pub groups: usize,
    /// Dropout probability inside the residual blocks (0).
    pub dropout: f64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            image_channels: 1,
            image_size: 28,
            base_channels: 32,
            channel_mults: vec![1, 2, 2],
            num_res_blocks: 2,
            attention_resolutions: vec![7],
            sinusoidal_dim: 32,
            time_embed_dim: 128,
            groups: 8,
            dropout: 0.0,
        }
    }
}

const KEYS: &[&str] = &[
    "image_channels",
    "image_size",
    "base_channels",
    "channel_mults",
    "num_res_blocks",
    "attention_resolutions",
    "sinusoidal_dim",
    "time_embed_dim",
    "groups",
    "dropout",
];

/// The most residual blocks a level may have: far beyond the 2 or 3 of the
/// published UNets, and small enough that counting a config's parameters stays
/// instant.
pub const MAX_RES_BLOCKS: usize = 64;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: "UNetConfig", msg }
}

fn list(values: &[usize]) -> String {
    values.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn parse_usize(key: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| invalid(format!("{key}={value}: not a non-negative integer")))
}

fn parse_list(key: &str, value: &str) -> Result<Vec<usize>> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value.split(',').map(|v| parse_usize(key, v)).collect()
}

impl UNetConfig {
    /// A small UNet for fast tests: 1x8x8 images, base 8, levels (1, 2) at
    /// resolutions 8 and 4, attention at 4, GroupNorm with 4 groups.
    #[must_use]
    pub fn tiny() -> Self {
        UNetConfig {
            image_size: 8,
            base_channels: 8,
            channel_mults: vec![1, 2],
            attention_resolutions: vec![4],
            sinusoidal_dim: 8,
            time_embed_dim: 16,
            groups: 4,
            ..Self::default()
        }
    }

    /// The resolution of each level: `image_size`, halved per level.
    #[must_use]
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.channel_mults.len()).map(|level| self.image_size >> level).collect()
    }

    /// How many weights [`UNet::new`](crate::UNet::new) makes for this config
    /// (one that passes [`UNetConfig::validate`]), counted from the sizes alone,
    /// nothing allocated, and saturating at `u64::MAX`: so an absurd size from a
    /// flag or a file is refused before a buffer is asked for it. It walks the
    /// levels as `UNet::new` does; the UNet's tests hold the two equal.
    #[must_use]
    pub fn parameter_count(&self) -> u64 {
        let size = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let sum = |terms: &[u64]| terms.iter().fold(0u64, |total, &t| total.saturating_add(t));
        // A convolution of `taps` taps (9 for 3x3, 1 for 1x1, 1 for a linear layer)
        // has `taps cin cout` weights and `cout` biases; a group norm a scale and a
        // shift a channel.
        let conv = |taps: u64, cin: u64, cout: u64| taps.saturating_mul(cin).saturating_mul(cout).saturating_add(cout);
        let norm = |c: u64| c.saturating_mul(2);
        let embed = size(self.time_embed_dim);
        let res_block = |cin: u64, cout: u64| {
            let skip = if cin == cout { 0 } else { conv(1, cin, cout) };
            sum(&[norm(cin), conv(9, cin, cout), conv(1, embed, cout), norm(cout), conv(9, cout, cout), skip])
        };
        let attention = |c: u64| sum(&[norm(c), conv(1, c, c.saturating_mul(3)), conv(1, c, c)]);
        let resolutions = self.resolutions();
        let attends = |level: usize| self.attention_resolutions.contains(&resolutions[level]);
        let level_channels = |mult: usize| size(self.base_channels).saturating_mul(size(mult));
        let levels = self.channel_mults.len();

        let base = size(self.base_channels);
        let mut total = sum(&[conv(1, size(self.sinusoidal_dim), embed), conv(1, embed, embed), conv(9, size(self.image_channels), base)]);
        let (mut channels, mut skips) = (base, vec![base]);
        for (level, &mult) in self.channel_mults.iter().enumerate() {
            for _ in 0..self.num_res_blocks {
                let out = level_channels(mult);
                total = sum(&[total, res_block(channels, out), if attends(level) { attention(out) } else { 0 }]);
                channels = out;
                skips.push(channels);
            }
            if level + 1 < levels {
                total = sum(&[total, conv(9, channels, channels)]);
                skips.push(channels);
            }
        }
        total = sum(&[total, res_block(channels, channels), attention(channels), res_block(channels, channels)]);
        for (level, &mult) in self.channel_mults.iter().enumerate().rev() {
            for _ in 0..=self.num_res_blocks {
                let (skip, out) = (skips.pop().unwrap_or(0), level_channels(mult));
                total = sum(&[total, res_block(channels.saturating_add(skip), out), if attends(level) { attention(out) } else { 0 }]);
                channels = out;
            }
            if level > 0 {
                total = sum(&[total, conv(9, channels, channels)]);
            }
        }
        sum(&[total, norm(channels), conv(9, channels, size(self.image_channels))])
    }

    /// Checks that the numbers fit together.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first problem: no level, a zero size,
    /// more than [`MAX_RES_BLOCKS`] blocks a level, a channel count that overflows,
    /// a group count that does not divide a channel count, an image size that does
    /// not halve evenly down to the last level, an odd or tiny `sinusoidal_dim`, a
    /// dropout outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.channel_mults.is_empty() || self.channel_mults.contains(&0) {
            return Err(invalid(format!("channel_mults {:?} needs at least one level and no zero", self.channel_mults)));
        }
        if self.image_channels == 0 || self.base_channels == 0 || self.time_embed_dim == 0 || self.num_res_blocks == 0 {
            return Err(invalid(format!("sizes must be positive: {self:?}")));
        }
        if self.num_res_blocks > MAX_RES_BLOCKS {
            return Err(invalid(format!("num_res_blocks {} is more than {MAX_RES_BLOCKS} a level", self.num_res_blocks)));
        }
        let halvings = self.channel_mults.len() - 1;
        let halves_evenly =
            u32::try_from(halvings).ok().and_then(|h| 1usize.checked_shl(h)).is_some_and(|d| self.image_size.is_multiple_of(d));
        if self.image_size == 0 || !halves_evenly {
            return Err(invalid(format!(
                "image_size {} must be divisible by 2^{halvings} for {} levels",
                self.image_size,
                self.channel_mults.len()
            )));
        }
        for &m in &self.channel_mults {
            let Some(channels) = self.base_channels.checked_mul(m) else {
                return Err(invalid(format!("base_channels {} times channel_mult {m} overflows", self.base_channels)));
            };
            if self.groups == 0 || !channels.is_multiple_of(self.groups) {
                return Err(invalid(format!("{} groups do not divide {channels} channels", self.groups)));
            }
        }
        if self.sinusoidal_dim < 4 || !self.sinusoidal_dim.is_multiple_of(2) {
            return Err(invalid(format!("sinusoidal_dim {} must be even and at least 4", self.sinusoidal_dim)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid(format!("dropout {} is not in [0, 1)", self.dropout)));
        }
        Ok(())
    }

    /// The configuration as `key=value` strings, lists comma-separated
    /// (`channel_mults=1,2,2`); [`UNetConfig::from_key_values`] reads them back.
    #[must_use]
    pub fn to_key_values(&self) -> Vec<String> {
        KEYS.iter()
            .map(|&key| {
                let value = match key {
                    "image_channels" => self.image_channels.to_string(),
                    "image_size" => self.image_size.to_string(),
                    "base_channels" => self.base_channels.to_string(),
                    "channel_mults" => list(&self.channel_mults),
                    "num_res_blocks" => self.num_res_blocks.to_string(),
                    "attention_resolutions" => list(&self.attention_resolutions),
                    "sinusoidal_dim" => self.sinusoidal_dim.to_string(),
                    "time_embed_dim" => self.time_embed_dim.to_string(),
                    "groups" => self.groups.to_string(),
                    _ => self.dropout.to_string(),
                };
                format!("{key}={value}")
            })
            .collect()
    }

    /// The default configuration with the given `key=value` overrides applied.
    ///
    /// ```
    /// use nn::UNetConfig;
    /// let config = UNetConfig::from_key_values(&["base_channels=64", "channel_mults=1,2"])?;
    /// assert_eq!((config.base_channels, config.channel_mults.clone()), (64, vec![1, 2]));
    /// assert_eq!(UNetConfig::from_key_values(&config.to_key_values())?, config);
    /// # Ok::<(), nn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a string without `=`, an unknown key or a
    /// value that does not parse.
    pub fn from_key_values<S: AsRef<str>>(pairs: &[S]) -> Result<Self> {
        let mut config = Self::default();
        for pair in pairs {
            let pair = pair.as_ref();
            let (key, value) = pair.split_once('=').ok_or_else(|| invalid(format!("{pair:?} is not key=value")))?;
            let key = key.trim();
            match key {
                "image_channels" => config.image_channels = parse_usize(key, value)?,
                "image_size" => config.image_size = parse_usize(key, value)?,
                "base_channels" => config.base_channels = parse_usize(key, value)?,
                "channel_mults" => config.channel_mults = parse_list(key, value)?,
                "num_res_blocks" => config.num_res_blocks = parse_usize(key, value)?,
                "attention_resolutions" => config.attention_resolutions = parse_list(key, value)?,
                "sinusoidal_dim" => config.sinusoidal_dim = parse_usize(key, value)?,
                "time_embed_dim" => config.time_embed_dim = parse_usize(key, value)?,
                "groups" => config.groups = parse_usize(key, value)?,
                "dropout" => {
                    config.dropout = value.trim().parse().map_err(|_| invalid(format!("dropout={value}: not a number")))?;
                }
                _ => return Err(invalid(format!("unknown key {key:?}; the keys are {}", KEYS.join(", ")))),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_round_trip_and_reject_unknown_keys() {
        let config = UNetConfig::tiny();
        assert_eq!(UNetConfig::from_key_values(&config.to_key_values()).unwrap(), config);
        assert!(UNetConfig::from_key_values(&["channels=3"]).is_err());
        assert!(UNetConfig::from_key_values(&["groups"]).is_err());
        assert!(UNetConfig::from_key_values(&["groups=x"]).is_err());
    }

    #[test]
    fn validate_names_the_problem() {
        assert!(UNetConfig::default().validate().is_ok());
        assert!(UNetConfig::tiny().validate().is_ok());
        let odd = UNetConfig { image_size: 30, ..UNetConfig::default() };
        assert!(odd.validate().unwrap_err().to_string().contains("divisible"));
        let groups = UNetConfig { groups: 5, ..UNetConfig::default() };
        assert!(groups.validate().unwrap_err().to_string().contains("groups"));

        // Each problem alone, with the words that name it.
        let d = UNetConfig::default;
        let bad = [
            (UNetConfig { channel_mults: vec![], ..d() }, "at least one level"),
            (UNetConfig { channel_mults: vec![1, 0], ..d() }, "no zero"),
            (UNetConfig { image_channels: 0, ..d() }, "sizes must be positive"),
            (UNetConfig { base_channels: 0, ..d() }, "sizes must be positive"),
            (UNetConfig { time_embed_dim: 0, ..d() }, "sizes must be positive"),
            (UNetConfig { num_res_blocks: 0, ..d() }, "sizes must be positive"),
            (UNetConfig { image_size: 0, ..d() }, "image_size 0"),
            (UNetConfig { image_size: 14, ..d() }, "image_size 14 must be divisible by 2^2"),
            (UNetConfig { groups: 0, ..d() }, "0 groups"),
            (UNetConfig { base_channels: 12, channel_mults: vec![1, 2], groups: 8, ..d() }, "8 groups do not divide 12"),
            (UNetConfig { base_channels: 4, channel_mults: vec![1, 3], groups: 8, ..d() }, "8 groups do not divide 4"),
            (UNetConfig { sinusoidal_dim: 2, ..d() }, "sinusoidal_dim 2"),
            (UNetConfig { sinusoidal_dim: 7, ..d() }, "sinusoidal_dim 7"),
            (UNetConfig { dropout: 1.0, ..d() }, "dropout 1"),
            (UNetConfig { dropout: -0.1, ..d() }, "dropout -0.1"),
        ];
        for (config, words) in bad {
            let message = config.validate().map_or_else(|e| e.to_string(), |()| format!("{config:?} accepted"));
            assert!(message.contains(words), "{message:?} does not say {words:?}");
        }
        // The edges that are allowed: the smallest sinusoid, no dropout, and levels
        // whose channel count (base times multiplier) is what the groups divide.
        let good = [
            UNetConfig { sinusoidal_dim: 4, ..d() },
            UNetConfig { dropout: 0.0, ..d() },
            UNetConfig { dropout: 0.99, ..d() },
            UNetConfig { base_channels: 4, channel_mults: vec![3], groups: 12, ..d() },
        ];
        for config in good {
            assert!(config.validate().is_ok(), "{config:?}: {:?}", config.validate());
        }
    }
}

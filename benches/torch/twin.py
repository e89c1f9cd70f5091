"""The PyTorch twin of the course engine: the same noise predictors (the course
UNet and the MLP denoiser), the same diffusion arithmetic, and the checkpoint
format of `ddpm`, so weights move between the two worlds without a rename table.

Shape legend: B batch, C channels, S image side, E time embedding size,
D flattened data size, L = S * S attention positions.

Parameter names are the engine's (crates/nn: one name per path in the module
tree, see the `nn` crate docs): `time_embed.linear1.weight`,
`down.0.res.1.conv1.weight`, `down.2.attn.0.qkv.bias`, `mid.res1.norm1.weight`,
`up.2.res.0.skip.weight`, `up.1.upsample.conv.weight`, `out.conv.bias`, and for
the MLP `input.weight`, `hidden.0.weight`, `output.bias`. A checkpoint file
stores them under a part prefix (`model.`, `ema.`, `optim.`); `load_weights`
strips it and calls `load_state_dict(strict=True)`.

Layouts are PyTorch's own: conv `[K, C, kh, kw]`, linear `[out, in]`, the
attention's q, k, v as one 1x1 conv with 3C outputs in that order, the
sinusoidal features `[sin | cos]` computed in float64 and rounded once.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

# Metadata of a checkpoint the `ddpm` program opens (src/model.rs).
FORMAT = "diffusion-course-checkpoint-1"
GROUP_NORM_EPS = 1e-5
MAX_PERIOD = 10_000.0


# ---------------------------------------------------------------- configs

def unet_config(**overrides):
    """The course UNet's hyper-parameters (nn::UNetConfig::default), with overrides."""
    config = dict(
        image_channels=1, image_size=28, base_channels=32, channel_mults=[1, 2, 2], num_res_blocks=2,
        attention_resolutions=[7], sinusoidal_dim=32, time_embed_dim=128, groups=8, dropout=0.0,
    )
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown UNet keys {sorted(unknown)}; the keys are {sorted(config)}")
    config.update(overrides)
    return config


def mlp_config(**overrides):
    """The MLP denoiser's hyper-parameters (nn::MlpConfig::mnist), with overrides."""
    config = dict(data_dim=784, hidden_dim=1024, depth=3, time_embed_dim=128)
    config.update(overrides)
    return config


def train_config(model, **overrides):
    """The run config of `ddpm train` (src/run/config.rs, TrainConfig), in its key
    order, with the course preset's values (but no sample grids); `model` is a UNet
    or MLP config dict. The reader requires every key but `lr_schedule`,
    `loss_weight`, `min_snr_gamma`, `timestep_sampling`, `adam_beta2`, `ema_warmup`
    and `zero_init`, which it defaults to the values here (the recipe of the runs
    saved before those keys existed)."""
    kind = "unet" if "channel_mults" in model else "mlp"
    config = dict(
        data="mnist", model=dict(kind=kind, **model), schedule="linear", timesteps=1000, loss="simple",
        hybrid_lambda=0.001, variance="fixed-large", prediction="eps", batch=64, lr=1e-3, warmup=200,
        lr_schedule="constant", loss_weight="uniform", min_snr_gamma=5.0, timestep_sampling="uniform",
        grad_clip=1.0, adam_beta2=0.999, ema_decay=0.999, ema_warmup=False, zero_init=False, steps=8000,
        time_budget=0.0, seed=0, checkpoint_every=500, sample_every=0, samples=64,
    )
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown run keys {sorted(unknown)}")
    config.update(overrides)
    return config


# ---------------------------------------------------------------- layers and blocks

def timestep_embedding(t, dim):
    """Sinusoidal features [B, dim] of the timesteps t [B]: f_i = exp(-ln(1e4) i / (half - 1)),
    [sin(t f) | cos(t f)], in float64 then rounded once to float32 (nn::timestep_embedding)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    frequencies = torch.exp(-math.log(MAX_PERIOD) * i / (half - 1))
    args = t.to(torch.float64)[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(torch.float32)


def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class TimeEmbedding(nn.Module):
    """temb = linear2(SiLU(linear1(sinusoidal(t)))): [B] -> [B, E]."""

    def __init__(self, sinusoidal_dim, embed_dim):
        super().__init__()
        self.sinusoidal_dim = sinusoidal_dim
        self.linear1 = nn.Linear(sinusoidal_dim, embed_dim)
        self.linear2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, t):
        return self.linear2(F.silu(self.linear1(timestep_embedding(t, self.sinusoidal_dim))))


class ResBlock(nn.Module):
    """h = conv1(SiLU(norm1(x))) + time_proj(SiLU(temb)); h = conv2(dropout(SiLU(norm2(h))));
    out = skip(x) + h, skip a 1x1 conv when the channels change."""

    def __init__(self, c_in, c_out, embed_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=GROUP_NORM_EPS)
        self.conv1 = conv3x3(c_in, c_out)
        self.time_proj = nn.Linear(embed_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=GROUP_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(c_out, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, temb):  # x [B, Cin, S, S], temb [B, E] -> [B, Cout, S, S]
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the L positions, residual:
    x + proj(softmax(q^T k / sqrt(C)) applied to v)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):  # [B, C, S, S]
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3 * c, h * w).split(c, dim=1)  # each [B, C, L]
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=2)  # [B, L, L]
        a = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(a)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Level(nn.Module):
    """One UNet level: `res.j`, `attn.j` (at attention resolutions), then
    `downsample` or `upsample` (absent at the bottom or top)."""

    def __init__(self, res, attn, resample_name, resample):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn) if attn else None
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def has_resample(self):
        return self.resample_name in self._modules

    def resample(self, h):
        return getattr(self, self.resample_name)(h) if self.has_resample() else h


class Mid(nn.Module):
    def __init__(self, channels, embed_dim, groups, dropout):
        super().__init__()
        self.res1 = ResBlock(channels, channels, embed_dim, groups, dropout)
        self.attn = AttentionBlock(channels, groups)
        self.res2 = ResBlock(channels, channels, embed_dim, groups, dropout)


class Out(nn.Module):
    def __init__(self, channels, image_channels, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.conv = conv3x3(channels, image_channels)


class UNet(nn.Module):
    """The course UNet (crates/nn/src/models/unet.rs): eps_theta(x_t, t),
    x_t [B, C, S, S], t [B] code timesteps -> [B, C, S, S]."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        c = self.config
        groups, embed, dropout, base = c["groups"], c["time_embed_dim"], c["dropout"], c["base_channels"]
        levels = len(c["channel_mults"])
        resolutions = [c["image_size"] >> level for level in range(levels)]
        attention = [resolutions[level] in c["attention_resolutions"] for level in range(levels)]

        self.time_embed = TimeEmbedding(c["sinusoidal_dim"], embed)
        self.input_conv = conv3x3(c["image_channels"], base)
        skip_channels, channels = [base], base
        down = []
        for level, mult in enumerate(c["channel_mults"]):
            res, attn = [], []
            for _ in range(c["num_res_blocks"]):
                res.append(ResBlock(channels, base * mult, embed, groups, dropout))
                channels = base * mult
                if attention[level]:
                    attn.append(AttentionBlock(channels, groups))
                skip_channels.append(channels)
            downsample = Downsample(channels) if level + 1 < levels else None
            if downsample is not None:
                skip_channels.append(channels)
            down.append(Level(res, attn, "downsample", downsample))
        self.down = nn.ModuleList(down)
        self.mid = Mid(channels, embed, groups, dropout)
        # `up.<level>`, the deepest level first, as the forward pass meets them.
        self.up = nn.ModuleDict()
        for level in reversed(range(levels)):
            mult = c["channel_mults"][level]
            res, attn = [], []
            for _ in range(c["num_res_blocks"] + 1):
                res.append(ResBlock(channels + skip_channels.pop(), base * mult, embed, groups, dropout))
                channels = base * mult
                if attention[level]:
                    attn.append(AttentionBlock(channels, groups))
            self.up[str(level)] = Level(res, attn, "upsample", Upsample(channels) if level > 0 else None)
        self.out = Out(channels, c["image_channels"], groups)

    @torch.no_grad()
    def zero_branch_outputs(self):
        """Zeroes the last layer of every branch added to a path, as the DDPM code's
        `zero_module` (nn::UNet::zero_branch_outputs): `conv2` of each residual
        block, `proj` of each attention block (the middle's too) and `out.conv`,
        weight and bias. Each block starts as its skip path, the network as zero."""
        blocks = [m for m in self.modules() if isinstance(m, (ResBlock, AttentionBlock))]
        for layer in [b.conv2 if isinstance(b, ResBlock) else b.proj for b in blocks] + [self.out.conv]:
            layer.weight.zero_()
            layer.bias.zero_()

    def forward(self, x_t, t):
        temb = self.time_embed(t)  # [B, E]
        h = self.input_conv(x_t)
        skips = [h]
        for level in self.down:
            for j, res in enumerate(level.res):
                h = res(h, temb)
                if level.attn is not None:
                    h = level.attn[j](h)
                skips.append(h)
            if level.has_resample():
                h = level.resample(h)
                skips.append(h)
        h = self.mid.res2(self.mid.attn(self.mid.res1(h, temb)), temb)
        for level in self.up.values():
            for j, res in enumerate(level.res):
                h = res(torch.cat([h, skips.pop()], dim=1), temb)
                if level.attn is not None:
                    h = level.attn[j](h)
            h = level.resample(h)
        return self.out.conv(F.silu(self.out.norm(h)))


class MlpDenoiser(nn.Module):
    """The MLP denoiser (crates/nn/src/models/mlp.rs): x_t [B, ...] with D
    elements per sample -> eps [B, ...]."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        d, h, s = config["data_dim"], config["hidden_dim"], config["time_embed_dim"]
        self.input = nn.Linear(d + s, h)
        self.hidden = nn.ModuleList([nn.Linear(h, h) for _ in range(config["depth"] - 1)])
        self.output = nn.Linear(h, d)

    def forward(self, x_t, t):
        b = x_t.shape[0]
        h = F.silu(self.input(torch.cat([x_t.reshape(b, -1), timestep_embedding(t, self.config["time_embed_dim"])], dim=1)))
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.output(h).reshape(x_t.shape)


def build_model(model_config):
    """The twin of a `model` entry of a run config (its `kind` picks the class)."""
    config = {k: v for k, v in model_config.items() if k != "kind"}
    return UNet(unet_config(**config)) if model_config.get("kind", "unet") == "unet" else MlpDenoiser(mlp_config(**config))


# ---------------------------------------------------------------- checkpoints

def read_checkpoint(path):
    """(run config, step, tensors by full name, metadata) of a `ddpm` checkpoint."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this program (no format = {FORMAT!r} in its metadata)")
    return json.loads(metadata["config"]), int(metadata["step"]), load_file(path), metadata


def part(tensors, prefix):
    """The tensors of one part (`model`, `ema`, `optim`) with the prefix stripped."""
    return {name[len(prefix) + 1:]: t for name, t in tensors.items() if name.startswith(prefix + ".")}


def load_weights(path, weights="ema"):
    """The twin model of a checkpoint with its EMA weights (`weights="ema"`; the
    model weights when the file keeps no EMA, as an exported file) or its raw
    weights (`weights="model"`). Strict: every name must match."""
    config, step, tensors, _ = read_checkpoint(path)
    model = build_model(config["model"])
    state = part(tensors, "ema") if weights == "ema" else {}
    model.load_state_dict(state or part(tensors, "model"), strict=True)
    return model.eval(), config, step


def save_checkpoint(path, model, ema_state, config, step, elapsed_seconds, ema_updates):
    """Writes `model.*` and `ema.*` with the metadata `ddpm info / sample / eval /
    nll` read; atomically (temporary file, then rename). No optimizer state: the
    file samples and evaluates but cannot be resumed by `ddpm train`."""
    tensors = {f"model.{k}": v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().float().contiguous().cpu() for k, v in ema_state.items()})
    metadata = {
        "format": FORMAT, "config": json.dumps(config, separators=(",", ":")), "step": str(step),
        "elapsed_seconds": f"{elapsed_seconds:.3f}", "ema_updates": str(ema_updates), "trainer": "pytorch-twin",
    }
    tmp = f"{path}.tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


# ---------------------------------------------------------------- diffusion arithmetic

def linear_betas(num_timesteps):
    """Ho et al. §4 rescaled to any T: linspace(1e-4 * 1000/T, 0.02 * 1000/T, T)."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps, offset=0.008, max_beta=0.999):
    """Nichol & Dhariwal eq. 17: beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999)."""
    abar = lambda s: math.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), max_beta) for i in range(num_timesteps)])


class Diffusion:
    """The schedule constants in float64 (ddpm::schedule::NoiseSchedule), read at
    code timesteps t (paper t - 1) and rounded to float32 as the engine does."""

    def __init__(self, betas):
        self.betas = np.asarray(betas, dtype=np.float64)
        n = len(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0): beta-tilde, its log clipped at t = 0, the mean's coefficients.
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        assert n >= 2

    @classmethod
    def from_config(cls, config):
        kind, n = config["schedule"], config["timesteps"]
        return cls(linear_betas(n) if kind == "linear" else cosine_betas(n))

    @property
    def num_timesteps(self):
        return len(self.betas)

    def respaced(self, use_timesteps):
        """The schedule jumping between the kept steps (DDIM §4.2): same alpha-bar there."""
        kept = self.alphas_cumprod[np.asarray(use_timesteps)]
        return Diffusion(1.0 - kept / np.append(1.0, kept[:-1]))

    @staticmethod
    def at(values, t, x):
        """values[t] as float32, shaped [B, 1, ...] to broadcast against x."""
        v = torch.as_tensor(np.asarray(values)[t.cpu().numpy()], dtype=torch.float32, device=x.device)
        return v.reshape(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x_start, t, noise):
        """x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4)."""
        return self.at(self.sqrt_alphas_cumprod, t, x_start) * x_start + self.at(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise

    def predict_xstart_from_eps(self, x_t, t, eps):
        return self.at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.at(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_xstart(self, x_t, t, x_start):
        return (self.at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / self.at(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def q_posterior(self, x_start, x_t, t):
        """mean and log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7)."""
        mean = self.at(self.posterior_mean_coef1, t, x_t) * x_start + self.at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self.at(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    def reverse_log_variance(self, variance):
        """log sigma_t^2: fixed-large (beta_t, beta-tilde_1 at t = 0) or fixed-small (beta-tilde_t)."""
        if variance == "fixed-large":
            return np.log(np.append(self.posterior_variance[1], self.betas[1:]))
        return self.posterior_log_variance_clipped

    def cos_minus_sin(self, t, a, b):
        """sqrt(abar) a - sqrt(1 - abar) b: v from (eps, x_0), x_0 from (x_t, v) (ddpm's forward.rs)."""
        return self.at(self.sqrt_alphas_cumprod, t, a) * a - self.at(self.sqrt_one_minus_alphas_cumprod, t, b) * b

    def velocity(self, x_start, t, noise):
        """v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022; ddpm::velocity)."""
        return self.cos_minus_sin(t, noise, x_start)

    def predict_xstart_from_v(self, x_t, t, v):
        return self.cos_minus_sin(t, x_t, v)

    def predict_xstart(self, model_output, x_t, t, prediction, clip):
        if prediction == "eps":
            x0 = self.predict_xstart_from_eps(x_t, t, model_output)
        elif prediction == "v":
            x0 = self.predict_xstart_from_v(x_t, t, model_output)
        else:
            x0 = model_output
        return x0.clamp(-1.0, 1.0) if clip else x0

    def vb_terms_bpd(self, model_output, x_start, x_t, t, variance, prediction):
        """L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)), or L_0 = -log p(x_0|x_1)
        (discretised decoder) at t = 0, in bits/dim, [B] (Ho et al. eq. 5)."""
        pred_xstart = self.predict_xstart(model_output, x_t, t, prediction, clip=False)
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        model_mean, _ = self.q_posterior(pred_xstart, x_t, t)
        model_log_variance = self.at(self.reverse_log_variance(variance), t, x_t).expand_as(x_t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def timestep_weight(self, prediction, gamma):
        """The min-SNR-gamma weight of the regression error at every code timestep, [T]
        (Hang et al. 2023 eq. 7; ddpm::TimestepWeighting::weight): min(SNR_t, gamma) on
        the x_0 error, SNR_t = abar_t / (1 - abar_t), carried to the error of what the
        network predicts: eps_err^2 = SNR_t x0_err^2, x0_err^2 = (1 - abar_t) v_err^2."""
        snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        on_x0 = np.minimum(snr, gamma)
        if prediction == "eps":
            return on_x0 / snr
        return on_x0 * (1.0 - self.alphas_cumprod) if prediction == "v" else on_x0

    def training_loss(self, model, x_start, t, noise, config):
        """The loss of `ddpm train` (ddpm::loss::training_losses): L_simple (each
        item's error weighted per `loss_weight`), the bound T * L_t, or L_simple +
        lambda T L_t (hybrid; the bound term never weighted), batch mean."""
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, t)
        if config["prediction"] == "eps":
            target = noise
        elif config["prediction"] == "v":
            target = self.velocity(x_start, t, noise)
        else:
            target = x_start
        mse = mean_flat((output - target) ** 2)
        if config.get("loss_weight", "uniform") == "min-snr":
            mse = mse * self.at(self.timestep_weight(config["prediction"], config.get("min_snr_gamma", 5.0)), t, mse)
        if config["loss"] == "simple":
            return mse.mean()
        vb = self.num_timesteps * self.vb_terms_bpd(output, x_start, x_t, t, config["variance"], config["prediction"])
        return (vb if config["loss"] == "vlb" else mse + config["hybrid_lambda"] * vb).mean()

    @torch.no_grad()
    def ddim_sample(self, model, x_t, use_timesteps, prediction="eps", clip=True):
        """DDIM with eta = 0 (Song et al. eq. 12) from x_T on the kept steps:
        x_{t-1} = sqrt(abar_prev) x0_theta + sqrt(1 - abar_prev) eps(x0_theta)."""
        respaced = self.respaced(use_timesteps)
        b = x_t.shape[0]
        for k in reversed(range(len(use_timesteps))):
            t_model = torch.full((b,), use_timesteps[k], dtype=torch.long, device=x_t.device)
            t = torch.full((b,), k, dtype=torch.long, device=x_t.device)
            x0 = respaced.predict_xstart(model(x_t, t_model), x_t, t, prediction, clip)
            eps = respaced.predict_eps_from_xstart(x_t, t, x0)
            x_t = respaced.at(np.sqrt(respaced.alphas_cumprod_prev), t, x_t) * x0 + respaced.at(np.sqrt(1.0 - respaced.alphas_cumprod_prev), t, x_t) * eps
        return x_t


def evenly_spaced_timesteps(num_timesteps, count):
    """`count` code steps over 0..T, first and last included (ddpm::evenly_spaced_timesteps)."""
    last = num_timesteps - 1
    return [int(math.floor(k * last / (count - 1) + 0.5)) for k in range(count)]


def mean_flat(x):
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log of the Gaussian mass on x's pixel bin of half-width 1/255, the edge bins
    open (Ho et al. eq. 13)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log = lambda p: torch.log(p.clamp(min=1e-12))
    return torch.where(x < -0.999, log(cdf_plus), torch.where(x > 0.999, log(1.0 - cdf_min), log(cdf_plus - cdf_min)))


# ---------------------------------------------------------------- MNIST

def read_idx(path):
    """An IDX file (gzip) as a uint8 array: images [N, 28, 28] or labels [N]."""
    import gzip
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def mnist(split, root=None):
    """(images [N, 1, 28, 28] float32 in [-1, 1] as p / 127.5 - 1, labels [N] int64)."""
    root = root or os.path.join(os.path.dirname(__file__), "..", "..", "data", "mnist")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None], torch.from_numpy(labels.astype(np.int64))

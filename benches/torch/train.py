"""Train the twin of the course UNet (or the MLP) with `ddpm train`'s recipe, on
as many processes as `torchrun` starts, with DistributedDataParallel: NCCL on
GPUs, gloo on CPUs. The checkpoint it writes opens in `ddpm info / sample / eval
/ nll` (model and EMA weights, config and step in the metadata).

    torchrun --nproc_per_node 2 benches/torch/train.py --preset quick --out runs/torch-quick --threads 1
    python benches/torch/train.py --out runs/torch --steps 300        # one process

The values come from `--preset` (`ddpm train --preset`, src/run/config.rs), each
flag given overriding its preset's value. The default preset is `course`, where
`ddpm train`'s is `quick`, so that a command without `--preset` (the one
tests/torch_twin.rs runs among them) trains the course recipe.

The recipe is Algorithm 1 of Ho et al. as `ddpm train` runs it (src/run/train.rs,
src/run/algorithm1.rs): a global batch of `--batch` examples split evenly over
the processes; its timesteps drawn per `--timestep-sampling` (each uniform on
0..T-1, one per stratum of the global batch, or floor(T sigmoid(z)), z ~ N(0, 1))
and its noise from a stream every process shares, each process taking its slice
(so the global batch does not depend on the number of processes); L_simple
(weighted by min-SNR-gamma with `--loss-weight min-snr`), the bound or the hybrid
loss; gradients averaged over the processes by DDP, clipped to global norm
`--grad-clip`; Adam (0.9, `--adam-beta2`, 1e-8) at the rate of step s (1-based)
lr min(1, s / warmup), then constant or a half cosine down to 0 at the last step
(`--lr-schedule`); the EMA of the weights updated after every step, update n
(0-based) with the decay min(decay, (1 + n) / (10 + n)) under `--ema-warmup`;
with `--zero-init`, the UNet's branch outputs zeroed at the start. The random
streams are torch's, not the engine's, so a run here and `ddpm train` with the
same flags reach the same kind of model, not the same weights.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import twin

# What each preset of `ddpm train` (TrainConfig::preset) sets, as (UNet, run) values
# over twin.unet_config's and twin.train_config's defaults, which are the course's.
# A copy: tests/torch_twin.rs (`the_twin_s_presets_are_the_program_s`) holds it equal.
PRESETS = {
    "course": ({}, {}),
    "quick": (
        dict(base_channels=16, channel_mults=[1, 1, 2], num_res_blocks=1),
        dict(schedule="cosine", lr=2e-3, warmup=100, lr_schedule="cosine", loss_weight="min-snr",
             timestep_sampling="logit-normal", ema_decay=0.995, ema_warmup=True, steps=2700),
    ),
}
# Flag (argparse name) -> config key, for the UNet and the MLP; the run's flags are its keys.
UNET_FLAGS = dict(base_channels="base_channels", channel_mults="channel_mults", res_blocks="num_res_blocks",
                  attention_resolutions="attention_resolutions", groups="groups")
MLP_FLAGS = dict(hidden="hidden_dim", depth="depth")
RUN_FLAGS = ["schedule", "timesteps", "loss", "hybrid_lambda", "variance", "prediction", "batch", "lr", "warmup",
             "lr_schedule", "loss_weight", "min_snr_gamma", "timestep_sampling", "grad_clip", "adam_beta2",
             "ema_decay", "ema_warmup", "zero_init", "steps", "seed", "checkpoint_every"]


def ints(text):
    """Comma-separated integers; `none` (as `ddpm train --attention-resolutions`
    takes it) is the empty list."""
    return [] if text.strip() == "none" else [int(v) for v in text.split(",") if v.strip()]


def boolean(text):
    """A bool flag's value, spelt `true` or `false` as `ddpm train` takes it."""
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == "true"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder; the checkpoint is <out>/checkpoint.safetensors (torchrun claims --run)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="course", help="starting values of every flag below (default: course)")
    p.add_argument("--model", choices=["unet", "mlp"], default="unet")
    # From here to --checkpoint-every, a flag not given is None: its preset's value.
    p.add_argument("--base-channels", type=int)
    p.add_argument("--channel-mults", type=ints, help="comma-separated, e.g. 1,2,2")
    p.add_argument("--res-blocks", type=int, help="UNet residual blocks a level on the way down (one more on the way up)")
    p.add_argument("--attention-resolutions", type=ints, help="UNet: sides of the levels with attention, e.g. 7, or none")
    p.add_argument("--groups", type=int)
    p.add_argument("--hidden", type=int, help="MLP width")
    p.add_argument("--depth", type=int, help="MLP hidden layers")
    p.add_argument("--schedule", choices=["linear", "cosine"])
    p.add_argument("--timesteps", type=int)
    p.add_argument("--loss", choices=["simple", "vlb", "hybrid"])
    p.add_argument("--hybrid-lambda", type=float)
    p.add_argument("--variance", choices=["fixed-large", "fixed-small"])
    p.add_argument("--prediction", choices=["eps", "x0", "v"])
    p.add_argument("--batch", type=int, help="global batch, over all processes")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup", type=int, help="steps of linear warmup")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], help="the rate after the warmup")
    p.add_argument("--loss-weight", choices=["uniform", "min-snr"], help="weight of each timestep's error in L_simple")
    p.add_argument("--min-snr-gamma", type=float, help="min-SNR: the SNR above which a timestep's weight stops growing")
    p.add_argument("--timestep-sampling", choices=["uniform", "stratified", "logit-normal"])
    p.add_argument("--grad-clip", type=float, help="0 for none")
    p.add_argument("--adam-beta2", type=float)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--ema-warmup", type=boolean, metavar="true|false", help="decay min(decay, (1 + n) / (10 + n)) at update n")
    p.add_argument("--zero-init", type=boolean, metavar="true|false", help="UNet: zero the last layer of every branch and the output conv")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--data", default=None, help="MNIST folder (default: the project's data/mnist)")
    return p.parse_args()


def run_config(args):
    """The run config in the engine's JSON form (src/run/config.rs): the preset's
    values, the flags given over them, checked as `ddpm train` checks them."""
    unet_preset, run_preset = PRESETS[args.preset]
    given = lambda flags: {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}
    unet, mlp = given(UNET_FLAGS), given(MLP_FLAGS)
    if args.model == "unet":
        if mlp:
            raise SystemExit("--hidden/--depth set the MLP; the model is the UNet (use --model mlp)")
        model = twin.unet_config(**{**unet_preset, **unet})
    else:
        if unet:
            raise SystemExit("--base-channels/--channel-mults/--res-blocks/... set the UNet; the model is the MLP (use --model unet)")
        model = twin.mlp_config(**mlp)
    run = {**run_preset, **{flag: getattr(args, flag) for flag in RUN_FLAGS if getattr(args, flag) is not None}}
    config = twin.train_config(model, **run)
    for flag, decay in (("--adam-beta2", config["adam_beta2"]), ("--ema-decay", config["ema_decay"])):
        if not 0.0 <= decay < 1.0:
            raise SystemExit(f"{flag} must be in [0, 1), got {decay}")
    if not (config["min_snr_gamma"] > 0.0 and math.isfinite(config["min_snr_gamma"])):
        raise SystemExit(f"--min-snr-gamma must be a positive number, got {config['min_snr_gamma']}")
    if args.model == "unet" and model["num_res_blocks"] < 1:
        raise SystemExit(f"--res-blocks must be at least 1, got {model['num_res_blocks']}")
    if args.model == "mlp" and config["zero_init"]:
        raise SystemExit("--zero-init zeroes the UNet's residual branches; the MLP has none (use --zero-init false)")
    return config


def lr_at(config, step):
    """The learning rate of update `step` (1-based; TrainConfig::lr_at with
    nn::LinearWarmup and nn::WarmupCosine): lr min(1, step / warmup), and after
    the warmup, with the cosine schedule, lr (1 + cos(pi p)) / 2 where
    p = min(1, (step - warmup) / (steps - warmup))."""
    lr, warmup, total = config["lr"], config["warmup"], config["steps"]
    warm = lr if warmup == 0 else lr * min(step / warmup, 1.0)
    if config["lr_schedule"] == "constant" or step <= warmup or total <= warmup:
        return warm
    progress = min((step - warmup) / (total - warmup), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(config, n):
    """The decay of EMA update n (0-based; nn::Ema::current_decay): `ema_decay`, or
    with the warm-up min(ema_decay, (1 + n) / (10 + n)) (TensorFlow's
    ExponentialMovingAverage with num_updates)."""
    decay = config["ema_decay"]
    return min(decay, (1.0 + n) / (10.0 + n)) if config["ema_warmup"] else decay


def draw_timesteps(sampling, num_timesteps, batch, generator):
    """`batch` code timesteps in 0..T-1 (ddpm::TimestepSampling::draw,
    crates/ddpm/src/loss.rs): `uniform` each uniform; `stratified` t_i =
    floor(T (u + i) / B) for one u ~ U[0, 1), one in each of B equal strata;
    `logit-normal` each floor(T sigmoid(z)), z ~ N(0, 1); in float64, capped at T - 1."""
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, (batch,), generator=generator)
    if sampling == "stratified":
        u = torch.rand((), dtype=torch.float64, generator=generator)
        t = torch.floor(num_timesteps * (u + torch.arange(batch, dtype=torch.float64)) / batch)
    else:
        z = torch.randn(batch, dtype=torch.float64, generator=generator)
        t = torch.floor(num_timesteps / (1.0 + torch.exp(-z)))
    return t.long().clamp(max=num_timesteps - 1)


class EpochOrder:
    """As `ddpm train`: example k of the run (k = step * batch + j) is perm_e[k mod N]
    with e = k // N and perm_e a shuffle seeded by (seed, e); every rank computes the
    same permutations and takes its own slice of each global batch."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch, self.perm = n, seed, None, None

    def indices(self, start, count):
        out = []
        for k in range(start, start + count):
            epoch = k // self.n
            if epoch != self.epoch:
                self.epoch = epoch
                self.perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            out.append(int(self.perm[k % self.n]))
        return torch.tensor(out)


def main():
    args = parse_args()
    config = run_config(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        backend, rank, world = "none", 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    batch, steps, seed = config["batch"], config["steps"], config["seed"]
    if batch % world != 0:
        raise SystemExit(f"--batch {batch} does not split evenly over {world} processes")
    per_rank = batch // world

    # Same seed on every rank: the processes start from the same weights (DDP
    # also broadcasts rank 0's), and each draws its own share of the data below.
    torch.manual_seed(seed)
    model = twin.build_model(config["model"])
    if config["zero_init"]:
        model.zero_branch_outputs()
    model = model.to(device)
    diffusion = twin.Diffusion.from_config(config)
    images, _ = twin.mnist("train", args.data)
    if config["model"]["kind"] == "mlp":
        images = images.reshape(len(images), -1)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, config["adam_beta2"]), eps=1e-8, weight_decay=0.0)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        print(f"preset {args.preset}, backend {backend}, {world} process(es), {per_rank} examples each, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters")
    path = os.path.join(args.out, "checkpoint.safetensors")
    order = EpochOrder(len(images), seed)
    # The timesteps and the noise of the global batch come from one stream, the
    # same on every rank, each rank taking its slice as it does of the images: the
    # slices together are one draw of the sampler (one timestep per stratum of the
    # whole batch when stratified), and a step sees the same global batch whatever
    # the number of processes.
    batch_generator = torch.Generator().manual_seed(seed * 1_000_003)
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    max_norm = config["grad_clip"] if config["grad_clip"] > 0 else float("inf")
    started = time.time()
    for step in range(steps):
        lr = lr_at(config, step + 1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # This rank's slice of the global batch of step `step`.
        indices = order.indices(step * batch + rank * per_rank, per_rank)
        x_start = images[indices].to(device)
        t = draw_timesteps(config["timestep_sampling"], config["timesteps"], batch, batch_generator)[mine].to(device)
        noise = torch.randn((batch, *x_start.shape[1:]), generator=batch_generator)[mine].to(device)
        loss = diffusion.training_loss(ddp, x_start, t, noise, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the processes here
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if not torch.isfinite(loss) or not torch.isfinite(grad_norm):
            raise SystemExit(f"diverged at step {step + 1}: loss {loss.item()}, gradient norm {grad_norm.item()}")
        optimizer.step()
        decay = ema_decay_at(config, step)  # one update a step: update n is step n
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1.0 - decay)
        done = step + 1
        if distributed:
            # The loss printed is the global batch's: the mean of the ranks' means.
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= world
        if rank == 0 and (done % 50 == 0 or done == steps):
            print(f"step {done}/{steps}  loss {loss.item():.4f}  lr {lr:.2e}  grad-norm {grad_norm.item():.3f}  {done / (time.time() - started):.2f} steps/s", flush=True)
        if rank == 0 and (done % config["checkpoint_every"] == 0 or done == steps):
            twin.save_checkpoint(path, model, ema, config, done, time.time() - started, done)
    if rank == 0:
        print(f"done: {steps} steps in {time.time() - started:.1f} s -> {path}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Train the twin of the course UNet (or the MLP) with `ddpm train`'s recipe, on
as many processes as `torchrun` starts, with DistributedDataParallel: NCCL on
GPUs, gloo on CPUs. The checkpoint it writes opens in `ddpm info / sample / eval
/ nll` (model and EMA weights, config and step in the metadata).

    torchrun --nproc_per_node 2 benches/torch/train.py --out runs/torch --steps 300
    python benches/torch/train.py --out runs/torch --steps 300        # one process

The recipe is Algorithm 1 of Ho et al. as `ddpm train` runs it (src/train.rs):
a global batch of `--batch` examples split evenly over the processes; t uniform
in 0..T-1; L_simple, the bound or the hybrid loss; gradients averaged over the
processes by DDP, clipped to global norm `--grad-clip`; Adam (0.9, 0.999, 1e-8)
with the learning rate warmed up linearly over `--warmup` steps; the EMA of the
weights updated after every step. The random streams are torch's, not the
engine's, so a run here and `ddpm train` with the same flags reach the same
kind of model, not the same weights.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import twin


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder; the checkpoint is <out>/checkpoint.safetensors (torchrun claims --run)")
    p.add_argument("--model", choices=["unet", "mlp"], default="unet")
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--channel-mults", default="1,2,2")
    p.add_argument("--attention-resolutions", default="7")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024, help="MLP width")
    p.add_argument("--depth", type=int, default=3, help="MLP hidden layers")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear")
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--loss", choices=["simple", "vlb", "hybrid"], default="simple")
    p.add_argument("--hybrid-lambda", type=float, default=0.001)
    p.add_argument("--variance", choices=["fixed-large", "fixed-small"], default="fixed-large")
    p.add_argument("--prediction", choices=["eps", "x0", "v"], default="eps")
    p.add_argument("--batch", type=int, default=64, help="global batch, over all processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 for none")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--data", default=None, help="MNIST folder (default: the project's data/mnist)")
    return p.parse_args()


def ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def run_config(args):
    """The run config in the engine's JSON form (src/config.rs)."""
    if args.model == "unet":
        model = twin.unet_config(base_channels=args.base_channels, channel_mults=ints(args.channel_mults),
                                 attention_resolutions=ints(args.attention_resolutions), groups=args.groups)
    else:
        model = twin.mlp_config(hidden_dim=args.hidden, depth=args.depth)
    return twin.train_config(
        model, schedule=args.schedule, timesteps=args.timesteps, loss=args.loss, hybrid_lambda=args.hybrid_lambda,
        variance=args.variance, prediction=args.prediction, batch=args.batch, lr=args.lr, warmup=args.warmup,
        grad_clip=args.grad_clip, ema_decay=args.ema_decay, steps=args.steps, seed=args.seed,
        checkpoint_every=args.checkpoint_every)


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
    if args.batch % world != 0:
        raise SystemExit(f"--batch {args.batch} does not split evenly over {world} processes")
    per_rank = args.batch // world

    config = run_config(args)
    # Same seed on every rank: the processes start from the same weights (DDP
    # also broadcasts rank 0's), and each draws its own share of the data below.
    torch.manual_seed(args.seed)
    model = twin.build_model(config["model"]).to(device)
    diffusion = twin.Diffusion.from_config(config)
    images, _ = twin.mnist("train", args.data)
    if config["model"]["kind"] == "mlp":
        images = images.reshape(len(images), -1)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        print(f"backend {backend}, {world} process(es), {per_rank} examples each, {sum(p.numel() for p in model.parameters()):,} parameters")
    path = os.path.join(args.out, "checkpoint.safetensors")
    order = EpochOrder(len(images), args.seed)
    # One generator per rank for t and noise: the shares differ.
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + rank)
    started = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup > 0 else args.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        # This rank's slice of the global batch of step `step`.
        indices = order.indices(step * args.batch + rank * per_rank, per_rank)
        x_start = images[indices].to(device)
        t = torch.randint(0, config["timesteps"], (per_rank,), generator=generator).to(device)
        noise = torch.randn(x_start.shape, generator=generator).to(device)
        loss = diffusion.training_loss(ddp, x_start, t, noise, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the processes here
        max_norm = args.grad_clip if args.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if not torch.isfinite(loss) or not torch.isfinite(grad_norm):
            raise SystemExit(f"diverged at step {step + 1}: loss {loss.item()}, gradient norm {grad_norm.item()}")
        optimizer.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(args.ema_decay).add_(v, alpha=1.0 - args.ema_decay)
        done = step + 1
        if distributed:
            # The loss printed is the global batch's: the mean of the ranks' means.
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= world
        if rank == 0 and (done % 50 == 0 or done == args.steps):
            print(f"step {done}/{args.steps}  loss {loss.item():.4f}  lr {lr:.2e}  grad-norm {grad_norm.item():.3f}  {done / (time.time() - started):.2f} steps/s", flush=True)
        if rank == 0 and (done % args.checkpoint_every == 0 or done == args.steps):
            twin.save_checkpoint(path, model, ema, config, done, time.time() - started, done)
    if rank == 0:
        print(f"done: {args.steps} steps in {time.time() - started:.1f} s -> {path}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""The PyTorch speed yardstick: the work `ddpm bench` times, timed in PyTorch on
the same machine, so the ratios of the README's speed table can be reproduced.

    python benches/torch/yardstick.py             # 2 threads, a table
    python benches/torch/yardstick.py --json      # one JSON object per line

Rows (names and shapes as `ddpm bench` prints them, src/bench/report.rs and
src/bench/step.rs):
- unet_train_step B64: one L_simple step of the course UNet (1,623,169
  parameters) at batch 64, forward + backward + Adam, as `StepBench::train_step`;
- unet_forward B64: one forward pass without a graph;
- unet_quick_train_step B64, unet_quick_forward B64: the same two for the quick
  preset's UNet (16, 16 and 32 channels, one residual block a level, 236,321
  parameters; `TrainConfig::quick_unet`);
- gemm 128x128x128 and 1024x1024x1024: C = A B in float32, GFLOP/s = 2 m k n / s;
- conv3x3_fwd_bwd N64xC..xHxWxK..: conv forward, grad input and grad weight
  (3 x 2 N K C 9 H W flops), stride 1, padding 1.

Every figure is the median of several timed samples after a warm-up; each
sample of a small operation repeats it until it lasts about 20 ms. Timings on a
machine shared with other work are noisy: run it on an idle machine, and run
`ddpm bench` right before or after it.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import twin


def median_seconds(f, samples=7, min_sample_seconds=0.02):
    """The median time of one call of f: each sample repeats it until it lasts
    min_sample_seconds, after one warm-up call."""
    f()
    started, reps = time.perf_counter(), 0
    while time.perf_counter() - started < min_sample_seconds:
        f()
        reps += 1
    reps = max(reps, 1)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        for _ in range(reps):
            f()
        times.append((time.perf_counter() - started) / reps)
    return statistics.median(times)


def unet_flops_forward(model, batch, size=28):
    """2 flops per multiply-add of every conv, linear and attention product (as
    UNet::flops_forward): counted with forward hooks on one pass."""
    flops = [0.0]

    def conv_hook(m, inp, out):
        k, c, kh, kw = m.weight.shape
        flops[0] += 2.0 * out.shape[0] * k * c * kh * kw * out.shape[2] * out.shape[3]

    def linear_hook(m, inp, out):
        flops[0] += 2.0 * out.shape[0] * m.in_features * m.out_features

    def attention_hook(m, inp, out):
        b, c, h, w = out.shape
        flops[0] += 2.0 * 2.0 * b * (h * w) ** 2 * c

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, twin.AttentionBlock):
            hooks.append(m.register_forward_hook(attention_hook))
    with torch.no_grad():
        model(torch.zeros(batch, 1, size, size), torch.zeros(batch, dtype=torch.long))
    for h in hooks:
        h.remove()
    return flops[0]


# The UNets `ddpm bench` times, by the prefix of their rows: the course UNet
# (nn::UNetConfig::default) and the quick preset's (TrainConfig::quick_unet).
UNETS = [
    ("unet", twin.unet_config()),
    ("unet_quick", twin.unet_config(base_channels=16, channel_mults=[1, 1, 2], num_res_blocks=1)),
]


def unet_rows(name, unet_config, batch, reps):
    torch.manual_seed(0)
    model = twin.UNet(unet_config)
    diffusion = twin.Diffusion(twin.linear_betas(1000))
    config = twin.train_config(unet_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_start = torch.rand(batch, 1, 28, 28) * 2 - 1
    noise = torch.randn(batch, 1, 28, 28)
    t = torch.randint(0, 1000, (batch,))

    def train_step():
        loss = diffusion.training_loss(model, x_start, t, noise, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward():
        with torch.no_grad():
            model(x_start, t)

    train_step()
    forward()
    steps, forwards = [], []
    for _ in range(reps):
        started = time.perf_counter()
        train_step()
        steps.append(time.perf_counter() - started)
    for _ in range(reps):
        started = time.perf_counter()
        forward()
        forwards.append(time.perf_counter() - started)
    flops = unet_flops_forward(model, batch)
    step_s, forward_s = statistics.median(steps), statistics.median(forwards)
    params = sum(p.numel() for p in model.parameters())
    yield dict(bench=f"{name}_train_step", shape=f"B{batch}", ms=round(step_s * 1e3, 1), gflops=round(3 * flops / step_s / 1e9, 1), params=params)
    yield dict(bench=f"{name}_forward", shape=f"B{batch}", ms=round(forward_s * 1e3, 1), gflops=round(flops / forward_s / 1e9, 1))


def gemm_rows():
    for n in (128, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        seconds = median_seconds(lambda: torch.mm(a, b, out=out))
        yield dict(bench="gemm", shape=f"{n}x{n}x{n}", gflops=round(2 * n ** 3 / seconds / 1e9, 2))


def conv_rows():
    for c, hw, k in ((32, 28, 32), (64, 14, 64), (64, 7, 64)):
        x = torch.randn(64, c, hw, hw, requires_grad=True)
        weight = torch.randn(k, c, 3, 3, requires_grad=True)
        bias = torch.randn(k, requires_grad=True)
        grad_out = torch.randn(64, k, hw, hw)

        def fwd_bwd():
            out = F.conv2d(x, weight, bias, padding=1)
            torch.autograd.grad(out, (x, weight, bias), grad_out)

        seconds = median_seconds(fwd_bwd)
        flops = 2.0 * 64 * k * c * 9 * hw * hw
        yield dict(bench="conv3x3_fwd_bwd", shape=f"N64xC{c}x{hw}x{hw}xK{k}", gflops=round(3 * flops / seconds / 1e9, 2))


def main():
    p = argparse.ArgumentParser(description="PyTorch timings of the work `ddpm bench` reports")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=5, help="timed UNet steps (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.json:
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; medians")
        print(f"{'bench':<18} {'shape':<20} {'ms':>9} {'GFLOP/s':>9}")
    unets = [unet_rows(name, config, args.batch, args.reps) for name, config in UNETS]
    for rows in (*unets, gemm_rows(), conv_rows()):
        for row in rows:
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                ms = f"{row['ms']:.1f}" if "ms" in row else ""
                print(f"{row['bench']:<18} {row['shape']:<20} {ms:>9} {row['gflops']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()

"""A second judge of the samples: a PyTorch MNIST classifier of another
architecture and training than `ddpm eval`'s own (crates/nn/src/models/classifier.rs),
scoring the same samples with the same three numbers, as a cross-check.

    python benches/torch/judge.py train --out runs/judge.safetensors     # 2 epochs
    ddpm eval --checkpoint data/course-unet.safetensors --samples 1000 --samples-out runs/samples.safetensors
    python benches/torch/judge.py score runs/samples.safetensors --judge runs/judge.safetensors
    python benches/torch/judge.py score --real test --count 1000 --judge runs/judge.safetensors   # a ceiling

The exchange format is the file `ddpm eval --samples-out` writes: safetensors
with one tensor `samples`, float32 [N, 1, 28, 28], pixels in [-1, 1]
(p / 127.5 - 1), and metadata naming the checkpoint, step, sampler and seed.

Architecture (ours: four plain 3x3 convs with SiLU, two of stride 2, a dense
layer of 128 features): a VGG-style net with batch norm, ReLU and max pooling,
global average pooling, and a 128-feature layer with dropout.

    h = pool(BNReLU(conv(BNReLU(conv(x, 1 -> 16)), 16 -> 16)))      [B, 16, 14, 14]
    h = pool(BNReLU(conv(BNReLU(conv(h, 16 -> 32)), 32 -> 32)))     [B, 32, 7, 7]
    h = mean_hw(BNReLU(conv(h, 32 -> 64)))                         [B, 64]
    f = ReLU(Linear(h, 128))                                        [B, 128] the features
    logits = Linear(dropout(f), 10)

Trained with SGD (momentum 0.9, Nesterov, weight decay 5e-4), one-cycle
learning rate, random shifts of up to 2 pixels; ours with AdamW, warmup and
linear decay.

Numbers, as `ddpm eval` computes them (src/eval.rs):
- recognisable: the fraction with top probability >= 0.9 (binomial standard error);
- class entropy: entropy in nats of the predicted classes' histogram (delta-method error);
- FID: Frechet distance between Gaussians fitted to the 128 features of the
  samples and of the 10,000 test images (bootstrap error, 20 resamples);
- FID floor: the same for N training images drawn at random (seeded).
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import twin

CONFIDENCE = 0.9
BOOTSTRAP_RESAMPLES = 20


def bn_relu_conv(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Judge(nn.Module):
    """x [B, 1, 28, 28] in [-1, 1] -> (logits [B, 10], features [B, 128])."""

    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(bn_relu_conv(1, 16), bn_relu_conv(16, 16), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(bn_relu_conv(16, 32), bn_relu_conv(32, 32), nn.MaxPool2d(2))
        self.block3 = bn_relu_conv(32, 64)
        self.features = nn.Linear(64, 128)
        self.dropout = nn.Dropout(0.3)
        self.output = nn.Linear(128, 10)

    def forward(self, x):
        h = self.block3(self.block2(self.block1(x))).mean(dim=(2, 3))
        f = F.relu(self.features(h))
        return self.output(self.dropout(f)), f


def shift(x, generator, max_shift=2):
    """Each image moved by up to max_shift pixels in x and y (zero padding = -1)."""
    b = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(28)[None, :]  # [B, 28]
    cols = dx[:, None] + torch.arange(28)[None, :]
    return padded[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


@torch.no_grad()
def evaluate(model, images, batch=1000):
    """(probabilities [N, 10], features [N, 128]) in evaluation mode."""
    model.eval()
    probs, feats = [], []
    for start in range(0, len(images), batch):
        logits, f = model(images[start:start + batch])
        probs.append(torch.softmax(logits, dim=1))
        feats.append(f)
    return torch.cat(probs), torch.cat(feats)


def train(args):
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    images, labels = twin.mnist("train")
    test_images, test_labels = twin.mnist("test")
    model = Judge()
    steps_per_epoch = len(images) // args.batch
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    started = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * args.batch:(step + 1) * args.batch]
            logits, _ = model(shift(images[idx], generator))
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % 100 == 0:
                print(f"  epoch {epoch + 1} step {step + 1}/{steps_per_epoch}: loss {loss.item():.4f} ({time.time() - started:.0f} s)", flush=True)
        probs, _ = evaluate(model, test_images)
        accuracy = (probs.argmax(1) == test_labels).float().mean().item()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, test accuracy {100 * accuracy:.2f}% ({time.time() - started:.0f} s)", flush=True)
    metadata = {"format": "second-judge-1", "test_accuracy": f"{accuracy:.4f}", "epochs": str(args.epochs), "seed": str(args.seed)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out, metadata=metadata)
    print(f"-> {args.out}")


def load_judge(path):
    model = Judge()
    model.load_state_dict(load_file(path), strict=True)
    return model.eval()


def gaussian(features):
    f = features.double().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(a, b):
    """|mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^(1/2) S_2 S_1^(1/2))^(1/2)), via
    eigendecompositions of symmetric PSD matrices (as src/metrics.rs)."""
    (mu1, s1), (mu2, s2) = a, b
    w, q = np.linalg.eigh(s1)
    root1 = (q * np.sqrt(np.clip(w, 0, None))) @ q.T
    middle = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def fid_with_stderr(features, reference, seed):
    fid = frechet_distance(gaussian(features), reference)
    rng = np.random.default_rng(seed)
    n = len(features)
    replicates = [frechet_distance(gaussian(features[rng.integers(0, n, n)]), reference) for _ in range(BOOTSTRAP_RESAMPLES)]
    return fid, float(np.std(replicates, ddof=1))


def entropy_with_stderr(classes):
    p = np.bincount(classes, minlength=10) / len(classes)
    p = p[p > 0]
    h = float(-(p * np.log(p)).sum())
    return h, math.sqrt(max(float((p * np.log(p) ** 2).sum()) - h * h, 0.0) / len(classes))


def score(args):
    model = load_judge(args.judge)
    test_images, _ = twin.mnist("test")
    train_images, _ = twin.mnist("train")
    rng = np.random.default_rng(args.seed)
    if args.real:
        pool = test_images if args.real == "test" else train_images
        samples = pool[torch.from_numpy(rng.choice(len(pool), args.count, replace=False))]
        source = f"{args.count} random {args.real} images (seed {args.seed})"
    else:
        samples = load_file(args.samples)["samples"].float()
        source = args.samples
    n = len(samples)
    _, test_features = evaluate(model, test_images)
    reference = gaussian(test_features)
    probs, features = evaluate(model, samples)
    confidence, classes = probs.max(dim=1)
    recognisable = (confidence >= CONFIDENCE).float().mean().item()
    entropy, entropy_stderr = entropy_with_stderr(classes.numpy())
    fid, fid_stderr = fid_with_stderr(features, reference, args.seed)
    floor_images = train_images[torch.from_numpy(np.random.default_rng(args.seed + 1).choice(len(train_images), n, replace=False))]
    floor, floor_stderr = fid_with_stderr(evaluate(model, floor_images)[1], reference, args.seed + 1)
    report = dict(
        samples=n, recognisable=recognisable, recognisable_stderr=math.sqrt(recognisable * (1 - recognisable) / n),
        class_entropy=entropy, class_entropy_stderr=entropy_stderr, fid=fid, fid_stderr=fid_stderr,
        fid_floor=floor, fid_floor_stderr=floor_stderr,
    )
    if args.json:
        print(json.dumps(report))
        return
    print(f"second judge on {source}: {n} samples (+- one standard error)")
    print(f"  recognisable (confidence >= {CONFIDENCE})  {100 * recognisable:7.1f}% +- {100 * report['recognisable_stderr']:.1f}")
    print(f"  class entropy (ln 10 = {math.log(10):.3f})      {entropy:7.3f} +- {entropy_stderr:.3f}")
    print(f"  FID (second judge's features)       {fid:7.2f} +- {fid_stderr:.2f}")
    print(f"  FID floor (train vs test)           {floor:7.2f} +- {floor_stderr:.2f}")


def main():
    p = argparse.ArgumentParser(description="A second MNIST judge in PyTorch")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the judge on MNIST")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("score", help="score samples (or real digits) with a trained judge")
    s.add_argument("samples", nargs="?", help="a file written by `ddpm eval --samples-out`")
    s.add_argument("--real", choices=["train", "test"], help="score random real digits instead: a ceiling")
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--judge", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "train":
        train(args)
    else:
        if not args.samples and not args.real:
            p.error("score needs a samples file or --real")
        score(args)


if __name__ == "__main__":
    main()

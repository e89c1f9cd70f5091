"""Our speed against PyTorch's on this machine: `ddpm bench --json` and
`yardstick.py --json` alternated for a few rounds, then the ratio table of the
README's "Speed" with issue #14's targets.

    python benches/torch/compare.py                      # 3 rounds, target/release/ddpm
    python benches/torch/compare.py --rounds 5 --ddpm path/to/ddpm
    python benches/torch/compare.py --saved ours-1.json torch-1.json ours-2.json torch-2.json

Build the program first (`cargo build --release`). Each round runs our bench, then
PyTorch's, each in its own process, so a slow stretch of a shared machine spoils one
round, not one side: the ratios are taken pairwise, round by round, and the table
gives each round's ratio rather than a ratio of medians. `--keep DIR` saves each
round's two JSON outputs; `--saved` reads such pairs instead of running anything.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CONV_SHAPES = ["N64xC32x28x28xK32", "N64xC64x14x14xK64", "N64xC64x7x7xK64"]

# (label, key of the row, field, how the ratio is taken, target, the target's sense).
# "time": ours / PyTorch of a time (from ms, or from GFLOP/s of the same work as
# PyTorch's GFLOP/s / ours), so under 1 means ours is faster; "speed": ours /
# PyTorch of GFLOP/s, so over 1 means ours is faster. Targets: issue #14; the
# quick UNet's rows have none.
ROWS = [
    ("course UNet training step, batch 64", ("unet_train_step", "B64"), "ms", "time", 0.8, "<="),
    ("course UNet forward, batch 64", ("unet_forward", "B64"), "ms", "time", 0.8, "<="),
    ("GEMM 1024^3", ("gemm", "1024x1024x1024"), "gflops", "speed", 0.95, ">="),
    ("GEMM 128^3", ("gemm", "128x128x128"), "gflops", "speed", 1.0, ">="),
] + [
    (f"conv 3x3 fwd+bwd {shape}", ("conv3x3_fwd_bwd", shape), "gflops", "time", 1.0, "<=")
    for shape in CONV_SHAPES
] + [
    ("quick UNet training step, batch 64", ("unet_quick_train_step", "B64"), "ms", "time", None, None),
    ("quick UNet forward, batch 64", ("unet_quick_forward", "B64"), "ms", "time", None, None),
]
PEAK_MEMORY_TARGET_MB = 600


def parse(text, source):
    """The JSON lines of one run, keyed by (bench, shape)."""
    rows = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
            rows[(row["bench"], row["shape"])] = row
        except (json.JSONDecodeError, KeyError) as e:
            sys.exit(f"compare.py: {source}, line {number}: not a bench row ({e}): {line[:80]}")
    return rows


def run(command, source):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare.py: {source} failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout


def ratio(ours, torch, field, kind):
    """ours / PyTorch as a time (kind "time") or as a speed ("speed")."""
    if field == "ms":
        time = ours / torch
    else:  # GFLOP/s of the same work: the time ratio is the inverse
        time = torch / ours
    return time if kind == "time" else 1.0 / time


def meets(value, target, sense):
    return value <= target if sense == "<=" else value >= target


def span(values, digits=1):
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def table(rounds):
    """The markdown table of `rounds`, a list of (ours, torch) parsed runs."""
    lines = [
        "| work | ours | PyTorch | ratio, round by round | target | rounds meeting it |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, field, kind, target, sense in ROWS:
        present = [(o[key], t[key]) for o, t in rounds if key in o and key in t]
        unit = "ms" if field == "ms" else "GFLOP/s"
        if len(present) < len(rounds) and target is None:
            # A row without a target, missing on PyTorch's side (outputs of a
            # yardstick.py before it timed that row): ours alone, if any.
            ours = [o[key][field] for o, _ in rounds if key in o]
            if ours:
                lines.append(f"| {label} | {span(ours)} {unit} | | | | |")
            continue
        if len(present) < len(rounds):
            sys.exit(f"compare.py: the row {key[0]} {key[1]} is missing from a round")
        ours = [o[field] for o, _ in present]
        torch = [t[field] for _, t in present]
        ratios = [ratio(o, t, field, kind) for o, t in zip(ours, torch)]
        goal = "" if target is None else f"{sense} {target}"
        met = "" if target is None else f"{sum(meets(r, target, sense) for r in ratios)} of {len(ratios)}"
        lines.append(
            f"| {label} | {span(ours)} {unit} | {span(torch)} {unit} | {kind} " + " / ".join(f"{r:.2f}" for r in ratios) + f" | {goal} | {met} |"
        )
    memory = [o[("unet_train_step", "B64")].get("peak_rss_mb") for o, _ in rounds]
    if all(m is not None for m in memory):
        ok = sum(m <= PEAK_MEMORY_TARGET_MB for m in memory)
        lines.append(f"| peak memory of a course step | {span(memory, 0)} MB | | | <= {PEAK_MEMORY_TARGET_MB} MB | {ok} of {len(memory)} |")
    peaks = [row["gflops"] for o, _ in rounds for (bench, _), row in o.items() if bench == "fma_peak"]
    if peaks:
        lines.append(f"\nFMA peak measured by `ddpm bench` in these rounds: {span(peaks)} GFLOP/s.")
    tiles = [row["gflops"] for o, _ in rounds for (bench, _), row in o.items() if bench == "gemm_microkernel"]
    if tiles:
        lines.append(f"Our GEMM's register tile alone, its panels in cache (`gemm_microkernel`): {span(tiles)} GFLOP/s.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (ddpm uses every core)")
    p.add_argument("--ddpm", default=os.path.join(ROOT, "target", "release", "ddpm"))
    p.add_argument("--keep", metavar="DIR", help="save each round's ours-N.json and torch-N.json here")
    p.add_argument("--saved", nargs="+", metavar="FILE", help="pairs of saved outputs: ours-1 torch-1 ours-2 torch-2 ...")
    args = p.parse_args()

    rounds = []
    if args.saved:
        if len(args.saved) % 2:
            sys.exit("compare.py: --saved takes pairs of files (ours, PyTorch)")
        for ours_file, torch_file in zip(args.saved[::2], args.saved[1::2]):
            with open(ours_file) as f:
                ours = parse(f.read(), ours_file)
            with open(torch_file) as f:
                torch = parse(f.read(), torch_file)
            rounds.append((ours, torch))
    else:
        if args.rounds < 1:
            sys.exit("compare.py: --rounds must be at least 1")
        if not os.access(args.ddpm, os.X_OK):
            sys.exit(f"compare.py: {args.ddpm} is not an executable; run `cargo build --release` or pass --ddpm")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
        yardstick = [sys.executable, os.path.join(HERE, "yardstick.py"), "--json", "--threads", str(args.threads)]
        for n in range(1, args.rounds + 1):
            print(f"round {n} of {args.rounds}: ddpm bench, then yardstick.py", file=sys.stderr, flush=True)
            ours_text = run([args.ddpm, "bench", "--json"], "ddpm bench")
            torch_text = run(yardstick, "yardstick.py")
            if args.keep:
                for name, text in ((f"ours-{n}.json", ours_text), (f"torch-{n}.json", torch_text)):
                    with open(os.path.join(args.keep, name), "w") as f:
                        f.write(text)
            rounds.append((parse(ours_text, "ddpm bench"), parse(torch_text, "yardstick.py")))
    print(table(rounds))


if __name__ == "__main__":
    main()

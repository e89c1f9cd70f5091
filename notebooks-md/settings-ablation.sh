#!/bin/sh
# The quick preset's remaining settings, one change at a time (chapter 10, "The
# settings the recipe does not name"): each row trains the preset as it ships
# (1,400 steps, the cosine noise schedule) with one flag changed, then scores
# 1,000 DDIM-50 samples with eta 1 (`ddpm eval`'s default). The width rows train
# for the steps that take the preset's time at that width (measured on the AMD
# EPYC of session 23; see the chapter). Prints the Markdown table of chapter 10.
# About 3 minutes a row on the AMD EPYC (2 cores), 6 minutes on the slower Intel
# Xeon, 12 rows.
#
#   sh notebooks-md/settings-ablation.sh          runs into runs/settings-*/ (kept, reused)
set -eu
cd "$(dirname "$0")/.."
ddpm() { cargo run --release --quiet -- "$@"; }

row() {
    name=$1
    shift
    if [ ! -f "runs/settings-$name/samples.png" ]; then
        rm -rf "runs/settings-$name"
        ddpm train --preset quick --quiet --run "runs/settings-$name" "$@" >&2
    fi
    ddpm eval --checkpoint "runs/settings-$name" --json |
        python3 -c 'import json, sys
r = json.load(sys.stdin)
print("| %s | `%s` | %.1f%% | %.3f | %.1f |" % (sys.argv[1], " ".join(sys.argv[2:]) or "(the preset)", 100 * r["recognisable"], r["class_entropy"], r["fid"]))' "$name" "$@"
}

echo "| row | flags | recognisable | class entropy | MNIST-FID |"
echo "|---|---|---|---|---|"
row preset
row seed-1 --seed 1
row ema-0.99 --ema-decay 0.99
row ema-0.998 --ema-decay 0.998
row min-snr-2 --min-snr-gamma 2
row min-snr-10 --min-snr-gamma 10
row warmup-25 --warmup 25
row no-grad-clip --grad-clip 0
row no-grad-clip-seed-1 --grad-clip 0 --seed 1
row width-8 --base-channels 8 --steps 2400
row width-24 --base-channels 24 --steps 800
row width-32 --base-channels 32 --steps 550

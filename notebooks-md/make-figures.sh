#!/bin/sh
# Regenerates every figure under notebooks-md/img from the code, never by hand.
#
#   sh notebooks-md/make-figures.sh        the fast figures (about 8 minutes on 2 cores):
#                                          noising, schedules, the shipped course UNet's
#                                          samples, reverse trajectory and per-timestep bound
#   sh notebooks-md/make-figures.sh all    also the runs behind chapters 8 and 10 (the
#                                          quick preset twice and the ablation, under an hour)
set -eu
cd "$(dirname "$0")/.."
img=notebooks-md/img
ddpm() { cargo run --release --quiet -- "$@"; }

ddpm forward --out "$img"                                          # forward.png, schedule.png
ddpm sample --checkpoint data/course-unet.safetensors \
    --trajectory "$img/trajectory.png" --out "$img/course-samples.png"
ddpm nll --checkpoint data/course-unet.safetensors --images 128 --out "$img"  # nll_per_timestep.png/.csv

if [ "${1:-}" = all ]; then
    rm -rf runs/quick-figures runs/quick-figures-ema0999     # this script's own run folders
    ddpm train --preset quick --run runs/quick-figures --quiet
    cp runs/quick-figures/loss.png "$img/quick-loss.png"
    cp runs/quick-figures/samples.png "$img/quick-samples.png"
    # The paper's recipe (linear noise schedule, constant rate, no EMA warm-up, unweighted
    # L_simple, uniform timesteps) with decay 0.999, on the paper's layout (two blocks a level, 32
    # channels at 14 x 14).
    ddpm train --preset quick --steps 1000 --channel-mults 1,2,2 --ema-decay 0.999 --ema-warmup false --lr 1e-3 --lr-schedule constant \
        --loss-weight uniform --res-blocks 2 --schedule linear --timestep-sampling uniform --run runs/quick-figures-ema0999 --quiet
    cp runs/quick-figures-ema0999/samples.png "$img/quick-samples-ema0999.png"
    ddpm ablation --out runs/ablation
    for row in simple-beta simple-beta-tilde vlb-beta vlb-beta-tilde; do
        cp "runs/ablation/$row.png" "$img/ablation-$row.png"
    done
fi

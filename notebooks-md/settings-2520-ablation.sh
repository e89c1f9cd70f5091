#!/bin/sh
# Three settings tried on the quick preset of session 38 (the 1, 1, 2 UNet, 2,520
# steps, uniform timesteps; chapter 10, "Three more settings at 2,520 steps"): the
# peak learning rate either side of 2e-3, logit-normal timesteps instead of uniform
# ones (six training seeds, against the preset's: seeds 0-3 in layout-ablation.sh,
# 4 and 5 here; logit-normal is the preset's since session 39), and no attention after the 7 x 7 level's blocks, for
# the 2,700 steps that take the preset's time without it (Intel Xeon model 167,
# session 39: 8.62-8.72 steps a second against 7.91-8.25; four seeds). Each run is
# scored on 1,000 DDIM-50 samples with eta 1 (`ddpm eval`'s default). Prints the
# Markdown table of chapter 10. 5 to 6 minutes a row on 2 cores (AVX-512), 14 rows.
#
#   sh notebooks-md/settings-2520-ablation.sh     runs into runs/settings2520-*/ (kept, reused)
set -eu
cd "$(dirname "$0")/.."
. notebooks-md/ablation-row.sh

row() {
    # Uniform timesteps, session 38's preset, unless the row sets its own.
    ablation_row settings2520 "" "$(unless_set --timestep-sampling uniform "$@")" "$@"
}

ablation_header
row lr-1.5e-3 --lr 1.5e-3
row lr-3e-3 --lr 3e-3
for seed in 0 1 2 3 4 5; do
    row "logit-normal-seed-$seed" --timestep-sampling logit-normal --seed $seed
done
for seed in 4 5; do
    row "uniform-seed-$seed" --seed $seed
done
for seed in 0 1 2 3; do
    row "no-attention-seed-$seed" --attention-resolutions none --steps 2700 --seed $seed
done

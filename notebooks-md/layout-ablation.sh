#!/bin/sh
# Where the quick UNet's channels go (chapter 10, "Where the channels go"): each
# layout trains for the steps that take the 1, 2, 2 layout's 2,000 steps' time on the
# Intel Xeon model 167 (session 38: 7.6 steps a second at 1, 2, 2, 9.6-9.8 at 1, 1, 2,
# 11.2-11.6 at 1, 1, 1, 5.2 at 1, 2, 4, 9.3-9.4 at 8 base channels and 1, 4, 4), then
# scores 1,000 DDIM-50 samples with eta 1 (`ddpm eval`'s default). The preset (1, 1, 2
# for 2,520 steps since session 38) and the layout before it run four training seeds;
# Adam's beta2 at 0.99 rides on the layout before it. Prints the Markdown table of
# chapter 10. 4.5 to 6 minutes a row on 2 cores (AVX-512), 15 rows.
#
#   sh notebooks-md/layout-ablation.sh            runs into runs/layout-*/ (kept, reused)
set -eu
cd "$(dirname "$0")/.."
. notebooks-md/ablation-row.sh

row() {
    # Uniform timesteps, the preset's when the table was measured (session 38),
    # unless the row sets its own.
    ablation_row layout "" "$(unless_set --timestep-sampling uniform "$@")" "$@"
}

ablation_header
for seed in 0 1 2 3; do
    row "1-2-2-seed-$seed" --channel-mults 1,2,2 --steps 2000 --seed $seed
    row "1-1-2-seed-$seed" --seed $seed
done
for seed in 0 1 2; do
    row "1-2-2-beta2-seed-$seed" --channel-mults 1,2,2 --steps 2000 --adam-beta2 0.99 --seed $seed
done
row 1-1-2-beta2 --adam-beta2 0.99
row 1-1-1 --channel-mults 1,1,1 --steps 3000
row 1-2-4 --channel-mults 1,2,4 --steps 1430
row 8-1-4-4 --base-channels 8 --channel-mults 1,4,4 --steps 2460

#!/bin/sh
# The quick preset's remaining settings, one change at a time (chapter 10, "The
# settings the recipe does not name"): each row trains the preset as it shipped
# in session 23 (1,400 steps, the cosine noise schedule) with one flag changed, then scores
# 1,000 DDIM-50 samples with eta 1 (`ddpm eval`'s default). The width rows train
# for the steps that take the preset's time at that width (measured on the AMD
# EPYC of session 23; see the chapter). Prints the Markdown table of chapter 10.
# About 3 minutes a row on the AMD EPYC (2 cores), 6 minutes on the slower Intel
# Xeon, 13 rows.
#
#   sh notebooks-md/settings-ablation.sh          runs into runs/settings-*/ (kept, reused)
set -eu
cd "$(dirname "$0")/.."
. notebooks-md/ablation-row.sh

# The preset's length and layout when the table was measured (it has run 1,800 steps
# since session 31, and 2,520 of a UNet with 16 channels at 14 x 14 since session 38),
# unless the row sets its own.
row() {
    ablation_row settings "" "$(unless_set --steps 1400 "$@") $(unless_set --channel-mults 1,2,2 "$@") $(unless_set --timestep-sampling uniform "$@")" "$@"
}

ablation_header
row preset
row seed-1 --seed 1
row ema-0.99 --ema-decay 0.99
row ema-0.998 --ema-decay 0.998
row min-snr-2 --min-snr-gamma 2
row min-snr-10 --min-snr-gamma 10
row warmup-25 --warmup 25
row stratified-t --timestep-sampling stratified
row no-grad-clip --grad-clip 0
row no-grad-clip-seed-1 --grad-clip 0 --seed 1
row width-8 --base-channels 8 --steps 2400
row width-24 --base-channels 24 --steps 800
row width-32 --base-channels 32 --steps 550

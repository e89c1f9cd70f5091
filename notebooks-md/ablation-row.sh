# One row of an ablation table of the quick preset, and the table's header, shared by
# recipe-ablation.sh, settings-ablation.sh, layout-ablation.sh and
# settings-2520-ablation.sh (sourced from the repository's root, not run):
#
#   ablation_row PREFIX "EVAL FLAGS" "TRAIN DEFAULTS" NAME FLAGS...
#
# trains `ddpm train --preset quick TRAIN DEFAULTS FLAGS` into runs/PREFIX-NAME
# unless that run already has its samples.png (a run is kept and reused), then
# scores it with `ddpm eval EVAL FLAGS` and prints the Markdown row
# `| NAME | FLAGS | recognisable | class entropy | MNIST-FID |`. The two quoted
# arguments are word-split (several flags, or none).

ddpm() { cargo run --release --quiet -- "$@"; }

# Prints `FLAG VALUE`, a setting every row of a table trains with, unless the row's
# own flags (the rest of the arguments) set FLAG; then nothing.
unless_set() {
    flag=$1 value=$2
    shift 2
    case " $* " in *" $flag "*) ;; *) echo "$flag $value" ;; esac
}

# The header of the table whose rows `ablation_row` prints.
ablation_header() {
    echo "| row | flags | recognisable | class entropy | MNIST-FID |"
    echo "|---|---|---|---|---|"
}

ablation_row() {
    prefix=$1 eval_flags=$2 train_defaults=$3 name=$4
    shift 4
    run="runs/$prefix-$name"
    if [ ! -f "$run/samples.png" ]; then
        rm -rf "$run"
        ddpm train --preset quick --quiet --run "$run" $train_defaults "$@" >&2
    fi
    ddpm eval --checkpoint "$run" $eval_flags --json |
        python3 -c 'import json, sys
r = json.load(sys.stdin)
print("| %s | `%s` | %.1f%% | %.3f | %.1f |" % (sys.argv[1], " ".join(sys.argv[2:]) or "(the preset)", 100 * r["recognisable"], r["class_entropy"], r["fid"]))' "$name" "$@"
}

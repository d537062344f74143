# Shared by the protocol scripts: argument parsing, per-trainer default configs, the run guard and the train.py call.
# One-run scripts: script.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Whole-protocol scripts: script.sh [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA (datasets folder, default ./data), OUTPUT (default ./output), SHOTS (default 16),
# TRAINER and CONFIG (used when not given as arguments); whole-protocol scripts also read DATASETS and SEEDS.
# PROTOCOL (set by each script) is one of base2new, xd (cross-dataset and domain generalisation), fewshot.

DEFAULT_TRAINER=DualMIPrompt
DEFAULT_SEEDS="1 2 3"
# The 11 datasets of the base-to-new and few-shot benchmarks, in the papers' order.
BENCHMARK_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
# Cross-dataset transfer: the ImageNet model evaluated on the 10 others; domain generalisation: on the 4 variants.
# XD_SOURCE=world runs both protocols on the embedded world instead: the world model evaluated on the suite's other
# datasets (other vocabularies) and on the world's classes drawn in three other styles.
XD_SOURCE=${XD_SOURCE:-imagenet}
case "$XD_SOURCE" in
    world)
        XD_TARGETS="world_shapes world_textures world_counts world_signs"
        DG_TARGETS="world_sketch world_mosaic world_neon" ;;
    imagenet)
        XD_TARGETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
        DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r" ;;
    *)
        echo "error: XD_SOURCE must be imagenet (the default) or world; got '$XD_SOURCE'" >&2
        exit 2 ;;
esac

# default_config TRAINER DATASET PROTOCOL [NAME] -> "CONFIG_NAME CONFIG_FILE learns|evaluates", from the trainer registry (each
# trainer declares its default config per protocol and dataset next to its code: trainers/registry.py). DATASET is
# the dataset the model is trained on (ImageNet for every cross-dataset evaluation); SHOTS is set. A NAME given by
# the user is only checked.
default_config() {
    cached_registry config "$1" "$3" "$2" --shots "${SHOTS:-16}" --name "${4:-}"
}

# cached_registry ARGS...: the trainer registry's answer to ARGS. A launcher sets REGISTRY_CACHE to a file of its own
# launch (scripts/launch.py), where each answer is kept, so that its hundreds of runs start a Python (which imports
# torch: seconds) once per distinct question, not once each. A refused question is never kept.
cached_registry() {
    local key answer
    if [ -z "${REGISTRY_CACHE:-}" ]; then "${PYTHON:-python3}" -m trainers.registry "$@"; return; fi
    key=$(printf '%q ' "$@")
    if [ -f "$REGISTRY_CACHE" ]; then
        answer=$(KEY=$key awk -F '\t' '$1 == ENVIRON["KEY"] { print $2; found = 1; exit } END { exit !found }' \
            "$REGISTRY_CACHE") && { echo "$answer"; return 0; }
    fi
    answer=$("${PYTHON:-python3}" -m trainers.registry "$@") || return
    printf '%s\t%s\n' "$key" "$answer" >> "$REGISTRY_CACHE"
    echo "$answer"
}

# learns_nothing TRAINER: true for the trainers that are only evaluated (zero-shot).
learns_nothing() {
    if [ "$1" = "${TRAINER:-}" ] && [ -n "${TRAINER_LEARNS:-}" ]; then [ "$TRAINER_LEARNS" = evaluates ]; return; fi
    ! "${PYTHON:-python3}" -m trainers.registry learns "$1"
}

# parse_args "$@" for a one-run script. A script whose dataset is fixed sets FIXED_DATASET (its arguments then start
# at SEED); CONFIG_DATASET names the dataset whose default config applies (default: DATASET).
parse_args() {
    POSITIONAL=()
    EXTRA_OPTS=()
    while [ $# -gt 0 ]; do
        if [ "$1" = "--" ]; then shift; EXTRA_OPTS=("$@"); break; fi
        POSITIONAL+=("$1"); shift
    done
    local first="DATASET SEED"
    if [ -n "${FIXED_DATASET:-}" ]; then POSITIONAL=("$FIXED_DATASET" "${POSITIONAL[@]}"); first="SEED"; fi
    if [ ${#POSITIONAL[@]} -lt 2 ]; then
        echo "usage: $0 $first [TRAINER] [CONFIG] [-- KEY VALUE ...]" >&2
        exit 2
    fi
    DATASET=${POSITIONAL[0]}
    SEED=${POSITIONAL[1]}
    TRAINER=${POSITIONAL[2]:-${TRAINER:-$DEFAULT_TRAINER}}
    DATA=${DATA:-./data}
    OUTPUT=${OUTPUT:-output}
    SHOTS=${SHOTS:-16}
    PYTHON=${PYTHON:-python3}
    if ! [[ "$SEED" =~ ^-?[0-9]+$ ]]; then
        echo "error: SEED must be an integer; got '$SEED' (usage: $0 $first [TRAINER] [CONFIG])" >&2
        exit 2
    fi
    if ! [[ "$SHOTS" =~ ^-?[0-9]+$ ]]; then
        echo "error: SHOTS must be an integer; got '$SHOTS'" >&2
        exit 2
    fi
    local found
    found=$(default_config "$TRAINER" "${CONFIG_DATASET:-$DATASET}" "$PROTOCOL" "${POSITIONAL[3]:-${CONFIG:-}}") || exit 2
    read -r CFG CFG_FILE TRAINER_LEARNS <<< "$found"
    check_dataset "$DATASET"
}

check_dataset() {
    if [ ! -f "configs/datasets/$1.yaml" ]; then
        echo "error: unknown dataset '$1': no configs/datasets/$1.yaml (choose from: $(ls configs/datasets | sed 's/.yaml//' | tr '\n' ' '))" >&2
        exit 2
    fi
}

# finished DIR: a run whose results record exists is never redone or overwritten. With PRINT_RUN_DIR=1 the script
# only prints the run's output folder and stops (the launcher asks each run where it writes).
finished() {
    if [ -n "${PRINT_RUN_DIR:-}" ]; then echo "$1"; exit 0; fi
    if [ -f "$1/results.json" ]; then
        echo "Results exist at $1 (finished run, skipped)."
        return 0
    fi
    return 1
}

# require_trained MODEL_DIR COMMAND: stop with the command to run first when the training run is not finished.
require_trained() {
    if [ ! -f "$1/results.json" ]; then
        echo "error: no finished training in $1; run $2 first" >&2
        exit 2
    fi
}

# run_train_py OUTPUT_DIR [train.py options ...]: train.py for the parsed run, then the KEY VALUE pairs of the
# OVERRIDES array (set by the script) and of EXTRA_OPTS (the user's, last so they win).
run_train_py() {
    local dir=$1; shift
    "$PYTHON" train.py \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer "$TRAINER" \
        --dataset-config-file "configs/datasets/$DATASET.yaml" \
        --config-file "$CFG_FILE" \
        --output-dir "$dir" \
        --unless-finished \
        "$@" \
        PROTOCOL "$PROTOCOL" \
        DATASET.NUM_SHOTS "$SHOTS" \
        "${OVERRIDES[@]}" \
        "${EXTRA_OPTS[@]}"
}

# parse_protocol_args "$@" for a whole-protocol script: TRAINER, CONFIG (empty: each run's default), EXTRA_OPTS,
# SEED_LIST and DATASET_LIST (from SEEDS and DATASETS, default given as $1 of the caller's choice).
parse_protocol_args() {
    local default_datasets=$1; shift
    local positional=()
    EXTRA_OPTS=()
    while [ $# -gt 0 ]; do
        if [ "$1" = "--" ]; then shift; EXTRA_OPTS=("$@"); break; fi
        positional+=("$1"); shift
    done
    if [ ${#positional[@]} -gt 2 ]; then
        echo "usage: $0 [TRAINER] [CONFIG] [-- KEY VALUE ...]  (environment: DATA, OUTPUT, DATASETS, SEEDS, SHOTS)" >&2
        exit 2
    fi
    TRAINER=${positional[0]:-${TRAINER:-$DEFAULT_TRAINER}}
    CONFIG=${positional[1]:-${CONFIG:-}}
    SEED_LIST=${SEEDS:-$DEFAULT_SEEDS}
    DATASET_LIST=${DATASETS:-$default_datasets}
    local dataset
    for dataset in $DATASET_LIST; do check_dataset "$dataset"; done
    OUTPUT=${OUTPUT:-output}
    export TRAINER CONFIG OUTPUT
    FAILED=()
}

# run_step SCRIPT ARG ...: one run of a whole protocol (SCRIPT's own arguments, e.g. DATASET SEED); a failure is
# remembered and the protocol goes on.
run_step() {
    local script=$1; shift
    local setting="${SHOTS:+SHOTS=$SHOTS }TRAINER=$TRAINER${CONFIG:+ CONFIG=$CONFIG}"
    echo "=== $setting bash scripts/$script $*"
    if ! bash "scripts/$script" "$@" -- "${EXTRA_OPTS[@]}"; then
        FAILED+=("$setting bash scripts/$script $*")
        return 1
    fi
}

# report_failures: the protocol's last word; non-zero when any run failed.
report_failures() {
    if [ ${#FAILED[@]} -gt 0 ]; then
        echo "${#FAILED[@]} run(s) failed (the others finished or were already done):" >&2
        printf '  %s\n' "${FAILED[@]}" >&2
        exit 1
    fi
    echo "All runs finished. Tables: python3 scripts/tables.py $OUTPUT"
}

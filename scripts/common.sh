# Shared by the protocol scripts: argument parsing, per-trainer default configs, and the run guard.
# Usage pattern: script.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA (datasets folder, default ./data), OUTPUT (default ./output), SHOTS (default 16),
# TRAINER and CONFIG (used when not given as arguments).

DEFAULT_TRAINER=CoOp

# default_config TRAINER DATASET PROTOCOL -> the config file name (without .yaml) used when none is given.
default_config() {
    local trainer=$1 dataset=$2 protocol=$3
    # The embedded world benchmark: every trainer has one config for it (small CLIP, 48 px, CPU-sized).
    case "$dataset" in
        world|world_*)
            case "$trainer" in
                ZeroshotCLIP|CoOp|CoCoOp|MaPLe|DualMIPrompt) echo world; return 0 ;;
            esac ;;
    esac
    case "$trainer" in
        CoOp)
            if [ "$dataset" = imagenet ]; then echo vit_b16_ep50_ctxv1; else echo vit_b16_ctxv1; fi ;;
        ZeroshotCLIP|ZeroshotCLIP2)
            echo vit_b16 ;;
        *)
            echo "error: no default config for trainer $trainer; give CONFIG as 4th argument" >&2
            return 1 ;;
    esac
}

# learns_nothing TRAINER: true for the zero-shot trainers, which are only evaluated.
learns_nothing() {
    case "$1" in ZeroshotCLIP|ZeroshotCLIP2) return 0 ;; *) return 1 ;; esac
}

parse_args() {
    POSITIONAL=()
    EXTRA_OPTS=()
    while [ $# -gt 0 ]; do
        if [ "$1" = "--" ]; then shift; EXTRA_OPTS=("$@"); break; fi
        POSITIONAL+=("$1"); shift
    done
    if [ ${#POSITIONAL[@]} -lt 2 ]; then
        echo "usage: $0 DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]" >&2
        exit 2
    fi
    DATASET=${POSITIONAL[0]}
    SEED=${POSITIONAL[1]}
    TRAINER=${POSITIONAL[2]:-${TRAINER:-$DEFAULT_TRAINER}}
    CFG=${POSITIONAL[3]:-${CONFIG:-}}
    if [ -z "$CFG" ]; then CFG=$(default_config "$TRAINER" "$DATASET" "$PROTOCOL") || exit 2; fi
    DATA=${DATA:-./data}
    OUTPUT=${OUTPUT:-output}
    SHOTS=${SHOTS:-16}
    PYTHON=${PYTHON:-python3}
    if [ ! -f "configs/datasets/$DATASET.yaml" ]; then
        echo "error: unknown dataset '$DATASET': no configs/datasets/$DATASET.yaml (choose from: $(ls configs/datasets | sed 's/.yaml//' | tr '\n' ' '))" >&2
        exit 2
    fi
    if [ ! -f "configs/trainers/$TRAINER/$CFG.yaml" ]; then
        echo "error: no config configs/trainers/$TRAINER/$CFG.yaml (trainer '$TRAINER', config '$CFG')" >&2
        exit 2
    fi
}

# finished DIR: a run whose results record exists is never redone or overwritten.
finished() {
    if [ -f "$1/results.json" ]; then
        echo "Results exist at $1 (finished run, skipped)."
        return 0
    fi
    return 1
}

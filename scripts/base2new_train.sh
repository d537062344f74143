#!/bin/bash
# Base-to-new generalisation, step 1: train on the base classes (first half) with SHOTS shots per class and
# evaluate on the base test set. A finished run is skipped; an interrupted one resumes from its last checkpoint.
# Usage: bash scripts/base2new_train.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=base2new
source scripts/common.sh
parse_args "$@"

DIR=$OUTPUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
finished "$DIR" && exit 0

MODE=()
if learns_nothing "$TRAINER"; then MODE=(--eval-only); fi
"$PYTHON" train.py \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/$DATASET.yaml" \
    --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
    --output-dir "$DIR" \
    "${MODE[@]}" \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base \
    "${EXTRA_OPTS[@]}"

#!/bin/bash
# Base-to-new generalisation, step 2: evaluate the model trained by base2new_train.sh on the new classes.
# The checkpoint is found by itself (the best one if validation picked one, else the last epoch).
# Usage: bash scripts/base2new_test.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=base2new
source scripts/common.sh
parse_args "$@"

COMMON=$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
MODEL_DIR=$OUTPUT/base2new/train_base/$COMMON
DIR=$OUTPUT/base2new/test_new/$COMMON
finished "$DIR" && exit 0

LOAD=()
if ! learns_nothing "$TRAINER"; then
    if [ ! -f "$MODEL_DIR/results.json" ]; then
        echo "error: no finished training in $MODEL_DIR; run scripts/base2new_train.sh $DATASET $SEED $TRAINER $CFG first" >&2
        exit 2
    fi
    LOAD=(--model-dir "$MODEL_DIR")
fi
"$PYTHON" train.py \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/$DATASET.yaml" \
    --config-file "configs/trainers/$TRAINER/$CFG.yaml" \
    --output-dir "$DIR" \
    "${LOAD[@]}" \
    --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES new \
    "${EXTRA_OPTS[@]}"

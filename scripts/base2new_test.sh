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
    require_trained "$MODEL_DIR" "scripts/base2new_train.sh $DATASET $SEED $TRAINER $CFG"
    LOAD=(--model-dir "$MODEL_DIR")
fi
OVERRIDES=(DATASET.SUBSAMPLE_CLASSES new)
run_train_py "$DIR" "${LOAD[@]}" --eval-only

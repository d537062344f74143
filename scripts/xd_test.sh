#!/bin/bash
# Cross-dataset transfer and domain generalisation, step 2: evaluate the ImageNet model of xd_train.sh on another
# dataset (all its classes): one of the 10 other benchmark datasets, or ImageNetV2, -Sketch, -A, -R.
# CONFIG defaults to the trainer's ImageNet config, the one xd_train.sh used.
# Folder layout as in CoCoOp's and MaPLe's xd scripts (evaluation/<trainer>/<config>_<shots>shots/<dataset>/seed<seed>),
# under $OUTPUT/xd/.
# Usage: bash scripts/xd_test.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=xd
source scripts/common.sh
CONFIG_DATASET=$XD_SOURCE
parse_args "$@"

MODEL_DIR=$OUTPUT/xd/$XD_SOURCE/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
DIR=$OUTPUT/xd/evaluation/$TRAINER/${CFG}_${SHOTS}shots/$DATASET/seed$SEED
finished "$DIR" && exit 0

LOAD=()
if ! learns_nothing "$TRAINER"; then
    require_trained "$MODEL_DIR" "scripts/xd_train.sh $SEED $TRAINER $CFG"
    LOAD=(--model-dir "$MODEL_DIR")
fi
OVERRIDES=()
run_train_py "$DIR" "${LOAD[@]}" --eval-only

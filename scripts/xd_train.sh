#!/bin/bash
# Cross-dataset transfer and domain generalisation, step 1: train on ImageNet, all 1,000 classes, SHOTS (16) shots
# per class. A zero-shot trainer is only evaluated on ImageNet (the source column of the tables).
# Folder layout as in CoCoOp's and MaPLe's xd scripts (<dataset>/<trainer>/<config>_<shots>shots/seed<seed>), under
# $OUTPUT/xd/.
# Usage: bash scripts/xd_train.sh SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=xd
source scripts/common.sh
FIXED_DATASET=$XD_SOURCE
parse_args "$@"

DIR=$OUTPUT/xd/$DATASET/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
finished "$DIR" && exit 0

MODE=()
if learns_nothing "$TRAINER"; then MODE=(--eval-only); fi
OVERRIDES=()
run_train_py "$DIR" "${MODE[@]}"

#!/bin/bash
# Few-shot learning: train on all classes with SHOTS shots per class, evaluate on the test set. A zero-shot trainer
# is evaluated once, as 0 shots. Folder layout as in CoOp's main.sh (<dataset>/<trainer>/<config>_<shots>shots/
# seed<seed>), under $OUTPUT/fewshot/.
# Usage: bash scripts/fewshot_train.sh DATASET SEED [TRAINER] [CONFIG] [-- KEY VALUE ...]   (environment: SHOTS)
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=fewshot
source scripts/common.sh
parse_args "$@"
MODE=()
if learns_nothing "$TRAINER"; then SHOTS=0; MODE=(--eval-only); fi

DIR=$OUTPUT/fewshot/$DATASET/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
finished "$DIR" && exit 0

OVERRIDES=()
run_train_py "$DIR" "${MODE[@]}"

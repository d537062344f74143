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
OVERRIDES=(DATASET.SUBSAMPLE_CLASSES base)
run_train_py "$DIR" "${MODE[@]}"

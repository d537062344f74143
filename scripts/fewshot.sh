#!/bin/bash
# The whole few-shot protocol for one trainer: every dataset, shot count and seed (fewshot_train.sh). Finished runs
# are skipped; a failed run is listed at the end. A zero-shot trainer runs once per dataset and seed (0 shots).
# Usage: bash scripts/fewshot.sh [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA, OUTPUT, SHOTS_LIST (1 2 4 8 16), DATASETS (the 11 benchmark datasets), SEEDS (1 2 3).
# Without CONFIG each run gets its trainer's default (CoOp: CoOp's epochs for the shot count).
set -uo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=fewshot
source scripts/common.sh
parse_protocol_args "$BENCHMARK_DATASETS" "$@"
SHOT_COUNTS=${SHOTS_LIST:-1 2 4 8 16}
if learns_nothing "$TRAINER"; then SHOT_COUNTS=0; fi

for DATASET in $DATASET_LIST; do
    for SHOTS in $SHOT_COUNTS; do
        export SHOTS
        for SEED in $SEED_LIST; do
            run_step fewshot_train.sh "$DATASET" "$SEED"
        done
    done
done
report_failures

#!/bin/bash
# The whole base-to-new benchmark for one trainer: for every dataset and seed, train on the base classes, then
# evaluate on the new ones. Finished runs are skipped, so the command can be rerun after an interruption; a failed
# run does not stop the others and is listed at the end.
# Usage: bash scripts/base2new.sh [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA, OUTPUT, SHOTS (16), DATASETS (the 11 benchmark datasets), SEEDS (1 2 3).
# Without CONFIG each dataset gets its trainer's default (CoOp: vit_b16_ep50_ctxv1 on ImageNet, else vit_b16_ctxv1).
set -uo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=base2new
source scripts/common.sh
parse_protocol_args "$BENCHMARK_DATASETS" "$@"

for DATASET in $DATASET_LIST; do
    for SEED in $SEED_LIST; do
        run_step base2new_train.sh "$DATASET" "$SEED" && run_step base2new_test.sh "$DATASET" "$SEED"
    done
done
report_failures

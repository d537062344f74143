#!/bin/bash
# The whole cross-dataset protocol for one trainer: for every seed, train on ImageNet (xd_train.sh), then evaluate
# on each target dataset (xd_test.sh). Finished runs are skipped; a failed run is listed at the end.
# Usage: bash scripts/xd.sh [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA, OUTPUT, SHOTS (16), DATASETS (the 10 target datasets), SEEDS (1 2 3).
set -uo pipefail
cd "$(dirname "$0")/.."
PROTOCOL=xd
source scripts/common.sh
parse_protocol_args "$XD_TARGETS" "$@"

for SEED in $SEED_LIST; do
    run_step xd_train.sh "$SEED" || continue
    for DATASET in $DATASET_LIST; do
        run_step xd_test.sh "$DATASET" "$SEED"
    done
done
report_failures

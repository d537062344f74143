#!/bin/bash
# The whole domain-generalisation protocol for one trainer: the cross-dataset protocol (xd.sh: the same ImageNet
# models, trained once) evaluated on ImageNetV2, ImageNet-Sketch, ImageNet-A and ImageNet-R.
# Usage: bash scripts/dg.sh [TRAINER] [CONFIG] [-- KEY VALUE ...]
# Environment: DATA, OUTPUT, SHOTS (16), DATASETS (the 4 ImageNet variants), SEEDS (1 2 3).
cd "$(dirname "$0")/.."
source scripts/common.sh
DATASETS=${DATASETS:-$DG_TARGETS} exec bash scripts/xd.sh "$@"

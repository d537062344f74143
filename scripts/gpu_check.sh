#!/bin/bash
# One GPU check on a lent GPU machine, in one call (about 7 minutes on an H100):
#   1. installs the wheels in .whl/ (what the machine lacks: clip, Dassl, yacs, ...) into $SITE;
#   2. records the machine (nvidia-smi, torch, CUDA, driver) and checks that Dassl and the trainers import;
#   3. runs tests/test_cuda.py (every trainer x precision on CUDA, ViT-B/16 cases, the world scripts CUDA vs CPU);
#   4. runs scripts/benchmark.py on ViT-B/16: CoOp and DualMIPrompt (1000 classes, batch 32) at fp16, amp and bf16,
#      one run per precision, then CoCoOp (100 classes, batch 4) at the three precisions.
# Every step has its own timeout, and a step starts only while BUDGET_S has time left for it, so one hang cannot eat
# the device time; the steps run in order of importance. Where there is no CUDA (e.g. a CPU machine), the CUDA tests
# skip and the benchmarks are skipped, or with QUICK=1 run their --quick smoke version at the CPU's precisions.
#
# Usage, from anywhere:  bash scripts/gpu_check.sh
# Environment: OUT (where the results go, default /tmp/gpucheck_out; at most 6 files are written there: gpu_check.log,
# env.txt, pytest.txt, bench.txt, summary.txt, artifacts.tar.gz with metrics, logs and JSON), SITE (wheel target,
# default /tmp/site), SKIP_WHEELS=1 (use what is installed), BUDGET_S (default 420), QUICK=1 (tiny settings),
# BENCH_MEMORY=0 (no peak-memory child processes in the ViT-B/16 benchmarks).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/gpucheck_out}
SITE=${SITE:-/tmp/site}
BUDGET_S=${BUDGET_S:-420}
QUICK=${QUICK:-0}
BENCH_MEMORY=${BENCH_MEMORY:-1}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHON
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
ART=$(mktemp -d /tmp/gpucheck_art.XXXXXX)  # gathered into one artifacts.tar.gz: few files come back from $OUT
export CUDA_CHECK_DIR=$ART/cuda_check
mkdir -p "$CUDA_CHECK_DIR"
START=$(date +%s)
SUMMARY=()
FAILED=0

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S FILE COMMAND...: COMMAND under its own timeout (at most what is left of BUDGET_S), its output shown
# and appended to $OUT/FILE; skipped when under 20 s are left.
step() {
    local name=$1 limit=$2 file=$3
    shift 3
    local left=$(( BUDGET_S - $(elapsed) ))
    if [ "$left" -lt 20 ]; then
        say "SKIP $name: ${left}s left of BUDGET_S=${BUDGET_S}"
        SUMMARY+=("$name: skipped (out of time)")
        return 0
    fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    say "START $name (timeout ${limit}s): $*"
    echo "===== $name: $*" >> "$OUT/$file"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
    rc=${PIPESTATUS[0]}
    local took=$(( $(date +%s) - t0 ))
    case $rc in
        0) SUMMARY+=("$name: ok (${took}s)") ;;
        124|137) SUMMARY+=("$name: TIMED OUT after ${took}s"); FAILED=1 ;;
        *) SUMMARY+=("$name: FAILED rc=$rc (${took}s)"); FAILED=1 ;;
    esac
    say "END $name rc=$rc (${took}s)"
}

# ----- 1. wheels -----
if [ "${SKIP_WHEELS:-0}" != 1 ] && compgen -G ".whl/*.whl" > /dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) wheels into $SITE"
    PIP_OUT=$(timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl 2>&1)
    PIP_RC=$?
    printf '%s\n' "$PIP_OUT" | grep -v "Running pip as the 'root' user" | tee -a "$LOG"
    if [ "$PIP_RC" = 0 ]; then
        export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
        SUMMARY+=("wheels: installed into $SITE")
    else
        SUMMARY+=("wheels: INSTALL FAILED rc=$PIP_RC"); FAILED=1
        say "wheel install failed (rc $PIP_RC): going on with what is installed"
    fi
else
    say "wheels: not installed (SKIP_WHEELS=1 or no .whl/*.whl)"
fi

HAVE_CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
say "CUDA available: $HAVE_CUDA; QUICK=$QUICK; BUDGET_S=$BUDGET_S; OUT=$OUT"

# ----- 2. the machine -----
machine_info() {
    echo "date: $(date -Is)  host: $(hostname)  kernel: $(uname -r)  cpus: $(nproc --all)"
    free -g 2>/dev/null | head -2
    df -h /dev/shm /tmp 2>/dev/null
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$PYTHON" - <<'EOF'
import platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
    try:
        print("driver (torch)", torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else "n/a")
    except Exception as err:
        print("driver (torch): n/a", err)
else:
    print("CUDA: not available")
EOF
    "$PYTHON" - <<'EOF'
import importlib.metadata as md
import warnings
warnings.simplefilter("ignore")
for name in ("torch", "torchvision", "numpy", "pillow", "setuptools", "clip-anytorch", "dassl", "yacs", "ftfy",
             "wcwidth", "regex", "tqdm", "wilds", "gdown", "beautifulsoup4", "tensorboard", "tabulate", "pytest",
             "scikit-learn", "scipy", "pandas"):
    try:
        dist = md.distribution(name)
        print(f"{name} {dist.version}  ({dist.locate_file('')})")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
from common.dassl_env import import_dassl
import_dassl()
import clip, datasets
from trainers import registry
registry.register_with_dassl()
datasets.register_with_dassl()
print("imports ok: dassl", __import__("dassl").__file__, "| clip", clip.__file__, "| trainers", registry.names())
EOF
}
export -f machine_info
step env 90 env.txt bash -c machine_info

# ----- 3. the CUDA tests -----
PYTEST_ENV=()
if [ "$QUICK" = 1 ]; then PYTEST_ENV=(CUDA_E2E_EPOCHS=2); fi
step pytest 300 pytest.txt env "${PYTEST_ENV[@]}" "$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -rs \
    -p no:cacheprovider --durations=12 --junitxml="$ART/pytest.xml"

# ----- 4. benchmarks -----
MEMORY=()
if [ "$BENCH_MEMORY" = 0 ]; then MEMORY=(--no-memory); fi
if [ "$HAVE_CUDA" = 1 ] && [ "$QUICK" != 1 ]; then
    # fp16 first (the configs' default PREC), then amp; bf16 without the memory child processes (~8 s each, 8 per
    # precision): it stores weights and activations in 16 bits as fp16 does, so its peak memory is fp16's.
    for prec in fp16 amp bf16; do
        memory=("${MEMORY[@]}")
        if [ "$prec" = bf16 ]; then memory=(--no-memory); fi
        step "bench CoOp+DualMIPrompt $prec" 150 bench.txt "$PYTHON" scripts/benchmark.py --device cuda --prec "$prec" \
            --backbone ViT-B/16 --classes 1000 --batch 32 --trainers CoOp DualMIPrompt "${memory[@]}" \
            --json "$ART/bench_coop_dualmiprompt_$prec.json"
    done
    # CoCoOp last, without the memory child processes (the budget's remainder).
    step "bench CoCoOp" 120 bench.txt "$PYTHON" scripts/benchmark.py --device cuda --prec fp16 amp bf16 \
        --backbone ViT-B/16 --classes 100 --batch 4 --trainers CoCoOp --no-memory --json "$ART/bench_cocoop.json"
elif [ "$QUICK" = 1 ]; then
    if [ "$HAVE_CUDA" = 1 ]; then DEVICE=cuda; PRECS=(amp bf16 fp16); else DEVICE=cpu; PRECS=(bf16)
        say "no CUDA: benchmark smoke runs on the CPU at bf16 only (amp and fp16 need CUDA)"; fi
    step "bench quick CoOp+DualMIPrompt" 240 bench.txt "$PYTHON" scripts/benchmark.py --quick --device "$DEVICE" \
        --prec "${PRECS[@]}" --trainers CoOp DualMIPrompt --no-memory --json "$ART/bench_quick_coop_dualmiprompt.json"
    step "bench quick CoCoOp" 240 bench.txt "$PYTHON" scripts/benchmark.py --quick --device "$DEVICE" \
        --prec "${PRECS[@]}" --trainers CoCoOp --no-memory --json "$ART/bench_quick_cocoop.json"
else
    say "no CUDA: the ViT-B/16 benchmarks are skipped (QUICK=1 runs a CPU smoke version)"
    SUMMARY+=("benchmarks: skipped (no CUDA)")
fi

# ----- the summary and the artifacts -----
{
    echo "gpu_check: $(elapsed)s of BUDGET_S=${BUDGET_S}; CUDA available: $HAVE_CUDA; QUICK=$QUICK"
    printf '  %s\n' "${SUMMARY[@]}"
    "$PYTHON" - "$CUDA_CHECK_DIR/metrics.jsonl" <<'EOF'
import json, os, sys
path = sys.argv[1]
rows = [json.loads(line) for line in open(path)] if os.path.isfile(path) else []
models = [r for r in rows if r["kind"] == "model"]
if models:
    print(f"{'case':9} {'trainer':13} {'prec':5} {'cos_gap':>9} {'tol':>7} {'prob_gap':>9} {'top1':>5} "
          f"{'cpu_gap':>9} {'loss first->last':>17} {'scale':>7} {'s':>6}")
    for r in models:
        loss = "-" if r["first_loss"] is None else f"{r['first_loss']:.3f}->{r['last_loss']:.3f}"
        scale = "-" if r["grad_scale"] is None else f"{r['grad_scale']:.0f}"
        print(f"{r['case']:9} {r['trainer']:13} {r['prec']:5} {r['cos_gap']:9.2e} {r['cos_tol']:7.0e} "
              f"{r['prob_gap']:9.2e} {r['top1_agree']:5.2f} {r['cpu_cos_gap']:9.2e} {loss:>17} {scale:>7} "
              f"{r['seconds']:6.1f}")
for r in rows:
    if r["kind"] in ("e2e", "e2e_step"):
        print(json.dumps({k: v for k, v in r.items() if k != "kind"}))
EOF
} 2>&1 | tee "$OUT/summary.txt" | tee -a "$LOG"
tar -czf "$OUT/artifacts.tar.gz" -C "$ART" . && rm -rf "$ART"
say "done: $(ls "$OUT" | tr '\n' ' ')"
exit $FAILED

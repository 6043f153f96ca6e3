#!/usr/bin/env bash
# The GPU half of minicnn, checked in one command on a machine with CuPy and a CUDA GPU
# (made for the device tool's H200: about 8 minutes, under its 10-minute limit per command).
#
#   bash bench/gpu_checks.sh [DATA]              # on the GPU machine
#   bash bench/gpu_checks.sh --dry-run           # here, on a CPU: every step at a tiny size, on a
#                                                #   fake GPU (tests/kernel_shim/fake_gpu: NumPy as "cupy")
#   bash bench/gpu_checks.sh --prepare           # here: copy the CIFAR-10 tree to data/cifar10-jpeg
#
# Steps, each with its own time limit; a step that fails or times out does not stop the others:
#   tests  pytest -m "gpu and not slow" with MINICNN_REQUIRE_GPU=1: every GPU-parametrised test
#          (the cupy backend of every op; NVRTC compiling each kernels/*.cu and each kernel against
#          its NumPy twin) must run: a skipped one counts as a failure.
#   bench  bench/bench_step.py --device gpu (simple_cnn, resnet20, batch 128): minicnn on CuPy
#          against PyTorch + cuDNN on the same GPU: step times, ratio, breakdown; then
#          bench/gpu_report.py memory: the peak GPU memory a step adds, for both.
#          TF32 is OFF for both (NVIDIA_TF32_OVERRIDE=0 below: cuBLAS and cuDNN then use full
#          float32 in CuPy and in PyTorch alike; CuPy's own default is off too).
#   train  time to accuracy: ResNet-20, one-cycle schedule over EPOCHS epochs on all 50,000
#          training images, capped at MAX_MINUTES of training (then it stops, saves and tests
#          what it has), test accuracy on the full test set; wall time includes decoding.
#
# Everything lands in $OUT (default runs/gpu_checks), at most 8 files (what the device tool
# returns): summary.json, tests.log, bench.log, gpu_memory.json, train.log, train_test.json,
# train_metrics.csv. The summary is also printed last.
#
# Settings (environment): OUT, STEPS (default tests,bench,train: a rerun can pick one),
# EPOCHS (30), MAX_MINUTES (4), TESTS_TIMEOUT (130 s), BENCH_TIMEOUT (100 s),
# TRAIN_TIMEOUT (MAX_MINUTES*60 + 75 s), PYTHON (python3), TEST_WORKERS (4, with pytest-xdist),
# SRC (for --prepare: ../shared/data/cifar10-jpeg). The limits add up to about 9 minutes at
# worst (under the device tool's 10-minute command limit); a normal run takes less.
#
# Exit status: 0 all steps passed, 1 some step failed, 77 no GPU visible (nothing run).
#
# On the device tool, after --prepare here (data/ is git-ignored; the tree is ~55 MiB of the
# 64 MiB that travels):
#   run(command="bash bench/gpu_checks.sh data/cifar10-jpeg", carry=["data/cifar10-jpeg"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"     # minicnn from this checkout, no install needed
export PYTHONUNBUFFERED=1
export NVIDIA_TF32_OVERRIDE=0 CUPY_TF32=0                # TF32 off in cuBLAS/cuDNN, for both frameworks
PY=${PYTHON:-$(command -v python3 || command -v python)}   # the device machine has python3 (with torch)
export PY

MODE=gpu
DATA=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) MODE=dry-run ;;
        --prepare) MODE=prepare ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        -*) echo "gpu_checks.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) DATA=$arg ;;
    esac
done

if [ "$MODE" = dry-run ]; then
    # The fake GPU: "import cupy" gives NumPy arrays that minicnn takes for GPU arrays, and the
    # kernels built as C++ (tests/kernel_shim), so every step runs its GPU code path here.
    export PYTHONPATH="$REPO/tests/kernel_shim/fake_gpu:$PYTHONPATH"
fi

if [ "$MODE" = prepare ]; then
    SRC=${SRC:-../shared/data/cifar10-jpeg}
    DEST=${DATA:-data/cifar10-jpeg}
    [ -d "$SRC/train" ] || { echo "gpu_checks.sh --prepare: no CIFAR-10 image tree at $SRC (set SRC)"; exit 2; }
    if [ -d "$DEST/train" ]; then echo "$DEST already there"; exit 0; fi
    mkdir -p "$(dirname "$DEST")"
    cp -al "$SRC" "$DEST" 2>/dev/null || { rm -rf "$DEST"; cp -r "$SRC" "$DEST"; }
    echo "copied $SRC to $DEST ($(du -sh --apparent-size "$DEST" | cut -f1)); git ignores it: $(git check-ignore -q "$DEST" && echo yes || echo NO)"
    echo "device tool: run(command=\"bash bench/gpu_checks.sh $DEST\", carry=[\"$DEST\"], timeout_s=600)"
    exit 0
fi

OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
rm -f "$OUT"/{summary.json,tests.log,bench.log,gpu_memory.json,train.log,train_test.json,train_metrics.csv}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_checks.XXXXXX")
STATUS=$WORK/status.tsv
: > "$STATUS"
STEPS=${STEPS:-tests,bench,train}
EPOCHS=${EPOCHS:-30}
if [ "$MODE" = gpu ]; then MAX_MINUTES=${MAX_MINUTES:-4}; else MAX_MINUTES=${MAX_MINUTES:-0.5}; fi
TESTS_TIMEOUT=${TESTS_TIMEOUT:-130}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-100}
# pytest-xdist (there on the device machine): workers compile CuPy's kernels in parallel
XDIST=()
if [ "$MODE" = gpu ] && "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "${TEST_WORKERS:-4}"); fi
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-$("$PY" -c "print(int($MAX_MINUTES * 60 + 75))")}

"$PY" - "$WORK/env.json" <<'EOF'
import json, platform, subprocess, sys
import numpy
from minicnn.backend import cupy_or_none
env = {"python": platform.python_version(), "numpy": numpy.__version__}
cp = cupy_or_none()
if cp is not None:
    props = cp.cuda.runtime.getDeviceProperties(0)
    env.update(cupy=cp.__version__, gpu=props["name"].decode(), cuda_runtime=cp.cuda.runtime.runtimeGetVersion())
try:
    import torch
    env.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
except ImportError:
    env["torch"] = None
env["tf32"] = "off for both (NVIDIA_TF32_OVERRIDE=0)"
json.dump(env, open(sys.argv[1], "w"), indent=2)
print("environment:", json.dumps(env))
EOF

if [ "$MODE" = gpu ] && ! "$PY" -c "import sys, minicnn.backend as b; sys.exit(0 if b.is_gpu_available() else 1)"; then
    echo "gpu_checks.sh: SKIPPED: no GPU visible to CuPy (is cupy installed, and a CUDA device present?)."
    echo "Nothing was run. To exercise the script's plumbing on a CPU: bash bench/gpu_checks.sh --dry-run"
    rm -rf "$WORK"
    exit 77
fi

# run_step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, record status and time.
run_step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "==================== $name (limit ${limit}s) ===================="
    echo "+ $*"
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout -k 15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    tail -n 25 "$OUT/$name.log"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "!! $name stopped at its ${limit}s limit"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$("$PY" -c "print($t1 - $t0)")" >> "$STATUS"
}

bench_all() {      # the step benchmark, then the memory probe; fails if either fails
    local rc=0
    if [ "$MODE" = gpu ]; then
        "$PY" bench/bench_step.py --device gpu --models simple_cnn,resnet20 --steps 30 --warmup 5 || rc=1
        "$PY" bench/gpu_report.py memory --device gpu --models simple_cnn,resnet20 \
            --out "$OUT/gpu_memory.json" || rc=1
    else
        # bench_step's PyTorch baseline needs CUDA for --device gpu: the dry run times the CPU
        "$PY" bench/bench_step.py --device cpu --models simple_cnn --batch 8 --steps 2 --warmup 1 \
            --no-memory || rc=1
        "$PY" bench/gpu_report.py memory --device gpu --models simple_cnn --batch 8 \
            --out "$OUT/gpu_memory.json" || rc=1
    fi
    return $rc
}

tiny_tree() {      # a 10-class tree of 32x32 PNGs, a few images per class (dry run only)
    "$PY" - "$1" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, n in (("train", 6), ("test", 2)):
    for k, name in enumerate(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (32, 32, 3))
            img[..., k % 3] += 40 + 15 * k
            Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{i}.png")
EOF
}

case ",$STEPS," in *,tests,*)   # (on the fake GPU in a dry run)
    MINICNN_REQUIRE_GPU=1 run_step tests "$TESTS_TIMEOUT" "$PY" -m pytest -q -m "gpu and not slow" -rs \
        "${XDIST[@]}" -p no:cacheprovider --junitxml "$WORK/junit.xml" tests ;;
esac

export MODE OUT
export -f bench_all
case ",$STEPS," in *,bench,*) run_step bench "$BENCH_TIMEOUT" bash -c bench_all ;; esac

case ",$STEPS," in *,train,*)
    if [ "$MODE" = gpu ]; then
        DATA=${DATA:-data/cifar10-jpeg}
        if [ ! -d "$DATA/train" ]; then
            echo "!! no CIFAR-10 image tree at $DATA: pass its path (bash bench/gpu_checks.sh --prepare makes one)"
            printf 'train\t2\t0\n' >> "$STATUS"
        else
            run_step train "$TRAIN_TIMEOUT" "$PY" -m minicnn train --model resnet20 --device gpu \
                --data "$DATA" --epochs "$EPOCHS" --schedule onecycle --max-minutes "$MAX_MINUTES" \
                --val-split 0 --no-progress --out "$WORK/train_run"
        fi
    else
        SUBSET=()
        if [ -n "$DATA" ]; then SUBSET=(--subset 100); else DATA=$WORK/tiny_tree; tiny_tree "$DATA"; fi
        MINICNN_CACHE=$WORK/cache run_step train "$TRAIN_TIMEOUT" "$PY" -m minicnn train --model resnet20 \
            --device gpu --data "$DATA" "${SUBSET[@]}" --epochs 2 --batch-size 20 --schedule onecycle \
            --max-minutes "$MAX_MINUTES" --val-split 0 --no-progress --out "$WORK/train_run"
    fi
    [ -f "$WORK/train_run/test.json" ] && cp "$WORK/train_run/test.json" "$OUT/train_test.json"
    [ -f "$WORK/train_run/metrics.csv" ] && cp "$WORK/train_run/metrics.csv" "$OUT/train_metrics.csv" ;;
esac

"$PY" bench/gpu_report.py summary --mode "$MODE" --status "$STATUS" --out-dir "$OUT" --env "$WORK/env.json" \
    --junit "$WORK/junit.xml" --bench-log "$OUT/bench.log" --memory "$OUT/gpu_memory.json" \
    --train-json "$OUT/train_test.json"
failed=$(awk -F'\t' '$2 != 0' "$STATUS" | wc -l)
rm -rf "$WORK"
[ "$failed" -eq 0 ]

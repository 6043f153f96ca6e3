#!/usr/bin/env bash
# The GPU checks of issue 5, in one command, for a machine with CuPy and a CUDA GPU
# (e.g. the device tool: carry the CIFAR-10 tree in an ignored folder, see README).
#
#   bash bench/gpu_checks.sh [DATA] [EPOCHS]
#
# 1. the whole test suite with the cupy backend (every kernel against its NumPy twin),
# 2. the ResNet-20 training-step time on the GPU against PyTorch on the same GPU,
# 3. minicnn train --model resnet20 --device gpu with the paper's recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
# On the device machine ../shared is not there: carry the tree inside the repo (an ignored
# folder such as data/cifar10-jpeg) and pass it as DATA.
DATA=${1:-data/cifar10-jpeg}
[ -d "$DATA/train" ] || { echo "no CIFAR-10 image tree at $DATA (pass its path)"; exit 1; }
EPOCHS=${2:-182}
OUT=${OUT:-runs}
mkdir -p "$OUT"
python -c "import minicnn; assert minicnn.is_gpu_available(), 'no GPU visible to CuPy'" || exit 1
python -m pytest -q -m "not slow" -rs 2>&1 | tee "$OUT/gpu_tests.log" | tail -5
python bench/bench_step.py --device gpu --models resnet20,simple_cnn --steps 30 2>&1 | tee "$OUT/gpu_bench.log"
minicnn train --model resnet20 --device gpu --data "$DATA" --epochs "$EPOCHS" --no-progress \
    --out "$OUT/resnet20_gpu" 2>&1 | tee "$OUT/resnet20_gpu.log" | tail -30

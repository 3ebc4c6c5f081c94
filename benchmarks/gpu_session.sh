#!/usr/bin/env bash
# One lent-GPU session's work, as one prepared command (the device tool's `run`; see its README).
#
# The device image has torch, transformers, accelerate, peft and safetensors but not diffusers, so
# first, here (not on the device), in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata
# then call `run` with carry [".whl"] and the command `bash benchmarks/gpu_session.sh pretrain`
# (then `bench` in a second call, if device time is left).
#
#   pretrain: train the miniature world's base model (styo world pretrain, resumable, on CUDA),
#             evaluate it with the judges, and return it as <=15 MB tar parts under $OUT
#             (the device returns at most 8 files of 16 MiB). Here:
#             cat parts/styo-mini.tar.* | tar -x -C models/
#   bench:    the SD-1.5-scale IDL/FCC benchmark, results under $OUT/bench.
# STYO_PRETRAIN_ARGS / STYO_EVAL_ARGS add options to `styo world pretrain` / `evaluate` (a dry run:
# small step counts, on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/styo-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
styo() { python3 -c 'import sys; from styo.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
python3 -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__,
  "cuda", torch.cuda.is_available())'

case "${1:-pretrain}" in
  pretrain)
    model=/tmp/styo-mini
    rm -rf "$model"
    start=$(date +%s)
    # shellcheck disable=SC2086
    styo world pretrain --out "$model" --work-dir /tmp/styo-pretrain-work ${STYO_PRETRAIN_ARGS:-} \
      2>&1 | tr '\r' '\n' | grep -v -E '(it/s|s/it)' || true
    echo "pretrain wall seconds: $(( $(date +%s) - start ))" | tee "$OUT/pretrain-time.txt"
    test -f "$model/model_index.json"
    cp "$model/training.json" "$OUT/"
    # shellcheck disable=SC2086
    styo world evaluate --model "$model" --out "$OUT/eval" ${STYO_EVAL_ARGS:-} 2>&1 | tr '\r' '\n' | grep -v -E '(it/s|s/it)' | tail -3
    mkdir -p "$OUT/parts"
    tar -C /tmp -cf - styo-mini | split -b 15M -d - "$OUT/parts/styo-mini.tar."
    ls -la "$OUT" "$OUT/parts"
    ;;
  bench)
    python3 benchmarks/sd_scale.py --out-dir "$OUT/bench" --work-dir /tmp/styo-bench
    ;;
  *)
    echo "usage: benchmarks/gpu_session.sh pretrain|bench" >&2
    exit 2
    ;;
esac

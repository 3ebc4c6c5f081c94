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
#   continue: candidates continued from models/styo-mini side by side on the one GPU (VARIANTS
#             below), each stopped at TRAIN_SECONDS of training and then measured by
#             `styo world grounding` and `styo world evaluate`. Every measurement comes back
#             (results.tar) with the two best candidates' UNet and text encoder as tar parts;
#             here: cat parts/candidates.tar.* | tar -x -C runs/gpu/
#             VARIANTS ("name:options" lines), TRAIN_SECONDS, EVAL_SECONDS and INIT_FROM (a
#             pipeline folder carried along, e.g. a candidate to continue) override the defaults.
# STYO_PRETRAIN_ARGS / STYO_EVAL_ARGS add options to `styo world pretrain` / `evaluate` (and, in
# continue, `grounding`); a dry run: small step counts, on CPU.
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
STYO=(python3 -c 'import sys; from styo.cli import main; sys.exit(main(sys.argv[1:]))')  # `timeout` runs it too
styo() { "${STYO[@]}" "$@"; }
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
  continue)
    # Version 3's recipe with the threshold loss at the picture's resolution (models/README.md),
    # and its words' terms weighted by region. One seeded batch draw for all, so they differ only
    # in the recipe. A run the deadline stops is measured from its newest checkpoint's EMA weights.
    common="--vae models/styo-mini --init-from ${INIT_FROM:-models/styo-mini} --layout varied --grounding-weight 0.3
      --threshold-weight 1.0 --threshold-at-picture --threshold-temperature 0.05 --padding-weight 1.0
      --padding-allowance 0.2 --detail-weight 60 --unet-batch 64 --unet-lr 1e-4 --warmup 30
      --ema-decay 0.995 --draw-seed 21 --checkpoint-every 100"
    VARIANTS=${VARIANTS:-"pic:--unet-steps 3000
eyes4:--unet-steps 3000 --threshold-region-weight eyes=4
small4:--unet-steps 3000 --threshold-region-weight eyes=4 --threshold-region-weight mouth=2 --threshold-region-weight glasses=2
eyes4t3:--unet-steps 3000 --threshold-region-weight eyes=4 --threshold-temperature 0.03
eyes8:--unet-steps 3000 --threshold-region-weight eyes=8"}
    work=/tmp/styo-continue
    logs="$work/logs"
    rm -rf "$work" && mkdir -p "$work" "$logs"
    start=$(date +%s)
    # the data once: render, encode (one UNet step, thrown away)
    # shellcheck disable=SC2086
    styo world pretrain --out "$work/prep" --work-dir "$work/data" $common --unet-steps 1 \
      ${STYO_PRETRAIN_ARGS:-} > "$logs/prep.log" 2>&1
    echo "data: $(( $(date +%s) - start )) s"
    names=()
    while IFS=: read -r name args; do
      [ -n "$name" ] || continue
      names+=("$name")
      mkdir -p "$work/$name/work"
      for f in dataset.npz latents.safetensors vae.safetensors; do ln "$work/data/$f" "$work/$name/work/$f"; done
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=2 timeout "${TRAIN_SECONDS:-280}" "${STYO[@]}" \
        world pretrain --out "$work/$name/out" --work-dir "$work/$name/work" $common $args --workers 3 \
        ${STYO_PRETRAIN_ARGS:-} > "$logs/$name.log" 2>&1 &
    done <<< "$VARIANTS"
    wait || true
    echo "trained: $(( $(date +%s) - start )) s"
    for name in "${names[@]}"; do
      if [ ! -f "$work/$name/out/model_index.json" ]; then
        rm -rf "$work/$name/out"
        styo world snapshot --work-dir "$work/$name/work" --out "$work/$name/out" >> "$logs/$name.log" 2>&1 || continue
      fi
      tr '\r' '\n' < "$logs/$name.log" | grep -E '^UNet' | tail -1 || true
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=2 timeout "${EVAL_SECONDS:-170}" "${STYO[@]}" \
        world grounding --model "$work/$name/out" --out "$work/eval/$name/grounding" --n 120 \
        ${STYO_EVAL_ARGS:-} > "$logs/$name.grounding.log" 2>&1 &
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=2 timeout "${EVAL_SECONDS:-170}" "${STYO[@]}" \
        world evaluate --model "$work/$name/out" --out "$work/eval/$name/quality" --n 120 \
        ${STYO_EVAL_ARGS:-} > "$logs/$name.quality.log" 2>&1 &
    done
    wait || true
    echo "measured: $(( $(date +%s) - start )) s"
    # the two best: quality targets met first, then the eyes' word map, then the mean
    python3 benchmarks/gpu_candidates.py "$work" "${names[@]}" | tee "$OUT/candidates.txt"
    best=$(tail -1 "$OUT/candidates.txt")
    for name in "${names[@]}"; do
      mkdir -p "$work/eval/$name"
      cp "$work/$name/out/training.json" "$work/$name/work/config.json" "$work/eval/$name/" 2>/dev/null || true
    done
    for f in "$logs"/*.log; do tr '\r' '\n' < "$f" | tail -40 > "$f.tail"; done
    (cd "$work" && tar -cf "$OUT/results.tar" eval logs/*.tail)
    mkdir -p "$OUT/parts"
    # shellcheck disable=SC2046
    tar -C "$work" -cf - $(for n in $best; do echo "$n/out/unet $n/out/text_encoder $n/out/training.json"; done) \
      | split -b 15M -d - "$OUT/parts/candidates.tar."
    ls -la "$OUT" "$OUT/parts"
    ;;
  bench)
    python3 benchmarks/sd_scale.py --out-dir "$OUT/bench" --work-dir /tmp/styo-bench
    ;;
  *)
    echo "usage: benchmarks/gpu_session.sh pretrain|continue|bench" >&2
    exit 2
    ;;
esac

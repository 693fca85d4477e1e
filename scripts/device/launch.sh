#!/usr/bin/env bash
# Device call 2: unpack data part 1 + the bundled sample (test patients), launch every run in the
# background (setsid: they outlive this call), then watch them until WATCH seconds have passed.
# Every run: KERAS_BACKEND=jax python3 -m classseg ... on /tmp/data128 (train/val at 128 px, lossless).
set -uo pipefail
MIN=${MIN:-15}
WATCH=${WATCH:-540}
cp -r .gpu/part1/. /tmp/data128/
cp -r data/sample/kaggle_3m/TCGA_* /tmp/data128/
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
SPLIT=data/splits/kaggle_3m_seed0.csv
mkdir -p /tmp/runs
seg() {  # name, extra options
  local name=$1; shift
  setsid nohup python3 -m classseg train-segmenter /tmp/data128 --splits $SPLIT --minutes "$MIN" --quiet \
    --no-select-postprocess --workers 2 --out /tmp/runs/$name "$@" > /tmp/runs/$name.log 2>&1 < /dev/null &
}
seg fast
seg fast_focal_tversky --loss focal_tversky
seg fast_raw --normalization raw
seg fast_seeds_aug --augment seeds
seg fast_onecycle --schedule onecycle
seg fast_width1.5 --width 1.5
seg paper_128 --recipe paper --img-size 128
setsid nohup python3 -m classseg train-gate /tmp/data128 --splits $SPLIT --minutes "$MIN" --quiet --workers 2 \
  --out /tmp/runs/gate > /tmp/runs/gate.log 2>&1 < /dev/null &
sleep 5
bash scripts/device/watch.sh "$WATCH"

#!/usr/bin/env bash
# Device call 1 (see scripts/device/README.md): install the carried wheels, unpack data part 0.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/data128 && cp -r .gpu/part0/. /tmp/data128/
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax
python3 -c "import keras, jax, albumentations, classseg.training.segmenter as s; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())"
nvidia-smi -L; nproc; free -g | head -2
ls /tmp/data128 | wc -l

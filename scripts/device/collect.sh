#!/usr/bin/env bash
# Device call 3: wait for the runs, strip optimizer state from the models (smaller files), and pack
# every run folder (no backups) into $OUT as <=15 MB pieces: runs.tar.part-aa, -ab, ...
set -uo pipefail
bash scripts/device/watch.sh "${1:-500}"
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax
python3 - <<'PY'
from pathlib import Path
import keras
for path in Path("/tmp/runs").glob("*/*.keras"):
    if ".tmp" in path.name:
        continue
    model = keras.models.load_model(path, compile=False)
    model.save(path)  # no optimizer state: about a third of the size
    print(path, path.stat().st_size // 1000, "kB")
PY
cd /tmp && tar --exclude='*/backup' --exclude='*.tmp*' -cf - runs | split -b 15m - "$OUT/runs.tar.part-"
ls -la "$OUT"

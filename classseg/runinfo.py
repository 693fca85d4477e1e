"""Run bookkeeping: seeding, environment description and manifest files."""

from __future__ import annotations

import json
import os
import platform
import random
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from classseg.atomic import atomic_write_text


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and Keras/TensorFlow for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import keras

    keras.utils.set_random_seed(seed)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_info() -> dict[str, Any]:
    """Library versions and machine details, for labelling every measured figure."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    for name in ("tensorflow", "keras", "cv2", "sklearn", "pandas", "onnxruntime", "tf2onnx"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - optional libraries may be missing or broken
            info[name] = None
    try:
        import tensorflow as tf

        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001
        info["gpus"] = []
    return info


def _default(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (dataclasses, NumPy scalars and paths allowed), atomically."""
    path = Path(path)
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_manifest(out_dir: str | Path, **fields: Any) -> Path:
    """Write ``out_dir/manifest.json``: the given fields plus time and environment."""
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "environment": environment_info(),
    }
    return write_json(Path(out_dir) / "manifest.json", manifest)

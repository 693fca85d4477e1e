"""The machine and library versions a figure was measured with (every manifest and timing carries it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


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


def machine_label(env: dict[str, Any]) -> str:
    """``CPU (n cores)[, GPU ...]``; on the JAX backend the GPU comes from ``jax.devices()``."""
    gpus = env.get("gpus") or []
    try:
        import keras

        if keras.backend.backend() == "jax":
            import jax

            gpus = [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    except Exception:  # noqa: BLE001 - a label only
        pass
    return f"{env.get('cpu')} ({env.get('cpu_count')} cores)" + (f", GPU {gpus}" if gpus else "")


def machine() -> str:
    """The label of this machine (:func:`machine_label` of :func:`environment_info`): what every run record,
    model card and manifest names as the machine a run trained on."""
    return machine_label(environment_info())

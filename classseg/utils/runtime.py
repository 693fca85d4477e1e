"""Where inference runs: available CPU cores and ONNX Runtime sessions sized to them (the latency
measurement every stage reports is :func:`classseg.models.predict.inference_ms_per_slice`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """ONNX Runtime CPU session with ``intra_op_num_threads`` = available cores (or ``threads``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or available_cores())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

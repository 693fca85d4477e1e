"""Where inference runs and how fast: available CPU cores, ONNX Runtime sessions sized to them, and the
one latency measurement (ms per slice) every stage reports."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


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


def ms_per_slice(call: Callable[[Any], Any], images: np.ndarray, batch_size: int = 16, min_seconds: float = 1.0,
                 max_reps: int = 20) -> float:
    """Mean latency in ms per slice of ``call`` (a compiled model call) on float32 batches of ``batch_size``.

    The batch is ``images`` repeated or cut to ``batch_size``; one warm-up (trace) call, then at least 3
    and up to ``max_reps`` timed calls, stopping after ``min_seconds``. Every output is materialised.
    """
    import time

    import tensorflow as tf

    x = tf.constant(np.resize(images, (batch_size,) + images.shape[1:]).astype(np.float32))

    def run() -> None:
        tf.nest.map_structure(lambda t: np.asarray(t), call(x))

    run()
    reps, start = 0, time.perf_counter()
    while reps < 3 or (time.perf_counter() - start < min_seconds and reps < max_reps):
        run()
        reps += 1
    return (time.perf_counter() - start) / (reps * batch_size) * 1000.0

"""Model runners: one compiled batch call per backend (Keras or ONNX Runtime), outputs returned by name.

A runner takes float32 (N, H, W, 3) input, already resized and normalised the way the model's card
says (:mod:`classseg.pipeline.models`), and returns ``{output name: array}``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.models.loading import load_model
from classseg.runtime import onnx_session

DEFAULT_INPUT_SIZE = 256  # used only for models whose input size is not fixed
BACKENDS = ("keras", "onnx")

ModelLike = Any  # keras.Model, or a path to a .keras / .onnx file


def _spatial_size(dims: Sequence[Any]) -> tuple[int, int]:
    h, w = dims
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE


def _named_outputs(out: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return {name: np.asarray(v) for name, v in zip(names, out, strict=True)}
    return {names[0] if names else "output_0": np.asarray(out)}


class KerasRunner:
    """``tf.function(model(x, training=False))`` with a fixed-rank float32 input signature (no retracing)."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        shape = model.input_shape
        if isinstance(shape, list):
            if len(shape) != 1:
                raise ValueError(f"model {model.name!r} has {len(shape)} inputs; expected one image input")
            shape = shape[0]
        self.model = model
        self.name = model.name
        self.input_size = _spatial_size(shape[1:3])
        self.output_names = list(getattr(model, "output_names", None) or [])
        spec = tf.TensorSpec((None, shape[1], shape[2], 3), tf.float32)
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return _named_outputs(self._fn(x), self.output_names)


class OnnxRunner:
    """An ONNX Runtime session (float32, intra-op threads = available cores) called on a batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.session = onnx_session(self.path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: ONNX model has {len(inputs)} inputs; expected one image input")
        self.input_name = inputs[0].name
        self.input_size = _spatial_size(inputs[0].shape[1:3])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x}), strict=True))


def _export_to_onnx(model_or_path: ModelLike, onnx_dir: Path) -> Path:
    from classseg.export import export_onnx

    stem = Path(model_or_path).stem if isinstance(model_or_path, (str, Path)) else model_or_path.name
    onnx_dir.mkdir(parents=True, exist_ok=True)
    return Path(export_onnx(model_or_path, onnx_dir / f"{stem}.onnx").path)


def make_runner(model_or_path: ModelLike, backend: str = "keras",
                onnx_dir: str | Path | None = None) -> KerasRunner | OnnxRunner:
    """Runner for a keras.Model, a ``.keras`` file or a ``.onnx`` file.

    ``.onnx`` files always run in ONNX Runtime. With ``backend="onnx"`` a Keras model uses the
    ``.onnx`` file beside it when that is newer, else it is exported to ``onnx_dir`` (a temporary
    folder by default) with :func:`classseg.export.export_onnx`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if not isinstance(model_or_path, (str, Path)):
        if backend == "keras":
            return KerasRunner(model_or_path)
        return OnnxRunner(_export_to_onnx(model_or_path, Path(onnx_dir or tempfile.mkdtemp(prefix="classseg_onnx_"))))
    path = Path(model_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file does not exist")
    if path.suffix.lower() == ".onnx":
        return OnnxRunner(path)
    if backend == "keras":
        return KerasRunner(load_model(path))
    sibling = path.with_suffix(".onnx")
    if sibling.is_file() and sibling.stat().st_mtime >= path.stat().st_mtime:
        return OnnxRunner(sibling)
    return OnnxRunner(_export_to_onnx(path, Path(onnx_dir or tempfile.mkdtemp(prefix="classseg_onnx_"))))


def pick_output(outputs: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """The class (rank 2) or mask (rank 4) output: by name first, else by rank."""
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    for name, value in outputs.items():
        if kind in name.lower():
            return value
    rank = 2 if kind == "class" else 4
    matches = [v for v in outputs.values() if v.ndim == rank]
    if len(matches) != 1:
        raise ValueError(f"cannot tell which output is the {kind} output among {sorted(outputs)}")
    return matches[0]


def tumor_probability(scores: np.ndarray) -> np.ndarray:
    """P(tumor) from a 2-class softmax (index 1 = tumor) or a single sigmoid unit."""
    scores = scores.reshape(len(scores), -1)
    if scores.shape[1] == 2:
        return scores[:, 1].astype(np.float64)
    if scores.shape[1] == 1:
        return scores[:, 0].astype(np.float64)
    raise ValueError(f"classifier output has {scores.shape[1]} classes; expected 2 (softmax, index 1 = tumor)")


def run_batched(runner: KerasRunner | OnnxRunner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run float32 (N, S, S, 3) input through ``runner`` in batches; outputs concatenated by name."""
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
        for name, value in runner(batch).items():
            chunks.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}

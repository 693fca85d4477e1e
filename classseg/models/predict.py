"""Prediction on arrays: the one way classseg runs a model on a stack of slices.

Training (segmenter, gate, joint, classifiers), selection, run-all, the export checks and the pipeline
all call this module:

* :class:`KerasRunner` (one compiled ``model(x, training=False)``, traced once for any batch size) and
  :class:`OnnxRunner` (an ONNX Runtime session); :func:`make_runner` builds either from a model or a file;
* :func:`predict`: float32 batches through a runner, outputs concatenated and returned by role
  (``class`` (N, K) and / or ``mask`` (N, H, W, 1)) for classifier, segmenter and joint models alike,
  optionally averaged over test-time flips (:mod:`classseg.models.tta`);
* :func:`tumor_probability`: P(tumor) from a class output (the one rule, below);
* :func:`inference_ms_per_slice`: the latency figure of every run folder and benchmark.

Inputs are what the model is fed (raw 0..255 pixels or normalised values, as its card says), shape
(N, H, W, 3); any dtype, cast to float32 per batch. This module imports no training, evaluation or
pipeline code.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.models.loading import load_model
from classseg.utils.runtime import onnx_session

DEFAULT_INPUT_SIZE = 256  # used only for models whose input size is not fixed
BACKENDS = ("keras", "onnx")
OUTPUTS = ("class", "mask")  # the roles :func:`predict` names outputs by

ModelLike = Any  # keras.Model, or a path to a .keras / .onnx file


def _spatial_size(dims: Sequence[Any]) -> tuple[int, int]:
    h, w = dims
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE


def _as_dict(out: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
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
        self.channels = int(shape[3]) if shape[3] is not None else 3  # 3, or 3 per neighbour with slice context
        spec = tf.TensorSpec((None, shape[1], shape[2], self.channels), tf.float32)
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, x: Any) -> dict[str, np.ndarray]:
        """Raw outputs ``{output name: array}`` of one float32 batch (array or tensor)."""
        return _as_dict(self._fn(x), self.output_names)


class OnnxRunner:
    """An ONNX Runtime session (float32, intra-op threads = available cores, or ``threads``) called on a batch."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.session = onnx_session(self.path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: ONNX model has {len(inputs)} inputs; expected one image input")
        self.input_name = inputs[0].name
        self.input_size = _spatial_size(inputs[0].shape[1:3])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs ``{output name: array}`` of one float32 batch."""
        x = np.asarray(x, np.float32)
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x}), strict=True))


class EnsembleRunner:
    """The mean of K runners' raw outputs on the same batch: an ensemble's probabilities.

    ``p(x) = (1 / K) * sum_k p_k(x)`` per output (sigmoid mask or softmax class probabilities), the
    averaging of Lakshminarayanan et al. (2017, "deep ensembles") and of nnU-Net's folds. Members with one
    output each are averaged by position (their output layers may be named apart); members with several,
    by name. Summed in float64, returned as float32. Test-time flips (:func:`predict`) are linear, so
    flipping the ensemble equals averaging the flipped members."""

    def __init__(self, runners: Sequence[Any]) -> None:
        self.runners = list(runners)
        if not self.runners:
            raise ValueError("an ensemble needs at least one member")
        first = self.runners[0]
        self.name = "ensemble(" + ", ".join(str(getattr(r, "name", "?")) for r in self.runners) + ")"
        self.input_size = getattr(first, "input_size", (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))
        self.output_names = list(getattr(first, "output_names", []) or [])

    def __call__(self, x: Any) -> dict[str, np.ndarray]:
        """Mean raw outputs ``{output name: array}`` of one float32 batch (the first member's names)."""
        outs = [runner(x) for runner in self.runners]
        names = list(outs[0])
        total = {name: np.asarray(value, np.float64) for name, value in outs[0].items()}
        for k, out in enumerate(outs[1:], start=1):
            if len(out) == 1 and len(names) == 1:
                values = list(out.values())
            elif sorted(out) == sorted(names):
                values = [out[name] for name in names]
            else:
                raise ValueError(f"ensemble member {k} ({getattr(self.runners[k], 'name', '?')}) has outputs "
                                 f"{sorted(out)}, member 0 has {sorted(names)}")
            for name, value in zip(names, values, strict=True):
                value = np.asarray(value)
                if value.shape != total[name].shape:
                    raise ValueError(f"ensemble member {k}: output {name!r} of shape {value.shape}, member 0's "
                                     f"is {total[name].shape}")
                total[name] += value
        return {name: (value / len(outs)).astype(np.float32) for name, value in total.items()}


Runner = KerasRunner | OnnxRunner | EnsembleRunner


def _export_to_onnx(model_or_path: ModelLike, onnx_dir: Path) -> Path:
    from classseg.models.export import export_onnx

    stem = Path(model_or_path).stem if isinstance(model_or_path, (str, Path)) else model_or_path.name
    onnx_dir.mkdir(parents=True, exist_ok=True)
    return Path(export_onnx(model_or_path, onnx_dir / f"{stem}.onnx").path)


def make_runner(model_or_path: ModelLike, backend: str = "keras", onnx_dir: str | Path | None = None) -> Runner:
    """Runner for a keras.Model, a ``.keras`` file or a ``.onnx`` file.

    ``.onnx`` files always run in ONNX Runtime. With ``backend="onnx"`` a Keras model uses the
    ``.onnx`` file beside it when that is newer, else it is exported to ``onnx_dir`` (a temporary
    folder by default) with :func:`classseg.models.export.export_onnx`. A runner, or any other callable that
    is not a Keras model (``x -> {output name: array}``, e.g. a test double), is returned as it is.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(model_or_path, (KerasRunner, OnnxRunner, EnsembleRunner)) or (
            callable(model_or_path) and not hasattr(model_or_path, "layers")):
        return model_or_path
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
    """The ``class`` (rank 2) or ``mask`` (rank 4) output of raw outputs: the only one, else by name,
    else by rank."""
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


def named_outputs(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw outputs renamed by role: a single output is ``mask`` when of rank 4, else ``class``; with
    several, each role is found by :func:`pick_output`."""
    if len(outputs) == 1:
        value = next(iter(outputs.values()))
        return {"mask" if value.ndim == 4 else "class": value}
    return {kind: pick_output(outputs, kind) for kind in OUTPUTS}


def run_batched(runner: Runner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Raw outputs of ``runner`` on (N, H, W, 3) inputs, float32 batches of ``batch_size``, concatenated
    by output name. Empty ``x`` gives empty outputs of the right shape."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        return {k: v[:0] for k, v in runner(np.zeros((1, *x.shape[1:]), np.float32)).items()}
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
        for name, value in runner(batch).items():
            chunks.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def predict(model: ModelLike | Runner, x: np.ndarray, batch_size: int = 32, tta: str = "none",
            backend: str = "keras") -> dict[str, np.ndarray]:
    """A model's outputs on (N, H, W, 3) inputs, by role: ``class`` (N, K) and / or ``mask`` (N, H, W, 1).

    ``model``: a runner, a keras.Model or a model file (:func:`make_runner` with ``backend``); pass a
    runner to reuse its compiled call across calls. ``tta``: test-time flips averaged
    (:data:`classseg.models.tta.TTA_MODES`; masks are flipped back, class outputs averaged as they are).
    Outputs are float32 (as the model gives them).
    """
    from classseg.models.tta import tta_predict

    runner = make_runner(model, backend)
    out = tta_predict(lambda b: named_outputs(run_batched(runner, b, batch_size)), np.asarray(x), tta)
    assert isinstance(out, dict)
    return out


def tumor_probability(scores: Any) -> np.ndarray:
    """P(tumor) per slice, float64 (N,), from a class output.

    The rule: a 2-class softmax (N, 2) gives column 1 (index 1 = tumor); a single sigmoid unit
    (N, 1), or probabilities already of shape (N,), are P(tumor) as they are. Any other number of
    classes is an error (a 3-class output has no one tumor column).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim <= 1:
        return scores.reshape(-1)
    scores = scores.reshape(scores.shape[0], int(np.prod(scores.shape[1:])))
    if scores.shape[1] == 2:
        return scores[:, 1]
    if scores.shape[1] == 1:
        return scores[:, 0]
    raise ValueError(f"classifier output has {scores.shape[1]} classes; expected 2 (softmax, index 1 = tumor)"
                     " or 1 (sigmoid)")


def inference_ms_per_slice(model: ModelLike | Runner, images: np.ndarray, batch_size: int = 16,
                           min_seconds: float = 1.0, max_reps: int = 20) -> float:
    """Latency in ms per slice of a model's compiled call (or ONNX session) on batches of ``batch_size``.

    The batch is ``images`` repeated or cut to ``batch_size``, float32; one warm-up (trace) call, then
    at least 3 and up to ``max_reps`` timed calls, stopping after ``min_seconds``; every output is
    materialised. Returns the median call time divided by ``batch_size``.
    """
    runner = make_runner(model)
    x: Any = np.resize(np.asarray(images), (batch_size, *images.shape[1:])).astype(np.float32)
    if isinstance(runner, KerasRunner):
        import tensorflow as tf

        x = tf.constant(x)  # converted once, not in every timed call
    runner(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_seconds and len(times) < max_reps):
        t = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / batch_size * 1000.0


def member_paths(model_path: str | Path, card: Any) -> list[Path]:
    """The files of an ensemble card's other members (:attr:`classseg.models.card.ModelCard.ensemble`),
    relative to the card's folder, each checked against the SHA-256 the card records. Raises
    ``FileNotFoundError`` / ``ValueError`` naming the member; [] for a card without ensemble."""
    if card is None or not card.ensemble:
        return []
    return [_checked_file(model_path, entry, "ensemble member") for entry in card.ensemble]


def _checked_file(model_path: str | Path, entry: dict[str, str], what: str) -> Path:
    """The file a card names (``{"file", "sha256"}``) beside ``model_path``, checked against its SHA-256."""
    from classseg.models.card import model_sha256

    path = Path(model_path).parent / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} named by the card of {Path(model_path).name} is missing")
    digest = model_sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"{path}: {what}'s sha256 {digest[:12]}... is not the {entry['sha256'][:12]}... "
                         f"the card of {Path(model_path).name} records (replaced after the card was written?)")
    return path


def flair_only_runner(card: Any, model_path: str | Path | None, backend: str = "keras",
                      onnx_dir: str | Path | None = None) -> Runner | None:
    """The runner of the card's ``flair_only_model`` (checked against its SHA-256, run with ``backend``), or
    None when the card names none."""
    if card is None or not getattr(card, "flair_only_model", None):
        return None
    if model_path is None:
        raise ValueError("a card's flair_only_model is found beside its model file: give model_path")
    if Path(model_path).suffix.lower() == ".onnx":
        backend = "onnx"
    path = _checked_file(model_path, card.flair_only_model, "flair-only model")
    return make_runner(_member_file(path, backend), backend, onnx_dir)


def route_flair_only(probs: np.ndarray, rows: np.ndarray | None, flair_runner: Runner | None, x: np.ndarray,
                     batch_size: int, tta: str = "none") -> np.ndarray:
    """``probs`` (mask probabilities of the main model on ``x``) with the rows ``rows`` replaced by
    ``flair_runner``'s (:func:`predict` with the same flips); unchanged without a runner or flagged rows."""
    if flair_runner is None or rows is None or not np.any(rows):
        return probs
    out = np.array(probs, copy=True)
    out[rows] = predict(flair_runner, x[rows], batch_size, tta=tta)["mask"]
    return out


def _member_file(path: Path, backend: str) -> Path:
    """A member's ``.keras`` file, or with ``backend="onnx"`` its ``.onnx`` export beside it when that is newer
    (:func:`make_runner`'s rule; else :func:`make_runner` exports it)."""
    onnx = path.with_suffix(".onnx")
    newer = onnx.is_file() and onnx.stat().st_mtime >= path.stat().st_mtime
    return onnx if backend == "onnx" and newer else path


def ensemble_runner(model: ModelLike | Runner, card: Any, model_path: str | Path | None = None,
                    backend: str = "keras", onnx_dir: str | Path | None = None) -> Runner:
    """The runner the card asks for: ``model``'s own, or with ``card.ensemble`` an :class:`EnsembleRunner`
    over it and the card's other members (:func:`member_paths`, each run with ``backend``; a member without an
    ``.onnx`` beside it is exported to ``onnx_dir``). ``model_path``: where the card sits (default ``model``)."""
    base = make_runner(model, backend, onnx_dir)
    if card is None or not card.ensemble:
        return base
    where = model_path if model_path is not None else model
    if not isinstance(where, (str, Path)):
        raise ValueError("an ensemble card's members are found beside its model file: give model_path")
    if Path(where).suffix.lower() == ".onnx":
        backend = "onnx"  # an ONNX model's members run in ONNX Runtime too
    members = [make_runner(_member_file(p, backend), backend, onnx_dir) for p in member_paths(where, card)]
    return EnsembleRunner([base, *members])

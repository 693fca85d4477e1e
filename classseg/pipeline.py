"""Phase 3 of Class-Seg: gate every MRI slice with the classifier, outline the tumor only where it says so.

Duong-Trung et al. (seed 002), Algorithm 1, phase 3::

    for each image i:
        if model 1 (classifier) predicts i as non-defect: continue
        else: model 2 (segmenter) segments the defect region

Here "predicts tumor" means ``P(tumor) >= threshold`` on the classifier's 2-class softmax (index 1 =
tumor). The segmenter's sigmoid output is post-processed (:mod:`classseg.postprocess`) at the
model's resolution and resized back to each slice's original size with nearest-neighbour
interpolation. Slices are processed in batches through a compiled call (``tf.function`` around
``model(x, training=False)``) or an ONNX Runtime session, never one ``model.predict`` per image.

Command line (``classseg predict`` is an alias)::

    python -m classseg.pipeline --test-dir DIR [--out OUT] [--classifier PATH] [--segmenter PATH]
        [--joint PATH] [--threshold P] [--batch-size N] [--backend keras|onnx] [--no-overlays]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from classseg.atomic import atomic_write_text
from classseg.data.arrays import resize_image
from classseg.data.io import ImageReadError, is_image_file, is_mask_file, read_image, read_mask
from classseg.data.walk import pair_mask
from classseg.export import available_cores, export_onnx, load_model, onnx_session
from classseg.guards import (
    OutputError,
    check_can_create,
    check_not_inside,
    clear_unfinished,
    is_unfinished,
    mark_finished,
    mark_unfinished,
)
from classseg.modelcheck import ModelCheckError, load_checked
from classseg.postprocess import PostprocessConfig, postprocess
from classseg.runinfo import environment_info, read_json, write_json

DEFAULT_THRESHOLD = 0.5
DEFAULT_INPUT_SIZE = 256  # used only for models whose input size is not fixed
MODELS_ENV = "CLASSSEG_MODELS"
BACKENDS = ("keras", "onnx")
PREDICTION_COLUMNS = ["image", "tumor_probability", "verdict", "segmented", "tumor_area_px", "mask_path",
                      "overlay_path", "status", "error"]
TRAIN_HINT = ("train them first: `classseg run-all` (everything), or `classseg train-classifiers` and "
              "`classseg train-segmenter`, then put the chosen models at {dir}/classifier.keras and "
              "{dir}/segmenter.keras (or pass --classifier/--segmenter, or set $" + MODELS_ENV + ")")

ModelLike = Any  # keras.Model, or a path to a .keras / .onnx file


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class SlicePrediction:
    """The pipeline's answer for one slice; ``mask`` is uint8 {0,1} at the slice's original (H, W)."""

    tumor_probability: float
    verdict: str  # "tumor" or "no_tumor"
    segmented: bool
    mask: np.ndarray
    tumor_area_px: int


@dataclass
class BatchResult:
    """Arrays behind a list of :class:`SlicePrediction`, plus seconds spent per stage."""

    tumor_probability: np.ndarray  # (N,) float
    passed: np.ndarray  # (N,) bool, the gate's verdict P(tumor) >= threshold
    segmented: np.ndarray  # (N,) bool, the segmenter output was computed for the slice
    masks: list[np.ndarray]  # uint8 (H_i, W_i) {0,1}; all zero where not segmented
    timings: dict[str, float] = field(default_factory=dict)

    def slice_predictions(self) -> list[SlicePrediction]:
        """One :class:`SlicePrediction` per slice."""
        return [SlicePrediction(float(p), "tumor" if ok else "no_tumor", bool(seg), mask, int(mask.sum()))
                for p, ok, seg, mask in zip(self.tumor_probability, self.passed, self.segmented, self.masks,
                                                    strict=True)]


# --------------------------------------------------------------------------------------------
# Model runners: one compiled batch call per backend, outputs returned by name
# --------------------------------------------------------------------------------------------
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
        self.session = onnx_session(self.path)  # intra-op threads = available cores, float32
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: ONNX model has {len(inputs)} inputs; expected one image input")
        self.input_name = inputs[0].name
        self.input_size = _spatial_size(inputs[0].shape[1:3])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x}), strict=True))


def _export_to_onnx(model_or_path: ModelLike, onnx_dir: Path) -> Path:
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


def _pick_output(outputs: dict[str, np.ndarray], kind: str) -> np.ndarray:
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


def _tumor_probability(scores: np.ndarray) -> np.ndarray:
    """P(tumor) from a 2-class softmax (index 1 = tumor) or a single sigmoid unit."""
    scores = scores.reshape(len(scores), -1)
    if scores.shape[1] == 2:
        return scores[:, 1].astype(np.float64)
    if scores.shape[1] == 1:
        return scores[:, 0].astype(np.float64)
    raise ValueError(f"classifier output has {scores.shape[1]} classes; expected 2 (softmax, index 1 = tumor)")


def _run_batched(runner: KerasRunner | OnnxRunner, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run uint8 (N, S, S, 3) images through ``runner`` in float32 batches; outputs concatenated by name."""
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].astype(np.float32)
        for name, value in runner(x).items():
            chunks.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


# --------------------------------------------------------------------------------------------
# Gate threshold sidecar
# --------------------------------------------------------------------------------------------
def sidecar_candidates(model_path: str | Path) -> list[Path]:
    """JSON files that may describe a model, in order: ``<stem>.json``, ``<name>.json``, ``manifest.json``."""
    path = Path(model_path)
    return [path.with_suffix(".json"), path.with_name(path.name + ".json"), path.parent / "manifest.json"]


def _gate_from_results(results_json: Path, model_path: Path) -> float | None:
    """``gate.threshold`` of a ``train-classifiers`` results.json whose ``gate.model`` is this model."""
    try:
        gate = read_json(results_json).get("gate") or {}
        same = Path(gate.get("model", "")).resolve() == model_path.resolve()
    except (ValueError, OSError, AttributeError, TypeError):
        return None
    return float(gate["threshold"]) if same and gate.get("threshold") is not None else None


def sidecar_threshold(model_path: str | Path) -> tuple[float | None, Path | None]:
    """``gate_threshold`` from the first of :func:`sidecar_candidates` that has one, else the
    ``gate.threshold`` chosen on validation by ``classseg train-classifiers`` (``../results.json``)
    when this model is the gate it selected."""
    path = Path(model_path)
    for candidate in sidecar_candidates(path):
        if not candidate.is_file():
            continue
        try:
            data = read_json(candidate)
        except (ValueError, OSError):
            continue
        if isinstance(data, dict) and data.get("gate_threshold") is not None:
            value = float(data["gate_threshold"])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{candidate}: gate_threshold {value} is outside [0, 1]")
            return value, candidate
    results = path.parent.parent / "results.json"
    value = _gate_from_results(results, path) if results.is_file() else None
    return (value, results) if value is not None else (None, None)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (H, W) like training does: area interpolation when shrinking, linear otherwise."""
    h, w = size
    if h == w:
        return resize_image(image, h)  # same interpolation as training (classseg.data.load_arrays)
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        checked.append(image)
    return checked


class ClassSegPipeline:
    """Gated Class-Seg inference: classifier gate, segmenter on the slices it passes, post-processing.

    ``classifier`` / ``segmenter`` (or ``joint``) are keras.Model objects or paths to ``.keras`` / ``.onnx``
    files taking raw RGB float32 0..255 at their own input size. ``threshold=None`` reads
    ``gate_threshold`` from a JSON sidecar beside the classifier (:func:`sidecar_threshold`), else 0.5.
    """

    def __init__(self, classifier: ModelLike = None, segmenter: ModelLike = None, threshold: float | None = None,
                 postprocess: PostprocessConfig | None = None, batch_size: int = 16, backend: str = "keras", *,
                 joint: ModelLike = None, onnx_dir: str | Path | None = None) -> None:
        if joint is None and (classifier is None or segmenter is None):
            raise ValueError("give a classifier and a segmenter, or a joint model (ClassSegPipeline.from_joint)")
        if joint is not None and (classifier is not None or segmenter is not None):
            raise ValueError("give either a joint model or a classifier + segmenter, not both")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.batch_size = int(batch_size)
        self.postprocess_config = postprocess if postprocess is not None else PostprocessConfig()
        gate_model = joint if joint is not None else classifier
        self.sources = {k: _describe(v) for k, v in
                        (("classifier", classifier), ("segmenter", segmenter), ("joint", joint)) if v is not None}
        if threshold is None:
            found, where = sidecar_threshold(gate_model) if isinstance(gate_model, (str, Path)) else (None, None)
            threshold = DEFAULT_THRESHOLD if found is None else found
            self.threshold_source = "default" if found is None else str(where)
        else:
            self.threshold_source = "argument"
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        # Each model is loaded on its own and checked against its role (issue 13: a classifier given as
        # segmenter, a 3-class classifier, a corrupt file) - errors name that one model.
        def load(role: str, model: ModelLike) -> KerasRunner | OnnxRunner | None:
            return None if model is None else load_checked(role, model, lambda m: make_runner(m, backend, onnx_dir))

        self._joint = load("joint", joint)
        self._classifier = load("classifier", classifier)
        self._segmenter = load("segmenter", segmenter)

    @classmethod
    def from_joint(cls, model_or_path: ModelLike, threshold: float | None = None,
                   postprocess: PostprocessConfig | None = None, batch_size: int = 16, backend: str = "keras",
                   onnx_dir: str | Path | None = None) -> ClassSegPipeline:
        """Pipeline on a joint model (outputs ``class`` and ``mask``), gating on its own class output."""
        return cls(threshold=threshold, postprocess=postprocess, batch_size=batch_size, backend=backend,
                   joint=model_or_path, onnx_dir=onnx_dir)

    @property
    def is_joint(self) -> bool:
        """True when one joint model gives both the class and the mask."""
        return self._joint is not None

    def describe(self) -> dict[str, Any]:
        """Model sources, backend, threshold (and where it came from), post-processing, batch size."""
        onnx_files = {f"{kind}_onnx": str(runner.path) for kind, runner in
                      (("classifier", self._classifier), ("segmenter", self._segmenter), ("joint", self._joint))
                      if isinstance(runner, OnnxRunner)}
        return {**self.sources, **onnx_files, "backend": self.backend, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "postprocess": asdict(self.postprocess_config),
                "batch_size": self.batch_size}

    def warmup(self) -> float:
        """Trace / initialise every model once on a zero batch; returns the seconds it took."""
        start = time.perf_counter()
        for runner in (self._joint, self._classifier, self._segmenter):
            if runner is not None:
                runner(np.zeros((1, *runner.input_size, 3), np.float32))
        return time.perf_counter() - start

    # -- stages -------------------------------------------------------------------------------
    def _masks_from_probs(self, probs: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        if len(probs) == 0:
            return []
        binary = postprocess(probs, self.postprocess_config).reshape(len(probs), *probs.shape[1:3])
        return [m if m.shape == shape else cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
                for m, shape in zip(binary, shapes, strict=True)]

    def _resized(self, images: list[np.ndarray], size: tuple[int, int], cache: dict) -> np.ndarray:
        if size not in cache:
            out = np.empty((len(images), *size, 3), np.uint8)
            for i, image in enumerate(images):
                out[i] = resize_to(image, size)
            cache[size] = out
        return cache[size]

    def infer(self, images: Sequence[np.ndarray], segment_all: bool = False) -> BatchResult:
        """Classify every slice, segment those with P(tumor) >= threshold (all with ``segment_all``).

        Timings (seconds): ``resize`` (once per model input size), ``classify``, ``segment``,
        ``postprocess`` (threshold + morphology + resize back with nearest neighbour).
        """
        images = _check_images(images)
        n = len(images)
        shapes = [im.shape[:2] for im in images]
        timings = {"resize": 0.0, "classify": 0.0, "segment": 0.0, "postprocess": 0.0}
        cache: dict = {}
        empty = BatchResult(np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), [], timings)
        if n == 0:
            return empty
        gate = self._joint or self._classifier
        t = time.perf_counter()
        x = self._resized(images, gate.input_size, cache)
        timings["resize"] += time.perf_counter() - t
        t = time.perf_counter()
        outputs = _run_batched(gate, x, self.batch_size)
        prob = _tumor_probability(_pick_output(outputs, "class"))
        timings["classify"] += time.perf_counter() - t
        passed = prob >= self.threshold
        todo = np.arange(n) if segment_all else np.flatnonzero(passed)
        if self._joint is not None:
            mask_probs = _pick_output(outputs, "mask")[todo]
        else:
            t = time.perf_counter()
            xs = self._resized(images, self._segmenter.input_size, cache)[todo]
            timings["resize"] += time.perf_counter() - t
            t = time.perf_counter()
            mask_probs = _pick_output(_run_batched(self._segmenter, xs, self.batch_size), "mask") if len(todo) \
                else np.zeros((0, *self._segmenter.input_size, 1), np.float32)
            timings["segment"] += time.perf_counter() - t
        t = time.perf_counter()
        computed = self._masks_from_probs(mask_probs, [shapes[i] for i in todo])
        masks = [np.zeros(shape, np.uint8) for shape in shapes]
        for i, mask in zip(todo, computed, strict=True):
            masks[i] = mask
        timings["postprocess"] += time.perf_counter() - t
        segmented = np.zeros(n, bool)
        segmented[todo] = True
        return BatchResult(prob, passed, segmented, masks, timings)

    def predict(self, images: Sequence[np.ndarray], segment_all: bool = False) -> list[SlicePrediction]:
        """One :class:`SlicePrediction` per uint8 (H, W, 3) RGB image (masks at the original size)."""
        return self.infer(images, segment_all=segment_all).slice_predictions()

    def segment_timed(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, float]]:
        """Segmenter alone on every image (no gate): post-processed masks at original size, and timings."""
        images = _check_images(images)
        timings = {"resize": 0.0, "segment": 0.0, "postprocess": 0.0}
        if not images:
            return [], timings
        runner = self._joint or self._segmenter
        t = time.perf_counter()
        x = self._resized(images, runner.input_size, {})
        timings["resize"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = _pick_output(_run_batched(runner, x, self.batch_size), "mask")
        timings["segment"] = time.perf_counter() - t
        t = time.perf_counter()
        masks = self._masks_from_probs(probs, [im.shape[:2] for im in images])
        timings["postprocess"] = time.perf_counter() - t
        return masks, timings

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Segmenter alone on every image: uint8 {0,1} masks at the original sizes."""
        return self.segment_timed(images)[0]


def _describe(model: ModelLike) -> str:
    if isinstance(model, (str, Path)):
        return str(Path(model).resolve())
    return f"<in-memory keras model {getattr(model, 'name', '?')!r}>"


# --------------------------------------------------------------------------------------------
# Folder walking
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputSlice:
    """One input image: absolute path, path relative to the test folder, patient, ground-truth mask."""

    path: Path
    relative: Path
    patient: str
    mask_path: Path | None
    note: str = ""  # why the ground truth is not used (an ambiguous mask pairing), else ""


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``slice_2`` before ``slice_10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


def find_inputs(test_dir: str | Path) -> tuple[list[InputSlice], list[dict[str, str]]]:
    """Walk ``test_dir`` recursively for images (.tif/.tiff/.png/.jpg/.jpeg, any case).

    ``<stem>_mask.<ext>`` files are ground truth for ``<stem>`` and never inputs. Anything else is
    returned in the skipped list (``{"path", "reason"}``). Patient = the top-level folder under
    ``test_dir`` (the folder's own name for files directly in it). Order: patient, then natural
    order of the relative path (numeric slice order).
    """
    root = Path(test_dir)
    inputs: list[InputSlice] = []
    skipped: list[dict[str, str]] = []
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # symlinked patient folders count
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in seen)
        seen.update(os.path.realpath(os.path.join(dirpath, d)) for d in dirnames)  # no link loops
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(root)
            if not is_image_file(path):
                skipped.append({"path": relative.as_posix(),
                                "reason": f"not an image (extension {path.suffix or 'none'!r})"})
            elif is_mask_file(path):
                stem = path.stem[: -len("_mask")]
                if not any(is_image_file(p) and not is_mask_file(p) and p.stem == stem for p in path.parent.iterdir()):
                    skipped.append({"path": relative.as_posix(), "reason": "ground-truth mask without its image"})
            else:
                patient = relative.parts[0] if len(relative.parts) > 1 else root.resolve().name
                mask, note = pair_mask(path, filenames)  # same stem twice beside one mask: never silent
                note = f"ground truth not used: {note}" if note else ""
                inputs.append(InputSlice(path, relative, patient, mask, note))
    inputs.sort(key=lambda s: (natural_key(s.patient), tuple(natural_key(p) for p in s.relative.parts)))
    return inputs, skipped


def output_names(inputs: Sequence[InputSlice]) -> dict[Path, Path]:
    """Relative PNG name per input: the suffix replaced by ``.png`` (``.<ext>.png`` where that would clash)."""
    replaced = {s.relative: s.relative.with_suffix(".png") for s in inputs}
    counts: dict[Path, int] = {}
    for name in replaced.values():
        counts[name] = counts.get(name, 0) + 1
    return {rel: (name if counts[name] == 1 else rel.with_name(rel.name + ".png")) for rel, name in replaced.items()}


# --------------------------------------------------------------------------------------------
# Writing results
# --------------------------------------------------------------------------------------------
def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    buffer.tofile(str(path))  # copes with non-ASCII paths, unlike cv2.imwrite


def draw_overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """BGR overlay: predicted outline in red, ground-truth outline in green (cv2.drawContours)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for m, color in ((truth, (0, 255, 0)), (mask, (0, 0, 255))):
        if m is not None and m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, color, 1)
    return canvas


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    from classseg.atomic import atomic_open

    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------
# Metrics (when ground truth exists)
# --------------------------------------------------------------------------------------------
def _per_slice_rate(seconds: float, n: int) -> dict[str, float]:
    return {"ms_per_slice": 1000.0 * seconds / n if n else float("nan"),
            "slices_per_s": n / seconds if seconds > 0 else float("nan"), "seconds": seconds, "slices": n}


def _common_stack(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W) stack; smaller masks are zero-padded bottom/right (Dice, IoU and surface distances unchanged)."""
    out = np.zeros((len(masks), *shape), np.uint8)
    for i, m in enumerate(masks):
        out[i, : m.shape[0], : m.shape[1]] = m
    return out


def evaluate_variants(truths: list[np.ndarray], all_masks: list[np.ndarray], passed: np.ndarray,
                      prob: np.ndarray, patients: list[str], threshold: float) -> dict[str, Any]:
    """Gated vs segment-every-slice figures from the same segmenter outputs.

    ``all_masks`` holds the segmenter's (post-processed) mask for every slice; the gated variant
    empties those whose P(tumor) < threshold. Classification of the gate uses ``prob``; the
    segment-all variant's own verdict is "mask non-empty" (a single operating point, so its AUC
    is that of a binary score).
    """
    from classseg.evaluation.classification import classification_metrics
    from classseg.evaluation.segmentation import segmentation_report

    y_true = np.array([t.any() for t in truths], dtype=int)
    found_all = np.array([m.any() for m in all_masks], dtype=float)
    shape = (max(t.shape[0] for t in truths), max(t.shape[1] for t in truths))
    truths = _common_stack(truths, shape)
    all_masks = _common_stack(all_masks, shape)
    gated_masks = all_masks * passed[:, None, None].astype(np.uint8)
    gated = {**classification_metrics(y_true, prob, threshold),
             **segmentation_report(gated_masks, truths, patients)}
    segment_all = {**classification_metrics(y_true, found_all, 0.5),
                   **segmentation_report(all_masks, truths, patients)}
    for section in (gated, segment_all):
        section["dice_end_to_end"] = section.get("dice_all_slices")
    tumor = y_true.astype(bool)
    effect = {
        "tumor_slices": int(tumor.sum()),
        "non_tumor_slices": int((~tumor).sum()),
        "tumor_slices_not_segmented_by_gate": int((tumor & ~passed).sum()),
        "non_tumor_slices_with_mask_gated": int((gated_masks.any(axis=(1, 2)) & ~tumor).sum()),
        "non_tumor_slices_with_mask_segment_all": int((all_masks.any(axis=(1, 2)) & ~tumor).sum()),
        "segmenter_calls_gated": int(passed.sum()),
        "segmenter_calls_segment_all": len(all_masks),
    }
    return {"gated": gated, "segment_all": segment_all, "gating_effect": effect,
            "notes": {"segment_all_classification": "verdict = predicted mask non-empty",
                      "dice_all_slices": "end-to-end per-slice Dice over every slice, empty vs empty = 1"}}


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """metrics.md: gated vs segment-all table, gating effect, timing and the run's labelling."""
    keys = [("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
            ("f1_macro", "F1 (macro)"), ("auc", "AUC"), ("dice", "Dice (GT tumor slices)"),
            ("iou", "IoU (GT tumor slices)"), ("hd95", "HD95 px (GT tumor slices)"),
            ("dice_all_slices", "Dice per slice, end to end (empty vs empty = 1)"),
            ("dice_per_patient", "Dice per patient (volume)"), ("ms_per_slice", "ms / slice (models)"),
            ("slices_per_s", "slices / s (models)")]
    g, a = metrics["gated"], metrics["segment_all"]
    lines = ["# Class-Seg pipeline on " + str(metrics["data"]["test_dir"]), "",
             "| Metric | Gated (classifier -> segmenter) | Segment every slice |", "|---|---|---|"]
    lines += [f"| {label} | {_fmt(g.get(key))} | {_fmt(a.get(key))} |" for key, label in keys]
    lines += ["", "## What gating gains and loses", "", "| | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in metrics["gating_effect"].items()]
    m, d = metrics["models"], metrics["data"]
    lines += ["", "## How these figures were obtained", "",
              f"- Models: {', '.join(f'{k} `{m[k]}`' for k in ('classifier', 'segmenter', 'joint') if k in m)}; "
              f"backend {m['backend']}; gate threshold {m['threshold']} ({m['threshold_source']}); "
              f"post-processing {m['postprocess']}; batch size {m['batch_size']}.",
              f"- Data: {d['ok']} slices read ({d['errors']} unreadable) from {d['patients']} patients; "
              f"{d['with_ground_truth']} with ground truth, {metrics['gating_effect']['tumor_slices']} of them tumor.",
              "- Segment-every-slice: the segmenter run once on every slice; the gated figures empty the masks of "
              "slices the classifier calls no tumor (same segmenter outputs). Its classification verdict is "
              "'mask non-empty'.",
              f"- Timing: 'models' = resize, inference, post-processing (model warm-up excluded); gated "
              f"end to end incl. reading and writing files "
              f"{_fmt(metrics['timing']['end_to_end']['ms_per_slice'])} ms/slice. "
              f"Machine: {metrics['environment'].get('cpu')} ({metrics['environment'].get('cpu_count')} CPUs).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def model_info(models: dict[str, Path]) -> dict[str, Any]:
    """Contents of the JSON sidecar / manifest beside each model (how it was trained), when there is one."""
    info: dict[str, Any] = {}
    for kind, path in models.items():
        path = Path(path)
        for candidate in sidecar_candidates(path):
            if candidate.is_file():
                try:
                    info[kind] = {"file": str(candidate), "content": read_json(candidate)}
                except (ValueError, OSError):
                    continue
                break
    return info


def default_models_dir() -> Path:
    """``$CLASSSEG_MODELS`` or the repository's ``saved_models/``."""
    env = os.environ.get(MODELS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "saved_models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m classseg.pipeline`` and ``classseg predict``."""
    parser.add_argument("--test-dir", required=True, type=Path,
                        help="folder of MRI slices (searched recursively; <stem>_mask.<ext> = ground truth)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ./classseg_out_<timestamp>); must not be inside --test-dir")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="classifier .keras/.onnx (default: saved_models/classifier.keras or $CLASSSEG_MODELS)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="segmenter .keras/.onnx (default: saved_models/segmenter.keras or $CLASSSEG_MODELS)")
    parser.add_argument("--joint", type=Path, default=None,
                        help="joint model (class + mask outputs) instead of --classifier/--segmenter")
    parser.add_argument("--threshold", type=float, default=None,
                        help="gate threshold on P(tumor) (default: gate_threshold in the model's JSON sidecar, "
                             "else 0.5)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per model call (default 16)")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend (default keras)")
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m classseg.pipeline`` parser."""
    parser = argparse.ArgumentParser(prog="python -m classseg.pipeline", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def _resolve_out(out: Path | None, test_dir: Path) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path.cwd() / f"classseg_out_{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = Path.cwd() / f"classseg_out_{stamp}_{n}"
    resolved = out.resolve()
    if resolved == test_dir or test_dir in resolved.parents:
        raise SystemExit(f"refusing to write into the test folder: output {resolved} is inside {test_dir}; "
                         "choose --out elsewhere")
    try:  # issue 13: also patient folders reached through symbolic links; a half-written earlier output
        check_not_inside(resolved, test_dir, "the test folder")
        if resolved.is_dir() and is_unfinished(resolved):
            clear_unfinished(resolved)
            print(f"note: {resolved} held the unfinished output of an interrupted run; replacing it",
                  file=sys.stderr)
    except OutputError as err:
        raise SystemExit(str(err)) from None
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())):
        raise SystemExit(f"output {resolved} already exists and is not an empty folder; choose another --out")
    return resolved


def _resolve_models(args: argparse.Namespace) -> dict[str, Path]:
    if args.joint is not None:
        if args.classifier is not None or args.segmenter is not None:
            raise SystemExit("give either --joint or --classifier/--segmenter, not both")
        models = {"joint": args.joint}
    else:
        folder = default_models_dir()
        models = {"classifier": args.classifier or folder / "classifier.keras",
                  "segmenter": args.segmenter or folder / "segmenter.keras"}
    for kind, path in models.items():
        if not Path(path).is_file():
            hint = (TRAIN_HINT.format(dir=default_models_dir()) if kind != "joint"
                    else "train one with `classseg train-joint`")
            raise SystemExit(f"{kind} model not found: {path}; {hint}")
    return models


def _read_slice(item: InputSlice) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image, ground truth or None, error message or '')."""
    try:
        image = read_image(item.path)
    except (ImageReadError, OSError) as err:
        return None, None, str(err)
    if item.mask_path is None:
        return image, None, ""
    try:
        return image, read_mask(item.mask_path, shape=image.shape[:2]), ""
    except (ImageReadError, OSError) as err:
        return image, None, f"ground truth not used: {err}"


@dataclass
class _Collected:
    rows: list[dict[str, Any]] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)
    all_masks: list[np.ndarray] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    gated_s: float = 0.0
    slices: int = 0
    segment_all_s: float = 0.0  # over the patients with ground truth (where segment-all is run)
    segment_all_slices: int = 0
    extra_pass_s: float = 0.0  # the evaluation-only segmenter pass on slices the gate stopped


def _process_patient(pipe: ClassSegPipeline, items: list[InputSlice], names: dict[Path, Path], out: Path,
                     overlays: bool, pool: ThreadPoolExecutor, acc: _Collected) -> None:
    loaded = list(pool.map(_read_slice, items))
    good = [i for i, (image, _, _) in enumerate(loaded) if image is not None]
    images = [loaded[i][0] for i in good]
    has_truth = any(loaded[i][1] is not None for i in good)
    result = pipe.infer(images, segment_all=has_truth and pipe.is_joint)
    t = result.timings
    stage_s = t["resize"] + t["classify"] + t["segment"] + t["postprocess"]
    all_masks = list(result.masks)
    extra_s = 0.0
    if has_truth and not pipe.is_joint:  # one extra segmenter pass on the slices the gate stopped
        rest = np.flatnonzero(~result.segmented)
        extra, et = pipe.segment_timed([images[i] for i in rest])
        extra_s = sum(et.values())
        acc.extra_pass_s += extra_s
        for i, mask in zip(rest, extra, strict=True):
            all_masks[i] = mask
    acc.gated_s += stage_s
    acc.slices += len(images)
    if has_truth:  # segment every slice = resize + segmenter on all + post-processing (no classifier)
        acc.segment_all_s += stage_s if pipe.is_joint else stage_s - t["classify"] + extra_s
        acc.segment_all_slices += len(images)
    position = {i: k for k, i in enumerate(good)}
    for i, (item, (image, truth, error)) in enumerate(zip(items, loaded, strict=True)):
        row = dict.fromkeys(PREDICTION_COLUMNS, "")
        row.update(image=item.relative.as_posix(), status="error" if image is None else "ok",
                   error=error or item.note)
        if image is not None:
            k = position[i]
            mask = all_masks[k] if result.passed[k] else np.zeros(image.shape[:2], np.uint8)
            mask_rel = Path("masks") / names[item.relative]
            _write_png(out / mask_rel, mask * np.uint8(255))
            row.update(tumor_probability=f"{result.tumor_probability[k]:.6f}",
                       verdict="tumor" if result.passed[k] else "no_tumor", segmented=bool(result.passed[k]),
                       tumor_area_px=int(mask.sum()), mask_path=mask_rel.as_posix())
            if overlays:
                overlay_rel = Path("overlays") / names[item.relative]
                _write_png(out / overlay_rel, draw_overlay(image, mask, truth))
                row["overlay_path"] = overlay_rel.as_posix()
            if truth is not None:
                acc.truths.append(truth)
                acc.all_masks.append(all_masks[k])
                acc.passed.append(bool(result.passed[k]))
                acc.probs.append(float(result.tumor_probability[k]))
                acc.patients.append(item.patient)
        acc.rows.append(row)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline over ``args.test_dir``; 0 when at least one slice was processed."""
    from tqdm.auto import tqdm

    test_dir = Path(args.test_dir).resolve()
    if not test_dir.is_dir():
        raise SystemExit(f"--test-dir {args.test_dir}: not an existing folder")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size {args.batch_size}: must be at least 1")
    out = _resolve_out(args.out, test_dir)
    try:
        check_can_create(out)  # before the models load: an unwritable --out is one line, not a traceback
    except OutputError as err:
        raise SystemExit(str(err)) from None
    models = _resolve_models(args)
    inputs, skipped = find_inputs(test_dir)
    if not inputs:
        raise SystemExit(f"no images (.tif/.tiff/.png/.jpg/.jpeg) found in {test_dir}")
    try:
        kwargs = dict(threshold=args.threshold, batch_size=args.batch_size, backend=args.backend,
                      onnx_dir=out / "onnx")
        pipe = (ClassSegPipeline.from_joint(models["joint"], **kwargs) if "joint" in models
                else ClassSegPipeline(models["classifier"], models["segmenter"], **kwargs))
    except ModelCheckError as err:  # names the one model at fault and the problem
        raise SystemExit(f"error: {err}") from None
    except Exception as err:  # noqa: BLE001 - any load/convert failure is reported in one line
        raise SystemExit(f"cannot load the models ({', '.join(map(str, models.values()))}): "
                         f"{type(err).__name__}: {err}") from err
    out.mkdir(parents=True, exist_ok=True)
    mark_unfinished(out, test_dir=str(test_dir))  # removed once predictions.csv and summary.json are written
    _write_csv(out / "skipped.csv", skipped, ["path", "reason"])
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not input images (listed in {out / 'skipped.csv'})",
              file=sys.stderr)
    warmup_s = pipe.warmup()
    names = output_names(inputs)
    acc = _Collected()
    by_patient: dict[str, list[InputSlice]] = {}
    for item in inputs:
        by_patient.setdefault(item.patient, []).append(item)
    start = time.perf_counter()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=min(8, 2 * available_cores())) as pool, \
                tqdm(total=len(inputs), unit="slice", desc="Class-Seg") as bar:
            for patient, items in by_patient.items():
                bar.set_postfix_str(patient[-24:])
                _process_patient(pipe, items, names, out, not args.no_overlays, pool, acc)
                bar.update(len(items))
                done += 1
    except KeyboardInterrupt:
        if getattr(args, "reraise_interrupt", False):  # run-all phase 3: run-all says what was finished
            raise
        print(f"interrupted (Ctrl-C) after {done} of {len(by_patient)} patients; no predictions.csv was written "
              f"and {out} is marked unfinished: run the same command again to replace it", file=sys.stderr)
        return 130
    wall_s = time.perf_counter() - start
    _write_csv(out / "predictions.csv", acc.rows, PREDICTION_COLUMNS)
    n_ok = sum(r["status"] == "ok" for r in acc.rows)
    timing = {"gated": _per_slice_rate(acc.gated_s, acc.slices),
              "end_to_end": _per_slice_rate(wall_s - acc.extra_pass_s, len(inputs)), "warmup_s": warmup_s,
              "wall_s": wall_s, "evaluation_extra_pass_s": acc.extra_pass_s,
              "notes": "models = resize + inference + post-processing; end_to_end = reading, models, writing "
                       "masks/overlays, excluding the evaluation-only segment-all pass; warm-up excluded"}
    data = {"test_dir": str(test_dir), "images": len(inputs), "ok": n_ok, "errors": len(inputs) - n_ok,
            "skipped": len(skipped), "patients": len(by_patient), "with_ground_truth": len(acc.truths)}
    summary = {"data": data, "models": pipe.describe(), "model_info": model_info(models), "timing": timing,
               "environment": environment_info()}
    if acc.truths:
        timing["segment_all"] = _per_slice_rate(acc.segment_all_s, acc.segment_all_slices)
        metrics = {**evaluate_variants(acc.truths, acc.all_masks, np.array(acc.passed), np.array(acc.probs),
                                       acc.patients, pipe.threshold), **summary}
        for variant in ("gated", "segment_all"):
            metrics[variant].update({k: timing[variant][k] for k in ("ms_per_slice", "slices_per_s")})
        write_json(out / "metrics.json", metrics)
        atomic_write_text(out / "metrics.md", metrics_markdown(metrics))
    write_json(out / "summary.json", summary)
    mark_finished(out)
    print(f"{n_ok}/{len(inputs)} slices processed, {len(inputs) - n_ok} unreadable; "
          f"{sum(r['verdict'] == 'tumor' for r in acc.rows)} called tumor; "
          f"{timing['gated']['ms_per_slice']:.1f} ms/slice (models), results in {out}")
    if n_ok == 0:
        print(f"error: none of the {len(inputs)} images could be read (see {out / 'predictions.csv'})",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m classseg.pipeline``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before the slices were processed; an output folder it created is marked "
              "unfinished and the same command replaces it", file=sys.stderr)
        return 130
    except OSError as err:  # an output that cannot be written, a full disk: one line
        from classseg.guards import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The pipeline's view of a model: its runner, its card, how to feed it, and its gate threshold.

With a model card (:mod:`classseg.models.card`, ``<model>.card.json``) the card decides the input size
and normalisation (:func:`classseg.data.standardize.prepare_input`, per patient), the probability
threshold, the post-processing and the gate rule. Without one, the model gets raw 0..255 pixels at
its own input size and the gate threshold comes from a JSON sidecar (:func:`sidecar_threshold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from classseg.data.arrays import resize_image
from classseg.data.context import context_channels
from classseg.data.standardize import flair_only_rows, prepare_input
from classseg.models.card import CardMismatchError, ModelCard, check_card, read_card
from classseg.models.check import ModelCheckError, load_checked
from classseg.models.predict import (
    ModelLike,
    Runner,
    ensemble_runner,
    flair_only_runner,
    make_runner,
    predict,
    route_flair_only,
)
from classseg.utils.jsonio import read_json


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (H, W) like training does: area interpolation when shrinking, linear otherwise."""
    h, w = size
    if h == w:
        return resize_image(image, h)  # the training resize (classseg.data.load_arrays)
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def describe_source(model: ModelLike) -> str:
    """Absolute path of a model file, or a label for an in-memory model."""
    if isinstance(model, (str, Path)):
        return str(Path(model).resolve())
    return f"<in-memory keras model {getattr(model, 'name', '?')!r}>"


@dataclass
class PipelineModel:
    """A runner plus the card that says how to feed it (None: raw pixels at the model's own size)."""

    runner: Runner
    card: ModelCard | None
    source: str
    flair_runner: Runner | None = None  # the card's flair_only_model (patients missing pre- and post-contrast)

    @classmethod
    def load(cls, model: ModelLike, backend: str = "keras", onnx_dir: str | Path | None = None,
             card: ModelCard | None = None, role: str | None = None) -> PipelineModel:
        """Runner for ``model``; ``card`` given, or read from beside the model file (``read_card``).

        With ``role`` (``classifier`` / ``segmenter`` / ``joint``) the file and the loaded model are
        checked for it (:func:`classseg.models.check.load_checked`): a corrupt file, a classifier given
        as segmenter or a 3-class classifier is a :class:`classseg.models.check.ModelCheckError` naming
        this one model.
        """
        is_file = isinstance(model, (str, Path))
        card_given = card is not None
        if not card_given and is_file:
            try:  # a card that is not valid (wrong type, unknown field) is refused before the model loads
                card = read_card(model)
            except ValueError as err:
                raise ModelCheckError(f"{role or 'model'} {model}: {err}") from None
        if role is not None:
            runner = load_checked(role, model, lambda m: make_runner(m, backend, onnx_dir))
        else:
            runner = make_runner(model, backend, onnx_dir)
        # the card must be this model's (issue 20): role, input size, and the hash of the file it sits beside
        try:
            from classseg.models.check import signature_of

            shape = signature_of(runner).inputs[0]
            input_hw, channels = tuple(shape[1:3]), shape[3]
        except Exception:  # noqa: BLE001 - a runner without a readable signature: size not checked
            input_hw, channels = None, None
        if card is not None and isinstance(channels, int) and channels != context_channels(card.context_slices):
            raise ModelCheckError(f"{role or 'model'} {describe_source(model)}: the model takes {channels} input "
                                  f"channels but its card says context_slices {card.context_slices} "
                                  f"({context_channels(card.context_slices)} channels): the card belongs to another "
                                  "model")
        try:
            notes = check_card(card, role, model if is_file and not card_given else None, input_hw)
        except CardMismatchError as err:
            raise ModelCheckError(f"{role or 'model'} {describe_source(model)}: {err}") from None
        if card is not None and card.ensemble:  # the card's other members, averaged with this model
            try:
                runner = ensemble_runner(runner, card, model if is_file else None, backend, onnx_dir)
            except (OSError, ValueError) as err:
                raise ModelCheckError(f"{role or 'model'} {describe_source(model)}: {err}") from None
        try:
            flair = flair_only_runner(card, model if is_file else None, backend, onnx_dir)
        except (OSError, ValueError) as err:
            raise ModelCheckError(f"{role or 'model'} {describe_source(model)}: {err}") from None
        pm = cls(runner, card, describe_source(model), flair)
        pm.card_notes = notes if is_file else []  # warnings for the console and summary.json (cli)
        return pm

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the model is fed: the card's ``img_size``, else the model's own input size."""
        return (self.card.img_size, self.card.img_size) if self.card is not None else self.runner.input_size

    @property
    def normalization(self) -> str:
        """The card's ``normalization`` (``raw`` without a card)."""
        return self.card.normalization if self.card is not None else "raw"

    @property
    def context(self) -> int:
        """The card's slice context (neighbours on each side; 0 without a card)."""
        return self.card.context_slices if self.card is not None else 0

    @property
    def tta(self) -> str:
        """The card's test-time augmentation (``none`` without a card)."""
        return self.card.tta if self.card is not None else "none"

    def run(self, x: np.ndarray, batch_size: int, flair_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Outputs by role (``class`` / ``mask``) on prepared inputs, averaged over the card's test-time
        flips (:func:`classseg.models.predict.predict`); the mask of the rows ``flair_rows`` (:meth:`flair_rows`)
        from the card's ``flair_only_model``."""
        out = predict(self.runner, x, batch_size, tta=self.tta)
        if "mask" in out and self.flair_runner is not None:
            out["mask"] = route_flair_only(out["mask"], flair_rows, self.flair_runner, x, batch_size, self.tta)
        return out

    def flair_rows(self, images: Sequence[np.ndarray], groups: Sequence[Any] | None) -> np.ndarray | None:
        """(N,) bool, the slices the card's ``flair_only_model`` segments (patients whose pre- and
        post-contrast equal FLAIR, :func:`classseg.data.standardize.flair_only_rows`); None without one."""
        return flair_only_rows(images, groups) if self.flair_runner is not None else None

    def prepare(self, images: Sequence[np.ndarray], groups: Sequence[Any] | None,
                cache: dict[tuple, np.ndarray]) -> np.ndarray:
        """float32 (N, H, W, 3 * (2k + 1)) input: every image resized to :attr:`input_size` (the training
        resize), then normalised as the card says, standardising each patient (``groups``) as one set, and
        with the card's slice context ``k`` each slice stacked with its neighbours in that patient, in the
        order given (slice order)."""
        size = self.input_size
        if size not in cache:
            out = np.empty((len(images), *size, 3), np.uint8)
            for i, image in enumerate(images):
                out[i] = resize_to(image, size)
            cache[size] = out
        return prepare_input(cache[size], self.normalization, groups, self.context,
                             sequences=self.card.input_sequences if self.card is not None else "all")

    def warmup(self) -> None:
        """Trace / initialise the runner once on a zero batch."""
        self.runner(np.zeros((1, *self.input_size, context_channels(self.context)), np.float32))


# --------------------------------------------------------------------------------------------
# Gate threshold sidecars (models without a card)
# --------------------------------------------------------------------------------------------
def sidecar_candidates(model_path: str | Path) -> list[Path]:
    """JSON files that may describe a model, in order: ``<stem>.json``, ``<name>.json``, ``manifest.json``."""
    path = Path(model_path)
    return [path.with_suffix(".json"), path.with_name(path.name + ".json"), path.parent / "manifest.json"]


def _same_file(recorded: str, base: Path, model_path: Path) -> bool:
    """``recorded`` names ``model_path``: relative paths are read from ``base`` (the JSON's folder), and,
    for files written before paths were stored relative, from the working directory."""
    if not recorded:
        return False
    target = model_path.resolve()
    path = Path(recorded)
    if path.is_absolute():
        return path.resolve() == target
    return (base / path).resolve() == target or path.resolve() == target


def _gate_from_results(results_json: Path, model_path: Path) -> float | None:
    """``gate.threshold`` of a ``train-classifiers`` results.json whose ``gate.model`` is this model."""
    try:
        gate = read_json(results_json).get("gate") or {}
        same = _same_file(str(gate.get("model", "")), results_json.parent, model_path)
    except (ValueError, OSError, AttributeError, TypeError):
        return None
    return float(gate["threshold"]) if same and gate.get("threshold") is not None else None


def sidecar_threshold(model_path: str | Path) -> tuple[float | None, Path | None]:
    """``gate_threshold`` from the first of :func:`sidecar_candidates` that has one, else the
    ``gate.threshold`` chosen on validation by ``classseg train-classifiers`` (``../results.json``)
    when this model is the gate it selected (its path relative to that file, or absolute)."""
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


def model_info(models: dict[str, Path]) -> dict[str, Any]:
    """The card and the JSON sidecar / manifest beside each model (how it was trained), where there are any."""
    from dataclasses import asdict

    info: dict[str, Any] = {}
    for kind, path in models.items():
        path = Path(path)
        entry: dict[str, Any] = {}
        card = read_card(path)
        if card is not None:
            entry["card"] = asdict(card)
        for candidate in sidecar_candidates(path):
            if candidate.is_file():
                try:
                    entry.update(file=str(candidate), content=read_json(candidate))
                except (ValueError, OSError):
                    continue
                break
        if entry:
            info[kind] = entry
    return info

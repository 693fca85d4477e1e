"""Phase 3 of Class-Seg: gate every MRI slice with the classifier, outline the tumor where the rule says so.

Duong-Trung et al. (seed 002), Algorithm 1, phase 3::

    for each image i:
        if model 1 (classifier) predicts i as non-defect: continue
        else: model 2 (segmenter) segments the defect region

"Predicts tumor" means ``P(tumor) >= class threshold`` on the gate's 2-class softmax (index 1 = tumor).
The final call of a slice follows the gate card's ``gate_rule``, defined once in
:mod:`classseg.delivery.rules` (:data:`~classseg.delivery.rules.GATE_RULES`):

* ``gate`` (default): the gate's verdict; the segmenter runs on the slices the gate passes.
* ``gate_and_mask``: verdict AND a non-empty post-processed mask.
* ``mask``: the mask is non-empty (the segmenter runs on every slice; the gate is reported only).

Each model's card may add test-time flips (``tta``, averaged outputs) and the segmenter's card a
per-patient 3D component filter (``postprocess_3d``: the slices of one patient, in slice order, as a
volume; components under a fraction of the largest removed). Both were chosen on the validation
patients; a slice whose mask the 3D filter emptied says so in its ``notes``.

Delivery (:func:`classseg.delivery.rules.deliver`, the same function training and selection score
with): the segmenter's sigmoid output is post-processed in 2D (:mod:`classseg.delivery.postprocess`) at the
model's resolution, the 3D filter runs over each patient's slices that the rule segments (never over
slices segmented only for evaluation: ``infer(segment_all=True)`` computes those apart, in
``BatchResult.all_masks``), masks are resized back to each slice's original size (nearest
neighbour), then the rule gives the final call and the delivered mask.
Slices are processed in batches through a compiled call or an ONNX Runtime session
(:mod:`classseg.models.predict`); inputs are prepared as each model's card says
(:class:`classseg.pipeline.models.PipelineModel`), a patient's slices standardised together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classseg.data.context import lone_slices
from classseg.delivery.postprocess import Postprocess3DConfig, PostprocessConfig
from classseg.delivery.rules import (
    GATE_RULES,
    MaskDelivery,
    calls_from_verdicts,
    deliver_masks,
    delivered_masks,
    segmented_slices,
)
from classseg.models.card import ModelCard
from classseg.models.predict import ModelLike, OnnxRunner, tumor_probability
from classseg.pipeline.models import PipelineModel, sidecar_threshold

DEFAULT_THRESHOLD = 0.5


@dataclass
class SlicePrediction:
    """The pipeline's answer for one slice; ``mask`` is uint8 {0,1} at the slice's original (H, W)."""

    tumor_probability: float
    verdict: str  # the gate's: "tumor" or "no_tumor"
    segmented: bool  # the segmenter output was computed for this slice
    mask: np.ndarray  # the computed mask (empty where not segmented)
    tumor_area_px: int
    final_call: str = ""  # "tumor" / "no_tumor" after the gate rule
    delivered_mask: np.ndarray | None = None  # what a user receives under the gate rule


@dataclass
class BatchResult:
    """Arrays behind a list of :class:`SlicePrediction`, plus seconds spent per stage."""

    tumor_probability: np.ndarray  # (N,) float
    passed: np.ndarray  # (N,) bool, the gate's verdict P(tumor) >= threshold
    segmented: np.ndarray  # (N,) bool, the segmenter output was computed for the slice
    masks: list[np.ndarray]  # uint8 (H_i, W_i) {0,1}; all zero where not segmented
    timings: dict[str, float] = field(default_factory=dict)
    gate_rule: str = "gate"
    notes: list[str] = field(default_factory=list)  # per slice: what normalisation / 3D filtering did to it
    all_masks: list[np.ndarray] | None = None  # infer(segment_all=True): every slice's mask (3D filter over all)

    @property
    def delivered(self) -> list[np.ndarray]:
        """The masks a user receives (:func:`classseg.delivery.rules.delivered_masks`)."""
        return delivered_masks(self.masks, self.passed, self.gate_rule)

    @property
    def final_call(self) -> np.ndarray:
        """(N,) bool: the slice's call under the gate rule (:func:`classseg.delivery.rules.calls_from_verdicts`)."""
        return calls_from_verdicts(self.passed, [bool(m.any()) for m in self.masks], self.gate_rule)

    def slice_predictions(self) -> list[SlicePrediction]:
        """One :class:`SlicePrediction` per slice (``mask``: the segment-all mask where :attr:`all_masks` is set)."""
        final = self.final_call
        masks = self.masks if self.all_masks is None else self.all_masks
        segmented = self.segmented if self.all_masks is None else np.ones(len(masks), bool)
        return [SlicePrediction(float(p), "tumor" if ok else "no_tumor", bool(seg), mask, int(mask.sum()),
                                "tumor" if call else "no_tumor", delivered)
                for p, ok, seg, mask, call, delivered in zip(self.tumor_probability, self.passed, segmented,
                                                             masks, final, self.delivered, strict=True)]


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i}: expected uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        checked.append(image)
    return checked


class ClassSegPipeline:
    """Gated Class-Seg inference: classifier gate, segmenter, post-processing, gate rule.

    ``classifier`` / ``segmenter`` (or ``joint``) are keras.Model objects or paths to ``.keras`` /
    ``.onnx`` files. Each model's card (``<model>.card.json``, or ``cards={"classifier": card, ...}``
    for in-memory models) sets its input size and normalisation, the thresholds, the post-processing
    and the gate rule. Precedence: explicit argument > card > (gate threshold only) the JSON sidecar
    beside the classifier (:func:`classseg.pipeline.models.sidecar_threshold`) > defaults (0.5,
    ``PostprocessConfig()``, rule ``gate``).
    """

    def __init__(self, classifier: ModelLike = None, segmenter: ModelLike = None, threshold: float | None = None,
                 postprocess: PostprocessConfig | None = None, batch_size: int = 16, backend: str = "keras", *,
                 joint: ModelLike = None, onnx_dir: str | Path | None = None,
                 cards: dict[str, ModelCard] | None = None, gate_rule: str | None = None,
                 postprocess_3d: Postprocess3DConfig | None = None) -> None:
        if joint is None and (classifier is None or segmenter is None):
            raise ValueError("give a classifier and a segmenter, or a joint model (ClassSegPipeline.from_joint)")
        if joint is not None and (classifier is not None or segmenter is not None):
            raise ValueError("give either a joint model or a classifier + segmenter, not both")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cards = cards or {}
        self.backend = backend
        self.batch_size = int(batch_size)
        load = {kind: m for kind, m in (("classifier", classifier), ("segmenter", segmenter), ("joint", joint))
                if m is not None}
        # each model loaded on its own and checked against its role: errors name that one model
        self.models = {kind: PipelineModel.load(m, backend, onnx_dir, cards.get(kind), role=kind)
                       for kind, m in load.items()}
        self.sources = {kind: pm.source for kind, pm in self.models.items()}
        gate, seg = self.gate_model, self.mask_model
        if threshold is not None:
            self.threshold_source = "argument"
        elif gate.card is not None and gate.card.class_cut() is not None:
            threshold, self.threshold_source = gate.card.class_cut(), "model card"
        else:
            gate_src = joint if joint is not None else classifier
            found, where = sidecar_threshold(gate_src) if isinstance(gate_src, (str, Path)) else (None, None)
            threshold = DEFAULT_THRESHOLD if found is None else found
            self.threshold_source = "default" if found is None else str(where)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        if postprocess is not None:
            self.postprocess_config = postprocess
        elif seg.card is not None:
            self.postprocess_config = seg.card.mask_postprocess()
        else:
            self.postprocess_config = PostprocessConfig()
        if postprocess_3d is not None:
            self.postprocess_3d = postprocess_3d if postprocess_3d.min_fraction > 0 else None
        else:
            self.postprocess_3d = seg.card.postprocess_3d_config() if seg.card is not None else None
        rule = gate_rule or (gate.card.gate_rule if gate.card is not None else None) or "gate"
        if rule not in GATE_RULES:
            raise ValueError(f"gate_rule must be one of {GATE_RULES}, got {rule!r}")
        self.gate_rule = rule

    @classmethod
    def from_joint(cls, model_or_path: ModelLike, threshold: float | None = None,
                   postprocess: PostprocessConfig | None = None, batch_size: int = 16, backend: str = "keras",
                   onnx_dir: str | Path | None = None, card: ModelCard | None = None,
                   gate_rule: str | None = None) -> ClassSegPipeline:
        """Pipeline on a joint model (outputs ``class`` and ``mask``), gating on its own class output."""
        return cls(threshold=threshold, postprocess=postprocess, batch_size=batch_size, backend=backend,
                   joint=model_or_path, onnx_dir=onnx_dir, cards={"joint": card} if card else None,
                   gate_rule=gate_rule)

    @property
    def is_joint(self) -> bool:
        """True when one joint model gives both the class and the mask."""
        return "joint" in self.models

    @property
    def gate_model(self) -> PipelineModel:
        """The model whose class output gates (the classifier, or the joint model)."""
        return self.models["joint" if self.is_joint else "classifier"]

    @property
    def mask_model(self) -> PipelineModel:
        """The model whose mask output is delivered (the segmenter, or the joint model)."""
        return self.models["joint" if self.is_joint else "segmenter"]

    # kept for callers that reached the runners directly (tests, benchmarks/pipeline.py)
    @property
    def _classifier(self) -> Any:
        return self.models["classifier"].runner if "classifier" in self.models else None

    @_classifier.setter
    def _classifier(self, runner: Any) -> None:
        self.models["classifier"].runner = runner

    @property
    def _segmenter(self) -> Any:
        return self.models["segmenter"].runner if "segmenter" in self.models else None

    @_segmenter.setter
    def _segmenter(self, runner: Any) -> None:
        self.models["segmenter"].runner = runner

    def describe(self) -> dict[str, Any]:
        """Model sources, cards, backend, threshold (and where it came from), gate rule, post-processing."""
        onnx_files = {f"{kind}_onnx": str(pm.runner.path) for kind, pm in self.models.items()
                      if isinstance(pm.runner, OnnxRunner)}
        cards = {kind: asdict(pm.card) for kind, pm in self.models.items() if pm.card is not None}
        inputs = {kind: {"img_size": list(pm.input_size), "normalization": pm.normalization}
                  for kind, pm in self.models.items()}
        return {**self.sources, **onnx_files, "backend": self.backend, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "gate_rule": self.gate_rule,
                "postprocess": asdict(self.postprocess_config),
                "postprocess_3d": asdict(self.postprocess_3d) if self.postprocess_3d else None,
                "tta": {kind: pm.tta for kind, pm in self.models.items()}, "batch_size": self.batch_size,
                "inputs": inputs, "cards": cards}

    def warmup(self) -> float:
        """Trace / initialise every model once on a zero batch; returns the seconds it took."""
        start = time.perf_counter()
        for pm in self.models.values():
            pm.warmup()
        return time.perf_counter() - start

    # -- stages -------------------------------------------------------------------------------
    def _masks_from_probs(self, probs: np.ndarray, shapes: Sequence[tuple[int, int]],
                          groups: Sequence[Any] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Post-processed masks at the original sizes, and per slice whether the 3D filter emptied it.

        2D steps at the model's size, then (card ``postprocess_3d``) the 3D filter over each patient's
        slices (``groups``, in the order given = slice order), then nearest resizing."""
        if len(probs) == 0:
            return [], np.zeros(0, bool)
        return deliver_masks(probs, shapes, self.postprocess_config, self.postprocess_3d, groups)

    def _slice_notes(self, groups: Sequence[Any] | None, n: int, removed: np.ndarray,
                     flair: np.ndarray | None = None) -> list[str]:
        per_patient = any(pm.normalization != "raw" for pm in self.models.values())
        context = any(pm.context for pm in self.models.values())
        lone = lone_slices(groups, n)
        notes = []
        for i in range(n):
            parts = []
            if per_patient and (groups is None or groups[i] is None):
                parts.append("lone slice: normalised on its own statistics")
            if context and lone[i]:
                parts.append("lone slice: no neighbouring slices, its slice context is copies of itself")
            if flair is not None and flair[i]:
                parts.append("pre- and post-contrast equal FLAIR: segmented by the flair-only model")
            if removed[i]:
                parts.append("3D filter removed the mask")
            notes.append("; ".join(parts))
        return notes

    def infer(self, images: Sequence[np.ndarray], segment_all: bool = False,
              groups: Sequence[Any] | None = None) -> BatchResult:
        """Gate every slice; segment those the rule needs (:func:`classseg.delivery.rules.segmented_slices`)
        and deliver (:func:`classseg.delivery.rules.deliver`'s order). ``segment_all``: also segment the
        other slices, for evaluation, into ``all_masks`` (3D filter over every slice); the delivered masks,
        calls and notes are the same as without it.

        ``groups``: each slice's patient (slices of one patient are standardised together when a
        card asks for ``patient_zscore``); None = each slice on its own. Timings (seconds): ``resize``
        (resizing and normalising), ``classify``, ``segment``, ``postprocess``.
        """
        images = _check_images(images)
        n = len(images)
        if groups is not None and len(groups) != n:
            raise ValueError(f"{len(groups)} group labels for {n} images")
        shapes = [im.shape[:2] for im in images]
        timings = {"resize": 0.0, "classify": 0.0, "segment": 0.0, "postprocess": 0.0}
        if n == 0:
            return BatchResult(np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), [], timings, self.gate_rule)
        cache: dict = {}
        gate = self.gate_model
        t = time.perf_counter()
        x = gate.prepare(images, groups, cache)
        timings["resize"] += time.perf_counter() - t
        t = time.perf_counter()
        outputs = gate.run(x, self.batch_size)
        prob = tumor_probability(outputs["class"])
        timings["classify"] += time.perf_counter() - t
        passed = prob >= self.threshold
        rule_todo = segmented_slices(passed, self.gate_rule)
        todo = np.arange(n) if segment_all else np.flatnonzero(rule_todo)
        rows = None  # slices the segmenter card's flair_only_model segments
        if self.is_joint:
            mask_probs = outputs["mask"][todo]
        else:
            seg = self.mask_model
            t = time.perf_counter()
            xs = seg.prepare(images, groups, cache)[todo]  # statistics over all of the patient's slices
            timings["resize"] += time.perf_counter() - t
            t = time.perf_counter()
            rows = seg.flair_rows(images, groups)
            mask_probs = seg.run(xs, self.batch_size, None if rows is None else rows[todo])["mask"] if len(todo) \
                else np.zeros((0, *seg.input_size, 1), np.float32)
            timings["segment"] += time.perf_counter() - t
        t = time.perf_counter()
        maps = MaskDelivery(mask_probs, shapes, self.postprocess_config, self.postprocess_3d, groups, index=todo)
        delivery = maps.deliver(rule=self.gate_rule, passed=passed)  # 3D filter over the rule's slices only
        all_masks = maps.masks(np.ones(n, bool))[0] if segment_all else None
        timings["postprocess"] += time.perf_counter() - t
        return BatchResult(prob, passed, delivery.segmented, delivery.masks, timings, self.gate_rule,
                           self._slice_notes(groups, n, delivery.removed_3d, rows), all_masks)

    def predict(self, images: Sequence[np.ndarray], segment_all: bool = False,
                groups: Sequence[Any] | None = None) -> list[SlicePrediction]:
        """One :class:`SlicePrediction` per uint8 (H, W, 3) RGB image (masks at the original size)."""
        return self.infer(images, segment_all=segment_all, groups=groups).slice_predictions()

    def segment_timed(self, images: Sequence[np.ndarray], groups: Sequence[Any] | None = None,
                      subset: Sequence[int] | None = None) -> tuple[list[np.ndarray], dict[str, float]]:
        """Segmenter alone (no gate) on every image, or on ``images[subset]`` with the normalisation
        statistics of all ``images``: post-processed masks at original size, and timings."""
        images = _check_images(images)
        timings = {"resize": 0.0, "segment": 0.0, "postprocess": 0.0}
        index = np.arange(len(images)) if subset is None else np.asarray(subset, dtype=int)
        if len(index) == 0:
            return [], timings
        seg = self.mask_model
        t = time.perf_counter()
        x = seg.prepare(images, groups, {})[index]
        rows = seg.flair_rows(images, groups)
        images = [images[i] for i in index]
        timings["resize"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = seg.run(x, self.batch_size, None if rows is None else rows[index])["mask"]
        timings["segment"] = time.perf_counter() - t
        t = time.perf_counter()
        masks, _ = self._masks_from_probs(probs, [im.shape[:2] for im in images],
                                          None if groups is None else [groups[i] for i in index])
        timings["postprocess"] = time.perf_counter() - t
        return masks, timings

    def segment(self, images: Sequence[np.ndarray], groups: Sequence[Any] | None = None) -> list[np.ndarray]:
        """Segmenter alone on every image: uint8 {0,1} masks at the original sizes."""
        return self.segment_timed(images, groups)[0]

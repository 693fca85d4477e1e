"""The one results schema: :class:`Scores`, written by every stage and read by every table.

A set of slices is scored once, by :func:`score_slices`, from what a user receives: a mask per slice
at the slice's original size and, when a gate (classifier or joint class output) took part, its
P(tumor). The same names mean the same thing in every ``metrics.json``, ``results.csv``,
``classseg compare`` / ``classseg report`` table and in ``classseg evaluate --json``:

* Detection, ``tp`` ``fp`` ``tn`` ``fn`` ``accuracy`` ``sensitivity`` ``specificity`` ``precision``
  ``f1_macro``: the slice's final call as delivered: "the delivered mask is non-empty" for anything
  that outputs masks (segmenter, pipeline, joint model); the verdict ``P(tumor) >= threshold`` for a
  classifier alone. ``precision == tp / (tp + fp)`` always (a slice figure, never pixels).
* Gate, ``gate_*`` (same definitions): the gate's own verdict, reported beside the delivered masks'
  figures; ``gate_auc`` is the AUC of its P(tumor). Absent (None) when no gate took part.
* Segmentation (:func:`classseg.evaluation.segmentation.segmentation_figures`): at the slice's original
  size, distances in pixels of that size: ``dice_tumor_slices`` ``iou_tumor_slices``
  ``hd95_detected_px`` ``missed_tumor_slices`` ``hd95_with_miss_penalty_px`` ``dice_end_to_end``
  ``iou_end_to_end`` ``dice_per_patient`` ``dice_global`` ``pixel_precision`` ``pixel_recall``
  ``false_positive_slices``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from classseg.evaluation.classification import detection
from classseg.evaluation.segmentation import segmentation_figures

#: Where a mask was scored; every stage scores at the slice's original size.
RESOLUTION = "original slice size"


@dataclass
class Scores:
    """Figures of one set of slices (see the module docstring for the definitions). None = not defined."""

    n_slices: int = 0
    n_tumor_slices: int = 0
    # detection of the delivered call
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    accuracy: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    precision: float | None = None
    f1_macro: float | None = None
    auc: float | None = None  # only when the delivered call is a thresholded probability (a classifier)
    # the gate's own verdict
    gate_threshold: float | None = None
    gate_tp: int | None = None
    gate_fp: int | None = None
    gate_tn: int | None = None
    gate_fn: int | None = None
    gate_accuracy: float | None = None
    gate_sensitivity: float | None = None
    gate_specificity: float | None = None
    gate_precision: float | None = None
    gate_auc: float | None = None
    # segmentation at the original slice size
    dice_tumor_slices: float | None = None
    iou_tumor_slices: float | None = None
    hd95_detected_px: float | None = None
    missed_tumor_slices: int | None = None
    hd95_with_miss_penalty_px: float | None = None
    dice_end_to_end: float | None = None
    iou_end_to_end: float | None = None
    dice_per_patient: float | None = None
    dice_global: float | None = None
    pixel_precision: float | None = None
    pixel_recall: float | None = None
    false_positive_slices: int | None = None
    hd95_pooling: str | None = None
    resolution: str | None = None
    per_patient: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, per_patient: bool = True) -> dict[str, Any]:
        """Plain dict for JSON (``per_patient`` list optional)."""
        out = asdict(self)
        if not per_patient:
            out.pop("per_patient")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scores:
        """The schema's fields of ``data`` (other keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


#: Schema field names, in order.
SCORE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Scores))

#: Figures that are numbers (everything but the labels and the per-patient list).
NUMERIC_FIELDS: tuple[str, ...] = tuple(n for n in SCORE_FIELDS if n not in ("hd95_pooling", "resolution",
                                                                            "per_patient"))

#: Display label of each figure, with its unit where it has one (tables, metrics.md).
LABELS: dict[str, str] = {
    "n_slices": "slices", "n_tumor_slices": "tumor slices",
    "tp": "TP (slices)", "fp": "FP (slices)", "tn": "TN (slices)", "fn": "FN (slices)",
    "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
    "precision": "precision (slices)", "f1_macro": "F1 macro", "auc": "AUC",
    "gate_threshold": "gate threshold", "gate_tp": "gate TP", "gate_fp": "gate FP", "gate_tn": "gate TN",
    "gate_fn": "gate FN", "gate_accuracy": "gate accuracy", "gate_sensitivity": "gate sensitivity",
    "gate_specificity": "gate specificity", "gate_precision": "gate precision", "gate_auc": "gate AUC",
    "dice_tumor_slices": "Dice (tumor slices)", "iou_tumor_slices": "IoU (tumor slices)",
    "hd95_detected_px": "HD95 px (detected tumor slices)", "missed_tumor_slices": "missed tumor slices",
    "hd95_with_miss_penalty_px": "HD95 px (miss = diagonal)",
    "dice_end_to_end": "Dice end to end (all slices)", "iou_end_to_end": "IoU end to end (all slices)",
    "dice_per_patient": "Dice per patient (volume)", "dice_global": "Dice (pixels pooled)",
    "pixel_precision": "pixel precision (tumor slices)", "pixel_recall": "pixel recall (tumor slices)",
    "false_positive_slices": "false-positive slices",
}

#: One line saying how the figures were made, for the notes of every table.
DEFINITIONS = ("Detection figures (accuracy, sensitivity, specificity, precision, TP/FP/TN/FN) are per slice "
               "and score the delivered call: mask non-empty for models that output masks, P(tumor) >= "
               "threshold for a classifier; gate_* score the gate's own verdict. Masks are scored at the "
               "slice's original size; HD95 in pixels of that size, both directed distances pooled (medpy), "
               "averaged over tumor slices with a non-empty prediction (missed slices counted apart); Dice "
               "end to end counts empty vs empty as 1; Dice per patient is the mean volume Dice.")


def score_slices(truths: Sequence[np.ndarray], masks: Sequence[np.ndarray], patient_ids: Sequence[str],
                 gate_prob: Sequence[float] | np.ndarray | None = None, gate_threshold: float | None = None,
                 gate_verdict: Sequence[bool] | np.ndarray | None = None, hd95_pooling: str = "pooled") -> Scores:
    """Score delivered ``masks`` against ``truths`` (both at the slice's original size, (H_i, W_i)).

    ``gate_prob`` / ``gate_threshold``: the gate's P(tumor) and threshold when a gate took part
    (``gate_*`` figures; the verdict is ``gate_prob >= gate_threshold`` unless ``gate_verdict`` gives it).
    This is the one scoring function behind the pipeline's ``metrics.json``,
    ``classseg evaluate`` and the training runs' test figures.
    """
    truths = [np.asarray(t) for t in truths]
    masks = [np.asarray(m) for m in masks]
    if not (len(truths) == len(masks) == len(patient_ids)):
        raise ValueError(f"length mismatch: {len(truths)} truths, {len(masks)} masks, {len(patient_ids)} ids")
    seg = segmentation_figures(masks, truths, patient_ids, hd95_pooling=hd95_pooling)
    y_true = np.array([bool((t >= 0.5).any()) for t in truths], bool)
    called = np.array([bool((m >= 0.5).any()) for m in masks], bool)
    det = detection(y_true, called)
    values: dict[str, Any] = {k: v for k, v in {**det, **seg}.items() if k in SCORE_FIELDS}
    values["resolution"] = RESOLUTION
    if gate_prob is not None or gate_verdict is not None:
        threshold = 0.5 if gate_threshold is None else float(gate_threshold)
        prob = None if gate_prob is None else np.asarray(gate_prob, float)
        verdict = np.asarray(gate_verdict, bool) if gate_verdict is not None else prob >= threshold
        gate = detection(y_true, verdict)
        values.update({f"gate_{k}": gate[k] for k in ("tp", "fp", "tn", "fn", "accuracy", "sensitivity",
                                                       "specificity", "precision")})
        values["gate_threshold"] = gate_threshold
        if prob is not None and len(np.unique(y_true)) == 2:
            from sklearn.metrics import roc_auc_score

            values["gate_auc"] = float(roc_auc_score(y_true, prob))
    return Scores(**values)


def classifier_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> Scores:
    """Schema figures of a classifier alone: its verdict is the delivered call (``auc`` of its P(tumor))."""
    from classseg.evaluation.classification import classification_metrics

    m = classification_metrics(y_true, y_prob, threshold)
    return Scores.from_dict({**m, "n_slices": m["n"], "n_tumor_slices": m["tp"] + m["fn"]})


def read_truths(mask_paths: Sequence[str | None], shapes: Sequence[tuple[int, int]] | None = None
                ) -> list[np.ndarray]:
    """Ground-truth masks at their original size from ``mask_path`` values (a frame's column).

    A missing path (None / NaN / "") gives an empty mask of ``shapes[i]``, which must then be given.
    """
    from classseg.data.io import read_mask

    out = []
    for i, path in enumerate(mask_paths):
        if path is None or (isinstance(path, float) and np.isnan(path)) or path == "":
            if shapes is None:
                raise ValueError(f"slice {i} has no mask path and no shape was given")
            out.append(np.zeros(tuple(shapes[i])[:2], np.uint8))
        else:
            out.append(read_mask(path))
    return out

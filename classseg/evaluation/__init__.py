"""All scoring in classseg: plain functions at the core, one results schema (:class:`Scores`) on top.

* :mod:`classseg.evaluation.classification`: detection counts and ratios of a yes/no call per slice,
  AUC, the gate threshold for a target sensitivity, confusion-matrix / ROC figures.
* :mod:`classseg.evaluation.segmentation`: Dice, IoU, HD95, pixel precision / recall per slice, and the
  per-slice / per-patient (volume) / pooled reductions; masks at the slice's original size.
* :mod:`classseg.evaluation.scores`: :class:`Scores` and :func:`score_slices`, which every stage calls.
* :mod:`classseg.evaluation.folder`: ``classseg evaluate``: a predictions folder against ground truth.
"""

from classseg.evaluation.classification import classification_metrics, detection, threshold_for_sensitivity
from classseg.evaluation.scores import (
    DEFINITIONS,
    LABELS,
    NUMERIC_FIELDS,
    SCORE_FIELDS,
    Scores,
    classifier_scores,
    score_slices,
)
from classseg.evaluation.segmentation import (
    dice,
    hd95,
    iou,
    per_patient_dice,
    segmentation_figures,
    slice_scores,
    to_original_size,
    volume_dice,
)

__all__ = [
    "DEFINITIONS", "LABELS", "NUMERIC_FIELDS", "SCORE_FIELDS", "Scores", "classification_metrics",
    "classifier_scores", "detection", "dice", "hd95", "iou", "per_patient_dice", "score_slices",
    "segmentation_figures", "slice_scores", "threshold_for_sensitivity", "to_original_size", "volume_dice",
]

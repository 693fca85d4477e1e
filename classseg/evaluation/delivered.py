"""Scores of what a model (or a pair of models) delivers, by the one delivery of
:func:`classseg.delivery.rules.deliver`: mask probabilities post-processed at the model's size, the
per-patient 3D filter over the slices the gate rule segments, resized back to each slice's original
size, then the rule (final call and delivered mask).

One function for the joint model (its own class output gates its mask), the single-task segmenter
(no gate: rule ``mask``, the call is "mask non-empty") and the two-stage pipeline formed offline from a
classifier's and a segmenter's saved predictions (:func:`read_predictions`), so the three are scored
by the same code as the pipeline (:func:`classseg.evaluation.score_slices`, counting the final calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.delivery.postprocess import Postprocess3DConfig, PostprocessConfig
from classseg.delivery.rules import MaskDelivery, check_rule
from classseg.evaluation.scores import score_slices
from classseg.evaluation.segmentation import to_original_size


def delivered_scores(truths: Sequence[np.ndarray], mask_prob: np.ndarray, patient_ids: Sequence[str],
                     config: PostprocessConfig, gate_prob: np.ndarray | None = None,
                     gate_threshold: float = 0.5, rule: str | None = None,
                     config_3d: Postprocess3DConfig | None = None, order: Sequence[Any] | None = None
                     ) -> dict[str, Any]:
    """:class:`classseg.evaluation.Scores` (as a dict) of what gate rule ``rule`` delivers.

    ``mask_prob`` (N, h, w[, 1]) at the model's size, ``config`` its 2D post-processing (mask threshold
    ``config.threshold``), ``config_3d`` the per-patient 3D filter (patients = ``patient_ids``, slice
    order = ``order``). With ``gate_prob`` (P(tumor) per slice, cut at ``gate_threshold``) the rule
    (default ``gate``; ``mask`` without a gate) decides which slices are segmented, the final calls
    (the detection figures) and the delivered masks (:func:`classseg.delivery.rules.deliver`); the gate's
    own figures are the ``gate_*`` fields and ``segment_all`` holds the scores of every slice segmented
    (3D filter over all). ``threshold_only``: masks thresholded at ``config.threshold`` without
    post-processing (no gate; no per-patient list).
    """
    if len(mask_prob) != len(truths):
        raise ValueError(f"{len(mask_prob)} predicted masks for {len(truths)} slices")
    rule = check_rule(rule or ("gate" if gate_prob is not None else "mask"))
    shapes = [t.shape[:2] for t in truths]
    mask_prob = np.asarray(mask_prob, np.float32).reshape(np.shape(mask_prob)[:3])
    maps = MaskDelivery(mask_prob, shapes, config, config_3d, patient_ids, order)
    raw = to_original_size((mask_prob >= config.threshold).astype(np.uint8), shapes)
    if gate_prob is None:
        delivery = maps.deliver(rule=rule)
        out = score_slices(truths, delivery.delivered, patient_ids, calls=delivery.calls).to_dict()
    else:
        delivery = maps.deliver(gate_prob, gate_threshold, rule)
        out = score_slices(truths, delivery.delivered, patient_ids, gate_prob=gate_prob,
                           gate_threshold=gate_threshold, calls=delivery.calls).to_dict()
        out["segment_all"] = score_slices(truths, maps.masks(np.ones(len(shapes), bool))[0], patient_ids).to_dict()
    out["gate_rule"] = rule
    out["threshold_only"] = score_slices(truths, raw, patient_ids).to_dict(per_patient=False)
    return out


def save_predictions(path: str | Path, tumor_prob: np.ndarray | None, mask_prob: np.ndarray | None,
                     patient_ids: Sequence[str], mask_paths: Sequence[str], image_paths: Sequence[str]) -> Path:
    """Write a run's per-slice outputs (``.npz``, atomically) for later combinations.

    Mask probabilities are stored as uint8 ``round(255 p)``: ``p >= 0.5`` exactly when the stored value
    is ``>= 128``, so thresholds are kept to 1/255.
    """
    from classseg.utils.atomic import atomic_path

    arrays: dict[str, Any] = {"patient_id": np.asarray(patient_ids, str), "mask_path": np.asarray(mask_paths, str),
                              "image_path": np.asarray(image_paths, str)}
    if tumor_prob is not None:
        arrays["tumor_prob"] = np.asarray(tumor_prob, np.float32)
    if mask_prob is not None:
        arrays["mask_u8"] = np.round(np.clip(np.asarray(mask_prob, np.float32), 0, 1) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """What :func:`save_predictions` wrote, with ``mask_prob`` = ``mask_u8 / 255`` (float32) when present."""
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    if "mask_u8" in out:
        out["mask_prob"] = out.pop("mask_u8").astype(np.float32) / 255.0
    return out


def two_stage_scores(classifier: dict[str, np.ndarray], segmenter: dict[str, np.ndarray],
                     truths: Sequence[np.ndarray], config: PostprocessConfig,
                     gate_threshold: float = 0.5, rule: str = "gate") -> dict[str, Any]:
    """Seed 002's phase 3 from two runs' saved predictions (:func:`read_predictions`) of the same slices:
    the segmenter's masks delivered under gate rule ``rule`` with the classifier's P(tumor) cut at
    ``gate_threshold``."""
    if not np.array_equal(classifier["image_path"], segmenter["image_path"]):
        raise ValueError("the classifier's and the segmenter's predictions are not of the same slices")
    return delivered_scores(truths, segmenter["mask_prob"], segmenter["patient_id"],
                            config, gate_prob=classifier["tumor_prob"], gate_threshold=gate_threshold, rule=rule)

"""Scores of what a model (or a pair of models) delivers: mask probabilities post-processed at the
model's size, resized back to each slice's original size, emptied where a gate says "no tumor".

One function for the joint model (its own class output gates its mask), the single-task segmenter
(no gate: the verdict is "mask non-empty") and the two-stage pipeline formed offline from a
classifier's and a segmenter's saved predictions (:func:`read_predictions`), so the three are scored
by the same code as the pipeline (:func:`classseg.evaluation.score_slices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.evaluation.scores import score_slices
from classseg.evaluation.segmentation import to_original_size
from classseg.postprocess import Postprocess3DConfig, PostprocessConfig, filter_components_3d_groups, postprocess


def deliver_masks(mask_prob: np.ndarray, shapes: Sequence[tuple[int, int]], config: PostprocessConfig,
                  config_3d: Postprocess3DConfig | None = None, groups: Sequence[Any] | None = None,
                  order: Sequence[Any] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """What a segmenter delivers from its probabilities: 2D post-processing at the model's size, the
    per-patient 3D filter (``config_3d``; ``groups`` = patients, ``order`` = slice numbers), nearest
    resizing to each slice's original ``shapes``. The pipeline, training and selection all call this.

    Returns the masks and, per slice, whether the 3D filter emptied its mask."""
    prob = np.asarray(mask_prob, np.float32)
    if len(prob) == 0:
        return [], np.zeros(0, bool)
    binary = postprocess(prob.reshape(prob.shape[:3]), config)
    binary, removed = filter_components_3d_groups(binary, groups, config_3d, order)
    return to_original_size(binary, shapes), removed


def delivered_scores(truths: Sequence[np.ndarray], mask_prob: np.ndarray, patient_ids: Sequence[str],
                     config: PostprocessConfig, gate_prob: np.ndarray | None = None,
                     gate_threshold: float = 0.5, apply_gate: bool = True,
                     config_3d: Postprocess3DConfig | None = None, order: Sequence[Any] | None = None
                     ) -> dict[str, Any]:
    """:class:`classseg.evaluation.Scores` (as a dict) of the delivered masks.

    ``mask_prob`` (N, h, w[, 1]) at the model's size; masks = ``postprocess(mask_prob, config)``, resized to
    ``truths[i].shape``. With ``gate_prob`` (P(tumor) per slice) the masks are emptied where
    ``gate_prob < gate_threshold`` and the gate's own figures are the ``gate_*`` fields; ``segment_all``
    then holds the ungated masks' scores. ``apply_gate=False`` (gate rule ``mask``): the masks are not
    emptied, the gate is still scored. ``threshold_only``: masks thresholded at ``config.threshold``
    without post-processing (no gate; no per-patient list). ``config_3d``: the per-patient 3D filter
    (patients = ``patient_ids``, slice order = ``order``), as :func:`deliver_masks`.
    """
    if len(mask_prob) != len(truths):
        raise ValueError(f"{len(mask_prob)} predicted masks for {len(truths)} slices")
    shapes = [t.shape[:2] for t in truths]
    mask_prob = np.asarray(mask_prob, np.float32).reshape(np.shape(mask_prob)[:3])
    processed, _ = deliver_masks(mask_prob, shapes, config, config_3d, patient_ids, order)
    raw = to_original_size((mask_prob >= config.threshold).astype(np.uint8), shapes)
    if gate_prob is None:
        out = score_slices(truths, processed, patient_ids).to_dict()
    else:
        passed = np.asarray(gate_prob) >= gate_threshold if apply_gate else np.ones(len(processed), bool)
        gated = [m if ok else np.zeros_like(m) for m, ok in zip(processed, passed, strict=True)]
        out = score_slices(truths, gated, patient_ids, gate_prob=gate_prob, gate_threshold=gate_threshold).to_dict()
        out["segment_all"] = score_slices(truths, processed, patient_ids).to_dict()
    out["threshold_only"] = score_slices(truths, raw, patient_ids).to_dict(per_patient=False)
    return out


def save_predictions(path: str | Path, tumor_prob: np.ndarray | None, mask_prob: np.ndarray | None,
                     patient_ids: Sequence[str], mask_paths: Sequence[str], image_paths: Sequence[str]) -> Path:
    """Write a run's per-slice outputs (``.npz``, atomically) for later combinations.

    Mask probabilities are stored as uint8 ``round(255 p)``: ``p >= 0.5`` exactly when the stored value
    is ``>= 128``, so thresholds are kept to 1/255.
    """
    from classseg.atomic import atomic_path

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
                     gate_threshold: float = 0.5) -> dict[str, Any]:
    """Seed 002's phase 3 from two runs' saved predictions (:func:`read_predictions`) of the same slices:
    the segmenter's masks, emptied where the classifier's P(tumor) < ``gate_threshold``."""
    if not np.array_equal(classifier["image_path"], segmenter["image_path"]):
        raise ValueError("the classifier's and the segmenter's predictions are not of the same slices")
    return delivered_scores(truths, segmenter["mask_prob"], segmenter["patient_id"],
                            config, gate_prob=classifier["tumor_prob"], gate_threshold=gate_threshold)

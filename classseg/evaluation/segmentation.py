"""Segmentation evaluation in NumPy / SciPy: Dice, IoU, HD95, pixel precision/recall, per-patient Dice.

Inputs are binary masks or probabilities (a pixel is tumor when its value >= 0.5), shape (H, W)
for one slice or (N, H, W[, 1]) for a stack. Conventions (stated once, used everywhere):

* Dice / IoU of two empty masks = 1.0 (both agree there is no tumor); one empty, one not = 0.0.
* HD95 of two empty masks = 0.0; exactly one empty = ``empty_penalty`` (default: the image diagonal,
  the largest distance possible in the slice, times ``spacing``).
* Tumor-slice figures (``dice``, ``iou``, ``hd95`` in :func:`segmentation_report`) average over the
  slices whose ground truth is non-empty, like seed 002's evaluation on "defect" slices.
* All-slice figures (``dice_all_slices``) average over every slice, an empty prediction on an empty
  slice counting as Dice 1; this rewards correct "no tumor" answers and punishes false positives.
* Per-patient (volume) Dice follows Buda et al. 2019 (Comput. Biol. Med. 109:218): TP, FP, FN are
  summed over all slices of a patient before forming 2 TP / (2 TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage


def _binary(mask: Any) -> np.ndarray:
    """Boolean array; a trailing channel axis of size 1 is dropped."""
    arr = np.asarray(mask)
    if arr.ndim >= 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr >= 0.5


def _stack(masks: Any) -> np.ndarray:
    """(N, H, W) boolean stack from (N, H, W[, 1]) or a single (H, W) mask."""
    arr = _binary(masks)
    return arr[None] if arr.ndim == 2 else arr


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num / den) if den > 0 else float(empty)


def dice(pred: Any, gt: Any) -> float:
    """Dice = 2 |P ∩ G| / (|P| + |G|) over all given pixels (Dice 1945); 1.0 when both are empty."""
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    return _ratio(2.0 * np.logical_and(p, g).sum(), p.sum() + g.sum())


def iou(pred: Any, gt: Any) -> float:
    """IoU (Jaccard) = |P ∩ G| / |P ∪ G|; 1.0 when both are empty."""
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    return _ratio(np.logical_and(p, g).sum(), np.logical_or(p, g).sum())


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: the mask minus its erosion with a 4-connected cross (outside counts as background)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def surface_distances(pred: Any, gt: Any, spacing: float | Sequence[float] = 1.0) -> np.ndarray:
    """Distances from every boundary pixel of each mask to the other mask's boundary (both directions).

    Uses ``scipy.ndimage.distance_transform_edt`` of the complement of each boundary (exact Euclidean
    distance, ``sampling=spacing``). Both masks must be non-empty.
    """
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks")
    sp, sg = _surface(p), _surface(g)
    dist_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return np.concatenate([dist_to_g[sp], dist_to_p[sg]])


def hd95(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] = 1.0,
    empty_penalty: float | None = None,
) -> float:
    """95th percentile of the symmetric surface distance (Huttenlocher et al. 1993; seed 001, eq. HD95).

    The directed distances pred->gt and gt->pred are pooled and their 95th percentile taken (as
    ``medpy.metric.binary.hd95``). Units: pixels times ``spacing``. Both empty -> 0.0; exactly one
    empty -> ``empty_penalty`` (default: image diagonal in the same units).
    """
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0
    if has_p != has_g:
        if empty_penalty is not None:
            return float(empty_penalty)
        steps = np.broadcast_to(np.asarray(spacing, dtype=float), (p.ndim,))
        return float(np.sqrt(np.sum((np.asarray(p.shape) * steps) ** 2)))
    return float(np.percentile(surface_distances(p, g, spacing), 95))


def pixel_precision_recall(pred: Any, gt: Any) -> tuple[float, float]:
    """Pixel precision TP / (TP + FP) and recall TP / (TP + FN) pooled over all given pixels.

    Undefined precision (nothing predicted) is 1.0 when the ground truth is empty too, else 0.0;
    undefined recall (empty ground truth) is 1.0 when nothing is predicted, else 0.0.
    """
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    tp = np.logical_and(p, g).sum()
    precision = _ratio(tp, p.sum(), empty=1.0 if not g.any() else 0.0)
    recall = _ratio(tp, g.sum(), empty=1.0 if not p.any() else 0.0)
    return precision, recall


def per_patient_dice(preds: Any, gts: Any, patient_ids: Sequence[str]) -> dict[str, float]:
    """Volume Dice per patient (Buda et al. 2019): 2 sum TP / (sum |P| + sum |G|) over the patient's slices.

    Returns ``{patient_id: dice}`` in first-appearance order; 1.0 for a patient with no tumor anywhere
    and none predicted.
    """
    p, g = _stack(preds), _stack(gts)
    ids = np.asarray(patient_ids)
    if not (len(p) == len(g) == len(ids)):
        raise ValueError(f"length mismatch: {len(p)} preds, {len(g)} gts, {len(ids)} patient ids")
    tp = np.logical_and(p, g).sum(axis=(1, 2))
    total = p.sum(axis=(1, 2)) + g.sum(axis=(1, 2))
    out: dict[str, float] = {}
    for pid in dict.fromkeys(ids.tolist()):
        sel = ids == pid
        out[str(pid)] = _ratio(2.0 * tp[sel].sum(), total[sel].sum())
    return out


def segmentation_report(
    preds: Any,
    gts: Any,
    patient_ids: Sequence[str],
    spacing: float | Sequence[float] = 1.0,
    empty_penalty: float | None = None,
) -> dict[str, Any]:
    """All segmentation figures for a set of slices (see the module docstring for conventions).

    Keys: ``n_slices``, ``n_tumor_slices``; tumor-slice means ``dice``, ``iou``, ``hd95`` (with
    ``hd95_missed`` = tumor slices with an empty prediction, scored ``empty_penalty``),
    ``precision``, ``recall`` (pixels pooled over tumor slices); all-slice means ``dice_all_slices``,
    ``iou_all_slices``; ``dice_global`` (pixels pooled over every slice); ``false_positive_slices``
    (empty-truth slices with any predicted pixel) out of ``n_empty_slices``; ``dice_per_patient``
    (mean volume Dice) and ``per_patient`` (list of ``{patient_id, dice, n_slices, n_tumor_slices}``).
    Means over an empty set are ``None``.
    """
    p, g = _stack(preds), _stack(gts)
    ids = np.asarray(patient_ids)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: preds {p.shape} vs gts {g.shape}")
    if len(ids) != len(p):
        raise ValueError(f"length mismatch: {len(p)} slices but {len(ids)} patient ids")

    slice_dice = np.array([dice(a, b) for a, b in zip(p, g, strict=True)])
    slice_iou = np.array([iou(a, b) for a, b in zip(p, g, strict=True)])
    tumor = g.any(axis=(1, 2))
    predicted = p.any(axis=(1, 2))
    slice_hd = np.array([hd95(a, b, spacing, empty_penalty) for a, b in zip(p[tumor], g[tumor], strict=True)])

    def mean(values: np.ndarray) -> float | None:
        return float(np.mean(values)) if len(values) else None

    precision, recall = pixel_precision_recall(p[tumor], g[tumor]) if tumor.any() else (None, None)
    volumes = per_patient_dice(p, g, ids)
    per_patient = [
        {
            "patient_id": pid,
            "dice": value,
            "n_slices": int((ids == pid).sum()),
            "n_tumor_slices": int(tumor[ids == pid].sum()),
        }
        for pid, value in volumes.items()
    ]
    return {
        "n_slices": int(len(p)),
        "n_tumor_slices": int(tumor.sum()),
        "n_empty_slices": int((~tumor).sum()),
        "dice": mean(slice_dice[tumor]),
        "iou": mean(slice_iou[tumor]),
        "hd95": mean(slice_hd),
        "hd95_missed": int((tumor & ~predicted).sum()),
        "precision": precision,
        "recall": recall,
        "dice_all_slices": mean(slice_dice),
        "iou_all_slices": mean(slice_iou),
        "dice_global": dice(p, g),
        "false_positive_slices": int((~tumor & predicted).sum()),
        "dice_per_patient": mean(np.array(list(volumes.values()))),
        "per_patient": per_patient,
    }

"""Segmentation scoring in NumPy / SciPy: Dice, IoU, HD95, pixel precision/recall, volume Dice.

Inputs are binary masks or probabilities (a pixel is tumor when its value >= 0.5), shape (H, W)
for one slice, (N, H, W[, 1]) for a stack, or a list of (H_i, W_i) masks of different sizes.
Conventions (stated once, used everywhere in classseg):

* Masks are scored at the slice's *original* size (the pipeline resizes its masks back; training
  runs resize their predictions up with :func:`classseg.evaluation.to_original_size`). Distances are
  in pixels of that size (``_px`` in the key names).
* Dice / IoU of two empty masks = 1.0 (both agree there is no tumor); one empty, one not = 0.0.
* HD95 of two empty masks = 0.0; exactly one empty = ``empty_penalty`` (default: the image diagonal).
  Reports keep these apart: ``hd95_detected_px`` averages over tumor slices with a non-empty
  prediction and ``missed_tumor_slices`` counts the others.
* HD95 pools both directed surface distances before the 95th percentile (as medpy); ``pooling="max"``
  gives MONAI's larger one-way percentile instead.
* Tumor-slice figures average over the slices whose ground truth is non-empty (seed 002's setting).
* End-to-end figures (``dice_end_to_end``) average over every slice, an empty prediction on an empty
  slice counting as Dice 1; this rewards correct "no tumor" answers and punishes false positives.
* Per-patient (volume) Dice follows Buda et al. 2019 (Comput. Biol. Med. 109:218): TP, FP, FN are
  summed over all slices of a patient before forming 2 TP / (2 TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


HD95_POOLING = ("pooled", "max")


def hd95(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] = 1.0,
    empty_penalty: float | None = None,
    pooling: str = "pooled",
) -> float:
    """95th percentile Hausdorff distance (Huttenlocher et al. 1993; seed 001, eq. HD95).

    ``pooling="pooled"`` (the default, as ``medpy.metric.binary.hd95``): the directed surface
    distances pred->gt and gt->pred are pooled and their 95th percentile taken. ``pooling="max"``
    (as MONAI's ``compute_hausdorff_distance(percentile=95)``): the 95th percentile of each direction,
    the larger of the two. ``max`` >= ``pooled`` always. Units: pixels times ``spacing``. Both empty
    -> 0.0; exactly one empty -> ``empty_penalty`` (default: the image diagonal in the same units).
    """
    if pooling not in HD95_POOLING:
        raise ValueError(f"pooling must be one of {HD95_POOLING}, got {pooling!r}")
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
    if pooling == "pooled":
        return float(np.percentile(surface_distances(p, g, spacing), 95))
    sp, sg = _surface(p), _surface(g)
    to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    return float(max(np.percentile(to_g, 95), np.percentile(to_p, 95)))


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
    return volume_dice(slice_scores(preds, gts, hd95_pooling=None), patient_ids)


def _masks(masks: Any) -> list[np.ndarray]:
    """A list of boolean (H, W) masks from a stack (N, H, W[, 1]) or a list of masks of any sizes."""
    if isinstance(masks, np.ndarray):
        return list(_stack(masks))
    return [_binary(m) for m in masks]


@dataclass
class SliceScores:
    """Per-slice figures of a set of slices (masks may differ in size from slice to slice).

    ``dice`` / ``iou`` follow the empty-mask rules above; ``hd95`` is NaN where prediction or truth
    is empty (see ``tumor`` / ``predicted`` for why); ``inter`` / ``pred_px`` / ``truth_px`` are the
    pixel counts the volume and pooled figures are made of.
    """

    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray
    tumor: np.ndarray
    predicted: np.ndarray
    inter: np.ndarray
    pred_px: np.ndarray
    truth_px: np.ndarray
    diagonal: np.ndarray


def slice_scores(preds: Any, gts: Any, spacing: float | Sequence[float] = 1.0,
                 hd95_pooling: str | None = "pooled") -> SliceScores:
    """Dice, IoU, HD95 and pixel counts of every slice (``preds[i]`` against ``gts[i]``, same shape).

    ``hd95_pooling=None`` skips the (slower) surface distances; ``hd95`` is then all NaN.
    """
    p_list, g_list = _masks(preds), _masks(gts)
    if len(p_list) != len(g_list):
        raise ValueError(f"length mismatch: {len(p_list)} predictions vs {len(g_list)} ground truths")
    n = len(p_list)
    out = {k: np.zeros(n) for k in ("dice", "iou", "hd95", "inter", "pred_px", "truth_px", "diagonal")}
    tumor, predicted = np.zeros(n, bool), np.zeros(n, bool)
    for i, (p, g) in enumerate(zip(p_list, g_list, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"slice {i}: shape mismatch: pred {p.shape} vs gt {g.shape}")
        out["dice"][i], out["iou"][i] = dice(p, g), iou(p, g)
        tumor[i], predicted[i] = g.any(), p.any()
        both = tumor[i] and predicted[i] and hd95_pooling is not None
        out["hd95"][i] = hd95(p, g, spacing, pooling=hd95_pooling) if both else np.nan
        out["inter"][i] = np.logical_and(p, g).sum()
        out["pred_px"][i], out["truth_px"][i] = p.sum(), g.sum()
        steps = np.broadcast_to(np.asarray(spacing, dtype=float), (2,))
        out["diagonal"][i] = float(np.sqrt(np.sum((np.asarray(p.shape) * steps) ** 2)))
    return SliceScores(tumor=tumor, predicted=predicted, **out)


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def volume_dice(scores: SliceScores, patient_ids: Sequence[str]) -> dict[str, float]:
    """Volume Dice per patient from per-slice pixel counts (Buda et al. 2019), first-appearance order."""
    ids = np.asarray(patient_ids, dtype=object)
    if len(ids) != len(scores.dice):
        raise ValueError(f"length mismatch: {len(scores.dice)} slices but {len(ids)} patient ids")
    out: dict[str, float] = {}
    for pid in dict.fromkeys(ids.tolist()):
        sel = ids == pid
        out[str(pid)] = _ratio(2.0 * scores.inter[sel].sum(), scores.pred_px[sel].sum() + scores.truth_px[sel].sum())
    return out


def segmentation_figures(preds: Any, gts: Any, patient_ids: Sequence[str], spacing: float | Sequence[float] = 1.0,
                         hd95_pooling: str = "pooled") -> dict[str, Any]:
    """Every segmentation figure of a set of slices, under the names of :class:`classseg.evaluation.Scores`.

    * ``dice_tumor_slices`` / ``iou_tumor_slices``: mean over slices whose ground truth is non-empty.
    * ``hd95_detected_px``: mean HD95 over tumor slices with a non-empty prediction (in pixels of the
      masks given, times ``spacing``); ``missed_tumor_slices``: tumor slices with an empty prediction;
      ``hd95_with_miss_penalty_px``: the mean when each missed slice scores the image diagonal.
    * ``dice_end_to_end`` / ``iou_end_to_end``: mean per-slice figure over every slice, empty vs empty = 1.
    * ``dice_per_patient``: mean volume Dice over patients; ``dice_global``: pixels pooled over all slices.
    * ``pixel_precision`` / ``pixel_recall``: pixels pooled over tumor slices.
    * ``false_positive_slices``: empty-truth slices with any predicted pixel.
    Means over an empty set are ``None``.
    """
    return figures_from_slice_scores(slice_scores(preds, gts, spacing, hd95_pooling), patient_ids, hd95_pooling)


def figures_from_slice_scores(s: SliceScores, patient_ids: Sequence[str], hd95_pooling: str | None = "pooled"
                              ) -> dict[str, Any]:
    """:func:`segmentation_figures` from per-slice figures already computed (:func:`slice_scores`): the one
    home of that arithmetic, so slices scored a patient at a time (the streaming pipeline's
    :class:`classseg.evaluation.scores.ScoreAccumulator`) give the very numbers of scoring them at once."""
    volumes = volume_dice(s, patient_ids)
    ids = np.asarray(patient_ids, dtype=object)
    detected = s.tumor & s.predicted
    missed = s.tumor & ~s.predicted
    penalised = np.where(missed, s.diagonal, s.hd95)[s.tumor]
    t = s.tumor
    return {
        "n_slices": int(len(s.dice)),
        "n_tumor_slices": int(t.sum()),
        "dice_tumor_slices": _mean(s.dice[t]),
        "iou_tumor_slices": _mean(s.iou[t]),
        "hd95_detected_px": _mean(s.hd95[detected]),
        "missed_tumor_slices": int(missed.sum()),
        "hd95_with_miss_penalty_px": _mean(penalised),
        "dice_end_to_end": _mean(s.dice),
        "iou_end_to_end": _mean(s.iou),
        "dice_per_patient": _mean(np.array(list(volumes.values()))),
        "dice_global": _ratio(2.0 * s.inter.sum(), s.pred_px.sum() + s.truth_px.sum()) if len(s.dice) else None,
        "pixel_precision": _ratio(s.inter[t].sum(), s.pred_px[t].sum(), 0.0) if t.any() else None,
        "pixel_recall": _ratio(s.inter[t].sum(), s.truth_px[t].sum(), 0.0) if t.any() else None,
        "false_positive_slices": int((~t & s.predicted).sum()),
        "hd95_pooling": hd95_pooling,
        "per_patient": [{"patient_id": pid, "dice": value, "n_slices": int((ids == pid).sum()),
                         "n_tumor_slices": int(t[ids == pid].sum())} for pid, value in volumes.items()],
    }


def to_original_size(masks: Any, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Masks resized back to each slice's original (H, W) with nearest-neighbour interpolation (uint8 {0,1}).

    The pipeline and the training runs both score at the original size through this function, so
    HD95 and Dice mean the same thing whatever size a model was trained at.
    """
    from classseg.delivery.rules import to_original_size as resize_back

    return resize_back(_masks(masks), shapes)

"""Choices made on the validation split only: post-processing of the masks, the gate's threshold and rule.

Every choice here states its rule, is computed from validation predictions, and is written into the
model card (:mod:`classseg.models.card`) so that the pipeline applies exactly what was validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import product

import numpy as np
import pandas as pd

from classseg.delivery.postprocess import Postprocess3DConfig, PostprocessConfig, postprocess
from classseg.delivery.rules import MaskDelivery, deliver_masks, final_calls
from classseg.evaluation.classification import detection
from classseg.evaluation.segmentation import per_patient_dice, to_original_size

#: The grid searched by :func:`choose_postprocess` (minimum component area in pixels at the model's size,
#: where the pipeline post-processes; at 128 px for 256 px slices one model pixel is 4 slice pixels).
POSTPROCESS_GRID: dict[str, Sequence] = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "closing": (False, True),
    "min_component_px": (0, 4, 12, 24, 40, 64),
}


def detection_accuracy(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]) -> float:
    """Slice accuracy (:func:`classseg.evaluation.classification.detection`) of the call "tumor = mask
    non-empty" against "tumor = ground truth non-empty"; NaN for no slices."""
    pred = np.array([np.asarray(m).any() for m in pred_masks], bool)
    gt = np.array([np.asarray(m).any() for m in gt_masks], bool)
    accuracy = detection(gt, pred)["accuracy"]
    return float("nan") if accuracy is None else float(accuracy)


def choose_postprocess(probs: np.ndarray, truths: Sequence[np.ndarray] | np.ndarray, patient_ids: Sequence[str],
                       grid: dict[str, Sequence] | None = None, fill_holes: bool = True,
                       closing_kernel: int = 5) -> tuple[PostprocessConfig, pd.DataFrame]:
    """Pick threshold, closing and minimum component area on validation predictions.

    ``probs``: (N, h, w[, 1]) at the model's size; ``truths``: ground truth at each slice's original
    size. As in the pipeline, masks are post-processed at the model's size, resized (nearest) to the
    original size and scored there.

    Rule: maximise ``(volume Dice averaged over patients + slice accuracy of "mask non-empty") / 2``;
    volume Dice (Buda et al. 2019) rewards outlines, the accuracy term penalises stray blobs on healthy
    slices. Ties go to the earlier grid point (lower threshold, no closing, smaller minimum area).
    Hole filling (seed 001) stays on. Returns the chosen config and the whole scored grid.
    """
    grid = {**POSTPROCESS_GRID, **(grid or {})}
    gt = [np.asarray(t).reshape(np.asarray(t).shape[:2]) for t in truths]
    shapes = [t.shape for t in gt]
    maps = probs[..., 0] if probs.ndim == 4 else probs
    ids = np.asarray(patient_ids)
    rows = []
    for threshold, closing, min_px in product(grid["threshold"], grid["closing"], grid["min_component_px"]):
        cfg = PostprocessConfig(threshold=float(threshold), closing=bool(closing), closing_kernel=closing_kernel,
                                fill_holes=fill_holes, min_component_px=int(min_px))
        pred = to_original_size(postprocess(maps, cfg), shapes)
        volume = float(np.mean(list(per_patient_dice(pred, gt, ids).values())))
        accuracy = detection_accuracy(pred, gt)
        rows.append({"threshold": cfg.threshold, "closing": cfg.closing, "min_component_px": cfg.min_component_px,
                     "fill_holes": fill_holes, "dice_per_patient": volume, "detection_accuracy": accuracy,
                     "score": (volume + accuracy) / 2})
    table = pd.DataFrame(rows)
    best = table.iloc[int(np.argmax(table["score"].to_numpy()))]
    chosen = replace(PostprocessConfig(), threshold=float(best["threshold"]), closing=bool(best["closing"]),
                     closing_kernel=closing_kernel, fill_holes=fill_holes,
                     min_component_px=int(best["min_component_px"]))
    return chosen, table


def choose_gate(y_true: np.ndarray, gate_prob: np.ndarray, mask_nonempty: np.ndarray | MaskDelivery | None,
                thresholds: Sequence[float] | None = None) -> tuple[dict, pd.DataFrame]:
    """Choose the gate threshold and rule on validation slices.

    Each (rule, threshold) is scored by the calls the pipeline makes and the runs report
    (:func:`classseg.delivery.rules.final_calls`), so the figures reported are those the rule was chosen
    by. ``mask_nonempty``: the delivered mask non-empty per slice, or (exact with a 3D filter, which
    sees only the slices the rule segments) the :class:`~classseg.delivery.rules.MaskDelivery` of the
    segmenter's val probabilities, delivered again per threshold.

    Rule: among (rule, threshold) pairs whose sensitivity is at least that of "mask non-empty" (the
    baseline a gate must beat, issue 10), take the highest accuracy; ties go to the higher
    sensitivity, then to the threshold closest to 0.5. The baseline itself (rule ``mask``) competes,
    so the gate is used only where it beats the segmenter's own verdict on validation. Without masks
    (no segmenter) only rule ``gate`` is searched and the sensitivity floor is 0.
    """
    y = np.asarray(y_true).astype(bool)
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2) if thresholds is None else np.asarray(thresholds)

    def score(pred: np.ndarray) -> tuple[float, float, float]:
        found = detection(y, pred)
        return tuple(float("nan") if found[k] is None else float(found[k])  # type: ignore[return-value]
                     for k in ("accuracy", "sensitivity", "specificity"))

    def calls(t: float, rule: str) -> np.ndarray:
        if isinstance(mask_nonempty, MaskDelivery):
            return mask_nonempty.deliver(gate_prob, t, rule).calls
        return final_calls(gate_prob, mask_nonempty if mask_nonempty is not None else y, t, rule)

    rows = []
    rules = ("gate",) if mask_nonempty is None else ("gate", "gate_and_mask")
    for rule in rules:
        for t in grid:
            acc, sens, spec = score(calls(float(t), rule))
            rows.append({"rule": rule, "threshold": float(t), "accuracy": acc, "sensitivity": sens,
                         "specificity": spec})
    floor = 0.0
    if mask_nonempty is not None:
        acc, sens, spec = score(calls(0.5, "mask"))
        rows.append({"rule": "mask", "threshold": float("nan"), "accuracy": acc, "sensitivity": sens,
                     "specificity": spec})
        floor = sens
    table = pd.DataFrame(rows)
    ok = table[table["sensitivity"] >= floor - 1e-12].copy()
    ok["closeness"] = -(ok["threshold"].fillna(0.5) - 0.5).abs()
    ok["is_baseline"] = ok["rule"] == "mask"  # on a tie the gate has not beaten the baseline
    best = ok.sort_values(["accuracy", "sensitivity", "is_baseline", "closeness"], ascending=False).iloc[0]
    baseline = table[table["rule"] == "mask"].iloc[0].to_dict() if mask_nonempty is not None else None
    choice = {"rule": str(best["rule"]), "threshold": None if best["rule"] == "mask" else float(best["threshold"]),
              "accuracy": float(best["accuracy"]), "sensitivity": float(best["sensitivity"]),
              "specificity": float(best["specificity"]), "baseline_mask_nonempty": baseline,
              "selection_rule": "max accuracy subject to sensitivity >= that of 'mask non-empty' on val; "
                                "the baseline competes"}
    return choice, table


#: ``min_fraction`` values of the per-patient 3D filter tried by :func:`choose_delivery` (0 = off).
FILTER_3D_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)


def choose_delivery(probs_by_tta: dict[str, np.ndarray], truths: Sequence[np.ndarray], patient_ids: Sequence[str],
                    order: Sequence[int] | None = None, fractions: Sequence[float] = FILTER_3D_FRACTIONS,
                    grid: dict[str, Sequence] | None = None
                    ) -> tuple[str, PostprocessConfig, Postprocess3DConfig | None, pd.DataFrame]:
    """Choose test-time flips, 2D post-processing and the per-patient 3D filter on validation predictions.

    ``probs_by_tta``: the model's val probabilities per TTA mode (``none`` first), at the model's size.
    For each mode the 2D post-processing is chosen by :func:`choose_postprocess`; then every 3D
    ``min_fraction`` is scored with the same rule (mean of volume Dice per patient and slice accuracy
    of "mask non-empty"). Highest score wins; ties go to the cheaper choice (no flips before flips, a
    smaller fraction before a larger one). Returns ``(tta, postprocess, postprocess_3d or None, table)``.
    """
    gt = [np.asarray(t).reshape(np.asarray(t).shape[:2]) for t in truths]
    shapes = [t.shape for t in gt]
    ids = np.asarray(patient_ids)
    rows, configs = [], []
    for mode, probs in probs_by_tta.items():
        cfg2d, _ = choose_postprocess(probs, gt, ids, grid)
        for fraction in fractions:
            cfg3d = Postprocess3DConfig(min_fraction=float(fraction)) if fraction > 0 else None
            pred, _ = deliver_masks(probs, shapes, cfg2d, cfg3d, ids, order)
            volume = float(np.mean(list(per_patient_dice(pred, gt, ids).values())))
            accuracy = detection_accuracy(pred, gt)
            rows.append({"tta": mode, "min_fraction_3d": float(fraction), "threshold": cfg2d.threshold,
                         "closing": cfg2d.closing, "min_component_px": cfg2d.min_component_px,
                         "dice_per_patient": volume, "detection_accuracy": accuracy,
                         "score": (volume + accuracy) / 2})
            configs.append((mode, cfg2d, cfg3d))
    table = pd.DataFrame(rows)
    best = int(np.argmax(table["score"].to_numpy()))  # first maximum = the cheaper choice on a tie
    mode, cfg2d, cfg3d = configs[best]
    return mode, cfg2d, cfg3d, table

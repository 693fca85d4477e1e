"""THE gate rules: which slices are segmented, the final call of a slice, the mask it delivers.

A slice goes through (issue 19, one order of operations everywhere: pipeline, training, selection,
scoring):

1. the gate's verdict ``passed = P(tumor) >= class_threshold`` (classifier or joint class output);
2. the slices the rule segments (:func:`segmented_slices`): every slice for ``mask``, the passed ones
   for ``gate`` / ``gate_and_mask``;
3. their mask probabilities post-processed in 2D at the model's size (:func:`classseg.delivery.postprocess.postprocess`,
   mask threshold = ``PostprocessConfig.threshold``);
4. the per-patient 3D filter (:func:`classseg.delivery.postprocess.filter_components_3d_groups`) over the
   slices the rule segments, and only those;
5. nearest resizing back to each slice's original size;
6. the rule (:data:`GATE_RULES`): final call (:func:`final_calls`) and delivered mask
   (:func:`delivered_masks`).

Rules: ``gate`` = the gate's verdict (a passed slice is "tumor" even when its mask is empty);
``gate_and_mask`` = verdict AND a non-empty mask; ``mask`` = mask non-empty (the gate is reported only).
The delivered mask is the mask where the slice was segmented and, for the gated rules, passed; so for
``mask`` and ``gate_and_mask`` the final call is exactly "delivered mask non-empty".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classseg.delivery.postprocess import (
    Postprocess3DConfig,
    PostprocessConfig,
    filter_components_3d_groups,
    postprocess,
)

#: How the final per-slice call combines the gate's verdict with the (post-processed) mask.
GATE_RULES = ("gate", "gate_and_mask", "mask")


def check_rule(rule: str) -> str:
    """``rule`` when it is one of :data:`GATE_RULES`; else ``ValueError`` naming them."""
    if rule not in GATE_RULES:
        raise ValueError(f"gate rule must be one of {GATE_RULES}, got {rule!r}")
    return rule


def gate_verdicts(gate_prob: Sequence[float] | np.ndarray, class_threshold: float) -> np.ndarray:
    """(N,) bool: the gate passes a slice when ``P(tumor) >= class_threshold``."""
    return np.asarray(gate_prob, float) >= float(class_threshold)


def calls_from_verdicts(passed: Sequence[bool] | np.ndarray | None, mask_nonempty: Sequence[bool] | np.ndarray,
                        rule: str) -> np.ndarray:
    """(N,) bool final calls from the gate's verdicts: ``gate`` = verdict; ``gate_and_mask`` = verdict
    and mask non-empty; ``mask`` = mask non-empty (``passed`` may then be None)."""
    mask = np.asarray(mask_nonempty, bool)
    if check_rule(rule) == "mask":
        return mask.copy()
    if passed is None:
        raise ValueError(f"gate rule {rule!r} needs the gate's verdicts")
    verdict = np.asarray(passed, bool)
    return verdict.copy() if rule == "gate" else verdict & mask


def final_calls(gate_prob: Sequence[float] | np.ndarray | None, mask_nonempty: Sequence[bool] | np.ndarray,
                class_threshold: float, rule: str) -> np.ndarray:
    """(N,) bool final call per slice: ``gate`` = ``p >= class_threshold``; ``gate_and_mask`` = that and
    a non-empty delivered mask; ``mask`` = non-empty mask (gate ignored, ``gate_prob`` may be None)."""
    passed = None if gate_prob is None else gate_verdicts(gate_prob, class_threshold)
    return calls_from_verdicts(passed, mask_nonempty, rule)


def segmented_slices(passed: Sequence[bool] | np.ndarray, rule: str) -> np.ndarray:
    """(N,) bool: the slices the rule segments: all for ``mask``, the passed ones otherwise."""
    passed = np.asarray(passed, bool)
    return np.ones(len(passed), bool) if check_rule(rule) == "mask" else passed.copy()


def delivered_masks(masks: Sequence[np.ndarray], passed: Sequence[bool] | np.ndarray | None,
                    rule: str) -> list[np.ndarray]:
    """The mask a user receives per slice: ``mask`` → the mask; ``gate`` / ``gate_and_mask`` → the mask
    where the gate passed, else an empty mask of the same shape."""
    if check_rule(rule) == "mask":
        return list(masks)
    if passed is None:
        raise ValueError(f"gate rule {rule!r} needs the gate's verdicts")
    return [m if ok else np.zeros_like(m) for m, ok in zip(masks, np.asarray(passed, bool), strict=True)]


def to_original_size(masks: Sequence[np.ndarray] | np.ndarray, shapes: Sequence[tuple[int, int]]
                     ) -> list[np.ndarray]:
    """Nearest-neighbour resize of binary masks back to each slice's (H, W); uint8 {0, 1}."""
    import cv2

    out = []
    for mask, shape in zip(masks, shapes, strict=True):
        m = np.asarray(mask).astype(np.uint8).reshape(np.shape(mask)[:2])
        h, w = int(shape[0]), int(shape[1])
        out.append(m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST))
    return out


def deliver_masks(mask_prob: np.ndarray, shapes: Sequence[tuple[int, int]], config: PostprocessConfig,
                  config_3d: Postprocess3DConfig | None = None, groups: Sequence[Any] | None = None,
                  order: Sequence[Any] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Masks of the slices given, every one segmented: 2D post-processing at the model's size, the
    per-patient 3D filter over these slices (``groups`` = patients, ``order`` = slice numbers), nearest
    resizing to ``shapes``. Returns the masks and, per slice, whether the 3D filter emptied its mask.
    (:class:`MaskDelivery` with every slice segmented: one implementation of the order of operations.)"""
    if len(mask_prob) == 0:
        return [], np.zeros(0, bool)
    return MaskDelivery(mask_prob, shapes, config, config_3d, groups, order).masks()


@dataclass
class Delivery:
    """What the rule delivers for N slices (see the module docstring for the order of operations)."""

    calls: np.ndarray  # (N,) bool final call under the rule
    passed: np.ndarray | None  # (N,) bool gate verdicts (None: no gate)
    segmented: np.ndarray  # (N,) bool the rule segmented the slice
    masks: list[np.ndarray]  # uint8 at the original size; empty where not segmented
    delivered: list[np.ndarray]  # what a user receives (:func:`delivered_masks`)
    removed_3d: np.ndarray  # (N,) bool the 3D filter emptied the slice's mask
    rule: str = "mask"


class MaskDelivery:
    """Mask probabilities post-processed in 2D once; the 3D filter and the resizing run per set of
    segmented slices (:meth:`masks`), as the rule needs (the 3D filter sees only the segmented slices).

    ``mask_prob``: (M, h, w[, 1]) probabilities of the slices ``index`` (default: all N = len(shapes));
    ``groups`` / ``order``: each of the N slices' patient and slice number (None: no 3D grouping /
    the order given)."""

    def __init__(self, mask_prob: np.ndarray, shapes: Sequence[tuple[int, int]], config: PostprocessConfig,
                 config_3d: Postprocess3DConfig | None = None, groups: Sequence[Any] | None = None,
                 order: Sequence[Any] | None = None, index: Sequence[int] | np.ndarray | None = None) -> None:
        self.shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
        n = len(self.shapes)
        self.index = np.arange(n) if index is None else np.asarray(index, int).reshape(-1)
        prob = np.asarray(mask_prob, np.float32)
        if len(prob) != len(self.index):
            raise ValueError(f"{len(prob)} mask probability maps for {len(self.index)} slices")
        if groups is not None and len(groups) != n:
            raise ValueError(f"{len(groups)} group labels for {n} slices")
        self.binary = postprocess(prob.reshape(prob.shape[:3]), config) if len(prob) else np.zeros((0, 1, 1), np.uint8)
        self.config_3d = config_3d if config_3d is not None and config_3d.min_fraction > 0 else None
        self.groups = None if groups is None else list(groups)
        self.order = None if order is None else np.asarray(order)
        self._row = {int(i): k for k, i in enumerate(self.index)}
        self._plain: dict[int, np.ndarray] = {}  # 2D-only masks at original size (no 3D filter: subset-free)

    def __len__(self) -> int:
        return len(self.shapes)

    def masks(self, segmented: Sequence[bool] | np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Masks at the original size of every slice (empty where not ``segmented``; default: the slices
        with probabilities) and the per-slice "3D filter emptied the mask" flags. The 3D filter runs
        over each patient's segmented slices only."""
        n = len(self)
        seg = np.zeros(n, bool)
        if segmented is None:
            seg[self.index] = True
        else:
            seg = np.asarray(segmented, bool).copy()
        todo = np.flatnonzero(seg)
        missing = [int(i) for i in todo if int(i) not in self._row]
        if missing:
            raise ValueError(f"slice(s) {missing[:5]} are to be segmented but have no mask probabilities")
        out = [np.zeros(s, np.uint8) for s in self.shapes]
        removed = np.zeros(n, bool)
        if not len(todo):
            return out, removed
        if self.config_3d is None or self.groups is None:
            for i in todo:
                if int(i) not in self._plain:
                    self._plain[int(i)] = to_original_size([self.binary[self._row[int(i)]]], [self.shapes[i]])[0]
                out[i] = self._plain[int(i)]
            return out, removed
        rows = [self._row[int(i)] for i in todo]
        filtered, gone = filter_components_3d_groups(self.binary[rows], [self.groups[i] for i in todo],
                                                     self.config_3d,
                                                     None if self.order is None else self.order[todo])
        for k, mask in zip(todo, to_original_size(filtered, [self.shapes[i] for i in todo]), strict=True):
            out[k] = mask
        removed[todo] = gone
        return out, removed

    def nonempty(self, segmented: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: the slice's mask (at the original size) is non-empty when ``segmented`` are segmented."""
        return np.array([bool(m.any()) for m in self.masks(segmented)[0]], bool)

    def deliver(self, gate_prob: Sequence[float] | np.ndarray | None = None, class_threshold: float = 0.5,
                rule: str = "mask", passed: Sequence[bool] | np.ndarray | None = None) -> Delivery:
        """The rule applied: gate verdicts (``gate_prob >= class_threshold``, or ``passed``), the slices it
        segments, their masks (3D filter over those), final calls and delivered masks."""
        check_rule(rule)
        if passed is None and gate_prob is not None:
            passed = gate_verdicts(gate_prob, class_threshold)
        if passed is None:
            if rule != "mask":
                raise ValueError(f"gate rule {rule!r} needs the gate's probabilities")
            verdict = None
            segmented = np.ones(len(self), bool)
        else:
            verdict = np.asarray(passed, bool)
            if len(verdict) != len(self):
                raise ValueError(f"{len(verdict)} gate verdicts for {len(self)} slices")
            segmented = segmented_slices(verdict, rule)
        masks, removed = self.masks(segmented)
        nonempty = np.array([bool(m.any()) for m in masks], bool)
        return Delivery(calls=calls_from_verdicts(verdict, nonempty, rule), passed=verdict, segmented=segmented,
                        masks=masks, delivered=delivered_masks(masks, verdict, rule), removed_3d=removed, rule=rule)


def deliver(mask_prob: np.ndarray, shapes: Sequence[tuple[int, int]], config: PostprocessConfig,
            gate_prob: Sequence[float] | np.ndarray | None = None, class_threshold: float = 0.5,
            rule: str = "mask", config_3d: Postprocess3DConfig | None = None, groups: Sequence[Any] | None = None,
            order: Sequence[Any] | None = None, index: Sequence[int] | np.ndarray | None = None) -> Delivery:
    """From mask probabilities (and the gate's P(tumor)) to final calls, delivered masks at the original
    size and "3D filter removed" flags, in the one order: 2D post-processing → per-patient 3D filter over
    the slices the rule segments → resize back → rule. ``mask_prob`` holds every slice's map, or only the
    slices ``index`` (which must include every slice the rule segments)."""
    return MaskDelivery(mask_prob, shapes, config, config_3d, groups, order, index).deliver(
        gate_prob, class_threshold, rule)

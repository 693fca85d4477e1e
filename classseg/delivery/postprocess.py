"""Mask post-processing: threshold -> morphological closing -> hole filling -> small-component removal.

* Closing (dilation then erosion with an elliptical kernel) smooths boundaries and bridges small gaps,
  as seed 000 does to its predicted masks ("morphological closing ... refines tumor boundaries").
* Hole filling encodes the prior that gliomas are solid regions (seed 001, Sec. 3.5, flood fill);
  ``scipy.ndimage.binary_fill_holes`` fills every background region not connected to the border.
* Components smaller than ``min_component_px`` pixels (8-connected, OpenCV
  ``connectedComponentsWithStats``) are dropped; 0 disables the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage


@dataclass
class PostprocessConfig:
    """Post-processing switches. Defaults: threshold 0.5, 5x5 closing, hole filling, no size filter."""

    threshold: float = 0.5
    closing: bool = True
    closing_kernel: int = 5
    fill_holes: bool = True
    min_component_px: int = 0


def _postprocess_2d(mask: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Apply the enabled steps to one boolean (H, W) mask; returns uint8 {0, 1}."""
    out = mask.astype(np.uint8)
    if config.closing and config.closing_kernel > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (config.closing_kernel, config.closing_kernel))
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)
    if config.fill_holes:
        out = ndimage.binary_fill_holes(out).astype(np.uint8)
    if config.min_component_px > 0 and out.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(out, connectivity=8)
        keep = np.zeros(n, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= config.min_component_px
        out = keep[labels].astype(np.uint8)
    return out


def postprocess(prob_or_mask: Any, config: PostprocessConfig | None = None) -> np.ndarray:
    """Binarise (value >= ``threshold``) and clean a mask or probability map; returns uint8 {0, 1}.

    Accepts one slice (H, W) or (H, W, 1), or a batch (N, H, W) or (N, H, W, 1); the output has the
    input's shape. A 3-D input whose last axis has size 1 is read as one (H, W, 1) slice.
    """
    config = config or PostprocessConfig()
    arr = np.asarray(prob_or_mask)
    shape = arr.shape
    if arr.ndim == 2:
        batch = arr[None]
    elif arr.ndim == 3 and shape[-1] == 1:
        batch = arr[None, ..., 0]
    elif arr.ndim == 3:
        batch = arr
    elif arr.ndim == 4 and shape[-1] == 1:
        batch = arr[..., 0]
    else:
        raise ValueError(f"expected (H, W), (H, W, 1), (N, H, W) or (N, H, W, 1), got shape {shape}")
    binary = batch >= config.threshold
    out = np.stack([_postprocess_2d(m, config) for m in binary]) if len(binary) else binary.astype(np.uint8)
    return out.reshape(shape)


#: 3D neighbourhoods: faces (6), faces and edges (18), faces, edges and corners (26), as
#: ``scipy.ndimage.generate_binary_structure(3, rank)``.
CONNECTIVITY_3D = {6: 1, 18: 2, 26: 3}


@dataclass
class Postprocess3DConfig:
    """Per-patient 3D clean-up across adjacent slices (issue 17).

    The slices of one patient, stacked in slice order, form a volume; its connected components
    (``connectivity`` 26 = faces, edges and corners; 6 = faces only) smaller than ``min_fraction`` of
    the largest component's voxel count are removed. A glioma is one connected region in 3D, so small
    islands away from it are false positives (the same prior as seed 001's hole filling, one
    dimension up). ``min_fraction`` 0 disables the step.
    """

    min_fraction: float = 0.2
    connectivity: int = 26

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.min_fraction) <= 1.0 or self.connectivity not in CONNECTIVITY_3D:
            raise ValueError(f"postprocess_3d: min_fraction must be in [0, 1] and connectivity one of "
                             f"{tuple(CONNECTIVITY_3D)}, got {self.min_fraction} and {self.connectivity}")


def filter_components_3d(masks: np.ndarray, config: Postprocess3DConfig | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Remove small 3D components of one patient's (N, H, W) binary masks, stacked in slice order.

    Returns the filtered uint8 {0, 1} stack and an (N,) bool array: True where a slice's mask was
    non-empty before and is empty after (the pipeline notes it in ``predictions.csv``).
    Hand-written around ``scipy.ndimage.label`` (no library offers "drop components relative to the
    largest"); the slices must share one size (the model's), which is where the pipeline calls it.
    """
    config = config or Postprocess3DConfig()
    stack = np.asarray(masks).astype(bool)
    if stack.ndim != 3:
        raise ValueError(f"expected an (N, H, W) stack of masks, got shape {stack.shape}")
    before = stack.reshape(len(stack), -1).any(axis=1)
    if config.min_fraction <= 0 or not before.any():
        return stack.astype(np.uint8), np.zeros(len(stack), bool)
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY_3D[config.connectivity])
    labels, n = ndimage.label(stack, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= config.min_fraction * sizes[1:].max()
    keep[0] = False
    out = keep[labels].astype(np.uint8)
    after = out.reshape(len(out), -1).any(axis=1)
    return out, before & ~after


def filter_components_3d_groups(masks: np.ndarray, groups: Any, config: Postprocess3DConfig | None,
                                order: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filter_components_3d` over each patient of an (N, H, W) stack of masks.

    ``groups[i]``: slice i's patient (``None`` = a lone slice, left as it is); ``order[i]``: its
    position in the patient's volume (slice number; None = the order given). Returns the filtered
    stack and the (N,) "mask emptied by the filter" flags. ``config`` None: nothing is changed.
    """
    out = np.asarray(masks).astype(np.uint8).copy()
    removed = np.zeros(len(out), bool)
    if config is None or config.min_fraction <= 0 or groups is None:
        return out, removed
    by_group: dict[Any, list[int]] = {}
    for i, key in enumerate(groups):
        if key is not None and not (isinstance(key, float) and np.isnan(key)):
            by_group.setdefault(key, []).append(i)
    for index in by_group.values():
        idx = np.asarray(index)
        if order is not None:
            idx = idx[np.argsort(np.asarray(order)[idx], kind="stable")]
        out[idx], removed[idx] = filter_components_3d(out[idx], config)
    return out, removed

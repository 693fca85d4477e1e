"""Slice context (2.5D): a slice's neighbours in the same patient as extra input channels.

A 2D network sees one slice; a tumor boundary that is faint in it is often clear one slice up or down.
The 2.5D input used by Buda et al. (2019, the LGG dataset's paper: three neighbouring slices of FLAIR)
and by nnU-Net's 2D configuration's neighbours option stacks each slice with its ``k`` neighbours on each
side, in slice order, of the *same* patient:

    x'_i = concat(x_{j(i, -k)}, ..., x_i, ..., x_{j(i, +k)})   along channels,

with ``j(i, d)`` the slice ``d`` places from ``i`` in its patient's slice order, clamped to the patient's
first and last slice (edge slices repeat themselves). Channel ``c`` of the result is sequence ``c % C`` of
neighbour ``c // C - k``: with the LGG's (pre-contrast, FLAIR, post-contrast) slices and ``k = 1`` that is
nine channels, the middle three being the slice itself. A slice with no patient (``groups`` None, or a
None entry) has no neighbours: it gets ``2k + 1`` copies of itself (:func:`lone_slices` tells which).
Training, selection and the pipeline all build context through :func:`add_context`
(:func:`classseg.data.standardize.prepare_input`), so the two sides cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Largest ``k`` accepted (neighbours on each side): 15 channels at k = 2.
MAX_CONTEXT = 4


def check_context(k: Any) -> int:
    """``k`` as an int in ``0..MAX_CONTEXT``; raises ``ValueError`` with a one-line message otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) <= MAX_CONTEXT:
        raise ValueError(f"slice context must be a whole number of neighbours in 0..{MAX_CONTEXT}, got {k!r}")
    return int(k)


def context_channels(k: int, channels: int = 3) -> int:
    """Input channels of a model fed ``k`` neighbours on each side: ``channels * (2k + 1)``."""
    return channels * (2 * check_context(k) + 1)


def _no_group(key: Any) -> bool:
    return key is None or (isinstance(key, float) and np.isnan(key))


def context_index(groups: Sequence[Any] | np.ndarray | None, n: int, k: int,
                  order: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """(n, 2k + 1) int indices: row ``i`` lists the slices stacked for slice ``i`` (itself in the middle).

    Slices of one group (patient) are ordered by ``order`` (e.g. slice numbers; stable, ties keep the
    given order) or, without it, in the order given. Neighbours beyond a patient's first or last slice
    are clamped to it; a slice without a group is its own only neighbour."""
    k = check_context(k)
    offsets = np.arange(-k, k + 1)
    index = np.repeat(np.arange(n)[:, None], 2 * k + 1, axis=1)
    if k == 0 or groups is None:
        return index
    keys = list(groups)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group labels for {n} slices")
    if order is not None and len(order) != n:
        raise ValueError(f"{len(order)} slice positions for {n} slices")
    members: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        if not _no_group(key):
            members.setdefault(key, []).append(i)
    for idx in members.values():
        idx_arr = np.asarray(idx)
        if order is not None:
            idx_arr = idx_arr[np.argsort(np.asarray([order[i] for i in idx]), kind="stable")]
        pos = np.clip(np.arange(len(idx_arr))[:, None] + offsets[None, :], 0, len(idx_arr) - 1)
        index[idx_arr] = idx_arr[pos]
    return index


def lone_slices(groups: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """bool (n,): slices that have no neighbour to stack (no group, or alone in their group)."""
    if groups is None:
        return np.ones(n, bool)
    keys = list(groups)
    counts: dict[Any, int] = {}
    for key in keys:
        if not _no_group(key):
            counts[key] = counts.get(key, 0) + 1
    return np.asarray([_no_group(key) or counts[key] == 1 for key in keys], bool)


def add_context(x: np.ndarray, groups: Sequence[Any] | np.ndarray | None, k: int,
                order: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """(N, H, W, C) inputs -> (N, H, W, C * (2k + 1)), neighbours from :func:`context_index`; ``k = 0``
    returns ``x`` itself."""
    k = check_context(k)
    if k == 0:
        return x
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) inputs, got shape {arr.shape}")
    index = context_index(groups, len(arr), k, order)
    stacked = arr[index]  # (N, 2k+1, H, W, C)
    return np.ascontiguousarray(np.moveaxis(stacked, 1, 3).reshape(*arr.shape[:3], -1))

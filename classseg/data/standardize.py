"""Per-patient intensity standardisation (z-score over the brain), the same in training and inference.

MRI intensities have no absolute scale: the LGG slices come from five institutions and their 0..255
values were rescaled per volume when the TCIA data were exported, so a fixed 1/255 scaling leaves
scanner and window differences in the input. nnU-Net (Isensee et al. 2021) normalises each MRI case
by its own foreground z-score; here the "case" is a patient folder:

    x' = clip((x - mean_c) / std_c, -clip, clip)         per channel c,

with mean_c and std_c taken over the *foreground* pixels (any channel > ``foreground_level``) of all
slices of that patient. A loose image with no patient folder falls back to its own slice statistics.
Training (``classseg.training.segmenter``), the gate and the pipeline all call :func:`standardize_groups`,
so the two sides cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Names that may appear in a model card's ``normalization`` field.
NORMALIZATIONS = ("raw", "patient_zscore")


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of the foreground of a slice stack."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def channel_stats(images: np.ndarray, foreground_level: float = 5.0) -> ChannelStats:
    """Foreground mean / std per channel of (H, W, C) or (N, H, W, C) pixels.

    Foreground = pixels whose brightest channel exceeds ``foreground_level`` (the black background
    around the head is excluded). An all-background stack falls back to every pixel; a std below
    1.0 (flat image) is raised to 1.0 so nothing is divided by ~0.
    """
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) pixels, got shape {arr.shape}")
    pixels = arr.reshape(-1, arr.shape[-1])
    fg = pixels[pixels.max(axis=1) > foreground_level]
    if len(fg) < 16:
        fg = pixels
    mean = fg.mean(axis=0, dtype=np.float64)
    std = np.maximum(fg.std(axis=0, dtype=np.float64), 1.0)
    return ChannelStats(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def standardize(images: np.ndarray, stats: ChannelStats, clip: float = 5.0) -> np.ndarray:
    """``clip((x - mean) / std, -clip, clip)`` per channel, float32, same shape as ``images``."""
    arr = np.asarray(images, dtype=np.float32)
    out = (arr - np.asarray(stats.mean, np.float32)) / np.asarray(stats.std, np.float32)
    return np.clip(out, -clip, clip, out=out)


def standardize_groups(images: np.ndarray, groups: Sequence[object] | np.ndarray | None,
                       clip: float = 5.0) -> np.ndarray:
    """Standardise (N, H, W, C) pixels with the statistics of each slice's group (patient).

    ``groups[i]`` names slice i's patient; ``None`` (or a ``None`` entry) means "no patient": that
    slice uses its own statistics (the per-slice fallback for loose images).
    """
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) pixels, got shape {arr.shape}")
    n = len(arr)
    keys = [None] * n if groups is None else list(groups)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group labels for {n} slices")
    out = np.empty(arr.shape, np.float32)
    by_group: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        if key is None or (isinstance(key, float) and np.isnan(key)):
            out[i] = standardize(arr[i], channel_stats(arr[i]), clip)
        else:
            by_group.setdefault(key, []).append(i)
    for index in by_group.values():
        idx = np.asarray(index)
        out[idx] = standardize(arr[idx], channel_stats(arr[idx]), clip)
    return out


def prepare_input(images: np.ndarray, normalization: str, groups: Sequence[object] | np.ndarray | None = None
                  ) -> np.ndarray:
    """What a model whose card says ``normalization`` is fed: raw float32 pixels or patient z-scores."""
    if normalization == "raw":
        return np.asarray(images, dtype=np.float32)
    if normalization == "patient_zscore":
        return standardize_groups(images, groups)
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")

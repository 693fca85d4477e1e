"""Per-patient intensity normalisation (z-score or percentile scaling over the brain), the same in
training and inference.

MRI intensities have no absolute scale: the LGG slices come from five institutions and their 0..255
values were rescaled per volume when the TCIA data were exported, so a fixed 1/255 scaling leaves
scanner and window differences in the input. nnU-Net (Isensee et al. 2021) normalises each MRI case
by its own foreground z-score; here the "case" is a patient folder:

    x' = clip((x - mean_c) / std_c, -clip, clip)         per channel c,

with mean_c and std_c taken over the *foreground* pixels (any channel > ``foreground_level``) of all
slices of that patient. ``patient_percentile`` instead multiplies each channel so that the patient's
brain 99th percentile lands on a fixed target (:data:`PERCENTILE_TARGETS`; the percentile-landmark idea
of Nyul and Udupa 1999, with one landmark), keeping the 0..255 scale:

    x' = x * target_c / p99_c(brain pixels of the patient)

Both are invariant to a per-channel gain of the whole patient (issue 17: three unseen patients whose
FLAIR was 2-4x darker than in training got Dice 0.00 from a raw-pixel model). A loose image with no
patient folder falls back to its own slice statistics. Training, selection and the pipeline all call
:func:`prepare_input`, so the two sides cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classseg.data.context import add_context

#: Names that may appear in a model card's ``normalization`` field.
NORMALIZATIONS = ("raw", "patient_zscore", "patient_percentile")

#: Names of a model card's ``input_sequences``: ``all`` = the slice's three sequences as they are; ``flair`` =
#: FLAIR in all three channels (a model for patients whose pre- and post-contrast sequences are missing,
#: which the LGG export filled with FLAIR), applied by :func:`use_sequences` before normalisation.
SEQUENCES = ("all", "flair")
#: Channel order of the LGG slices: pre-contrast, FLAIR, post-contrast.
FLAIR_INDEX = 1

#: Brain 99th percentile per channel (pre-contrast, FLAIR, post-contrast) that ``patient_percentile``
#: maps every patient to: the medians over the 75 patients of ``kaggle_3m`` (issue 17).
PERCENTILE_TARGETS = (137.0, 137.0, 128.0)
#: The percentile ``patient_percentile`` matches (the brain's bright end, not its single brightest pixel).
PERCENTILE_Q = 99.0


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of the foreground of a slice stack."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def _pixels(images: np.ndarray) -> np.ndarray:
    """(H, W, C) or (N, H, W, C) pixels as float32 (P, C) rows."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) pixels, got shape {arr.shape}")
    return arr.reshape(-1, arr.shape[-1])


def channel_stats(images: np.ndarray, foreground_level: float = 5.0) -> ChannelStats:
    """Foreground mean / std per channel of (H, W, C) or (N, H, W, C) pixels.

    Foreground = pixels whose brightest channel exceeds ``foreground_level`` (the black background
    around the head is excluded). An all-background stack falls back to every pixel; a std below
    1.0 (flat image) is raised to 1.0 so nothing is divided by ~0.
    """
    pixels = _pixels(images)
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


def channel_percentiles(images: np.ndarray, q: float = PERCENTILE_Q, foreground_fraction: float = 0.05
                        ) -> tuple[float, ...]:
    """The ``q``-th percentile per channel over the brain pixels of (H, W, C) or (N, H, W, C) pixels.

    Brain = pixels whose brightest channel exceeds ``foreground_fraction`` times the stack's 99th
    percentile of that brightest channel. The cut is *relative*, so scaling every pixel by a factor
    scales these percentiles by the same factor (what makes :func:`percentile_scale` gain-invariant); a
    fixed level would lose dark patients' brain pixels. Fewer than 16 brain pixels: every pixel counts.
    """
    pixels = _pixels(images)
    brightest = pixels.max(axis=1)
    level = foreground_fraction * float(np.percentile(brightest, 99.0)) if len(brightest) else 0.0
    fg = pixels[brightest > level]
    if len(fg) < 16:
        fg = pixels
    return tuple(float(v) for v in np.percentile(fg, q, axis=0))


def percentile_scale(images: np.ndarray, percentiles: Sequence[float],
                     targets: Sequence[float] = PERCENTILE_TARGETS, min_percentile: float = 1.0) -> np.ndarray:
    """``x * target_c / p_c`` per channel: float32 on the 0..255 scale, not clipped.

    ``p_c`` is the patient's brain percentile (:func:`channel_percentiles`). A channel whose percentile is
    below ``min_percentile`` (empty or zero-filled) is left as it is. The model then still divides by 255
    inside, so a model trained on raw pixels can be fine-tuned on these inputs.
    """
    arr = np.asarray(images, dtype=np.float32)
    gains = np.asarray([t / p if p >= min_percentile else 1.0 for p, t in zip(percentiles, targets)], np.float32)
    return arr * gains[: arr.shape[-1]]


def normalize_groups(images: np.ndarray, groups: Sequence[object] | np.ndarray | None, normalization: str,
                     clip: float = 5.0) -> np.ndarray:
    """Normalise (N, H, W, C) pixels with the statistics of each slice's group (patient).

    ``normalization``: ``patient_zscore`` (:func:`standardize`) or ``patient_percentile``
    (:func:`percentile_scale`). ``groups[i]`` names slice i's patient; ``None`` (or a ``None`` / NaN
    entry) means "no patient": that slice uses its own statistics (the fallback for loose images).
    """
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) pixels, got shape {arr.shape}")
    if normalization == "patient_zscore":
        def apply(x: np.ndarray) -> np.ndarray:
            return standardize(x, channel_stats(x), clip)
    elif normalization == "patient_percentile":
        def apply(x: np.ndarray) -> np.ndarray:
            return percentile_scale(x, channel_percentiles(x))
    else:
        raise ValueError(f"unknown per-patient normalization {normalization!r}")
    n = len(arr)
    keys = [None] * n if groups is None else list(groups)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group labels for {n} slices")
    out = np.empty(arr.shape, np.float32)
    by_group: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        if key is None or (isinstance(key, float) and np.isnan(key)):
            out[i] = apply(arr[i])
        else:
            by_group.setdefault(key, []).append(i)
    for index in by_group.values():
        idx = np.asarray(index)
        out[idx] = apply(arr[idx])
    return out


def standardize_groups(images: np.ndarray, groups: Sequence[object] | np.ndarray | None,
                       clip: float = 5.0) -> np.ndarray:
    """Per-patient foreground z-scores of (N, H, W, C) pixels (:func:`normalize_groups`)."""
    return normalize_groups(images, groups, "patient_zscore", clip)


def use_sequences(images: np.ndarray, sequences: str = "all") -> np.ndarray:
    """The channels a model whose card says ``input_sequences`` sees: ``all`` returns ``images`` unchanged;
    ``flair`` returns a copy with every channel set to FLAIR (channel 1), x'_c = x_1 for c = 0, 1, 2."""
    if sequences not in SEQUENCES:
        raise ValueError(f"unknown input_sequences {sequences!r}; expected one of {SEQUENCES}")
    if sequences == "all":
        return images
    images = np.asarray(images)
    if images.ndim < 1 or images.shape[-1] != 3:
        raise ValueError(f"input_sequences 'flair' needs 3-channel slices (pre, FLAIR, post), got shape {images.shape}")
    return np.repeat(images[..., FLAIR_INDEX:FLAIR_INDEX + 1], 3, axis=-1)


def flair_only_rows(images: Sequence[np.ndarray] | np.ndarray,
                    groups: Sequence[object] | np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the slices of patients (``groups``; a slice without a group is its own patient) whose
    pre- and post-contrast channels equal FLAIR pixel for pixel on every slice, which is how the LGG export
    filled both missing sequences. A card's ``flair_only_model`` segments those slices."""
    n = len(images)
    same = np.fromiter((np.asarray(im).ndim == 3 and np.asarray(im).shape[-1] == 3
                        and np.array_equal(im[..., 0], im[..., FLAIR_INDEX])
                        and np.array_equal(im[..., 2], im[..., FLAIR_INDEX]) for im in images), bool, n)
    if groups is None:
        return same
    keys = np.asarray([str(g) if g is not None else f"\0lone{i}" for i, g in enumerate(groups)], dtype=object)
    out = same.copy()
    for key in set(keys.tolist()):
        rows = keys == key
        out[rows] = bool(same[rows].all())
    return out


def prepare_input(images: np.ndarray, normalization: str, groups: Sequence[object] | np.ndarray | None = None,
                  context: int = 0, order: Sequence[object] | np.ndarray | None = None,
                  sequences: str = "all") -> np.ndarray:
    """What a model whose card says ``normalization`` (and ``context_slices``) is fed: raw float32 pixels,
    patient z-scores or patient percentile-scaled pixels, then, with ``context`` > 0, each slice stacked
    with its ``context`` neighbours on each side in its patient (:func:`classseg.data.context.add_context`,
    slice order ``order`` or the order given); ``sequences`` (the card's ``input_sequences``,
    :func:`use_sequences`) picks the channels first. The one function training, selection and the pipeline call."""
    images = use_sequences(images, sequences)
    if normalization == "raw":
        out = np.asarray(images, dtype=np.float32)
    elif normalization in ("patient_zscore", "patient_percentile"):
        out = normalize_groups(images, groups, normalization)
    else:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    return add_context(out, groups, context, order) if context else out


def model_input_scale(normalization: str) -> float | None:
    """The rescaling a model applies inside itself: 1/255 for inputs on the 0..255 scale (``raw``,
    ``patient_percentile``), none for z-scores."""
    return None if normalization == "patient_zscore" else 1.0 / 255.0

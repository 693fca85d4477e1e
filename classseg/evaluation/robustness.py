"""Stress sets built from the validation patients: how a model holds up on scans unlike its training data.

Issue 17 found unseen patients whose FLAIR was 2-4x darker than any training patient; a raw-pixel model
saw no tumor there. Every recipe is therefore scored, beside plain val, on the same val patients with

* ``dark_0.35``: every channel multiplied by 0.35 (clipped to 0..255, rounded to uint8);
* ``bright_2.0``: every channel multiplied by 2.0 (clipped to 0..255);
* ``flair_only``: pre- and post-contrast replaced by FLAIR (both sequences missing, as for some LGG
  patients, whose export then repeats FLAIR).

The stressed slices are uint8 like files on disk, so a model sees exactly what the pipeline would read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from classseg.delivery.postprocess import Postprocess3DConfig, PostprocessConfig
from classseg.delivery.rules import deliver_masks
from classseg.evaluation.scores import score_slices

#: Channel order of the LGG slices: pre-contrast, FLAIR, post-contrast.
FLAIR = 1
#: The stress sets of every recipe row (name -> description).
STRESS_SETS: dict[str, str] = {
    "dark_0.35": "every channel x 0.35",
    "bright_2.0": "every channel x 2.0, clipped to 255",
    "flair_only": "pre- and post-contrast replaced by FLAIR",
}
#: The figures a robustness row keeps of each stress set.
ROBUSTNESS_FIELDS = ("dice_per_patient", "dice_tumor_slices", "accuracy", "sensitivity")


def stress_images(images: np.ndarray, name: str) -> np.ndarray:
    """The stress set ``name`` (:data:`STRESS_SETS`) of uint8 (N, H, W, 3) slices, as uint8."""
    arr = np.asarray(images)
    if name == "flair_only":
        out = arr.copy()
        out[..., 0] = arr[..., FLAIR]
        out[..., 2] = arr[..., FLAIR]
        return out
    if name.startswith(("dark_", "bright_")):
        factor = float(name.split("_", 1)[1])
        return np.clip(np.rint(arr.astype(np.float32) * factor), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown stress set {name!r}; expected one of {sorted(STRESS_SETS)}")


def robustness_scores(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                      truths: Sequence[np.ndarray], patient_ids: Sequence[str], config: PostprocessConfig,
                      config_3d: Postprocess3DConfig | None = None, order: Sequence[Any] | None = None,
                      sets: Sequence[str] = tuple(STRESS_SETS), plain_probs: np.ndarray | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Scores of the delivered masks on each stress set (``plain`` first, the unchanged slices).

    ``predict``: uint8 (N, h, w, 3) slices at the model's size -> mask probabilities (N, h, w[, 1]),
    including the model's own normalisation and test-time flips; ``truths`` at the original size.
    Each set keeps :data:`ROBUSTNESS_FIELDS` of :func:`classseg.evaluation.score_slices`. ``plain_probs``:
    ``predict(images)`` when the caller already has it (not computed again).
    """
    shapes = [np.asarray(t).shape[:2] for t in truths]
    out: dict[str, dict[str, Any]] = {}
    for name in ("plain", *sets):
        if name == "plain":
            probs = predict(images) if plain_probs is None else plain_probs
        else:
            probs = predict(stress_images(images, name))
        masks, _ = deliver_masks(probs, shapes, config, config_3d, patient_ids, order)
        scores = score_slices(truths, masks, patient_ids).to_dict(False)
        out[name] = {k: scores.get(k) for k in ROBUSTNESS_FIELDS}
    return out


def robustness_summary(scores: dict[str, dict[str, Any]], field: str = "dice_per_patient") -> float | None:
    """The worst ``field`` over the stress sets (not ``plain``): the number model selection weighs."""
    values = [v.get(field) for k, v in scores.items() if k != "plain" and v.get(field) is not None]
    return float(min(values)) if values else None

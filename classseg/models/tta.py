"""Test-time augmentation by flips: average a model's outputs over flipped copies of its inputs.

Mask outputs are flipped back before averaging; class outputs are averaged as they are (a flip does
not move the verdict). Flips are exact (no interpolation), so the averaged map is aligned with the
input. Models are run with it through :func:`classseg.models.predict.predict` (``tta=``): on the
validation split to decide whether to use it (:mod:`classseg.training.selection`), and by the pipeline
when the model card says so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: ``tta`` values of a model card: the flips averaged (identity always included).
TTA_MODES: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (2,)),
    "flips": ((), (2,), (1,), (1, 2)),
}


def _flip(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(x, axis=axes) if axes else x


def tta_predict(predict: Callable[[np.ndarray], dict[str, np.ndarray] | np.ndarray], x: np.ndarray,
                mode: str = "none") -> dict[str, np.ndarray] | np.ndarray:
    """``mean_k unflip_k(predict(flip_k(x)))`` over the flips of ``mode`` (:data:`TTA_MODES`).

    ``x``: (N, H, W, C) inputs. ``predict`` returns an array or a dict of arrays; an output of rank 4
    with the input's height and width is a mask and is flipped back, any other output (class
    probabilities) is averaged as it is.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"unknown tta mode {mode!r}; expected one of {sorted(TTA_MODES)}")
    flips = TTA_MODES[mode]
    total: dict[str, np.ndarray] | None = None
    single = False
    for axes in flips:
        out = predict(np.ascontiguousarray(_flip(x, axes)))
        if not isinstance(out, dict):
            out, single = {"_": out}, True
        back = {k: (_flip(np.asarray(v, np.float32), axes) if np.ndim(v) == 4 and np.shape(v)[1:3] == x.shape[1:3]
                    else np.asarray(v, np.float32)) for k, v in out.items()}
        total = back if total is None else {k: total[k] + back[k] for k in total}
    assert total is not None
    mean = {k: v / len(flips) for k, v in total.items()}
    return mean["_"] if single else mean

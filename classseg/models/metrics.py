"""Keras training metrics for binary segmentation, on masks thresholded at 0.5.

Each metric accumulates TP, FP and FN pixel counts over every batch seen since the last reset
and reports a *dataset-level* (micro) score, so an epoch's ``dice`` is one Dice over all pixels of
the epoch rather than a mean of per-batch values:

* Dice = 2 TP / (2 TP + FP + FN)          (Dice 1945; Sorensen 1948)
* IoU  = TP / (TP + FP + FN)              (Jaccard 1912)
* Tversky = TP / (TP + alpha FN + beta FP) (Tversky 1977; alpha = 0.7, beta = 0.3 as the loss)

A score with an empty denominator (no tumor predicted nor present) is 1.0 (perfect agreement).
Keras' own ``BinaryIoU`` averages over both classes, hence these small classes.

These are training monitors (``fit`` logs, checkpoint and early-stopping criteria) only; every figure a
run reports comes from :mod:`classseg.evaluation` (masks at the slice's original size, per-slice means).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates thresholded pixel TP / FP / FN; subclasses define :meth:`score`."""

    def __init__(self, threshold: float = 0.5, name: str = "confusion", dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.threshold = float(threshold)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        g = ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")
        p = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), self.threshold), "float32")
        if sample_weight is not None:
            w = ops.cast(sample_weight, "float32")
            while len(w.shape) < len(g.shape):  # per-sample weights -> broadcast over pixels
                w = ops.expand_dims(w, -1)
            g_w, p_w = g * w, p * w
        else:
            g_w, p_w = g, p
        self.tp.assign_add(ops.sum(g_w * p))
        self.fp.assign_add(ops.sum((1.0 - g) * p_w))
        self.fn.assign_add(ops.sum(g_w * (1.0 - p)))

    def score(self, tp: Any, fp: Any, fn: Any) -> tuple[Any, Any]:
        """Return (numerator, denominator)."""
        raise NotImplementedError

    def result(self) -> Any:
        num, den = self.score(self.tp, self.fp, self.fn)
        return ops.where(den > 0, num / ops.maximum(den, 1e-12), ops.ones_like(den))

    def reset_state(self) -> None:
        for v in (self.tp, self.fp, self.fn):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))  # zeros_like(Variable) fails on JAX

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="classseg")
class DiceCoefficient(_ConfusionMetric):
    """Dice = 2 TP / (2 TP + FP + FN) of the masks thresholded at ``threshold``."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)

    def score(self, tp: Any, fp: Any, fn: Any) -> tuple[Any, Any]:
        return 2.0 * tp, 2.0 * tp + fp + fn


@keras.saving.register_keras_serializable(package="classseg")
class IoUScore(_ConfusionMetric):
    """IoU (Jaccard) = TP / (TP + FP + FN) of the masks thresholded at ``threshold``."""

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)

    def score(self, tp: Any, fp: Any, fn: Any) -> tuple[Any, Any]:
        return tp, tp + fp + fn


@keras.saving.register_keras_serializable(package="classseg")
class TverskyScore(_ConfusionMetric):
    """Tversky index TP / (TP + alpha FN + beta FP) of the thresholded masks.

    Seed 002 reports the *soft* (unthresholded, smooth = 1) index of the reference code instead; the
    segmenter run reports that one too, as ``val.tversky_soft``.
    """

    def __init__(self, threshold: float = 0.5, alpha: float = 0.7, beta: float = 0.3, name: str = "tversky",
                 **kwargs: Any) -> None:
        super().__init__(threshold=threshold, name=name, **kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def score(self, tp: Any, fp: Any, fn: Any) -> tuple[Any, Any]:
        return tp, tp + self.alpha * fn + self.beta * fp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


def segmentation_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """The standard training metric list: ``[DiceCoefficient, IoUScore, TverskyScore]``."""
    return [DiceCoefficient(threshold), IoUScore(threshold), TverskyScore(threshold)]

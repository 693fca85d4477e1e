"""Overlap losses for binary segmentation (Keras 3, backend-agnostic via ``keras.ops``).

All losses take ``y_true`` in {0, 1} and ``y_pred`` = sigmoid probabilities, shape (N, H, W[, 1]).

Tversky index (Salehi et al. 2017; Abraham & Khan 2019, ISBI, "A novel focal Tversky loss function
with improved attention U-Net for lesion segmentation", eq. 3)::

    TP = sum(g * p),  FN = sum(g * (1 - p)),  FP = sum((1 - g) * p)
    TI = (TP + smooth) / (TP + alpha * FN + beta * FP + smooth)

with alpha = 0.7 weighting false negatives, beta = 1 - alpha = 0.3 false positives and smooth = 1,
as in the authors' reference code (github.com/nabsabraham/focal-tversky-unet, ``losses.py``).

Focal Tversky loss (Abraham & Khan 2019, eq. 4): ``FTL = (1 - TI) ** (1 / gamma)``, gamma = 4/3,
i.e. exponent 0.75. Seed 002 (Duong-Trung et al., eq. 3-4) uses this loss but states
``alpha = 0.7, beta = 0.75``; that contradicts the reference code (beta = 1 - alpha = 0.3), whose values
are the defaults here. Pass ``beta=0.75`` to follow seed 002's text literally.

``reduction="batch"`` computes one TI over every pixel of the batch (the reference code flattens the
whole batch); ``reduction="image"`` computes one TI per image and averages the per-image losses.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_EPS = 1e-7


def _flatten_pair(y_true: Any, y_pred: Any, reduction: str) -> tuple[Any, Any]:
    """Cast to float32 and reshape to (1, P) for batch reduction or (N, P) for image reduction."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if reduction == "batch":
        return ops.reshape(y_true, (1, -1)), ops.reshape(y_pred, (1, -1))
    if reduction == "image":
        n = ops.shape(y_pred)[0]
        return ops.reshape(y_true, (n, -1)), ops.reshape(y_pred, (n, -1))
    raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")


def tversky_index(
    y_true: Any,
    y_pred: Any,
    alpha: float = 0.7,
    beta: float = 0.3,
    smooth: float = 1.0,
    reduction: str = "batch",
) -> Any:
    """Tversky index TI = (TP + s) / (TP + alpha*FN + beta*FP + s) (Abraham & Khan 2019, eq. 3).

    Returns shape (1,) for ``reduction="batch"`` or (N,) for ``reduction="image"``.
    alpha = beta = 0.5 gives the (soft) Dice coefficient.
    """
    g, p = _flatten_pair(y_true, y_pred, reduction)
    tp = ops.sum(g * p, axis=1)
    fn = ops.sum(g * (1.0 - p), axis=1)
    fp = ops.sum((1.0 - g) * p, axis=1)
    return (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)


def _focal(ti: Any, gamma: float, eps: float) -> Any:
    """(1 - TI) ** (1/gamma), with 1 - TI clamped to >= eps so value and gradient stay finite at TI = 1."""
    one_minus = ops.maximum(1.0 - ti, eps)
    if gamma == 1.0:
        return one_minus
    return ops.power(one_minus, 1.0 / gamma)


@keras.saving.register_keras_serializable(package="classseg")
class FocalTverskyLoss(keras.losses.Loss):
    """Focal Tversky loss (1 - TI) ** (1/gamma) (Abraham & Khan 2019, eq. 4; seed 002, eq. 3).

    Defaults are the reference code's: alpha=0.7 (FN), beta=0.3 (FP), gamma=4/3, smooth=1,
    one TI over the whole batch. Seed 002's text says beta=0.75 (see module docstring).
    gamma=1 gives the plain Tversky loss 1 - TI.
    """

    def __init__(
        self,
        alpha: float = 0.7,
        beta: float = 0.3,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1.0,
        reduction: str = "batch",
        eps: float = _EPS,
        name: str = "focal_tversky",
        **kwargs: Any,
    ) -> None:
        # Keras' own `reduction` averages the returned values; ours decides where TI is pooled.
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        if reduction not in ("batch", "image"):
            raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.smooth, self.tversky_reduction, self.eps = float(smooth), reduction, float(eps)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ti = tversky_index(y_true, y_pred, self.alpha, self.beta, self.smooth, self.tversky_reduction)
        return _focal(ti, self.gamma, self.eps)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "smooth": self.smooth,
            "reduction": self.tversky_reduction,
            "eps": self.eps,
        }


@keras.saving.register_keras_serializable(package="classseg")
class TverskyLoss(FocalTverskyLoss):
    """Tversky loss 1 - TI (Salehi et al. 2017), same defaults as :class:`FocalTverskyLoss`."""

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, smooth: float = 1.0, reduction: str = "batch",
                 eps: float = _EPS, name: str = "tversky", **kwargs: Any) -> None:
        kwargs.pop("gamma", None)
        super().__init__(alpha, beta, 1.0, smooth, reduction, eps, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="classseg")
class DiceLoss(FocalTverskyLoss):
    """Soft Dice loss 1 - (2 TP + s) / (2 TP + FN + FP + s) = Tversky with alpha = beta = 0.5."""

    def __init__(self, smooth: float = 1.0, reduction: str = "batch", eps: float = _EPS,
                 name: str = "dice_loss", **kwargs: Any) -> None:
        for key in ("alpha", "beta", "gamma"):
            kwargs.pop(key, None)
        super().__init__(0.5, 0.5, 1.0, smooth, reduction, eps, name=name, **kwargs)


def _bce_dice(y_true: Any, y_pred: Any, bce_weight: float, dice_weight: float, smooth: float,
              reduction: str) -> Any:
    """bce_weight * mean-BCE + dice_weight * (1 - soft Dice); shape (1,) or (N,) like the Tversky losses."""
    g, p = _flatten_pair(y_true, y_pred, reduction)
    p_clipped = ops.clip(p, _EPS, 1.0 - _EPS)
    bce = -ops.mean(g * ops.log(p_clipped) + (1.0 - g) * ops.log(1.0 - p_clipped), axis=1)
    dice = 1.0 - tversky_index(y_true, y_pred, 0.5, 0.5, smooth, reduction)
    return bce_weight * bce + dice_weight * dice


@keras.saving.register_keras_serializable(package="classseg")
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy + soft Dice loss, ``bce_weight * BCE + dice_weight * (1 - Dice)``.

    The common U-Net baseline combination (e.g. Buda et al. 2019 train with Dice; BCE+Dice in many
    Kaggle LGG solutions). BCE is the pixel mean over the batch.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 reduction: str = "batch", name: str = "bce_dice", **kwargs: Any) -> None:
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.bce_weight, self.dice_weight, self.smooth = float(bce_weight), float(dice_weight), float(smooth)
        if reduction not in ("batch", "image"):
            raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")
        self.dice_reduction = reduction

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return _bce_dice(y_true, y_pred, self.bce_weight, self.dice_weight, self.smooth, self.dice_reduction)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "bce_weight": self.bce_weight,
            "dice_weight": self.dice_weight,
            "smooth": self.smooth,
            "reduction": self.dice_reduction,
        }


# Function forms (same defaults), usable directly as ``model.compile(loss=focal_tversky)``.
@keras.saving.register_keras_serializable(package="classseg")
def tversky(y_true: Any, y_pred: Any) -> Any:
    """Tversky loss 1 - TI with alpha=0.7, beta=0.3, smooth=1, one TI over the batch."""
    return 1.0 - tversky_index(y_true, y_pred)[0]


@keras.saving.register_keras_serializable(package="classseg")
def focal_tversky(y_true: Any, y_pred: Any) -> Any:
    """Focal Tversky loss (1 - TI) ** 0.75 (Abraham & Khan 2019 reference code), eps-clamped."""
    return _focal(tversky_index(y_true, y_pred), 4.0 / 3.0, _EPS)[0]


@keras.saving.register_keras_serializable(package="classseg")
def dice_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice loss 1 - (2 TP + 1) / (2 TP + FN + FP + 1) over the batch."""
    return 1.0 - tversky_index(y_true, y_pred, 0.5, 0.5)[0]


@keras.saving.register_keras_serializable(package="classseg")
def bce_dice(y_true: Any, y_pred: Any) -> Any:
    """Pixel-mean binary cross-entropy + soft Dice loss over the batch."""
    return _bce_dice(y_true, y_pred, 1.0, 1.0, 1.0, "batch")[0]


LOSSES = {
    "focal_tversky": FocalTverskyLoss,
    "tversky": TverskyLoss,
    "dice": DiceLoss,
    "bce_dice": BCEDiceLoss,
}


def get_loss(name: str, **kwargs: Any) -> keras.losses.Loss:
    """Loss object by name: ``focal_tversky``, ``tversky``, ``dice`` or ``bce_dice``."""
    try:
        return LOSSES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None

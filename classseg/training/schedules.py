"""Loss-weight schedules for the joint classification + segmentation model.

The joint loss is ``L = w_cls * L_cls + w_seg * L_seg`` (seed 000, eq. 7: lambda_cls = 1.0,
lambda_seg = 1.5). Seed 001 (Li et al. 2023, MMRAN, Sec. 3.4) trains with
``L = (1 - alpha) * L_Dice + alpha * L_FL`` (eq. 13), i.e. alpha weights the *classification* task,
and compares three ways of setting alpha:

* ``fixed``   -- constant weights for the whole run.
* ``freeze``  -- one task at a time for N = epochs // (c + 1) epochs each, c = 2 tasks (eq. 14);
  **segmentation first** (weights (0, 1)), then classification (1, 0), then both with alpha = 0.5
  for the remaining ``epochs - 2N`` epochs (the paper says "the last N epochs"; when ``epochs`` is
  not a multiple of 3 the remainder goes to this joint phase).
* ``dynamic`` -- alpha = epoch_now / epoch_all (eq. 15): segmentation only at the first epoch, the
  classification weight growing linearly. ``epoch_now`` is the 0-based Keras epoch index, so
  alpha = 0 at the first epoch ("at the beginning of training the loss consists of the loss of the
  segmentation network only") and (E - 1) / E at the last one.

The seed's multipliers are combined with the base weights ``(lambda_cls, lambda_seg)`` per task:
``w_cls = lambda_cls * m_cls`` and ``w_seg = lambda_seg * m_seg``, where ``(m_cls, m_seg)`` is
``(1, 1)`` for ``fixed``, ``(0, 1) / (1, 0) / (0.5, 0.5)`` for ``freeze`` and
``(alpha, 1 - alpha)`` for ``dynamic``. With ``base=(1, 1)`` this is exactly seed 001's schedule; with
the default ``base=(1.0, 1.5)`` it keeps seed 000's relative emphasis on segmentation.

A zero loss weight stops the task's gradient (seed 001: "the loss weight of the frozen task is 0"); with
AdamW the frozen branch still moves a little for a few steps on its decaying first moment, and by the
decoupled weight decay (a factor 1 - lr * wd per step, about 1e-8 here).

Hand-computed table for ``epochs = 9``, ``base = (1.0, 1.5)`` (N = 3)::

    epoch          0     1     2     3     4     5     6     7     8
    fixed   cls  1.0   1.0   1.0   1.0   1.0   1.0   1.0   1.0   1.0
            seg  1.5   1.5   1.5   1.5   1.5   1.5   1.5   1.5   1.5
    freeze  cls  0     0     0     1.0   1.0   1.0   0.5   0.5   0.5
            seg  1.5   1.5   1.5   0     0     0     0.75  0.75  0.75
    dynamic cls  0     1/9   2/9   3/9   4/9   5/9   6/9   7/9   8/9
            seg  1.5   4/3   7/6   1.0   5/6   2/3   1/2   1/3   1/6
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

SCHEDULES = ("fixed", "freeze", "dynamic")


def task_multipliers(schedule: str, epoch: int, epochs: int) -> tuple[float, float]:
    """Seed 001's per-task loss multipliers ``(m_cls, m_seg)`` at 0-based ``epoch`` of ``epochs``.

    fixed: (1, 1); freeze (eq. 14, segmentation first): (0, 1) for epochs [0, N), (1, 0) for [N, 2N),
    (0.5, 0.5) after, N = epochs // 3; dynamic (eq. 13, 15): (alpha, 1 - alpha), alpha = epoch / epochs.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
    if schedule == "fixed":
        return 1.0, 1.0
    if schedule == "freeze":
        n = epochs // 3  # eq. 14: N = epoch_all / (c + 1), c = 2 tasks
        if epoch < n:
            return 0.0, 1.0  # segmentation first (seed 001, end of Sec. 3.4)
        if epoch < 2 * n:
            return 1.0, 0.0
        return 0.5, 0.5
    if schedule == "dynamic":
        alpha = epoch / epochs  # eq. 15
        return alpha, 1.0 - alpha
    raise ValueError(f"unknown loss-weight schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def loss_weights(
    schedule: str, epoch: int, epochs: int, base: Sequence[float] = (1.0, 1.5)
) -> tuple[float, float]:
    """Loss weights ``(w_cls, w_seg) = (base_cls * m_cls, base_seg * m_seg)`` for 0-based ``epoch``.

    ``(m_cls, m_seg)`` from :func:`task_multipliers` (seed 001, eq. 13-15); ``base`` defaults to
    seed 000's (lambda_cls, lambda_seg) = (1.0, 1.5) (eq. 7).
    """
    m_cls, m_seg = task_multipliers(schedule, epoch, epochs)
    return float(base[0]) * m_cls, float(base[1]) * m_seg


def __getattr__(name: str) -> Any:
    # The callback needs Keras; building it lazily keeps ``import classseg.training.schedules`` (and the
    # CLI, which reads SCHEDULES) free of TensorFlow, like ``classseg.data`` does for its tf.data pipelines.
    if name == "LossWeightScheduler":
        return _loss_weight_scheduler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _loss_weight_scheduler_class() -> type:
    import keras

    class LossWeightScheduler(keras.callbacks.Callback):
        """Sets the compiled loss weights (two ``keras.Variable``) at the start of every epoch.

        The model must be compiled with ``loss_weights={"class": w_cls_var, "mask": w_seg_var}``: Keras
        multiplies each output's loss by the variable's current value inside the compiled train step,
        so assigning the variable changes the effective loss without recompiling. The weights used are
        also written to the epoch logs as ``w_cls`` / ``w_seg`` (so ``CSVLogger`` / ``History`` record
        them), and, when validation runs, ``val_fixed_loss = base_cls * val_class_loss + base_seg *
        val_mask_loss`` -- a validation loss with constant weights that stays comparable across epochs
        (the scheduled ``val_loss`` is not) and is therefore the one to checkpoint on. Place this callback
        before ``ModelCheckpoint`` in the callback list so the checkpoint sees ``val_fixed_loss``.
        """

        def __init__(
            self,
            schedule: str,
            epochs: int,
            w_cls: Any,
            w_seg: Any,
            base: Sequence[float] = (1.0, 1.5),
            class_key: str = "class",
            mask_key: str = "mask",
        ) -> None:
            super().__init__()
            if schedule not in SCHEDULES:
                raise ValueError(f"unknown loss-weight schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
            self.schedule, self.epochs = schedule, int(epochs)
            self.w_cls, self.w_seg = w_cls, w_seg
            self.base = (float(base[0]), float(base[1]))
            self.class_key, self.mask_key = class_key, mask_key
            self.current: tuple[float, float] = loss_weights(schedule, 0, self.epochs, self.base)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            # Epochs past `epochs` (e.g. fit(initial_epoch=...) beyond the plan) keep the last weights.
            self.current = loss_weights(self.schedule, min(epoch, self.epochs - 1), self.epochs, self.base)
            self.w_cls.assign(self.current[0])
            self.w_seg.assign(self.current[1])

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            logs["w_cls"], logs["w_seg"] = self.current
            cls_key, seg_key = f"val_{self.class_key}_loss", f"val_{self.mask_key}_loss"
            if cls_key in logs and seg_key in logs:
                logs["val_fixed_loss"] = self.base[0] * float(logs[cls_key]) + self.base[1] * float(logs[seg_key])

    return LossWeightScheduler

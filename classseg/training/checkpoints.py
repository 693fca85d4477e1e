"""Callbacks that make long runs safe to interrupt: atomic checkpoints, resumable state, a time budget.

Keras' ``ModelCheckpoint`` and ``BackupAndRestore`` write in place, so a SIGKILL during a save leaves a
truncated file where the last good checkpoint was. Here every file goes to a temporary name in the same
folder and is moved into place with ``os.replace`` (atomic on POSIX), so a reader sees the old file or
the new one, never half of one. Run-level state that Keras does not restore (best score so far, seconds
already spent, planned epochs of a time-budgeted run) lives in ``train_state.json``, written the same way.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras


def atomic_save_model(model: keras.Model, path: str | Path) -> Path:
    """``model.save(path)`` through ``<stem>.tmp.keras`` + ``os.replace``: never a half-written model."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class RunState:
    """A small dict persisted atomically to ``train_state.json`` (best score, elapsed seconds, plan)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.values: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self) -> None:
        _write_json_atomic(self.path, self.values)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model when ``monitor`` improves (mode max/min), atomically; the best value and
    epoch are kept in ``state`` so a resumed run does not overwrite a better model with a worse one."""

    def __init__(self, path: str | Path, state: RunState, monitor: str = "val_dice", mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.path, self.state, self.monitor, self.mode = Path(path), state, monitor, mode

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or math.isnan(float(value)):
            return
        best = self.state.values.get("best")
        better = best is None or (float(value) > best if self.mode == "max" else float(value) < best)
        if better:
            atomic_save_model(self.model, self.path)
            self.state.values.update(best=float(value), best_epoch=epoch + 1, monitor=self.monitor)
        self.state.save()


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` (resume at the next epoch after an interruption) whose
    weights and epoch files are replaced atomically instead of overwritten in place."""

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp_weights = self._weights_path.replace(".weights.h5", ".tmp.weights.h5")
        self.model.save_weights(filepath=tmp_weights, overwrite=True)
        os.replace(tmp_weights, self._weights_path)
        _write_json_atomic(Path(self._training_metadata_path),
                           {"epoch": self._current_epoch, "batch": self._last_batch_seen})


class TimeBudget(keras.callbacks.Callback):
    """Stop training when the next epoch would overrun ``minutes`` (time spent before a resume counts).

    ``state["progress"]`` = elapsed / budget after each epoch drives a time-based learning-rate schedule
    (:func:`lr_at_progress`), so the schedule ends with the budget whatever an epoch costs (the first
    epoch, which includes compilation, is no guide to the others).
    """

    def __init__(self, minutes: float, max_epochs: int, state: RunState) -> None:
        super().__init__()
        self.budget = float(minutes) * 60.0
        self.max_epochs = int(max_epochs)
        self.state = state

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter() - float(self.state.values.get("elapsed_s", 0.0))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        elapsed = now - self._start
        last = now - self._epoch_start
        self.state.values.update(elapsed_s=elapsed, progress=min(1.0, elapsed / self.budget))
        self.state.save()
        if elapsed + last > self.budget or epoch + 1 >= self.max_epochs:
            self.model.stop_training = True


def lr_at_progress(progress: float, base_lr: float, schedule: str, min_ratio: float = 0.01) -> float:
    """Learning rate at ``progress`` in [0, 1] of a run (epochs done / planned, or time spent / budget).

    - ``cosine`` (Loshchilov & Hutter 2017, SGDR without restarts): ``min + (base - min) (1 + cos(pi t)) / 2``.
    - ``onecycle`` (Smith & Topin 2019): linear rise from base/10 to base over the first 30 %, then the
      cosine down to ``min_ratio * base``.
    - ``constant``: ``base_lr``.
    """
    t = min(1.0, max(0.0, float(progress)))
    low = base_lr * min_ratio
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        if t < 0.3:
            return base_lr * (0.1 + 0.9 * t / 0.3)
        return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * (t - 0.3) / 0.7))
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine, onecycle or constant")


def scheduled_lr(epoch: int, base_lr: float, total_epochs: int, schedule: str, warmup_epochs: int = 1,
                 min_ratio: float = 0.01, progress: float | None = None) -> float:
    """Learning rate of ``epoch`` (0-based): linear warm-up over ``warmup_epochs`` for ``cosine``, then
    :func:`lr_at_progress` with progress = ``(epoch - warmup) / (total - warmup - 1)``, or the given
    ``progress`` (time-budgeted runs)."""
    if schedule == "cosine" and epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    if progress is None:
        start = warmup_epochs if schedule == "cosine" else 0
        progress = (epoch - start) / max(1, int(total_epochs) - start - 1)
    return lr_at_progress(progress, base_lr, schedule, min_ratio)

"""Keras callbacks that make long runs safe to interrupt: atomic checkpoints and history, resumable
run state, a wall-clock budget and the learning-rate schedules it drives.

:class:`AtomicModelCheckpoint` is ``keras.callbacks.ModelCheckpoint`` except that every save goes
to a temporary file beside the checkpoint and is renamed into place (:mod:`classseg.utils.atomic`), so a
process killed mid-save keeps the previous checkpoint loadable. :class:`AtomicCSVLogger` keeps the
epoch rows in memory and rewrites the whole CSV atomically after every epoch (never an empty or
half-written ``history.csv``). :class:`AtomicBackupAndRestore` is Keras' resume-at-the-next-epoch
callback with atomic saves; :class:`RunState` (``train_state.json``) keeps what Keras does not restore
(best score so far, seconds spent, budget progress) for :class:`ResumableBestCheckpoint` and
:class:`TimeBudget`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classseg.utils.atomic import atomic_path, atomic_write_text, save_weights


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose saves are atomic (temporary file in the same folder + ``os.replace``)."""

    def _save_model(self, epoch: int, batch: int | None, logs: dict[str, Any] | None) -> None:
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(f"checkpoint path {filepath} is a folder; expected a file name")
        with atomic_path(filepath) as tmp:
            if self.save_weights_only:
                self.model.save_weights(str(tmp), overwrite=True)
            else:
                self.model.save(str(tmp), overwrite=True)
        if self.verbose > 0:
            keras.utils.io_utils.print_msg(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


def _value(v: Any) -> Any:
    if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "numpy"):
        arr = np.asarray(v)
        return arr.item() if arr.ndim == 0 else f"[{', '.join(map(str, arr.ravel()))}]"
    if isinstance(v, Iterable) and not isinstance(v, str):
        return f"[{', '.join(map(str, v))}]"
    return v


class AtomicCSVLogger(keras.callbacks.Callback):
    """Epoch results to a CSV like ``keras.callbacks.CSVLogger``, the whole file rewritten atomically
    each epoch. ``append=True`` keeps the rows of an existing file (a resumed run)."""

    def __init__(self, filename: str | Path, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = Path(filename)
        self.sep = separator
        self.append = append
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.rows, self.keys = [], []
        if self.append and self.filename.is_file():
            with open(self.filename, newline="") as f:
                reader = csv.DictReader(f, delimiter=self.sep)
                self.keys = [k for k in (reader.fieldnames or []) if k != "epoch"]
                self.rows = list(reader)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        for key in sorted(logs):
            if key not in self.keys:
                self.keys.append(key)
        self.rows.append({"epoch": epoch, **{k: _value(v) for k, v in logs.items()}})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", *self.keys], delimiter=self.sep,
                                lineterminator="\n", restval="NA")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.filename, buffer.getvalue())


class RunState:
    """A small dict persisted atomically to ``train_state.json`` (best score, elapsed seconds, plan)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.values: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.values, indent=2))


class ResumableBestCheckpoint(AtomicModelCheckpoint):
    """Atomic ``save_best_only`` checkpoint whose best value and epoch live in a :class:`RunState`, so a
    resumed run does not overwrite a better model with a worse one (Keras' own forgets ``best``)."""

    def __init__(self, path: str | Path, state: RunState, monitor: str = "val_dice", mode: str = "max",
                 weights_only: bool = False) -> None:
        super().__init__(str(path), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=weights_only)
        self.state = state
        if state.values.get("best") is not None:
            self.best = float(state.values["best"])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != before:
            self.state.values.update(best=float(self.best), best_epoch=epoch + 1, monitor=self.monitor)
        self.state.save()


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` (resume at the next epoch after an interruption) whose
    weights and epoch files are replaced atomically instead of overwritten in place."""

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        save_weights(self.model, self._weights_path)
        atomic_write_text(self._training_metadata_path,
                          json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class ElapsedTime(keras.callbacks.Callback):
    """Training seconds so far in ``state["elapsed_s"]`` after every epoch, those before a resume included
    (what :class:`TimeBudget` records for a budgeted run; this one for a run without a budget)."""

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state
        self._start = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter() - float(self.state.values.get("elapsed_s", 0.0))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.state.values["elapsed_s"] = time.perf_counter() - self._start
        self.state.save()


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


class EpochSnapshots(keras.callbacks.Callback):
    """Save the model after every ``every``-th epoch to ``folder/epoch_NNN.keras`` (atomically) and list
    it in ``folder/snapshots.csv`` with the training minutes spent so far: wall-clock (``train_minutes``)
    and CPU time of the process, all threads (``cpu_minutes``, ``time.process_time``: what the run cost
    whatever else the machine was doing). What ``benchmarks/quality_per_minute.py`` scores on val."""

    def __init__(self, folder: str | Path, state: RunState, every: int = 1) -> None:
        super().__init__()
        self.folder, self.state, self.every = Path(folder), state, max(1, int(every))
        self._start = 0.0
        self._cpu_start = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter() - float(self.state.values.get("elapsed_s", 0.0))
        self._cpu_start = time.process_time() - float(self.state.values.get("cpu_s", 0.0))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        cpu = time.process_time() - self._cpu_start
        self.state.values["cpu_s"] = cpu
        if (epoch + 1) % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"epoch_{epoch + 1:03d}.keras"
        with atomic_path(path) as tmp:
            self.model.save(str(tmp), overwrite=True)
        minutes = float(self.state.values.get("elapsed_s", time.perf_counter() - self._start)) / 60.0
        index = self.folder / "snapshots.csv"
        old = index.read_text() if index.is_file() else "epoch,train_minutes,cpu_minutes,path\n"
        atomic_write_text(index, old + f"{epoch + 1},{minutes:.3f},{cpu / 60.0:.3f},{path.name}\n")


def open_run_state(out: Path) -> RunState:
    """The run folder's :class:`RunState`. A fresh run (no ``backup/`` of an interrupted one) first
    removes ``train_state.json`` and ``history.csv`` of an earlier run, so nothing of it leaks in."""
    if not (out / "backup").is_dir():
        for stale in ("train_state.json", "history.csv"):
            (out / stale).unlink(missing_ok=True)
    return RunState(out / "train_state.json")


def resumable_callbacks(out: Path, state: RunState, model_path: Path, monitor: str, lr: float, schedule: str,
                        epochs: int, warmup_epochs: int = 1, minutes: float | None = None,
                        extra: Iterable[keras.callbacks.Callback] = (), snapshots: bool = False
                        ) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable run, in order: the best checkpoint on ``monitor`` (max); an
    epoch-wise learning-rate schedule (:func:`scheduled_lr`, by time spent when ``minutes`` is set;
    none for ``schedule="plateau"``, whose ``ReduceLROnPlateau`` comes in ``extra``); ``extra``; the
    :class:`TimeBudget` (:class:`ElapsedTime` without ``minutes``); the atomic ``history.csv``;
    :class:`AtomicBackupAndRestore` in ``out/backup``."""
    callbacks: list[keras.callbacks.Callback] = [ResumableBestCheckpoint(model_path, state, monitor=monitor,
                                                                         mode="max")]
    if schedule != "plateau":
        def lr_at(epoch: int, _lr: float = 0.0) -> float:
            progress = state.values.get("progress") if minutes is not None else None
            return scheduled_lr(epoch, lr, epochs, schedule, warmup_epochs, progress=progress)

        callbacks.append(keras.callbacks.LearningRateScheduler(lr_at))
    callbacks += list(extra)
    # seconds spent so far in train_state.json, those before a resume included (train_minutes of the run record)
    callbacks.append(TimeBudget(minutes, epochs, state) if minutes is not None else ElapsedTime(state))
    if snapshots:  # after TimeBudget: its elapsed time is the snapshot's
        callbacks.append(EpochSnapshots(out / "snapshots", state))
    callbacks += [AtomicCSVLogger(out / "history.csv", append=True), AtomicBackupAndRestore(str(out / "backup"))]
    return callbacks


def check_run_identity(out: Path, command: str, data_dir: Any, splits_path: Any, config: Any,
                       resume_evidence: Iterable[str] = ("backup",)) -> dict[str, Any]:
    """Refuse to resume a run folder with other settings than it was started with; record them on a fresh
    run (:func:`classseg.training.identity.check_run_identity`, the one place every trainer calls)."""
    from classseg.training.identity import check_run_identity as check

    return check(out, command, data_dir, splits_path, config, resume_evidence)

"""Keras callbacks whose files survive a crash: checkpoints and history written atomically.

:class:`AtomicModelCheckpoint` is ``keras.callbacks.ModelCheckpoint`` except that every save goes
to a temporary file beside the checkpoint and is renamed into place (:mod:`classseg.atomic`), so a
process killed mid-save keeps the previous checkpoint loadable. :class:`AtomicCSVLogger` keeps the
epoch rows in memory and rewrites the whole CSV atomically after every epoch (never an empty or
half-written ``history.csv``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classseg.atomic import atomic_path, atomic_write_text


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

"""Atomic writes (classseg.utils.atomic): a crash or SIGKILL mid-write keeps the previous file intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from classseg.data import load_splits, save_splits
from classseg.utils.atomic import atomic_open, atomic_path, atomic_to_csv, atomic_write_bytes, atomic_write_text
from classseg.utils.jsonio import read_json, write_json

REPO = Path(__file__).resolve().parents[2]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # umask mode, not mkstemp's 0600


def test_exception_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "history.csv"
    target.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target, "w") as f:
        f.write("epoch,loss\n0,")
        raise RuntimeError("simulated crash half-way through the write")
    assert target.read_text() == "epoch,loss\n0,1.0\n"
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "m.keras"
    target.write_bytes(b"good")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"ha")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"good"


def test_temporary_name_keeps_the_suffixes(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "best.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"x")


def test_folder_given_as_file_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


def test_json_csv_and_splits_writers_are_atomic(tmp_path: Path, monkeypatch) -> None:
    write_json(tmp_path / "m.json", {"a": 1})
    splits = pd.DataFrame({"patient_id": ["p1", "p2"], "split": ["train", "test"]})
    save_splits(splits, tmp_path / "splits.csv")

    def boom(self, *args, **kwargs):
        Path(args[0]).write_text("patient_id,spl")  # half a file, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        save_splits(splits.iloc[:1], tmp_path / "splits.csv")
    with pytest.raises(OSError, match="disk full"):
        atomic_to_csv(splits, tmp_path / "splits.csv")
    monkeypatch.undo()
    assert len(load_splits(tmp_path / "splits.csv")) == 2
    with pytest.raises(TypeError):
        write_json(tmp_path / "m.json", {"a": object()})
    assert read_json(tmp_path / "m.json") == {"a": 1}
    assert _leftovers(tmp_path) == []


def _run_killed(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_sigkill_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"epoch": 1})
    proc = _run_killed(f"""
        import os, signal
        from classseg.utils.atomic import atomic_open
        with atomic_open({str(target)!r}, "w") as f:
            f.write('{{"epoch": 2, "trunc')
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"epoch": 1}


def test_sigkill_during_checkpoint_save_keeps_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    """AtomicModelCheckpoint: epoch 1 saved; the process is killed while epoch 2's save is half written."""
    ckpt = tmp_path / "segmenter.keras"
    proc = _run_killed(f"""
        import os, signal
        import numpy as np, keras
        from classseg.training.callbacks import AtomicCSVLogger, AtomicModelCheckpoint

        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile("sgd", "mse")
        x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")

        class KillDuringSecondSave(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    real_save = self.model.save
                    def half_save(path, *a, **k):
                        real_save(path, *a, **k)
                        with open(path, "r+b") as f:
                            f.truncate(100)  # a truncated zip ...
                        os.kill(os.getpid(), signal.SIGKILL)  # ... and the machine dies
                    self.model.save = half_save

        model.fit(x, y, epochs=3, verbose=0, callbacks=[
            AtomicModelCheckpoint({str(ckpt)!r}),
            AtomicCSVLogger({str(tmp_path / "history.csv")!r}),
            KillDuringSecondSave()])
        """, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    import keras

    model = keras.saving.load_model(ckpt)  # the epoch-1 checkpoint, whole
    assert model.count_params() == 5
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [0]  # epoch 0 logged; the kill came before epoch 1 was logged
    assert "loss" in history.columns


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path: Path) -> None:
    from classseg.utils.atomic import atomic_dir

    target = tmp_path / "saved"
    with atomic_dir(target) as tmp:
        (tmp / "a.pb").parent.mkdir()
        (tmp / "a.pb").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "a.pb").write_text("half")
        raise RuntimeError("crash")
    assert (target / "a.pb").read_text() == "v1"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "b.pb").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["b.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]

"""Issue 20: a training folder records what it was started with; resuming it with any other setting is
refused in one line naming the setting, before anything in the folder changes (train-segmenter, train-gate,
train-joint: one shared check, classseg.training.identity)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from conftest import write_patient

from classseg.cli import main as cli_main
from classseg.training import callbacks
from classseg.training.gate import GateConfig
from classseg.training.identity import IDENTITY_FILE, RunIdentityError, check_run_identity
from classseg.training.segmenter import SegmenterConfig


def _data(root: Path, seed: int = 0) -> Path:
    for k in range(4):
        write_patient(root, f"TCGA_AA_{k:04d}_20000101", n_slices=3, seed=seed + k)
    return root


def test_fresh_run_records_and_same_settings_resume(tmp_path: Path) -> None:
    out = tmp_path / "R"
    config = SegmenterConfig(seed=3, img_size=64)
    recorded = check_run_identity(out, "train-segmenter", tmp_path / "A", None, config)
    saved = json.loads((out / IDENTITY_FILE).read_text())
    assert saved == recorded and saved["seed"] == 3 and saved["img_size"] == 64 and saved["recipe"] == "fast"
    assert saved["data_dir"] == str((tmp_path / "A").resolve()) and saved["split_sha256"] is None
    assert "workers" not in saved  # threads do not change what a run learns
    (out / "backup").mkdir()  # what Keras' BackupAndRestore leaves after an interruption
    assert check_run_identity(out, "train-segmenter", tmp_path / "A", None, SegmenterConfig(seed=3, img_size=64,
                                                                                         workers=8)) == saved


def test_resume_with_other_settings_is_refused_naming_each(tmp_path: Path) -> None:
    out = tmp_path / "R"
    split = tmp_path / "s.csv"
    split.write_text("patient_id,split\nA,train\n")
    check_run_identity(out, "train-gate", tmp_path / "A", split, GateConfig(seed=0))
    (out / "backup").mkdir()
    with pytest.raises(RunIdentityError) as info:
        check_run_identity(out, "train-gate", tmp_path / "B", split, GateConfig(seed=5, img_size=96))
    message = str(info.value)
    assert "\n" not in message and "started with other settings" in message
    assert f"data_dir: '{(tmp_path / 'A').resolve()}' (started with) vs '{(tmp_path / 'B').resolve()}'" in message
    assert "seed: 0 (started with) vs 5 (this run)" in message and "img_size: 128 (started with) vs 96" in message
    assert message.index("data_dir") < message.index("seed") < message.index("img_size")
    split.write_text("patient_id,split\nA,test\n")  # the same file name, other patients
    with pytest.raises(RunIdentityError, match="split_sha256"):
        check_run_identity(out, "train-gate", tmp_path / "A", split, GateConfig(seed=0))
    with pytest.raises(RunIdentityError, match="command: 'train-gate' \\(started with\\) vs 'train-segmenter'"):
        check_run_identity(out, "train-segmenter", tmp_path / "A", split, GateConfig(seed=0))
    (out / IDENTITY_FILE).unlink()  # an interrupted run from before identities were recorded
    with pytest.raises(RunIdentityError, match="recorded no settings, so what it was started with is unknown"):
        check_run_identity(out, "train-gate", tmp_path / "A", split, GateConfig(seed=0))


class Interrupted(RuntimeError):
    pass


def test_train_segmenter_resume_on_other_data_and_seed_is_refused(tmp_path: Path, monkeypatch) -> None:
    """The issue's case: `train-segmenter A --out R`, interrupted, then `train-segmenter B --seed 5 --out R`
    exited 0 having mixed both; now one line naming both settings, and R is left as it was."""
    a, b, out = _data(tmp_path / "A"), _data(tmp_path / "B", seed=9), tmp_path / "R"

    def interrupted(folder):
        raise Interrupted  # stands for SIGTERM after the first epochs

    monkeypatch.setattr(callbacks, "open_run_state", interrupted)
    with pytest.raises(Interrupted):
        cli_main(["train-segmenter", str(a), "--out", str(out), "--epochs", "4", "--img-size", "32", "--quiet"])
    monkeypatch.undo()
    (out / "backup").mkdir()
    (out / "splits.csv").write_text("A's split\n")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(SystemExit) as info:
        cli_main(["train-segmenter", str(b), "--seed", "5", "--out", str(out), "--epochs", "4", "--img-size", "32",
                  "--quiet"])
    message = str(info.value.code)
    assert message.startswith("classseg train-segmenter: ") and "\n" not in message
    assert "data_dir:" in message and "seed: 0 (started with) vs 5 (this run)" in message
    assert sorted(p.name for p in out.iterdir()) == before and (out / "splits.csv").read_text() == "A's split\n"
    with pytest.raises(SystemExit, match="img_size: 32 \\(started with\\) vs 64 \\(this run\\)"):
        cli_main(["train-segmenter", str(a), "--out", str(out), "--epochs", "4", "--img-size", "64", "--quiet"])


def test_train_gate_and_train_joint_check_too(tmp_path: Path) -> None:
    data, out = _data(tmp_path / "A"), tmp_path / "G"
    check_run_identity(out, "train-gate", data, None, GateConfig(img_size=32, epochs=2))
    (out / "backup").mkdir()
    with pytest.raises(SystemExit, match="classseg train-gate: .*epochs: 2 \\(started with\\) vs 3 \\(this run\\)"):
        cli_main(["train-gate", str(data), "--out", str(out), "--img-size", "32", "--epochs", "3", "--quiet"])
    from classseg.training.joint import CHECKPOINT_FILE, JointConfig

    joint = tmp_path / "J"
    check_run_identity(joint, "train-joint", data, None,
                       JointConfig(architecture="resunet", weights=None, img_size=32, epochs=1, normalization="raw"),
                       (CHECKPOINT_FILE,))
    (joint / CHECKPOINT_FILE).write_bytes(b"weights of the interrupted run")
    with pytest.raises(SystemExit, match="train-joint: .*seed: 0 \\(started with\\) vs 2 \\(this run\\)") as info:
        cli_main(["train-joint", str(data), "--out", str(joint), "--architecture", "resunet", "--weights", "none",
                  "--img-size", "32", "--epochs", "1", "--seed", "2", "--quiet"])
    assert "\n" not in str(info.value.code)

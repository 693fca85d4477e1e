"""Every training command writes the same run record (``run.json``, :class:`classseg.training.run.RunRecord`).

The four runs are the tiny shared ones of conftest (trained once per test session): train-classifiers
(interrupted and resumed), train-segmenter (CLI), train-gate (against that segmenter) and train-joint
(interrupted and resumed)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from classseg.evaluation.scores import SCORE_FIELDS
from classseg.training.run import COMMANDS, RunRecord, read_run_record
from classseg.utils.atomic import sha256_file
from classseg.utils.environment import machine


@pytest.fixture(scope="module")
def folders(classifier_run, segmenter_cli_run, gate_run, joint_run) -> dict[str, Path]:
    """Run folder of each training command (train-classifiers: one per backbone)."""
    return {"train-classifiers": classifier_run["out"] / "resnet50", "train-segmenter": segmenter_cli_run[1],
            "train-gate": gate_run, "train-joint": joint_run["out"]}


def test_every_training_command_writes_the_same_run_record(folders, segmenter_cli_run) -> None:
    records = {command: read_run_record(folder) for command, folder in folders.items()}
    assert set(records) == set(COMMANDS)
    names = [f.name for f in fields(RunRecord)]
    scores_keys = [k for k in SCORE_FIELDS if k != "per_patient"]
    this_machine = machine()
    for command, record in records.items():
        folder = folders[command]
        raw = json.loads((folder / "run.json").read_text())
        assert list(raw) == names, command  # the same fields, in the same order, for every trainer
        assert record.command == command
        assert record.kind in ("classifier", "segmenter", "gate", "joint") and record.model
        assert isinstance(record.split_file, str) and record.split_file
        own_split = folder / "splits.csv" if (folder / "splits.csv").is_file() else folder.parent / "splits.csv"
        assert record.split_sha256 == sha256_file(own_split), command  # the patients the run used
        assert isinstance(record.seed, int) and record.img_size == 32 and isinstance(record.weights, str)
        assert 1 <= record.epochs_run <= record.epochs, command
        assert record.best_epoch is None or 1 <= record.best_epoch <= record.epochs_run
        assert isinstance(record.train_minutes, float) and record.train_minutes >= 0.0
        assert record.machine == this_machine and isinstance(record.normalization, str)
        for name in ("val", "test"):
            scores = getattr(record, name)
            assert list(scores) == scores_keys, (command, name)
            assert scores["n_slices"] > 0 and 0.0 <= scores["accuracy"] <= 1.0, (command, name)
        # the manifest's split / seed / weights are the record's (one set of key names)
        manifest = json.loads((folder / "manifest.json").read_text())
        for key in ("command", "split_file", "split_sha256", "seed", "weights", "img_size", "epochs", "machine"):
            assert manifest[key] == asdict(record)[key], (command, key)

    seg = records["train-segmenter"]
    assert seg.split_file == str(segmenter_cli_run[2]) and seg.seed == 1 and seg.weights == "none (from scratch)"
    seg_metrics = json.loads((folders["train-segmenter"] / "metrics.json").read_text())
    assert seg.test["dice_per_patient"] == seg_metrics["dice_per_patient"]  # the same figures as metrics.json
    assert records["train-gate"].split_file == seg.split_file  # the gate trained on the segmenter's split
    gate_metrics = json.loads((folders["train-gate"] / "metrics.json").read_text())
    assert records["train-gate"].test["accuracy"] == gate_metrics["test"]["final_call"]["accuracy"]
    assert records["train-joint"].epochs_run == 2 and records["train-joint"].extra["tasks"] == ["class", "mask"]
    clf = records["train-classifiers"]
    assert clf.split_file.endswith("splits.csv (computed, seed 0)") and clf.extra["repeats"] == 1


def test_compare_reads_the_run_records(folders, classifier_run) -> None:
    """``classseg compare`` labels rows from run.json (kind, model, split) and takes its test figures."""
    from classseg.reporting.tables import compare_runs

    dirs = [classifier_run["out"], folders["train-segmenter"], folders["train-gate"], folders["train-joint"]]
    table = compare_runs(dirs)
    assert list(table["kind"]) == ["classifier", "classifier", "segmenter", "gate", "joint", "joint"]
    gate = read_run_record(folders["train-gate"])
    row = table[table["kind"] == "gate"].iloc[0]
    assert row["model"] == "gate_cnn" and row["accuracy"] == pytest.approx(gate.test["accuracy"])
    assert row["split_file"] == gate.split_file
    clf = read_run_record(classifier_run["out"] / "resnet50")
    assert table.iloc[0]["split_file"] == clf.split_file and table.iloc[0]["seed"] == "0"


def test_read_run_record_of_a_folder_without_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run record"):
        read_run_record(tmp_path)
    (tmp_path / "run.json").write_text('{"command": "train-gate"}')
    with pytest.raises(ValueError, match="not a run record, missing"):
        read_run_record(tmp_path)


def test_joint_interrupted_run_resumes_at_the_next_epoch(joint_run) -> None:
    """Ctrl-C at the end of epoch 2 of 2: the resume refuses another seed, trains epoch 2 only, and the record
    counts both epochs."""
    assert joint_run["interrupted"] == {"backup": True, "epochs": 1, "run_json": False}
    assert "seed: 0 (started with) vs 1 (this run)" in joint_run["refused"]
    assert joint_run["resumed_epochs"] == [1]
    out = joint_run["out"]
    assert not (out / "backup").exists() and not (out / "best.weights.h5").exists()
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == joint_run["metrics"]["accuracy"]
    assert read_run_record(out).epochs_run == 2

"""A split file naming patients the data lacks never shrinks a split silently (--allow-missing to go on)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from classseg.cli import main
from classseg.data import check_listed_patients, discover, resolve_splits
from classseg.data.splits import missing_patients_allowed

PATIENTS = ["TCGA_AA_0001_20000101", "TCGA_AA_0002_20000101", "TCGA_BB_0003_20000101", "TCGA_BB_0004_20000101"]


def _split_file(path: Path, extra: dict[str, str]) -> Path:
    table = {**dict(zip(PATIENTS, ["train", "train", "val", "test"])), **extra}
    pd.DataFrame({"patient_id": list(table), "split": list(table.values())}).to_csv(path, index=False)
    return path


def test_missing_listed_patients_are_counted_per_split_and_refused(tiny_tree: Path, tmp_path: Path, caplog) -> None:
    """Was: two test patients absent from the data folder shrank the test set from 3 to 1, without a word."""
    splits = _split_file(tmp_path / "s.csv", {"GONE_1": "test", "GONE_2": "test", "GONE_3": "train"})
    df = discover(tiny_tree)
    with pytest.raises(ValueError) as info:
        resolve_splits(df, splits)
    message = str(info.value)
    assert message.startswith(f"3 of 7 patient(s) listed in {splits} are not in the data (train 1 of 3, val 0 of 1, "
                              "test 2 of 3 missing; e.g. GONE_1, GONE_2, GONE_3)")
    assert "--allow-missing" in message
    with caplog.at_level(logging.WARNING, logger="classseg.data"), missing_patients_allowed():
        frame = resolve_splits(df, splits)
    assert frame.attrs["missing_listed_patients"]["missing"] == 3 and "going on without them" in caplog.text
    assert frame.groupby("split")["patient_id"].nunique().to_dict() == {"test": 1, "train": 2, "val": 1}
    assert check_listed_patients(df, pd.read_csv(_split_file(tmp_path / "ok.csv", {})))["missing"] == 0
    emptied = _split_file(tmp_path / "e.csv", {"GONE_1": "val", PATIENTS[2]: "train"})
    with pytest.raises(ValueError, match="the val split\\(s\\) would be empty"):
        check_listed_patients(df, pd.read_csv(emptied), allow_missing=True)  # never allowed


def test_every_command_with_splits_refuses_or_says_so(tiny_tree: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import classseg.training.segmenter as segmenter

    splits = _split_file(tmp_path / "s.csv", {"GONE_1": "test"})
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:  # refused before any training
        main(["train-segmenter", str(tiny_tree), "--splits", str(splits), "--out", str(out), "--epochs", "1",
              "--img-size", "32", "--quiet"])
    message = str(info.value.code)
    assert "\n" not in message and "1 of 5 patient(s) listed in" in message and "test 1 of 2 missing" in message

    def reached(config, data_dir, splits_path, out_dir, **kwargs):  # the trainers' own split step
        frame = resolve_splits(discover(data_dir), splits_path)
        raise ValueError(f"reached training with {frame['patient_id'].nunique()} patients")

    monkeypatch.setattr(segmenter, "train_segmenter", reached)
    with pytest.raises(SystemExit, match="reached training with 4 patients"):
        main(["train-segmenter", str(tiny_tree), "--splits", str(splits), "--out", str(out), "--allow-missing",
              "--quiet"])
    with pytest.raises(SystemExit, match="1 of 5 patient\\(s\\) listed in .* are not in the data"):
        main(["run-all", str(tiny_tree), "--splits", str(splits), "--out", str(tmp_path / "ra"), "--profile",
              "paper", "--weights", "none"])
    assert not (tmp_path / "ra" / "split").exists()
    with pytest.raises(SystemExit, match="1 of 5 patient\\(s\\) of train, val, test listed in .* have no folder"):
        main(["data", "link", str(tiny_tree), "--splits", str(splits), "--out", str(tmp_path / "linked")])
    assert not (tmp_path / "linked").exists()
    assert main(["data", "link", str(tiny_tree), "--splits", str(splits), "--out", str(tmp_path / "linked"),
                 "--allow-missing"]) == 0
    assert "1 listed patient(s) have no folder: GONE_1" in capsys.readouterr().out

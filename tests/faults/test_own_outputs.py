"""Inputs are never outputs: the pipeline's own output folders and PNGs left in a test folder are not read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import make_data, make_models, pipeline_argv, snapshot

from classseg.data.io import is_pipeline_png, read_mask
from classseg.pipeline import main
from classseg.utils.guards import OUTPUT_MARKER


def test_an_earlier_output_inside_the_test_folder_is_not_read_back(tmp_path: Path, capsys) -> None:
    """Was: an output folder left in --test-dir was read as slices (108 processed for 36 real)."""
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    first = tmp_path / "first"
    assert main(pipeline_argv(data, models, first)) == 0
    assert (first / OUTPUT_MARKER).is_file() and not (first / ".classseg-unfinished.json").exists()
    mask = first / "masks" / "P1" / "P1_1.png"
    assert is_pipeline_png(mask) and read_mask(mask).sum() == 16 * 16  # the tag changes no pixel
    shutil.copytree(first, data / "old_run")  # marked output
    legacy = data / "P2" / "legacy_out"  # an output of an older version (no marker), inside a patient
    shutil.copytree(first, legacy)
    (legacy / OUTPUT_MARKER).unlink()
    shutil.copy(mask, data / "P1" / "P1_9.png")  # a mask the pipeline wrote, copied among the slices
    before = snapshot(data)
    capsys.readouterr()
    assert main(pipeline_argv(data, models, tmp_path / "second")) == 0
    captured = capsys.readouterr()
    assert "4/4 slices processed" in captured.out
    assert "3 output folder(s) or file(s) that classseg wrote" in captured.err
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["data"]["images"] == 4 and summary["data"]["outputs_not_read"]["count"] == 3
    assert sorted(summary["data"]["outputs_not_read"]["examples"]) == ["P1/P1_9.png", "P2/legacy_out/", "old_run/"]
    skipped = (tmp_path / "second" / "skipped.csv").read_text()
    assert "old_run/,written by classseg: an output folder" in skipped
    assert snapshot(data) == before  # no input touched


def test_out_inside_the_test_folder_is_refused_unless_asked_and_never_read(tmp_path: Path, capsys) -> None:
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    inside = data / "P1" / "out"
    with pytest.raises(SystemExit, match="is inside .*pass --out-inside-test-dir") as info:
        main(pipeline_argv(data, models, inside))
    assert "\n" not in str(info.value.code) and not inside.exists()
    with pytest.raises(SystemExit, match="test folder itself"):
        main(pipeline_argv(data, models, data, "--out-inside-test-dir"))
    assert main(pipeline_argv(data, models, inside, "--out-inside-test-dir")) == 0
    assert "4/4 slices processed" in capsys.readouterr().out
    assert main(pipeline_argv(data, models, inside, "--out-inside-test-dir", "--overwrite")) == 0
    rows = (inside / "predictions.csv").read_text().splitlines()
    assert len(rows) == 5 and not any("out/" in row for row in rows)  # its own masks were not inputs
    with pytest.raises(SystemExit, match="is itself an output folder"):
        main(pipeline_argv(inside, models, tmp_path / "third"))

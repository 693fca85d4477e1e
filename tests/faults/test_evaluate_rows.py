"""``classseg evaluate`` never counts a row twice, nor scores rows and truth folders that do not match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import make_data, make_models, pipeline_argv

from classseg.cli import main as cli_main
from classseg.pipeline import main as pipeline_main


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, pipeline output) for two patients of two slices."""
    root = tmp_path_factory.mktemp("rows")
    data = make_data(root / "data")
    out = root / "out"
    assert pipeline_main(pipeline_argv(data, make_models(root / "models"), out)) == 0
    return data, out


def _evaluate(capsys, *argv: str) -> tuple[dict, str]:
    capsys.readouterr()
    assert cli_main(["evaluate", *argv, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out.splitlines()[-1]), captured.err


def _one_line(*argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        cli_main(["evaluate", *argv])
    message = str(info.value.code)
    assert message.startswith("classseg evaluate: ") and "\n" not in message
    return message


def _copy(out: Path, dest: Path, lines: list[str]) -> Path:
    shutil.copytree(out, dest)
    (dest / "predictions.csv").write_text("".join(lines))
    return dest


def test_duplicated_rows_are_scored_once_and_disagreeing_rows_refused(scored, tmp_path: Path, capsys) -> None:
    """Was: predictions.csv of two runs concatenated counted every slice twice."""
    data, out = scored
    base, _ = _evaluate(capsys, str(out), "--truth", str(data))
    assert base["n_slices"] == 4 and base["tp"] == 2 and base["tn"] == 2
    lines = (out / "predictions.csv").read_text().splitlines(keepends=True)
    doubled = _copy(out, tmp_path / "doubled", lines + lines)  # `cat a.csv b.csv`: the header repeated too
    got, err = _evaluate(capsys, str(doubled), "--truth", str(data))
    assert got["n_slices"] == 4 and got["tp"] == 2 and got["dice_per_patient"] == base["dice_per_patient"]
    assert "1 repeated header line(s) dropped (line(s) 6;" in err
    assert "4 duplicated row(s) dropped, each scored once (line 7 repeats line 2 (P1/P1_1.png);" in err
    assert len(got["warnings"]) == 2
    changed = lines[1].replace("tumor", "no_tumor")
    assert changed != lines[1]
    message = _one_line(str(_copy(out, tmp_path / "disagree", [*lines, changed])), "--truth", str(data))
    assert "1 image(s) have several rows that disagree (lines 2 and 6 (P1/P1_1.png))" in message


def test_rows_and_truth_folders_that_do_not_match_are_refused_with_counts(scored, tmp_path: Path, capsys) -> None:
    data, out = scored
    other = make_data(tmp_path / "other", patients=("P1", "P3"))  # P2 is not there, P3 has no rows
    message = _one_line(str(out), "--truth", str(other))
    assert "2 of 4 row(s) of predictions.csv name images that are not in" in message and "P2/P2_1.png" in message
    assert "2 slice(s) with ground truth in" in message and "of 1 patient(s) (P3), have no row" in message
    got, err = _evaluate(capsys, str(out), "--truth", str(other), "--allow-partial")
    assert got["n_slices"] == 2 and got["rows_for_absent_images"] == 2 and "warning: partial: 2 of 4" in err
    lines = (out / "predictions.csv").read_text().splitlines(keepends=True)
    fewer = _copy(out, tmp_path / "fewer", lines[:3])  # rows of P1 only: a subset of the truth folder
    assert "2 slice(s) with ground truth" in _one_line(str(fewer), "--truth", str(data))
    renamed = _copy(out, tmp_path / "renamed", [lines[0], *(x.replace(",P2,", ",P9,") for x in lines[1:])])
    message = _one_line(str(renamed), "--truth", str(data))
    assert "2 row(s) of predictions.csv name another patient than the truth folder" in message
    assert "P2/P2_1.png (line 4): 'P9' in predictions.csv, 'P2' in" in message


def test_an_unfinished_output_is_never_scored(scored, tmp_path: Path) -> None:
    data, out = scored
    half = shutil.copytree(out, tmp_path / "half")
    (half / ".classseg-unfinished.json").write_text("{}")
    assert "is the unfinished output of an interrupted run" in _one_line(str(half), "--truth", str(data))

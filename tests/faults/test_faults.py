"""Fault injection: a killed run, a full or read-only disk, corrupt inputs, models and cards, odd file names and
symbolic-link loops. Each ends in a clear message, nothing half-written is trusted later, no input is touched."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from faultkit import make_data, make_models, pipeline_argv, snapshot

from classseg.cli import main as cli_main
from classseg.pipeline import main as pipeline_main
from classseg.utils.guards import UNFINISHED_MARKER

REPO = Path(__file__).resolve().parents[2]


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def _evaluate(out: Path, data: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--json"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_sigkill_mid_run_then_the_same_command_replaces_the_unfinished_output(tmp_path: Path, capsys) -> None:
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    out = tmp_path / "out"
    argv = pipeline_argv(data, models, out)
    before = snapshot(data)
    # the run stalls after its first patient (as a long run would), and is killed there
    script = ("import sys, time\nimport classseg.pipeline.folder as f\nreal = f._process_patient\ncalls = []\n"
              "def slow(*a, **k):\n    calls.append(1)\n    if len(calls) == 2:\n        time.sleep(600)\n"
              "    return real(*a, **k)\nf._process_patient = slow\nfrom classseg.pipeline import main\n"
              f"sys.exit(main({argv!r}))\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "masks" / "P1" / "P1_2.png").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / UNFINISHED_MARKER).is_file() and not (out / "predictions.csv").exists()
    with pytest.raises(SystemExit, match="unfinished output of an interrupted run"):  # never scored
        cli_main(["evaluate", str(out), "--truth", str(data)])
    capsys.readouterr()
    assert pipeline_main(argv) == 0  # the same command again
    assert "held the unfinished output of an interrupted run; replacing it" in capsys.readouterr().err
    assert len(_rows(out)) == 4 and not (out / UNFINISHED_MARKER).exists()
    assert _evaluate(out, data, capsys)["tp"] == 2
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert snapshot(data) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_mid_run_is_one_line_and_nothing_is_trusted(tmp_path: Path, monkeypatch, capsys,
                                                                             code: int) -> None:
    import classseg.pipeline.folder as folder

    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    out = tmp_path / "out"
    real, calls = folder.write_png, []

    def failing(path, image):  # the disk fills up (or is remounted read-only) at the third PNG
        calls.append(path)
        if len(calls) >= 3:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, image)

    monkeypatch.setattr(folder, "write_png", failing)
    assert pipeline_main(pipeline_argv(data, models, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    what = "read-only file system" if code == errno.EROFS else os.strerror(code)
    assert err.startswith("error: ") and err.endswith(f".png: {what}")  # the PNG that could not be written
    assert Path(err[len("error: "):-len(f": {what}")]) in calls[2:]
    assert (out / UNFINISHED_MARKER).is_file() and not (out / "predictions.csv").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name] and not (out / ".classseg-lock").exists()
    monkeypatch.undo()
    assert pipeline_main(pipeline_argv(data, models, out)) == 0 and len(_rows(out)) == 4


def test_read_only_outputs_are_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr("os.access", lambda p, m, *a, **k: False if "ro" in Path(p).parts else real_access(p, m))
    with pytest.raises(SystemExit, match="cannot write to .*ro/out: permission denied"):
        pipeline_main(pipeline_argv(data, models, tmp_path / "ro" / "out"))
    with pytest.raises(SystemExit, match="classseg evaluate: cannot write to .*ro/ev: permission denied"):
        cli_main(["evaluate", str(tmp_path), "--truth", str(data), "--out", str(tmp_path / "ro" / "ev")])
    assert list((tmp_path / "ro").iterdir()) == []


def test_corrupt_truncated_and_empty_images_are_rows_with_their_reason(tmp_path: Path, capsys) -> None:
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    whole = (data / "P1" / "P1_2.png").read_bytes()
    (data / "P1" / "P1_3.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (data / "P1" / "P1_4.tif").write_bytes(b"II*\x00 not really a tiff")  # corrupt
    (data / "P2" / "P2_3.png").write_bytes(b"")  # empty
    before = snapshot(data)
    assert pipeline_main(pipeline_argv(data, models, tmp_path / "out")) == 0
    assert "4/7 slices processed, 3 unreadable" in capsys.readouterr().out
    rows = _rows(tmp_path / "out")
    for name, problem in (("P1/P1_3.png", "corrupt or unreadable"), ("P1/P1_4.tif", "corrupt or unreadable"),
                          ("P2/P2_3.png", "file is empty")):
        assert rows[name]["status"] == "error" and problem in rows[name]["error"] and name in rows[name]["error"]
    assert _evaluate(tmp_path / "out", data, capsys)["slices_not_ok"] == 3  # counted, never scored
    assert snapshot(data) == before


def test_corrupt_model_and_card_files_are_one_line_naming_the_file(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    classifier, segmenter = make_models(tmp_path / "models")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(segmenter.read_bytes()[:200])
    for model, needle in ((truncated, "truncated.keras: corrupt or truncated .keras file"),):
        with pytest.raises(SystemExit) as info:
            pipeline_main(pipeline_argv(data, (classifier, model), tmp_path / "out"))
        assert needle in str(info.value.code) and "\n" not in str(info.value.code)
    card = segmenter.with_name("segmenter.card.json")
    card.write_text('{"role": "segmenter", "img_size": ')  # cut off mid-write by an older tool
    try:
        with pytest.raises(SystemExit) as info:
            pipeline_main(pipeline_argv(data, (classifier, segmenter), tmp_path / "out"))
    finally:
        card.unlink()
    message = str(info.value.code)
    assert "segmenter.card.json" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    with open(os.fsencode(path), "wb") as f:
        f.write(buffer.tobytes())


def test_odd_file_names_round_trip_through_the_pipeline_and_evaluate(tmp_path: Path, capsys) -> None:
    """Spaces, commas, quotes and a name that is not UTF-8 (bytes on POSIX)."""
    data = tmp_path / "data"
    models = make_models(tmp_path / "models")
    bright = np.full((32, 32, 3), 20, np.uint8)
    bright[8:24, 8:24] = 250
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    patient = data / 'case 1, "quoted" \'x\''
    names = ["a b,1.png", 'say "hi".png', os.fsdecode(b"caf\xe9_2.png")]  # the last: latin-1 bytes
    for name in names:
        _write_png(patient / name, bright)
        _write_png(patient / name.replace(".png", "_mask.png"), mask)
    before = snapshot(data)
    out = tmp_path / "out"
    assert pipeline_main(pipeline_argv(data, models, out)) == 0
    assert "3/3 slices processed" in capsys.readouterr().out
    rows = _rows(out)
    assert sorted(rows) == sorted(f"{patient.name}/{n}" for n in names)
    assert all(r["status"] == "ok" and r["final_call"] == "tumor" for r in rows.values())
    assert all(os.path.isfile(os.fsencode(out / r["mask_path"])) for r in rows.values())
    assert _evaluate(out, data, capsys)["tp"] == 3
    assert snapshot(data) == before


def test_symlink_loops_are_walked_once(tmp_path: Path, capsys) -> None:
    data = make_data(tmp_path / "data")
    models = make_models(tmp_path / "models")
    (data / "P1" / "loop").symlink_to(data, target_is_directory=True)  # back to the top
    (data / "P2" / "self").symlink_to(data / "P2", target_is_directory=True)
    (data / "P2" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    assert pipeline_main(pipeline_argv(data, models, tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "4/5 slices processed, 1 unreadable" in out  # the dangling link is a row saying so
    rows = _rows(tmp_path / "out")
    assert "file does not exist" in rows["P2/dangling.png"]["error"]
    with pytest.raises(SystemExit, match="refusing to write into the test folder"):
        pipeline_main(pipeline_argv(data, models, data / "P1" / "loop" / "P2" / "o"))

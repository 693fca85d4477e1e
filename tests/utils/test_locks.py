"""Issue 20: an output folder is locked while a command writes it; a live writer is told apart from a dead
one (the kernel's flock, pid and host in the lock file); a second writer is refused in one line and the
first one's results stay complete; a finished output is replaced only with --overwrite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from classseg.utils.atomic import LOCK_NAME, OutputLock, OutputLockError

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from classseg.utils.atomic import OutputLock; "
        "lock = OutputLock(sys.argv[1], 'holder').__enter__(); print('held', flush=True); time.sleep(60)")


def _holder(folder: Path) -> subprocess.Popen:
    """A process (no TensorFlow: fast) that takes the lock on ``folder`` and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_lock_is_refused_naming_the_holder_and_released_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out, "first run") as lock:
        assert lock.held and (out / LOCK_NAME).is_file()
        info = OutputLock.read(out)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "first run"
        with pytest.raises(OutputLockError) as err:  # another open file: refused even in the same process
            OutputLock(out, "second run").acquire()
        message = str(err.value)
        assert "\n" not in message and f"first run (pid {os.getpid()} on host {socket.gethostname()}" in message
    assert not (out / LOCK_NAME).exists() and not out.exists()  # made by the lock, empty: removed
    (out / "kept").mkdir(parents=True)
    with OutputLock(out, "x"):
        pass
    assert (out / "kept").is_dir() and not (out / LOCK_NAME).exists()


def test_live_holder_in_another_process_is_refused_dead_one_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(OutputLockError, match=f"holder \\(pid {proc.pid} on host"):
            OutputLock(out, "me").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, with its pid
        proc.wait()
    assert OutputLock.read(out)["pid"] == proc.pid
    with OutputLock(out, "me") as lock:
        assert lock.previous["pid"] == proc.pid and OutputLock.read(out)["pid"] == os.getpid()


def test_two_runs_started_together_one_gets_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = time.time() + 1.0
    code = ("import sys, time; from classseg.utils.atomic import OutputLock, OutputLockError\n"
            "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    lock = OutputLock(sys.argv[1], 'race').__enter__()\nexcept OutputLockError:\n"
            "    print('refused'); sys.exit(0)\nprint('got', flush=True); time.sleep(1.5); lock.release()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), str(start)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    results = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert results == ["got", "refused"]


# ------------------------------------------------------------------------------------------ the pipeline
def _pipeline_setup(tmp_path: Path) -> tuple[Path, list[str]]:
    import cv2

    from tests.pipeline.test_pipeline import box_mask, slice_image, tiny_classifier, tiny_segmenter, write_rgb

    data = tmp_path / "data"
    for patient in ("P1", "P2"):
        write_rgb(data / patient / f"{patient}_1.png", slice_image(32, 32, 250))
        cv2.imwrite(str(data / patient / f"{patient}_1_mask.png"), box_mask(32, 32) * 255)
    models = tmp_path / "models"
    models.mkdir()
    tiny_classifier().save(models / "classifier.keras")
    tiny_segmenter().save(models / "segmenter.keras")
    return data, ["--test-dir", str(data), "--classifier", str(models / "classifier.keras"), "--segmenter",
                  str(models / "segmenter.keras"), "--threshold", "0.5", "--no-overlays"]


def test_a_second_pipeline_run_into_a_live_runs_out_is_refused_and_nothing_is_lost(tmp_path: Path, capsys) -> None:
    """Was: the second run took the live run's unfinished marker for a dead run's and deleted its masks."""
    from classseg.pipeline import main
    from classseg.utils.guards import mark_unfinished

    data, argv = _pipeline_setup(tmp_path)
    out = tmp_path / "out"
    (out / "masks" / "P1").mkdir(parents=True)
    (out / "masks" / "P1" / "P1_1.png").write_bytes(b"a live run's mask")
    mark_unfinished(out, test_dir=str(data))
    proc = _holder(out)  # the live run
    try:
        with pytest.raises(SystemExit) as info:
            main([*argv, "--out", str(out)])
        message = str(info.value.code)
        assert "\n" not in message and f"is being written by holder (pid {proc.pid}" in message
        assert (out / "masks" / "P1" / "P1_1.png").read_bytes() == b"a live run's mask"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main([*argv, "--out", str(out)]) == 0  # the holder died: its unfinished output is replaced
    assert "replacing it" in capsys.readouterr().err
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and all((out / "masks" / p / f"{p}_1.png").is_file() for p in ("P1", "P2"))
    assert json.loads((out / "metrics.json").read_text())["gated"]["n_slices"] == 2
    assert not (out / LOCK_NAME).exists() and not (out / ".classseg-unfinished.json").exists()


def test_pipeline_overwrite_rules(tmp_path: Path, capsys) -> None:
    from classseg.pipeline import main

    data, argv = _pipeline_setup(tmp_path)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 0
    first = (out / "predictions.csv").read_text()
    with pytest.raises(SystemExit, match="already exists and is not an empty folder; pass --overwrite"):
        main([*argv, "--out", str(out)])
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0
    assert (out / "predictions.csv").read_text() == first and "replacing the earlier output" in capsys.readouterr().err
    (out / "my_notes.txt").write_text("mine")  # a file the pipeline did not write: never deleted
    with pytest.raises(SystemExit, match="holds files the pipeline did not write \\(my_notes.txt\\)"):
        main([*argv, "--out", str(out), "--overwrite"])
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "predictions.csv").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(SystemExit, match="choose another --out") as info:
        main([*argv, "--out", str(other)])
    assert "--overwrite" not in str(info.value.code)
    with pytest.raises(SystemExit, match="already exists and is not a folder"):
        main([*argv, "--out", str(other / "thesis.tex")])


@pytest.mark.parametrize("argv", [
    ["train-segmenter", "DATA", "--epochs", "1", "--img-size", "32"],
    ["train-gate", "DATA", "--epochs", "1", "--img-size", "32"],
    ["train-joint", "DATA", "--architecture", "resunet", "--weights", "none", "--epochs", "1", "--img-size", "32"],
    ["run-all", "DATA", "--profile", "quick"],
    ["compare", "RUN"],
])
def test_a_second_writer_of_a_training_or_table_folder_is_refused(tmp_path: Path, argv: list[str],
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Issue 20: training commands, run-all and compare hold a lock on --out while they write it."""
    from classseg.cli import main
    from classseg.utils.atomic import OutputLock

    out = tmp_path / "out"
    argv = [str(tmp_path / "data") if a == "DATA" else str(tmp_path / "run") if a == "RUN" else a for a in argv]
    with OutputLock(out, "the first run"):
        assert main([*argv, "--out", str(out)]) == 1
        assert "is being written by the first run" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".classseg-lock"]  # nothing written beside it
    assert not out.exists()  # the first run's lock made it and took it away again

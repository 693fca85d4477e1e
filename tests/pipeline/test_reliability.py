"""Issue 13: no silent overwrites, unwritable outputs as one line, skipped files reported (docs/reliability.md)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import interrupt_on_call, write_patient

from classseg.cli import main
from classseg.utils.guards import OutputError, check_not_inside, check_output_file, check_output_folder


def _one_line_exit(argv: list[str]) -> str:
    """Run the CLI expecting a SystemExit whose message is one line; return the message."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert info.value.code not in (0, None)
    assert "\n" not in message and "Traceback" not in message
    return message


# ----------------------------------------------------------------------------- data split
def test_data_split_refuses_to_overwrite_an_existing_file(tiny_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits.csv"
    out.write_text("patient_id,split\nkeep,train\n")
    message = _one_line_exit(["data", "split", str(tiny_tree), "--out", str(out)])
    assert "already exists" in message and "--overwrite" in message and str(out) in message
    assert out.read_text() == "patient_id,split\nkeep,train\n"
    assert main(["data", "split", str(tiny_tree), "--out", str(out), "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == 4


def test_data_split_to_a_folder_or_unwritable_place_is_one_line(tiny_tree: Path, tmp_path: Path) -> None:
    message = _one_line_exit(["data", "split", str(tiny_tree), "--out", str(tmp_path)])
    assert "is a folder" in message
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    message = _one_line_exit(["data", "split", str(tiny_tree), "--out", str(blocker / "splits.csv")])
    assert message.startswith("classseg data split: cannot write to") and "file.txt" in message


def test_read_only_output_is_one_line(tiny_tree: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # a read-only mount that os.access does not reveal
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "ro" / "s.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"classseg data split: {tmp_path / 'ro'}: read-only file system"
    monkeypatch.undo()
    monkeypatch.setattr("os.access", lambda *a, **k: False)  # one that it does: refused before any work
    message = _one_line_exit(["data", "split", str(tiny_tree), "--out", str(tmp_path / "ro" / "s.csv")])
    assert message.startswith("classseg data split: cannot write to") and "permission denied" in message


def test_os_error_during_a_command_is_one_line_not_a_traceback(tiny_tree: Path, tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    import classseg.commands.data as data_cmd

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.csv"))

    monkeypatch.setattr(data_cmd, "save_splits", disk_full)
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"classseg data split: {tmp_path / 's.csv'}: No space left on device"


def test_data_split_reports_skipped_files(tiny_tree: Path, tmp_path: Path, capsys) -> None:
    patient = next(tiny_tree.iterdir())
    (patient / "notes.txt").write_text("x")
    (patient / "broken_9.tif").write_bytes(b"not a tiff")
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "skipped files: 2" in out
    assert "notes.txt: not an image" in out and "broken_9.tif: corrupt or unreadable" in out


# ----------------------------------------------------------------------------- export
def test_export_refuses_to_overwrite_before_loading(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"never loaded: the refusal comes first")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"old export")
    message = _one_line_exit(["export", str(model)])
    assert "already exists" in message and "--overwrite" in message
    assert onnx.read_bytes() == b"old export"
    saved = tmp_path / "m_savedmodel"
    saved.mkdir()
    assert "already exists" in _one_line_exit(["export", str(model), "--format", "savedmodel"])


# ----------------------------------------------------------------------------- training commands
@pytest.mark.parametrize(("command", "finished"), [("train-segmenter", "metrics.json"),
                                                   ("train-classifiers", "results.json"),
                                                   ("train-joint", "metrics.json")])
def test_training_refuses_a_finished_run_folder(command: str, finished: str, tiny_tree: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / finished).write_text("{}")
    (out / "stage.json").write_text("{}")
    message = _one_line_exit([command, str(tiny_tree), "--out", str(out), "--epochs", "1"])
    assert "already holds a finished run" in message and finished in message and "--overwrite" in message
    assert (out / finished).read_text() == "{}" and (out / "stage.json").exists()


def test_output_folder_check_accepts_interrupted_runs_and_drops_stale_stage_marker(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.csv").write_text("epoch\n0\n")  # an interrupted run: no metrics.json
    assert check_output_folder(out, ("metrics.json",)) == out
    (out / "metrics.json").write_text("{}")
    (out / "stage.json").write_text(json.dumps({"stage": "phase2"}))
    with pytest.raises(OutputError, match="finished run"):
        check_output_folder(out, ("metrics.json",))
    check_output_folder(out, ("metrics.json",), overwrite=True)
    assert not (out / "stage.json").exists()  # it would describe the replaced model
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_folder(tmp_path / "f", ("metrics.json",))
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(out)


# ----------------------------------------------------------------------------- symlinks
def test_output_inside_a_symlinked_patient_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_patient(data, "P1")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "P1").symlink_to(data / "P1", target_is_directory=True)
    check_not_inside(tmp_path / "elsewhere", tree)
    with pytest.raises(OutputError, match="inside"):
        check_not_inside(data / "P1" / "out", tree)  # reached through the link


# ----------------------------------------------------------------------------- same stem twice
def _same_stem_tree(root: Path) -> Path:
    """x_1.tif and x_1.png beside one x_1_mask.tif; x_2.png and x_2.jpg beside one x_2_mask.tif."""
    import cv2
    import numpy as np

    folder = root / "TCGA_AA_0001_20000101"
    folder.mkdir(parents=True)
    image = np.full((16, 16, 3), 30, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    for name in ("x_1.tif", "x_1.png", "x_2.png", "x_2.jpg", "x_3.tif"):
        cv2.imwrite(str(folder / name), image)
    for name in ("x_1_mask.tif", "x_2_mask.tif", "x_3_mask.tif"):
        cv2.imwrite(str(folder / name), mask)
    return folder


def test_same_stem_twice_is_reported_and_paired_deterministically(tmp_path: Path) -> None:
    from classseg.data import discover

    folder = _same_stem_tree(tmp_path / "data")
    df = discover(tmp_path / "data")
    assert sorted(Path(p).name for p in df["image_path"]) == ["x_1.tif", "x_3.tif"]
    assert Path(df.loc[df["image_path"].str.endswith("x_1.tif"), "mask_path"].item()) == folder / "x_1_mask.tif"
    reasons = {Path(s["path"]).name: s["reason"] for s in df.attrs["skipped"]}
    assert set(reasons) == {"x_1.png", "x_2.png", "x_2.jpg"}
    assert "same stem as x_1.tif, whose mask x_1_mask.tif is" in reasons["x_1.png"]
    assert "ambiguous ground truth: x_2.jpg, x_2.png share the stem 'x_2'" in reasons["x_2.png"]
    loose = discover(tmp_path / "data", require_masks=False)  # kept, unpaired, listed
    assert len(loose) == 5 and {Path(s["path"]).name for s in loose.attrs["ambiguous"]} == {"x_1.png", "x_2.png",
                                                                                           "x_2.jpg"}
    assert loose.loc[loose["image_path"].str.endswith("x_1.png"), "mask_path"].isna().all()


def test_pipeline_inputs_with_the_same_stem_say_why_ground_truth_is_unused(tmp_path: Path) -> None:
    from classseg.pipeline import find_inputs

    folder = _same_stem_tree(tmp_path / "data")
    inputs, _ = find_inputs(tmp_path / "data")
    by_name = {s.path.name: s for s in inputs}
    assert set(by_name) == {"x_1.tif", "x_1.png", "x_2.png", "x_2.jpg", "x_3.tif"}  # every image is predicted
    assert by_name["x_1.tif"].mask_path == folder / "x_1_mask.tif" and by_name["x_1.tif"].note == ""
    assert by_name["x_1.png"].mask_path is None and "ground truth not used: same stem as x_1.tif" in by_name[
        "x_1.png"].note
    assert by_name["x_2.jpg"].mask_path is None and "ambiguous" in by_name["x_2.jpg"].note


def test_data_commands_follow_symlinked_patient_folders(tmp_path: Path) -> None:
    from classseg.data import discover

    data = tmp_path / "data"
    write_patient(data, "P1")
    write_patient(data, "P2")
    tree = tmp_path / "tree"
    tree.mkdir()
    for p in ("P1", "P2"):
        (tree / p).symlink_to(data / p, target_is_directory=True)
    (tree / "P2" / "loop").symlink_to(tree, target_is_directory=True)  # a link loop is walked once
    df = discover(tree)
    assert sorted(df["patient_id"].unique()) == ["P1", "P2"] and len(df) == 8
    assert all(str(p).startswith(str(tree)) for p in df["image_path"])


@pytest.mark.parametrize("command", ["train-segmenter", "train-classifiers", "train-joint"])
def test_training_output_inside_the_data_folder_is_refused(command: str, tiny_tree: Path) -> None:
    out = tiny_tree / "TCGA_AA_0001_20000101" / "run"
    message = _one_line_exit([command, str(tiny_tree), "--out", str(out), "--epochs", "1"])
    assert "refusing to write into the data folder" in message
    assert not out.exists()


def test_can_create_checks_without_creating(tmp_path: Path, monkeypatch) -> None:
    from classseg.utils.guards import check_can_create

    target = tmp_path / "a" / "b"
    assert check_can_create(target) == target and not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_can_create(tmp_path / "f" / "out")
    monkeypatch.setattr("os.access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="cannot write to"):
        check_can_create(target)


def test_ctrl_c_in_any_command_is_exit_130_and_one_line(tiny_tree: Path, tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    import classseg.commands.data as data_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cmd, "discover", interrupted)
    assert main(["data", "split", str(tiny_tree), "--out", str(tmp_path / "s.csv")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("classseg data split: interrupted (Ctrl-C)") and len(err.splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()


# ------------------------------------------------------------------------------------------------ issue 20
def test_interrupted_pipeline_leaves_no_rows_file_nor_lock_and_a_nonbinary_mask_never_scores_a_subset(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C half-way: the streamed rows' temporary file and the output lock are gone, the folder is marked
    unfinished. A float mask with NaN is refused like any mask outside the one rule (no metrics.json)."""
    import cv2
    import numpy as np

    import classseg.pipeline.cli as pl
    import classseg.pipeline.folder as folder
    from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb

    data = tmp_path / "data"
    for patient in ("P1", "P2"):
        write_rgb(data / patient / f"{patient}_1.png", slice_image(32, 32, 250))
        cv2.imwrite(str(data / patient / f"{patient}_1_mask.png"), np.zeros((32, 32), np.uint8))
    tiny_classifier().save(tmp_path / "c.keras")
    tiny_segmenter().save(tmp_path / "s.keras")
    argv = ["--test-dir", str(data), "--classifier", str(tmp_path / "c.keras"), "--segmenter",
            str(tmp_path / "s.keras"), "--threshold", "0.5", "--out", str(tmp_path / "out")]
    interrupt_on_call(monkeypatch, folder, "_process_patient")  # Ctrl-C on the second patient
    assert pl.main(argv) == 130
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == [".classseg-output.json", ".classseg-unfinished.json", "masks", "overlays",
                    "skipped.csv"]  # no .predictions…tmp, no lock
    monkeypatch.undo()
    nan_mask = np.zeros((32, 32), np.float32)
    nan_mask[0, 0] = np.nan
    (data / "P2" / "P2_1_mask.png").unlink()
    cv2.imwrite(str(data / "P2" / "P2_1_mask.tiff"), nan_mask)
    capsys.readouterr()
    assert pl.main(argv) == 1
    err = capsys.readouterr().err
    assert "replacing it" in err and "mask has NaN or infinite values" in err
    assert not (tmp_path / "out" / "metrics.json").exists() and (tmp_path / "out" / "predictions.csv").is_file()

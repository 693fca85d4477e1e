"""run-all on a tiny synthetic tree: every stage, resumability, and the report's files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_patient

from classseg.report import write_report
from classseg.runall import get_profile, run_all


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "kaggle_3m"
    for k in range(7):
        write_patient(root, f"TCGA_A{k % 2}_{k:04d}_20000101", n_slices=4, size=64, tumor_slices=(2, 3), seed=k)
    out = tmp_path_factory.mktemp("run")
    profile = get_profile("quick", backbones=("mobilenetv2",), cls_img_size=32, cls_head="gap", cls_epochs=1,
                          seg_img_size=32, seg_epochs=1, seg_batch_size=4, joint_img_size=64, joint_epochs=1,
                          joint_batch_size=4)
    import tensorflow as tf

    # An explicit tf.distribute strategy (the default one on CPU) goes through every training stage.
    run_all(root, out, profile, strategy=tf.distribute.get_strategy(), log=lambda _: None)
    return out


def test_every_stage_writes_its_outputs(run_dir: Path) -> None:
    for stage in ("split", "phase1", "phase2", "phase3", "joint", "report"):
        assert (run_dir / stage / "stage.json").exists(), stage
    splits = pd.read_csv(run_dir / "split" / "splits.csv")
    assert splits["patient_id"].is_unique and len(splits) == 7
    assert (run_dir / "phase1" / "results.csv").exists()
    assert (run_dir / "phase2" / "segmenter.keras").exists()
    assert (run_dir / "joint" / "joint.keras").exists()
    pred = pd.read_csv(run_dir / "phase3" / "predictions" / "predictions.csv")
    test_patients = set(splits.loc[splits["split"] == "test", "patient_id"])
    assert {Path(p).parts[0] for p in pred["image"]} == test_patients  # only held-out patients
    assert (pred["status"] == "ok").all()


def test_report_tables_and_figures(run_dir: Path) -> None:
    report = run_dir / "report"
    for stem in ("phase1_classification", "phase2_segmentation", "joint_vs_two_stage"):
        for ext in ("md", "tex", "csv"):
            assert (report / f"{stem}.{ext}").exists(), (stem, ext)
    tex = (report / "phase1_classification.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "patient-level" in (report / "phase1_classification.md").read_text()
    figures = {p.name for p in (report / "figures").iterdir()}
    for name in ("confusion_matrices", "training_curves", "segmentation_examples", "per_patient_dice"):
        assert {f"{name}.png", f"{name}.pdf"} <= figures, name
    comparison = pd.read_csv(report / "joint_vs_two_stage.csv")
    assert len(comparison) >= 3  # gated, segment-all, joint (+ ResUNet)
    # every Dice / HD95 in one schema, at the slices' original size, units stated
    assert comparison["hd95_detected_px"].notna().all() and comparison["dice_tumor_slices"].notna().all()
    for stem in ("phase2_segmentation", "joint_vs_two_stage"):
        text = (report / f"{stem}.md").read_text()
        assert "hd95_detected_px" in text and "original size" in text and "pixels" in text, stem


def test_finished_stages_are_not_redone(run_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/stage.json")}
    run_all(run_dir.parent / "unused", run_dir, get_profile("quick"), log=lambda _: None)  # data never touched
    after = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/stage.json")}
    assert before == after


def test_report_on_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope", tmp_path / "out")

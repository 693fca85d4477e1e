"""The run-all report's headline and labels (issue 18), on a hand-made run folder with known figures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from classseg.reporting.report import (
    headline,
    headline_rows,
    joint_test_predictions,
    leakage_lines,
    per_patient_table,
    segmentation_caption,
    write_report,
)


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _scores(accuracy: float, dice_c: float, dice_d: float, **extra) -> dict:
    return {"accuracy": accuracy, "sensitivity": 0.9, "specificity": 0.8, "dice_per_patient": (dice_c + dice_d) / 2,
            "dice_tumor_slices": 0.5, "per_patient": [
                {"patient_id": "C", "dice": dice_c, "n_slices": 3, "n_tumor_slices": 2},
                {"patient_id": "D", "dice": dice_d, "n_slices": 3, "n_tumor_slices": 1}], **extra}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "split").mkdir(parents=True)
    pd.DataFrame({"patient_id": ["A", "B", "C", "D"], "split": ["train", "val", "test", "test"]}).to_csv(
        run / "split" / "splits.csv", index=False)
    _write(run / "split" / "split_rule.json", {"source": "computed", "rule": "split_patients(seed=0) as it comes"})
    _write(run / "leakage_check.json", {"checked": True, "starting_models": [
        {"model": "/repo/saved_models/segmenter.keras", "checked": True, "split_file": "/repo/data/splits/s0.csv",
         "split_read_from": "its card", "new_val_test_patients": 3, "start_train_val_patients": 68, "overlap": []}]})
    _write(run / "phase2" / "start_model_test.json", {"model": "/repo/saved_models/segmenter.keras",
                                                      **_scores(0.80, 0.50, 0.70)})
    _write(run / "phase2" / "metrics.json", {"weights": "initialised from /repo/saved_models/segmenter.keras "
                                             "(in-domain)", "loss": "bce_dice", "recipe": "fast", "train_minutes": 2.0,
                                             "normalization": "patient_percentile", **_scores(0.85, 0.60, 0.80)})
    _write(run / "phase3" / "predictions" / "metrics.json", {"gated": _scores(0.82, 0.55, 0.75)})
    _write(run / "phase3" / "gate_selection.json", {"rule": "mask", "threshold": None})
    _write(run / "joint" / "metrics.json", {"model": "joint_resunet", "gate_rule": "gate",
                                            "weights": "none (from scratch)", **_scores(0.90, 0.65, 0.85)})
    return run


def _joint_predictions(run: Path, tmp_path: Path) -> None:
    from classseg.evaluation.delivered import save_predictions

    paths = []
    for i, tumor in enumerate((1, 1, 0, 0)):
        mask = np.zeros((20, 20), np.uint8)
        mask[5:9, 5:9] = 255 * tumor
        cv2.imwrite(str(tmp_path / f"m{i}.png"), mask)
        paths.append(str(tmp_path / f"m{i}.png"))
    save_predictions(run / "joint" / "predictions_test.npz", np.array([0.9, 0.4, 0.6, 0.1], np.float32), None,
                     ["C", "C", "D", "D"], paths, [f"i{i}" for i in range(4)])


def test_headline_start_beside_trained_on_the_same_patients_and_every_patient(run: Path) -> None:
    rows = headline_rows(run)
    assert [name for name, _, _ in rows] == ["starting model `segmenter.keras`, unchanged", "phase 2 segmenter",
                                             "two-stage pipeline (phase 1 gate + phase 2 segmenter)",
                                             "joint model `joint_resunet`"]
    table = per_patient_table(rows)
    assert list(table.columns) == ["patient", "slices", "tumor slices", "starting model", "phase 2 segmenter",
                                   "two-stage pipeline", "joint model"]
    assert table.set_index("patient").loc["D"].tolist() == [3, 1, 0.70, 0.80, 0.75, 0.85]
    text = "\n".join(headline(run))
    assert "- Held-out patients chosen by a rule fixed before any result was seen: split_patients(seed=0) as it " \
           "comes." in text
    assert "1 train / 1 val / 2 test patients; test = C, D; val = B" in text
    assert "**The same test patients, starting model beside the trained ones**" in text
    assert "| starting model `segmenter.keras`, unchanged | mask non-empty, its card's threshold and " \
           "post-processing | 0.800 | 0.900 | 0.800 | 0.600 | 0.500 |" in text
    assert "| phase 2 segmenter | mask non-empty; 2.0 min of training, fine-tuned from the starting model | 0.850 |" \
           in text
    assert "| C | 3 | 2 | 0.500 | 0.600 | 0.550 | 0.650 |" in text
    # each model's own weights, never "phase 2 and the joint model share weights"
    assert "share" not in text
    assert ("- Weights: phase 2 segmenter initialised from /repo/saved_models/segmenter.keras (in-domain), input "
            "patient_percentile; joint model none (from scratch).") in text
    assert ("never trained or chose on them" in text
            and "none of this run's 3 val/test patients is among its 68 train/val patients" in text)


def test_never_saw_is_said_only_when_checked(run: Path) -> None:
    _write(run / "leakage_check.json", {"checked": False, "starting_models": [
        {"model": "x.keras", "checked": False, "why": "the split it was trained on is unknown (no model card)"}]})
    lines = leakage_lines(run)
    assert lines == ["- Leakage NOT checked for `x.keras`: the split it was trained on is unknown (no model card). "
                     "It may have trained on this run's val/test patients; read its figures with that in mind."]
    (run / "leakage_check.json").unlink()
    text = "\n".join(headline(run))
    assert "Leakage: not checked" in text and "never saw" not in text and "never trained" not in text


def test_captions_come_from_the_run_and_the_joint_roc_from_its_predictions(run: Path, tmp_path: Path) -> None:
    assert segmentation_caption(run) == "Phase 2: ResUNet (BCE + Dice, recipe fast), test split"
    metrics = json.loads((run / "phase2" / "metrics.json").read_text())
    _write(run / "phase2" / "metrics.json", {**metrics, "loss": "focal_tversky", "recipe": "paper"})
    assert segmentation_caption(run) == "Phase 2: ResUNet (Focal Tversky, recipe paper), test split"
    assert joint_test_predictions(run) is None  # nothing written: no curve, no error
    _joint_predictions(run, tmp_path)
    labels, prob = joint_test_predictions(run)
    assert labels.tolist() == [1, 1, 0, 0] and prob.tolist() == pytest.approx([0.9, 0.4, 0.6, 0.1])
    written = write_report(run, tmp_path / "report")
    assert {p.name for p in written["figures"]} >= {"roc_curves.png", "roc_curves.pdf"}  # drawn from the npz alone
    readme = (tmp_path / "report" / "README.md").read_text()
    assert readme.startswith("# classseg report") and "Every test patient's own volume Dice" in readme


def test_report_command_never_replaces_a_report_without_overwrite(run: Path, tmp_path: Path) -> None:
    from classseg.cli import main

    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    (out / "README.md").write_text("kept")
    with pytest.raises(SystemExit, match="classseg report: .*--overwrite"):
        main(["report", str(run), "--out", str(out)])
    assert (out / "README.md").read_text() == "kept"
    assert main(["report", str(run), "--out", str(out), "--overwrite"]) == 0
    assert (out / "README.md").read_text() != "kept"

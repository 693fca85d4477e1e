"""run-all on a tiny synthetic tree: every stage, resumability, and the report's files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_patient

from classseg.cli import main
from classseg.reporting.report import write_report
from classseg.workflows.runall import StageSettingsError, get_profile, run_all

PROFILE = get_profile("quick", weights="none", init="none", backbones=("mobilenetv2",), cls_img_size=32,
                      cls_head="gap", cls_epochs=1, seg_minutes=0.5,
                      seg_img_size=32, seg_epochs=1, seg_batch_size=4, joint_img_size=64, joint_epochs=1,
                      joint_batch_size=4)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "kaggle_3m"
    for k in range(7):
        write_patient(root, f"TCGA_A{k % 2}_{k:04d}_20000101", n_slices=4, size=64, tumor_slices=(2, 3), seed=k)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    import tensorflow as tf

    # An explicit tf.distribute strategy (the default one on CPU) goes through every training stage.
    run_all(data_root, out, PROFILE, strategy=tf.distribute.get_strategy(), log=lambda _: None)
    return out


def _mtimes(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in [*run_dir.glob("*/stage.json"), run_dir / "manifest.json"]}


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
    choice = json.loads((run_dir / "phase3" / "gate_selection.json").read_text())  # chosen on val (issue 11)
    assert choice["rule"] in ("gate", "gate_and_mask", "mask") and "baseline_mask_nonempty" in choice
    card = json.loads((run_dir / "joint" / "joint.card.json").read_text())
    assert card["role"] == "joint" and card["gate_rule"] in ("gate", "gate_and_mask", "mask")


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
    assert comparison["dice_tumor_slices"].notna().all()
    # HD95 over the detected tumor slices: a number wherever a tumor slice was detected (sensitivity > 0),
    # empty only for a model that detected none (a 1-epoch segmenter may; the joint model here does)
    detected = comparison["sensitivity"] > 0
    assert detected.any() and (comparison["hd95_detected_px"].notna() == detected).all()
    for stem in ("phase2_segmentation", "joint_vs_two_stage"):
        text = (report / f"{stem}.md").read_text()
        assert "hd95_detected_px" in text and "original size" in text and "pixels" in text, stem


def test_finished_stages_are_not_redone(run_dir: Path, data_root: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/stage.json")}
    run_all(data_root, run_dir, PROFILE, log=lambda _: None)  # same data and settings: every stage skipped
    after = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/stage.json")}
    assert before == after


def test_reused_folder_with_other_data_is_refused(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_patient(other, "TCGA_ZZ_0001_20000101")
    before = _mtimes(run_dir)
    with pytest.raises(StageSettingsError, match=r"split was finished with other settings: data_dir: .*kaggle_3m"):
        run_all(other, run_dir, PROFILE, log=lambda _: None)
    assert _mtimes(run_dir) == before  # manifest.json not rewritten over the results of the first data


def test_reused_folder_with_other_seed_is_one_line_and_nonzero(run_dir: Path, data_root: Path, capsys) -> None:
    before = _mtimes(run_dir)
    with pytest.raises(SystemExit) as info:
        main(["run-all", str(data_root), "--out", str(run_dir), "--seed", "7"])
    message = str(info.value.code)
    assert message.startswith("classseg run-all: ") and "\n" not in message
    assert "seed: 0 (finished) vs 7 (this run)" in message
    assert _mtimes(run_dir) == before


def test_changed_epochs_name_the_stage_and_setting(run_dir: Path, data_root: Path) -> None:
    with pytest.raises(StageSettingsError, match=r"phase2 was finished with other settings: seg_epochs: 1 .*vs 3"):
        run_all(data_root, run_dir, replace(PROFILE, seg_epochs=3), log=lambda _: None)


def test_ctrl_c_exits_130_with_one_line_saying_how_to_resume(run_dir: Path, data_root: Path, monkeypatch,
                                                             capsys) -> None:
    import classseg.workflows.runall

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(classseg.workflows.runall, "run_all", interrupted)
    (run_dir / "report" / "stage.json").rename(run_dir / "report" / "stage.json.bak")
    try:
        assert main(["run-all", str(data_root), "--out", str(run_dir)]) == 130
    finally:
        (run_dir / "report" / "stage.json.bak").rename(run_dir / "report" / "stage.json")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "interrupted during report" in err and "split, phase1, phase2, phase3, joint" in err
    assert "run the same command again to resume" in err


def test_report_on_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope", tmp_path / "out")


def test_redone_stage_makes_later_stages_stale_and_a_half_written_phase3_resumes(run_dir: Path,
                                                                                 data_root: Path) -> None:
    """Run last: deletes phase 3 (the user's way to redo it) and leaves a half-written pipeline output."""
    import shutil

    old_report = json.loads((run_dir / "report" / "stage.json").read_text())
    shutil.rmtree(run_dir / "phase3")
    half = run_dir / "phase3" / "predictions"
    (half / "masks").mkdir(parents=True)
    (half / "masks" / "x.png").write_bytes(b"")  # as left by Ctrl-C / SIGKILL half-way, no predictions.csv
    logs: list[str] = []
    run_all(data_root, run_dir, PROFILE, log=logs.append)
    assert (run_dir / "phase3" / "predictions" / "predictions.csv").is_file()
    assert not (run_dir / "phase3" / "predictions" / "masks" / "x.png").exists()
    stale = list(run_dir.glob("report.stale-*"))
    assert len(stale) == 1 and (stale[0] / "stage.json").is_file()  # old report kept, moved aside
    assert json.loads((run_dir / "report" / "stage.json").read_text())["token"] != old_report["token"]
    assert any("[phase1] done earlier" in line for line in logs)
    assert any("[report] stale: phase3 redone" in line for line in logs)


# ------------------------------------------------------------------------------- issue 18
def test_quick_profile_split_rule_on_the_sample_is_the_standard_splitter() -> None:
    """The quick profile's held-out patients follow split_patients' defaults (0.70/0.15/0.15, seed 0),
    fixed before any result was seen; on the bundled sample that is this split, kept as it comes."""
    from classseg.data import discover, split_patients
    from classseg.utils.paths import REPO_ROOT
    from classseg.workflows.runall import PROFILES, split_rule

    quick = PROFILES["quick"]
    assert (quick.fractions, quick.seed) == ((0.7, 0.15, 0.15), 0)
    splits = split_patients(discover(REPO_ROOT / "data" / "sample" / "kaggle_3m"), quick.fractions, seed=quick.seed)
    by_split = splits.groupby("split")["patient_id"].apply(sorted).to_dict()
    assert by_split["test"] == ["TCGA_FG_A60K_20040224"] and by_split["val"] == ["TCGA_FG_8189_20030516"]
    assert len(by_split["train"]) == 5
    rule = split_rule(quick)
    assert rule["source"] == "computed" and "fractions=(0.70, 0.15, 0.15), seed=0" in rule["rule"]
    assert "fixed before any result was seen" in rule["rule"]
    assert split_rule(quick, "given.csv")["rule"] == "the split file given.csv, given with --splits"
    import classseg.workflows.runall

    assert "knowing" not in classseg.workflows.runall.RunAllProfile.__doc__.split("undone")[1]  # the admission is gone


def test_report_states_the_rule_the_leakage_check_and_per_patient_figures(run_dir: Path) -> None:
    rule = json.loads((run_dir / "split" / "split_rule.json").read_text())
    assert rule["source"] == "computed" and rule["fractions"] == [0.7, 0.15, 0.15]
    leakage = json.loads((run_dir / "leakage_check.json").read_text())
    assert leakage == {"starting_models": [], "checked": True, "split_file": str(run_dir / "split" / "splits.csv"),
                       "rule": leakage["rule"]}  # from scratch: nothing to check
    text = (run_dir / "report" / "README.md").read_text()
    assert "Held-out patients chosen by a rule fixed before any result was seen: classseg.data.split_patients(" in text
    assert "no model started from trained weights" in text and "never saw" not in text and "never trained" not in text
    assert "share weights" not in text and "phase 2 segmenter none (from scratch)" in text
    splits = pd.read_csv(run_dir / "split" / "splits.csv")
    test_patient = splits.loc[splits["split"] == "test", "patient_id"].item()
    assert "Every test patient's own volume Dice" in text and f"| {test_patient} | 4 | 2 |" in text
    assert "| phase 2 segmenter | mask non-empty;" in text and "| joint model `joint_resunet` |" in text
    caption = (run_dir / "report" / "phase2_segmentation.md").read_text().splitlines()[0]
    assert caption == "**Phase 2: ResUNet (BCE + Dice, recipe fast), test split**"  # the run's own loss


def test_starting_models_are_fed_what_their_cards_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phase 2 and the resunet joint model take the init model's card's normalization; in-domain phase-1
    backbones take that of the model they are cut from; ImageNet / random backbones stay raw."""
    from classseg.workflows.runall import backbone_normalizations, joint_config, phase2_config, starting_models

    models = tmp_path / "models"
    models.mkdir()
    for name, norm in (("segmenter", "patient_percentile"), ("classifier", "patient_zscore")):
        (models / f"{name}.keras").write_bytes(b"")
        (models / f"{name}.card.json").write_text(json.dumps({"role": "segmenter", "img_size": 32,
                                                              "normalization": norm}))
    monkeypatch.setenv("CLASSSEG_MODELS", str(models))
    quick = get_profile("quick")
    assert phase2_config(quick).normalization == "patient_percentile"
    joint = joint_config(quick)
    assert joint.normalization == "patient_percentile" and joint.init == str((models / "segmenter.keras").resolve())
    assert backbone_normalizations(quick) == {"resunet_encoder": "patient_percentile",
                                              "gate_encoder": "patient_zscore"}
    assert starting_models(quick) == [str((models / "segmenter.keras").resolve()),
                                      str((models / "classifier.keras").resolve())]
    scratch = get_profile("quick", weights="none", init="none", backbones=("mobilenetv2",))
    assert phase2_config(scratch).normalization == "patient_percentile"  # the fast recipe's default
    assert joint_config(scratch).normalization is None
    assert backbone_normalizations(scratch) == {"mobilenetv2": "raw"} and starting_models(scratch) == []


def test_phase1_feeds_an_in_domain_backbone_its_cards_normalization(data_root: Path, tmp_path: Path) -> None:
    import keras
    import numpy as np

    from classseg import data as cdata
    from classseg.data.standardize import prepare_input
    from classseg.models.resunet import build_gate_cnn
    from classseg.training.classifiers import ClassifierConfig
    from classseg.workflows.runall import backbone_normalizations, train_phase1

    gate = tmp_path / "gate.keras"
    build_gate_cnn((32, 32, 3), width=0.25, input_scale=1.0 / 255.0).save(gate)
    (tmp_path / "gate.card.json").write_text(json.dumps({"role": "gate", "img_size": 32,
                                                         "normalization": "patient_percentile"}))
    profile = get_profile("quick", weights=str(gate), backbones=("gate_encoder",))
    norms = backbone_normalizations(profile)
    assert norms == {"gate_encoder": "patient_percentile"}
    split_file = tmp_path / "splits.csv"
    cdata.save_splits(cdata.split_patients(cdata.discover(data_root), (0.7, 0.15, 0.15), seed=0), split_file)
    config = ClassifierConfig(backbones=("gate_encoder",), weights=str(gate), img_size=32, head="gap", epochs=1,
                              seed=0, progress=False)
    out = tmp_path / "phase1"
    results = train_phase1(config, data_root, split_file, out, norms)
    assert list(results["input_normalization"]) == ["patient_percentile"]
    card = json.loads((out / "gate_encoder" / "classifier.card.json").read_text())
    assert card["normalization"] == "patient_percentile" and card["img_size"] == 32  # phase 3's pipeline reads it
    gate_info = json.loads((out / "results.json").read_text())["gate"]
    assert gate_info["model"] == "gate_encoder/classifier.keras"
    pred = pd.read_csv(out / "gate_encoder" / "predictions.csv")
    test_pred = pred[pred["split"] == "test"].reset_index(drop=True)
    frame = cdata.resolve_splits(cdata.discover(data_root), split_file)
    test = cdata.load_arrays(frame[frame["split"] == "test"].reset_index(drop=True), 32, progress=False)
    prepared = prepare_input(test.images, "patient_percentile", test.frame["patient_id"].to_numpy())
    model = keras.models.load_model(out / "gate_encoder" / "classifier.keras", compile=False)
    expected = np.asarray(model(prepared, training=False))[:, 1]
    np.testing.assert_allclose(test_pred["p_tumor"].to_numpy(), expected, rtol=1e-4, atol=1e-5)

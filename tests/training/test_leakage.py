"""The leakage guard (issue 18): a run that starts from trained weights refuses val/test patients those
weights were trained or chosen on; ``train-segmenter --evaluate-only`` keeps the run's own split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_patient

from classseg.utils.guards import LeakageError, check_no_leakage, check_start_models, evaluation_split, start_split_file
from classseg.utils.paths import REPO_ROOT

SHIPPED_SPLIT = REPO_ROOT / "data" / "splits" / "kaggle_3m_seed0.csv"


def _splits(**by_patient: str) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": list(by_patient), "split": list(by_patient.values())})


def _card(model: Path, split_file: str | None, normalization: str = "raw") -> None:
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"")  # the guard reads the card only
    provenance = {"split_file": split_file} if split_file else {}
    model.with_name(model.name.replace(".keras", ".card.json")).write_text(json.dumps(
        {"role": "segmenter", "img_size": 32, "normalization": normalization, "provenance": provenance}))


def test_val_or_test_patients_seen_in_training_are_refused_by_name() -> None:
    start = _splits(A="train", B="val", C="test", E="train")
    new = _splits(A="test", B="val", C="test", D="val", E="train")
    with pytest.raises(LeakageError) as info:
        check_no_leakage(new, start, "seg.keras", hint="use another split")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("2 val/test patient(s) of this run were train/val patients of seg.keras")
    assert ": A (test), B (val); use another split" in message
    # the start's test patient C may be held out again, an unknown D too; E trains again: no leakage
    record = check_no_leakage(_splits(C="test", D="val", E="train", A="train"), start, "seg.keras")
    assert record == {"model": "seg.keras", "checked": True, "new_val_test_patients": 2,
                      "start_train_val_patients": 3, "overlap": []}


def test_start_split_file_card_run_folder_and_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the shipped models' cards name a path relative to the repository root: found from any working directory
    monkeypatch.chdir(tmp_path)
    found, how = start_split_file(REPO_ROOT / "saved_models" / "segmenter.keras")
    assert found == SHIPPED_SPLIT and "provenance.split_file" in how
    # a run folder: the card's "runs/x/splits.csv (computed, seed 0)" text, or splits.csv beside the model
    run = tmp_path / "runs" / "x"
    _card(run / "segmenter.keras", "runs/x/splits.csv (computed, seed 0)")
    (run / "splits.csv").write_text("patient_id,split\nA,train\n")
    assert start_split_file(run / "segmenter.keras")[0].resolve() == (run / "splits.csv").resolve()
    # no card: the splits.csv beside it; a folder with only a manifest whose split_file is prose
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "seg.keras").write_bytes(b"")
    (bare / "manifest.json").write_text(json.dumps({"split_file": f"{SHIPPED_SPLIT} (patient-level over 75)"}))
    assert start_split_file(bare / "seg.keras") == (SHIPPED_SPLIT, f"{bare / 'manifest.json'} (split_file)")
    lost = tmp_path / "lost"
    _card(lost / "seg.keras", "nowhere/splits.csv")
    found, why = start_split_file(lost / "seg.keras")
    assert found is None and "its card names 'nowhere/splits.csv', not found" in why
    records = check_start_models(_splits(A="test"), [lost / "seg.keras"])
    assert records == [{"model": str(lost / "seg.keras"), "checked": False,
                        "why": f"the split it was trained on is unknown ({why})"}]


def test_run_all_on_patients_the_shipped_models_trained_on_is_refused(tmp_path: Path, capsys) -> None:
    """Issue 18 acceptance: run-all (quick: shipped weights) on a folder of the shipped models' own
    train/val patients stops before any work, naming the val/test patients it would have leaked."""
    from classseg.cli import main
    from classseg.workflows.runall import get_profile, run_all

    shipped = pd.read_csv(SHIPPED_SPLIT)
    seen = sorted(shipped.loc[shipped["split"] == "train", "patient_id"])[:7]
    data = tmp_path / "kaggle_3m"
    for k, patient in enumerate(seen):
        write_patient(data, patient, n_slices=3, size=32, tumor_slices=(2,), seed=k)
    with pytest.raises(LeakageError) as info:
        run_all(data, tmp_path / "run", get_profile("quick"), log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and "2 val/test patient(s) of this run were train/val patients of" in message
    assert "saved_models/segmenter.keras" in message and "--init none --weights none" in message
    from classseg.data import discover, split_patients

    computed = split_patients(discover(data), (0.7, 0.15, 0.15), seed=0)
    for patient, split in computed[computed["split"] != "train"].itertuples(index=False):
        assert f"{patient} ({split})" in message
    assert not (tmp_path / "run").exists()  # refused before any folder is made
    with pytest.raises(SystemExit) as cli:
        main(["run-all", str(data), "--out", str(tmp_path / "run2")])
    assert str(cli.value.code).startswith("classseg run-all: 2 val/test patient(s)")
    assert not (tmp_path / "run2").exists()
    # the same patients as train only, held-out patients the shipped models never trained on: accepted
    ok = computed.assign(split="train")
    test_patient = sorted(shipped.loc[shipped["split"] == "test", "patient_id"])[0]
    ok = pd.concat([ok, _splits(**{test_patient: "test"})])
    records = check_start_models(ok, [REPO_ROOT / "saved_models" / "segmenter.keras"])
    assert records[0]["checked"] and records[0]["new_val_test_patients"] == 1


@pytest.fixture
def segmenter_run(segmenter_cli_run, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the shared 1-epoch train-segmenter run at 32 px (conftest) on a split file: test EV_0000,
    val EV_0001 (these tests rewrite it with --evaluate-only)."""
    data, out, given = segmenter_cli_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return data, copy, given


def test_evaluate_only_uses_the_runs_own_split(segmenter_run, tmp_path: Path) -> None:
    from classseg.cli import main
    from classseg.data import discover, split_patients

    data, out, given = segmenter_run
    # without --splits the old code re-split with the run's seed (1): the trained-on EV_0003 became test
    resplit = split_patients(discover(data), (0.7, 0.15, 0.15), seed=1)
    assert list(resplit.loc[resplit["split"] == "test", "patient_id"]) == ["TCGA_EV_0003_20000101"]
    assert main(["train-segmenter", str(data), "--out", str(out), "--evaluate-only", "--quiet",
                 "--no-select-postprocess"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [p["patient_id"] for p in metrics["per_patient"]] == ["TCGA_EV_0000_20000101"]
    assert [p["patient_id"] for p in metrics["val"]["per_patient"]] == ["TCGA_EV_0001_20000101"]
    assert evaluation_split(out, data) == out / "splits.csv"
    assert evaluation_split(out, data, given) == given  # the split it was trained on, given again: accepted


def test_evaluate_only_refuses_a_folder_without_its_patients_or_a_leaking_split(segmenter_run,
                                                                                tmp_path: Path) -> None:
    from classseg.cli import main

    data, out, _ = segmenter_run
    other = tmp_path / "other"
    shutil.copytree(data, other)
    shutil.rmtree(other / "TCGA_EV_0000_20000101")
    with pytest.raises(SystemExit) as info:
        main(["train-segmenter", str(other), "--out", str(out), "--evaluate-only", "--quiet"])
    message = str(info.value.code)
    assert "\n" not in message
    assert message == (f"classseg train-segmenter: {other} lacks 1 val/test patient(s) of {out / 'splits.csv'}: "
                       "TCGA_EV_0000_20000101; evaluate on a data folder that holds them")
    leaking = tmp_path / "leaking.csv"
    _splits(TCGA_EV_0000_20000101="train", TCGA_EV_0001_20000101="val", TCGA_EV_0002_20000101="train",
            TCGA_EV_0003_20000101="test", TCGA_EV_0004_20000101="train").to_csv(leaking, index=False)
    # EV_0001 stays val (allowed when re-scoring); EV_0003 was a train patient and is test here
    with pytest.raises(SystemExit, match=r"1 val/test patient\(s\) of this run were train/val patients of the "
                                         r"model in .*: TCGA_EV_0003_20000101 \(test\); evaluate on the run's "
                                         r"own split"):
        main(["train-segmenter", str(data), "--out", str(out), "--evaluate-only", "--splits", str(leaking)])


@pytest.mark.parametrize("command", ["train-segmenter", "train-gate"])
def test_train_init_refuses_a_start_model_trained_on_its_test_patients(tmp_path: Path, command: str) -> None:
    """train-segmenter / train-gate --init read the split the starting weights were trained on, before any work."""
    from classseg.cli import main

    root = tmp_path / "data"
    for k, pid in enumerate(["TCGA_AA_0001", "TCGA_AA_0002", "TCGA_BB_0003"]):
        write_patient(root, pid, seed=k)
    start_split = tmp_path / "start_split.csv"
    _splits(TCGA_AA_0001="train", TCGA_AA_0002="train", TCGA_BB_0003="train").to_csv(start_split, index=False)
    model = tmp_path / "start" / "model.keras"
    _card(model, str(start_split))
    new_split = tmp_path / "new_split.csv"
    _splits(TCGA_AA_0001="train", TCGA_AA_0002="val", TCGA_BB_0003="test").to_csv(new_split, index=False)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main([command, str(root), "--splits", str(new_split), "--init", str(model), "--out", str(out),
              "--epochs", "1", "--img-size", "32", "--quiet"])
    message = str(info.value)
    assert "TCGA_AA_0002 (val), TCGA_BB_0003 (test)" in message and "\n" not in message
    assert not (out / "history.csv").exists()  # refused before any training


def test_fine_tuning_on_the_same_split_may_keep_val_as_val(tmp_path: Path) -> None:
    start = tmp_path / "start.csv"
    _splits(A="train", B="val", C="test").to_csv(start, index=False)
    model = tmp_path / "m" / "model.keras"
    _card(model, str(start))
    same = _splits(A="train", B="val", C="test")
    record = check_start_models(same, [model], val_may_stay_val=True)[0]
    assert record["checked"] and record["overlap"] == []
    with pytest.raises(LeakageError, match=r"B \(val\)"):  # the default (run-all, new splits) refuses it
        check_start_models(same, [model])
    with pytest.raises(LeakageError, match=r"B \(test\)"):  # a val patient never becomes test
        check_start_models(_splits(A="train", B="test", C="val"), [model], val_may_stay_val=True)

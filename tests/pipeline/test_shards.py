"""Sharded prediction (--num-parts / --part-id): whole patients per part, deterministic, and the parts scored
together by ``classseg evaluate`` give the figures of one run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from classseg.cli import main as classseg_main
from classseg.evaluation.folder import evaluate_folder
from classseg.pipeline.folder import PredictionRefused
from classseg.pipeline.shards import part_patients, select_part
from tests.conftest import write_patient
from tests.pipeline.test_nifti import model_dir, predict  # noqa: F401 - the fixture is used by name

PATIENTS = [f"TCGA_AA_{k:04d}_20000101" for k in (1, 2, 10, 3, 20)]


def test_parts_are_whole_patients_in_natural_order() -> None:
    names = ["p10", "p2", "p1", "p3", "p20"]
    assert [part_patients(names, 2, k) for k in (0, 1)] == [["p1", "p3", "p20"], ["p2", "p10"]]
    assert sorted(sum((part_patients(names, 3, k) for k in range(3)), [])) == sorted(names)

    class Item:
        def __init__(self, patient: str) -> None:
            self.patient = patient

    items = [Item(p) for p in ("p1", "p1", "p2", "p3")]
    chosen, info = select_part(items, 2, 1)
    assert [i.patient for i in chosen] == ["p2"] and info["patients"] == 1 and info["patients_in_folder"] == 3
    assert select_part(items)[1] is None
    for parts, part, message in ((0, 0, "at least 1"), (2, 2, "between 0 and"), (4, 3, "holds no patient")):
        with pytest.raises(ValueError, match=message):
            select_part(items, parts, part)


def test_sharded_runs_merge_to_the_figures_of_one_run(tmp_path: Path, model_dir: Path, capsys) -> None:  # noqa: F811
    data = tmp_path / "data"
    for k, patient in enumerate(PATIENTS):
        write_patient(data, patient, n_slices=4, size=32, tumor_slices=(1, 2, 3)[: 1 + k % 3], seed=k)
    whole = predict(data, tmp_path / "whole", model_dir, overlays=False)
    parts = [predict(data, tmp_path / f"part{k}", model_dir, overlays=False, num_parts=3, part_id=k) for k in range(3)]
    assert sum(p.images for p in parts) == whole.images and sum(p.patients for p in parts) == len(PATIENTS)
    summary = json.loads(parts[1].summary_json.read_text())["data"]["part"]
    assert (summary["num_parts"], summary["part_id"], summary["patients_in_folder"]) == (3, 1, len(PATIENTS))
    one = evaluate_folder(whole.out, data)
    merged = evaluate_folder([p.out for p in parts], data)
    for key in ("accuracy", "sensitivity", "specificity", "dice_tumor_slices", "dice_per_patient", "hd95_detected_px",
                "tp", "fp", "tn", "fn", "gate_auc", "n_slices"):
        assert merged[key] == one[key], key
    assert sorted(merged["per_patient"], key=lambda p: p["patient_id"]) == sorted(one["per_patient"],
                                                                                  key=lambda p: p["patient_id"])
    assert merged["parts"] == {"folders": 3, "num_parts": 3}
    # the command line: several folders scored as one; an incomplete or repeated set is refused, naming them
    assert classseg_main(["evaluate", *(str(p.out) for p in parts), "--truth", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dice_per_patient"] == one["dice_per_patient"]
    with pytest.raises(SystemExit, match=r"part\(s\) 2 of 3 missing"):
        classseg_main(["evaluate", str(parts[0].out), str(parts[1].out), "--truth", str(data)])
    with pytest.raises(ValueError, match="are both part 0 of 3"):
        shutil.copytree(parts[0].out, tmp_path / "again")
        evaluate_folder([parts[0].out, tmp_path / "again", parts[1].out, parts[2].out], data)
    with pytest.raises(ValueError, match="not the parts of one split"):
        evaluate_folder([whole.out, parts[0].out], data)
    with pytest.raises(PredictionRefused, match="holds no patient"):
        predict(data, tmp_path / "none", model_dir, num_parts=9, part_id=7)

"""Table writers (md / booktabs tex / csv) and the cross-run comparison on hand-written run folders."""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd
import pytest

from classseg.commands import compare as compare_cmd
from classseg.reporting.tables import (
    compare_runs,
    comparison_notes,
    format_mean_std,
    run_notes,
    to_markdown,
    write_table,
)


def test_format_mean_std():
    assert format_mean_std(0.91234, 0.01251) == "0.912 ± 0.013"
    assert format_mean_std(0.5, None) == "0.500"
    assert format_mean_std(float("nan"), 0.1) == ""
    assert format_mean_std(1, 0, digits=1) == "1.0 ± 0.0"


def test_run_notes_lists_unique_values():
    notes = run_notes("runs/splits_seed0.csv", [0, 1, 1], "none", [256.0, 224], [5, 5])
    assert notes == ("Split: runs/splits_seed0.csv; seed(s): 0, 1; weights: none; image size: 256, 224 px; "
                     "epochs: 5.")
    assert "seed(s): not recorded" in run_notes()


def test_write_table_three_files(tmp_path):
    df = pd.DataFrame({"model": ["mobilenet_v2", "resnet50"], "accuracy": [0.9123, 0.8], "accuracy_std": [0.01, None],
                       "params": pd.array([2257984, None], dtype="Int64")})
    notes = run_notes("splits.csv", 0, "none", 128, 5)
    paths = write_table(df, tmp_path / "sub" / "table", "Phase 1 & friends", notes, label="tab:x")
    assert set(paths) == {"md", "tex", "csv"} and all(p.is_file() for p in paths.values())
    assert paths["tex"].name == "table.tex"

    tex = paths["tex"].read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\begin{tabular}{lrr}" in tex  # accuracy_std merged into accuracy; numbers right-aligned
    assert r"mobilenet\_v2 & 0.912 $\pm$ 0.010 & 2,257,984 \\" in tex
    assert r"resnet50 & 0.800 &  \\" in tex
    assert r"\caption{Phase 1 \& friends}" in tex and r"\label{tab:x}" in tex
    assert "Split: splits.csv; seed(s): 0; weights: none; image size: 128 px; epochs: 5." in tex

    md = paths["md"].read_text()
    assert md.splitlines()[0] == "**Phase 1 & friends**"
    assert "| model | accuracy | params |" in md and "|:---|---:|---:|" in md
    assert "| mobilenet_v2 | 0.912 ± 0.010 | 2,257,984 |" in md
    assert md.rstrip().endswith(f"*Notes:* {notes}")

    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == ["model", "accuracy", "accuracy_std", "params"]
    assert back["accuracy"].tolist() == [0.9123, 0.8] and math.isnan(back["accuracy_std"][1])


def test_markdown_escapes_pipes():
    assert "| a\\|b |" in to_markdown(pd.DataFrame({"x": ["a|b"]}))


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


@pytest.fixture()
def runs(tmp_path):
    phase1 = tmp_path / "phase1"
    _write(phase1 / "results.csv",
           "backbone,weights,img_size,epochs,repeats,trainable_params,params,accuracy,accuracy_std,"
           "f1_micro,f1_macro,sensitivity,specificity,auc,ms_per_slice\n"
           "mobilenetv2,none,128,5,2,1000,2259000,0.9,0.02,0.9,0.85,0.8,0.95,0.93,\n"
           "resnet50,none,128,5,2,2000,23600000,0.8,0.01,0.8,0.75,0.7,0.85,0.88,30.5\n")
    _write(phase1 / "mobilenetv2" / "metrics.json", {"ms_per_slice": 12.5, "val": {"ms_per_slice": 99.0},
                                                     "test": {"accuracy": 0.1}})
    _write(phase1 / "manifest.json", {"seed": 0, "split_file": "runs/splits_seed0.csv", "epochs": 5})

    seg = tmp_path / "seg"
    _write(seg / "metrics.json", {"dice_tumor_slices": 0.81, "iou_tumor_slices": 0.7, "hd95_detected_px": 9.5,
                                  "missed_tumor_slices": 2, "dice_per_patient": 0.77, "dice_end_to_end": 0.88,
                                  "threshold_only": {"dice_tumor_slices": 0.99},
                                  "per_patient": [{"dice": 0.1}], "val": {"dice_tumor_slices": 0.55, "accuracy": 0.1},
                                  "dice": 0.5, "hd95": 131.0,  # keys outside the schema are never read
                                  "img_size": 256, "epochs": 30, "seed": 1, "weights": "none (from scratch)"})
    _write(seg / "manifest.json", {"config": {"splits": "s.csv", "img_size": 999}, "params": 1210513})

    joint = tmp_path / "joint"
    _write(joint / "metrics.json", {"accuracy": 0.93, "dice_tumor_slices": 0.7, "dice_per_patient": 0.66,
                                    "sensitivity": 0.9, "specificity": 0.94, "gate_auc": 0.97, "gate_accuracy": 0.9,
                                    "f1_macro": 0.92, "dice_end_to_end": 0.85,
                                    "segment_all": {"dice_tumor_slices": 0.1},
                                    "params": 32561000, "ms_per_slice": 80.25, "model": "joint_resnet50_unet",
                                    "weights": "none", "img_size": 224, "epochs": 2, "seed": 0, "splits": "j.csv"})

    pipe = tmp_path / "pipe"
    _write(pipe / "metrics.json", {
        "classifier": "c.keras", "threshold": 0.4,
        "gated": {"accuracy": 0.9, "sensitivity": 0.95, "gate_auc": 0.96, "dice_tumor_slices": 0.8,
                  "hd95_detected_px": 7.0, "dice_end_to_end": 0.9, "dice_per_patient": 0.8, "ms_per_slice": 20.0},
        "segment_all": {"dice_tumor_slices": 0.82, "dice_end_to_end": 0.7, "ms_per_slice": 45.0,
                        "x": {"accuracy": 0.5}},
        "timing": {"gated": {"ms_per_slice": 1.0}}})
    return phase1, seg, joint, pipe


def test_compare_runs_rows(runs):
    phase1, seg, joint, pipe = runs
    df = compare_runs(runs).set_index("model")
    assert list(df.index) == ["mobilenetv2", "resnet50", "resunet", "joint_resnet50_unet",
                              "joint_resnet50_unet (mask head alone)", "pipe (gated)", "pipe (segment all)"]
    alone = df.loc["joint_resnet50_unet (mask head alone)"]  # the joint model's segment_all section
    assert alone["dice_tumor_slices"] == 0.1 and alone["params"] == 32561000 and pd.isna(alone["gate_auc"])
    assert list(df["kind"]) == ["classifier", "classifier", "segmenter", "joint", "joint", "pipeline", "pipeline"]

    mob = df.loc["mobilenetv2"]
    assert (mob["accuracy"], mob["accuracy_std"], mob["f1_macro"], mob["auc"]) == (0.9, 0.02, 0.85, 0.93)
    assert mob["params"] == 2259000 and mob["ms_per_slice"] == 12.5  # test figure, not val
    assert (mob["img_size"], mob["epochs"], mob["seed"], mob["split_file"]) == (128, 5, "0", "runs/splits_seed0.csv")
    assert df.loc["resnet50", "ms_per_slice"] == 30.5 and pd.isna(mob["dice_tumor_slices"])

    s = df.loc["resunet"]
    assert (s["dice_tumor_slices"], s["iou_tumor_slices"], s["hd95_detected_px"], s["missed_tumor_slices"],
            s["dice_per_patient"], s["dice_end_to_end"]) == (0.81, 0.7, 9.5, 2, 0.77, 0.88)
    assert pd.isna(s["accuracy"])  # the val sub-dict is never used
    assert (s["img_size"], s["epochs"], s["seed"]) == (256, 30, "1")  # metrics.json beats manifest
    assert s["split_file"] == "s.csv" and s["params"] == 1210513 and s["weights"] == "none (from scratch)"
    assert "dice" not in df.columns and "hd95" not in df.columns  # no aliases: old keys are not guessed back

    j = df.loc["joint_resnet50_unet"]
    assert (j["accuracy"], j["f1_macro"], j["dice_tumor_slices"], j["dice_end_to_end"], j["params"],
            j["ms_per_slice"], j["gate_auc"]) == (0.93, 0.92, 0.7, 0.85, 32561000, 80.25, 0.97)
    assert (j["img_size"], j["split_file"]) == (224, "j.csv")

    g, a = df.loc["pipe (gated)"], df.loc["pipe (segment all)"]
    assert (g["accuracy"], g["sensitivity"], g["dice_tumor_slices"], g["hd95_detected_px"], g["dice_end_to_end"],
            g["ms_per_slice"]) == (0.9, 0.95, 0.8, 7.0, 0.9, 20.0)
    # nested dicts other than ``test`` are never searched
    assert (a["dice_tumor_slices"], a["dice_end_to_end"], a["ms_per_slice"]) == (0.82, 0.7, 45.0)
    assert pd.isna(a["accuracy"]) and pd.isna(g["weights"]) and df["run_dir"].str.endswith("pipe").sum() == 2

    notes = comparison_notes(compare_runs(runs))
    assert notes.startswith("Split: runs/splits_seed0.csv, s.csv, j.csv; seed(s): 0, 1; weights: none, "
                            "none (from scratch); image size: 128, 256, 224 px; epochs: 5, 30, 2.")
    assert "original size" in notes and "HD95 in pixels" in notes


def test_compare_runs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.csv or metrics.json"):
        compare_runs([tmp_path / "empty"])
    _write(tmp_path / "bad" / "metrics.json", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        compare_runs([tmp_path / "bad"])


def test_compare_cli(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = argparse.Namespace(run_dirs=[str(r) for r in runs], out=str(out), caption="Comparison", digits=3)
    assert compare_cmd.run(args) == 0
    assert {p.name for p in out.iterdir()} == {"comparison.md", "comparison.tex", "comparison.csv"}
    assert "| mobilenetv2 | classifier | none | 128 | 5 | 0 | 0.900 ± 0.020 |" in capsys.readouterr().out
    assert len(pd.read_csv(out / "comparison.csv")) == 7  # the joint run adds its mask-head-alone row
    with pytest.raises(SystemExit, match="classseg compare: run folder not found"):
        compare_cmd.run(argparse.Namespace(**{**vars(args), "run_dirs": [str(tmp_path / "nope")],
                                              "out": str(tmp_path / "cmp2")}))


def _seed_run(folder, seed, missed, accuracy):
    _write(folder / "metrics.json", {"model": "seg_only_resunet", "kind": "segmenter", "weights": "none",
                                     "img_size": 96, "epochs": 9, "seed": seed, "split_file": "s.csv",
                                     "accuracy": accuracy, "missed_tumor_slices": missed,
                                     "dice_tumor_slices": 0.4})
    return folder


def test_aggregate_keeps_decimals_of_averaged_counts(tmp_path):
    """Issue 18: the mean of missed_tumor_slices over 3 seeds is 26.33, not 26."""
    from classseg.reporting.tables import aggregate_seeds

    runs = [_seed_run(tmp_path / f"seg_seed{k}", k, missed, acc)
            for k, (missed, acc) in enumerate(((26, 0.80), (26, 0.82), (27, 0.84)))]
    per_run = compare_runs(runs)
    assert list(per_run["missed_tumor_slices"]) == [26, 26, 27]  # a single run's count stays whole
    assert str(per_run["missed_tumor_slices"].dtype) == "Int64"
    row = aggregate_seeds(per_run).iloc[0]
    assert row["missed_tumor_slices"] == pytest.approx(79 / 3)
    assert row["missed_tumor_slices_std"] == pytest.approx(0.5773503, rel=1e-6)
    assert "26.333 ± 0.577" in to_markdown(aggregate_seeds(per_run))


def test_compare_runs_keeps_an_averaged_count_of_one_run(tmp_path):
    run = _seed_run(tmp_path / "avg", 0, 26.33, 0.8)  # a run that recorded a mean count
    assert compare_runs([run])["missed_tumor_slices"].iloc[0] == pytest.approx(26.33)


def test_compare_aggregate_keeps_the_per_seed_rows(tmp_path, capsys):
    """Issue 18: wherever a mean ± std is shown, the per-seed rows it was made from are kept as a csv."""
    from classseg.cli import main

    runs = [str(_seed_run(tmp_path / f"seg_seed{k}", k, missed, acc))
            for k, (missed, acc) in ((2, (27, 0.84)), (0, (26, 0.80)), (1, (26, 0.82)))]
    assert main(["compare", *runs, "--out", str(tmp_path / "docs"), "--name", "mt", "--aggregate"]) == 0
    per_seed = pd.read_csv(tmp_path / "docs" / "mt_per_seed.csv")
    assert list(per_seed["seed"]) == [0, 1, 2]  # ascending within the configuration
    assert list(per_seed["missed_tumor_slices"]) == [26, 26, 27]
    assert list(per_seed["accuracy"]) == [0.80, 0.82, 0.84]
    assert per_seed["run_dir"].str.endswith(("seg_seed0", "seg_seed1", "seg_seed2")).all()
    mean = pd.read_csv(tmp_path / "docs" / "mt.csv").iloc[0]
    assert mean["accuracy"] == pytest.approx(per_seed["accuracy"].mean())
    assert mean["missed_tumor_slices"] == pytest.approx(26.3333333)
    assert "mt_per_seed.csv" in (tmp_path / "docs" / "mt.md").read_text()
    assert "mt_per_seed.csv" in capsys.readouterr().out


def test_compare_never_replaces_an_earlier_table_without_overwrite(runs, tmp_path):
    out = tmp_path / "cmp"
    args = argparse.Namespace(run_dirs=[str(r) for r in runs], out=str(out), caption="Comparison", digits=3)
    assert compare_cmd.run(args) == 0
    before = (out / "comparison.md").read_text()
    (out / "comparison.md").write_text("kept")
    with pytest.raises(SystemExit, match="already holds a finished run .*comparison.md.*--overwrite"):
        compare_cmd.run(args)
    assert (out / "comparison.md").read_text() == "kept"  # untouched
    assert compare_cmd.run(argparse.Namespace(**vars(args), name="other")) == 0  # another --name is fine
    assert compare_cmd.run(argparse.Namespace(**vars(args), overwrite=True)) == 0
    assert (out / "comparison.md").read_text() == before

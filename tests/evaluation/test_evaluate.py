"""``classseg evaluate`` on the pipeline's own output, checked against an independent scorer.

The independent scorer below shares no code with classseg.evaluation: Dice / IoU from pixel counts,
HD95 from brute-force pairwise distances between boundary pixels (scipy.spatial.distance.cdist), the
95th percentile of both directions pooled (medpy's definition), slice detection from "mask non-empty".
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

from classseg.cli import main as cli_main  # noqa: E402
from classseg.pipeline import main as pipeline_main  # noqa: E402

SIZE = 32


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image border counts as outside)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return np.argwhere(mask.astype(bool) & ~inner)


def independent_scores(truths, preds, patients, gate_prob, threshold) -> dict:
    tumor = np.array([t.any() for t in truths])
    called = np.array([p.any() for p in preds])
    tp, fp = int((tumor & called).sum()), int((~tumor & called).sum())
    tn, fn = int((~tumor & ~called).sum()), int((tumor & ~called).sum())
    dices, ious, hds = [], [], []
    inter, total = {}, {}
    for t, p, pid in zip(truths, preds, patients, strict=True):
        i, s, u = int((t & p).sum()), int(t.sum() + p.sum()), int((t | p).sum())
        dices.append(2 * i / s if s else 1.0)
        ious.append(i / u if u else 1.0)
        inter[pid] = inter.get(pid, 0) + i
        total[pid] = total.get(pid, 0) + s
        if t.any() and p.any():
            d = cdist(_boundary(t), _boundary(p))
            hds.append(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))
    dices, ious = np.array(dices), np.array(ious)
    gate = np.asarray(gate_prob) >= threshold
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / len(truths),
        "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "precision": tp / (tp + fp),
        "dice_tumor_slices": dices[tumor].mean(), "iou_tumor_slices": ious[tumor].mean(),
        "hd95_detected_px": float(np.mean(hds)), "missed_tumor_slices": fn, "dice_end_to_end": dices.mean(),
        "dice_per_patient": np.mean([2 * inter[k] / total[k] if total[k] else 1.0 for k in inter]),
        "gate_tp": int((tumor & gate).sum()), "gate_fp": int((~tumor & gate).sum()),
    }


def _box(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def pipeline_output(tmp_path_factory):
    """Three patients, slices of two sizes; bright squares the tiny models find, truths shifted from them."""
    from tests.pipeline.test_pipeline import tiny_classifier, tiny_segmenter

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    cases = {  # patient -> list of (shape, bright box or None, spot value, truth box or None)
        "PA": [((SIZE, SIZE), (8, 8, 24, 24), 250, (8, 10, 24, 27)), ((SIZE, SIZE), None, 0, None),
               ((SIZE, SIZE), (4, 4, 12, 12), 140, (4, 4, 12, 12))],  # gate stops the grey tumor: a miss
        "PB": [((40, 48), (10, 10, 30, 40), 250, (12, 10, 30, 44)), ((40, 48), (2, 2, 8, 8), 250, None)],
        "PC": [((SIZE, SIZE), None, 0, (20, 20, 26, 26)), ((SIZE, SIZE), (5, 5, 20, 15), 230, (5, 6, 21, 16))],
    }
    for patient, slices in cases.items():
        for k, (shape, box, value, truth) in enumerate(slices, start=1):
            image = np.full((*shape, 3), 20, np.uint8)
            if box:
                image[box[0]:box[2], box[1]:box[3]] = value
            folder = data / patient
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{patient}_{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            mask = _box(*shape, *truth) if truth else np.zeros(shape, np.uint8)
            cv2.imwrite(str(folder / f"{patient}_{k}_mask.png"), mask * 255)
    models = root / "models"
    models.mkdir()
    tiny_classifier().save(models / "classifier.keras")
    tiny_segmenter().save(models / "segmenter.keras")
    out = root / "out"
    assert pipeline_main(["--test-dir", str(data), "--out", str(out), "--classifier", str(models / "classifier.keras"),
                          "--segmenter", str(models / "segmenter.keras"), "--threshold", "0.5",
                          "--no-overlays"]) == 0
    return data, out


def test_evaluate_agrees_with_an_independent_scorer(pipeline_output, capsys) -> None:
    data, out = pipeline_output
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    truths = [cv2.imread(str(data / Path(r["image"]).with_name(Path(r["image"]).stem + "_mask.png")),
                         cv2.IMREAD_GRAYSCALE) > 0 for r in rows]
    preds = [cv2.imread(str(out / r["mask_path"]), cv2.IMREAD_GRAYSCALE) > 0 for r in rows]
    expected = independent_scores(truths, preds, [r["patient"] for r in rows],
                                  [float(r["gate_prob"]) for r in rows], 0.5)
    assert expected["fn"] >= 1 and expected["fp"] >= 1 and expected["tp"] >= 2  # a miss and a false alarm
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=0.005), key
    assert got["precision"] == pytest.approx(got["tp"] / (got["tp"] + got["fp"]))
    for key in ("accuracy", "sensitivity", "specificity", "precision", "tp", "fp", "tn", "fn", "dice_tumor_slices",
                "iou_tumor_slices", "hd95_detected_px", "missed_tumor_slices", "dice_per_patient",
                "dice_end_to_end"):
        assert key in got, key
    # the pipeline's own metrics.json comes from the same function
    own = json.loads((out / "metrics.json").read_text())["gated"]
    for key in expected:
        assert own[key] == pytest.approx(got[key]), key


def test_evaluate_writes_per_slice_files_and_reports_bad_input(pipeline_output, tmp_path, capsys) -> None:
    data, out = pipeline_output
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(tmp_path / "ev"), "--hd95", "max"]) == 0
    printed = capsys.readouterr().out
    assert "HD95 px (detected tumor slices)" in printed and "7 slices with ground truth" in printed
    full = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert full["hd95_pooling"] == "max" and len(full["per_slice"]) == 7
    assert (tmp_path / "ev" / "per_slice.csv").read_text().startswith("image,patient,tumor")
    with pytest.raises(SystemExit, match="no predictions.csv"):
        cli_main(["evaluate", str(tmp_path), "--truth", str(data)])


# ------------------------------------------------------------------------------------------------ issue 20
def test_evaluate_out_is_not_replaced_without_overwrite_and_is_locked(pipeline_output, tmp_path, capsys) -> None:
    from classseg.utils.atomic import OutputLock

    data, out = pipeline_output
    ev = tmp_path / "ev"
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(ev), "--json"]) == 0
    first = (ev / "evaluation.json").read_text()
    (ev / "evaluation.json").write_text(first.replace('"hd95_pooling": "pooled"', '"hd95_pooling": "mine"'))
    with pytest.raises(SystemExit, match="already holds evaluation.json, per_slice.csv; pass --overwrite") as info:
        cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(ev)])
    assert "\n" not in str(info.value.code) and '"mine"' in (ev / "evaluation.json").read_text()  # untouched
    with OutputLock(ev, "another evaluation"), pytest.raises(SystemExit, match="is being written by another "
                                                                                "evaluation"):
        cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(ev), "--overwrite"])
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(ev), "--overwrite", "--json"]) == 0
    assert (ev / "evaluation.json").read_text() == first and not (ev / ".classseg-lock").exists()
    with pytest.raises(SystemExit, match="inside"):
        cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(data / "PA" / "ev")])
    assert not (data / "PA" / "ev").exists()


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_one_mask_rule_for_the_pipeline_and_evaluate(pipeline_output, tmp_path, capsys) -> None:
    """0/128 masks are read alike by both commands (same figures as 0/255); a mask with several non-zero
    values (JPEG) is refused by both: the pipeline writes its predictions but no metrics.json (the other
    slices alone would be a filtered subset) and exits 1 saying so; evaluate refuses in one line."""
    data, out = pipeline_output
    models = out.parent / "models"
    args = ["--classifier", str(models / "classifier.keras"), "--segmenter", str(models / "segmenter.keras"),
            "--threshold", "0.5", "--no-overlays"]
    half = _copy_tree(data, tmp_path / "half")
    for path in half.rglob("*_mask.png"):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), (mask > 0).astype(np.uint8) * 128)
    assert pipeline_main(["--test-dir", str(half), "--out", str(tmp_path / "o128"), *args]) == 0
    capsys.readouterr()
    timing = ("ms_per_slice", "slices_per_s")
    same = {k: v for k, v in json.loads((out / "metrics.json").read_text())["gated"].items() if k not in timing}
    got = {k: v for k, v in json.loads((tmp_path / "o128" / "metrics.json").read_text())["gated"].items()
           if k not in timing}
    assert got == same  # 0/128 is 0/255 by the one rule, to the last digit
    assert cli_main(["evaluate", str(tmp_path / "o128"), "--truth", str(half), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["dice_per_patient"] == same["dice_per_patient"]

    jpeg = _copy_tree(data, tmp_path / "jpeg")
    bad = jpeg / "PA" / "PA_1_mask.png"
    mask = cv2.imread(str(bad), cv2.IMREAD_GRAYSCALE)
    mask[mask > 0] = 250
    mask[8, 10] = 255  # two non-zero values, as JPEG leaves them
    cv2.imwrite(str(bad), mask)
    capsys.readouterr()
    assert pipeline_main(["--test-dir", str(jpeg), "--out", str(tmp_path / "oj"), *args]) == 1
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "1 ground-truth mask(s) could not be used" in line[0] and "PA_1_mask.png" in line[0]
    assert "no metrics.json" in line[0] and "Traceback" not in err
    assert not (tmp_path / "oj" / "metrics.json").exists() and (tmp_path / "oj" / "predictions.csv").is_file()
    summary = json.loads((tmp_path / "oj" / "summary.json").read_text())
    assert summary["data"]["ground_truth"]["refused"] == 1 and "not written" in summary["data"]["metrics"]
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "oj" / "predictions.csv", newline=""))}
    assert rows["PA/PA_1.png"]["status"] == "ok" and "not binary" in rows["PA/PA_1.png"]["error"]
    with pytest.raises(SystemExit, match=r"classseg evaluate: .*PA_1_mask.png: mask is not binary") as info:
        cli_main(["evaluate", str(tmp_path / "oj"), "--truth", str(jpeg)])
    assert "\n" not in str(info.value.code)

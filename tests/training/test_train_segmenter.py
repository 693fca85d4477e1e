"""Smoke test of train_segmenter / train-segmenter on a tiny synthetic kaggle_3m-style folder."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from classseg.delivery.postprocess import PostprocessConfig  # noqa: E402
from classseg.models.predict import predict  # noqa: E402
from classseg.training.segmenter import SegmenterConfig, _select, evaluate_segmenter  # noqa: E402


@pytest.fixture(scope="module")
def run(segmenter_cli_run):
    """One 1-epoch CLI run at 32 px (width 0.5 to stay fast) with a given split file (shared, conftest):
    five patients, one test, one val, three train."""
    return segmenter_cli_run


def test_outputs_and_metric_keys(run, capsys):
    _, out, split_file = run
    for name in ("segmenter.keras", "segmenter.card.json", "history.csv", "metrics.json", "metrics.md", "splits.csv",
                 "manifest.json", "training_curves.png", "examples.png", "training.json", "postprocess_selection.csv"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("dice_tumor_slices", "iou_tumor_slices", "hd95_detected_px", "missed_tumor_slices",
                "dice_per_patient", "dice_end_to_end", "threshold_only", "val", "resolution", "accuracy",
                "img_size", "epochs", "seed", "split_file", "weights", "recipe", "normalization", "postprocess_chosen",
                "train_minutes", "machine", "scored_at"):
        assert key in saved, key
    assert saved["weights"] == "none (from scratch)" and saved["img_size"] == 32 and saved["epochs"] == 1
    assert saved["seed"] == 1 and saved["split_file"] == str(split_file)
    assert saved["n_train_slices"] == 12  # fast recipe: every slice of the 3 train patients
    assert saved["recipe"] == "fast" and saved["normalization"] == "patient_percentile"
    assert saved["scored_at"] == "original slice size"
    assert not (out / "backup").exists()  # BackupAndRestore cleans up after a finished run
    assert saved["n_slices"] == 4 and saved["n_tumor_slices"] == 2  # 1 test patient, all its slices
    assert 0.0 <= saved["dice_tumor_slices"] <= 1.0 and 0.0 <= saved["threshold_only"]["dice_end_to_end"] <= 1.0
    assert saved["resolution"] == "original slice size" and "HD95 px" in (out / "metrics.md").read_text()
    assert saved["val"]["tversky_soft"] is not None
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 1 and {"loss", "dice", "val_dice"} <= set(history.columns)
    splits = pd.read_csv(out / "splits.csv").sort_values("patient_id").reset_index(drop=True)
    given = pd.read_csv(split_file).sort_values("patient_id").reset_index(drop=True)
    assert splits.equals(given)  # the given split travels into the run folder unchanged
    assert sorted(splits["split"].value_counts().to_dict().items()) == [("test", 1), ("train", 3), ("val", 1)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == "none (from scratch)" and "environment" in manifest


def test_saved_model_reloads_and_predicts(run):
    import keras

    from classseg.data import discover, load_arrays

    data, out, _ = run
    model = keras.models.load_model(out / "segmenter.keras", safe_mode=True)
    arrays = load_arrays(discover(data).head(3), img_size=32, progress=False)
    from classseg.training.segmenter import model_inputs

    probs = predict(model, model_inputs(arrays, "raw"), batch_size=2)["mask"]
    assert probs.shape == (3, 32, 32, 1) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))


def test_cli_reports_bad_input(run, tmp_path):
    from classseg.cli import main

    data, _, _ = run
    with pytest.raises(SystemExit, match="does not exist"):
        main(["train-segmenter", str(tmp_path / "missing"), "--img-size", "32", "--epochs", "1", "--quiet"])
    with pytest.raises(SystemExit, match="multiple of 16"):
        main(["train-segmenter", str(data), "--img-size", "30"])
    with pytest.raises(SystemExit, match="split file does not exist"):
        main(["train-segmenter", str(data), "--img-size", "32", "--splits", str(tmp_path / "nope.csv"), "--quiet"])


def test_select_tumor_only_or_all():
    frame = pd.DataFrame({"patient_id": list("aabbc"), "split": ["train"] * 4 + ["val"],
                          "tumor": [True, False, True, False, True]})
    assert len(_select(frame, "train", tumor_only=True)) == 2
    assert len(_select(frame, "train", tumor_only=False)) == 4  # --include-negatives
    assert len(_select(frame, "test", tumor_only=False)) == 0


def test_evaluate_segmenter_known_values():
    gt = np.zeros((3, 16, 16, 1), np.uint8)
    gt[0, 4:12, 4:12] = 1  # tumor slice
    gt[1, 2:6, 2:6] = 1  # tumor slice
    probs = gt.astype(np.float32) * 0.9
    probs[0, 7:9, 7:9] = 0.2  # hole inside a correct prediction: fixed by hole filling
    probs[1] = 0.0  # missed tumor
    probs[2, 0, 0] = 0.8  # one-pixel false positive on the empty slice
    res = evaluate_segmenter(probs, gt, np.array(["p", "p", "q"]), SegmenterConfig())
    raw = res["threshold_only"]
    assert res["n_tumor_slices"] == 2 and res["n_slices"] == 3
    assert raw["dice_tumor_slices"] == pytest.approx((2 * 60 / 124 + 0.0) / 2)
    assert res["dice_tumor_slices"] == pytest.approx(0.5)  # post-processed: the delivered masks
    # HD95 over detected slices (hole edge 2 px from the true edge on slice 0); the miss is counted apart
    assert raw["hd95_detected_px"] == pytest.approx(2.0) and raw["missed_tumor_slices"] == 1
    assert raw["hd95_with_miss_penalty_px"] == pytest.approx((2.0 + np.hypot(16, 16)) / 2)
    assert res["hd95_detected_px"] == pytest.approx(0.0)
    assert res["hd95_with_miss_penalty_px"] == pytest.approx(np.hypot(16, 16) / 2)
    assert res["false_positive_slices"] == 1
    assert res["dice_end_to_end"] == pytest.approx(res["dice_tumor_slices"] * 2 / 3)
    # slice detection of the delivered masks: tp = slice 0, fn = slice 1, fp = slice 2
    assert (res["tp"], res["fn"], res["fp"], res["tn"]) == (1, 1, 1, 0) and res["precision"] == 0.5
    assert [p["patient_id"] for p in res["per_patient"]] == ["p", "q"]


def test_evaluate_segmenter_scores_at_the_original_size():
    """A model trained at 16 px is scored against the 32 px ground truth: distances in original pixels."""
    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 8:24] = 1
    probs = np.zeros((1, 16, 16, 1), np.float32)
    probs[0, 4:12, 5:13] = 0.9  # one model pixel = two original pixels to the right
    config = SegmenterConfig(postprocess=PostprocessConfig(closing=False, fill_holes=False))
    res = evaluate_segmenter(probs, probs.round().astype(np.uint8), np.array(["p"]), config, truths=[truth])
    assert res["hd95_detected_px"] == pytest.approx(2.0)  # 1 px at 16, 2 px at the original 32
    assert res["dice_tumor_slices"] == pytest.approx(2 * 16 * 14 / (2 * 256))

"""Tests of the gated Class-Seg pipeline (classseg.pipeline) with tiny hand-weighted models.

The classifier looks at the brightest pixel: P(tumor) = softmax(0.1 * (max - 180)) -> a 250 spot
gives ~1.0, a 140 spot ~0.02, a dark slice ~0. The segmenter marks pixels brighter than ~127
(sigmoid(20 * (v / 255 - 0.5))). So a dark slice with a 140 "grey blob" is stopped by the gate
but would be segmented if the segmenter ran on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np
import pytest

from classseg import pipeline as pl
from classseg.pipeline import ClassSegPipeline, SlicePrediction, find_inputs, main, sidecar_threshold

SIZE = 32


def tiny_classifier(size: int = SIZE) -> keras.Model:
    """2-class softmax on the brightest pixel: logit(tumor) - logit(none) = 0.1 * (max - 180)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalMaxPooling2D()(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="class")(x)
    model = keras.Model(inputs, outputs, name="tiny_classifier")
    kernel = np.zeros((3, 2), np.float32)
    kernel[:, 1] = 0.1 / 3
    model.get_layer("class").set_weights([kernel, np.array([0.0, -0.1 * 180], np.float32)])
    return model


def tiny_segmenter(size: int = SIZE) -> keras.Model:
    """Sigmoid (H, W, 1): pixel is tumor when its mean intensity > 127.5."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    model = keras.Model(inputs, outputs, name="tiny_segmenter")
    model.get_layer("mask").set_weights([np.full((1, 1, 3, 1), 20 / 3, np.float32), np.array([-10.0], np.float32)])
    return model


def slice_image(h: int, w: int, spot: int | None = None, box: tuple[int, int, int, int] = (8, 8, 24, 24)) -> np.ndarray:
    """Dark uint8 RGB slice (value 20) with an optional square of intensity ``spot``."""
    image = np.full((h, w, 3), 20, np.uint8)
    if spot is not None:
        y0, x0, y1, x1 = box
        image[y0:y1, x0:x1] = spot
    return image


def box_mask(h: int, w: int, box: tuple[int, int, int, int] = (8, 8, 24, 24)) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def models() -> tuple[keras.Model, keras.Model]:
    return tiny_classifier(), tiny_segmenter()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory, models) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {"classifier": folder / "classifier.keras", "segmenter": folder / "segmenter.keras"}
    models[0].save(paths["classifier"])
    models[1].save(paths["segmenter"])
    return paths


def listing(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_gates_and_returns_masks_at_original_size(models) -> None:
    pipe = ClassSegPipeline(*models, threshold=0.5, batch_size=2)
    calls: list[int] = []
    runner = pipe._segmenter
    pipe._segmenter = type("Counting", (), {"input_size": runner.input_size,
                                            "__call__": lambda self, x: calls.append(len(x)) or runner(x)})()
    images = [slice_image(40, 48, 250), slice_image(40, 48, 140), slice_image(SIZE, SIZE)]
    preds = pipe.predict(images)
    assert all(isinstance(p, SlicePrediction) for p in preds)
    assert [p.verdict for p in preds] == ["tumor", "no_tumor", "no_tumor"]
    assert [p.segmented for p in preds] == [True, False, False]
    assert sum(calls) == 1  # the segmenter saw only the slice the gate passed
    assert preds[0].tumor_probability == pytest.approx(1 / (1 + np.exp(-7.0)), abs=1e-4)
    assert preds[1].tumor_probability == pytest.approx(1 / (1 + np.exp(4.0)), abs=1e-4)
    tumor = preds[0].mask
    assert tumor.shape == (40, 48) and tumor.dtype == np.uint8 and set(np.unique(tumor)) <= {0, 1}
    truth = box_mask(40, 48)
    dice = 2 * (tumor & truth).sum() / (tumor.sum() + truth.sum())
    assert dice > 0.9 and preds[0].tumor_area_px == int(tumor.sum())
    assert preds[1].mask.shape == (40, 48) and preds[1].tumor_area_px == 0 and not preds[1].mask.any()

    calls.clear()
    everything = pipe.predict(images, segment_all=True)
    assert sum(calls) == 3
    assert [p.verdict for p in everything] == ["tumor", "no_tumor", "no_tumor"]  # verdict stays the gate's
    assert everything[1].segmented and everything[1].tumor_area_px > 100  # grey blob segmented when not gated
    assert not everything[2].mask.any()


def test_threshold_override_and_validation(models) -> None:
    preds = ClassSegPipeline(*models, threshold=0.01).predict([slice_image(SIZE, SIZE, 140)])
    assert preds[0].verdict == "tumor" and preds[0].segmented
    with pytest.raises(ValueError, match="threshold"):
        ClassSegPipeline(*models, threshold=1.5)
    with pytest.raises(ValueError, match="uint8"):
        ClassSegPipeline(*models).predict([np.zeros((8, 8, 3), np.float32)])
    assert ClassSegPipeline(*models).predict([]) == []


def test_sidecar_threshold(tmp_path: Path, model_files) -> None:
    model = tmp_path / "classifier.keras"
    model.write_bytes(model_files["classifier"].read_bytes())
    assert sidecar_threshold(model) == (None, None)
    (tmp_path / "manifest.json").write_text(json.dumps({"gate_threshold": 0.3}))
    assert sidecar_threshold(model) == (0.3, tmp_path / "manifest.json")
    (tmp_path / "classifier.json").write_text(json.dumps({"gate_threshold": 0.01}))
    assert sidecar_threshold(model)[0] == 0.01  # <model>.json wins over the folder manifest
    pipe = ClassSegPipeline(model, model_files["segmenter"])
    assert pipe.threshold == 0.01 and pipe.threshold_source.endswith("classifier.json")
    assert pipe.predict([slice_image(SIZE, SIZE, 140)])[0].verdict == "tumor"
    assert ClassSegPipeline(model, model_files["segmenter"], threshold=0.5).threshold == 0.5


def test_threshold_from_train_classifiers_results(tmp_path: Path) -> None:
    gate = tmp_path / "runs" / "mobilenetv2" / "classifier.keras"
    gate.parent.mkdir(parents=True)
    gate.write_bytes(b"")
    results = {"gate": {"model": str(gate), "threshold": 0.27}}
    (tmp_path / "runs" / "results.json").write_text(json.dumps(results))
    assert sidecar_threshold(gate) == (0.27, tmp_path / "runs" / "results.json")
    other = tmp_path / "runs" / "resnet50" / "classifier.keras"
    assert sidecar_threshold(other) == (None, None)  # not the selected gate


def test_joint_model_gates_on_its_class_output(models) -> None:
    inputs = keras.Input((SIZE, SIZE, 3))
    joint = keras.Model(inputs, {"class": models[0](inputs), "mask": models[1](inputs)}, name="tiny_joint")
    pipe = ClassSegPipeline.from_joint(joint, threshold=0.5)
    preds = pipe.predict([slice_image(SIZE, SIZE, 250), slice_image(SIZE, SIZE, 140)])
    assert [p.verdict for p in preds] == ["tumor", "no_tumor"]
    assert preds[0].tumor_area_px > 200 and preds[1].tumor_area_px == 0
    assert pipe.predict([slice_image(SIZE, SIZE, 140)], segment_all=True)[0].tumor_area_px > 200


def test_find_inputs_order_masks_and_skips(tmp_path: Path) -> None:
    for name in ("P2/P2_10.tif", "P2/P2_2.tif", "P2/P2_2_mask.tif", "P1/sub/P1_1.PNG", "P1/P1_3.jpeg",
                 "loose.tif", "P3/orphan_mask.tif"):
        write_rgb(tmp_path / name, slice_image(8, 8))
    (tmp_path / "P1" / "notes.txt").write_text("not an image")
    inputs, skipped = find_inputs(tmp_path)
    # patient = the folder holding the slice by its path relative to the test folder (issue 20: a nested
    # folder is not named after its last component only), the walker shared with classseg.data.discover
    assert [s.relative.as_posix() for s in inputs] == ["P1/P1_3.jpeg", "P1/sub/P1_1.PNG", "P2/P2_2.tif",
                                                       "P2/P2_10.tif", "loose.tif"]
    assert [s.patient for s in inputs] == ["P1", "P1/sub", "P2", "P2", tmp_path.name]
    assert inputs[2].mask_path == tmp_path / "P2/P2_2_mask.tif" and inputs[3].mask_path is None
    assert {s["path"] for s in skipped} == {"P1/notes.txt", "P3/orphan_mask.tif"}


GT_BOX = (8, 8, 24, 28)  # 4 columns wider than the bright square: Dice = 2 * 256 / (256 + 320) = 0.889


@pytest.fixture()
def test_dir(tmp_path: Path) -> Path:
    """Two patients: P1 = tumor slice (+GT), grey-blob slice (+empty GT), corrupt TIFF, notes.txt;
    P2 = a 40x48 PNG tumor slice without ground truth and a dark slice (+empty GT)."""
    root = tmp_path / "data"
    write_rgb(root / "P1/P1_1.tif", slice_image(SIZE, SIZE, 250))
    cv2.imwrite(str(root / "P1/P1_1_mask.tif"), box_mask(SIZE, SIZE, GT_BOX) * 255)
    write_rgb(root / "P1/P1_2.tif", slice_image(SIZE, SIZE, 140))
    cv2.imwrite(str(root / "P1/P1_2_mask.tif"), np.zeros((SIZE, SIZE), np.uint8))
    (root / "P1/P1_3.tif").write_bytes(b"II*\x00 this is not really a TIFF")
    (root / "P1/notes.txt").write_text("scanner notes")
    write_rgb(root / "P2/P2_1.png", slice_image(40, 48, 250))
    write_rgb(root / "P2/P2_2.png", slice_image(SIZE, SIZE))
    cv2.imwrite(str(root / "P2/P2_2_mask.png"), np.zeros((SIZE, SIZE), np.uint8))
    return root


def cli(test_dir: Path, out: Path, model_files, *extra: str) -> int:
    return main(["--test-dir", str(test_dir), "--out", str(out), "--classifier", str(model_files["classifier"]),
                 "--segmenter", str(model_files["segmenter"]), "--threshold", "0.5", *extra])


def test_cli_writes_predictions_masks_overlays_and_metrics(tmp_path: Path, test_dir: Path, model_files) -> None:
    before = listing(test_dir)
    out = tmp_path / "out"
    assert cli(test_dir, out, model_files) == 0
    assert listing(test_dir) == before  # nothing written into the test folder

    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == pl.PREDICTION_COLUMNS
    assert [r["image"] for r in rows] == ["P1/P1_1.tif", "P1/P1_2.tif", "P1/P1_3.tif", "P2/P2_1.png", "P2/P2_2.png"]
    by_image = {r["image"]: r for r in rows}
    assert [r["status"] for r in rows].count("error") == 1
    bad = by_image["P1/P1_3.tif"]
    assert bad["status"] == "error" and "P1_3.tif" in bad["error"] and bad["mask_path"] == ""
    assert by_image["P1/P1_1.tif"]["gate_verdict"] == "tumor" and by_image["P1/P1_1.tif"]["segmented"] == "yes"
    assert by_image["P1/P1_1.tif"]["final_call"] == "tumor" and by_image["P1/P1_1.tif"]["patient"] == "P1"
    assert by_image["P1/P1_2.tif"]["gate_verdict"] == "no_tumor" and by_image["P1/P1_2.tif"]["mask_area_px"] == "0"
    assert by_image["P1/P1_2.tif"]["segmented"] == "no" and by_image["P1/P1_2.tif"]["note"] == ""
    assert [s["path"] for s in read_csv(out / "skipped.csv")] == ["P1/notes.txt"]

    big = by_image["P2/P2_1.png"]
    mask = cv2.imread(str(out / big["mask_path"]), cv2.IMREAD_UNCHANGED)
    assert big["mask_path"] == "masks/P2/P2_1.png" and mask.shape == (40, 48)
    assert set(np.unique(mask)) == {0, 255} and int(big["mask_area_px"]) == int((mask > 0).sum())
    overlay = cv2.imread(str(out / by_image["P1/P1_1.tif"]["overlay_path"]))
    assert overlay.shape == (SIZE, SIZE, 3)
    red = (overlay[..., 2] == 255) & (overlay[..., 1] == 0)
    green = (overlay[..., 1] == 255) & (overlay[..., 2] == 0)
    assert red.any() and green.any()  # prediction in red, ground truth in green
    assert green[:, 27].sum() >= 14 and not red[:, 27].any()  # the truth's right edge lies beyond the prediction

    metrics = json.loads((out / "metrics.json").read_text())
    gated, every = metrics["gated"], metrics["segment_all"]
    assert gated["n_slices"] == 3 and gated["n_tumor_slices"] == 1  # P1_1, P1_2, P2_2 have ground truth
    assert gated["accuracy"] == 1.0 and gated["dice_tumor_slices"] == pytest.approx(2 * 256 / (256 + 320))
    assert gated["dice_end_to_end"] == pytest.approx((2 * 256 / 576 + 2) / 3)  # empty vs empty counts as 1
    assert every["dice_tumor_slices"] == pytest.approx(gated["dice_tumor_slices"])  # same segmenter output
    assert every["dice_end_to_end"] == pytest.approx((2 * 256 / 576 + 1) / 3)  # the grey blob: a false positive
    assert (every["tp"], every["fp"], every["tn"]) == (1, 1, 1) and every["precision"] == 0.5  # slices, not pixels
    assert (gated["gate_tp"], gated["gate_fp"], gated["gate_tn"]) == (1, 0, 2) and every["gate_tp"] is None
    assert gated["resolution"] == every["resolution"] == "original slice size"
    effect = metrics["gating_effect"]
    assert effect["non_tumor_slices_with_mask_gated"] == 0
    assert effect["non_tumor_slices_with_mask_segment_all"] == 1
    assert effect["segmenter_calls_gated"] == 1 and effect["segmenter_calls_segment_all"] == 3
    assert metrics["models"]["threshold"] == 0.5 and metrics["timing"]["gated"]["ms_per_slice"] > 0
    assert "Segment every slice" in (out / "metrics.md").read_text()
    assert "HD95 px" in (out / "metrics.md").read_text()


def test_cli_joint_model(tmp_path: Path, test_dir: Path, models) -> None:
    inputs = keras.Input((SIZE, SIZE, 3))
    joint = keras.Model(inputs, {"class": models[0](inputs), "mask": models[1](inputs)}, name="tiny_joint")
    joint.save(tmp_path / "joint.keras")
    out = tmp_path / "out"
    assert main(["--test-dir", str(test_dir), "--out", str(out), "--joint", str(tmp_path / "joint.keras")]) == 0
    verdicts = {r["image"]: r["gate_verdict"] for r in read_csv(out / "predictions.csv")}
    assert verdicts["P1/P1_1.tif"] == "tumor" and verdicts["P1/P1_2.tif"] == "no_tumor"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gating_effect"]["non_tumor_slices_with_mask_segment_all"] == 1
    assert metrics["gated"]["dice_tumor_slices"] == pytest.approx(2 * 256 / 576) and "joint" in metrics["models"]
    with pytest.raises(SystemExit, match="either"):
        main(["--test-dir", str(test_dir), "--joint", str(tmp_path / "joint.keras"), "--classifier", "x.keras"])


def test_cli_no_overlays_and_no_ground_truth(tmp_path: Path, model_files) -> None:
    root = tmp_path / "data"
    write_rgb(root / "a.png", slice_image(SIZE, SIZE, 250))
    out = tmp_path / "out"
    assert cli(root, out, model_files, "--no-overlays") == 0
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 1 and rows[0]["overlay_path"] == "" and not (out / "overlays").exists()
    assert not (out / "metrics.json").exists() and (out / "summary.json").exists()


def test_cli_all_corrupt_exits_nonzero(tmp_path: Path, model_files) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "x_1.tif").write_bytes(b"garbage")
    (root / "x_2.png").write_bytes(b"")
    out = tmp_path / "out"
    assert cli(root, out, model_files) != 0
    assert [r["status"] for r in read_csv(out / "predictions.csv")] == ["error", "error"]


def test_cli_refuses_out_inside_test_dir(tmp_path: Path, test_dir: Path, model_files) -> None:
    before = listing(test_dir)
    with pytest.raises(SystemExit, match="inside"):
        cli(test_dir, test_dir / "P1" / "results", model_files)
    assert listing(test_dir) == before


def test_cli_missing_default_models_says_how_to_train(tmp_path: Path, test_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pl.MODELS_ENV, str(tmp_path / "no_models"))
    with pytest.raises(SystemExit, match="train-classifiers"):
        main(["--test-dir", str(test_dir), "--out", str(tmp_path / "out")])


def test_predict_command_alias(test_dir: Path, tmp_path: Path) -> None:
    from classseg.commands import predict

    parser = argparse.ArgumentParser()
    predict.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", "--test-dir", str(test_dir), "--backend", "onnx", "--no-overlays"])
    assert args.func is predict.run and args.backend == "onnx" and args.no_overlays


def test_onnx_backend_matches_keras(tmp_path: Path, model_files) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    images = [slice_image(40, 48, 250), slice_image(SIZE, SIZE, 140), slice_image(SIZE, SIZE, 200)]
    ref = ClassSegPipeline(model_files["classifier"], model_files["segmenter"], threshold=0.5).infer(images, True)
    pipe = ClassSegPipeline(model_files["classifier"], model_files["segmenter"], threshold=0.5, backend="onnx",
                            onnx_dir=tmp_path / "onnx")
    assert isinstance(pipe._classifier, pl.OnnxRunner) and (tmp_path / "onnx" / "classifier.onnx").exists()
    assert pipe.describe()["segmenter_onnx"] == str(tmp_path / "onnx" / "segmenter.onnx")
    got = pipe.infer(images, segment_all=True)
    np.testing.assert_allclose(got.tumor_probability, ref.tumor_probability, atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(got.masks, ref.masks, strict=True))


# ------------------------------------------------------------------------------------------------
# Model cards (issue 10): input size / normalisation, thresholds, post-processing, gate rule
# ------------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for a runner: records every batch it is given, answers with the real runner."""

    def __init__(self, runner) -> None:
        self.runner, self.input_size, self.seen = runner, runner.input_size, []

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.seen.append(np.array(x))
        return self.runner(x)


def test_card_standardises_each_patient_like_training(models) -> None:
    from classseg.data.standardize import standardize_groups
    from classseg.models.card import ModelCard

    cards = {"segmenter": ModelCard(role="segmenter", img_size=SIZE, normalization="patient_zscore")}
    pipe = ClassSegPipeline(*models, threshold=0.5, batch_size=2, cards=cards)
    recorder = Recorder(pipe._segmenter)
    pipe._segmenter = recorder
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(3)]
    images.append(slice_image(SIZE, SIZE, 250))
    groups = ["A", "A", "B", "A"]
    pipe.infer(images, segment_all=True, groups=groups)
    fed = np.concatenate(recorder.seen)  # batches of 2: the statistics still span the whole patient
    resized = np.stack([pl.resize_to(im, (SIZE, SIZE)) for im in images])
    np.testing.assert_allclose(fed, standardize_groups(resized, groups), atol=1e-5)
    assert not np.allclose(fed[:2], standardize_groups(resized[:2], ["A", "A"]))  # not per batch
    assert pipe.describe()["inputs"]["segmenter"] == {"img_size": [SIZE, SIZE], "normalization": "patient_zscore"}
    assert pipe.describe()["inputs"]["classifier"]["normalization"] == "raw"  # no card: raw pixels


def gate_rule_slices() -> list[np.ndarray]:
    """a: tumor + mask; b: one bright pixel (gate tumor, mask removed by the 4-px component filter);
    c: grey blob (gate no tumor, mask when segmented); d: dark (nothing)."""
    single = slice_image(SIZE, SIZE)
    single[5, 5] = 250
    return [slice_image(SIZE, SIZE, 250), single, slice_image(SIZE, SIZE, 140), slice_image(SIZE, SIZE)]


@pytest.mark.parametrize("rule, final, delivered, segmented", [
    ("gate", [True, True, False, False], [True, False, False, False], [True, True, False, False]),
    ("gate_and_mask", [True, False, False, False], [True, False, False, False], [True, True, False, False]),
    ("mask", [True, False, True, False], [True, False, True, False], [True, True, True, True]),
])
def test_gate_rule(models, rule, final, delivered, segmented) -> None:
    from classseg.delivery.postprocess import PostprocessConfig
    from classseg.models.card import ModelCard

    cards = {"classifier": ModelCard(role="gate", img_size=SIZE, threshold=0.5, gate_rule=rule)}
    pipe = ClassSegPipeline(*models, postprocess=PostprocessConfig(min_component_px=4), cards=cards)
    assert pipe.gate_rule == rule and pipe.threshold_source == "model card"
    result = pipe.infer(gate_rule_slices())
    assert list(result.passed) == [True, True, False, False]  # the gate's own verdict never changes
    assert list(result.final_call) == final
    assert [bool(m.any()) for m in result.delivered] == delivered
    assert list(result.segmented) == segmented


def test_cli_follows_the_cards_beside_the_models(tmp_path: Path, models) -> None:
    from classseg.models.card import ModelCard, write_card

    folder = tmp_path / "models"
    folder.mkdir()
    models[0].save(folder / "classifier.keras")
    models[1].save(folder / "segmenter.keras")
    write_card(folder / "classifier.keras", ModelCard(role="gate", img_size=SIZE, threshold=0.6, gate_rule="gate"))
    write_card(folder / "segmenter.keras", ModelCard(role="segmenter", img_size=SIZE, threshold=0.5,
                                                     postprocess={"min_component_px": 4}))
    root = tmp_path / "data"
    for name, image in zip(("a", "b", "c", "d"), gate_rule_slices(), strict=True):
        write_rgb(root / "P1" / f"P1_{name}.png", image)
    out = tmp_path / "out"
    assert main(["--test-dir", str(root), "--out", str(out), "--classifier", str(folder / "classifier.keras"),
                 "--segmenter", str(folder / "segmenter.keras")]) == 0
    rows = {r["image"]: r for r in read_csv(out / "predictions.csv")}
    b = rows["P1/P1_b.png"]
    assert (b["gate_verdict"], b["final_call"], b["mask_area_px"], b["segmented"]) == ("tumor", "tumor", "0", "yes")
    assert b["note"] == "verdict tumor, empty mask"
    c = rows["P1/P1_c.png"]
    assert (c["gate_verdict"], c["segmented"], c["mask_area_px"], c["note"]) == ("no_tumor", "no", "0", "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["threshold"] == 0.6 and summary["models"]["threshold_source"] == "model card"
    assert summary["models"]["postprocess"]["min_component_px"] == 4
    assert summary["model_info"]["segmenter"]["card"]["role"] == "segmenter"


def test_sidecar_threshold_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: results.json named the gate by a path relative to the working directory of the training run."""
    run = tmp_path / "runs" / "phase1"
    gate = run / "mobilenetv2" / "classifier.keras"
    gate.parent.mkdir(parents=True)
    gate.write_bytes(b"")
    (run / "results.json").write_text(json.dumps({"gate": {"model": "mobilenetv2/classifier.keras",
                                                           "threshold": 0.27}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert sidecar_threshold(gate) == (0.27, run / "results.json")
    from classseg.training.classifiers import gate_model_path

    assert gate_model_path(run / "results.json") == gate


def test_cli_standardises_each_patient_folder_as_one_set(tmp_path: Path, models,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI: a card asking for patient_zscore gets every readable slice of a patient folder at once."""
    from classseg.data.standardize import standardize_groups
    from classseg.models.card import ModelCard, write_card
    from classseg.pipeline import models as pm

    folder = tmp_path / "models"
    folder.mkdir()
    models[0].save(folder / "classifier.keras")
    models[1].save(folder / "segmenter.keras")
    write_card(folder / "segmenter.keras", ModelCard(role="segmenter", img_size=SIZE, normalization="patient_zscore"))
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for patient, n in (("PA", 3), ("PB", 2)):
        for k in range(n):
            write_rgb(root / patient / f"{patient}_{k}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    (root / "PA" / "PA_9.png").write_bytes(b"not a png")  # unreadable: not part of PA's statistics
    for k in range(2):  # loose images in the test folder itself: no patient, each standardised on its own
        write_rgb(root / f"loose_{k}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    calls = []
    real = pm.prepare_input

    def spy(images, normalization, groups=None, *args, **kwargs):
        out = real(images, normalization, groups, *args, **kwargs)
        calls.append((normalization, list(groups), np.array(images), out))
        return out

    monkeypatch.setattr(pm, "prepare_input", spy)
    out = tmp_path / "out"
    assert main(["--test-dir", str(root), "--out", str(out), "--classifier", str(folder / "classifier.keras"),
                 "--segmenter", str(folder / "segmenter.keras"), "--threshold", "0.0"]) == 0
    zscore = [c for c in calls if c[0] == "patient_zscore"]
    # one call per patient folder; the loose images (patient "data", the folder's name) each on its own stats
    assert [groups for _, groups, _, _ in zscore] == [[None, None], ["PA"] * 3, ["PB"] * 2]
    for _, groups, images, fed in zscore:
        np.testing.assert_allclose(fed, standardize_groups(images, groups))
    assert all(c[0] == "raw" for c in calls if c not in zscore)  # the classifier has no card: raw pixels


def test_cli_applies_the_cards_tta_and_3d_filter_and_notes_it(tmp_path: Path, models) -> None:
    """Issue 17: a segmenter card with test-time flips and the per-patient 3D filter; the slice whose only
    blob is a small island away from the patient's tumor is emptied, and predictions.csv says so."""
    from classseg.models.card import ModelCard, write_card

    folder = tmp_path / "models"
    folder.mkdir()
    models[0].save(folder / "classifier.keras")
    models[1].save(folder / "segmenter.keras")
    write_card(folder / "classifier.keras", ModelCard(role="gate", img_size=SIZE, gate_rule="mask"))
    write_card(folder / "segmenter.keras", ModelCard(
        role="segmenter", img_size=SIZE, threshold=0.5, postprocess={"closing": False, "fill_holes": False},
        tta="flips", postprocess_3d={"min_fraction": 0.2, "connectivity": 26}))
    root = tmp_path / "data"
    for k in range(1, 4):  # a 16x16 tumor on slices 1-3
        write_rgb(root / "P1" / f"P1_{k}.png", slice_image(SIZE, SIZE, 250))
    write_rgb(root / "P1" / "P1_4.png", slice_image(SIZE, SIZE))
    island = slice_image(SIZE, SIZE, 250, box=(2, 2, 5, 5))  # 9 px, far below 20 % of 768 voxels
    write_rgb(root / "P1" / "P1_5.png", island)
    write_rgb(root / "loose.png", island)  # a lone slice: no patient volume, so the filter leaves it
    out = tmp_path / "out"
    assert main(["--test-dir", str(root), "--out", str(out), "--classifier", str(folder / "classifier.keras"),
                 "--segmenter", str(folder / "segmenter.keras")]) == 0
    rows = {r["image"]: r for r in read_csv(out / "predictions.csv")}
    assert [rows[f"P1/P1_{k}.png"]["mask_area_px"] for k in range(1, 6)] == ["256", "256", "256", "0", "0"]
    assert rows["P1/P1_5.png"]["note"] == "verdict tumor, empty mask; 3D filter removed the mask"
    assert rows["P1/P1_5.png"]["final_call"] == "no_tumor"
    assert rows["loose.png"]["mask_area_px"] == "9" and rows["loose.png"]["note"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["tta"]["segmenter"] == "flips"
    assert summary["models"]["postprocess_3d"] == {"min_fraction": 0.2, "connectivity": 26}


def test_lone_slice_note_when_the_card_normalises_per_patient(models) -> None:
    from classseg.models.card import ModelCard

    cards = {"segmenter": ModelCard(role="segmenter", img_size=SIZE, normalization="patient_percentile")}
    pipe = ClassSegPipeline(*models, threshold=0.5, cards=cards)
    result = pipe.infer([slice_image(SIZE, SIZE, 250)] * 3, groups=["A", "A", None])
    assert result.notes == ["", "", "lone slice: normalised on its own statistics"]

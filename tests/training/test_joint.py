"""Joint multi-task model (seed 000): architecture, evaluation, train_joint smoke run and CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_patient

from classseg.delivery.postprocess import PostprocessConfig
from classseg.models.predict import predict, tumor_probability
from classseg.training.joint import JointConfig, evaluate_joint, train_joint

RESNET50_NOTOP_PARAMS = 23_587_712  # keras.applications.ResNet50(include_top=False)


def _decoder_params(filters=(256, 128, 64, 32, 16), skips=(1024, 512, 256, 64, 0), bottleneck=2048) -> int:
    """Hand count: per stage ConvT 2x2 (+bias), 2 x [Conv3x3 no bias + BN (4 per channel)]; then 1x1 sigmoid conv."""
    total, c_in = 0, bottleneck
    for f, s in zip(filters, skips, strict=True):
        total += c_in * f * 4 + f  # Conv2DTranspose
        total += (f + s) * f * 9 + 4 * f  # conv a + BN
        total += f * f * 9 + 4 * f  # conv b + BN
        c_in = f
    return total + c_in + 1  # mask head


def test_joint_model_224_four_classes() -> None:
    from classseg.models.backbones import CaffePreprocess
    from classseg.models.joint import build_joint_model

    model = build_joint_model((224, 224, 3), weights=None, num_classes=4)
    assert model.output["mask"].shape == (None, 224, 224, 1)
    assert model.output["class"].shape == (None, 4)
    assert model.get_layer("conv5_block3_out").output.shape == (None, 7, 7, 2048)  # stage 5 bottleneck
    assert isinstance(model.get_layer("preprocess"), CaffePreprocess)
    assert model.get_layer("class_dropout").rate == 0.5
    head = 2048 * 4 + 4
    assert model.count_params() == RESNET50_NOTOP_PARAMS + _decoder_params() + head


def test_joint_model_64_multiscale_predicts() -> None:
    from classseg.models.joint import build_joint_model

    model = build_joint_model((64, 64, 3), weights=None, multiscale_head=True)
    assert model.get_layer("class_gap_concat").output.shape == (None, 256 + 512 + 1024 + 2048)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    out = predict(model, images, batch_size=2)
    tumor_prob, mask_prob = tumor_probability(out["class"]), out["mask"][..., 0]
    assert tumor_prob.shape == (3,) and mask_prob.shape == (3, 64, 64)
    assert np.all((tumor_prob >= 0) & (tumor_prob <= 1)) and np.all((mask_prob >= 0) & (mask_prob <= 1))
    probs = np.asarray(model(images.astype(np.float32), training=False)["class"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Random weights put P(tumor) far in the softmax tail (~1e-6): its relative round-off is the logit's
    # absolute round-off, which changes with the batch size (here 3 vs 2) and the CPU's kernels (~2e-5
    # measured). Compare relatively, with an absolute slack only far below the values' scale.
    np.testing.assert_allclose(tumor_prob, probs[:, 1], rtol=1e-3, atol=1e-3 * float(np.abs(probs[:, 1]).max()))


def test_joint_model_rejects_bad_sizes_and_offline_imagenet(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    from classseg.models.joint import build_joint_model

    with pytest.raises(ValueError, match="multiples of 32"):
        build_joint_model((100, 100, 3), weights=None)

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="--weights none"):
        build_joint_model((64, 64, 3), weights="imagenet")


def test_joint_batches_derive_class_from_mask() -> None:
    from classseg.data.sequence import ArraySequence

    images = np.zeros((3, 32, 32, 3), np.uint8)
    masks = np.zeros((3, 32, 32, 1), np.uint8)
    masks[1, 5:9, 5:9] = 1
    x, y = ArraySequence(images, masks, batch_size=3, target="both")[0]
    np.testing.assert_array_equal(y["class"], [[1, 0], [0, 1], [1, 0]])
    assert y["mask"].shape == (3, 32, 32, 1) and x.dtype.name == "float32"


def test_evaluate_joint_known_values() -> None:
    # Slices 0, 1 tumor (8x8 square), 2, 3 empty. The mask head is perfect except a 1-px hole in slice 0
    # (closed by post-processing) and a false-positive square on slice 2, which the class output gates out.
    gt = np.zeros((4, 16, 16, 1), np.uint8)
    gt[:2, 4:12, 4:12] = 1
    prob = gt[..., 0].astype(np.float32).copy()
    prob[0, 7, 7] = 0.0
    prob[2, 4:12, 4:12] = 0.9
    tumor_prob = np.array([0.9, 0.8, 0.1, 0.3])
    m = evaluate_joint(tumor_prob, prob, np.array([1, 1, 0, 0]), gt, np.array(["A", "A", "B", "B"]),
                       JointConfig(weights=None, img_size=64))
    assert m["gate_accuracy"] == 1.0 and m["gate_sensitivity"] == 1.0 and m["gate_specificity"] == 1.0
    assert m["gate_auc"] == 1.0 and m["gate_threshold"] == 0.5
    # delivered masks: both tumor slices have a mask, the false positive on slice 2 is gated out
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 0, 2, 0) and m["precision"] == 1.0
    assert m["dice_tumor_slices"] == pytest.approx(1.0)  # tumor slices, after closing / hole filling
    assert m["dice_end_to_end"] == pytest.approx(1.0)  # slice 2 emptied by the gate
    assert m["dice_per_patient"] == pytest.approx(1.0)
    head = m["segment_all"]  # the mask head alone on every slice
    assert head["dice_end_to_end"] == pytest.approx(0.75)  # [1, 1, 0 (false positive), 1]
    assert head["dice_per_patient"] == pytest.approx(0.5)  # A = 1, B = 0
    assert head["false_positive_slices"] == 1 and head["fp"] == 1 and head["precision"] == pytest.approx(2 / 3)
    assert m["threshold_only"]["dice_tumor_slices"] == pytest.approx((126 / 127 + 1.0) / 2)  # hole: 2*63/(63+64)
    assert m["false_positive_slices"] == 0


def test_evaluate_joint_precision_is_the_slice_precision() -> None:
    """Defect: the joint metrics' ``precision`` was the pixel precision of the segmentation report."""
    gt = np.zeros((3, 16, 16, 1), np.uint8)
    gt[0, 4:12, 4:12] = 1
    prob = np.zeros((3, 16, 16), np.float32)
    prob[0, 4:12, 4:8] = 0.9  # half the tumor: pixel precision 1.0
    prob[1, 0:4, 0:4] = 0.9  # false-positive slice, passed by the class output
    m = evaluate_joint(np.array([0.9, 0.9, 0.1]), prob, np.array([1, 0, 0]), gt, np.array(["A", "A", "A"]),
                       JointConfig(weights=None, img_size=64))
    assert m["pixel_precision"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(m["tp"] / (m["tp"] + m["fp"])) == pytest.approx(0.5)


def test_evaluate_joint_scores_at_the_original_size() -> None:
    """Defect: the joint model was scored at its training size (HD95 in model pixels, not the slice's)."""
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 16:48] = 1
    mask_prob = np.zeros((1, 32, 32), np.float32)
    mask_prob[0, 8:24, 9:25] = 0.9  # one model pixel to the right = two original pixels
    config = JointConfig(weights=None, img_size=32, postprocess=PostprocessConfig(closing=False, fill_holes=False))
    m = evaluate_joint(np.array([0.9]), mask_prob, np.array([1]), mask_prob[..., None].round(), np.array(["A"]),
                       config, truths=[truth])
    assert m["hd95_detected_px"] == pytest.approx(2.0) and m["resolution"] == "original slice size"


@pytest.fixture
def tiny_joint_tree(tmp_path: Path) -> Path:
    root = tmp_path / "kaggle_3m"
    for k in range(4):
        write_patient(root, f"TCGA_AA_{k:04d}_20000101", n_slices=4, size=64, tumor_slices=(2, 3), seed=k)
    return root


def test_train_joint_smoke(tiny_joint_tree: Path, tmp_path: Path, caplog) -> None:
    import keras

    from classseg import data as cdata
    from classseg.evaluation.classification import classification_metrics

    out = tmp_path / "run"
    (tiny_joint_tree / "TCGA_AA_0000_20000101" / "TCGA_AA_0000_20000101_9.tif").write_bytes(b"corrupt")
    config = JointConfig(weights=None, img_size=64, epochs=1, batch_size=8, schedule="dynamic", infer_batch=4,
                         run_eagerly=True)
    returned = train_joint(config, tiny_joint_tree, out_dir=out, progress=False)
    assert "skipped 1 file(s), not used for training" in caplog.text and "_9.tif" in caplog.text  # issue 13

    for name in ("joint.keras", "history.csv", "metrics.json", "metrics.md", "training_curves.png", "splits.csv",
                 "manifest.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == returned["accuracy"] and saved["dice_end_to_end"] == returned["dice_end_to_end"]
    assert not (out / "best.weights.h5").exists()  # training checkpoint removed once joint.keras is written
    for key in ("accuracy", "dice_tumor_slices", "dice_per_patient", "sensitivity", "specificity", "gate_auc",
                "f1_macro", "dice_end_to_end", "hd95_detected_px", "segment_all", "params", "ms_per_slice",
                "weights", "img_size", "epochs", "schedule", "seed",
                "splits"):
        assert key in saved, key
    assert saved["weights"] == "none (random init)" and saved["img_size"] == 64 and saved["epochs"] == 1
    assert saved["schedule"] == "dynamic" and saved["kind"] == "joint" and saved["ms_per_slice"] > 0
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 1 and history.loc[0, "w_cls"] == 0.0 and history.loc[0, "w_seg"] == 1.5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "joint" and manifest["config"]["schedule"] == "dynamic"
    assert [Path(s["path"]).name for s in manifest["skipped"]] == ["TCGA_AA_0000_20000101_9.tif"]

    # Test figures are those of the saved best model on the test patients of splits.csv.
    splits = cdata.load_splits(out / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"} and len(splits) == 4
    frame = cdata.resolve_splits(cdata.discover(tiny_joint_tree), out / "splits.csv")
    test = cdata.load_arrays(frame[frame["split"] == "test"], 64, progress=False)
    assert saved["n_slices"] == len(test) and saved["n_tumor_slices"] == int(test.labels.sum())
    model = keras.models.load_model(out / "joint.keras", compile=False)
    assert model.count_params() == saved["params"]
    tumor_prob = np.asarray(model(test.images.astype(np.float32), training=False)["class"])[:, 1]  # eager: no trace
    assert saved["gate_accuracy"] == pytest.approx(classification_metrics(test.labels, tumor_prob)["accuracy"])


def test_cli_registers_and_rejects_bad_arguments(tmp_path: Path) -> None:
    from classseg.commands import train_joint as cmd

    parser = argparse.ArgumentParser(prog="classseg")
    cmd.add_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "data").mkdir()  # --out beside the data folder, not inside it (refused since issue 13)
    args = parser.parse_args(["train-joint", str(tmp_path / "data"), "--weights", "none", "--img-size", "64",
                              "--epochs", "2",
                              "--schedule", "freeze", "--class-loss", "focal", "--multiscale", "--seed", "3",
                              "--out", str(tmp_path / "o"), "--strategy", "mirrored"])
    assert (args.schedule, args.class_loss, args.multiscale, args.seed, args.func) == ("freeze", "focal", True, 3,
                                                                                        cmd.run)
    with pytest.raises(SystemExit, match="multiple of 32"):
        cmd.run(parser.parse_args(["train-joint", "--img-size", "100"]))
    with pytest.raises(SystemExit, match="not found"):
        cmd.run(parser.parse_args(["train-joint", "--weights", str(tmp_path / "missing.h5")]))
    with pytest.raises(SystemExit):
        parser.parse_args(["train-joint", "--schedule", "linear"])
    with pytest.raises(SystemExit, match="multiple of 16 for resunet"):
        cmd.run(parser.parse_args(["train-joint", "--architecture", "resunet", "--img-size", "40"]))
    with pytest.raises(SystemExit, match="--init model not found"):
        cmd.run(parser.parse_args(["train-joint", "--architecture", "resunet", "--img-size", "48",
                                   "--init", str(tmp_path / "nope.keras")]))


def test_cli_run_maps_arguments_to_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    import classseg.training.joint as tj
    from classseg.commands import train_joint as cmd

    seen = {}

    def fake_train(config, data_dir, splits_path, out_dir, strategy=None, progress=True):
        seen.update(config=config, data_dir=data_dir, out=out_dir, progress=progress)
        from classseg.evaluation import SCORE_FIELDS

        figures = dict.fromkeys(SCORE_FIELDS, 0.5)
        return {**figures, "n_slices": 4, "n_tumor_slices": 2, "img_size": 64, "epochs": 2, "best_epoch": 1,
                "schedule": config.schedule, "seed": 3, "weights": "none (random init)", "params": 1234,
                "ms_per_slice": 1.5, "infer_batch": 16, "device": "CPU"}

    monkeypatch.setattr(tj, "train_joint", fake_train)
    parser = argparse.ArgumentParser(prog="classseg")
    cmd.add_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "data").mkdir()  # --out beside the data folder, not inside it (refused since issue 13)
    args = parser.parse_args(["train-joint", str(tmp_path / "data"), "--weights", "none", "--img-size", "64",
                              "--epochs", "2",
                              "--schedule", "dynamic", "--class-loss", "focal", "--multiscale", "--seed", "3",
                              "--out", str(tmp_path / "o"), "--quiet"])
    assert cmd.run(args) == 0
    c = seen["config"]
    assert (c.weights, c.img_size, c.epochs, c.schedule, c.class_loss, c.multiscale_head, c.seed) == (
        None, 64, 2, "dynamic", "focal", True, 3)
    assert (c.lr, c.weight_decay, c.lambda_cls, c.lambda_seg, c.batch_size) == (1e-4, 1e-4, 1.0, 1.5, 16)
    assert seen["progress"] is False
    assert "Dice end to end (all slices) 0.5000" in capsys.readouterr().out


# ------------------------------------------------------------------------------- issue 18
def _write_card(model_path: Path, normalization: str, split_file: Path | None) -> None:
    provenance = {"split_file": str(split_file)} if split_file else {}
    model_path.with_name(model_path.stem + ".card.json").write_text(json.dumps(
        {"role": "segmenter", "img_size": 32, "normalization": normalization, "provenance": provenance}))


def test_joint_from_init_is_fed_what_the_init_card_says(tmp_path: Path) -> None:
    """A resunet joint model started from a segmenter trained on patient_percentile inputs is trained and
    scored on patient_percentile inputs, and its card says so (the pipeline follows the card)."""
    import keras

    from classseg import data as cdata
    from classseg.data.standardize import model_input_scale, prepare_input
    from classseg.models.resunet import build_resunet

    root = tmp_path / "kaggle_3m"
    for k in range(4):  # bright patients: percentile scaling changes their pixels by a large gain
        write_patient(root, f"TCGA_NP_{k:04d}_20000101", n_slices=4, size=32, tumor_slices=(2, 3), seed=k)
    splits = tmp_path / "splits.csv"
    pd.DataFrame({"patient_id": [f"TCGA_NP_{k:04d}_20000101" for k in range(4)],
                  "split": ["train", "train", "val", "test"]}).to_csv(splits, index=False)
    start_split = tmp_path / "start_splits.csv"  # the init model never saw these patients
    pd.DataFrame({"patient_id": ["TCGA_XX_0001_20000101"], "split": ["train"]}).to_csv(start_split, index=False)
    seg = tmp_path / "seg.keras"
    build_resunet((32, 32, 3), width=0.25, input_scale=model_input_scale("patient_percentile")).save(seg)
    _write_card(seg, "patient_percentile", start_split)
    out = tmp_path / "run"
    config = JointConfig(architecture="resunet", width=0.25, init=str(seg), img_size=32, epochs=1, batch_size=4,
                         infer_batch=4, augment=True, workers=1, run_eagerly=True)
    m = train_joint(config, root, splits, out_dir=out, progress=False)
    assert m["normalization"] == "patient_percentile"
    assert json.loads((out / "joint.card.json").read_text())["normalization"] == "patient_percentile"
    assert m["leakage_check"][0]["checked"] and m["leakage_check"][0]["new_val_test_patients"] == 2
    # the saved test predictions are the model's on the patient-normalised inputs, not on raw pixels
    frame = cdata.resolve_splits(cdata.discover(root), splits)
    test = cdata.load_arrays(frame[frame["split"] == "test"].reset_index(drop=True), 32, progress=False)
    prepared = prepare_input(test.images, "patient_percentile", test.frame["patient_id"].to_numpy())
    assert not np.allclose(prepared, test.images.astype(np.float32), atol=1.0)  # the inputs do differ
    model = keras.models.load_model(out / "joint.keras", compile=False)
    expected = np.asarray(model(prepared, training=False)["class"])[:, 1]
    saved = np.load(out / "predictions_test.npz")["tumor_prob"]
    np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-5)


def test_joint_normalization_setting_and_resolution(tmp_path: Path) -> None:
    from classseg.training.joint import input_normalization

    seg = tmp_path / "seg.keras"
    seg.write_bytes(b"")
    _write_card(seg, "patient_zscore", None)
    assert input_normalization(JointConfig(architecture="resunet", init=str(seg), img_size=32)) == "patient_zscore"
    assert input_normalization(JointConfig(architecture="resunet", init=str(seg), img_size=32,
                                           normalization="raw")) == "raw"  # given beats the card
    assert input_normalization(JointConfig(architecture="resunet", img_size=32)) == "raw"
    with pytest.raises(ValueError, match="resnet50_unet carries ImageNet preprocessing"):
        JointConfig(normalization="patient_percentile")
    with pytest.raises(ValueError, match="unknown normalization"):
        JointConfig(architecture="resunet", img_size=32, normalization="minmax")


def test_joint_from_init_refuses_patients_the_init_model_trained_on(tiny_joint_tree: Path, tmp_path: Path) -> None:
    from classseg.models.resunet import build_resunet

    splits = tmp_path / "splits.csv"
    pd.DataFrame({"patient_id": [f"TCGA_AA_{k:04d}_20000101" for k in range(4)],
                  "split": ["train", "train", "val", "test"]}).to_csv(splits, index=False)
    start_split = tmp_path / "start_splits.csv"
    pd.DataFrame({"patient_id": ["TCGA_AA_0003_20000101", "TCGA_AA_0002_20000101"],
                  "split": ["train", "test"]}).to_csv(start_split, index=False)
    seg = tmp_path / "seg.keras"
    build_resunet((32, 32, 3), width=0.25).save(seg)
    _write_card(seg, "raw", start_split)
    config = JointConfig(architecture="resunet", width=0.25, init=str(seg), img_size=32, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"^1 val/test patient\(s\) of this run were train/val patients of .*seg\.keras"
                                         r".*: TCGA_AA_0003_20000101 \(test\); pass --splits FILE"):
        train_joint(config, tiny_joint_tree, splits, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "joint.keras").exists()


def test_cls_only_counts_every_original_size_tumor_slice(tmp_path: Path) -> None:
    """Issue 18: a 1-pixel tumor vanishes when its 64 px mask is shrunk to 16 px; the classifier arm must
    still count that slice as a tumor slice, like every other arm (scored at the original size)."""
    import cv2

    from classseg import data as cdata

    root = tmp_path / "kaggle_3m"
    for k in range(4):
        write_patient(root, f"TCGA_CO_{k:04d}_20000101", n_slices=4, size=64, tumor_slices=(2,), seed=k)
        tiny = np.zeros((64, 64), np.uint8)
        tiny[5, 5] = 255  # not on the nearest-neighbour grid of a 4x shrink (rows/cols 0, 4, 8, ...)
        cv2.imwrite(str(root / f"TCGA_CO_{k:04d}_20000101" / f"TCGA_CO_{k:04d}_20000101_3_mask.tif"), tiny)
    frame = cdata.discover(root)
    arrays = cdata.load_arrays(frame, 16, progress=False)
    assert int(arrays.masks.reshape(len(arrays), -1).any(axis=1).sum()) == 4  # the 1-pixel tumors vanished
    assert int(arrays.labels.sum()) == 8 == int(frame["tumor"].sum())  # the labels still count them
    splits = tmp_path / "splits.csv"
    pd.DataFrame({"patient_id": [f"TCGA_CO_{k:04d}_20000101" for k in range(4)],
                  "split": ["train", "train", "val", "test"]}).to_csv(splits, index=False)
    config = JointConfig(architecture="resunet", width=0.25, img_size=16, epochs=1, batch_size=4, infer_batch=4,
                         lambda_seg=0.0, run_eagerly=True)
    m = train_joint(config, root, splits, out_dir=tmp_path / "cls", progress=False)
    assert m["kind"] == "classifier" and m["n_slices"] == 4
    assert m["n_tumor_slices"] == 2 and m["tp"] + m["fn"] == 2  # both original tumor slices of the test patient

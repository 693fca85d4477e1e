"""Smoke test of phase-1 training on a tiny synthetic kaggle_3m-style folder, and the CLI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from classseg.commands import train_classifiers as command  # noqa: E402
from classseg.training.classifiers import extract_features  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(classifier_data):
    """4 patients x 4 slices of 32x32 RGB TIFF; slices 3-4 have a bright tumor blob in the mask (conftest)."""
    return classifier_data


def _parser():
    parser = argparse.ArgumentParser(prog="classseg")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_train_classifiers_smoke(data_dir, classifier_run):
    # The shared run (conftest): ResNet-50 (randomly initialised MobileNetV2 features vanish, ~1e-11, which
    # would make the probability checks below trivially true) and the ResUNet encoder, interrupted and resumed.
    out, results = classifier_run["out"], classifier_run["results"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(s["path"]).name for s in manifest["skipped"]] == ["notes.txt"]  # issue 13: never silent

    assert list(results["backbone"]) == ["resnet50", "resunet_encoder"]
    row = results.iloc[0]
    assert row["trainable_params"] == 2048 * 2 + 2 and row["params"] > row["trainable_params"]
    for col in ("accuracy", "f1_micro", "f1_macro", "sensitivity", "specificity", "auc", "train_time_s",
                "ms_per_slice"):
        assert np.isfinite(row[col]), col
    assert 0.0 <= row["accuracy"] <= 1.0

    run = out / "resnet50"
    for name in ("classifier.keras", "history.csv", "metrics.json", "metrics.md", "predictions.csv",
                 "confusion_matrix.png", "roc.png"):
        assert (run / name).is_file(), name
    for name in ("results.csv", "results.md", "results.json", "splits.csv", "manifest.json"):
        assert (out / name).is_file(), name

    splits = pd.read_csv(out / "splits.csv")
    n_test = 4 * int((splits["split"] == "test").sum())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == n_test == sum(map(sum, metrics["test"]["confusion_matrix"]))
    assert metrics["path"] == "cached-features"
    assert metrics["runs"][0]["e2e_check_max_abs_diff"] < 1e-5
    assert len(pd.read_csv(run / "history.csv")) == 1

    gate = json.loads((out / "results.json").read_text())["gate"]
    assert gate["backbone"] in ("resnet50", "resunet_encoder") and 0.0 <= gate["threshold"] <= 1.0
    assert gate["val_at_threshold"]["sensitivity"] >= 0.95

    # the saved end-to-end model reproduces the recorded test probabilities from raw pixels
    from classseg.data import discover, load_arrays
    from classseg.models.classifier import load_classifier

    preds = pd.read_csv(run / "predictions.csv")
    test = preds[preds["split"] == "test"]
    assert len(test) == n_test and test["p_tumor"].std() > 1e-4  # not a constant output
    df = discover(data_dir).set_index("image_path").loc[test["image_path"]].reset_index()
    images = load_arrays(df, 32, progress=False).images.astype("float32")
    model = load_classifier(run / "classifier.keras")
    np.testing.assert_allclose(model.predict(images, verbose=0)[:, 1], test["p_tumor"], atol=1e-5)


def test_extract_features_keeps_every_sample():
    from classseg.models.classifier import build_classifier, head_of, split_head

    model = build_classifier("mobilenetv2", (32, 32, 3), weights=None, head="paper")
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    feats = extract_features(model, images, batch_size=3, progress=False)  # batches 3, 3, 1
    assert feats.shape == (7, 1 * 1 * 1280)  # paper head: pooled + flattened features
    fixed, _ = split_head(head_of(model))
    backbone = model.get_layer("backbone")
    # one image per call: row i must be image i's own features, whatever batch it was computed in
    direct = np.concatenate([np.asarray(fixed(backbone(images[i:i + 1].astype("float32")))) for i in range(7)])
    # Random-weight MobileNetV2 features are tiny (~1e-12 down to 0), and batch size and CPU kernels
    # change their last float32 bits (~1e-6 of the largest feature, more relative to the smallest):
    # compare at the features' own scale, not with an absolute tolerance far below it.
    atol = 1e-4 * float(np.abs(direct).max())
    assert atol > 0
    np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=atol)
    # That tolerance still tells every image apart (it accepts at most atol + rtol * |x| <= 2 * atol),
    # so a dropped, repeated or reordered sample fails the comparison above.
    gaps = np.abs(direct[:, None] - direct[None]).max(axis=-1)[~np.eye(len(direct), dtype=bool)]
    assert gaps.min() > 10 * atol
    assert extract_features(model, images[:0], progress=False).shape == (0, 1280)


def test_cli_unknown_backbone_is_one_line_error(data_dir, tmp_path):
    args = _parser().parse_args(["train-classifiers", str(data_dir), "--backbones", "mobilenetv2,vgg99",
                                 "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        args.func(args)
    assert "vgg99" in str(info.value) and "resnet50" in str(info.value)


def test_cli_missing_inputs_are_one_line_errors(data_dir, tmp_path):
    parser = _parser()
    cases = [(["train-classifiers", str(tmp_path / "nodata")], "data folder not found"),
             (["train-classifiers", str(data_dir), "--weights", str(tmp_path / "w.h5")], "weights file not found"),
             (["train-classifiers", str(data_dir), "--splits", str(tmp_path / "s.csv")], "split file not found")]
    for argv, message in cases:
        args = parser.parse_args(argv)
        with pytest.raises(SystemExit, match=message):
            args.func(args)


def test_cli_parses_every_option():
    args = _parser().parse_args(["train-classifiers", "DATA", "--backbones", "resnet50,mobilenetv2",
                                 "--weights", "none", "--img-size", "64", "--epochs", "2", "--batch-size", "8",
                                 "--repeats", "3", "--seed", "7", "--splits", "s.csv", "--out", "o",
                                 "--head", "gap", "--fine-tune", "5", "--class-weights", "--strategy",
                                 "mirrored", "--augment"])
    assert (args.data_dir, args.backbones, args.weights, args.img_size, args.epochs, args.batch_size,
            args.repeats, args.seed, args.splits, args.out, args.head, args.fine_tune, args.class_weights,
            args.strategy, args.augment) == ("DATA", "resnet50,mobilenetv2", "none", 64, 2, 8, 3, 7, "s.csv",
                                             "o", "gap", 5, True, "mirrored", True)
    assert args.func is command.run


def test_cli_names_and_defaults_match_the_library():
    from classseg.models.backbones import BACKBONES
    from classseg.training.classifiers import PAPER_BACKBONES

    assert command.BACKBONE_NAMES == tuple(BACKBONES)
    assert command.PAPER_BACKBONES == PAPER_BACKBONES
    from classseg.training.classifiers import ClassifierConfig

    args = _parser().parse_args(["train-classifiers"])
    assert command.config_from_args(args) == ClassifierConfig()  # every default is ClassifierConfig's
    assert args.backbones == ",".join(PAPER_BACKBONES) and str(args.weights) == "imagenet"


def test_interrupted_run_resumes_at_the_next_backbone(classifier_run):
    """Ctrl-C while the second backbone trained: the first (its run.json) is kept, a resume with other settings
    is refused naming them, and the resume trains only the second."""
    assert classifier_run["interrupted"] == {"first_done": True, "results_json": False}
    assert "epochs: 1 (started with) vs 2 (this run)" in classifier_run["refused"]
    assert classifier_run["resumed_calls"] == ["resunet_encoder"]
    out = classifier_run["out"]
    assert (out / "results.json").is_file() and (out / "resunet_encoder" / "run.json").is_file()

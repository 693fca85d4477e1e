"""Issue 11: the joint model on the ResUNet, single-task arms by zero loss weight, in-domain init,
two-stage scores from saved predictions, and compare --aggregate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classseg.delivery.postprocess import PostprocessConfig
from classseg.training.joint import JointConfig, evaluate_joint, model_name


def test_resunet_joint_shares_the_segmenter_layers_and_head_sizes() -> None:
    from classseg.models.resunet import build_resunet, build_resunet_joint

    seg = build_resunet((32, 32, 3), width=0.5)
    joint = build_resunet_joint((32, 32, 3), width=0.5)
    ms = build_resunet_joint((32, 32, 3), width=0.5, multiscale_head=True)
    # same encoder-decoder: the joint model is the segmenter + GAP -> dropout -> dense softmax
    assert joint.count_params() == seg.count_params() + 128 * 2 + 2  # bottleneck 256 * 0.5 channels
    assert ms.count_params() == seg.count_params() + (16 + 32 + 64 + 128) * 2 + 2  # seed 004: all levels
    assert {w.path for w in seg.weights} <= {w.path for w in joint.weights}
    assert joint.get_layer("class_dropout").rate == 0.5
    out = joint(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert out["class"].shape == (2, 2) and out["mask"].shape == (2, 32, 32, 1)


def test_init_by_name_copies_the_segmenter_and_refuses_a_stranger(tmp_path: Path) -> None:
    from classseg.models.resunet import build_gate_cnn, build_resunet, build_resunet_joint
    from classseg.training.joint import init_by_name

    seg = build_resunet((32, 32, 3), width=0.5)
    seg.save(tmp_path / "seg.keras")
    joint = build_resunet_joint((64, 64, 3), width=0.5)  # another input size: fully convolutional
    copied = init_by_name(joint, tmp_path / "seg.keras")
    assert "bottleneck_conv2" in copied and "mask" in copied and "class" not in copied
    np.testing.assert_array_equal(joint.get_layer("dec4_conv2").get_weights()[0],
                                  seg.get_layer("dec4_conv2").get_weights()[0])
    other = build_gate_cnn((32, 32, 3), width=0.25)
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="other.keras: none of its layers fits"):
        init_by_name(build_resunet_joint((32, 32, 3), width=1.0), tmp_path / "other.keras")


def test_single_task_arms_are_named_and_scored_for_their_task() -> None:
    assert model_name(JointConfig(architecture="resunet", weights=None)) == "joint_resunet"
    assert model_name(JointConfig(architecture="resunet", schedule="freeze")) == "joint_resunet_freeze"
    assert model_name(JointConfig(architecture="resunet", lambda_cls=0.0)) == "seg_only_resunet"
    assert model_name(JointConfig(architecture="resunet", lambda_seg=0.0, multiscale_head=True)) == \
        "cls_only_resunet_multiscale"
    with pytest.raises(ValueError, match="not both 0"):
        JointConfig(lambda_cls=0.0, lambda_seg=0.0)
    with pytest.raises(ValueError, match="multiple of 16"):
        JointConfig(architecture="resunet", img_size=40)

    gt = np.zeros((4, 16, 16, 1), np.uint8)
    gt[:2, 4:12, 4:12] = 1
    prob = gt[..., 0].astype(np.float32)
    prob[2, 0:4, 0:4] = 0.9  # a false positive the class output would gate out
    tumor_prob = np.array([0.9, 0.8, 0.1, 0.3])
    labels, ids = np.array([1, 1, 0, 0]), np.array(["A", "A", "B", "B"])
    pp = PostprocessConfig(closing=False, fill_holes=False)
    seg_only = evaluate_joint(tumor_prob, prob, labels, gt, ids, JointConfig(lambda_cls=0.0, postprocess=pp))
    assert (seg_only["tp"], seg_only["fp"]) == (2, 1) and seg_only["gate_accuracy"] is None  # verdict: mask
    joint = evaluate_joint(tumor_prob, prob, labels, gt, ids, JointConfig(postprocess=pp))
    assert (joint["tp"], joint["fp"]) == (2, 0) and joint["segment_all"]["fp"] == 1
    cls_only = evaluate_joint(tumor_prob, prob, labels, gt, ids, JointConfig(lambda_seg=0.0, postprocess=pp))
    assert cls_only["accuracy"] == 1.0 and cls_only["auc"] == 1.0 and cls_only["dice_tumor_slices"] is None


def test_two_stage_from_saved_predictions_equals_the_gated_masks(tmp_path: Path) -> None:
    from classseg.evaluation.delivered import delivered_scores, read_predictions, save_predictions, two_stage_scores

    rng = np.random.default_rng(0)
    truths = [np.zeros((32, 32), np.uint8) for _ in range(4)]
    truths[0][8:20, 8:20] = 1
    truths[1][4:12, 4:12] = 1
    mask_prob = rng.random((4, 16, 16)).astype(np.float32) * 0.4
    mask_prob[0, 4:10, 4:10] = 0.95
    mask_prob[3, 0:3, 0:3] = 0.9  # false positive on slice 3
    gate = np.array([0.9, 0.2, 0.7, 0.1], np.float32)  # misses slice 1, gates out slice 3
    ids, paths = ["A", "A", "B", "B"], [f"s{i}.tif" for i in range(4)]
    save_predictions(tmp_path / "seg.npz", None, mask_prob, ids, [f"m{i}" for i in range(4)], paths)
    save_predictions(tmp_path / "cls.npz", gate, None, ids, [f"m{i}" for i in range(4)], paths)
    seg, cls = read_predictions(tmp_path / "seg.npz"), read_predictions(tmp_path / "cls.npz")
    assert np.abs(seg["mask_prob"] - mask_prob).max() <= 0.5 / 255 + 1e-7  # uint8 storage
    pp = PostprocessConfig(closing=False, fill_holes=False)
    combined = two_stage_scores(cls, seg, truths, pp)
    assert combined == delivered_scores(truths, seg["mask_prob"], ids, pp, gate_prob=gate)
    # rule gate (default) counts the gate's verdict: slice 2 passes with an empty mask, a false positive call
    assert (combined["tp"], combined["fn"], combined["fp"], combined["tn"]) == (1, 1, 1, 1)
    anded = two_stage_scores(cls, seg, truths, pp, rule="gate_and_mask")  # verdict and a non-empty mask
    assert (anded["tp"], anded["fn"], anded["fp"], anded["tn"]) == (1, 1, 0, 2)
    assert anded["dice_tumor_slices"] == combined["dice_tumor_slices"]  # same delivered masks
    assert combined["segment_all"]["fp"] == 1  # the false positive exists before gating
    assert combined["dice_tumor_slices"] == pytest.approx(0.5)  # slice 0 exact (6x6 -> 12x12), slice 1 missed
    other = {**cls, "image_path": np.array(paths[::-1])}
    with pytest.raises(ValueError, match="not of the same slices"):
        two_stage_scores(other, seg, truths, pp)


def test_aggregate_seeds_mean_and_sample_std() -> None:
    from classseg.reporting.tables import aggregate_seeds

    df = pd.DataFrame({"model": ["a", "a", "a", "b"], "kind": "joint", "weights": "none", "img_size": 96,
                       "epochs": 9, "split_file": "s.csv", "seed": ["0", "1", "2", "0"],
                       "accuracy": [0.8, 0.9, 1.0, 0.5], "dice_per_patient": [0.1, 0.2, 0.3, None]})
    out = aggregate_seeds(df)
    a = out[out["model"] == "a"].iloc[0]
    assert a["n_runs"] == 3 and a["seed"] == "0, 1, 2"
    assert a["accuracy"] == pytest.approx(0.9) and a["accuracy_std"] == pytest.approx(0.1)
    assert a["dice_per_patient_std"] == pytest.approx(0.1)
    b = out[out["model"] == "b"].iloc[0]
    assert b["n_runs"] == 1 and pd.isna(b["accuracy_std"]) and pd.isna(b["dice_per_patient"])


def test_train_resunet_joint_from_a_segmenter_then_pipeline_joint(joint_run: dict, tmp_path: Path) -> None:
    """A resunet joint model initialised from a segmenter trains, writes a card and runs in --joint (the shared
    run of conftest: interrupted and resumed)."""
    from classseg.pipeline import build_parser
    from classseg.pipeline import run as run_pipeline

    tiny_tree, out, m = joint_run["data"], joint_run["out"], joint_run["metrics"]
    assert m["model"] == "joint_resunet" and m["weights"].startswith("initialised from")
    card = json.loads((out / "joint.card.json").read_text())
    assert card["role"] == "joint" and card["gate_rule"] == "gate" and card["img_size"] == 32
    assert {"tumor_prob", "mask_u8"} <= set(np.load(out / "predictions_test.npz").files)
    args = build_parser().parse_args(["--test-dir", str(tiny_tree), "--joint", str(out / "joint.keras"),
                                      "--out", str(tmp_path / "pred"), "--no-overlays"])
    assert run_pipeline(args) == 0
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert len(pred) == 16 and set(pred["status"]) == {"ok"}


def test_gate_encoder_backbone_from_a_gate_cnn_and_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classseg.models.backbones import get_backbone
    from classseg.models.resunet import build_gate_cnn

    gate = build_gate_cnn((32, 32, 3), width=0.25, input_scale=1.0 / 255.0)
    gate.save(tmp_path / "classifier.keras")
    assert get_backbone("gate_encoder", (64, 64, 3), weights=str(tmp_path / "classifier.keras")).output.shape == \
        (None, 4, 4, 64)  # H/16, 256 * 0.25 channels, at another input size
    import keras

    net = get_backbone("gate_encoder", (32, 32, 3), weights=str(tmp_path / "classifier.keras"))
    reference = keras.Model(gate.input, gate.get_layer("bottleneck_out").output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(net(x, training=False), reference(x, training=False), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("CLASSSEG_MODELS", str(tmp_path))  # "shipped" = the models folder's classifier.keras
    shipped = get_backbone("gate_encoder", (32, 32, 3), weights="shipped")
    assert shipped.output.shape == (None, 2, 2, 64)
    with pytest.raises(ValueError, match="mobilenetv2 has no shipped in-domain weights"):
        get_backbone("mobilenetv2", (32, 32, 3), weights="shipped")


def test_compare_aggregate_and_columns_cli(tmp_path: Path) -> None:
    from classseg.cli import main

    runs = []
    for seed, acc in ((0, 0.8), (1, 0.9)):
        run = tmp_path / f"joint_seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({
            "model": "joint_resunet", "kind": "joint", "weights": "none", "img_size": 96, "epochs": 9, "seed": seed,
            "split_file": "s.csv", "accuracy": acc, "dice_per_patient": 0.5, "dice_tumor_slices": 0.4}))
        runs.append(str(run))
    assert main(["compare", *runs, "--out", str(tmp_path / "docs"), "--name", "mt", "--aggregate",
                 "--columns", "model,n_runs,accuracy,dice_per_patient"]) == 0
    md = (tmp_path / "docs" / "mt.md").read_text()
    header = md.splitlines()[2]
    assert header == "| model | n_runs | accuracy | dice_per_patient |"
    assert "0.850 ± 0.071" in md and "| 2 |" in md
    full = pd.read_csv(tmp_path / "docs" / "mt.csv")  # the csv keeps every column
    assert {"dice_tumor_slices", "accuracy_std", "seed"} <= set(full.columns)
    with pytest.raises(SystemExit, match="no column"):
        main(["compare", *runs, "--out", str(tmp_path / "docs"), "--columns", "model,nonsense"])


def test_two_stage_and_val_gated_runs_from_saved_predictions(tmp_path: Path) -> None:
    """The multitask table's derived rows: two-stage (cls_only gates seg_only) and the gate chosen on val."""
    import cv2

    from classseg.evaluation.delivered import save_predictions
    from classseg.training.multitask import MultitaskConfig, comparison_runs, run_dir, two_stage_run, val_gated_run

    paths = []
    for i in range(4):  # slices 0, 1 tumor; 2, 3 empty
        truth = np.zeros((16, 16), np.uint8)
        if i < 2:
            truth[4:12, 4:12] = 255
        cv2.imwrite(str(tmp_path / f"m{i}.png"), truth)
        paths.append(str(tmp_path / f"m{i}.png"))
    mask_prob = np.zeros((4, 16, 16), np.float32)
    mask_prob[:2, 4:12, 4:12] = 0.9
    mask_prob[2, 0:3, 0:3] = 0.9  # a false positive that a good gate removes
    gate = np.array([0.9, 0.3, 0.1, 0.2], np.float32)  # P(tumor): tumor slice 1 only at 0.3
    out = tmp_path / "arms"
    base = {"img_size": 16, "epochs": 1, "seed": 0, "split_file": "s.csv", "weights": "none", "train_minutes": 1.0,
            "params": 10, "ms_per_slice": 1.0, "architecture": "resunet", "augment": True, "batch_size": 4,
            "threshold": 0.5, "postprocess_config": {"threshold": 0.5, "closing": False, "fill_holes": False}}
    for arm, tumor, masks in (("seg_only", None, mask_prob), ("cls_only", gate, None)):
        folder = run_dir(out, arm, 0)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({**base, "model": f"{arm}_resunet"}))
        for split in ("val", "test"):
            save_predictions(folder / f"predictions_{split}.npz", tumor, masks, ["A", "A", "B", "B"], paths,
                             [f"s{i}" for i in range(4)])
    two = json.loads((two_stage_run(out, 0) / "metrics.json").read_text())
    assert (two["tp"], two["fn"], two["fp"]) == (1, 1, 0)  # P(tumor) 0.3 < 0.5 drops tumor slice 1
    assert two["train_minutes"] == 2.0 and two["params"] == 20
    chosen = json.loads((val_gated_run(out, "two_stage", 0) / "metrics.json").read_text())
    # on val, threshold 0.22-0.3 keeps both tumor slices and drops the false positive: accuracy 1.0
    assert chosen["gate_choice"]["rule"] in ("gate", "gate_and_mask") and chosen["accuracy"] == 1.0
    assert 0.2 < chosen["gate_choice"]["threshold"] <= 0.3
    runs = [p.name for p in comparison_runs(MultitaskConfig(arms=("seg_only", "cls_only"), seeds=(0,)), out)]
    assert runs == ["seg_only_seed0", "cls_only_seed0", "two_stage_seed0", "two_stage_valgate_seed0"]


def test_quick_profile_without_shipped_models_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classseg.workflows.runall import get_profile, run_all

    monkeypatch.setenv("CLASSSEG_MODELS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="shipped segmenter is missing.*--init none --weights none"):
        run_all(tmp_path / "data", tmp_path / "run", get_profile("quick"), log=lambda _: None)
    assert not (tmp_path / "run").exists()  # refused before any folder is made

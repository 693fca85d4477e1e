"""Issue 19: one home for delivery (classseg.delivery.rules) and one meaning of the final call.

(a) for every gate rule, the pipeline's ``metrics.json`` (``gated``), ``classseg evaluate`` on its output
    and the ``final_call`` column of ``predictions.csv`` count the same tp / fp / tn / fn;
(b) a tiny joint run's own test figures are reproduced by ``python -m classseg.pipeline --joint``, also
    with a non-``mask`` rule, a class threshold apart from the mask threshold and a 3D filter in its card;
(c) the rules module on known answers.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import write_patient

from classseg.delivery.postprocess import Postprocess3DConfig, PostprocessConfig
from classseg.delivery.rules import (
    GATE_RULES,
    MaskDelivery,
    deliver,
    deliver_masks,
    delivered_masks,
    final_calls,
    segmented_slices,
)

PLAIN = PostprocessConfig(closing=False, fill_holes=False)


# ---------------------------------------------------------------------------------------------- (c) rules
def test_rules_known_answers() -> None:
    prob = np.array([0.9, 0.9, 0.2, 0.2])
    nonempty = np.array([True, False, True, False])
    assert GATE_RULES == ("gate", "gate_and_mask", "mask")
    assert final_calls(prob, nonempty, 0.5, "gate").tolist() == [True, True, False, False]
    assert final_calls(prob, nonempty, 0.5, "gate_and_mask").tolist() == [True, False, False, False]
    assert final_calls(None, nonempty, 0.5, "mask").tolist() == [True, False, True, False]
    assert final_calls(prob, nonempty, 0.95, "gate").tolist() == [False] * 4  # p >= t, the class threshold
    passed = prob >= 0.5
    assert segmented_slices(passed, "gate").tolist() == segmented_slices(passed, "gate_and_mask").tolist() == \
        [True, True, False, False]
    assert segmented_slices(passed, "mask").all()
    masks = [np.ones((2, 3), np.uint8) * k for k in (1, 0, 1, 0)]
    assert [int(m.sum()) for m in delivered_masks(masks, passed, "gate")] == [6, 0, 0, 0]
    assert [int(m.sum()) for m in delivered_masks(masks, passed, "mask")] == [6, 0, 6, 0]
    with pytest.raises(ValueError, match="gate rule"):
        final_calls(prob, nonempty, 0.5, "both")


def _volume() -> np.ndarray:
    """One patient, three 8x8 slices: a 4x4 blob on slice 0, a lone pixel far from it on slice 1."""
    prob = np.zeros((3, 8, 8), np.float32)
    prob[0, 0:4, 0:4] = 0.9
    prob[1, 7, 7] = 0.9
    return prob


def test_3d_filter_runs_over_the_slices_the_rule_segments() -> None:
    prob, shapes, ids = _volume(), [(16, 16)] * 3, ["P"] * 3
    f3d = Postprocess3DConfig(min_fraction=0.2)
    # every slice (rule mask): the lone voxel is under 0.2 x 16 voxels and is removed
    d = deliver(prob, shapes, PLAIN, rule="mask", config_3d=f3d, groups=ids)
    assert d.calls.tolist() == [True, False, False] and d.removed_3d.tolist() == [False, True, False]
    assert d.masks[0].shape == (16, 16) and int(d.masks[0].sum()) == 64  # resized back (x2 nearest)
    # the gate passes slice 1 only: the filter sees that slice alone, whose lone voxel is its largest part
    gate = np.array([0.1, 0.8, 0.1])
    for rule in ("gate", "gate_and_mask"):
        d = deliver(prob, shapes, PLAIN, gate, 0.5, rule, f3d, ids)
        assert d.segmented.tolist() == [False, True, False] and d.calls.tolist() == [False, True, False]
        assert [int(m.sum()) for m in d.delivered] == [0, 4, 0] and not d.removed_3d.any()
    # a passed slice with an empty mask: a tumor call under 'gate', not under 'gate_and_mask'
    gate = np.array([0.1, 0.1, 0.8])
    assert deliver(prob, shapes, PLAIN, gate, 0.5, "gate", f3d, ids).calls.tolist() == [False, False, True]
    assert deliver(prob, shapes, PLAIN, gate, 0.5, "gate_and_mask", f3d, ids).calls.tolist() == [False] * 3
    # probabilities of the segmented slices only (the pipeline's two-stage case) give the same delivery
    sub = MaskDelivery(prob[[1]], shapes, PLAIN, f3d, ids, index=[1]).deliver(np.array([0.1, 0.8, 0.1]), 0.5, "gate")
    assert [int(m.sum()) for m in sub.delivered] == [0, 4, 0]
    with pytest.raises(ValueError, match="no mask probabilities"):
        MaskDelivery(prob[[1]], shapes, PLAIN, f3d, ids, index=[1]).deliver(rule="mask")
    masks, removed = deliver_masks(prob, shapes, PLAIN, f3d, ids)
    assert [int(m.sum()) for m in masks] == [64, 0, 0] and removed.tolist() == [False, True, False]


def test_scores_count_the_final_calls() -> None:
    from classseg.evaluation.scores import ScoreAccumulator, score_slices

    truths = [np.zeros((4, 4), np.uint8) for _ in range(3)]
    truths[0][1:3, 1:3] = 1
    masks = [truths[0].copy(), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]
    calls = [True, True, False]  # rule gate: slice 1 passed with an empty mask
    plain = score_slices(truths, masks, ["A"] * 3)
    called = score_slices(truths, masks, ["A"] * 3, calls=calls)
    assert (plain.tp, plain.fp, plain.tn) == (1, 0, 2) and (called.tp, called.fp, called.tn) == (1, 1, 1)
    assert called.dice_tumor_slices == plain.dice_tumor_slices == 1.0  # segmentation figures unchanged
    acc = ScoreAccumulator()
    acc.add(truths[:2], masks[:2], ["A"] * 2, calls=calls[:2])
    acc.add(truths[2:], masks[2:], ["A"], calls=calls[2:])
    assert acc.scores() == called
    with pytest.raises(ValueError, match="some slices only"):
        acc.add(truths[:1], masks[:1], ["A"])


def test_card_thresholds_named_apart(tmp_path: Path) -> None:
    from classseg.models.card import ModelCard, read_card, write_card

    card = ModelCard(role="joint", img_size=32, class_threshold=0.3, postprocess={"threshold": 0.6})
    assert card.class_cut() == 0.3 and card.mask_threshold() == 0.6 and card.postprocess_config().threshold == 0.6
    write_card(tmp_path / "j.keras", card)
    data = json.loads((tmp_path / "j.card.json").read_text())
    assert "threshold" not in data and data["class_threshold"] == 0.3  # writers write the new names only
    # an older card: one 'threshold', read as before (class cut of a gate; mask threshold without postprocess)
    (tmp_path / "g.card.json").write_text(json.dumps({"role": "gate", "img_size": 32, "threshold": 0.7}))
    old = read_card(tmp_path / "g.keras")
    assert old.class_cut() == 0.7 and old.mask_threshold() == 0.7
    (tmp_path / "s.card.json").write_text(json.dumps({"role": "segmenter", "img_size": 32, "threshold": 0.4,
                                                      "postprocess": {"min_component_px": 4}}))
    assert read_card(tmp_path / "s.keras").postprocess_config().threshold == 0.4
    with pytest.raises(ValueError, match="class_threshold"):
        ModelCard(role="gate", img_size=32, class_threshold=1.5)


# -------------------------------------------------------------------- (a) pipeline / evaluate / final_call
def _counts(scores: dict) -> tuple[int, int, int, int]:
    return scores["tp"], scores["fp"], scores["tn"], scores["fn"]


def _column_counts(out: Path, truth_dir: Path) -> tuple[int, int, int, int]:
    from classseg.data.io import read_mask
    from classseg.data.walk import pair_mask

    tp = fp = tn = fn = 0
    with open(out / "predictions.csv", newline="") as f:
        for row in csv.DictReader(f):
            truth, _ = pair_mask(truth_dir / row["image"])
            if truth is None:
                continue
            y, call = bool(read_mask(truth).any()), row["final_call"] == "tumor"
            tp, fp, tn, fn = tp + (y and call), fp + (call and not y), tn + (not y and not call), fn + (y and not call)
    return tp, fp, tn, fn


@pytest.fixture(scope="module")
def rule_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The tiny hand-weighted models of test_pipeline with cards, and one patient of four slices with
    ground truth: a tumor; one bright pixel (gate: tumor; mask removed by the 4-px filter); a grey blob
    (gate: no tumor; mask when segmented); a dark slice."""
    from classseg.models.card import ModelCard, write_card
    from tests.pipeline.test_pipeline import (
        GT_BOX,
        box_mask,
        gate_rule_slices,
        tiny_classifier,
        tiny_segmenter,
        write_rgb,
    )

    base = tmp_path_factory.mktemp("rules")
    tiny_classifier().save(base / "classifier.keras")
    tiny_segmenter().save(base / "segmenter.keras")
    write_card(base / "classifier.keras", ModelCard(role="gate", img_size=32, class_threshold=0.5, gate_rule="gate"))
    write_card(base / "segmenter.keras", ModelCard(role="segmenter", img_size=32,
                                                   postprocess={"threshold": 0.5, "min_component_px": 4}))
    root = base / "data"
    for name, image in zip("abcd", gate_rule_slices(), strict=True):
        write_rgb(root / "P1" / f"P1_{name}.png", image)
        truth = box_mask(32, 32, GT_BOX) if name == "a" else np.zeros((32, 32), np.uint8)
        cv2.imwrite(str(root / "P1" / f"P1_{name}_mask.png"), truth * 255)
    return base / "classifier.keras", base / "segmenter.keras", root


@pytest.mark.parametrize("rule, expected", [("gate", (1, 1, 2, 0)), ("gate_and_mask", (1, 0, 3, 0)),
                                            ("mask", (1, 1, 2, 0))])
def test_metrics_evaluate_and_final_call_count_the_same_calls(rule_setup, tmp_path: Path, rule: str,
                                                             expected: tuple[int, int, int, int]) -> None:
    from classseg.evaluation.folder import DETECTION_FROM_CALLS, DETECTION_FROM_MASKS, evaluate_folder
    from classseg.pipeline import main

    classifier, segmenter, root = rule_setup
    out = tmp_path / "out"
    assert main(["--test-dir", str(root), "--out", str(out), "--classifier", str(classifier),
                 "--segmenter", str(segmenter), "--gate-rule", rule, "--no-overlays"]) == 0
    gated = json.loads((out / "metrics.json").read_text())["gated"]
    evaluated = evaluate_folder(out, root)
    assert _counts(gated) == _counts(evaluated) == _column_counts(out, root) == expected
    assert evaluated["detection_source"] == DETECTION_FROM_CALLS
    if rule == "gate":  # a folder without the final_call column: mask non-empty, and it says so
        frame = pd.read_csv(out / "predictions.csv").drop(columns="final_call")
        frame.to_csv(out / "predictions.csv", index=False)
        fallback = evaluate_folder(out, root)
        assert fallback["detection_source"] == DETECTION_FROM_MASKS and _counts(fallback) == (1, 0, 3, 0)


# --------------------------------------------------------------------------- (b) joint run vs pipeline
@pytest.fixture(scope="module")
def joint_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 1-epoch ResUNet joint run (32 px, width 0.25) with the gate chosen on val; its test patients' folder."""
    from classseg.training.joint import JointConfig, train_joint

    base = tmp_path_factory.mktemp("joint")
    root = base / "kaggle_3m"
    patients = [f"TCGA_DL_{k:04d}_20000101" for k in range(5)]
    for k, pid in enumerate(patients):
        write_patient(root, pid, n_slices=5, size=32, tumor_slices=(2, 3), seed=k)
    splits = base / "splits.csv"
    pd.DataFrame({"patient_id": patients, "split": ["train", "train", "val", "test", "test"]}).to_csv(splits,
                                                                                                      index=False)
    config = JointConfig(architecture="resunet", width=0.25, img_size=32, epochs=1, batch_size=4, infer_batch=4,
                         select_gate=True, run_eagerly=True, save_predictions=False)
    out = base / "run"
    train_joint(config, root, splits, out_dir=out, progress=False)
    test_dir = base / "test_patients"
    for pid in patients[3:]:
        shutil.copytree(root / pid, test_dir / pid)
    return out, test_dir, root


def _pipeline_gated(model: Path, test_dir: Path, out: Path) -> dict:
    from classseg.pipeline import main

    assert main(["--test-dir", str(test_dir), "--out", str(out), "--joint", str(model), "--no-overlays"]) == 0
    return json.loads((out / "metrics.json").read_text())["gated"]


def _same_figures(run: dict, piped: dict) -> None:
    assert _counts(run) == _counts(piped) and run["n_slices"] == piped["n_slices"]
    for key in ("dice_tumor_slices", "dice_per_patient", "dice_end_to_end", "gate_accuracy"):
        assert (run[key] is None and piped[key] is None) or run[key] == pytest.approx(piped[key], abs=1e-6), key


def test_joint_run_figures_are_reproduced_by_the_pipeline(joint_run, tmp_path: Path) -> None:
    out, test_dir, _ = joint_run
    card = json.loads((out / "joint.card.json").read_text())
    assert "threshold" not in card and card["class_threshold"] is not None and "threshold" in card["postprocess"]
    run = json.loads((out / "metrics.json").read_text())
    _same_figures(run, _pipeline_gated(out / "joint.keras", test_dir, tmp_path / "out"))


def test_joint_card_with_a_gate_rule_and_3d_filter_delivers_what_is_scored(joint_run, tmp_path: Path) -> None:
    """The card's class threshold (the median test P(tumor)) apart from its mask threshold (a high quantile:
    small, scattered masks, some passed slices empty), rule ``gate`` and a 3D filter (which, over every
    slice, would remove masks it keeps over the passed ones): the run's scoring function
    (delivered_scores) and the pipeline agree."""
    import keras

    from classseg import data as cdata
    from classseg.evaluation.delivered import delivered_scores
    from classseg.evaluation.scores import read_truths
    from classseg.models.card import bind_card, read_card
    from classseg.models.predict import predict, tumor_probability

    out, test_dir, root = joint_run
    model_path = tmp_path / "joint.keras"
    shutil.copy(out / "joint.keras", model_path)
    frame = cdata.resolve_splits(cdata.discover(root), out / "splits.csv")
    test = cdata.load_arrays(frame[frame["split"] == "test"].reset_index(drop=True), 32, progress=False)
    outputs = predict(keras.models.load_model(model_path, compile=False), test.images, 4)
    tumor_prob, mask_prob = tumor_probability(outputs["class"]), outputs["mask"]
    class_cut = float(np.median(tumor_prob))  # some slices pass, some do not
    mask_cut = float(np.quantile(mask_prob, 0.95))  # a few pixels on
    f3d = Postprocess3DConfig(min_fraction=0.3)
    card = read_card(out / "joint.keras")
    rule = "gate"
    bind_card(model_path, card, class_threshold=class_cut, gate_rule=rule,
              postprocess={**card.postprocess, "threshold": mask_cut}, postprocess_3d={"min_fraction": 0.3})
    truths = read_truths(test.frame["mask_path"])
    expected = delivered_scores(truths, mask_prob, test.frame["patient_id"].to_numpy(),
                                PostprocessConfig(**{**card.postprocess, "threshold": mask_cut}),
                                gate_prob=tumor_prob, gate_threshold=class_cut, rule=rule, config_3d=f3d,
                                order=test.frame["slice"].to_numpy())
    _same_figures(expected, _pipeline_gated(model_path, test_dir, tmp_path / "out"))


@pytest.mark.parametrize("data", [
    {"role": "gate", "img_size": 32, "threshold": 0.7},
    {"role": "segmenter", "img_size": 32, "threshold": 0.4, "postprocess": {"min_component_px": 4}},
    {"role": "segmenter", "img_size": 32, "threshold": 0.3},
    {"role": "joint", "img_size": 32, "threshold": 0.2, "postprocess": {"threshold": 0.6}},
])
def test_an_older_card_is_rewritten_under_the_new_names_reading_the_same(tmp_path: Path, data: dict) -> None:
    from classseg.models.card import read_card, write_card

    (tmp_path / "m.card.json").write_text(json.dumps(data))
    old = read_card(tmp_path / "m.keras")
    write_card(tmp_path / "m.keras", old)
    assert "threshold" not in json.loads((tmp_path / "m.card.json").read_text())
    new = read_card(tmp_path / "m.keras")
    if data["role"] != "gate":  # what the role uses is read the same
        assert new.mask_threshold() == old.mask_threshold() and new.mask_postprocess() == old.mask_postprocess()
    if data["role"] != "segmenter":
        assert new.class_cut() == old.class_cut() == data["threshold"]

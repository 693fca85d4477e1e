"""Keras training metrics and NumPy evaluation metrics on hand-made shapes with known answers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from classseg.evaluation import segmentation as seg  # noqa: E402
from classseg.models.metrics import DiceCoefficient, IoUScore, TverskyScore  # noqa: E402


def _square(size=32, r0=8, c0=8, side=10):
    m = np.zeros((size, size), np.uint8)
    m[r0:r0 + side, c0:c0 + side] = 1
    return m


def test_dice_iou_square_shift():
    gt = _square()
    pred = _square(c0=13)  # shifted right by 5: overlap 10x5 = 50 of 100 each
    assert seg.dice(pred, gt) == pytest.approx(0.5)
    assert seg.iou(pred, gt) == pytest.approx(50 / 150)
    assert seg.dice(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert seg.dice(empty, empty) == 1.0 and seg.iou(empty, empty) == 1.0
    assert seg.dice(empty, gt) == 0.0
    p, r = seg.pixel_precision_recall(pred, gt)
    assert (p, r) == (0.5, 0.5)
    assert seg.pixel_precision_recall(empty, gt) == (0.0, 0.0)
    assert seg.pixel_precision_recall(empty, empty) == (1.0, 1.0)


def test_hd95_two_blobs_known_distance():
    gt = np.zeros((64, 64), np.uint8)
    pred = np.zeros_like(gt)
    gt[9:12, 29:32] = 1  # 3x3 blob centred (10, 30)
    pred[9:12, 9:12] = 1  # 3x3 blob centred (10, 10)
    # boundary = 8 pixels each; nearest distances 18 (x3), 19 (x2), 20 (x3) per direction -> p95 = 20
    assert seg.hd95(pred, gt) == pytest.approx(20.0)
    assert seg.hd95(pred, gt, spacing=0.5) == pytest.approx(10.0)
    assert seg.hd95(gt, gt) == 0.0
    one = np.zeros_like(gt)
    one[10, 10] = 1
    two = np.zeros_like(gt)
    two[10, 17] = 1
    assert seg.hd95(one, two) == pytest.approx(7.0)


def test_hd95_empty_cases():
    gt = _square(size=30)
    empty = np.zeros_like(gt)
    assert seg.hd95(empty, empty) == 0.0
    assert seg.hd95(empty, gt) == pytest.approx(np.hypot(30, 30))
    assert seg.hd95(gt, empty, empty_penalty=99.0) == 99.0


def test_per_patient_and_report():
    gt = np.stack([_square(), np.zeros((32, 32), np.uint8), _square(), _square()])
    pred = np.stack([_square(c0=13), np.zeros((32, 32), np.uint8), _square(), np.zeros((32, 32), np.uint8)])
    ids = ["a", "a", "b", "b"]
    vol = seg.per_patient_dice(pred, gt, ids)
    assert vol == {"a": pytest.approx(0.5), "b": pytest.approx(200 / 300)}
    rep = seg.segmentation_figures(pred[..., None].astype(np.float32), gt[..., None], ids)
    assert rep["n_slices"] == 4 and rep["n_tumor_slices"] == 3
    assert rep["dice_tumor_slices"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert rep["dice_end_to_end"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert rep["missed_tumor_slices"] == 1
    assert rep["hd95_detected_px"] == pytest.approx((5.0 + 0.0) / 2)  # the miss is not averaged in
    assert rep["hd95_with_miss_penalty_px"] == pytest.approx((5.0 + 0.0 + np.hypot(32, 32)) / 3)
    assert rep["dice_per_patient"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert [p["patient_id"] for p in rep["per_patient"]] == ["a", "b"]
    assert rep["false_positive_slices"] == 0


def test_hd95_pooled_vs_max_of_directions():
    """medpy pools both directed distances; MONAI takes the larger one-way 95th percentile."""
    gt = np.zeros((64, 64), np.uint8)
    gt[10:40, 10:40] = 1
    pred = gt.copy()
    pred[20:26, 40:52] = 1  # a spike sticking out 12 px: only pred->gt distances grow
    pooled, worst = seg.hd95(pred, gt), seg.hd95(pred, gt, pooling="max")
    assert worst > pooled > 0
    with pytest.raises(ValueError, match="pooling"):
        seg.hd95(pred, gt, pooling="mean")


def test_masks_of_different_sizes_score_without_padding():
    small, big = _square(size=20, r0=2, c0=2), _square(size=40)
    rep = seg.segmentation_figures([small, big], [small, np.zeros_like(big)], ["p", "p"])
    assert rep["dice_tumor_slices"] == 1.0 and rep["false_positive_slices"] == 1
    resized = seg.to_original_size(np.stack([_square(size=16, r0=4, c0=4, side=8)]), [(32, 48)])[0]
    assert resized.shape == (32, 48) and resized.sum() == 16 * 24


def test_score_slices_precision_is_slice_precision():
    """Defect: ``precision`` was the segmentation report's pixel precision overwriting the slice precision."""
    from classseg.evaluation import score_slices

    gt = [_square(), np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)]
    masks = [_square(side=5), _square(), np.zeros((32, 32), np.uint8)]  # 1 TP (pixel-precise), 1 FP, 1 TN
    s = score_slices(gt, masks, ["a", "a", "b"], gate_prob=[0.9, 0.2, 0.1], gate_threshold=0.5)
    assert (s.tp, s.fp, s.tn, s.fn) == (1, 1, 1, 0)
    assert s.precision == pytest.approx(s.tp / (s.tp + s.fp)) == 0.5 and s.pixel_precision == 1.0
    assert s.sensitivity == 1.0 and s.specificity == 0.5
    assert (s.gate_tp, s.gate_fp, s.gate_tn) == (1, 0, 2) and s.gate_precision == 1.0 and s.gate_auc == 1.0
    assert s.resolution == "original slice size"


def test_keras_metrics_accumulate_and_serialize():
    gt = _square()[None, ..., None].astype("float32")
    prob = (_square(c0=13) * 0.9)[None, ..., None].astype("float32")
    d, i, t = DiceCoefficient(), IoUScore(), TverskyScore()
    for m in (d, i, t):
        m.update_state(gt, prob)
    assert float(d.result()) == pytest.approx(0.5)
    assert float(i.result()) == pytest.approx(50 / 150)
    assert float(t.result()) == pytest.approx(50 / (50 + 0.7 * 50 + 0.3 * 50))
    d.update_state(gt, gt)  # accumulated: TP 150, FP 50, FN 50
    assert float(d.result()) == pytest.approx(300 / 400)
    d.reset_state()
    d.update_state(np.zeros_like(gt), np.zeros_like(gt))
    assert float(d.result()) == 1.0
    clone = keras.metrics.deserialize(keras.metrics.serialize(TverskyScore(threshold=0.3, alpha=0.6)))
    assert isinstance(clone, TverskyScore) and (clone.threshold, clone.alpha) == (0.3, 0.6)

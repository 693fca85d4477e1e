"""Classification metrics against a hand-made confusion matrix, threshold search, figures."""

from __future__ import annotations

import numpy as np
import pytest

from classseg.evaluation.classification import classification_metrics, threshold_for_sensitivity
from classseg.models.predict import tumor_probability
from classseg.reporting.plotting import plot_confusion_matrix, plot_roc

# 10 slices: tn=3, fp=1, fn=2, tp=4 at threshold 0.5
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
Y_PROB = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.45, 0.7, 0.8, 0.9, 0.95])


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PROB)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    f1_tumor = 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6)       # 0.72727
    f1_normal = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)  # 0.66667
    assert m["f1_macro"] == pytest.approx((f1_tumor + f1_normal) / 2)
    assert m["f1_micro"] == pytest.approx(0.7)
    # AUC = P(score_pos > score_neg): pairs (6 pos x 4 neg = 24); 0.6 beats 0.1..0.3 only and loses
    # to 0.4 and 0.45 -> 2 losses -> 22/24
    assert m["auc"] == pytest.approx(22 / 24)


def test_two_column_probabilities_and_one_hot_labels():
    probs = np.stack([1 - Y_PROB, Y_PROB], axis=1)
    onehot = np.eye(2)[Y_TRUE]
    assert classification_metrics(onehot, probs) == classification_metrics(Y_TRUE, Y_PROB)
    np.testing.assert_array_equal(tumor_probability(probs), Y_PROB)


def test_threshold_changes_counts():
    m = classification_metrics(Y_TRUE, Y_PROB, threshold=0.4)
    assert m["confusion_matrix"] == [[3, 1], [0, 6]]
    assert m["sensitivity"] == 1.0


def test_single_class_gives_none_for_undefined_values():
    m = classification_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m["auc"] is None and m["sensitivity"] is None and m["precision"] == 0.0
    assert m["specificity"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 samples but y_prob has 2"):
        classification_metrics([0, 1, 1], [0.2, 0.3])


def test_threshold_for_sensitivity_is_highest_reaching_target():
    # positive scores sorted: 0.95 0.9 0.8 0.7 0.45 0.4
    assert threshold_for_sensitivity(Y_TRUE, Y_PROB, 0.5) == pytest.approx(0.8)     # 3 of 6
    assert threshold_for_sensitivity(Y_TRUE, Y_PROB, 0.95) == pytest.approx(0.4)    # 6 of 6
    assert threshold_for_sensitivity(Y_TRUE, Y_PROB, 4 / 6) == pytest.approx(0.7)   # exactly 4 of 6
    for target in (0.5, 0.7, 0.95):
        t = threshold_for_sensitivity(Y_TRUE, Y_PROB, target)
        assert classification_metrics(Y_TRUE, Y_PROB, t)["sensitivity"] >= target
        higher = np.nextafter(t, 1.0)
        assert classification_metrics(Y_TRUE, Y_PROB, higher)["sensitivity"] < target
    # 20 positives, target 0.95 -> exactly 19 caught (guards against 0.95 * 20 = 19.000000000000004)
    y = np.ones(20, int)
    p = np.linspace(0.05, 1.0, 20)
    assert threshold_for_sensitivity(y, p, 0.95) == pytest.approx(p[1])
    with pytest.raises(ValueError):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_plots_are_written(tmp_path):
    cm_path = plot_confusion_matrix([[3, 1], [2, 4]], tmp_path / "cm.png", "test")
    roc_path = plot_roc(Y_TRUE, Y_PROB, tmp_path / "roc.png", "test")
    for path in (cm_path, roc_path):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000

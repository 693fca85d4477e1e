"""Slice-level detection and classification metrics (tumor = positive class 1).

Their figures (confusion matrix, ROC) are drawn by :mod:`classseg.reporting.plotting`.

:func:`detection` scores any yes/no call per slice (a classifier's verdict, or "the delivered mask is
non-empty"); :func:`classification_metrics` adds what a probability allows (threshold, AUC).
A slice is called positive when ``p(tumor) >= threshold``. Definitions (tn, fp, fn, tp from the
confusion matrix ``[[tn, fp], [fn, tp]]``):

    accuracy    = (tp + tn) / n
    precision   = tp / (tp + fp)
    sensitivity = recall = tp / (tp + fn)
    specificity = tn / (tn + fp)
    f1_micro    = F1 of pooled counts over both classes (= accuracy for single-label binary)
    f1_macro    = mean of the per-class F1 scores, 2tp/(2tp+fp+fn) and 2tn/(2tn+fn+fp), an
                  undefined one counting 0 (scikit-learn's zero_division=0; seed 002 reports both)
    auc         = area under the ROC curve of p(tumor) (None when y_true has one class)

Undefined ratios (zero denominator) are reported as ``None``.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from classseg.models.predict import tumor_probability


def _labels(y_true: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:  # one-hot
        y_true = y_true.argmax(axis=1)
    return y_true.reshape(-1).astype(np.int64)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def detection(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Counts and ratios of a yes/no call per slice: tp, fp, tn, fn, accuracy, sensitivity,
    specificity, precision, f1_micro, f1_macro, n (the one definition in classseg)."""
    truth = np.asarray(y_true).reshape(-1).astype(bool)
    call = np.asarray(y_pred).reshape(-1).astype(bool)
    if len(truth) != len(call):
        raise ValueError(f"y_true has {len(truth)} samples but y_pred has {len(call)}")
    tp, fp = int((truth & call).sum()), int((~truth & call).sum())
    tn, fn = int((~truth & ~call).sum()), int((truth & ~call).sum())
    n = tp + fp + tn + fn
    f1_pos, f1_neg = _ratio(2 * tp, 2 * tp + fp + fn) or 0.0, _ratio(2 * tn, 2 * tn + fn + fp) or 0.0
    return {
        "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1_micro": _ratio(tp + tn, n),
        "f1_macro": (f1_pos + f1_neg) / 2 if n else None,
    }


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict:
    """:func:`detection` of ``p(tumor) >= threshold`` plus threshold, AUC and the confusion matrix."""
    y_true = _labels(y_true)
    prob = tumor_probability(y_prob)
    if len(y_true) != len(prob):
        raise ValueError(f"y_true has {len(y_true)} samples but y_prob has {len(prob)}")
    out = detection(y_true == 1, prob >= threshold)
    both = len(np.unique(y_true)) == 2
    out.update(threshold=float(threshold), auc=float(skm.roc_auc_score(y_true, prob)) if both else None,
               confusion_matrix=[[out["tn"], out["fp"]], [out["fn"], out["tp"]]])
    return out


def threshold_for_sensitivity(y_true: np.ndarray, y_prob: np.ndarray, target: float = 0.95) -> float:
    """Highest threshold ``t`` with sensitivity of ``p(tumor) >= t`` at least ``target``.

    Computed on the validation split for the pipeline gate: lowering the gate threshold trades
    specificity for sensitivity, and a missed tumor is the costly error.
    """
    y_true = _labels(y_true)
    prob = tumor_probability(y_prob)
    if not (y_true == 1).any():
        raise ValueError("threshold_for_sensitivity needs at least one positive sample")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    # Candidate thresholds are the positive scores: sensitivity(t) = #(pos >= t) / #pos.
    pos = np.sort(prob[y_true == 1])[::-1]
    k = int(np.ceil(target * len(pos) - 1e-9))  # positives that must be caught
    return float(pos[max(k, 1) - 1])

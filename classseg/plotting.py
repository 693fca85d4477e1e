"""Figures: saved the same way everywhere (no screen needed); confusion matrix and ROC via scikit-learn's
``ConfusionMatrixDisplay`` / ``RocCurveDisplay``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def save_figure(fig: Any, path: str | Path, dpi: int = 120, suffixes: Sequence[str] = (),
                tight: bool = True) -> list[Path]:
    """Lay out, save and close ``fig``; returns the files written.

    ``path`` is written as given, or once per suffix in ``suffixes`` (e.g. ``(".png", ".pdf")``).
    The parent folder is created. The figure is closed so long runs do not accumulate memory.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [path.with_suffix(s) for s in suffixes] or [path]
    if tight:
        fig.tight_layout()
    for target in paths:
        fig.savefig(target, dpi=dpi, bbox_inches="tight" if suffixes else None)
    plt.close(fig)
    return paths


def draw_confusion_matrix(ax: Any, cm: list | np.ndarray, title: str = "") -> None:
    """Draw a 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` (rows = truth) on ``ax``."""
    from sklearn.metrics import ConfusionMatrixDisplay

    disp = ConfusionMatrixDisplay(np.asarray(cm), display_labels=["no tumor", "tumor"])
    disp.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title(title)


def plot_confusion_matrix(cm: list | np.ndarray, path: str | Path, title: str = "") -> Path:
    """Save the 2x2 confusion matrix (rows = truth, columns = prediction) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.6))
    draw_confusion_matrix(ax, cm, title)
    return save_figure(fig, path, dpi=120)[0]


def plot_roc(y_true: np.ndarray, y_prob: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Save the ROC curve of ``p(tumor)`` (with its AUC in the legend) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    from classseg.evaluation.classification import _labels, tumor_probability

    y_true = _labels(y_true)
    prob = tumor_probability(y_prob)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    if len(np.unique(y_true)) == 2:
        RocCurveDisplay.from_predictions(y_true, prob, ax=ax, name="classifier")
    else:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set_title(title)
    return save_figure(fig, path, dpi=120)[0]

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
    from classseg.utils.atomic import atomic_path

    for target in paths:
        with atomic_path(target) as tmp:  # the temporary name keeps the suffix, so the format is unchanged
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if suffixes else None)
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

    from classseg.evaluation.classification import _labels
    from classseg.models.predict import tumor_probability

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


def plot_history(history: Any, panels: Sequence[tuple[str, str]], path: str | Path, ncols: int | None = None,
                 dpi: int = 100) -> Path:
    """Training curves per epoch, one panel per ``(key, title)``: ``key`` and ``val_<key>`` of a Keras
    history table (train vs validation). Special keys: ``learning_rate`` (log scale), ``weights``
    (``w_cls`` / ``w_seg`` loss weights with the learning rate on a second axis); the ``loss`` panel
    also shows ``val_fixed_loss`` when recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.7 * ncols, 3.5 * nrows), squeeze=False)
    epochs = np.arange(1, len(history) + 1)
    for ax, (key, title) in zip(axes.ravel(), panels, strict=False):
        if key == "weights":
            for col in ("w_cls", "w_seg"):
                if col in history:
                    ax.plot(epochs, history[col], marker="o", label=col)
            if "learning_rate" in history:
                ax2 = ax.twinx()
                ax2.plot(epochs, history["learning_rate"], color="gray", linestyle="--", label="lr")
                ax2.set_ylabel("learning rate")
        else:
            if key in history:
                ax.plot(epochs, history[key], marker="o", label="train")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
            if key == "loss" and "val_fixed_loss" in history:
                ax.plot(epochs, history["val_fixed_loss"], marker="s", label="val, fixed weights")
            if key == "learning_rate":
                ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    return save_figure(fig, path, dpi=dpi)[0]


def plot_mean_std(table: Any, metrics: Sequence[str], path: str | Path, label: str = "model",
                  title: str = "") -> Path:
    """One panel per metric, one row per line of ``table`` (a :func:`classseg.reporting.tables.aggregate_seeds` frame):
    the mean as a dot with a ±1 std bar (``<metric>_std``; none for a single run). Rows without the metric
    are left empty; the axis spans the values shown, not 0..1, so small differences stay visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(v) for v in table[label]]
    y = np.arange(len(names))[::-1]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 2.6, 0.32 * len(names) + 1.4),
                             sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        means = np.asarray(table[metric], dtype=float)
        stds = np.asarray(table[f"{metric}_std"], dtype=float) if f"{metric}_std" in table else np.full_like(means,
                                                                                                         np.nan)
        ok = np.isfinite(means)
        ax.errorbar(means[ok], y[ok], xerr=np.nan_to_num(stds[ok]), fmt="o", capsize=3, color="tab:blue")
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, names, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)[0]


def plot_quality_per_minute(minutes: Sequence[float], values: dict[str, Sequence[float]], path: str | Path,
                            title: str = "", aim: float | None = None, xlabel: str = "training minutes") -> Path:
    """Validation figures (one line per name in ``values``) against training minutes, with an optional
    horizontal ``aim`` line; for the quality-per-CPU-minute benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, ys in values.items():
        ax.plot(minutes, ys, marker="o", markersize=3, label=name)
    if aim is not None:
        ax.axhline(aim, color="grey", linestyle="--", linewidth=1, label=f"aim {aim:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation figure")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    return save_figure(fig, path)[0]

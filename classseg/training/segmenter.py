"""Phase 2 of Class-Seg (seed 002, Algorithm 1, lines 10-13): train the ResUNet segmenter from scratch.

Seed 002 trains on the *defect* (tumor) slices only, split 70/15/15, with the Focal Tversky loss and
reports the validation Tversky index. It states no optimiser settings; the defaults below come from
the Kaggle/Coursera "Brain MRI segmentation ResUNet" code it adapted (batch 16, Adam with
lr = 0.05 and epsilon = 0.1, early stopping with patience 20 on the validation loss). Here the best
epoch is chosen on validation Dice instead, and ReduceLROnPlateau is added.

Everything is written to one run folder: ``segmenter.keras`` (best epoch), ``history.csv``,
``metrics.json``, ``metrics.md``, ``splits.csv``, ``manifest.json``, ``training_curves.png`` and
``examples.png`` (seed 002, Figure 4).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.evaluation.segmentation import dice as dice_score
from classseg.plotting import save_figure
from classseg.postprocess import PostprocessConfig, postprocess
from classseg.tables import format_value

log = logging.getLogger(__name__)

WEIGHTS_LABEL = "none (from scratch)"


@dataclass
class SegmenterConfig:
    """Training settings. Defaults: seed 002 where it states them, else the ResUNet notebook it adapted."""

    img_size: int = 256  # seed 002 / dataset native size
    epochs: int = 30
    batch_size: int = 16  # reference notebook's DataGenerator; >= 8 keeps BatchNorm statistics usable
    lr: float = 0.05  # reference notebook: Adam(lr=0.05, epsilon=0.1)
    adam_epsilon: float = 0.1  # large epsilon damps Adam's step; 0.05 is too big with the default 1e-7
    loss: str = "focal_tversky"  # seed 002, eq. 3-4
    tumor_only: bool = True  # seed 002 trains on defect slices only
    augment: bool = True
    patience: int = 20  # EarlyStopping (reference notebook)
    lr_patience: int = 5  # ReduceLROnPlateau
    lr_factor: float = 0.2
    min_lr: float = 1e-6
    seed: int = 0
    width: float = 1.0  # filter multiplier; 1.0 = 1,210,513 parameters
    threshold: float = 0.5
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # seed 002, Algorithm 1
    n_examples: int = 6
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


def predict_masks(model: Any, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Tumor probabilities (N, H, W, 1) float32 for raw 0..255 images (N, H, W, 3), model in inference mode."""
    import tensorflow as tf

    if len(images) == 0:
        shape = tuple(int(d) for d in model.output.shape[1:])
        return np.zeros((0, *shape), np.float32)
    ds = (tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
          .map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE))
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def _select(frame: pd.DataFrame, split: str, tumor_only: bool) -> pd.DataFrame:
    rows = frame[frame["split"] == split]
    if tumor_only:
        rows = rows[rows["tumor"].astype(bool)]
    return rows.reset_index(drop=True)


def evaluate_segmenter(probs: np.ndarray, masks: np.ndarray, patient_ids: np.ndarray,
                       config: SegmenterConfig, truths: list[np.ndarray] | None = None) -> dict[str, Any]:
    """:class:`classseg.evaluation.Scores` of the post-processed masks (what the pipeline delivers), with
    the threshold-only masks under ``threshold_only``.

    Masks are post-processed at the model's size, resized back to each slice's original size and
    scored there against ``truths`` (original-size ground truth; ``masks`` when None, i.e. when the
    arrays were never resized).
    """
    from classseg.evaluation import score_slices, to_original_size

    truths = truths if truths is not None else list(masks.reshape(masks.shape[:3]))
    shapes = [t.shape[:2] for t in truths]
    raw = (probs[..., 0] >= config.threshold).astype(np.uint8)
    processed = postprocess(probs[..., 0], PostprocessConfig(**{**asdict(config.postprocess),
                                                                 "threshold": config.threshold}))
    out = score_slices(truths, to_original_size(processed, shapes), patient_ids).to_dict()
    out["threshold_only"] = score_slices(truths, to_original_size(raw, shapes), patient_ids).to_dict(False)
    return out


def _soft_tversky(probs: np.ndarray, masks: np.ndarray) -> float | None:
    """Soft Tversky index (alpha 0.7, smooth 1) pooled over a set: the figure seed 002 reports (0.89).

    The loss's own definition (:func:`classseg.losses.tversky_index`), not a second one."""
    from classseg.losses import tversky_index

    if len(probs) == 0:
        return None
    return float(np.asarray(tversky_index(masks.astype(np.float32), probs.astype(np.float32)))[0])


def plot_training_curves(history: pd.DataFrame, path: Path) -> Path:
    """Loss, Dice and learning rate per epoch (train vs validation)."""
    from classseg.plotting import plot_history

    panels = [("loss", "loss"), ("dice", "Dice (threshold 0.5)")]
    if "learning_rate" in history:
        panels.append(("learning_rate", "learning rate"))
    return plot_history(history, panels, path)


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = image.astype(np.float32).copy()
    sel = mask.astype(bool)
    out[sel] = 0.55 * out[sel] + 0.45 * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def plot_examples(images: np.ndarray, masks: np.ndarray, preds: np.ndarray, path: Path,
                  titles: list[str] | None = None) -> Path:
    """Seed 002, Figure 4: image | ground truth | overlay of truth | prediction | overlay of prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(max(n, 1), 5, figsize=(12.5, 2.6 * max(n, 1)), squeeze=False)
    heads = ["MRI (pre / FLAIR / post)", "ground truth", "truth overlay", "prediction", "prediction overlay"]
    for i in range(n):
        gt, pr = masks[i].reshape(masks[i].shape[:2]), preds[i].reshape(preds[i].shape[:2])
        panels = [images[i], gt, _overlay(images[i], gt, (255, 0, 0)), pr, _overlay(images[i], pr, (0, 255, 0))]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1 if panel.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
        if titles:
            axes[i, 0].set_ylabel(titles[i], fontsize=7)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no tumor slices in this split", ha="center")
    return save_figure(fig, path, dpi=90)[0]


def write_metrics_md(metrics: dict[str, Any], path: Path) -> Path:
    """A short human-readable table of ``metrics.json`` (:func:`classseg.tables.scores_markdown`)."""
    from classseg.tables import SEGMENTATION_FIELDS, scores_markdown

    facts = [
        f"weights: {metrics['weights']}; image size {metrics['img_size']} px; epochs run "
        f"{metrics['epochs_run']} of {metrics['epochs']} (best epoch {metrics['best_epoch']}); seed "
        f"{metrics['seed']}; loss {metrics['loss']}; trained on "
        f"{'tumor slices only' if metrics['tumor_only'] else 'all slices'} ({metrics['n_train_slices']} slices)",
        f"split file: {metrics['split_file']}",
        f"validation soft Tversky index (seed 002 reports 0.89): "
        f"{format_value(metrics['val'].get('tversky_soft'), 4) or 'n/a'}",
        f"masks thresholded at {metrics.get('threshold', 0.5)}, post-processed ({metrics['postprocess_config']}) "
        "unless 'threshold only'",
    ]
    sections = {"test": metrics, "test, threshold only": metrics["threshold_only"], "val": metrics["val"],
                "val, threshold only": metrics["val"]["threshold_only"]}
    path.write_text(scores_markdown("ResUNet segmenter (seed 002, phase 2)", sections, SEGMENTATION_FIELDS, facts))
    return path


def train_segmenter(
    config: SegmenterConfig | None = None,
    data_dir: str | Path | None = None,
    splits_path: str | Path | None = None,
    out_dir: str | Path = "runs/segmenter",
    strategy: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the ResUNet, evaluate its best epoch on val and test, write the run folder; return metrics.

    ``strategy``: a ``tf.distribute`` strategy (model built and compiled in its scope); the default
    strategy when None. Raises ``FileNotFoundError`` / ``ValueError`` with a one-line message for bad
    data folders or split files.
    """
    import keras
    import tensorflow as tf

    from classseg import data as cdata
    from classseg.evaluation.scores import read_truths
    from classseg.losses import get_loss
    from classseg.metrics import segmentation_metrics
    from classseg.models.resunet import build_resunet
    from classseg.runinfo import set_seed, write_json, write_manifest

    config = config or SegmenterConfig()
    data_dir = Path(data_dir) if data_dir is not None else Path(cdata.DEFAULT_DATA_DIR)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(config.seed)
    if config.batch_size < 8:
        log.warning("batch size %d < 8: BatchNorm batch statistics will be noisy", config.batch_size)

    # ---- data: discover, patient-level split, arrays -------------------------------------------
    frame = cdata.resolve_splits(cdata.discover(data_dir), splits_path, seed=config.seed,
                                 fractions=config.fractions)
    split_file = cdata.save_splits(cdata.split_table(frame), out / "splits.csv")
    train_df = _select(frame, "train", config.tumor_only)
    val_train_df = _select(frame, "val", config.tumor_only)  # monitored during training
    if train_df.empty or val_train_df.empty:
        raise ValueError(f"{data_dir}: the split leaves no {'tumor ' if config.tumor_only else ''}slices in "
                         f"{'train' if train_df.empty else 'val'}; use more patients or another split")
    train = cdata.load_arrays(train_df, config.img_size, progress=progress)
    val_all = cdata.load_arrays(_select(frame, "val", False), config.img_size, progress=progress)
    test_all = cdata.load_arrays(_select(frame, "test", False), config.img_size, progress=progress)
    val_fit = val_all.subset(val_all.labels == 1) if config.tumor_only else val_all

    augment = cdata.build_augmenter(cdata.AugmentConfig(), seed=config.seed) if config.augment else None
    train_ds = cdata.segmentation_dataset(train.images, train.masks, config.batch_size, shuffle=True,
                                          augment=augment, seed=config.seed)
    val_ds = cdata.segmentation_dataset(val_fit.images, val_fit.masks, config.batch_size)

    # ---- model --------------------------------------------------------------------------------
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_resunet((config.img_size, config.img_size, 3), width=config.width)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.adam_epsilon),
            loss=get_loss(config.loss),
            metrics=segmentation_metrics(config.threshold),
        )
    model_path = out / "segmenter.keras"
    callbacks = [
        keras.callbacks.ModelCheckpoint(model_path, monitor="val_dice", mode="max", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_dice", mode="max", factor=config.lr_factor,
                                          patience=config.lr_patience, min_lr=config.min_lr),
        keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=config.patience),
        keras.callbacks.CSVLogger(out / "history.csv"),
    ]
    start = time.perf_counter()
    fit = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                    shuffle=False, verbose=1 if progress else 0)  # train_ds is shuffled by tf.data
    train_seconds = time.perf_counter() - start
    history = pd.DataFrame(fit.history)
    best_epoch = int(np.argmax(history["val_dice"].to_numpy())) + 1

    # ---- evaluate the best epoch in inference mode ---------------------------------------------
    best = keras.models.load_model(model_path)
    val_probs = predict_masks(best, val_all.images, config.batch_size)
    test_probs = predict_masks(best, test_all.images, config.batch_size)
    train_probs = predict_masks(best, train.images, config.batch_size)
    val_tumor = val_all.labels == 1
    metrics: dict[str, Any] = {
        "model": "resunet",
        "weights": WEIGHTS_LABEL,
        "params": int(best.count_params()),
        "img_size": config.img_size,
        "epochs": config.epochs,
        "epochs_run": int(len(history)),
        "best_epoch": best_epoch,
        "seed": config.seed,
        "split_file": str(splits_path) if splits_path else f"{split_file} (computed, seed {config.seed})",
        "data_dir": str(data_dir),
        "loss": config.loss,
        "tumor_only": config.tumor_only,
        "augment": config.augment,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "n_train_slices": len(train),
        "n_val_slices_monitored": len(val_fit),
        "train_seconds": round(train_seconds, 2),
        "evaluated_on": "test split, best epoch (max val_dice), inference mode, threshold 0.5, "
                        "post-processed, scored at the original slice size",
        "threshold": config.threshold,
        **evaluate_segmenter(test_probs, test_all.masks, test_all.frame["patient_id"].to_numpy(), config,
                             truths=read_truths(test_all.frame["mask_path"], [(config.img_size,) * 2] * len(test_all))),
        "postprocess_config": asdict(config.postprocess),
    }
    metrics["val"] = evaluate_segmenter(val_probs, val_all.masks, val_all.frame["patient_id"].to_numpy(), config,
                                        truths=read_truths(val_all.frame["mask_path"],
                                                           [(config.img_size,) * 2] * len(val_all)))
    metrics["val"]["tversky_soft"] = _soft_tversky(val_probs[val_tumor], val_all.masks[val_tumor])
    # BatchNorm check: the same weights in training mode (history, augmented, batch statistics) vs
    # inference mode (moving statistics); a large gap means the moving statistics are off.
    metrics["batchnorm_check"] = {
        "train_dice_training_mode_best_epoch": float(history["dice"].iloc[best_epoch - 1]),
        "train_dice_inference_mode": dice_score(train_probs, train.masks),
        "val_dice_inference_mode": dice_score(val_probs[val_tumor] if config.tumor_only else val_probs,
                                              val_fit.masks),
        "val_dice_history_best_epoch": float(history["val_dice"].iloc[best_epoch - 1]),
    }
    write_json(out / "metrics.json", metrics)
    write_metrics_md(metrics, out / "metrics.md")
    plot_training_curves(history, out / "training_curves.png")

    tumor_idx = np.flatnonzero(test_all.labels == 1)
    pick = tumor_idx[np.linspace(0, len(tumor_idx) - 1, min(config.n_examples, len(tumor_idx))).astype(int)] \
        if len(tumor_idx) else tumor_idx
    preds = (test_probs[pick] >= config.threshold).astype(np.uint8)
    titles = [f"{test_all.frame['patient_id'].iloc[i]} #{test_all.frame['slice'].iloc[i]}\n"
              f"Dice {dice_score(preds[k], test_all.masks[i]):.2f}" for k, i in enumerate(pick)]
    plot_examples(test_all.images[pick], test_all.masks[pick], preds, out / "examples.png", titles)
    write_manifest(out, command="train-segmenter", config=asdict(config), data_dir=str(data_dir),
                   split_file=metrics["split_file"], seed=config.seed, weights=WEIGHTS_LABEL,
                   img_size=config.img_size, epochs=config.epochs, epochs_run=metrics["epochs_run"],
                   strategy=type(strategy).__name__, replicas=int(strategy.num_replicas_in_sync))
    return metrics

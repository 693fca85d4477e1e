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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.data.standardize import SEQUENCES
from classseg.delivery.postprocess import PostprocessConfig
from classseg.evaluation.segmentation import dice as dice_score
from classseg.reporting.plotting import save_figure
from classseg.reporting.tables import format_value

log = logging.getLogger(__name__)

WEIGHTS_LABEL = "none (from scratch)"


@dataclass
class SegmenterConfig:
    """Training settings. Defaults: the recipe of the shipped segmenter (``recipe="fast"``, issue 10);
    ``recipe="paper"`` (:func:`recipe_config`) restores seed 002 and the ResUNet notebook it adapted.

    - ``normalization``: ``patient_percentile`` (each patient's channels scaled so their brain 99th
      percentile hits a fixed target), ``raw`` (0..255 pixels scaled by 1/255 inside the model) or
      ``patient_zscore`` (per-patient foreground z-score); :mod:`classseg.data.standardize`, applied
      beside the model by training and pipeline alike; the model card says which.
    - ``augment_profile``: ``robust`` (:data:`classseg.data.augment.ROBUST_AUGMENT`: ``recipe`` plus
      per-channel gain and gamma, FLAIR for a missing sequence on a quarter of the slices), ``recipe``
      (:data:`classseg.data.augment.RECIPE_AUGMENT`: flips, 90-degree rotations, rotation/scale/shift,
      elastic, intensity, FLAIR for a missing sequence) or ``seeds`` (the seeds' moderate set).
    - ``schedule``: ``cosine`` / ``onecycle`` (epoch-wise, :func:`classseg.training.callbacks.scheduled_lr`)
      or ``plateau`` (ReduceLROnPlateau, the notebook's); ``optimizer``: ``adamw`` or ``adam``.
    - ``minutes``: a wall-clock budget instead of ``epochs`` (``epochs`` then caps the count).
    - ``select_postprocess``: choose threshold / closing / hole filling / minimum component on the
      validation split (:func:`classseg.training.selection.choose_postprocess`) and store them in the card.
    - ``context``: slice context (2.5D, :mod:`classseg.data.context`): each slice is fed with its
      ``context`` neighbours on each side of the same patient as extra channels (3 * (2k + 1) in all);
      0 = one slice (seed 002). The card's ``context_slices``.
    - ``sequences``: ``all`` (the three sequences) or ``flair`` (FLAIR in every channel, in training,
      selection and inference: a model for patients missing pre- and post-contrast;
      :func:`classseg.data.standardize.use_sequences`). The card's ``input_sequences``.
    """

    def __post_init__(self) -> None:
        from classseg.data.context import check_context

        check_context(self.context)
        if self.sequences not in SEQUENCES:
            raise ValueError(f"sequences must be one of {SEQUENCES}, got {self.sequences!r}")

    recipe: str = "fast"
    img_size: int = 128
    epochs: int = 40
    minutes: float | None = None
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    adam_epsilon: float = 1e-7
    schedule: str = "cosine"
    warmup_epochs: int = 1
    loss: str = "bce_dice"
    tumor_only: bool = False  # all slices: the mask itself must say "no tumor" on healthy slices
    augment: bool = True
    # robust + patient_percentile: the shipped segmenter's (docs/recipes.md, issue 17: chosen on val and the
    # val stress sets); raw and patient_zscore stay options, supported end to end.
    augment_profile: str = "robust"
    normalization: str = "patient_percentile"
    patience: int = 0  # EarlyStopping patience on val_dice; 0 = off
    lr_patience: int = 5  # ReduceLROnPlateau (schedule "plateau")
    lr_factor: float = 0.2
    min_lr: float = 1e-6
    seed: int = 0
    width: float = 1.0  # filter multiplier; 1.0 = 1,210,513 parameters
    threshold: float = 0.5
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # seed 002, Algorithm 1
    n_examples: int = 6
    workers: int = 2  # augmentation threads
    select_postprocess: bool = True
    init: str | None = None  # start from this .keras model's weights (same architecture), e.g. a shipped one
    snapshots: bool = False  # keep every epoch's model in snapshots/ (benchmarks/quality_per_minute.py)
    missing_sequence_p: float | None = None  # override the profile's FLAIR-for-missing-sequence probability
    context: int = 0  # slice context (2.5D): neighbours on each side stacked as channels (classseg.data.context)
    sequences: str = "all"  # "flair": FLAIR in every channel (classseg.data.standardize.use_sequences)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


#: Named recipes: ``fast`` is the dataclass default; ``paper`` is seed 002 with the notebook's optimiser.
RECIPES: dict[str, dict[str, Any]] = {
    "fast": {},
    "paper": dict(img_size=256, epochs=30, batch_size=16, optimizer="adam", lr=0.05, adam_epsilon=0.1,
                  weight_decay=0.0, schedule="plateau", loss="focal_tversky", tumor_only=True,
                  augment_profile="seeds", normalization="raw", patience=20, select_postprocess=False),
}


def recipe_config(recipe: str = "fast", **overrides: Any) -> SegmenterConfig:
    """The :class:`SegmenterConfig` of a named recipe (see :data:`RECIPES`) with ``overrides`` applied."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
    return SegmenterConfig(**{**RECIPES[recipe], **overrides, "recipe": recipe})


def model_inputs(arrays: Any, normalization: str, context: int = 0, sequences: str = "all") -> np.ndarray:
    """What the model is fed for :class:`SliceArrays`: raw pixels (uint8, cast per batch) or float32
    per-patient normalised values (:func:`classseg.data.standardize.prepare_input`, the pipeline's
    function), with ``context`` neighbours on each side in slice order (``frame["slice"]``), the channels
    ``sequences`` names (:func:`classseg.data.standardize.use_sequences`)."""
    from classseg.data.context import add_context
    from classseg.data.standardize import prepare_input, use_sequences

    ids = arrays.frame["patient_id"].to_numpy()
    order = arrays.frame["slice"].to_numpy() if "slice" in arrays.frame else None
    if normalization == "raw":
        return add_context(use_sequences(arrays.images, sequences), ids, context, order)
    return prepare_input(arrays.images, normalization, ids, context, order, sequences)


def predict_with_card(model_path: str | Path, frame: pd.DataFrame, batch_size: int = 32,
                      progress: bool = False) -> tuple[Any, np.ndarray, PostprocessConfig, Any]:
    """A saved segmenter on the slices of ``frame`` as its model card says (what the pipeline does).

    Returns the :class:`classseg.data.SliceArrays` at the card's size, the mask probabilities (inputs
    normalised per patient and averaged over the card's flips) and the card's delivery: 2D
    :class:`PostprocessConfig` and per-patient 3D filter (or None), for
    :func:`classseg.delivery.rules.deliver_masks` or :func:`evaluate_segmenter`. Without a card: raw
    pixels at the model's input size, default post-processing."""
    from classseg import data as cdata
    from classseg.models.card import read_card
    from classseg.models.loading import load_model
    from classseg.models.predict import ensemble_runner, predict

    card = read_card(model_path)
    model = load_model(model_path)
    size = card.img_size if card else int(model.input_shape[1])
    arrays = cdata.load_arrays(frame, size, progress=progress)
    x = model_inputs(arrays, card.normalization if card else "raw", card.context_slices if card else 0,
                     card.input_sequences if card else "all")
    runner = ensemble_runner(model, card, model_path) if card else model
    probs = predict(runner, x, batch_size, tta=card.tta if card else "none")["mask"]
    pp = card.mask_postprocess() if card else PostprocessConfig()
    return arrays, probs, pp, card.postprocess_3d_config() if card else None


def _select(frame: pd.DataFrame, split: str, tumor_only: bool) -> pd.DataFrame:
    rows = frame[frame["split"] == split]
    if tumor_only:
        rows = rows[rows["tumor"].astype(bool)]
    return rows.reset_index(drop=True)


def evaluate_segmenter(probs: np.ndarray, masks: np.ndarray, patient_ids: np.ndarray,
                       config: SegmenterConfig, truths: list[np.ndarray] | None = None,
                       config_3d: Any = None, order: Any = None) -> dict[str, Any]:
    """:class:`classseg.evaluation.Scores` of the delivered masks (what the pipeline delivers), with
    the threshold-only masks under ``threshold_only``.

    Masks are post-processed at the model's size (2D, then the per-patient 3D filter ``config_3d`` over
    slices in ``order``), resized back to each slice's original size and scored there against
    ``truths`` (original-size ground truth; ``masks`` when None, i.e. when the arrays were never resized).
    """
    from classseg.delivery.rules import deliver
    from classseg.evaluation import score_slices, to_original_size

    truths = truths if truths is not None else list(masks.reshape(masks.shape[:3]))
    shapes = [t.shape[:2] for t in truths]
    raw = (probs[..., 0] >= config.threshold).astype(np.uint8)
    pp = PostprocessConfig(**{**asdict(config.postprocess), "threshold": config.threshold})
    delivery = deliver(probs, shapes, pp, rule="mask", config_3d=config_3d, groups=patient_ids, order=order)
    out = score_slices(truths, delivery.delivered, patient_ids, calls=delivery.calls).to_dict()
    out["threshold_only"] = score_slices(truths, to_original_size(raw, shapes), patient_ids).to_dict(False)
    return out


def score_segmenter(model: Any, config: SegmenterConfig, val: Any, test: Any | None = None,
                    select: bool | None = None, flair_model: Any | None = None) -> dict[str, Any]:
    """Choose delivery on val and score a segmenter on val, the val stress sets and test.

    ``model``: a keras.Model, a runner, or a list of them (an ensemble: their mean probability,
    :class:`classseg.models.predict.EnsembleRunner`). ``val`` / ``test``: :class:`classseg.data.SliceArrays`
    at the model's size (uint8), fed as ``config.normalization`` and ``config.context`` say. With ``select``
    (default ``config.select_postprocess``) test-time flips, 2D post-processing and the per-patient 3D
    filter are chosen on val together (:func:`classseg.training.selection.choose_delivery`); else the
    config's post-processing is used.
    Returns ``tta``, ``postprocess``, ``postprocess_3d``, ``selection`` (the scored grid or None),
    ``val`` and ``test`` :class:`classseg.evaluation.Scores` dicts (delivered masks at the original
    size, ``threshold_only`` inside), ``val_robustness`` (:func:`classseg.evaluation.robustness.robustness_scores`)
    and the probabilities ``val_probs`` / ``test_probs``. Used by training and ``benchmarks/robust_rows.py``.
    ``flair_model`` (a card's ``flair_only_model``): segments instead of ``model`` the patients whose pre- and
    post-contrast equal FLAIR (:func:`classseg.data.standardize.flair_only_rows`), as the pipeline does; the
    FLAIR-only stress set is then all its.
    """
    from classseg.data.standardize import flair_only_rows, prepare_input
    from classseg.evaluation.robustness import robustness_scores
    from classseg.evaluation.scores import read_truths
    from classseg.models.predict import EnsembleRunner, make_runner, predict, route_flair_only
    from classseg.training.selection import choose_delivery

    select = config.select_postprocess if select is None else select
    # one compiled call for every set, flip and stress test; a list of models = their mean (an ensemble)
    runner = EnsembleRunner([make_runner(m) for m in model]) if isinstance(model, (list, tuple)) \
        else make_runner(model)
    flair_runner = make_runner(flair_model) if flair_model is not None else None

    def probs_of(images: np.ndarray, ids: np.ndarray, order: np.ndarray, mode: str) -> np.ndarray:
        x = prepare_input(images, config.normalization, ids, config.context, order, config.sequences)
        probs = predict(runner, x, config.batch_size, tta=mode)["mask"]
        rows = flair_only_rows(images, ids) if flair_runner is not None else None
        return route_flair_only(probs, rows, flair_runner, x, config.batch_size, mode)

    def parts(arrays: Any) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        return (read_truths(arrays.frame["mask_path"]), arrays.frame["patient_id"].to_numpy(),
                arrays.frame["slice"].to_numpy())

    val_truths, val_ids, val_order = parts(val)
    chosen, selection, tta, chosen_3d = replace(config.postprocess, threshold=config.threshold), None, "none", None
    val_probs = probs_of(val.images, val_ids, val_order, "none")
    if select and len(val_probs):
        by_tta = {"none": val_probs, **{m: probs_of(val.images, val_ids, val_order, m) for m in ("hflip", "flips")}}
        tta, chosen, chosen_3d, selection = choose_delivery(by_tta, val_truths, val_ids, val_order)
        val_probs = by_tta[tta]
    eval_config = replace(config, threshold=chosen.threshold, postprocess=chosen)
    out: dict[str, Any] = {
        "tta": tta, "postprocess": chosen, "postprocess_3d": chosen_3d, "selection": selection,
        "val": evaluate_segmenter(val_probs, val.masks, val_ids, eval_config, val_truths, chosen_3d, val_order),
        # the robustness check (issue 17): val patients darker, brighter, with FLAIR for missing sequences
        "val_robustness": robustness_scores(lambda images: probs_of(images, val_ids, val_order, tta), val.images,
                                            val_truths, val_ids, chosen, chosen_3d, val_order, plain_probs=val_probs),
        "val_probs": val_probs, "test": None, "test_probs": None,
    }
    if test is not None:
        test_truths, test_ids, test_order = parts(test)
        out["test_probs"] = probs_of(test.images, test_ids, test_order, tta)
        out["test"] = evaluate_segmenter(out["test_probs"], test.masks, test_ids, eval_config, test_truths,
                                         chosen_3d, test_order)
    return out


def _soft_tversky(probs: np.ndarray, masks: np.ndarray) -> float | None:
    """Soft Tversky index (alpha 0.7, smooth 1) pooled over a set: the figure seed 002 reports (0.89).

    The loss's own definition (:func:`classseg.models.losses.tversky_index`), not a second one."""
    from classseg.models.losses import tversky_index

    if len(probs) == 0:
        return None
    return float(np.asarray(tversky_index(masks.astype(np.float32), probs.astype(np.float32)))[0])


def plot_training_curves(history: pd.DataFrame, path: Path) -> Path:
    """Loss, Dice and learning rate per epoch (train vs validation)."""
    from classseg.reporting.plotting import plot_history

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
    """A short human-readable table of ``metrics.json`` (:func:`classseg.reporting.tables.scores_markdown`)."""
    from classseg.reporting.tables import DETECTION_FIELDS, SEGMENTATION_FIELDS, scores_markdown
    from classseg.utils.atomic import atomic_write_text

    facts = [
        f"weights: {metrics['weights']}; image size {metrics['img_size']} px; epochs run "
        f"{metrics['epochs_run']} of {metrics['epochs']} (best epoch {metrics['best_epoch']}); seed "
        f"{metrics['seed']}; loss {metrics['loss']}; trained on "
        f"{'tumor slices only' if metrics['tumor_only'] else 'all slices'} ({metrics['n_train_slices']} slices)",
        f"split file: {metrics['split_file']}",
        f"validation soft Tversky index (seed 002 reports 0.89): "
        f"{format_value(metrics['val'].get('tversky_soft'), 4) or 'n/a'}",
        f"recipe {metrics.get('recipe')}, input {metrics.get('normalization')}, {metrics.get('train_minutes')} "
        f"training minutes on {metrics.get('machine')}",
        f"masks thresholded at {metrics.get('threshold', 0.5)}, post-processed ({metrics['postprocess_chosen']}; "
        f"{metrics.get('postprocess_rule')}) unless 'threshold only'",
        f"test-time flips: {metrics.get('tta', 'none')}; per-patient 3D filter: "
        f"{metrics.get('postprocess_3d') or 'off'}",
    ]
    robust = metrics.get("val_robustness") or {}
    if robust:
        facts.append("val robustness, Dice per patient: " + ", ".join(
            f"{name} {format_value(v.get('dice_per_patient'), 3)}" for name, v in robust.items()))
    sections = {"test": metrics, "test, threshold only": metrics["threshold_only"], "val": metrics["val"],
                "val, threshold only": metrics["val"]["threshold_only"]}
    atomic_write_text(path, scores_markdown("ResUNet segmenter (seed 002, phase 2)", sections,
                                            DETECTION_FIELDS + SEGMENTATION_FIELDS, facts))
    return path


def _callbacks(config: SegmenterConfig, out: Path, state: Any, model_path: Path) -> list[Any]:
    import keras

    from classseg.training.callbacks import resumable_callbacks

    extra: list[Any] = []
    if config.schedule == "plateau":
        extra.append(keras.callbacks.ReduceLROnPlateau(monitor="val_dice", mode="max", factor=config.lr_factor,
                                                       patience=config.lr_patience, min_lr=config.min_lr))
    if config.patience > 0:
        extra.append(keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=config.patience))
    return resumable_callbacks(out, state, model_path, "val_dice", config.lr, config.schedule, config.epochs,
                               config.warmup_epochs, config.minutes, extra, snapshots=config.snapshots)


def weights_label(config: SegmenterConfig) -> str:
    """How the run's weights began: from scratch, or the model file it was initialised from."""
    return WEIGHTS_LABEL if not config.init else f"initialised from {config.init} (in-domain)"


def init_from(model: Any, path: str | Path) -> None:
    """Copy the weights of the model saved at ``path`` into ``model`` (in-domain transfer learning).

    Raises ``ValueError`` naming the file when the architectures differ (layer count or shapes)."""
    import keras

    source = keras.models.load_model(path, compile=False)
    weights = source.get_weights()
    shapes = [w.shape for w in weights]
    if shapes != [tuple(w.shape) for w in model.weights]:
        raise ValueError(f"{path}: its weights do not fit this model (a different architecture, width or input); "
                         f"{len(shapes)} vs {len(model.weights)} weight arrays")
    model.set_weights(weights)


def _optimizer(config: SegmenterConfig) -> Any:
    import keras

    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay,
                                      epsilon=config.adam_epsilon)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.adam_epsilon)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected adamw or adam")


def train_segmenter(
    config: SegmenterConfig | None = None,
    data_dir: str | Path | None = None,
    splits_path: str | Path | None = None,
    out_dir: str | Path = "runs/segmenter",
    strategy: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the ResUNet, evaluate its best epoch on val and test, write the run folder; return metrics.

    Resumable: rerun the same call on an interrupted run folder and it goes on at the next epoch
    (``backup/``, ``train_state.json``). Backend-agnostic (TensorFlow, JAX, PyTorch Keras).
    ``strategy``: a ``tf.distribute`` strategy (TensorFlow only; model built and compiled in its scope).
    Raises ``FileNotFoundError`` / ``ValueError`` with a one-line message for bad data folders or split files.
    """
    import contextlib
    from functools import partial

    import keras

    from classseg import data as cdata
    from classseg.data.augment import AUGMENT_PROFILES, augment_value_scale, build_augmenter
    from classseg.data.context import context_channels
    from classseg.data.sequence import ArraySequence
    from classseg.data.standardize import model_input_scale
    from classseg.models.losses import get_loss
    from classseg.models.metrics import segmentation_metrics
    from classseg.models.resunet import build_resunet
    from classseg.training.run import open_run
    from classseg.utils.environment import machine
    from classseg.utils.guards import check_start_models
    from classseg.utils.jsonio import write_json

    config = config or SegmenterConfig()
    if config.batch_size < 8:
        log.warning("batch size %d < 8: BatchNorm batch statistics will be noisy", config.batch_size)
    # folder, identity (a resume with other settings is refused), seed, resumable state
    run = open_run(out_dir, "train-segmenter", data_dir, splits_path, config, config.seed)
    out, data_dir, state = run.out, run.data_dir, run.state

    # ---- data: discover, patient-level split, arrays, normalisation ------------------------------
    frame = run.resolve_split(config.fractions)
    skipped = list(frame.attrs.get("skipped", []))
    # a starting model must not have trained on this run's val / test patients (issue 18; LeakageError)
    # (val may stay val: fine-tuning on the starting weights' own split chooses on the same val patients)
    leakage = check_start_models(cdata.split_table(frame), [config.init], val_may_stay_val=True) \
        if config.init else []
    run.save_split()
    train_df = _select(frame, "train", config.tumor_only)
    val_fit_df = _select(frame, "val", config.tumor_only)  # monitored during training
    if train_df.empty or val_fit_df.empty:
        raise ValueError(f"{data_dir}: the split leaves no {'tumor ' if config.tumor_only else ''}slices in "
                         f"{'train' if train_df.empty else 'val'}; use more patients or another split")
    train = cdata.load_arrays(train_df, config.img_size, progress=progress)
    val_all = cdata.load_arrays(_select(frame, "val", False), config.img_size, progress=progress)
    train_x = model_inputs(train, config.normalization, config.context, config.sequences)
    val_x = model_inputs(val_all, config.normalization, config.context, config.sequences)
    fit_idx = np.flatnonzero(val_all.labels == 1) if config.tumor_only else np.arange(len(val_all))

    aug_config = AUGMENT_PROFILES[config.augment_profile]
    if config.missing_sequence_p is not None:
        aug_config = replace(aug_config, flair_for_missing_p=float(config.missing_sequence_p))
    make_aug = partial(build_augmenter, aug_config, float_input=config.normalization != "raw",
                       value_scale=augment_value_scale(config.normalization)) if config.augment else None
    train_seq = ArraySequence(train_x, train.masks, config.batch_size, shuffle=True, make_augmenter=make_aug,
                              seed=config.seed, workers=config.workers)
    val_seq = ArraySequence(val_x[fit_idx], val_all.masks[fit_idx], config.batch_size)

    # ---- model --------------------------------------------------------------------------------
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_resunet((config.img_size, config.img_size, context_channels(config.context)),
                              width=config.width, input_scale=model_input_scale(config.normalization))
        if config.init:
            init_from(model, config.init)
        model.compile(optimizer=_optimizer(config), loss=get_loss(config.loss),
                      metrics=segmentation_metrics(config.threshold))
    model_path = out / "segmenter.keras"
    max_epochs = config.epochs
    run.started = time.perf_counter()
    model.fit(train_seq, validation_data=val_seq, epochs=max_epochs,
              callbacks=_callbacks(config, out, state, model_path), verbose=1 if progress else 2)
    train_seconds = run.train_seconds()
    write_json(out / "training.json", {
        "config": asdict(config), "data_dir": str(data_dir), "n_train_slices": len(train),
        "n_val_slices_monitored": len(fit_idx), "train_seconds": round(train_seconds, 2),
        "machine": machine(), "backend": keras.backend.backend(),
        "skipped_files": skipped, "leakage_check": leakage, "split_file": run.split_fields()["split_file"],
        "strategy": type(strategy).__name__ if strategy else "none"})
    del train_seq, val_seq, train_x
    return evaluate_segmenter_run(out, data_dir, splits_path, config, progress=progress)


def evaluate_segmenter_run(out_dir: str | Path, data_dir: str | Path, splits_path: str | Path | None = None,
                           config: SegmenterConfig | None = None, progress: bool = True,
                           select_postprocess: bool | None = None) -> dict[str, Any]:
    """Score a run folder's best model on val and test at the slices' original size, choose the
    post-processing on val, and write ``metrics.json/md``, the model card, figures and the manifest.

    Called at the end of :func:`train_segmenter`; also on its own (``train-segmenter --evaluate-only``)
    to re-score a model trained elsewhere (e.g. on a GPU machine fed down-sized copies of the slices).
    """
    import keras

    from classseg.models.card import ModelCard, write_card
    from classseg.training.callbacks import RunState
    from classseg.training.run import TrainingRun, finish_run
    from classseg.utils.atomic import atomic_to_csv
    from classseg.utils.jsonio import read_json, write_json

    out = Path(out_dir)
    training = read_json(out / "training.json")
    if config is None:
        known = {f for f in SegmenterConfig.__dataclass_fields__}
        raw = {k: v for k, v in training["config"].items() if k in known}
        raw["postprocess"] = PostprocessConfig(**raw.get("postprocess", {}))
        raw["fractions"] = tuple(raw.get("fractions", (0.7, 0.15, 0.15)))
        config = SegmenterConfig(**raw)
    if select_postprocess is not None:
        config = replace(config, select_postprocess=select_postprocess)
    state = RunState(out / "train_state.json")
    history = pd.read_csv(out / "history.csv")
    best_epoch = int(state.values.get("best_epoch", int(np.argmax(history["val_dice"].to_numpy())) + 1))
    train_seconds = float(training["train_seconds"])
    model_path = out / "segmenter.keras"
    # the run being scored (its split as it was trained on; run.json, curves and manifest at the end)
    run = TrainingRun(out=out, command="train-segmenter", data_dir=Path(data_dir),
                      splits_path=Path(splits_path) if splits_path else None, seed=config.seed)
    run.resolve_split(config.fractions)
    parts = run.arrays(config.img_size, progress, splits=("val", "test"), required=())
    val_all, test_all = parts["val"], parts["test"]
    split_file = training.get("split_file")

    # ---- evaluate the best epoch in inference mode, at the slices' original size ----------------
    best = keras.models.load_model(model_path, compile=False)
    scored = score_segmenter(best, config, val_all, test_all)
    chosen, chosen_3d, tta = scored["postprocess"], scored["postprocess_3d"], scored["tta"]
    if scored["selection"] is not None:
        atomic_to_csv(scored["selection"], out / "postprocess_selection.csv", index=False)
    test_probs = scored["test_probs"]
    minutes = train_seconds / 60.0
    metrics: dict[str, Any] = {
        "model": "resunet",
        "recipe": config.recipe,
        "weights": weights_label(config),
        "params": int(best.count_params()),
        "img_size": config.img_size,
        "normalization": config.normalization,
        "epochs": config.epochs,
        "minutes_budget": config.minutes,
        "epochs_run": int(len(history)),
        "best_epoch": best_epoch,
        "seed": config.seed,
        "split_file": split_file,
        "data_dir": str(data_dir),
        "trained_on": training.get("data_dir"),
        "loss": config.loss,
        "tumor_only": config.tumor_only,
        "augment": config.augment,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "n_train_slices": training["n_train_slices"],
        "n_val_slices_monitored": training["n_val_slices_monitored"],
        "train_seconds": round(train_seconds, 2),
        "train_minutes": round(minutes, 2),
        "machine": training["machine"],
        "backend": training.get("backend"),
        "skipped_files": training.get("skipped_files", []),
        "scored_at": "original slice size",
        "evaluated_on": "test split, best epoch (max val_dice), inference mode, threshold and post-processing "
                        "chosen on val (postprocess_chosen), scored at the original slice size",
        "threshold": chosen.threshold,
        **scored["test"],
        "postprocess_chosen": asdict(chosen),
        "tta": tta,
        "postprocess_3d": asdict(chosen_3d) if chosen_3d else None,
        "postprocess_rule": "max over flips x 2D grid x 3D filter of mean(volume Dice per patient, slice accuracy "
                            "of 'mask non-empty') on the validation split" if scored["selection"] is not None
        else "fixed",
    }
    metrics["val"] = scored["val"]
    metrics["val_robustness"] = scored["val_robustness"]
    val_tumor = val_all.labels == 1
    metrics["val"]["tversky_soft"] = _soft_tversky(scored["val_probs"][val_tumor], val_all.masks[val_tumor])
    write_json(out / "metrics.json", metrics)
    write_metrics_md(metrics, out / "metrics.md")
    write_card(model_path, ModelCard(
        role="segmenter", img_size=config.img_size, normalization=config.normalization,
        context_slices=config.context, input_sequences=config.sequences,
        postprocess=asdict(chosen), tta=tta,  # mask threshold: postprocess.threshold
        postprocess_3d=asdict(chosen_3d) if chosen_3d else None,
        provenance={"recipe": config.recipe, "split_file": metrics["split_file"], "epochs_run": metrics["epochs_run"],
                    "best_epoch": best_epoch, "train_minutes": metrics["train_minutes"],
                    "machine": metrics["machine"], "loss": config.loss, "width": config.width,
                    "val": {k: metrics["val"].get(k) for k in ("dice_tumor_slices", "dice_per_patient",
                                                               "hd95_detected_px", "accuracy", "sensitivity")},
                    "val_robustness": metrics["val_robustness"]}))

    tumor_idx = np.flatnonzero(test_all.labels == 1)
    pick = tumor_idx[np.linspace(0, len(tumor_idx) - 1, min(config.n_examples, len(tumor_idx))).astype(int)] \
        if len(tumor_idx) else tumor_idx
    preds = (test_probs[pick] >= chosen.threshold).astype(np.uint8)
    titles = [f"{test_all.frame['patient_id'].iloc[i]} #{test_all.frame['slice'].iloc[i]}\n"
              f"Dice {dice_score(preds[k], test_all.masks[i]):.2f}" for k, i in enumerate(pick)]
    plot_examples(test_all.images[pick], test_all.masks[pick], preds, out / "examples.png", titles)
    # run.json, training curves and manifest.json (split / seed / weights fields from the one record)
    record = replace(run.record(
        kind="segmenter", model="resunet", weights=weights_label(config), img_size=config.img_size,
        epochs=config.epochs, epochs_run=metrics["epochs_run"], best_epoch=best_epoch,
        train_minutes=metrics["train_minutes"], normalization=config.normalization, val=scored["val"],
        test=scored["test"], machine=training["machine"], recipe=config.recipe, params=metrics["params"],
        trained_on=training.get("data_dir"), threshold=chosen.threshold, tta=tta),
        split_file=metrics["split_file"] or run.split_fields()["split_file"])
    finish_run(out, record, history, plot_training_curves, config=asdict(config),
               trained_on=training.get("data_dir"), skipped_files=metrics["skipped_files"],
               strategy=training.get("strategy"), training_backend=training.get("backend"),
               evaluation_backend=keras.backend.backend())
    return metrics

"""Train and evaluate the joint classification + segmentation model (seed 000, options from 001 and 004).

Seed 000 (Ravikiran et al., Sec. III "Multi-Task Learning Objective" and "Training Configuration"):
``L = lambda_cls * CE + lambda_seg * Dice`` with (1.0, 1.5) (eq. 7), AdamW with lr 1e-4 and weight
decay 1e-4, cosine annealing, batch 16, 21-25 epochs; the mask is thresholded at 0.5 and closed
morphologically. Options: focal loss for the class output (seed 001, eq. 12, alpha 0.25, gamma 2),
seed 001's loss-weight schedules (:mod:`classseg.training.schedules`) and seed 004's multi-scale
class head. Two architectures: seed 000's ResNet-50 U-Net (:func:`classseg.models.joint.build_joint_model`)
and seed 002's ResUNet with the same head (:func:`classseg.models.resunet.build_resunet_joint`), the
latter so that joint and two-stage share one architecture (issue 11, :mod:`classseg.training.multitask`).

Implementation choices (where the seeds are silent or differ from this project):

* Every slice is used (tumor-free slices have empty masks); the class target of a slice is
  "its (augmented) mask is non-empty" (design.md "Labels"), derived per batch by
  :class:`classseg.data.sequence.ArraySequence` (``target="both"``) after the segmenter recipe's
  augmentation (``augment=True``).
* The patient-level split is the project's (``classseg.data.resolve_splits``, 70/15/15 by
  default) so phases are comparable; seed 000 uses 80/10/10 and stratified batches (not done here).
* The loss weights are two ``keras.Variable`` given to ``compile(loss_weights=...)`` and set each
  epoch by :class:`~classseg.training.schedules.LossWeightScheduler`. The best epoch is chosen on
  ``val_fixed_loss = lambda_cls * val_CE + lambda_seg * val_Dice`` (constant weights), since the
  scheduled ``val_loss`` changes meaning from epoch to epoch. A zero base weight trains one task only
  (the single-task arms); ``val_fixed_loss`` is then that task's loss.
* Cosine decay is per step (``keras.optimizers.schedules.CosineDecay`` over all training steps).
* Evaluation is phase 3's (:func:`classseg.evaluation.score_slices`): what the pipeline would deliver
  with this model (:func:`classseg.delivery.rules.deliver`: mask threshold 0.5, closing, hole filling:
  the project's ``PostprocessConfig`` default; seed 000 states closing only; gate rule ``gate`` on
  P(tumor) = softmax[:, 1] >= 0.5), resized back to the slice's original size, detection counting the
  rule's final calls, with the class output's own figures as ``gate_*``; ``select_gate`` chooses the
  class threshold and gate rule on val instead (the two-stage gate's rule, same calls). The card
  records the class threshold (``class_threshold``) apart from the mask threshold
  (``postprocess.threshold``), so ``python -m classseg.pipeline --joint`` delivers what was scored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.delivery.postprocess import PostprocessConfig
from classseg.reporting.plotting import plot_history
from classseg.training.schedules import SCHEDULES
from classseg.utils.atomic import atomic_write_text, save_model

log = logging.getLogger(__name__)

CLASS_LOSSES = ("ce", "focal")
MODEL_FILE = "joint.keras"
CHECKPOINT_FILE = "best.weights.h5"  # during training only
#: What an interrupted run leaves to resume from: Keras' backup of the last epoch, the best epoch's weights.
RESUME_EVIDENCE = ("backup", CHECKPOINT_FILE)


ARCHITECTURES = ("resnet50_unet", "resunet")


@dataclass
class JointConfig:
    """Joint-model training settings; defaults are seed 000's (schedule / focal / multi-scale off).

    - ``architecture``: ``resnet50_unet`` (seed 000: ImageNet ResNet-50 encoder, U-Net decoder) or
      ``resunet`` (the two-stage arm's ResUNet with a class head, :func:`classseg.models.resunet.build_resunet_joint`,
      trained from scratch or from ``init``): the fair, CPU-sized comparison of issue 11.
    - ``lambda_cls`` / ``lambda_seg``: one of them 0 trains a single-task model on the same
      architecture (its verdict is then the mask's, ``gate_rule: mask``, or its mask is not scored).
    - ``init``: a ``.keras`` model whose layers with the same names and shapes are copied in
      (:func:`init_by_name`), e.g. the shipped segmenter into a ``resunet`` joint model. Its split (model
      card / run folder) is checked for leakage before training (:func:`classseg.utils.guards.check_start_models`).
    - ``normalization``: the input the model is fed (``raw``, ``patient_zscore``, ``patient_percentile``;
      :func:`classseg.data.standardize.prepare_input`); None = the ``init`` model's card's (``raw`` without
      ``init`` or card), so a model is fine-tuned on what it was trained on. Written to ``joint.card.json``.
      ``resnet50_unet`` carries ImageNet preprocessing and takes ``raw`` only.
    """

    architecture: str = "resnet50_unet"
    width: float = 1.0  # resunet filter multiplier
    init: str | None = None
    normalization: str | None = None  # None: the init model's card's, else raw
    weights: str | None = "imagenet"  # resnet50_unet: "imagenet", None (random init) or a no-top weights file
    img_size: int = 224  # seed 000, eq. 4-5
    epochs: int = 25  # seed 000: 21-25
    batch_size: int = 16
    lr: float = 1e-4  # AdamW (seed 000)
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" (seed 000: cosine annealing) or "constant"
    lambda_cls: float = 1.0  # seed 000, eq. 7
    lambda_seg: float = 1.5
    schedule: str = "fixed"  # fixed | freeze | dynamic (seed 001, eq. 13-15)
    class_loss: str = "ce"  # ce (seed 000) | focal (seed 001, eq. 12)
    focal_alpha: float = 0.25  # seed 001
    focal_gamma: float = 2.0
    multiscale_head: bool = False  # seed 004
    dropout: float = 0.5  # seed 000
    seed: int = 0
    augment: bool = False
    # augmentation set (classseg.data.augment.AUGMENT_PROFILES) and, when given, the FLAIR-for-missing-sequence
    # probability: a model fine-tuned from a segmenter keeps that segmenter's recipe, or it forgets what the
    # recipe taught it (a patient missing pre- and post-contrast)
    augment_profile: str = "recipe"
    missing_sequence_p: float | None = None
    threshold: float = 0.5  # class gate and mask threshold (seed 000)
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # project-wide split (seed 000: 80/10/10)
    infer_batch: int = 16  # batch size of the latency measurement
    run_eagerly: bool = False  # tests / debugging: skips tf.function tracing (~45 s CPU for ResNet-50)
    # choose the class threshold and the gate rule on val (classseg.training.selection.choose_gate, the
    # two-stage gate's selection): the class output gates only where it beats "mask non-empty" on val
    select_gate: bool = False
    workers: int = 2  # augmentation threads
    save_predictions: bool = True  # predictions_{val,test}.npz, for two-stage combinations (classseg.evaluation)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The trained outputs: ``("class", "mask")``, or one of them when the other's weight is 0."""
        return tuple(t for t, w in (("class", self.lambda_cls), ("mask", self.lambda_seg)) if w > 0)

    def __post_init__(self) -> None:
        from classseg.data.augment import AUGMENT_PROFILES

        if self.augment_profile not in AUGMENT_PROFILES:
            raise ValueError(f"unknown augment_profile {self.augment_profile!r}; "
                             f"choose one of {sorted(AUGMENT_PROFILES)}")
        if self.missing_sequence_p is not None and not 0.0 <= self.missing_sequence_p <= 1.0:
            raise ValueError(f"missing_sequence_p must be in [0, 1], got {self.missing_sequence_p}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.lambda_cls < 0 or self.lambda_seg < 0 or self.lambda_cls + self.lambda_seg <= 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got ({self.lambda_cls}, {self.lambda_seg})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.class_loss not in CLASS_LOSSES:
            raise ValueError(f"unknown class loss {self.class_loss!r}; choose one of {', '.join(CLASS_LOSSES)}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        step = 32 if self.architecture == "resnet50_unet" else 16
        if self.img_size < step or self.img_size % step:
            raise ValueError(f"img_size must be a positive multiple of {step} for {self.architecture}, "
                             f"got {self.img_size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        from classseg.data.standardize import NORMALIZATIONS

        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.architecture == "resnet50_unet" and self.normalization not in (None, "raw"):
            raise ValueError("resnet50_unet carries ImageNet preprocessing inside: normalization must be raw, "
                             f"got {self.normalization!r}")


def input_normalization(config: JointConfig) -> str:
    """What the model is fed: ``config.normalization``, else the ``init`` model's card's, else ``raw``.
    A ``resnet50_unet`` is always fed raw pixels (its ImageNet preprocessing is a layer)."""
    if config.normalization is not None:
        return config.normalization
    if config.init and config.architecture == "resunet":
        from classseg.models.card import read_card

        card = read_card(config.init)
        return card.normalization if card is not None else "raw"
    return "raw"


def joint_inputs(arrays: Any, normalization: str) -> np.ndarray:
    """The model inputs of :class:`~classseg.data.SliceArrays`: raw pixels (uint8, cast per batch) or float32
    per-patient normalised pixels (:func:`classseg.data.standardize.prepare_input`, the pipeline's function)."""
    from classseg.data.standardize import prepare_input

    if normalization == "raw":
        return arrays.images
    return prepare_input(arrays.images, normalization, arrays.frame["patient_id"].to_numpy())


def weights_label(config: JointConfig | str | Path | None) -> str:
    """How the model's weights began, for labelling results: ``imagenet``, ``none (random init)``, a
    weights file, or ``initialised from <model> (in-domain)`` when ``config.init`` is set."""
    if isinstance(config, JointConfig):
        if config.init:
            return f"initialised from {config.init} (in-domain)"
        if config.architecture == "resunet":
            return "none (from scratch)"
        config = config.weights
    from classseg.models.names import parse_weights

    return parse_weights(config) or "none (random init)"


# ---------------------------------------------------------------------------------------------- model
def model_name(config: JointConfig) -> str:
    """``joint_resnet50_unet`` / ``joint_resunet`` (+ ``_multiscale``, + ``_freeze`` / ``_dynamic`` for those
    loss-weight schedules); ``seg_only_`` / ``cls_only_`` prefixes for single-task runs. Every name of a
    model with both tasks contains "joint"."""
    base = config.architecture + ("_multiscale" if config.multiscale_head else "")
    tasks = config.tasks
    if len(tasks) == 2:
        return f"joint_{base}" + ("" if config.schedule == "fixed" else f"_{config.schedule}")
    return f"{'seg' if tasks == ('mask',) else 'cls'}_only_{base}"


def build_model(config: JointConfig) -> Any:
    """The joint model of ``config.architecture`` (see :class:`JointConfig`), initialised from ``config.init``."""
    size = (config.img_size, config.img_size, 3)
    if config.architecture == "resunet":
        from classseg.data.standardize import model_input_scale
        from classseg.models.resunet import build_resunet_joint

        model = build_resunet_joint(size, width=config.width, multiscale_head=config.multiscale_head,
                                    dropout=config.dropout, name=model_name(config),
                                    input_scale=model_input_scale(input_normalization(config)))
    else:
        from classseg.models.joint import build_joint_model
        from classseg.models.names import parse_weights

        weights = parse_weights(config.weights)
        model = build_joint_model(size, weights=weights, multiscale_head=config.multiscale_head,
                                  dropout=config.dropout, name=model_name(config))
    if config.init:
        init_by_name(model, config.init)
    return model


def init_by_name(model: Any, path: str | Path) -> list[str]:
    """:func:`classseg.models.loading.copy_weights_by_name`, logged: e.g. the shipped segmenter's encoder
    and decoder into a ``resunet`` joint model, whose class head stays newly initialised."""
    from classseg.models.loading import copy_weights_by_name

    copied = copy_weights_by_name(model, path)
    log.info("initialised %d layers from %s", len(copied), path)
    return copied


# ---------------------------------------------------------------------------------------------- training
def _class_loss(config: JointConfig) -> Any:
    import keras

    if config.class_loss == "focal":  # seed 001, eq. 12
        return keras.losses.CategoricalFocalCrossentropy(alpha=config.focal_alpha, gamma=config.focal_gamma,
                                                         name="focal")
    return keras.losses.CategoricalCrossentropy(name="ce")


def compile_joint(model: Any, config: JointConfig, steps_per_epoch: int) -> tuple[Any, Any]:
    """Compile with AdamW (+ cosine decay) and ``loss_weights`` held in two ``keras.Variable``.

    Returns ``(w_cls, w_seg)``, the variables a :class:`LossWeightScheduler` assigns. Call inside the
    strategy scope.
    """
    import keras

    from classseg.models.losses import DiceLoss
    from classseg.models.metrics import DiceCoefficient

    w_cls = keras.Variable(config.lambda_cls, trainable=False, dtype="float32", name="loss_weight_class")
    w_seg = keras.Variable(config.lambda_seg, trainable=False, dtype="float32", name="loss_weight_mask")
    lr: Any = config.lr
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
        loss={"class": _class_loss(config), "mask": DiceLoss()},
        loss_weights={"class": w_cls, "mask": w_seg},
        metrics={"class": [keras.metrics.CategoricalAccuracy(name="accuracy")],
                 "mask": [DiceCoefficient(config.threshold)]},
        run_eagerly=config.run_eagerly,
    )
    return w_cls, w_seg


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_joint(tumor_prob: np.ndarray, mask_prob: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                   patient_ids: np.ndarray, config: JointConfig, truths: list[np.ndarray] | None = None,
                   gate_threshold: float | None = None, gate_rule: str = "gate") -> dict[str, Any]:
    """:class:`classseg.evaluation.Scores` of one set, as the pipeline would deliver it with this model.

    Both tasks trained: what gate rule ``gate_rule`` delivers (:func:`classseg.delivery.rules.deliver`;
    detection = its final calls) with the class output's own figures as ``gate_*``; ``segment_all``:
    the mask head alone on every slice (:func:`classseg.evaluation.delivered.delivered_scores`). Mask
    only (``lambda_cls = 0``): the mask head alone, its verdict "mask non-empty". Class only
    (``lambda_seg = 0``): the class output's figures (:func:`classseg.evaluation.classifier_scores`).
    Masks are resized back to each slice's original size and scored against ``truths`` (``masks``
    when None, i.e. never resized). ``labels`` must agree with the masks (1 = mask non-empty).
    ``gate_threshold`` (default ``config.threshold``) is the class threshold on P(tumor); the mask
    threshold is ``config.threshold``; ``gate_rule="mask"`` leaves the masks ungated (the class output
    is still scored).
    """
    from classseg.evaluation import classifier_scores
    from classseg.evaluation.delivered import delivered_scores

    truths = truths if truths is not None else list(masks.reshape(masks.shape[:3]))
    if len(labels) != len(truths):
        raise ValueError(f"{len(labels)} labels for {len(truths)} slices")
    cut = config.threshold if gate_threshold is None else float(gate_threshold)
    if config.tasks == ("class",):
        return classifier_scores(np.asarray(labels), np.asarray(tumor_prob), cut).to_dict()
    pp = PostprocessConfig(**{**asdict(config.postprocess), "threshold": config.threshold})
    gate = tumor_prob if "class" in config.tasks else None
    return delivered_scores(truths, mask_prob, patient_ids, pp, gate_prob=gate, gate_threshold=cut,
                            rule=gate_rule if gate is not None else "mask")


# ---------------------------------------------------------------------------------------------- reports
def plot_training_curves(history: pd.DataFrame, path: Path) -> Path:
    """Per epoch: total / class / mask losses, class accuracy and mask Dice (train vs val), loss weights and lr."""
    return plot_history(history, [("loss", "total loss (scheduled weights)"), ("class_loss", "class loss (unweighted)"),
                                  ("mask_loss", "mask Dice loss (unweighted)"), ("class_accuracy", "class accuracy"),
                                  ("mask_dice", "mask Dice (threshold 0.5)"),
                                  ("weights", "loss weights / learning rate")], path, ncols=3)


def write_metrics_md(metrics: dict[str, Any], path: Path) -> Path:
    """A human-readable summary of ``metrics.json`` (test and val), via
    :func:`classseg.reporting.tables.scores_markdown`."""
    from classseg.reporting.tables import (
        DETECTION_FIELDS,
        GATE_FIELDS,
        SEGMENTATION_FIELDS,
        format_value,
        scores_markdown,
    )

    val = metrics.get("val", {})
    facts = [
        f"encoder weights: {metrics['weights']}; image size {metrics['img_size']} px; {metrics['epochs']} epochs "
        f"(best epoch {metrics['best_epoch']} on val_fixed_loss); seed {metrics['seed']}; schedule "
        f"{metrics['schedule']}; class loss {metrics['class_loss']}; lambda (cls, seg) = "
        f"({metrics['lambda_cls']}, {metrics['lambda_seg']}); augmentation {metrics['augment']}",
        f"split file: {metrics['split_file']}; {metrics['n_train_slices']} train / {metrics['n_val_slices']} val / "
        f"{metrics['n_slices']} test slices",
        f"parameters {metrics['params']:,}; inference {format_value(metrics['ms_per_slice'], 4) or 'n/a'} ms/slice "
        f"(batch {metrics['infer_batch']}, {metrics['device']}); training {metrics['train_seconds']} s",
        f"class threshold {metrics.get('class_threshold', metrics['threshold'])} on P(tumor), gate rule "
        f"{metrics.get('gate_rule')}; masks post-processed ({metrics['postprocess_config']}); 'delivered' = what "
        "the rule delivers (detection = its final calls); 'mask head alone' = every slice segmented",
    ]
    sections = {"test, delivered": metrics, "test, mask head alone": metrics.get("segment_all", {}),
                "val, delivered": val, "val, mask head alone": val.get("segment_all", {})}
    arch = {"resnet50_unet": "ResNet-50 U-Net (seed 000)", "resunet": "ResUNet (seed 002)"}
    tasks = " + ".join(metrics.get("tasks", ["class", "mask"]))
    title = f"{arch[metrics.get('architecture', 'resnet50_unet')]}, tasks: {tasks}"
    title += " with multi-scale head (seed 004)" if metrics["multiscale_head"] else ""
    atomic_write_text(path, scores_markdown(title, sections, DETECTION_FIELDS + GATE_FIELDS + SEGMENTATION_FIELDS,
                                            facts))
    return path


# ---------------------------------------------------------------------------------------------- training
def train_joint(
    config: JointConfig | None = None,
    data_dir: str | Path | None = None,
    splits_path: str | Path | None = None,
    out_dir: str | Path = "runs/joint",
    strategy: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the joint model, evaluate its best epoch on val and test, write the run folder; return metrics.

    Writes ``joint.keras`` (best epoch) and its card ``joint.card.json`` (what the pipeline's
    ``--joint`` reads), ``history.csv``, ``metrics.json``, ``metrics.md``, ``training_curves.png``,
    ``splits.csv``, ``manifest.json``, ``run.json`` (:class:`classseg.training.run.RunRecord`) and
    ``predictions_{val,test}.npz`` into ``out_dir``. Resumable like
    :func:`classseg.training.segmenter.train_segmenter`: rerun the same call on an interrupted run folder and
    it goes on at the next epoch (``backup/``, ``train_state.json``); other settings are refused.
    ``strategy``: a ``tf.distribute`` strategy (default strategy when None). Raises
    ``FileNotFoundError`` / ``ValueError`` for bad data folders, split files or empty splits,
    ``RuntimeError`` when ImageNet weights cannot be fetched.
    """
    from functools import partial

    import keras
    import tensorflow as tf

    from classseg import data as cdata
    from classseg.data.augment import AUGMENT_PROFILES, augment_value_scale, build_augmenter
    from classseg.data.sequence import ArraySequence
    from classseg.data.skipped import skipped_files
    from classseg.evaluation.delivered import save_predictions
    from classseg.evaluation.scores import read_truths
    from classseg.models.card import ModelCard, write_card
    from classseg.models.predict import KerasRunner, inference_ms_per_slice, predict, tumor_probability
    from classseg.training.callbacks import (
        AtomicBackupAndRestore,
        AtomicCSVLogger,
        ElapsedTime,
        ResumableBestCheckpoint,
    )
    from classseg.training.run import open_run
    from classseg.training.schedules import LossWeightScheduler
    from classseg.utils.environment import machine
    from classseg.utils.guards import check_start_models
    from classseg.utils.jsonio import write_json

    config = config or JointConfig()
    config = replace(config, normalization=input_normalization(config))  # the init model's card's when not given
    norm = config.normalization
    # folder, identity (a resume with other settings is refused), seed, resumable state (backup/)
    run = open_run(out_dir, "train-joint", data_dir, splits_path, config, config.seed, RESUME_EVIDENCE)
    out, data_dir, state = run.out, run.data_dir, run.state

    # ---- model first, so a missing ImageNet file fails before the data is loaded ----------------
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(config)

    # ---- data: every slice, patient-level split -------------------------------------------------
    frame = run.resolve_split(config.fractions)
    # the leakage guard (issue 18): no val/test patient may be a train/val patient of the init model
    leakage = check_start_models(cdata.split_table(frame), [config.init] if config.init else [],
                                 hint="pass --splits FILE whose val and test patients the --init model never "
                                      "trained or chose on, or train without --init")
    for record in leakage:
        if not record["checked"]:
            log.warning("leakage NOT checked for %s: %s", record["model"], record["why"])
    run.save_split()
    parts = run.arrays(config.img_size, progress)
    train, val, test = parts["train"], parts["val"], parts["test"]
    # the segmenter recipe's augmentation (issue 10); the class target is the *augmented* mask non-empty
    inputs = {name: joint_inputs(arrays, norm) for name, arrays in parts.items()}  # as the card will say
    aug_config = AUGMENT_PROFILES[config.augment_profile]
    if config.missing_sequence_p is not None:
        aug_config = replace(aug_config, flair_for_missing_p=float(config.missing_sequence_p))
    make_aug = partial(build_augmenter, aug_config, float_input=norm != "raw",
                       value_scale=augment_value_scale(norm)) if config.augment else None
    train_seq = ArraySequence(inputs["train"], train.masks, config.batch_size, shuffle=True, make_augmenter=make_aug,
                              seed=config.seed, target="both", workers=config.workers)
    val_seq = ArraySequence(inputs["val"], val.masks, config.batch_size, target="both")

    with strategy.scope():
        w_cls, w_seg = compile_joint(model, config, len(train_seq))

    def log_lr(epoch: int, logs: dict[str, Any] | None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

    # The checkpoint holds weights only (the optimizer state would triple the file); the best epoch is
    # then saved as an uncompiled inference model, joint.keras (~120 MB at 224 px for ResNet-50).
    # Resumable like the segmenter: the best epoch's weights (min val_fixed_loss, remembered in train_state.json),
    # the history appended to, Keras' backup of the last epoch in backup/.
    checkpoint = out / CHECKPOINT_FILE
    callbacks = [
        LossWeightScheduler(config.schedule, config.epochs, w_cls, w_seg, base=(config.lambda_cls, config.lambda_seg)),
        keras.callbacks.LambdaCallback(on_epoch_end=log_lr),
        ElapsedTime(state),
        ResumableBestCheckpoint(checkpoint, state, monitor="val_fixed_loss", mode="min", weights_only=True),
        AtomicCSVLogger(out / "history.csv", append=True),
        AtomicBackupAndRestore(str(out / "backup")),
    ]
    run.started = time.perf_counter()
    model.fit(train_seq, validation_data=val_seq, epochs=config.epochs, callbacks=callbacks,
              verbose=1 if progress else 0)
    train_seconds = run.train_seconds()
    history = pd.read_csv(out / "history.csv")  # every epoch, also those before a resume
    val_fixed = pd.to_numeric(history["val_fixed_loss"], errors="coerce").to_numpy(dtype=float)
    best_epoch = int(np.nanargmin(val_fixed)) + 1 if np.isfinite(val_fixed).any() else None

    # ---- save and evaluate the best epoch in inference mode -------------------------------------
    if checkpoint.exists():
        model.load_weights(checkpoint)
        checkpoint.unlink()
    else:  # no finite validation loss in any epoch: keep the last weights, say so
        log.warning("val_fixed_loss was never finite; evaluating the weights of the last epoch")
    best = keras.Model(model.input, model.output, name=model.name)  # same layers, no optimizer / loss
    save_model(best, out / MODEL_FILE)
    pp = PostprocessConfig(**{**asdict(config.postprocess), "threshold": config.threshold})
    runner = KerasRunner(best)
    preds = {}
    for name in ("val", "test"):  # (P(tumor) (N,), mask probabilities (N, H, W)), float32
        outputs = predict(runner, inputs[name], config.batch_size)
        preds[name] = (tumor_probability(outputs["class"]).astype(np.float32), outputs["mask"][..., 0])
    gate_threshold, gate_rule, gate_choice = config.threshold, ("gate" if "class" in config.tasks else "mask"), None
    if config.select_gate and len(config.tasks) == 2:
        from classseg.delivery.rules import MaskDelivery
        from classseg.training.selection import choose_gate
        from classseg.utils.atomic import atomic_to_csv

        val_prob, val_masks = preds["val"]
        val_shapes = [t.shape for t in read_truths(val.frame["mask_path"], [(config.img_size,) * 2] * len(val))]
        gate_choice, table = choose_gate(val.labels, val_prob, MaskDelivery(val_masks, val_shapes, pp))
        atomic_to_csv(table, out / "gate_selection.csv", index=False)
        gate_rule = gate_choice["rule"]
        gate_threshold = gate_choice["threshold"] if gate_choice["threshold"] is not None else config.threshold
    results = {}
    for name, arrays in (("test", test), ("val", val)):
        tumor_prob, mask_prob = preds[name]
        truths = read_truths(arrays.frame["mask_path"], [(config.img_size,) * 2] * len(arrays))
        results[name] = evaluate_joint(tumor_prob, mask_prob, arrays.labels, arrays.masks,
                                       arrays.frame["patient_id"].to_numpy(), config, truths=truths,
                                       gate_threshold=gate_threshold, gate_rule=gate_rule)
        if config.save_predictions:
            save_predictions(out / f"predictions_{name}.npz",
                             tumor_prob if "class" in config.tasks else None,
                             mask_prob if "mask" in config.tasks else None, arrays.frame["patient_id"],
                             arrays.frame["mask_path"].fillna("").astype(str), arrays.frame["image_path"])
    ms = inference_ms_per_slice(runner, inputs["test"], config.infer_batch)
    split_label = run.split_fields()["split_file"]
    metrics: dict[str, Any] = {
        "model": model_name(config),
        "kind": "joint" if len(config.tasks) == 2 else ("segmenter" if config.tasks == ("mask",) else "classifier"),
        "architecture": config.architecture,
        "tasks": list(config.tasks),
        "weights": weights_label(config),
        "normalization": norm,
        "leakage_check": leakage,
        "img_size": config.img_size,
        "epochs": config.epochs,
        "best_epoch": best_epoch,
        "schedule": config.schedule,
        "class_loss": config.class_loss,
        "lambda_cls": config.lambda_cls,
        "lambda_seg": config.lambda_seg,
        "multiscale_head": config.multiscale_head,
        "augment": config.augment,
        "seed": config.seed,
        "splits": split_label,
        "split_file": split_label,
        "data_dir": str(data_dir),
        "batch_size": config.batch_size,
        "n_train_slices": len(train),
        "n_val_slices": len(val),
        "params": int(best.count_params()),
        "ms_per_slice": ms,
        "infer_batch": config.infer_batch,
        "device": machine(),
        "train_seconds": round(train_seconds, 2),
        "train_minutes": round(train_seconds / 60.0, 2),
        "threshold": config.threshold,
        "gate_rule": gate_rule,
        "class_threshold": gate_threshold,
        "gate_selection": gate_choice or "fixed: P(tumor) >= threshold (seed 000)",
        "postprocess_config": asdict(pp),
        "evaluated_on": f"test split, epoch {best_epoch or len(history)} "
                        f"({'min val_fixed_loss' if best_epoch else 'last; val loss never finite'}), inference mode",
        **results["test"],
        "val": results["val"],
    }
    write_json(out / "metrics.json", metrics)
    write_metrics_md(metrics, out / "metrics.md")
    write_card(out / MODEL_FILE, ModelCard(
        role="joint", img_size=config.img_size, normalization=norm, class_threshold=float(gate_threshold),
        postprocess=asdict(pp), gate_rule=gate_rule,
        provenance={"model": metrics["model"], "weights": metrics["weights"], "split_file": split_label,
                    "epochs": config.epochs, "best_epoch": best_epoch, "schedule": config.schedule,
                    "train_minutes": metrics["train_minutes"], "device": metrics["device"],
                    "val": {k: results["val"].get(k) for k in ("accuracy", "dice_per_patient", "dice_tumor_slices")}}))
    # run.json, training curves and manifest.json (split / seed / weights fields from the one record)
    record = run.record(kind=metrics["kind"], model=metrics["model"], weights=metrics["weights"],
                        img_size=config.img_size, epochs=config.epochs, epochs_run=len(history), best_epoch=best_epoch,
                        train_minutes=metrics["train_minutes"], normalization=norm, val=results["val"],
                        test=results["test"], machine=metrics["device"], architecture=config.architecture,
                        tasks=list(config.tasks), params=metrics["params"], gate_rule=gate_rule,
                        class_threshold=gate_threshold, schedule=config.schedule)
    run.finish(record, history=history, curves=plot_training_curves, config=asdict(config),
               strategy=type(strategy).__name__, replicas=int(strategy.num_replicas_in_sync),
               skipped=skipped_files(frame))
    return metrics

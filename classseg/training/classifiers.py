"""Phase 1 of seed paper 002: benchmark frozen ImageNet backbones + dense head, pick the gate.

For each backbone (Algorithm 1, lines 3-8): build the frozen classifier, train its head with
categorical cross-entropy (Eq. 2) and Adam, evaluate on the test split. The gate ("model 1") is
chosen on the VALIDATION split (val AUC, then val accuracy), never on test.

Fast path (default): the backbone is frozen and runs in inference mode, so its output for a
slice never changes. Features are computed once per slice and split, and the head is trained
on them; the head is the same Keras object as the end-to-end model's ``"head"``, so the saved
``classifier.keras`` needs no weight copying. End-to-end path: used when the backbone is partly
unfrozen (``fine_tune_layers > 0``) or with augmentation (features change every epoch).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight
from tqdm.auto import tqdm

from classseg.data import SliceArrays
from classseg.data.augment import AugmentConfig, build_augmenter
from classseg.data.datasets import classification_dataset
from classseg.data.skipped import skipped_files
from classseg.data.standardize import prepare_input
from classseg.evaluation.classification import (
    classification_metrics,
    threshold_for_sensitivity,
)
from classseg.models.backbones import get_spec
from classseg.models.card import ModelCard, write_card
from classseg.models.classifier import build_classifier, fine_tune, head_of, split_head
from classseg.models.names import PAPER_BACKBONES  # the five backbones of seed 002, Table I
from classseg.models.predict import KerasRunner, inference_ms_per_slice, predict, tumor_probability
from classseg.reporting.plotting import plot_confusion_matrix, plot_roc
from classseg.reporting.tables import DETECTION_FIELDS, scores_markdown, to_markdown
from classseg.training.run import RUN_FILE, TrainingRun, open_run
from classseg.utils.atomic import atomic_to_csv, atomic_write_text, save_model
from classseg.utils.jsonio import write_json
from classseg.utils.manifest import write_manifest
from classseg.utils.seeding import set_seed

#: Scalar metrics aggregated over repeats (mean, std) and reported in results.csv.
SCALAR_METRICS = ("accuracy", "precision", "sensitivity", "specificity", "f1_micro", "f1_macro", "auc")


@dataclass
class ClassifierConfig:
    """Phase-1 settings. Seed 002 gives the head (Figure 2: dropout 0.3), the loss (CCE), the
    70/15/15 split and 3 runs averaged; it does not state optimiser settings, so Adam with
    Keras' default learning rate 1e-3, batch 32, up to 20 epochs, early stopping (patience 5)
    on val loss are used. ``repeats`` defaults to 1 to save time (the paper used 3)."""

    backbones: tuple[str, ...] = PAPER_BACKBONES
    weights: str | None = "imagenet"
    img_size: int = 256
    head: str = "paper"
    dropout: float = 0.3
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 5
    repeats: int = 1
    seed: int = 0
    class_weights: bool = False
    fine_tune_layers: int = 0
    train_backbone: bool = False  # train the whole backbone end to end (from scratch with weights=None)
    augment: bool = False
    target_sensitivity: float = 0.95
    infer_batch: int = 16
    progress: bool = True
    # backbone -> the input its weights expect (classseg.data.standardize NORMALIZATIONS); absent = "raw".
    # An in-domain backbone cut from a model with a per-patient card is fed like that model (run-all).
    input_normalization: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # "none" from a CLI, notebook or JSON means random initialisation, exactly like None.
        from classseg.models.names import parse_weights

        self.weights = parse_weights(self.weights)


# --------------------------------------------------------------------------------------------
# pieces


def _param_counts(model: keras.Model) -> tuple[int, int]:
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return trainable, int(model.count_params())


def feature_extractor(model: keras.Model) -> tf.types.experimental.PolymorphicFunction:
    """``tf.function``: raw pixels float32 (B, H, W, 3) -> frozen backbone -> the head's weight-free prefix.

    Traced once (batch dimension left open), backbone always in inference mode.
    """
    frozen = model.get_layer("backbone")  # FrozenBackbone: always inference mode
    fixed, _ = split_head(head_of(model))
    spec = tf.TensorSpec((None,) + tuple(model.input.shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def step(x):
        return fixed(frozen(x), training=False)

    return step


def extract_features(model: keras.Model, images: np.ndarray, batch_size: int = 32, progress: bool = True,
                     desc: str = "features", step=None) -> np.ndarray:
    """Cached features of every image (raw 0..255): batched ``backbone(x, training=False)``.

    Every sample is kept (no dropped partial batch). ``step``: a :func:`feature_extractor` of
    ``model`` to reuse across calls. Returns float32 features, one row per image.
    """
    step = step or feature_extractor(model)
    starts = range(0, len(images), batch_size)
    out = [step(np.asarray(images[i:i + batch_size], np.float32)).numpy()
           for i in tqdm(starts, desc=desc, disable=not progress, unit="batch")]
    if not out:
        return step(np.zeros((1,) + tuple(model.input.shape[1:]), np.float32)).numpy()[:0]
    feats = np.concatenate(out, axis=0)
    assert len(feats) == len(images)
    return feats


def _class_weight(labels: np.ndarray) -> dict[int, float]:
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights, strict=True)}


def _compile(model: keras.Model, lr: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])


def _feature_dataset(feats: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool,
                     seed: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((feats, tf.one_hot(labels, 2)))
    if shuffle:
        ds = ds.shuffle(len(feats), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _rank_key(val: dict) -> tuple[float, float]:
    auc = val.get("auc")
    acc = val.get("accuracy")
    return (-math.inf if auc is None else auc, -math.inf if acc is None else acc)


# --------------------------------------------------------------------------------------------
# one model


def _train_one(name: str, config: ClassifierConfig, parts: dict[str, SliceArrays], seed: int,
               strategy: tf.distribute.Strategy, cache: dict) -> dict:
    """Build, train and predict one classifier; returns model, probabilities, history, timings."""
    set_seed(seed)
    size = config.img_size
    with strategy.scope():
        model = build_classifier(name, (size, size, 3), config.weights, config.head, 2, config.dropout,
                                 train_backbone=config.train_backbone)
        if config.fine_tune_layers > 0:
            fine_tune(model, config.fine_tune_layers)
    train, val, test = parts["train"], parts["val"], parts["test"]
    class_weight = _class_weight(train.labels) if config.class_weights else None
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                               restore_best_weights=True)]
    verbose = 2 if config.progress else 0
    fast = config.fine_tune_layers <= 0 and not config.augment and not config.train_backbone
    out: dict = {"model": model, "seed": seed, "path": "cached-features" if fast else "end-to-end"}

    if fast:
        # With fixed backbone weights (ImageNet / file) the features are the same for every
        # repeat, so they are computed once; with random init (weights=None) each seed differs.
        key = name if config.weights is not None else (name, seed)
        if key not in cache:
            cache.clear()  # keep one backbone's features in memory at a time
            t0 = time.perf_counter()
            step = feature_extractor(model)
            feats = {s: extract_features(model, parts[s].images, config.batch_size, config.progress,
                                         desc=f"{name} {s} features", step=step) for s in ("train", "val")}
            extract_time = time.perf_counter() - t0
            t0 = time.perf_counter()
            feats["test"] = extract_features(model, test.images, config.batch_size, config.progress,
                                             desc=f"{name} test features", step=step)
            cache[key] = (feats, extract_time, time.perf_counter() - t0)
        feats, extract_time, test_extract_time = cache[key]
        _, trainable = split_head(head_of(model))
        with strategy.scope():
            _compile(trainable, config.lr)
        t0 = time.perf_counter()
        history = trainable.fit(
            _feature_dataset(feats["train"], train.labels, config.batch_size, True, seed),
            validation_data=_feature_dataset(feats["val"], val.labels, config.batch_size, False, seed),
            epochs=config.epochs, callbacks=callbacks, class_weight=class_weight, verbose=verbose,
            shuffle=False)  # the tf.data pipeline shuffles (seeded)
        fit_time = time.perf_counter() - t0
        predict = {s: trainable.predict(feats[s], batch_size=config.batch_size, verbose=0)[:, 1]
                   for s in ("val", "test")}
        out.update(extract_time_s=extract_time, test_extract_time_s=test_extract_time, fit_time_s=fit_time,
                   train_time_s=extract_time + fit_time)
    else:
        with strategy.scope():
            _compile(model, config.lr)
        augment = build_augmenter(AugmentConfig(), seed=seed) if config.augment else None
        train_ds = classification_dataset(train.images, train.labels, config.batch_size, shuffle=True,
                                          augment=augment, seed=seed, masks=train.masks)
        val_ds = classification_dataset(val.images, val.labels, config.batch_size)
        t0 = time.perf_counter()
        history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                            class_weight=class_weight, verbose=verbose, shuffle=False)  # tf.data shuffles
        fit_time = time.perf_counter() - t0
        predict = {s: model.predict(classification_dataset(parts[s].images, parts[s].labels,
                                                           config.batch_size), verbose=0)[:, 1]
                   for s in ("val", "test")}
        out.update(extract_time_s=0.0, fit_time_s=fit_time, train_time_s=fit_time)

    for s in ("val", "test"):
        assert len(predict[s]) == len(parts[s]), "every sample must be predicted"
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", np.arange(1, len(hist) + 1))
    hist.insert(0, "seed", seed)
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    out.update(prob=predict, history=hist, best_epoch=best_epoch, epochs_run=len(hist),
               val=classification_metrics(val.labels, predict["val"]),
               test=classification_metrics(test.labels, predict["test"]))
    return out


def _predictions_frame(parts: dict[str, SliceArrays], prob: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = []
    for s in ("val", "test"):
        frame = parts[s].frame
        frames.append(pd.DataFrame({"split": s, "patient_id": frame["patient_id"], "slice": frame["slice"],
                                    "image_path": frame["image_path"], "label": parts[s].labels,
                                    "p_tumor": prob[s]}))
    return pd.concat(frames, ignore_index=True)


def train_backbone(name: str, config: ClassifierConfig, parts: dict[str, SliceArrays], run_dir: Path,
                   strategy: tf.distribute.Strategy | None = None, run: TrainingRun | None = None,
                   card: ModelCard | None = None) -> dict:
    """Train ``config.repeats`` classifiers on one backbone; write its run folder; return a summary.

    Writes ``classifier.keras`` (the repeat best on validation), ``history.csv`` (all repeats),
    ``metrics.json`` / ``metrics.md``, ``predictions.csv`` (val + test p(tumor)),
    ``confusion_matrix.png`` and ``roc.png`` (test split); with ``run`` (the :class:`TrainingRun` of
    :func:`train_classifiers`) also its ``run.json`` and ``manifest.json``, written last (after ``card``, the
    model card to bind to ``classifier.keras``, when given): a backbone
    folder with ``run.json`` is finished, and a resumed :func:`train_classifiers` keeps it.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir.mkdir(parents=True, exist_ok=True)
    runs, histories, cache, best = [], [], {}, None
    for r in range(config.repeats):
        seed = config.seed + r
        res = _train_one(name, config, parts, seed, strategy, cache)
        runner = KerasRunner(res["model"])
        if res["path"] == "cached-features":
            # The cached-feature head must equal the end-to-end model (tested); recorded as a check.
            n_check = min(len(parts["test"]), 8)
            e2e = tumor_probability(predict(runner, parts["test"].images[:n_check])["class"]).astype(np.float32)
            res["e2e_check_max_abs_diff"] = float(np.max(np.abs(e2e - res["prob"]["test"][:n_check])))
        histories.append(res["history"])
        runs.append({k: res[k] for k in ("seed", "path", "val", "test", "best_epoch", "epochs_run",
                                          "train_time_s", "extract_time_s", "fit_time_s")}
                    | {"test_extract_time_s": res.get("test_extract_time_s")}
                    | ({"e2e_check_max_abs_diff": res["e2e_check_max_abs_diff"]}
                       if "e2e_check_max_abs_diff" in res else {}))
        if best is None or _rank_key(res["val"]) > _rank_key(best["val"]):
            save_model(res["model"], run_dir / "classifier.keras")
            best = {k: v for k, v in res.items() if k != "model"}
            best["params"] = _param_counts(res["model"])
            best["ms_per_slice"] = inference_ms_per_slice(runner, parts["test"].images, config.infer_batch)
        del res, runner
        keras.backend.clear_session(free_memory=True)
    cache.clear()
    if card is not None:
        write_card(run_dir / "classifier.keras", card)

    atomic_to_csv(pd.concat(histories, ignore_index=True), run_dir / "history.csv", index=False)
    atomic_to_csv(_predictions_frame(parts, best["prob"]), run_dir / "predictions.csv", index=False)
    title = f"{name} ({config.weights or 'random init'}, {config.img_size}px, seed {best['seed']})"
    plot_confusion_matrix(best["test"]["confusion_matrix"], run_dir / "confusion_matrix.png", f"test: {title}")
    plot_roc(parts["test"].labels, best["prob"]["test"], run_dir / "roc.png", f"test ROC: {title}")

    agg: dict[str, dict] = {"val": {}, "test": {}}
    for split in ("val", "test"):
        for m in SCALAR_METRICS:
            mean, std = _mean_std([run[split][m] for run in runs])
            agg[split][m], agg[split][f"{m}_std"] = mean, std
    trainable, total = best["params"]
    train_time, train_time_std = _mean_std([run["train_time_s"] for run in runs])
    metrics = {
        "backbone": name, "weights": config.weights, "img_size": config.img_size, "head": config.head,
        "epochs": config.epochs, "repeats": config.repeats, "path": best["path"],
        "trainable_params": trainable, "params": total,
        "train_time_s": train_time, "train_time_s_std": train_time_std,
        "ms_per_slice": best["ms_per_slice"], "infer_batch": config.infer_batch,
        "selected_seed": best["seed"], "best_epoch": best["best_epoch"],
        "val": best["val"], "test": best["test"],
        "val_mean": agg["val"], "test_mean": agg["test"], "runs": runs,
        "note": "val/test: the saved classifier.keras (repeat best on validation); *_mean: over repeats; "
                "train_time_s includes feature extraction of train+val on the cached-feature path",
    }
    write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "metrics.md", scores_markdown(
        title, {"val": best["val"], "test": best["test"]}, DETECTION_FIELDS + ("f1_macro", "auc"),
        facts=[f"the saved classifier.keras (repeat best on validation), threshold {best['test']['threshold']}"]))
    row = {"backbone": name, "weights": config.weights or "none", "img_size": config.img_size,
           "head": config.head, "epochs": config.epochs, "repeats": config.repeats,
           "trainable_params": trainable, "params": total, "train_time_s": train_time,
           "ms_per_slice": best["ms_per_slice"]}
    for m in SCALAR_METRICS:
        row[m] = agg["test"][m]
    row["val_auc"], row["val_accuracy"] = agg["val"]["auc"], agg["val"]["accuracy"]
    if config.repeats > 1:
        row["train_time_s_std"] = train_time_std
        for m in SCALAR_METRICS:
            row[f"{m}_std"] = agg["test"][f"{m}_std"]
    if run is not None:
        record = run.record(
            kind="classifier", model=name, weights=config.weights or "none", img_size=config.img_size,
            epochs=config.epochs, epochs_run=best["epochs_run"], best_epoch=best["best_epoch"],
            train_minutes=sum(r["train_time_s"] for r in runs) / 60.0,
            normalization=config.input_normalization.get(name, "raw"), val=best["val"], test=best["test"],
            head=config.head, repeats=config.repeats, selected_seed=best["seed"], path=best["path"], params=total,
            threshold=best["test"]["threshold"], row=row, val_mean=agg["val"])
        run.finish(record, folder=run_dir, config=asdict(config))
    return {"row": row, "val_prob": best["prob"]["val"], "val_mean": agg["val"], "metrics": metrics}


def finished_backbone(run_dir: Path) -> dict | None:
    """The summary :func:`train_backbone` returned for a finished backbone folder (its ``run.json``,
    ``metrics.json`` and the val probabilities of ``predictions.csv``); None when it has not finished."""
    from classseg.training.run import RUN_FILE, read_run_record
    from classseg.utils.jsonio import read_json

    if not (run_dir / RUN_FILE).is_file() or not (run_dir / "metrics.json").is_file():
        return None
    record = read_run_record(run_dir)
    preds = pd.read_csv(run_dir / "predictions.csv")
    return {"row": record.extra["row"], "val_prob": preds.loc[preds["split"] == "val", "p_tumor"].to_numpy(),
            "val_mean": record.extra["val_mean"], "metrics": read_json(run_dir / "metrics.json")}


# --------------------------------------------------------------------------------------------
# the benchmark


def _check_classes(parts: dict[str, SliceArrays]) -> dict[str, SliceArrays]:
    if len(np.unique(parts["train"].labels)) < 2:
        raise ValueError("the train split has only one class; cannot train a classifier")
    return parts


def gate_model_path(results_json: str | Path) -> Path:
    """The gate model a ``results.json`` of :func:`train_classifiers` selected (its ``gate.model`` is
    relative to that file; an absolute path, as older runs wrote, is returned as it is)."""
    from classseg.utils.jsonio import read_json

    results_json = Path(results_json)
    recorded = Path(read_json(results_json)["gate"]["model"])
    return recorded if recorded.is_absolute() else results_json.parent / recorded


def train_classifiers(config: ClassifierConfig, data_dir: str | Path, splits_path: str | Path | None = None,
                      out_dir: str | Path = "runs/classifiers",
                      strategy: tf.distribute.Strategy | None = None) -> pd.DataFrame:
    """Phase 1: train and evaluate every backbone of ``config``; choose the gate on validation.

    Writes ``out_dir/<backbone>/...`` (see :func:`train_backbone`), ``results.csv`` and
    ``results.md`` (one row per backbone, test metrics; mean and ``*_std`` over repeats),
    ``results.json`` (rows + ``gate``: best backbone by val AUC then val accuracy, its model
    path and the val threshold reaching ``config.target_sensitivity``), ``splits.csv`` and
    ``manifest.json``. Returns the results table. Resumable: rerun the same call on an interrupted run
    folder and the backbones that finished (their ``run.json``) are kept, the others trained; other settings
    are refused (:func:`classseg.training.run.open_run`).
    """
    for name in config.backbones:
        get_spec(name)  # fail fast on a typo, before loading any data
    # Resumable by backbone: an interrupted run keeps every backbone folder that finished (its run.json) and
    # trains the others; a resume with other settings is refused (run identity), a finished run starts afresh.
    keys = [get_spec(name).name for name in config.backbones]
    out = Path(out_dir)
    finished = (out / "results.json").is_file()
    evidence = () if finished else tuple(f"{key}/{RUN_FILE}" for key in keys)
    run = open_run(out, "train-classifiers", data_dir, splits_path, config, config.seed, evidence, run_state=False)
    if finished:
        for key in keys:  # an earlier run's backbones are not this run's
            (out / key / RUN_FILE).unlink(missing_ok=True)
    strategy = strategy or tf.distribute.get_strategy()
    df = run.resolve_split(require_masks=True)
    run.save_split()
    parts = _check_classes(run.arrays(config.img_size, config.progress))
    write_manifest(out, command="train-classifiers", kind="classifier", config=asdict(config),
                   data_dir=str(run.data_dir), **run.split_fields(), weights=config.weights,
                   img_size=config.img_size, epochs=config.epochs,
                   slices={s: len(p) for s, p in parts.items()},
                   tumor_slices={s: int(p.labels.sum()) for s, p in parts.items()},
                   strategy=type(strategy).__name__, skipped=skipped_files(df))

    summaries = {}
    norms = {get_spec(name).name: config.input_normalization.get(name, "raw") for name in config.backbones}
    for key, norm in norms.items():
        done = finished_backbone(out / key)
        if done is not None:
            summaries[key] = done
            continue
        fed = parts if norm == "raw" else {  # each patient normalised as the backbone's source model expects
            split: replace(p, images=prepare_input(p.images, norm, p.frame["patient_id"].to_numpy()))
            for split, p in parts.items()}
        card = None if norm == "raw" else ModelCard(  # phase 3's pipeline reads how to feed the gate from its card
            role="classifier", img_size=config.img_size, normalization=norm,
            class_threshold=0.5,  # the pipeline's default cut; run-all passes the gate's chosen --threshold
            provenance={"split_file": str(splits_path), "backbone": key, "weights": str(config.weights)})
        summaries[key] = train_backbone(key, config, fed, out / key, strategy, run, card)
    results = pd.DataFrame([s["row"] for s in summaries.values()])
    per_patient_inputs = any(n != "raw" for n in norms.values())
    if per_patient_inputs:
        results["input_normalization"] = list(norms.values())

    gate_name = max(summaries, key=lambda k: _rank_key(summaries[k]["val_mean"]))
    gate_val = summaries[gate_name]
    threshold = threshold_for_sensitivity(parts["val"].labels, gate_val["val_prob"], config.target_sensitivity)
    gate = {
        "backbone": gate_name,
        "model": f"{gate_name}/classifier.keras",  # relative to results.json: valid from any working directory
        "selected_on": "validation split: highest val AUC, then val accuracy (test never used)",
        "val_auc": gate_val["val_mean"]["auc"], "val_accuracy": gate_val["val_mean"]["accuracy"],
        "target_sensitivity": config.target_sensitivity,
        "threshold": threshold,
        "val_at_threshold": classification_metrics(parts["val"].labels, gate_val["val_prob"], threshold),
    }
    atomic_to_csv(results, out / "results.csv", index=False)
    inputs = f"inputs {norms}, " if per_patient_inputs else ""
    label = (f"weights={config.weights or 'none'}, {config.img_size}px, head={config.head}, {inputs}"
             f"epochs<={config.epochs} (early stopping, patience {config.patience}), repeats={config.repeats}, "
             f"seed={config.seed}; test split: {len(parts['test'])} slices")
    atomic_write_text(
        out / "results.md",
        f"# Phase 1: frozen-backbone classifiers\n\n{label}\n\n" + to_markdown(results, digits=4)
        + f"\nGate (chosen on validation): **{gate_name}**, threshold {threshold:.4f} for "
          f"sensitivity >= {config.target_sensitivity} on val.\n")
    write_json(out / "results.json", {"config": asdict(config), "results": results.to_dict(orient="records"),
                                      "gate": gate})
    return results

"""The gate of Class-Seg (seed 002, phase 1 -> 3) trained in-domain: a small CNN from scratch.

Without ImageNet weights a frozen ImageNet backbone carries no information (docs/benchmarks.md), so
the default gate is :func:`classseg.models.resunet.build_gate_cnn`, trained from scratch on every
slice of the train split with the segmenter's recipe (the same input normalisation and augmentation,
AdamW + cosine), label = "mask non-empty". Its threshold and the rule that combines its verdict with
the segmenter's mask are chosen on the validation split (:func:`classseg.training.selection.choose_gate`)
and written into ``gate.card.json``; the baseline it must beat is the segmenter's own "mask non-empty".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.delivery.rules import MaskDelivery
from classseg.evaluation.classification import classification_metrics


@dataclass
class GateConfig:
    """Gate training settings (the segmenter's fast recipe, with a classification loss)."""

    img_size: int = 128
    epochs: int = 30
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 1
    width: float = 1.0
    dropout: float = 0.3
    label_smoothing: float = 0.05
    normalization: str = "patient_percentile"  # use the segmenter's (raw, patient_zscore, patient_percentile)
    augment: bool = True
    augment_profile: str = "robust"  # classseg.data.augment.AUGMENT_PROFILES
    init: str | None = None  # start from this gate .keras's weights (same architecture) instead of from scratch
    seed: int = 0
    workers: int = 2


def segmenter_delivery(segmenter_path: str | Path, frame: pd.DataFrame, batch_size: int = 32,
                       progress: bool = False) -> MaskDelivery:
    """The segmenter's masks on the slices of ``frame``, fed, flipped (``tta``) and post-processed exactly
    as its model card says and as the pipeline does: a :class:`classseg.delivery.rules.MaskDelivery`
    (2D post-processing done; the per-patient 3D filter runs over the slices a gate rule segments)."""
    from classseg.delivery.rules import MaskDelivery
    from classseg.evaluation.scores import read_truths
    from classseg.training.segmenter import predict_with_card

    arrays, probs, pp, pp3d = predict_with_card(segmenter_path, frame, batch_size, progress)
    shapes = [t.shape for t in read_truths(arrays.frame["mask_path"])]
    return MaskDelivery(probs, shapes, pp, pp3d, arrays.frame["patient_id"].to_numpy(),
                        arrays.frame["slice"].to_numpy())


def train_gate(config: GateConfig | None = None, data_dir: str | Path | None = None,
               splits_path: str | Path | None = None, out_dir: str | Path = "runs/gate",
               segmenter_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the gate CNN, choose threshold and rule on val, evaluate on test; write ``gate.keras`` and its card.

    Resumable like :func:`classseg.training.segmenter.train_segmenter`. ``segmenter_path``: the segmenter
    whose "mask non-empty" verdict is the baseline (and the partner of rule ``gate_and_mask``).
    """
    from functools import partial

    import keras

    from classseg import data as cdata
    from classseg.data.augment import AUGMENT_PROFILES, augment_value_scale, build_augmenter
    from classseg.data.sequence import ArraySequence
    from classseg.data.standardize import model_input_scale
    from classseg.models.resunet import build_gate_cnn
    from classseg.training.callbacks import resumable_callbacks
    from classseg.training.run import open_run
    from classseg.training.segmenter import init_from, model_inputs
    from classseg.utils.environment import machine
    from classseg.utils.guards import check_start_models
    from classseg.utils.jsonio import write_json

    config = config or GateConfig()
    # folder, identity (a resume with other settings is refused), seed, resumable state
    run = open_run(out_dir, "train-gate", data_dir, splits_path, config, config.seed)
    out, data_dir, state = run.out, run.data_dir, run.state

    frame = run.resolve_split()
    # a starting model must not have trained on this run's val / test patients (issue 18; LeakageError)
    # (val may stay val: fine-tuning on the starting weights' own split chooses on the same val patients)
    leakage = check_start_models(cdata.split_table(frame), [config.init], val_may_stay_val=True) \
        if config.init else []
    run.save_split()
    arrays = run.arrays(config.img_size, progress, required=("train", "val"))
    inputs = {name: model_inputs(a, config.normalization) for name, a in arrays.items()}

    make_aug = partial(build_augmenter, AUGMENT_PROFILES[config.augment_profile],
                       float_input=config.normalization != "raw",
                       value_scale=augment_value_scale(config.normalization)) if config.augment else None
    train_seq = ArraySequence(inputs["train"], arrays["train"].masks, config.batch_size, shuffle=True,
                              make_augmenter=make_aug, seed=config.seed, target="label", workers=config.workers)
    val_seq = ArraySequence(inputs["val"], arrays["val"].masks, config.batch_size, target="label")
    model = build_gate_cnn((config.img_size, config.img_size, 3), width=config.width, dropout=config.dropout,
                           input_scale=model_input_scale(config.normalization))
    if config.init:
        init_from(model, config.init)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    model_path = out / "gate.keras"

    callbacks = resumable_callbacks(out, state, model_path, "val_auc", config.lr, config.schedule, config.epochs,
                                    config.warmup_epochs, config.minutes)
    run.started = time.perf_counter()
    model.fit(train_seq, validation_data=val_seq, epochs=config.epochs, callbacks=callbacks,
              verbose=1 if progress else 2)
    seconds = run.train_seconds()

    best = keras.models.load_model(model_path, compile=False)
    weights = f"initialised from {config.init} (in-domain)" if config.init else "none (from scratch)"
    metrics = {"model": "gate_cnn", "weights": weights, "params": int(best.count_params()),
               "config": asdict(config), "epochs_run": int(len(pd.read_csv(out / "history.csv"))),
               "best_epoch": state.values.get("best_epoch"), "train_minutes": round(seconds / 60, 2),
               "machine": machine(), "data_dir": str(data_dir), "backend": keras.backend.backend(),
               **run.split_fields(), "leakage_check": leakage}
    write_json(out / "training.json", metrics)  # select_gate ends the run: run.json, curves, manifest
    return select_gate(model_path, data_dir, splits_path, segmenter_path, progress=progress)


def select_gate(gate_path: str | Path, data_dir: str | Path, splits_path: str | Path | None = None,
                segmenter_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Choose the gate's threshold and rule on val against ``segmenter_path``'s "mask non-empty",
    report val and test (the final calls of :func:`classseg.delivery.rules.deliver`, those the rule was
    chosen by), and (re)write ``gate.card.json`` (``class_threshold``) and ``metrics.json`` beside the gate."""
    import keras

    from classseg import data as cdata
    from classseg.models.card import ModelCard, read_card, write_card
    from classseg.models.predict import KerasRunner, predict, tumor_probability
    from classseg.training.segmenter import model_inputs
    from classseg.training.selection import choose_gate
    from classseg.utils.atomic import atomic_to_csv
    from classseg.utils.jsonio import read_json, write_json

    gate_path = Path(gate_path)
    out = gate_path.parent
    training = read_json(out / "training.json") if (out / "training.json").is_file() else {}
    old = read_card(gate_path)
    config = GateConfig(**training.get("config", {}))
    frame = cdata.resolve_splits(cdata.discover(data_dir), splits_path, seed=config.seed)
    parts = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("val", "test")}
    best = keras.models.load_model(gate_path, compile=False)
    probs, labels, runner = {}, {}, KerasRunner(best)
    for name, df in parts.items():
        arrays = cdata.load_arrays(df, config.img_size, progress=progress)
        class_out = predict(runner, model_inputs(arrays, config.normalization), 64)["class"]
        probs[name] = tumor_probability(class_out).astype(np.float32)
        labels[name] = arrays.labels
    maps: dict[str, MaskDelivery | None] = {"val": None, "test": None}
    if segmenter_path is not None:
        for name in ("val", "test"):
            maps[name] = segmenter_delivery(segmenter_path, parts[name])
    choice, table = choose_gate(labels["val"], probs["val"], maps["val"])
    atomic_to_csv(table, out / "gate_selection.csv", index=False)
    threshold = choice["threshold"] if choice["threshold"] is not None else 0.5

    def report(name: str) -> dict[str, Any]:
        y, p, m = labels[name], probs[name], maps[name]
        rep: dict[str, Any] = {"gate_alone": classification_metrics(y, p, threshold)}
        if m is not None:
            rep["mask_nonempty"] = classification_metrics(y, m.deliver(rule="mask").calls.astype(float), 0.5)
            rep["final_call"] = classification_metrics(y, m.deliver(p, threshold, choice["rule"]).calls.astype(float),
                                                       0.5)
        return rep

    metrics = {**training, "segmenter": str(segmenter_path), "choice": choice,
               "val": report("val"), "test": report("test")}
    write_json(out / "metrics.json", metrics)
    provenance = {k: training.get(k) for k in ("split_file", "epochs_run", "best_epoch", "train_minutes", "machine")}
    write_card(gate_path, ModelCard(
        role="gate", img_size=config.img_size, normalization=config.normalization, class_threshold=float(threshold),
        gate_rule=choice["rule"], provenance={**(old.provenance if old else {}), **provenance, "selection": choice,
                                              "baseline_segmenter": str(segmenter_path)}))
    if training:  # trained here (not a gate from elsewhere): end the run with its record, curves and manifest
        _finish_gate_run(out, training, config, metrics, data_dir)
    return metrics


def _finish_gate_run(out: Path, training: dict[str, Any], config: GateConfig, metrics: dict[str, Any],
                     data_dir: str | Path) -> None:
    """``run.json``, ``training_curves.png`` and ``manifest.json`` of a gate run (the delivered call: the
    chosen rule's final call when a segmenter took part, else the gate alone at its chosen threshold)."""
    from dataclasses import replace

    from classseg.reporting.plotting import plot_history
    from classseg.training.run import TrainingRun, finish_run

    def delivered(name: str) -> dict[str, Any]:
        return metrics[name].get("final_call") or metrics[name]["gate_alone"]

    run = TrainingRun(out=out, command="train-gate", data_dir=Path(training.get("data_dir") or data_dir),
                      splits_path=None, seed=config.seed)
    history = pd.read_csv(out / "history.csv") if (out / "history.csv").is_file() else None
    record = run.record(kind="gate", model="gate_cnn", weights=training["weights"], img_size=config.img_size,
                        epochs=config.epochs, epochs_run=training["epochs_run"], best_epoch=training["best_epoch"],
                        train_minutes=training["train_minutes"], normalization=config.normalization,
                        val=delivered("val"), test=delivered("test"), machine=training.get("machine"),
                        params=training.get("params"), gate_rule=metrics["choice"]["rule"],
                        threshold=metrics["choice"]["threshold"], baseline_segmenter=metrics["segmenter"])
    record = replace(record, split_file=training.get("split_file") or record.split_file)
    finish_run(out, record, history, lambda h, path: plot_history(h, [("loss", "loss"), ("auc", "AUC")], path),
               config=asdict(config), backend=training.get("backend"), leakage_check=training.get("leakage_check"))

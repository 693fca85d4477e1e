"""Copy a trained gate classifier and segmenter into saved_models/ and write manifest.json.

    python scripts/ship_models.py --classifier-run runs/gate --segmenter-run runs/segmenter \
        [--pipeline-run out_test] [--out saved_models]

The manifest records, for each model, what it is (architecture, input size, weights init,
epochs, split file, seed), its validation and test metrics exactly as its run measured them,
the library versions, and the gate threshold chosen on the validation split. The pipeline
reads ``gate_threshold`` from it.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from classseg.evaluation.scores import NUMERIC_FIELDS
from classseg.runinfo import environment_info, read_json, write_json
from classseg.training.classifiers import gate_model_path

KEEP = (*NUMERIC_FIELDS, "resolution", "f1_micro", "confusion_matrix", "n")  # the classseg.evaluation.Scores figures


def _pick(d: dict | None) -> dict:
    return {k: d[k] for k in KEEP if d and k in d}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier-run", required=True, type=Path)
    parser.add_argument("--segmenter-run", required=True, type=Path)
    parser.add_argument("--pipeline-run", type=Path, default=None, help="pipeline output on held-out patients")
    parser.add_argument("--gate-backbone-run", type=Path, default=None,
                        help="train-segmenter run whose ResUNet the gate's backbone is (resunet_* backbones)")
    parser.add_argument("--out", type=Path, default=Path("saved_models"))
    args = parser.parse_args()

    results = read_json(args.classifier_run / "results.json")
    gate = results["gate"]
    gate_path = gate_model_path(args.classifier_run / "results.json")
    cls_dir = gate_path.parent
    cls_metrics = read_json(cls_dir / "metrics.json")
    cls_manifest = read_json(args.classifier_run / "manifest.json")
    seg_metrics = read_json(args.segmenter_run / "metrics.json")
    seg_manifest = read_json(args.segmenter_run / "manifest.json")

    args.out.mkdir(parents=True, exist_ok=True)
    cls_path = args.out / "classifier.keras"
    seg_path = args.out / "segmenter.keras"
    import keras

    from classseg.models import register_custom_objects

    register_custom_objects()
    # Re-saved uncompiled: the shipped files carry no optimizer state (a third of the size).
    for source, target in ((gate_path, cls_path), (args.segmenter_run / "segmenter.keras", seg_path)):
        keras.saving.load_model(source, compile=False, safe_mode=True).save(target)
    config = results["config"]
    manifest = {
        "gate_threshold": gate["threshold"],
        "gate_threshold_rule": f"highest threshold reaching sensitivity >= {gate['target_sensitivity']} "
                               "on the validation split",
        "split_file": "data/splits/kaggle_3m_seed0.csv (patient-level, 31 train / 7 val / 7 test patients "
                      "of ../shared/data/kaggle_3m; the 7 test patients are the bundled sample)",
        "classifier": {
            "file": cls_path.name, "sha256_16": _sha(cls_path), "size_mb": round(cls_path.stat().st_size / 1e6, 2),
            "architecture": f"{gate['backbone']} backbone + '{config['head']}' head, softmax 2 (index 1 = tumor)",
            "input": f"{config['img_size']}x{config['img_size']}x3 raw RGB 0..255 (preprocessing inside)",
            "weights_init": config["weights"] or "none (random init)",
            "backbone_trained": bool(config.get("train_backbone")),
            "augment": config.get("augment"), "class_weights": config.get("class_weights"),
            "epochs": config["epochs"], "epochs_run": cls_metrics.get("runs", [{}])[0].get("epochs_run"),
            "best_epoch": cls_metrics.get("best_epoch"), "seed": config["seed"],
            "trainable_params": cls_metrics.get("trainable_params"), "params": cls_metrics.get("params"),
            "train_time_s": cls_metrics.get("train_time_s"),
            "val_at_threshold": _pick(gate.get("val_at_threshold")),
            "val_at_0.5": _pick(cls_metrics.get("val")), "test_at_0.5": _pick(cls_metrics.get("test")),
            "command": cls_manifest.get("command"),
        },
        "segmenter": {
            "file": seg_path.name, "sha256_16": _sha(seg_path), "size_mb": round(seg_path.stat().st_size / 1e6, 2),
            "architecture": f"ResUNet (seed 002), {seg_metrics['params']:,} parameters",
            "input": f"{seg_metrics['img_size']}x{seg_metrics['img_size']}x3 raw RGB 0..255 (1/255 inside)",
            "weights_init": seg_metrics["weights"], "loss": seg_metrics["loss"],
            "tumor_only": seg_metrics["tumor_only"], "augment": seg_metrics["augment"],
            "epochs": seg_metrics["epochs"], "epochs_run": seg_metrics["epochs_run"],
            "best_epoch": seg_metrics["best_epoch"], "seed": seg_metrics["seed"], "lr": seg_metrics["lr"],
            "train_seconds": seg_metrics["train_seconds"],
            # post-processed masks at the original slice size (classseg.evaluation.Scores); raw beside
            "val": _pick(seg_metrics.get("val")), "val_threshold_only": _pick(seg_metrics.get("val", {})
                                                                               .get("threshold_only")),
            "test": _pick(seg_metrics), "test_threshold_only": _pick(seg_metrics.get("threshold_only")),
            "config": seg_manifest.get("config"),
        },
        "environment": environment_info(),
    }
    if args.gate_backbone_run:
        gb = read_json(args.gate_backbone_run / "metrics.json")
        manifest["classifier"]["weights_init"] = (
            f"frozen backbone = a ResUNet trained from scratch by `classseg train-segmenter` "
            f"({'tumor slices only' if gb['tumor_only'] else 'all slices, tumor and tumor-free'}, "
            f"{gb['img_size']} px, {gb['epochs_run']} epochs, best epoch {gb['best_epoch']}, lr {gb['lr']}, "
            f"loss {gb['loss']}, seed {gb['seed']}); no ImageNet weights")
        manifest["gate_backbone"] = {"val": _pick(gb.get("val")), "test": _pick(gb),
                                     "config": read_json(args.gate_backbone_run / "manifest.json").get("config")}
    if args.pipeline_run:
        pipe = read_json(args.pipeline_run / "metrics.json")
        manifest["pipeline_test"] = {"gated": _pick(pipe["gated"]), "segment_all": _pick(pipe["segment_all"]),
                                     "gating_effect": pipe.get("gating_effect"), "timing": pipe.get("timing")}
    write_json(args.out / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in (cls_path, seg_path)) / 1e6
    print(f"wrote {cls_path}, {seg_path} ({total:.1f} MB together) and {args.out / 'manifest.json'}")


if __name__ == "__main__":
    main()

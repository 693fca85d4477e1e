"""Copy a trained segmenter and gate (with their model cards) into saved_models/ and write manifest.json.

    python scripts/ship_models.py --segmenter-run RUN --gate-run RUN [--out saved_models]
    python scripts/ship_models.py --segmenter-run ENSEMBLE_DIR [--out saved_models]  # keeps the shipped gate
    python -m classseg.pipeline --test-dir data/sample/kaggle_3m --out OUT      # with the shipped files
    python scripts/ship_models.py --pipeline-run OUT [--out saved_models]      # adds its figures, no copy
    python scripts/ship_models.py --lineage STEPS.json                         # every training step, no copy

Models are re-saved without optimizer state (``compile=False``: smaller, and loadable with
``safe_mode=True`` and no custom objects); their cards travel beside them (``segmenter.card.json``;
``classifier.card.json`` for the gate, the pipeline's default ``classifier.keras``), so the pipeline
feeds and post-processes them exactly as validated. The manifest records, per model: split, recipe,
epochs, training minutes, machine, input, the val and test figures exactly as the runs measured them
(scored at the slices' original size), and the pipeline's own figures on the held-out patients when
``--pipeline-run`` is given. The pipeline must have run on the files as shipped (re-saving a model changes
its hash), so ``--pipeline-run`` alone only adds that run to the manifest, after checking that the
hashes it recorded are those of the shipped files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from classseg.evaluation.scores import NUMERIC_FIELDS
from classseg.models.card import read_card, write_card
from classseg.utils.atomic import sha256_file
from classseg.utils.environment import environment_info
from classseg.utils.jsonio import read_json, write_json

SEG_KEYS = (*NUMERIC_FIELDS, "resolution")  # the classseg.evaluation.Scores figures
CLS_KEYS = ("accuracy", "precision", "sensitivity", "specificity", "auc", "confusion_matrix", "n", "threshold")


def _pick(d: dict | None, keys: tuple[str, ...]) -> dict:
    return {k: d[k] for k in keys if d and k in d}


def _sha(path: Path) -> str:
    return sha256_file(path)[:16]


def _resave(src: Path, dst: Path):
    import keras

    model = keras.models.load_model(src, compile=False)
    model.save(dst)
    keras.models.load_model(dst, safe_mode=True, compile=False)  # the shipped file must load safely
    return model


def _copy_model(src: Path, dst: Path) -> dict:
    """Re-save ``src`` as ``dst`` with its card; an ensemble card's members are re-saved beside ``dst`` under
    their names and the card records their new SHA-256."""
    from dataclasses import replace

    from classseg.models.card import model_sha256

    model = _resave(src, dst)
    card = read_card(src)
    members = []
    if card is not None and card.ensemble:
        for entry in card.ensemble:
            _resave(src.parent / entry["file"], dst.parent / entry["file"])
            members.append({"file": entry["file"], "sha256": model_sha256(dst.parent / entry["file"])})
        card = replace(card, ensemble=members)
    if card is not None:
        write_card(dst, card)
    size = dst.stat().st_size + sum((dst.parent / m["file"]).stat().st_size for m in members)
    return {"file": dst.name, "card": f"{dst.stem}.card.json" if card else None, "sha256_16": _sha(dst),
            "size_mb": round(size / 1e6, 2), "params": int(model.count_params()),
            **({"ensemble_members": [{"file": m["file"], "sha256_16": m["sha256"][:16]} for m in members]}
               if members else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter-run", type=Path, default=None)
    parser.add_argument("--gate-run", type=Path, default=None)
    parser.add_argument("--pipeline-run", type=Path, default=None, help="pipeline output on the held-out patients")
    parser.add_argument("--lineage", type=Path, default=None,
                        help="JSON {model role: [step, ...]}: every training step behind a shipped model that "
                             "started from another model (command, minutes, machine), added to the manifest")
    parser.add_argument("--out", type=Path, default=Path("saved_models"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.segmenter_run is None:
        if args.pipeline_run is None and args.lineage is None:
            parser.error("give --segmenter-run (ship models), or --pipeline-run / --lineage (add to the manifest)")
        if args.pipeline_run is not None:
            add_pipeline_run(args.pipeline_run, args.out)
        if args.lineage is not None:
            add_lineage(args.lineage, args.out)
        return

    seg = read_json(args.segmenter_run / "metrics.json")
    ensemble = seg.get("model") == "resunet ensemble"  # a classseg ensemble folder: its members' runs say more
    seg_training = {} if ensemble else read_json(args.segmenter_run / "training.json")
    previous = read_json(args.out / "manifest.json") if (args.out / "manifest.json").is_file() else {}
    manifest: dict = {
        "split_file": "data/splits/kaggle_3m_seed0.csv (patient-level over the 75 patients of kaggle_3m: "
                      "56 train / 12 val / 7 test; the 7 test patients are the bundled sample data/sample/kaggle_3m)",
        "selection": "every choice (variant, post-processing, gate threshold and rule) made on the val split only",
        "segmenter": {
            **_copy_model(args.segmenter_run / "segmenter.keras", args.out / "segmenter.keras"),
            "architecture": "ResUNet (seed 002), sigmoid mask" + (": mean of an ensemble" if ensemble else ""),
            "weights": seg.get("weights", "none (from scratch)"), "members": seg.get("members"),
            "recipe": seg.get("recipe"), "config": seg_training.get("config"), "img_size": seg["img_size"],
            "normalization": seg["normalization"], "context_slices": seg.get("context", 0),
            "epochs_run": seg.get("epochs_run"), "best_epoch": seg.get("best_epoch"),
            "train_minutes": seg.get("train_minutes"), "machine": seg["machine"],
            "training_backend": seg_training.get("backend"), "trained_on": seg_training.get("data_dir"),
            "postprocess": seg["postprocess_chosen"], "postprocess_rule": seg.get("postprocess_rule", seg.get(
                "evaluated_on")),
            "tta": seg.get("tta", "none"), "postprocess_3d": seg.get("postprocess_3d"),
            "val_robustness": seg.get("val_robustness"),
            "scored_at": seg["scored_at"],
            "val": _pick(seg["val"], SEG_KEYS), "test": _pick(seg, SEG_KEYS),
        },
    }
    if args.gate_run is not None:
        gate = read_json(args.gate_run / "metrics.json")
        manifest["classifier"] = {  # the pipeline's gate: saved_models/classifier.keras
            **_copy_model(args.gate_run / "gate.keras", args.out / "classifier.keras"),
            "architecture": "ResUNet encoder + global average/max pooling + softmax 2 (build_gate_cnn)",
            "recipe": "classseg train-gate on every train slice: augmentation profile "
                      f"{(gate.get('config') or {}).get('augment_profile', 'recipe')}, input "
                      f"{(gate.get('config') or {}).get('normalization', 'raw')}, cross-entropy with label smoothing, "
                      "AdamW + cosine by time spent (GateConfig in config); threshold and rule chosen on val against "
                      "the segmenter's mask",
            "weights": gate.get("weights", "none (from scratch)"), "config": gate.get("config"),
            "epochs_run": gate.get("epochs_run"),
            "best_epoch": gate.get("best_epoch"), "train_minutes": gate.get("train_minutes"),
            "machine": gate.get("machine"), "choice": gate["choice"],
            "val": {k: _pick(v, CLS_KEYS) for k, v in gate["val"].items()},
            "test": {k: _pick(v, CLS_KEYS) for k, v in gate["test"].items()},
        }
    elif "classifier" in previous and (args.out / "classifier.keras").is_file():
        manifest["classifier"] = previous["classifier"]  # the gate stays as shipped
    for stale in args.out.glob("segmenter.member*.keras"):  # members of an ensemble shipped before
        if stale.name not in {m["file"] for m in manifest["segmenter"].get("ensemble_members", [])}:
            stale.unlink()
    total = sum(p.stat().st_size for p in args.out.glob("*.keras")) / 1e6
    manifest["total_size_mb"] = round(total, 2)
    manifest["shipped_with"] = environment_info()
    write_json(args.out / "manifest.json", manifest)
    print(f"wrote {args.out} ({total:.1f} MB of models)")


def add_lineage(lineage_file: Path, out: Path) -> None:
    """Put each role's training steps (``lineage_file``: ``{"segmenter": [...], "classifier": [...]}``) into
    ``out/manifest.json`` as ``<role>.lineage``: a model fine-tuned from another one records every step, its
    command, minutes and machine, not only the last run's."""
    manifest = read_json(out / "manifest.json")
    for role, steps in read_json(lineage_file).items():
        if role not in manifest:
            raise SystemExit(f"{lineage_file}: {role!r} is not a model in {out / 'manifest.json'}")
        manifest[role]["lineage"] = steps
    write_json(out / "manifest.json", manifest)
    print(f"added the lineage of {lineage_file} to {out / 'manifest.json'}")


def add_pipeline_run(run: Path, out: Path) -> None:
    """Put ``run/metrics.json`` (the pipeline on the held-out patients) into ``out/manifest.json``.

    The run must have used the files shipped in ``out`` (its ``models`` sources are checked), and the
    hashes recorded beside it are those of the shipped files now. The run's ``model_info`` (a copy of
    the manifest it found beside the models, hashes of earlier files included) is left out."""
    manifest = read_json(out / "manifest.json")
    metrics = read_json(run / "metrics.json")
    models = metrics.get("models", {})
    for role in ("classifier", "segmenter"):
        source = Path(str(models.get(role, "")))
        if source.name and source.resolve() != (out / source.name).resolve():
            raise SystemExit(f"{run}: its {role} is {source}, not a file shipped in {out}; run the pipeline on "
                             "the shipped files")
    metrics.pop("model_info", None)
    metrics["model_sha256_16"] = {p.name: _sha(p) for p in sorted(out.glob("*.keras"))}
    manifest["pipeline_on_test_patients"] = metrics
    write_json(out / "manifest.json", manifest)
    print(f"added {run / 'metrics.json'} to {out / 'manifest.json'}")


if __name__ == "__main__":
    main()

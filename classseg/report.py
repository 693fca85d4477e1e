"""``classseg report``: tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) of a run-all folder.

Reads what the stages wrote (``phase1/results.csv`` and per-backbone folders, ``phase2/metrics.json``,
``phase3/predictions/metrics.json``, ``joint/metrics.json``) and never recomputes a metric, so the
report shows exactly the figures the stages measured. Every table carries a notes line saying
how its numbers were obtained (split file, seed(s), weights, image size, epochs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.atomic import atomic_write_text
from classseg.jsonio import read_json
from classseg.plotting import save_figure
from classseg.tables import compare_runs, format_value, write_table

PHASE1_COLUMNS = ["backbone", "weights", "img_size", "epochs", "repeats", "trainable_params", "params",
                  "train_time_s", "accuracy", "f1_micro", "f1_macro", "precision", "sensitivity", "specificity",
                  "auc", "ms_per_slice", "val_auc"]


def _json(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def _save(fig: Any, stem: Path) -> list[Path]:
    return save_figure(fig, stem, dpi=150, suffixes=(".png", ".pdf"), tight=False)


def _label(split_file: str, seeds: Any, weights: Any, img_size: Any, epochs: Any) -> str:
    return (f"Test split of {split_file} (patient-level); seed(s) {seeds}; weights {weights or 'none'}; "
            f"image size {img_size} px; epochs {epochs}.")


def phase1_table(run: Path, split_file: str) -> tuple[pd.DataFrame, str] | None:
    """Seed 002 Table I columns and more, one row per backbone (mean ± std over repeats)."""
    results = run / "phase1" / "results.csv"
    if not results.exists():
        return None
    df = pd.read_csv(results)
    keep = [c for c in df.columns if c in PHASE1_COLUMNS or (c.endswith("_std") and c[:-4] in PHASE1_COLUMNS)]
    df = df[keep]
    gate = (_json(run / "phase1" / "results.json") or {}).get("gate", {})
    repeats = int(df["repeats"].max()) if "repeats" in df else 1
    seed0 = (_json(run / "phase1" / "results.json") or {}).get("config", {}).get("seed", 0)
    notes = _label(split_file, f"{seed0}..{seed0 + repeats - 1}" if repeats > 1 else seed0,
                   ", ".join(map(str, df["weights"].fillna("none").unique())) if "weights" in df else "?",
                   ", ".join(map(str, df["img_size"].unique())) if "img_size" in df else "?",
                   ", ".join(map(str, df["epochs"].unique())) if "epochs" in df else "?")
    notes += f" Frozen backbones, trainable dense head. Gate chosen on validation: {gate.get('backbone', '?')}."
    return df, notes


def segmentation_table(run: Path, split_file: str) -> tuple[pd.DataFrame, str] | None:
    """Phase-2 ResUNet on the test split, post-processed and threshold only (Scores names, units in them)."""
    from classseg.evaluation.scores import DEFINITIONS
    from classseg.tables import SEGMENTATION_FIELDS

    metrics = _json(run / "phase2" / "metrics.json")
    if metrics is None:
        return None
    rows = [{"model": "ResUNet", "masks": name, **{k: section.get(k) for k in SEGMENTATION_FIELDS}}
            for name, section in (("post-processed", metrics), ("threshold only", metrics.get("threshold_only", {})))]
    notes = _label(split_file, metrics.get("seed"), metrics.get("weights"), metrics.get("img_size"),
                   metrics.get("epochs"))
    notes += " " + DEFINITIONS
    return pd.DataFrame(rows), notes


def comparison_table(run: Path) -> tuple[pd.DataFrame, str] | None:
    """Two-stage pipeline (gated, segment-all), joint model and the segmenter, one row each."""
    from classseg.tables import comparison_notes

    dirs = [d for d in (run / "phase3" / "predictions", run / "joint", run / "phase2") if (d / "metrics.json").exists()]
    if not dirs:
        return None
    df = compare_runs(dirs)
    return df, ("All rows on the same test patients. Two-stage = phase-1 gate + phase-2 ResUNet. "
                + comparison_notes(df))


# ------------------------------------------------------------------------------------------ figures
def _confusion_figures(run: Path, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from classseg.plotting import draw_confusion_matrix

    folders = sorted(p.parent for p in (run / "phase1").glob("*/metrics.json"))
    if not folders:
        return []
    fig, axes = plt.subplots(1, len(folders), figsize=(3.2 * len(folders), 3.2), squeeze=False)
    for ax, folder in zip(axes[0], folders, strict=True):
        test = read_json(folder / "metrics.json").get("test", {})
        draw_confusion_matrix(ax, test.get("confusion_matrix", [[0, 0], [0, 0]]), folder.name)
    fig.suptitle("Phase 1 confusion matrices (test split, threshold 0.5)")
    return _save(fig, fig_dir / "confusion_matrices")


def _roc_figure(run: Path, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    drawn = 0
    for path in sorted((run / "phase1").glob("*/predictions.csv")):
        pred = pd.read_csv(path)
        test = pred[pred["split"] == "test"]
        if test["label"].nunique() < 2:
            continue
        RocCurveDisplay.from_predictions(test["label"], test["p_tumor"], ax=ax, name=path.parent.name)
        drawn += 1
    joint = run / "joint" / "predictions.csv"
    if joint.exists():
        pred = pd.read_csv(joint)
        if {"label", "p_tumor"} <= set(pred.columns) and pred["label"].nunique() == 2:
            RocCurveDisplay.from_predictions(pred["label"], pred["p_tumor"], ax=ax, name="joint", linestyle="--")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC, test split")
    ax.legend(fontsize=7)
    return _save(fig, fig_dir / "roc_curves")


def _curves_figure(run: Path, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = [(p.parent.name, p) for p in sorted((run / "phase1").glob("*/history.csv"))]
    histories += [(name, run / name / "history.csv") for name in ("phase2", "joint")
                  if (run / name / "history.csv").exists()]
    if not histories:
        return []
    fig, axes = plt.subplots(1, len(histories), figsize=(3.6 * len(histories), 3.0), squeeze=False)
    for ax, (name, path) in zip(axes[0], histories):
        hist = pd.read_csv(path)
        x = hist["epoch"] + 1 if "epoch" in hist else np.arange(1, len(hist) + 1)
        for col in ("loss", "val_loss"):
            if col in hist:
                ax.plot(x, hist[col], label=col)
        ax.set_title({"phase2": "ResUNet", "joint": "joint model"}.get(name, name))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle("Training curves (loss)")
    return _save(fig, fig_dir / "training_curves")


def _overlay_grid(run: Path, fig_dir: Path) -> list[Path]:
    """Seed 002 Figure 4 style grid, re-rendered as PNG and PDF from the phase-2 example figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = run / "phase2" / "examples.png"
    if not source.exists():
        return []
    image = plt.imread(source)
    fig = plt.figure(figsize=(image.shape[1] / 150, image.shape[0] / 150))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image)
    ax.axis("off")
    return _save(fig, fig_dir / "segmentation_examples")


def _per_patient_box(run: Path, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[float]] = {}
    seg = _json(run / "phase2" / "metrics.json")
    if seg:
        series["ResUNet (all test slices)"] = [p["dice"] for p in seg.get("per_patient", []) if p["dice"] is not None]
    pipe = _json(run / "phase3" / "predictions" / "metrics.json")
    if pipe:
        for key, name in (("gated", "two-stage delivered"), ("segment_all", "segment every slice")):
            series[name] = [p["dice"] for p in pipe.get(key, {}).get("per_patient", []) if p["dice"] is not None]
    joint = _json(run / "joint" / "metrics.json")
    if joint:
        series["joint (delivered)"] = [p["dice"] for p in joint.get("per_patient", []) if p.get("dice") is not None]
    series = {k: v for k, v in series.items() if v}
    if not series:
        return []
    fig, ax = plt.subplots(figsize=(1.8 * len(series) + 2, 3.6))
    ax.boxplot(list(series.values()), showmeans=True)
    ax.set_xticks(range(1, len(series) + 1), list(series), rotation=15, fontsize=8)
    ax.set_ylabel("volume Dice per patient")
    ax.set_ylim(0, 1.02)
    ax.set_title("Per-patient Dice, test split")
    return _save(fig, fig_dir / "per_patient_dice")


def _fmt3(value: Any) -> str:
    """Three decimals (:func:`classseg.tables.format_value`), ``n/a`` when missing."""
    return format_value(value, 3) or "n/a"


def headline(run: Path) -> list[str]:
    """The report's first lines: who was held out, what the two deliverables reached on them, and how the
    models began (from scratch, ImageNet, or the shipped models: in-domain transfer)."""
    lines = ["## Headline (held-out test patients)", ""]
    splits = run / "split" / "splits.csv"
    if splits.is_file():
        frame = pd.read_csv(splits)
        test = sorted(frame.loc[frame["split"] == "test", "patient_id"])
        counts = frame["split"].value_counts()
        lines.append(f"- Split `{splits}`: {counts.get('train', 0)} train / {counts.get('val', 0)} val / "
                     f"{len(test)} test patients; test = {', '.join(test)}. Every choice (gate, thresholds, "
                     "post-processing, epochs) was made on val.")
    rows = []
    pipe = _json(run / "phase3" / "predictions" / "metrics.json")
    if pipe and isinstance(pipe.get("gated"), dict):
        choice = _json(run / "phase3" / "gate_selection.json") or {}
        rule = f"gate rule {choice['rule']} chosen on val" if choice.get("rule") else "gate rule of the pipeline"
        rows.append(("Two-stage pipeline (phase 1 gate + phase 2 ResUNet)", pipe["gated"], rule))
    joint = _json(run / "joint" / "metrics.json")
    if joint:
        rows.append((f"Joint model `{joint.get('model')}`", joint, f"gate rule {joint.get('gate_rule', 'gate')}"))
    for name, m, how in rows:
        lines.append(f"- **{name}**: slice accuracy {_fmt3(m.get('accuracy'))}, sensitivity "
                     f"{_fmt3(m.get('sensitivity'))}, specificity {_fmt3(m.get('specificity'))}; Dice per patient "
                     f"{_fmt3(m.get('dice_per_patient'))}, Dice on tumor slices {_fmt3(m.get('dice_tumor_slices'))} "
                     f"({how}).")
    seg = _json(run / "phase2" / "metrics.json")
    start = _json(run / "phase2" / "start_model_test.json")
    if seg and start:
        lines.append(f"- Phase 2 segmenter alone (verdict = mask non-empty): before fine-tuning accuracy "
                     f"{_fmt3(start.get('accuracy'))}, Dice per patient {_fmt3(start.get('dice_per_patient'))}; after "
                     f"{seg.get('train_minutes')} min of fine-tuning accuracy {_fmt3(seg.get('accuracy'))}, Dice per "
                     f"patient {_fmt3(seg.get('dice_per_patient'))}.")
    if seg:
        lines.append(f"- Weights: phase 2 and the joint model {seg.get('weights')}. The shipped models were "
                     "trained on the 56 train patients of data/splits/kaggle_3m_seed0.csv; the bundled sample is "
                     "their test split, so they never saw its patients. Figures from a 1-patient val and a few "
                     "test patients are noisy: the benchmark figures are in docs/multitask.md and "
                     "saved_models/README.md.")
    return lines if len(lines) > 2 else []


def write_report(run_dir: str | Path, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write every table and figure a run folder supports; return the files by kind."""
    run, out = Path(run_dir), Path(out_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder does not exist")
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    split_file = str(run / "split" / "splits.csv") if (run / "split" / "splits.csv").exists() else "(per stage)"
    written: dict[str, list[Path]] = {"tables": [], "figures": []}
    for stem, made in (("phase1_classification", phase1_table(run, split_file)),
                       ("phase2_segmentation", segmentation_table(run, split_file)),
                       ("joint_vs_two_stage", comparison_table(run))):
        if made is None:
            continue
        df, notes = made
        caption = {"phase1_classification": "Phase 1: frozen backbones with the paper's dense head",
                   "phase2_segmentation": "Phase 2: ResUNet (Focal Tversky), test split",
                   "joint_vs_two_stage": "Joint multi-task model vs two-stage Class-Seg pipeline"}[stem]
        written["tables"] += list(write_table(df, out / stem, caption, notes).values())
    for make in (_confusion_figures, _roc_figure, _curves_figure, _overlay_grid, _per_patient_box):
        written["figures"] += make(run, fig_dir)
    index = ["# classseg report", "", f"Run folder: `{run}`", "", *headline(run), ""]
    index += [f"- [{p.name}]({p.relative_to(out)})" for p in written["tables"] if p.suffix == ".md"]
    index += [f"- ![{p.stem}]({p.relative_to(out)})" for p in written["figures"] if p.suffix == ".png"]
    atomic_write_text(out / "README.md", "\n".join(index) + "\n")
    return written

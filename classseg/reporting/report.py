"""``classseg report``: tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) of a run-all folder.

Reads what the stages wrote (``phase1/results.csv`` and per-backbone folders, ``phase2/metrics.json`` and
``start_model_test.json``, ``phase3/predictions/metrics.json``, ``joint/metrics.json`` and
``predictions_test.npz``, ``split/split_rule.json``, ``leakage_check.json``) and never recomputes a metric,
so the report shows exactly the figures the stages measured. Every table carries a notes line saying
how its numbers were obtained (split file, seed(s), weights, image size, epochs); labels (loss, weights)
come from each run's own settings, and "never trained on" is said only where the leakage guard checked it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classseg.reporting.plotting import save_figure
from classseg.reporting.tables import compare_runs, format_value, write_table
from classseg.utils.atomic import atomic_to_csv, atomic_write_text
from classseg.utils.jsonio import read_json

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
    from classseg.reporting.tables import SEGMENTATION_FIELDS

    metrics = _json(run / "phase2" / "metrics.json")
    if metrics is None:
        return None
    rows = [{"model": "ResUNet", "masks": name, **{k: section.get(k) for k in SEGMENTATION_FIELDS}}
            for name, section in (("post-processed", metrics), ("threshold only", metrics.get("threshold_only", {})))]
    notes = _label(split_file, metrics.get("seed"), metrics.get("weights"), metrics.get("img_size"),
                   metrics.get("epochs"))
    notes += " " + DEFINITIONS
    return pd.DataFrame(rows), notes


#: Loss names of the segmenter recipes (:func:`classseg.models.losses.get_loss`) as a caption says them.
LOSS_LABELS = {"bce_dice": "BCE + Dice", "focal_tversky": "Focal Tversky", "tversky": "Tversky", "dice": "Dice"}


def segmentation_caption(run: Path) -> str:
    """``Phase 2: ResUNet (BCE + Dice, recipe fast), test split``: loss and recipe from the run's own
    ``phase2/metrics.json``, never assumed."""
    metrics = _json(run / "phase2" / "metrics.json") or {}
    loss = metrics.get("loss")
    what = [LOSS_LABELS.get(loss, loss) if loss else "loss not recorded"]
    if metrics.get("recipe"):
        what.append(f"recipe {metrics['recipe']}")
    return f"Phase 2: ResUNet ({', '.join(what)}), test split"


def phase1_per_repeat(run: Path) -> pd.DataFrame | None:
    """One row per phase-1 backbone and repeat (seed): the runs behind the mean ± std of the phase-1 table
    (``phase1/<backbone>/metrics.json`` ``runs``); None with a single repeat."""
    rows = []
    for path in sorted((run / "phase1").glob("*/metrics.json")):
        metrics = read_json(path)
        if int(metrics.get("repeats", 1)) < 2:
            continue
        for r in metrics.get("runs", []):
            test, val = r.get("test") or {}, r.get("val") or {}
            rows.append({"backbone": metrics.get("backbone", path.parent.name), "seed": r.get("seed"),
                         **{f"test_{k}": test.get(k) for k in
                            ("accuracy", "sensitivity", "specificity", "precision", "f1_macro", "auc")},
                         "val_auc": val.get("auc"), "val_accuracy": val.get("accuracy"),
                         "train_time_s": r.get("train_time_s")})
    return pd.DataFrame(rows) if rows else None


def comparison_table(run: Path) -> tuple[pd.DataFrame, str] | None:
    """Two-stage pipeline (gated, segment-all), joint model and the segmenter, one row each."""
    from classseg.reporting.tables import comparison_notes

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

    from classseg.reporting.plotting import draw_confusion_matrix

    folders = sorted(p.parent for p in (run / "phase1").glob("*/metrics.json"))
    if not folders:
        return []
    fig, axes = plt.subplots(1, len(folders), figsize=(3.2 * len(folders), 3.2), squeeze=False)
    for ax, folder in zip(axes[0], folders, strict=True):
        test = read_json(folder / "metrics.json").get("test", {})
        draw_confusion_matrix(ax, test.get("confusion_matrix", [[0, 0], [0, 0]]), folder.name)
    fig.suptitle("Phase 1 confusion matrices (test split, threshold 0.5)")
    return _save(fig, fig_dir / "confusion_matrices")


def joint_test_predictions(run: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(label, P(tumor)) of the joint model's test slices, from what its run writes (``predictions_test.npz``,
    :func:`classseg.evaluation.delivered.save_predictions`); the label is the original-size truth non-empty.
    None when the run has no class output or no such file."""
    from classseg.evaluation.delivered import read_predictions

    path = run / "joint" / "predictions_test.npz"
    if not path.is_file():
        return None
    pred = read_predictions(path)
    if "tumor_prob" not in pred:
        return None
    from classseg.data.io import read_mask

    labels = np.array([bool(p) and bool(read_mask(p).any()) for p in pred["mask_path"]], dtype=int)
    return labels, np.asarray(pred["tumor_prob"], float)


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
    joint = joint_test_predictions(run)
    if joint is not None and len(np.unique(joint[0])) == 2:
        display = RocCurveDisplay.from_predictions(joint[0], joint[1], ax=ax, name="joint (class output)")
        display.line_.set_linestyle("--")
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
    """Three decimals (:func:`classseg.reporting.tables.format_value`), ``n/a`` when missing."""
    return format_value(value, 3) or "n/a"


def _split_lines(run: Path) -> list[str]:
    """Who was held out and by which rule (``split/split_rule.json``, fixed before any result was seen)."""
    lines = []
    rule = _json(run / "split" / "split_rule.json")
    lines.append(f"- Held-out patients chosen by a rule fixed before any result was seen: {rule['rule']}."
                 if rule else "- How the held-out patients were chosen was not recorded (a run made before issue 18).")
    splits = run / "split" / "splits.csv"
    if splits.is_file():
        frame = pd.read_csv(splits)
        test = sorted(frame.loc[frame["split"] == "test", "patient_id"])
        val = sorted(frame.loc[frame["split"] == "val", "patient_id"])
        counts = frame["split"].value_counts()
        lines.append(f"- Split `{splits}`: {counts.get('train', 0)} train / {len(val)} val / {len(test)} test "
                     f"patients; test = {', '.join(test)}; val = {', '.join(val)}. Every choice (gate, thresholds, "
                     "post-processing, epochs) was made on val.")
    return lines


def leakage_lines(run: Path) -> list[str]:
    """What the leakage guard checked (``leakage_check.json``): "never trained on" is said only when the
    split of every starting model was read and compared."""
    check = _json(run / "leakage_check.json")
    if check is None:
        return ["- Leakage: not checked (no leakage_check.json; a run made before issue 18). Whether the "
                "starting weights saw this run's val/test patients is unknown."]
    models = check.get("starting_models", [])
    if not models:
        return ["- Leakage: no model started from trained weights (from scratch or ImageNet); nothing to check."]
    lines = []
    for r in models:
        if r.get("checked"):
            lines.append(f"- Leakage checked: `{r['model']}` was trained and chosen on the split `{r['split_file']}` "
                         f"(read from {r.get('split_read_from', '?')}); none of this run's "
                         f"{r['new_val_test_patients']} val/test patients is among its {r['start_train_val_patients']} "
                         "train/val patients, so it never trained or chose on them.")
        else:
            lines.append(f"- Leakage NOT checked for `{r['model']}`: {r.get('why')}. It may have trained on this "
                         "run's val/test patients; read its figures with that in mind.")
    return lines


def _weights_lines(run: Path) -> list[str]:
    """How each stage's model began, each from its own run (phase 1, phase 2 and the joint model may differ)."""
    parts = []
    results = _json(run / "phase1" / "results.json")
    if results:
        parts.append(f"phase 1 backbones {results.get('config', {}).get('weights') or 'none (random init)'}")
    for stage, name in (("phase2", "phase 2 segmenter"), ("joint", "joint model")):
        metrics = _json(run / stage / "metrics.json")
        if metrics:
            parts.append(f"{name} {metrics.get('weights')}"
                         + (f", input {metrics['normalization']}" if metrics.get("normalization") else ""))
    return [f"- Weights: {'; '.join(parts)}."] if parts else []


#: Figures of the start-vs-trained table, as (Scores name, column header).
HEADLINE_FIGURES = (("accuracy", "slice accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                    ("dice_per_patient", "Dice per patient"), ("dice_tumor_slices", "Dice, tumor slices"))


def headline_rows(run: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, how its call is made, test Scores) for the starting model and every trained deliverable,
    all on the same test patients."""
    rows = []
    start = _json(run / "phase2" / "start_model_test.json")
    if start:
        rows.append((f"starting model `{Path(str(start.get('model'))).name}`, unchanged",
                     "mask non-empty, its card's threshold and post-processing", start))
    seg = _json(run / "phase2" / "metrics.json")
    if seg:
        how = f"{seg.get('train_minutes')} min of training" + (", fine-tuned from the starting model" if start else "")
        rows.append(("phase 2 segmenter", f"mask non-empty; {how}", seg))
    pipe = _json(run / "phase3" / "predictions" / "metrics.json")
    if pipe and isinstance(pipe.get("gated"), dict):
        choice = _json(run / "phase3" / "gate_selection.json") or {}
        rule = f"gate rule {choice['rule']} chosen on val" if choice.get("rule") else "gate rule of the pipeline"
        rows.append(("two-stage pipeline (phase 1 gate + phase 2 segmenter)", rule, pipe["gated"]))
    joint = _json(run / "joint" / "metrics.json")
    if joint:
        rows.append((f"joint model `{joint.get('model')}`", f"gate rule {joint.get('gate_rule', 'gate')}", joint))
    return rows


def per_patient_table(rows: list[tuple[str, str, dict[str, Any]]]) -> pd.DataFrame | None:
    """One row per held-out patient: its slices, tumor slices and every model's volume Dice on it."""
    table: dict[str, dict[str, Any]] = {}
    for name, _, scores in rows:
        for entry in scores.get("per_patient") or []:
            row = table.setdefault(entry["patient_id"], {"patient": entry["patient_id"],
                                                         "slices": entry.get("n_slices"),
                                                         "tumor slices": entry.get("n_tumor_slices")})
            row[name.split(" `")[0].split(" (")[0]] = entry.get("dice")
    return pd.DataFrame(list(table.values())).sort_values("patient") if table else None


def headline(run: Path) -> list[str]:
    """The report's first lines: who was held out and by which rule, what was checked for leakage, the
    starting model beside every trained deliverable on the same test patients, each test patient's own
    figures, and how every model began."""
    from classseg.reporting.tables import to_markdown

    lines = ["## Headline (held-out test patients)", "", *_split_lines(run), *leakage_lines(run)]
    rows = headline_rows(run)
    if rows:
        frame = pd.DataFrame([{"model": name, "call": how, **{label: m.get(key) for key, label in HEADLINE_FIGURES}}
                              for name, how, m in rows])
        caption = ("The same test patients, starting model beside the trained ones" if rows[0][0].startswith("starting")
                   else "The same test patients (every model trained from scratch or ImageNet: no starting model)")
        lines += ["", to_markdown(frame, caption, "Scores as each stage wrote them (classseg.evaluation); masks "
                                  "scored at the slice's original size; Dice per patient = mean volume Dice.")]
        per_patient = per_patient_table(rows)
        if per_patient is not None:
            lines += [to_markdown(per_patient, "Every test patient's own volume Dice",
                                  "With few test patients, a mean hides which patient moved; each row is one "
                                  "patient's volume Dice per model (blank = not scored).")]
    lines += _weights_lines(run)
    lines.append("- Figures from a 1-patient val and a few test patients are noisy: the benchmark figures are in "
                 "docs/multitask.md and saved_models/README.md.")
    return lines if rows or (run / "split" / "splits.csv").is_file() else []


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
                   "phase2_segmentation": segmentation_caption(run),
                   "joint_vs_two_stage": "Joint multi-task model vs two-stage Class-Seg pipeline"}[stem]
        per_repeat = phase1_per_repeat(run) if stem == "phase1_classification" else None
        if per_repeat is not None:  # the runs behind every mean ± std shown (issue 18)
            atomic_to_csv(per_repeat, out / "phase1_per_repeat.csv", index=False)
            written["tables"].append(out / "phase1_per_repeat.csv")
            notes += " Mean ± std over repeats; the per-repeat rows are in phase1_per_repeat.csv."
        written["tables"] += list(write_table(df, out / stem, caption, notes).values())
    for make in (_confusion_figures, _roc_figure, _curves_figure, _overlay_grid, _per_patient_box):
        written["figures"] += make(run, fig_dir)
    index = ["# classseg report", "", f"Run folder: `{run}`", "", *headline(run), ""]
    index += [f"- [{p.name}]({p.relative_to(out)})" for p in written["tables"] if p.suffix == ".md"]
    index += [f"- ![{p.stem}]({p.relative_to(out)})" for p in written["figures"] if p.suffix == ".png"]
    atomic_write_text(out / "README.md", "\n".join(index) + "\n")
    return written

"""The segmentation recipe table (issue 10): every run folder's val and test figures and its command.

Reads ``metrics.json`` + ``training.json`` of each ``train-segmenter`` run folder given and writes one
Markdown table (``--out``, default docs/recipes.md) with, per row, the command that reproduces it
(built from the run's configuration: every setting that differs from its recipe becomes an option),
the machine, training minutes and epochs, and the figures after the post-processing chosen on val,
all scored at the slices' original size (256 px); slice accuracy / sensitivity = "mask non-empty" as
the verdict. Rows are ordered by the selection rule, the val score = mean of val Dice (tumor slices)
and val volume Dice per patient:

    python benchmarks/recipes_table.py /work/gpu_runs/runs/* /work/cpu_runs/fast_* --out docs/recipes.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from classseg.reporting.tables import to_markdown
from classseg.training.segmenter import RECIPES, recipe_config
from classseg.utils.atomic import atomic_write_text

FLAGS = {"img_size": "--img-size", "minutes": "--minutes", "batch_size": "--batch-size", "optimizer": "--optimizer",
         "lr": "--lr", "weight_decay": "--weight-decay", "adam_epsilon": "--adam-epsilon", "schedule": "--schedule",
         "loss": "--loss", "normalization": "--normalization", "width": "--width", "patience": "--patience"}


def command_of(config: dict) -> str:
    """``classseg train-segmenter`` options that reproduce ``config`` (differences from its recipe)."""
    base = recipe_config(config.get("recipe", "fast"))
    parts = ["classseg train-segmenter DATA --splits data/splits/kaggle_3m_seed0.csv"]
    if config.get("recipe", "fast") != "fast":
        parts.append(f"--recipe {config['recipe']}")
    for field, flag in FLAGS.items():
        if field in config and config[field] != getattr(base, field):
            parts.append(f"{flag} {config[field]:g}" if isinstance(config[field], float) else f"{flag} {config[field]}")
    if config.get("minutes") is None and config.get("epochs") != base.epochs:
        parts.append(f"--epochs {config['epochs']}")
    if config.get("augment_profile") != base.augment_profile or config.get("augment") != base.augment:
        parts.append(f"--augment {config['augment_profile'] if config.get('augment') else 'none'}")
    if config.get("tumor_only") != base.tumor_only:
        parts.append("--tumor-only" if config.get("tumor_only") else "--include-negatives")
    return " ".join(parts)


def short_machine(label: str) -> str:
    """Short machine label: the GPU when there was one, else the CPU and its cores."""
    if "GPU" in label:
        return "GPU " + label.split("GPU", 1)[1].strip(" []'").replace("80GB HBM3", "").strip()
    return label


def row(run: Path, notes: dict[str, str]) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    t = json.loads((run / "training.json").read_text())
    val, test = m["val"], m  # classseg.evaluation.Scores: top level = test, post-processed as chosen on val
    return {
        "run": run.name,
        "note": notes.get(run.name, ""),
        "command": f"`{command_of(t['config'])}`",
        "machine": short_machine(t["machine"]),
        "train min": m["train_minutes"],
        "epochs": m["epochs_run"],
        "val Dice (tumor slices)": val["dice_tumor_slices"],
        "val volume Dice / patient": val["dice_per_patient"],
        "val slice acc": val["accuracy"],
        "test Dice (tumor slices)": test["dice_tumor_slices"],
        "test volume Dice / patient": test["dice_per_patient"],
        "test slice acc": test["accuracy"],
        "test sens": test["sensitivity"],
        "val score": (val["dice_tumor_slices"] + val["dice_per_patient"]) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/recipes.md"))
    parser.add_argument("--title", default="Segmentation recipes on the 75-patient split")
    parser.add_argument("--notes", type=Path, default=None, help="Markdown file appended under the table")
    parser.add_argument("--mark", action="append", default=[], metavar="RUN=TEXT", help="a note for one row")
    args = parser.parse_args()
    marks = dict(item.split("=", 1) for item in args.mark)
    frame = pd.DataFrame([row(r, marks) for r in args.runs if (r / "metrics.json").is_file()])
    frame = frame.sort_values("val score", ascending=False).reset_index(drop=True)
    table = to_markdown(frame, digits=3)
    notes = args.notes.read_text() if args.notes else ""
    text = f"# {args.title}\n\n{table}\n\n{notes}\n"
    atomic_write_text(args.out, text)
    print(text)
    print(f"recipes: {sorted(RECIPES)}; wrote {args.out}")


if __name__ == "__main__":
    main()

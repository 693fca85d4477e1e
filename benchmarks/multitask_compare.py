"""Joint vs two-stage vs single-task at equal footing (issue 11): trains every arm of
:mod:`classseg.training.multitask` for every seed (resumable: finished run folders are kept), forms the
two-stage rows, then writes the table with ``classseg compare --aggregate`` (mean ± std over seeds,
Markdown + LaTeX + CSV). The figures of docs/multitask.md come from::

    python benchmarks/multitask_compare.py --data ../shared/data/kaggle_3m \\
        --splits data/splits/kaggle_3m_seed0.csv --out runs/multitask --docs docs/multitask
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classseg.training.multitask import ARMS, MultitaskConfig, caption, comparison_runs, train_arms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = MultitaskConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/kaggle_3m", help="kaggle_3m folder")
    p.add_argument("--splits", default="data/splits/kaggle_3m_seed0.csv", help="patient-level split CSV")
    p.add_argument("--out", default="runs/multitask", help="folder of the run folders")
    p.add_argument("--docs", default="docs/multitask", help="stem of the table files (.md/.tex/.csv)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--arms", nargs="+", default=list(d.arms), choices=list(ARMS))
    p.add_argument("--img-size", type=int, default=d.img_size)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate")
    p.add_argument("--table-only", action="store_true", help="only (re)write the two-stage rows and the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from classseg.cli import main as cli
    from classseg.utils.environment import environment_info, machine_label

    print(f"machine: {machine_label(environment_info())}; settings: {json.dumps(vars(args))}", flush=True)
    config = MultitaskConfig(arms=tuple(args.arms), seeds=tuple(args.seeds), img_size=args.img_size,
                             width=args.width, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if not args.table_only:
        train_arms(config, args.data, args.splits or None, args.out, log=lambda s: print(s, flush=True))
    runs = [str(r) for r in comparison_runs(config, args.out)]
    code = cli(["compare", *runs, "--out", str(Path(args.docs).parent), "--name", Path(args.docs).name,
                "--aggregate", "--overwrite", "--caption", caption(config, args.splits), "--columns", COLUMNS])
    import pandas as pd

    from classseg.reporting.plotting import plot_mean_std

    table = pd.read_csv(f"{args.docs}.csv")
    table["class_auc"] = table["gate_auc"].fillna(table["auc"])  # a classifier's own AUC, or the gating output's
    table["class_auc_std"] = table["gate_auc_std"].fillna(table["auc_std"])
    figure = plot_mean_std(table, ["accuracy", "class_auc", "dice_per_patient"], f"{args.docs}.png",
                                title=caption(config, args.splits).replace("; ", "\n"))
    print(f"wrote {figure}")
    return code


#: Columns of the md / tex table (the csv keeps every figure).
COLUMNS = ("model,weights,img_size,epochs,split_file,seed,n_runs,accuracy,sensitivity,specificity,auc,gate_auc,"
           "dice_tumor_slices,hd95_detected_px,missed_tumor_slices,dice_per_patient,train_minutes,params")


if __name__ == "__main__":
    sys.exit(main())

"""``classseg compare RUN_DIR... --out DIR``: one comparison table (md / tex / csv) across run folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    parser = subparsers.add_parser(
        "compare", help="compare run folders (classifiers, segmenter, joint, pipeline) in one table",
        description="Read metrics.json / results.csv and manifest.json of each run folder and write "
                    "DIR/comparison.md, comparison.tex (booktabs) and comparison.csv, one row per model.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by classseg commands")
    parser.add_argument("--out", required=True, help="folder for comparison.md/.tex/.csv")
    parser.add_argument("--caption", default="Model comparison on the test split", help="table caption")
    parser.add_argument("--digits", type=int, default=3, help="decimals shown in md/tex (csv keeps full values)")
    parser.add_argument("--name", default="comparison", help="file stem inside --out (default: comparison)")
    parser.add_argument("--columns", default=None,
                        help="comma-separated columns to keep in md/tex (their _std columns follow); csv keeps all")
    parser.add_argument("--aggregate", action="store_true",
                        help="one row per configuration (same model, kind, weights, size, epochs, split): "
                             "mean ± std over its runs (seeds), with n_runs; the per-run rows behind every "
                             "mean are kept in DIR/<name>_per_seed.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier table of the same --name in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the table, write the three files and print the Markdown."""
    from classseg.reporting.tables import (
        aggregate_seeds,
        compare_runs,
        comparison_notes,
        write_per_run_rows,
        write_table,
    )
    from classseg.utils.guards import OutputError, check_output_folder

    name = getattr(args, "name", "comparison")
    try:  # never replace an earlier table silently
        check_output_folder(args.out, [f"{name}{ext}" for ext in (".md", ".tex", ".csv", "_per_seed.csv")],
                            overwrite=getattr(args, "overwrite", False))
    except OutputError as err:
        raise SystemExit(f"classseg compare: {err}") from None
    try:
        df = compare_runs(args.run_dirs)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"classseg compare: {err}") from None
    notes = comparison_notes(df)
    per_seed = None
    if getattr(args, "aggregate", False):
        per_seed = write_per_run_rows(df, Path(args.out) / f"{name}_per_seed.csv")  # what every mean is made of
        df = aggregate_seeds(df)
        notes += (" Each row: mean ± sample standard deviation over its runs (n_runs; seeds in 'seed'); the "
                  f"per-run rows are in {per_seed.name}.")
    df = df.dropna(axis=1, how="all")  # drop the columns that no run reported
    shown = None
    if getattr(args, "columns", None):
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in df.columns]
        if unknown:
            raise SystemExit(f"classseg compare: no column(s) {', '.join(unknown)}; the table has "
                             f"{', '.join(c for c in df.columns if not c.endswith('_std'))}")
        shown = [c for c in df.columns if c in wanted or (c.endswith("_std") and c[:-4] in wanted)]
    paths = write_table(df, Path(args.out) / name, args.caption, notes,
                        label="tab:comparison", digits=args.digits, columns=shown)
    if per_seed is not None:
        paths["per_seed"] = per_seed
    print(paths["md"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

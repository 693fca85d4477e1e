"""``classseg report RUN_DIR --out DIR``: tables and figures of a run-all folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    p = subparsers.add_parser("report", help="tables (md/tex/csv) and figures (png/pdf) of a run-all folder")
    p.add_argument("run_dir", help="a folder written by `classseg run-all`")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and list the files."""
    from pathlib import Path

    from classseg.reporting.report import write_report
    from classseg.utils.guards import OutputError, check_output_folder

    out = args.out or str(Path(args.run_dir) / "report")
    try:  # never replace an earlier report silently (run-all rewrites its own report on purpose)
        check_output_folder(out, ["README.md"], overwrite=getattr(args, "overwrite", False))
    except OutputError as err:
        raise SystemExit(f"classseg report: {err}") from None
    try:
        written = write_report(args.run_dir, out)
    except FileNotFoundError as err:
        raise SystemExit(f"classseg report: {err}") from None
    for kind, paths in written.items():
        print(f"{kind}: {len(paths)}")
        for path in paths:
            print(f"  {path}")
    return 0

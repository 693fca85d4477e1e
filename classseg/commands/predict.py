"""``classseg predict``: the gated Class-Seg pipeline on a folder (alias of ``python -m classseg.pipeline``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``predict`` with the same options as ``python -m classseg.pipeline``."""
    from classseg.pipeline import add_arguments

    parser = subparsers.add_parser(
        "predict", help="classify every slice of a folder and outline tumors (gated Class-Seg pipeline)",
        description="Gate each MRI slice with the classifier and segment only the slices it calls tumor; "
                    "writes predictions.csv, masks/, overlays/ and, with ground truth, metrics.json/.md. --out is "
                    "locked while written (a second run into it is refused) and a finished output is replaced "
                    "only with --overwrite.")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Same as ``python -m classseg.pipeline``."""
    from classseg.pipeline import run as run_pipeline

    return run_pipeline(args)

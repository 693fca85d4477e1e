"""``classseg ensemble MODEL MODEL ... [DATA_DIR] --splits FILE --out DIR``: average trained segmenters.

The members' mean probability is scored like a trained segmenter (delivery chosen on val; val, the val
stress sets and test at the slices' original size) and written as one shippable segmenter whose card
names the other members (:mod:`classseg.training.ensemble`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from classseg.commands.options import command_parser, default_of

#: ``classseg --help`` line and description.
TEXT = ("average trained segmenters into one ensemble (mean probability), its delivery chosen on val",
        "Copy two or more trained segmenters (each with its card) into --out as segmenter.keras plus members, choose "
        "the ensemble's test-time flips, post-processing and 3D filter on the val patients of --splits, score val, "
        "the val stress sets and test, and write the card that makes the pipeline run the same ensemble.")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ensemble``."""
    from classseg.data import DEFAULT_DATA_DIR
    from classseg.training.ensemble import EnsembleConfig

    p = command_parser(subparsers, "ensemble", run, TEXT)
    p.add_argument("members", nargs="+", metavar="MODEL", help="segmenter .keras files with their cards (2 or more)")
    p.add_argument("--data", default=str(DEFAULT_DATA_DIR), metavar="DATA_DIR",
                   help="kaggle_3m-style folder (default: %(default)s)")
    p.add_argument("--splits", required=True, metavar="FILE", help="patient_id,split CSV: val chooses, test is scored")
    p.add_argument("--batch-size", type=int, default=default_of(EnsembleConfig, "batch_size"))
    p.add_argument("--no-select-postprocess", action="store_true",
                   help="keep the default post-processing instead of choosing it on the validation split")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the ensemble (segmenter.keras + members)")
    p.add_argument("--overwrite", action="store_true", help="replace an ensemble already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Check arguments, build and score the ensemble, print its headline figures."""
    from classseg.training.ensemble import EnsembleConfig, make_ensemble
    from classseg.utils.guards import OutputError, check_run_out

    try:
        check_run_out(args.out, args.data, ("metrics.json",), overwrite=args.overwrite)
        for member in args.members:
            if not Path(member).is_file():
                raise ValueError(f"{member}: model file does not exist")
        config = EnsembleConfig(members=list(args.members), batch_size=args.batch_size,
                                select_postprocess=not args.no_select_postprocess)
        metrics = make_ensemble(config, args.data, args.splits, args.out, progress=not args.quiet)
    except (OutputError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"classseg ensemble: {err}") from None
    keys = ("dice_tumor_slices", "dice_per_patient", "accuracy", "sensitivity")
    print(json.dumps({"val": {k: metrics["val"].get(k) for k in keys},
                      "val_flair_only": metrics["val_robustness"]["flair_only"]["dice_per_patient"],
                      "tta": metrics["tta"], "out": str(args.out)}))
    return 0

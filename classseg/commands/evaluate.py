"""``classseg evaluate PRED_DIR --truth DIR [--json] [--out DIR [--overwrite]]``: score predictions against
ground truth.

``--out`` follows the rules of every command that writes (issue 20): checked before the scoring starts;
an existing ``evaluation.json`` or ``per_slice.csv`` there is replaced only with ``--overwrite``; the
folder is locked while it is written (:class:`classseg.utils.atomic.OutputLock`), so a second evaluation into
it is refused in one line; it may not lie inside the ground-truth folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classseg.commands.options import command_parser


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate``."""
    parser = command_parser(subparsers, "evaluate", run, TEXT)
    parser.add_argument("pred_dir", type=Path, metavar="PRED_DIR", nargs="+",
                        help="folder with predictions.csv and masks/; several folders (the parts of a "
                             "--num-parts run) are scored as one")
    parser.add_argument("--truth", required=True, type=Path,
                        help="folder of the images and their _mask files, or of NIfTI <case>_mask/_seg volumes")
    parser.add_argument("--json", action="store_true", help="print one JSON object (no per-slice list)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write OUT/evaluation.json (with per-slice figures) and OUT/per_slice.csv")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace evaluation.json / per_slice.csv already in --out")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score even where predictions.csv and --truth cover different slices (rows for images "
                             "absent from --truth left out, truth slices without a row not scored); said in the "
                             "output's warnings")
    parser.add_argument("--hd95", choices=("pooled", "max"), default="pooled",
                        help="HD95: both directed distances pooled (medpy, default) or the larger one-way "
                             "95th percentile (MONAI)")


#: ``classseg --help`` line and description.
TEXT = ("score a predictions folder (predictions.csv + masks/) against ground truth",
        "Per slice, per patient and overall figures of a predictions folder (as written by `python -m "
        "classseg.pipeline`) against the <stem>_mask.<ext> files of a ground-truth folder. Masks are compared at "
        "their original size; HD95 in pixels.")


#: What ``--out`` receives.
OUT_FILES = ("evaluation.json", "per_slice.csv")


def _check_out(args: argparse.Namespace) -> None:
    from classseg.utils.guards import OutputError, check_can_create, check_not_inside

    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} is a file; give a folder")
        if Path(args.truth).is_dir():
            check_not_inside(out, args.truth, "the ground-truth folder")
        present = [name for name in OUT_FILES if (out / name).exists()]
        if present and not getattr(args, "overwrite", False):
            raise OutputError(f"{out} already holds {', '.join(present)}; pass --overwrite to replace "
                              f"{'it' if len(present) == 1 else 'them'}, or choose another --out")
        check_can_create(out)
    except OutputError as err:
        raise SystemExit(f"classseg evaluate: {err}") from None


def _write(args: argparse.Namespace, result: dict) -> None:
    import pandas as pd

    from classseg.utils.atomic import OutputLock, OutputLockError, atomic_to_csv
    from classseg.utils.jsonio import write_json

    try:
        with OutputLock(args.out, "classseg evaluate"):
            present = [name for name in OUT_FILES if (Path(args.out) / name).exists()]
            if present and not getattr(args, "overwrite", False):  # written meanwhile by another run
                raise SystemExit(f"classseg evaluate: {args.out} already holds {', '.join(present)}; pass "
                                 "--overwrite to replace it, or choose another --out")
            write_json(Path(args.out) / "evaluation.json", result)
            atomic_to_csv(pd.DataFrame(result["per_slice"]), Path(args.out) / "per_slice.csv", index=False)
    except OutputLockError as err:
        raise SystemExit(f"classseg evaluate: {err}") from None


def run(args: argparse.Namespace) -> int:
    """Score, print, optionally write."""
    from classseg.evaluation.folder import evaluate_folder
    from classseg.reporting.tables import DETECTION_FIELDS, GATE_FIELDS, SEGMENTATION_FIELDS, scores_frame, to_markdown

    if args.out is not None:
        _check_out(args)  # before the scoring: a refused --out costs nothing
    try:
        result = evaluate_folder(args.pred_dir, args.truth, hd95_pooling=args.hd95,
                                 allow_partial=getattr(args, "allow_partial", False))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"classseg evaluate: {err}") from None
    for warning in result["warnings"]:
        print(f"classseg evaluate: warning: {warning}", file=sys.stderr)
    if args.out is not None:
        _write(args, result)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_slice"}, default=str))
        return 0
    fields = DETECTION_FIELDS + (GATE_FIELDS if result.get("gate_tp") is not None else ()) + SEGMENTATION_FIELDS
    folders = " + ".join(map(str, args.pred_dir)) if isinstance(args.pred_dir, list) else args.pred_dir
    print(to_markdown(scores_frame({"value": result}, fields), caption=f"{folders} against {args.truth}",
                      digits=4))
    print(f"{result['n_slices']} slices with ground truth scored ({result['n_tumor_slices']} tumor), "
          f"{result['slices_without_ground_truth']} without ground truth, {result['slices_not_ok']} not ok.")
    print(f"detection counts the {result['detection_source']}.")
    return 0

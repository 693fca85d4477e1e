"""``classseg evaluate PRED_DIR --truth DIR [--json] [--out DIR]``: score predictions against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="score a predictions folder (predictions.csv + masks/) against ground truth",
        description="Per slice, per patient and overall figures of a predictions folder (as written by "
                    "`python -m classseg.pipeline`) against the <stem>_mask.<ext> files of a ground-truth folder. "
                    "Masks are compared at their original size; HD95 in pixels.")
    parser.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="folder with predictions.csv and masks/")
    parser.add_argument("--truth", required=True, type=Path, help="folder of the images and their _mask files")
    parser.add_argument("--json", action="store_true", help="print one JSON object (no per-slice list)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write OUT/evaluation.json (with per-slice figures) and OUT/per_slice.csv")
    parser.add_argument("--hd95", choices=("pooled", "max"), default="pooled",
                        help="HD95: both directed distances pooled (medpy, default) or the larger one-way "
                             "95th percentile (MONAI)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score, print, optionally write."""
    import pandas as pd

    from classseg.evaluation.folder import evaluate_folder
    from classseg.jsonio import write_json
    from classseg.tables import DETECTION_FIELDS, GATE_FIELDS, SEGMENTATION_FIELDS, scores_frame, to_markdown

    try:
        result = evaluate_folder(args.pred_dir, args.truth, hd95_pooling=args.hd95)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"classseg evaluate: {err}") from None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "evaluation.json", result)
        pd.DataFrame(result["per_slice"]).to_csv(args.out / "per_slice.csv", index=False)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_slice"}, default=str))
        return 0
    fields = DETECTION_FIELDS + (GATE_FIELDS if result.get("gate_tp") is not None else ()) + SEGMENTATION_FIELDS
    print(to_markdown(scores_frame({"value": result}, fields), caption=f"{args.pred_dir} against {args.truth}",
                      digits=4))
    print(f"{result['n_slices']} slices with ground truth scored ({result['n_tumor_slices']} tumor), "
          f"{result['slices_without_ground_truth']} without ground truth, {result['slices_not_ok']} not ok.")
    return 0

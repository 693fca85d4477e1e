"""``classseg data summary|split|link``: look at a dataset, make a patient-level split file, link a split's patients."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from classseg.data import DEFAULT_DATA_DIR, discover, save_splits, split_patients, summarize
from classseg.data.splits import split_with_test


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data summary`` and ``data split``."""
    parser = subparsers.add_parser("data", help="summarise a dataset or write a patient-level split")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    summary = sub.add_parser("summary", help="patients, slices, tumor slices, per institution, skipped files")
    summary.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), help="kaggle_3m-style folder")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=run_summary)

    split = sub.add_parser("split", help="write a patient-level train/val/test split CSV")
    split.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR))
    split.add_argument("--out", required=True, help="CSV file to write (patient_id,split)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    split.add_argument("--test-from", metavar="DIR",
                       help="the patients of this folder (e.g. the bundled sample) form the test split; the "
                            "rest are split into train/val in the ratio of the TRAIN and VAL fractions")
    split.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    split.set_defaults(func=run_split)

    link = sub.add_parser("link", help="a folder of links to the patients a split file lists (the others left out)")
    link.add_argument("data_dir", help="kaggle_3m-style folder (one folder per patient)")
    link.add_argument("--splits", required=True, help="patient_id,split CSV")
    link.add_argument("--out", required=True, help="folder to create (symbolic links to patient folders)")
    link.add_argument("--overwrite", action="store_true", help="replace the links of an existing --out")
    link.add_argument("--allow-missing", action="store_true",
                      help="link what there is when the split file lists patients the data lacks (refused otherwise)")
    link.add_argument("--split", default="train,val,test",
                      help="comma-separated splits to link (default: train,val,test)")
    link.set_defaults(func=run_link)


def _discover_or_exit(data_dir: str):
    try:
        return discover(data_dir, require_masks=True)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise SystemExit(f"classseg data: {err}") from None


def run_summary(args: argparse.Namespace) -> int:
    """Print the dataset summary as a table or JSON."""
    df = _discover_or_exit(args.data_dir)
    info = summarize(df)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"data: {info['data_dir']}")
    print(f"{'':14}{'patients':>10}{'slices':>10}{'tumor slices':>14}")
    for inst, row in info["per_institution"].items():
        print(f"{inst or '(none)':14}{row['patients']:>10}{row['slices']:>10}{row['tumor_slices']:>14}")
    print(f"{'total':14}{info['patients']:>10}{info['slices']:>10}{info['tumor_slices']:>14}"
          f"   ({info['tumor_share']:.1%} tumor)")
    print_skipped(info["skipped"])
    return 0


def print_skipped(skipped: list[dict[str, str]], file=None) -> None:
    """``skipped files: N`` and one ``path: reason`` line each (as ``data summary`` prints them)."""
    print(f"skipped files: {len(skipped)}", file=file)
    for item in skipped:
        print(f"  {item['path']}: {item['reason']}", file=file)


def run_split(args: argparse.Namespace) -> int:
    """Write the split CSV and print each split's size, tumor share and the skipped files."""
    from classseg.utils.guards import OutputError, check_output_file

    try:
        check_output_file(args.out, overwrite=getattr(args, "overwrite", False))
    except OutputError as err:
        raise SystemExit(f"classseg data split: {err}") from None
    df = _discover_or_exit(args.data_dir)
    try:
        if args.test_from:
            test_ids = set(_discover_or_exit(args.test_from)["patient_id"])
            missing = sorted(test_ids - set(df["patient_id"]))
            if missing:
                raise ValueError(f"{len(missing)} patient(s) of {args.test_from} are not in {args.data_dir}: "
                                 f"{', '.join(missing[:3])}")
            splits = split_with_test(df, test_ids, tuple(args.fractions), seed=args.seed)
        else:
            splits = split_patients(df, tuple(args.fractions), seed=args.seed)
    except ValueError as err:
        raise SystemExit(f"classseg data split: {err}") from None
    path = save_splits(splits, Path(args.out))
    merged = df.merge(splits, on="patient_id")
    merged["tumor"] = merged["tumor"].astype(bool)
    stats = merged.groupby("split").agg(patients=("patient_id", "nunique"), slices=("tumor", "size"),
                                        tumor_share=("tumor", "mean"))
    print(stats.to_string(float_format=lambda v: f"{v:.3f}"))
    print_skipped(df.attrs.get("skipped", []))
    print(f"wrote {path}")
    return 0


def run_link(args: argparse.Namespace) -> int:
    """Link the split file's patients (of the chosen splits) into ``--out``; say how many were left out."""
    from classseg.data import link_patients, load_splits

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise SystemExit(f"classseg data link: {data_dir}: not a folder")
    try:
        splits = load_splits(args.splits)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"classseg data link: {err}") from None
    wanted = [s.strip() for s in args.split.split(",") if s.strip()]
    folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    listed = set(splits.loc[splits["split"].isin(wanted), "patient_id"].astype(str))
    left_out = [f for f in folders if f not in {pid.split("/")[0] for pid in listed}]
    absent = sorted(pid for pid in listed if not (data_dir / pid).is_dir())
    if absent and not getattr(args, "allow_missing", False):
        raise SystemExit(f"classseg data link: {len(absent)} of {len(listed)} patient(s) of {', '.join(wanted)} listed "
                         f"in {args.splits} have no folder in {data_dir} (e.g. {', '.join(absent[:3])}); nothing was "
                         "linked: use the split file made for this data, or pass --allow-missing to link the others")
    try:
        out = link_patients(data_dir, splits, wanted, Path(args.out), overwrite=getattr(args, "overwrite", False))
    except (FileExistsError, OSError) as err:
        raise SystemExit(f"classseg data link: {err}") from None
    print(f"linked {len(listed) - len(absent)} patient folder(s) of {', '.join(wanted)} into {out}; "
          f"{len(left_out)} patient folder(s) of {data_dir} not listed there were left out"
          + (f"; {len(absent)} listed patient(s) have no folder: {', '.join(absent[:3])}" if absent else ""))
    return 0

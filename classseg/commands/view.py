"""``classseg view PRED_DIR [--truth DIR] [--out DIR] [--overwrite]``: an HTML page to browse a predictions folder
(:mod:`classseg.reporting.viewer`); opens from disk, no server."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``view``."""
    p = subparsers.add_parser(
        "view", help="HTML viewer of a predictions folder: patients worst first, slices with overlays",
        description="Write PRED_DIR/viewer/index.html: a sortable table of patients (with ground truth: Dice per "
                    "patient, lowest first) and per patient its slices with overlays, call, gate probability and "
                    "Dice. Self-contained; open it in a browser from disk.")
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="folder written by `classseg predict`")
    p.add_argument("--truth", type=Path, default=None,
                   help="ground-truth folder (default: the test folder in PRED_DIR/summary.json when it had ground "
                        "truth); figures as `classseg evaluate`")
    p.add_argument("--no-truth", action="store_true", help="show no Dice even where ground truth exists")
    p.add_argument("--out", type=Path, default=None, help="folder of the page (default PRED_DIR/viewer)")
    p.add_argument("--overwrite", action="store_true", help="replace an index.html already there")
    p.set_defaults(func=run)


def default_truth(pred_dir: Path) -> Path | None:
    """The test folder a predictions folder was made from, when it had ground truth and still exists."""
    from classseg.utils.jsonio import read_json

    path = pred_dir / "summary.json"
    try:
        data = read_json(path).get("data", {}) if path.is_file() else {}
    except (ValueError, OSError):
        return None
    folder = data.get("test_dir")
    return Path(folder) if data.get("with_ground_truth") and folder and Path(folder).is_dir() else None


def run(args: argparse.Namespace) -> int:
    """Write the page and print where it is."""
    from classseg.reporting.viewer import write_viewer

    truth = None if args.no_truth else (args.truth or default_truth(args.pred_dir))
    try:
        page = write_viewer(args.pred_dir, truth, args.out, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise SystemExit(f"classseg view: {err}") from None
    print(f"viewer written: {page} (open it in a browser; ground truth: {truth or 'none'})")
    return 0

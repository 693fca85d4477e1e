"""``classseg run-all``: every stage on one split file, resumable, then the report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from classseg.commands.options import default_of
from classseg.data import DEFAULT_DATA_DIR


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run-all``."""
    from classseg.workflows.runall import PROFILES, RunAllProfile

    p = subparsers.add_parser("run-all", help="split -> phase 1 -> phase 2 -> phase 3 -> joint -> report")
    p.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), help="kaggle_3m-style folder")
    p.add_argument("--profile", choices=tuple(PROFILES), default=default_of(RunAllProfile, "name"),
                   help="quick: fine-tunes the shipped models on the data for a few minutes (128 px, in-domain "
                        "frozen encoders in phase 1, ResUNet joint model); paper: the papers' settings (ImageNet)")
    p.add_argument("--out", default=None, help="run folder (default runs/run-all-<profile>); reused to resume")
    p.add_argument("--splits", default=None,
                   help="patient_id,split CSV to use instead of computing one (default: classseg.data."
                        "split_patients with the profile's fractions, 0.70/0.15/0.15, and --seed). Any split is "
                        "refused, before any work, when one of its val/test patients was a train/val patient of "
                        "the weights the run starts from (shipped or --init; their model card names that split)")
    p.add_argument("--allow-missing", action="store_true",
                   help="go on when --splits lists patients the data lacks (refused otherwise; recorded in "
                        "split/split_rule.json)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--weights", default=None,
                   help="override the profile's phase-1 weights: imagenet | none | shipped | PATH")
    p.add_argument("--init", default=None,
                   help="override where phase 2 and the ResUNet joint model start: none (from scratch) | shipped | "
                        "PATH to a ResUNet segmenter .keras")
    p.add_argument("--backbones", default=None, help="override the profile's backbones (comma separated)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse the options into a profile and run every stage."""
    from classseg.workflows.runall import get_profile, run_all

    weights = args.weights
    overrides = {
        "seed": args.seed,
        "repeats": args.repeats,
        "backbones": tuple(b.strip() for b in args.backbones.split(",")) if args.backbones else None,
    }
    if weights is not None:
        overrides["weights"] = weights  # "none" stays a string: get_profile ignores None (= not given)
    if args.init is not None:
        overrides["init"] = args.init
    profile = get_profile(args.profile, **overrides)
    out = args.out or f"runs/run-all-{args.profile}"
    strategy = None
    if args.strategy == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    start = time.perf_counter()
    try:
        run_all(args.data_dir, out, profile, splits_path=args.splits, strategy=strategy)
    except KeyboardInterrupt:
        print(f"classseg run-all: {interrupted_message(Path(out))}", file=sys.stderr)
        return 130
    except (FileNotFoundError, NotADirectoryError, ValueError, RuntimeError) as err:
        raise SystemExit(f"classseg run-all: {err}") from None
    except OSError as err:  # an output folder that cannot be written, a full disk, ...
        raise SystemExit(f"classseg run-all: cannot write {err.filename or out}: {err.strerror or err}") from None
    print(f"run-all ({profile.name}) finished in {time.perf_counter() - start:.0f} s; report in {out}/report")
    return 0


def interrupted_message(out: Path) -> str:
    """One line after Ctrl-C: the stages finished (kept), the one interrupted, how to resume."""
    from classseg.workflows.runall import STAGES

    done = [name for name in STAGES if (out / name / "stage.json").is_file()]
    todo = [name for name in STAGES if name not in done]
    finished = f"finished and kept: {', '.join(done)}" if done else "no stage had finished"
    where = f"interrupted during {todo[0]}; " if todo else ""
    return (f"{where}{finished} (in {out}); run the same command again to resume from "
            f"{todo[0] if todo else 'the end'}")

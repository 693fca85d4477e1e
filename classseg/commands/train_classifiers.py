"""``classseg train-classifiers``: phase 1 of seed 002, frozen ImageNet backbones + dense head."""

from __future__ import annotations

import argparse
from pathlib import Path

from classseg.data import DEFAULT_DATA_DIR
from classseg.models.names import BACKBONE_NAMES, PAPER_BACKBONES  # no TensorFlow import

#: Files written when a run has finished; --out holding one is refused without --overwrite.
FINISHED_FILES = ("results.json", "results.csv")
__all__ = ["BACKBONE_NAMES", "FINISHED_FILES", "PAPER_BACKBONES", "add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-classifiers`` (options left unset take ClassifierConfig's defaults)."""
    p = subparsers.add_parser(
        "train-classifiers",
        help="benchmark frozen ImageNet backbones with the paper's dense head; pick the gate on validation",
        description="Train one frozen-backbone classifier per backbone (head on cached features unless "
                    "--fine-tune/--augment), evaluate on the test split, choose the gate on validation. "
                    "Defaults follow seed paper 002 where it states them (ClassifierConfig).")
    p.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), metavar="DATA_DIR",
                   help=f"kaggle_3m-style folder (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--backbones", default=",".join(PAPER_BACKBONES),
                   help=f"comma-separated, from: {', '.join(BACKBONE_NAMES)} (default: the paper's five)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet | none | PATH to a headless .h5/.weights.h5 file (default: imagenet)")
    p.add_argument("--img-size", type=int, help="square input side in px (default 256)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 20)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--patience", type=int, help="early stopping on val loss (default 5)")
    p.add_argument("--repeats", type=int, help="runs with seeds SEED..SEED+N-1, mean and std (default 1; paper: 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default=None, metavar="FILE", help="patient split CSV (default: computed)")
    p.add_argument("--out", default="runs/classifiers", metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--head", choices=("paper", "gap", "gapmax"), default="paper")
    p.add_argument("--fine-tune", type=int, default=0, metavar="N",
                   help="unfreeze the top N backbone layers (BatchNorm stays frozen); end-to-end training")
    p.add_argument("--train-backbone", action="store_true",
                   help="train the whole backbone end to end, BatchNorm in training mode (with --weights none: "
                        "from scratch; not the paper's frozen method)")
    p.add_argument("--augment", action="store_true", help="augment training slices (end-to-end training)")
    p.add_argument("--class-weights", action="store_true", help="balanced class weights in the loss")
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default",
                   help="tf.distribute strategy (mirrored: all local GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _weights(value: str) -> str | None:
    if value.lower() == "none":
        return None
    if value.lower() == "imagenet":
        return "imagenet"
    if not Path(value).is_file():
        raise SystemExit(f"classseg train-classifiers: weights file not found: {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Parse the options into a ClassifierConfig, train, print the results table and the gate."""
    import tensorflow as tf

    from classseg.guards import OutputError, check_run_out
    from classseg.jsonio import read_json
    from classseg.models.backbones import get_spec
    from classseg.training.classifiers import ClassifierConfig, train_classifiers

    prog = "classseg train-classifiers"
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"{prog}: --backbones is empty")
    try:
        names = [get_spec(n).name for n in names]
    except KeyError as err:
        raise SystemExit(f"{prog}: {err.args[0]}") from None
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"{prog}: data folder not found: {args.data_dir}")
    if args.splits and not Path(args.splits).is_file():
        raise SystemExit(f"{prog}: split file not found: {args.splits}")
    try:
        check_run_out(args.out, args.data_dir, FINISHED_FILES, overwrite=getattr(args, "overwrite", False))
    except OutputError as err:
        raise SystemExit(f"{prog}: {err}") from None
    for opt in ("img_size", "epochs", "batch_size", "repeats"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise SystemExit(f"{prog}: --{opt.replace('_', '-')} must be >= 1")
    optional = {k: getattr(args, k) for k in ("img_size", "epochs", "batch_size", "lr", "patience", "repeats")
                if getattr(args, k) is not None}
    config = ClassifierConfig(
        backbones=tuple(names), weights=_weights(args.weights), head=args.head, seed=args.seed,
        class_weights=args.class_weights, fine_tune_layers=args.fine_tune, augment=args.augment,
        train_backbone=args.train_backbone,
        progress=not args.quiet, **optional)
    strategy = tf.distribute.MirroredStrategy() if args.strategy == "mirrored" else None
    try:
        results = train_classifiers(config, args.data_dir, args.splits, args.out, strategy)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        # offline ImageNet weights, bad split file, unreadable data: one line, no traceback
        raise SystemExit(f"{prog}: {err}") from None
    cols = [c for c in ("backbone", "trainable_params", "train_time_s", "accuracy", "f1_micro", "f1_macro",
                        "sensitivity", "specificity", "auc", "val_auc") if c in results]
    print(results[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    gate = read_json(Path(args.out) / "results.json")["gate"]
    print(f"gate (chosen on validation): {gate['backbone']}  threshold {gate['threshold']:.4f} "
          f"for sensitivity >= {gate['target_sensitivity']}")
    print(f"wrote {args.out}/results.csv, results.md, results.json")
    return 0

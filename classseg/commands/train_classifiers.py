"""``classseg train-classifiers``: phase 1 of seed 002, frozen ImageNet backbones + dense head."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from classseg.commands.options import (
    ConfigDefault,
    add_data_dir,
    add_run_options,
    check_run_inputs,
    command_parser,
    given_options,
)
from classseg.models.names import BACKBONE_NAMES, PAPER_BACKBONES  # no TensorFlow import

#: Files written when a run has finished; --out holding one is refused without --overwrite.
FINISHED_FILES = ("results.json", "results.csv")
__all__ = ["BACKBONE_NAMES", "FINISHED_FILES", "PAPER_BACKBONES", "add_parser", "run"]


#: ``classseg --help`` line and description.
TEXT = ("benchmark frozen ImageNet backbones with the paper's dense head; pick the gate on validation",
        "Train one frozen-backbone classifier per backbone (head on cached features unless --fine-tune/--augment), "
        "evaluate on the test split, choose the gate on validation. Defaults follow seed paper 002 where it states "
        "them (ClassifierConfig).")
CONFIG = "classseg.training.classifiers:ClassifierConfig"  # imports TensorFlow: read only for --help
#: Options that are ClassifierConfig fields of the same name, with their help.
FIELD_OPTIONS = {"img_size": "square input side in px", "epochs": "maximum epochs", "batch_size": "slices per step",
                 "lr": "Adam learning rate", "patience": "early stopping on val loss",
                 "repeats": "runs with seeds SEED..SEED+N-1, mean and std (paper: 3)"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-classifiers`` (defaults: ClassifierConfig's)."""
    p = command_parser(subparsers, "train-classifiers", run, TEXT)
    add_data_dir(p)
    p.add_argument("--backbones", default=",".join(PAPER_BACKBONES),
                   help=f"comma-separated, from: {', '.join(BACKBONE_NAMES)} (default: the paper's five)")
    p.add_argument("--weights", default=ConfigDefault(CONFIG, "weights"),
                   help="imagenet | none | PATH to a headless .h5/.weights.h5 file (default: %(default)s)")
    for name, text in FIELD_OPTIONS.items():
        kind = float if name == "lr" else int
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=ConfigDefault(CONFIG, name),
                       help=f"{text} (default %(default)s)")
    p.add_argument("--head", choices=("paper", "gap", "gapmax"), default=ConfigDefault(CONFIG, "head"))
    p.add_argument("--fine-tune", type=int, default=ConfigDefault(CONFIG, "fine_tune_layers"), metavar="N",
                   help="unfreeze the top N backbone layers (BatchNorm stays frozen); end-to-end training")
    p.add_argument("--train-backbone", action="store_true",
                   help="train the whole backbone end to end, BatchNorm in training mode (with --weights none: "
                        "from scratch; not the paper's frozen method)")
    p.add_argument("--augment", action="store_true", help="augment training slices (end-to-end training)")
    p.add_argument("--class-weights", action="store_true", help="balanced class weights in the loss")
    add_run_options(p, out="runs/classifiers", seed=ConfigDefault(CONFIG, "seed"),
                    strategy="tf.distribute strategy (mirrored: all local GPUs)")


def _weights(value: str) -> str | None:
    from classseg.models.names import parse_weights

    if parse_weights(value) is None:
        return None
    if value.lower() == "imagenet":
        return "imagenet"
    if not Path(value).is_file():
        raise SystemExit(f"classseg train-classifiers: weights file not found: {value}")
    return value


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~classseg.training.classifiers.ClassifierConfig` of the options (those not given take its
    defaults); SystemExit with one line on an unknown backbone or a value below 1."""
    from classseg.models.backbones import get_spec
    from classseg.training.classifiers import ClassifierConfig

    prog = "classseg train-classifiers"
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"{prog}: --backbones is empty")
    try:
        names = [get_spec(n).name for n in names]
    except KeyError as err:
        raise SystemExit(f"{prog}: {err.args[0]}") from None
    optional = given_options(args, ("img_size", "epochs", "batch_size", "lr", "patience", "repeats", "head", "seed"))
    for opt in ("img_size", "epochs", "batch_size", "repeats"):
        if optional.get(opt, 1) < 1:
            raise SystemExit(f"{prog}: --{opt.replace('_', '-')} must be >= 1")
    weights = given_options(args, ("weights",))
    if weights:
        weights["weights"] = _weights(weights["weights"])
    if "fine_tune" in given_options(args, ("fine_tune",)):
        optional["fine_tune_layers"] = args.fine_tune
    return ClassifierConfig(backbones=tuple(names), class_weights=args.class_weights, augment=args.augment,
                            train_backbone=args.train_backbone, progress=not args.quiet, **optional, **weights)


def run(args: argparse.Namespace) -> int:
    """Parse the options into a ClassifierConfig, train, print the results table and the gate."""
    import tensorflow as tf

    from classseg.training.classifiers import train_classifiers
    from classseg.utils.jsonio import read_json

    prog = "classseg train-classifiers"
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"{prog}: data folder not found: {args.data_dir}")
    check_run_inputs(prog, args, FINISHED_FILES)
    config = config_from_args(args)
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

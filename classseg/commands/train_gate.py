"""``classseg train-gate``: train the in-domain gate CNN, choose its threshold and rule on validation."""

from __future__ import annotations

import argparse
from typing import Any

from classseg.commands.options import add_data_dir, add_run_options, check_run_inputs, command_parser, default_of
from classseg.data.standardize import NORMALIZATIONS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-gate`` (defaults: GateConfig's)."""
    from classseg.training.gate import GateConfig

    d = GateConfig()
    p = command_parser(subparsers, "train-gate", run, TEXT)
    add_data_dir(p)
    p.add_argument("--segmenter", metavar="MODEL", help="segmenter .keras (with its card) = the baseline")
    p.add_argument("--img-size", type=int, default=d.img_size)
    p.add_argument("--epochs", type=int, help=f"epochs (default {d.epochs}); with --minutes: the cap")
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock training budget")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--normalization", choices=NORMALIZATIONS, default=d.normalization,
                   help="input normalisation (use the segmenter's)")
    p.add_argument("--augment", choices=("recipe", "robust", "seeds", "none"),
                   default=d.augment_profile if d.augment else "none",
                   help="augmentation profile (robust = recipe + per-channel gain/gamma and more missing-sequence "
                        "substitution)")
    p.add_argument("--init", metavar="MODEL", default=d.init,
                   help="start from this gate .keras's weights instead of from scratch")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--select-only", action="store_true",
                   help="keep the gate already in --out; only choose threshold and rule again (e.g. for another "
                        "--segmenter)")
    add_run_options(p, out="runs/gate", seed=d.seed)


#: ``classseg --help`` line and description.
TEXT = ("train the gate CNN from scratch; threshold and rule chosen on val",
        "Train a small CNN (the ResUNet encoder + global pooling) to call tumor / no tumor, with the segmenter's "
        "recipe. With --segmenter, the gate competes on the validation split with the segmenter's own 'mask "
        "non-empty' verdict and is used only if it beats it.")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~classseg.training.gate.GateConfig` of the options (defaults: its own; ``--minutes``
    without ``--epochs``: the budget decides)."""
    from classseg.training.gate import GateConfig

    if args.img_size < 16 or args.img_size % 16:
        raise SystemExit(f"classseg train-gate: --img-size must be a positive multiple of 16, got {args.img_size}")
    epochs = args.epochs if args.epochs is not None else (10_000 if args.minutes else default_of(GateConfig, "epochs"))
    augment = args.augment != "none"
    return GateConfig(img_size=args.img_size, epochs=epochs, minutes=args.minutes, batch_size=args.batch_size,
                      lr=args.lr, width=args.width, workers=args.workers, seed=args.seed,
                      normalization=args.normalization, augment=augment,
                      augment_profile=args.augment if augment else default_of(GateConfig, "augment_profile"),
                      init=args.init)


def run(args: argparse.Namespace) -> int:
    """Train and print the validation choice and test figures."""
    from pathlib import Path

    from classseg.training.gate import select_gate, train_gate

    # never replace a finished gate silently; --select-only rewrites its choice on purpose
    check_run_inputs("classseg train-gate", args, None if args.select_only else ("metrics.json",))
    config = config_from_args(args)
    try:
        if args.select_only:
            gate = Path(args.out) / "gate.keras"
            if not gate.is_file():
                raise FileNotFoundError(f"{gate}: no trained gate to select a threshold for")
            metrics = select_gate(gate, args.data_dir, args.splits, args.segmenter, progress=not args.quiet)
        else:
            metrics = train_gate(config, args.data_dir, args.splits, args.out, args.segmenter,
                                 progress=not args.quiet)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise SystemExit(f"classseg train-gate: {err}") from None
    c = metrics["choice"]
    print(f"val choice: rule {c['rule']}, threshold {c['threshold']}, accuracy {c['accuracy']:.4f}, "
          f"sensitivity {c['sensitivity']:.4f}")
    for name in ("val", "test"):
        for key, rep in metrics[name].items():
            print(f"  {name} {key:14} acc {rep['accuracy']:.4f}  sens {rep['sensitivity'] or 0:.4f}  "
                  f"spec {rep['specificity'] or 0:.4f}  n {rep['n']}")
    print(f"wrote {args.out}")
    return 0

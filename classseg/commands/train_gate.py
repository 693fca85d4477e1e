"""``classseg train-gate``: train the in-domain gate CNN, choose its threshold and rule on validation."""

from __future__ import annotations

import argparse

from classseg.data import DEFAULT_DATA_DIR
from classseg.data.standardize import NORMALIZATIONS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-gate``."""
    p = subparsers.add_parser(
        "train-gate", help="train the gate CNN from scratch; threshold and rule chosen on val",
        description="Train a small CNN (the ResUNet encoder + global pooling) to call tumor / no tumor, with "
                    "the segmenter's recipe. With --segmenter, the gate competes on the validation split with "
                    "the segmenter's own 'mask non-empty' verdict and is used only if it beats it.")
    p.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), metavar="DATA_DIR")
    p.add_argument("--segmenter", metavar="MODEL", help="segmenter .keras (with its card) = the baseline")
    p.add_argument("--splits", metavar="FILE")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--epochs", type=int, help="epochs (default 30); with --minutes: the cap")
    p.add_argument("--minutes", type=float, help="wall-clock training budget")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--normalization", choices=NORMALIZATIONS, default="patient_percentile",
                   help="input normalisation (use the segmenter's)")
    p.add_argument("--augment", choices=("recipe", "robust", "seeds", "none"), default="robust",
                   help="augmentation profile (robust = recipe + per-channel gain/gamma and more missing-sequence "
                        "substitution)")
    p.add_argument("--init", metavar="MODEL", help="start from this gate .keras's weights instead of from scratch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gate", metavar="DIR")
    p.add_argument("--select-only", action="store_true",
                   help="keep the gate already in --out; only choose threshold and rule again (e.g. for another "
                        "--segmenter)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and print the validation choice and test figures."""
    from pathlib import Path

    from classseg.guards import OutputError, check_run_out
    from classseg.training.gate import GateConfig, select_gate, train_gate

    try:  # never replace a finished gate silently; --select-only rewrites its choice on purpose
        check_run_out(args.out, args.data_dir, None if args.select_only else ("metrics.json",),
                      overwrite=args.overwrite)
    except OutputError as err:
        raise SystemExit(f"classseg train-gate: {err}") from None

    if args.img_size < 16 or args.img_size % 16:
        raise SystemExit(f"classseg train-gate: --img-size must be a positive multiple of 16, got {args.img_size}")
    epochs = args.epochs if args.epochs is not None else (10_000 if args.minutes else 30)
    config = GateConfig(img_size=args.img_size, epochs=epochs, minutes=args.minutes, batch_size=args.batch_size,
                        lr=args.lr, width=args.width, workers=args.workers, seed=args.seed,
                        normalization=args.normalization, augment=args.augment != "none",
                        augment_profile=args.augment if args.augment != "none" else "recipe", init=args.init)
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

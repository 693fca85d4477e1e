"""``classseg train-segmenter``: train seed 002's ResUNet from scratch and evaluate it (phase 2)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from classseg.data import DEFAULT_DATA_DIR

LOSS_CHOICES = ("focal_tversky", "tversky", "dice", "bce_dice")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-segmenter``."""
    from classseg.training.segmenter import SegmenterConfig

    d = SegmenterConfig()
    p = subparsers.add_parser(
        "train-segmenter",
        help="train the ResUNet segmenter (seed 002, phase 2) and evaluate it on val/test",
        description="Train seed 002's ResUNet from scratch on tumor slices (Focal Tversky loss) and write "
                    "segmenter.keras, history.csv, metrics.json/md, figures, splits.csv and manifest.json.",
    )
    p.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA_DIR), metavar="DATA_DIR",
                   help="kaggle_3m-style folder (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=d.img_size, help="square input size, multiple of 16")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="keep >= 8 for BatchNorm")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s, reference code)")
    p.add_argument("--adam-epsilon", type=float, default=d.adam_epsilon,
                   help="Adam epsilon (default %(default)s, reference code; Keras default 1e-7)")
    p.add_argument("--loss", choices=LOSS_CHOICES, default=d.loss)
    p.add_argument("--splits", metavar="FILE", help="patient_id,split CSV (default: computed from --seed)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="runs/segmenter", metavar="DIR", help="run folder (default: %(default)s)")
    p.add_argument("--include-negatives", action="store_true",
                   help="train on tumor-free slices too (seed 002 uses tumor slices only)")
    p.add_argument("--no-augment", action="store_true", help="switch off training augmentation")
    p.add_argument("--width", type=float, default=d.width, help="filter multiplier (1.0 = seed 002's 1.21 M params)")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience on val Dice")
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default",
                   help="tf.distribute strategy (mirrored = all local GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check arguments, train, and print the headline figures."""
    from classseg.training.segmenter import SegmenterConfig, train_segmenter

    if args.img_size < 16 or args.img_size % 16:
        raise SystemExit(f"classseg train-segmenter: --img-size must be a positive multiple of 16, got {args.img_size}")
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("classseg train-segmenter: --epochs and --batch-size must be >= 1")
    if args.width <= 0:
        raise SystemExit(f"classseg train-segmenter: --width must be positive, got {args.width}")
    config = replace(SegmenterConfig(), img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, adam_epsilon=args.adam_epsilon, loss=args.loss, seed=args.seed,
                     tumor_only=not args.include_negatives, augment=not args.no_augment, width=args.width,
                     patience=args.patience)
    strategy = None
    if args.strategy == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    try:
        metrics = train_segmenter(config, args.data_dir, args.splits, args.out, strategy=strategy,
                                  progress=not args.quiet)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise SystemExit(f"classseg train-segmenter: {err}") from None

    from classseg.tables import SEGMENTATION_FIELDS, format_value, scores_line

    print(f"test ({metrics['n_tumor_slices']} tumor slices of {metrics['n_slices']}; "
          f"{metrics['img_size']} px, {metrics['epochs_run']} epochs, seed {metrics['seed']}, weights "
          f"{metrics['weights']}; masks scored at the original slice size):")
    print("  post-processed: " + scores_line(metrics, SEGMENTATION_FIELDS))
    print("  threshold only: " + scores_line(metrics["threshold_only"], SEGMENTATION_FIELDS))
    print(f"  val soft Tversky {format_value(metrics['val']['tversky_soft'], 4) or 'n/a'} (seed 002 reports 0.89)")
    print(f"wrote {args.out}")
    return 0

"""``classseg train-segmenter``: train the ResUNet segmenter from scratch and evaluate it (phase 2).

``--recipe fast`` (default) is the recipe of issue 10 (rich augmentation incl. missing-sequence
substitution, BCE + Dice, AdamW with a cosine schedule, all slices, 128 px, ``--minutes`` budget;
``--normalization patient_zscore`` for per-patient z-scores); ``--recipe paper`` is seed 002's
(raw pixels, Focal Tversky, Adam lr 0.05, tumor slices only, 256 px). Any option given overrides the
recipe's value. Interrupted runs resume at the next epoch when the same command is run again.
"""

from __future__ import annotations

import argparse

from classseg.commands.options import add_data_dir, add_run_options, command_parser, default_of
from classseg.data.standardize import NORMALIZATIONS

LOSS_CHOICES = ("focal_tversky", "tversky", "dice", "bce_dice")


#: ``classseg --help`` line and description.
TEXT = ("train the ResUNet segmenter (phase 2) and evaluate it on val/test",
        "Train the ResUNet from scratch and write segmenter.keras with its model card (segmenter.card.json: input "
        "size, normalisation, post-processing chosen on val), history.csv, metrics.json/md, figures, splits.csv and "
        "manifest.json. Options left out take the recipe's value.")


def recipe_values(name: str) -> str:
    """``fast 128, paper 256``: field ``name`` of every recipe (:data:`RECIPES` over SegmenterConfig)."""
    from classseg.training.segmenter import RECIPES, SegmenterConfig

    return ", ".join(f"{recipe} {RECIPES[recipe].get(name, default_of(SegmenterConfig, name))}"
                     for recipe in sorted(RECIPES))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-segmenter`` (options left out: the recipe's values, SegmenterConfig + RECIPES)."""
    from classseg.training.segmenter import RECIPES, SegmenterConfig

    p = command_parser(subparsers, "train-segmenter", run, TEXT)
    add_data_dir(p)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=default_of(SegmenterConfig, "recipe"),
                   help="fast = the CPU recipe (default); paper = seed 002's settings")
    p.add_argument("--img-size", type=int, help=f"square input size, multiple of 16 ({recipe_values('img_size')})")
    p.add_argument("--epochs", type=int, help=f"epochs ({recipe_values('epochs')}); with --minutes: the cap")
    p.add_argument("--minutes", type=float, help="wall-clock training budget instead of a fixed epoch count")
    p.add_argument("--batch-size", type=int, help=f"keep >= 8 for BatchNorm ({recipe_values('batch_size')})")
    p.add_argument("--optimizer", choices=("adamw", "adam"))
    p.add_argument("--lr", type=float, help=f"peak learning rate ({recipe_values('lr')})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay ({recipe_values('weight_decay')})")
    p.add_argument("--adam-epsilon", type=float,
                   help=f"Adam epsilon ({recipe_values('adam_epsilon')}; paper: the reference code's)")
    p.add_argument("--schedule", choices=("cosine", "onecycle", "plateau", "constant"))
    p.add_argument("--loss", choices=LOSS_CHOICES)
    p.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="raw = 0..255 / 255 inside the model; patient_percentile = each patient's channels scaled "
                        "so their brain 99th percentile hits a fixed target; patient_zscore = per-patient foreground "
                        "z-score (both beside the model, recorded in the model card)")
    p.add_argument("--augment", choices=("recipe", "robust", "seeds", "none"),
                   help="recipe = flips/rot90/affine/elastic/intensity/missing-sequence; robust = recipe + "
                        "per-channel gain and gamma; seeds = the seeds' moderate set (paper); none")
    slices = p.add_mutually_exclusive_group()
    slices.add_argument("--tumor-only", action="store_true", default=None,
                        help="train on tumor slices only (paper)")
    slices.add_argument("--include-negatives", action="store_true", default=None,
                        help="train on every slice (fast)")
    p.add_argument("--width", type=float, help="filter multiplier (1.0 = seed 002's 1.21 M params)")
    p.add_argument("--patience", type=int, help="early-stopping patience on val Dice (0 = off)")
    p.add_argument("--workers", type=int,
                   help=f"augmentation threads (default {default_of(SegmenterConfig, 'workers')})")
    p.add_argument("--no-select-postprocess", action="store_true",
                   help="keep the default post-processing instead of choosing it on the validation split")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this .keras segmenter's weights (same architecture), e.g. saved_models/"
                        "segmenter.keras, instead of from scratch")
    p.add_argument("--missing-sequence-p", type=float, metavar="P",
                   help="probability of the FLAIR-for-missing-sequence substitution (overrides the profile's)")
    p.add_argument("--context", type=int, metavar="K",
                   help="slice context (2.5D): feed each slice with its K neighbours of the same patient on each side "
                        f"as extra channels (default {default_of(SegmenterConfig, 'context')} = one slice)")
    p.add_argument("--sequences", choices=["all", "flair"],
                   help="all = the three sequences (default); flair = FLAIR in every channel, in training and "
                        "inference (a model for patients missing pre- and post-contrast; card input_sequences)")
    p.add_argument("--snapshots", action="store_true",
                   help="keep every epoch's model in OUT/snapshots/ with its training minutes (for "
                        "benchmarks/quality_per_minute.py)")
    p.add_argument("--evaluate-only", action="store_true",
                   help="do not train: re-score the model already in --out on DATA_DIR (val/test at the slices' "
                        "original size, post-processing chosen again on val)")
    add_run_options(p, out="runs/segmenter", seed=default_of(SegmenterConfig, "seed"),
                    strategy="tf.distribute strategy (TensorFlow backend; mirrored = all local GPUs)")


def config_from_args(args: argparse.Namespace):
    """The :class:`SegmenterConfig` of ``--recipe`` with every option the user gave applied."""
    from classseg.training.segmenter import recipe_config

    names = {"img_size": "img_size", "epochs": "epochs", "minutes": "minutes", "batch_size": "batch_size",
             "optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay", "adam_epsilon": "adam_epsilon",
             "schedule": "schedule", "loss": "loss", "normalization": "normalization", "width": "width",
             "patience": "patience", "workers": "workers", "context": "context",
             "sequences": "sequences"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    if args.minutes is not None and args.epochs is None:
        overrides["epochs"] = 10_000  # the budget decides
    if args.augment is not None:
        overrides["augment"] = args.augment != "none"
        if args.augment != "none":
            overrides["augment_profile"] = args.augment
    if args.tumor_only:
        overrides["tumor_only"] = True
    if args.include_negatives:
        overrides["tumor_only"] = False
    if args.no_select_postprocess:
        overrides["select_postprocess"] = False
    if args.init:
        overrides["init"] = args.init
    if getattr(args, "snapshots", False):
        overrides["snapshots"] = True
    if getattr(args, "missing_sequence_p", None) is not None:
        if not 0.0 <= args.missing_sequence_p <= 1.0:
            raise ValueError(f"--missing-sequence-p must be in [0, 1], got {args.missing_sequence_p}")
        overrides["missing_sequence_p"] = args.missing_sequence_p
    return recipe_config(args.recipe, seed=args.seed, **overrides)


def run(args: argparse.Namespace) -> int:
    """Check arguments, train, and print the headline figures."""
    # never replace a finished run silently (metrics.json is written last); --evaluate-only re-scores on purpose
    from pathlib import Path

    from classseg.training.segmenter import evaluate_segmenter_run, train_segmenter
    from classseg.utils.guards import OutputError, check_run_out

    try:
        check_run_out(args.out, args.data_dir, None if args.evaluate_only else ("metrics.json",),
                      overwrite=args.overwrite)
    except OutputError as err:
        raise SystemExit(f"classseg train-segmenter: {err}") from None

    try:
        config = config_from_args(args)
    except ValueError as err:
        raise SystemExit(f"classseg train-segmenter: {err}") from None
    if config.img_size < 16 or config.img_size % 16:
        raise SystemExit("classseg train-segmenter: --img-size must be a positive multiple of 16, "
                         f"got {config.img_size}")
    if config.epochs < 1 or config.batch_size < 1:
        raise SystemExit("classseg train-segmenter: --epochs and --batch-size must be >= 1")
    if config.minutes is not None and config.minutes <= 0:
        raise SystemExit(f"classseg train-segmenter: --minutes must be positive, got {config.minutes}")
    if config.width <= 0:
        raise SystemExit(f"classseg train-segmenter: --width must be positive, got {config.width}")
    strategy = None
    if args.strategy == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    try:
        if args.evaluate_only:
            from classseg.utils.guards import evaluation_split

            if not (Path(args.out) / "training.json").is_file():
                raise FileNotFoundError(f"{args.out}: no finished training (training.json) to evaluate")
            # the run's own splits.csv, never a new split; a data folder without its val/test patients is refused
            splits = evaluation_split(args.out, args.data_dir, args.splits)
            metrics = evaluate_segmenter_run(args.out, args.data_dir, splits, progress=not args.quiet,
                                             select_postprocess=not args.no_select_postprocess)
        else:
            metrics = train_segmenter(config, args.data_dir, args.splits, args.out, strategy=strategy,
                                      progress=not args.quiet)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise SystemExit(f"classseg train-segmenter: {err}") from None

    from classseg.reporting.tables import SEGMENTATION_FIELDS, format_value, scores_line

    how = "fixed" if metrics["postprocess_rule"] == "fixed" else "chosen on val"
    print(f"test ({metrics['n_tumor_slices']} tumor slices of {metrics['n_slices']}; recipe {metrics['recipe']}, "
          f"{metrics['img_size']} px, {metrics['epochs_run']} epochs in {metrics['train_minutes']:.1f} min, seed "
          f"{metrics['seed']}, weights {metrics['weights']}; masks scored at the original slice size):")
    print(f"  post-processed ({how}): " + scores_line(metrics, SEGMENTATION_FIELDS))
    print("  threshold only: " + scores_line(metrics["threshold_only"], SEGMENTATION_FIELDS))
    print("  val: " + scores_line(metrics["val"], SEGMENTATION_FIELDS))
    print(f"  val soft Tversky {format_value(metrics['val']['tversky_soft'], 4) or 'n/a'} (seed 002 reports 0.89)")
    print(f"wrote {args.out}")
    return 0

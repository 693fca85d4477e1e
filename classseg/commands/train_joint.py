"""``classseg train-joint``: train a joint model (seed 000: ResNet-50 U-Net; or the ResUNet with a class head)
and evaluate it on val/test."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from classseg.commands.options import add_data_dir, add_run_options, check_run_inputs, command_parser
from classseg.data.standardize import NORMALIZATIONS

SCHEDULE_CHOICES = ("fixed", "freeze", "dynamic")
CLASS_LOSS_CHOICES = ("ce", "focal")
#: Files written when a run has finished; --out holding one is refused without --overwrite.
FINISHED_FILES = ("metrics.json", "joint.keras")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train-joint`` (defaults: JointConfig's)."""
    from classseg.training.joint import JointConfig

    d = JointConfig()
    p = command_parser(subparsers, "train-joint", run, TEXT)
    add_data_dir(p)
    p.add_argument("--architecture", choices=("resnet50_unet", "resunet"), default=d.architecture,
                   help="resnet50_unet: seed 000 (ImageNet ResNet-50 encoder, U-Net decoder); resunet: seed 002's "
                        "ResUNet with a class head, the two-stage arm's architecture (default: %(default)s)")
    p.add_argument("--width", type=float, default=d.width, help="resunet filter multiplier (1.0 = 1.2 M parameters)")
    p.add_argument("--init", default=d.init, metavar="MODEL",
                   help="resunet: copy the layers of this .keras model with the same names (e.g. a ResUNet "
                        "segmenter: saved_models/segmenter.keras); the class head starts new. Refused when a "
                        "val/test patient of this run was a train/val patient of MODEL's split (its card)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default=d.normalization,
                   help="the input the model is fed: raw pixels, patient_zscore or patient_percentile "
                        "(classseg.data.standardize); default: what the --init model's card says, else raw. "
                        "Written to joint.card.json, which the pipeline follows")
    p.add_argument("--select-gate", action="store_true",
                   help="choose the class threshold and gate rule on val (the two-stage gate's selection) "
                        "instead of P(tumor) >= 0.5")
    p.add_argument("--weights", default=d.weights, metavar="imagenet|none|PATH",
                   help="encoder initialisation: ImageNet (needs network or the cached file), random, or a local "
                        "no-top ResNet-50 weights file (default: %(default)s)")
    p.add_argument("--img-size", type=int, default=d.img_size,
                   help="square input size, multiple of 32 (resnet50_unet) or 16 (resunet)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--lambda-cls", type=float, default=d.lambda_cls, help="class loss weight (seed 000: 1.0)")
    p.add_argument("--lambda-seg", type=float, default=d.lambda_seg, help="Dice loss weight (seed 000: 1.5)")
    p.add_argument("--schedule", choices=SCHEDULE_CHOICES, default=d.schedule,
                   help="loss-weight schedule (seed 001, eq. 13-15; default: %(default)s)")
    p.add_argument("--class-loss", choices=CLASS_LOSS_CHOICES, default=d.class_loss,
                   help="cross-entropy (seed 000) or focal loss alpha 0.25 gamma 2 (seed 001)")
    p.add_argument("--multiscale", action="store_true", help="multi-scale class head (seed 004)")
    p.add_argument("--augment", action="store_true",
                   help="training augmentation (the segmenter recipe's: flips, rotations, elastic, intensity, FLAIR "
                        "for a missing sequence)")
    add_run_options(p, out="runs/joint", seed=d.seed, strategy="tf.distribute strategy (mirrored = all local GPUs)")


#: ``classseg --help`` line and description.
TEXT = ("train the joint classification + segmentation model (seed 000) and evaluate it",
        "Train seed 000's multi-task model (shared ResNet-50 encoder, U-Net decoder, softmax head; loss lambda_cls * "
        "CE + lambda_seg * Dice, AdamW + cosine decay) on every slice and write joint.keras, history.csv, "
        "metrics.json/md, training_curves.png, splits.csv, manifest.json.")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~classseg.training.joint.JointConfig` of the options (defaults: its own); SystemExit with
    one line on a value it refuses."""
    from classseg.training.joint import JointConfig

    prog = "classseg train-joint"
    step = 32 if args.architecture == "resnet50_unet" else 16
    if args.img_size < step or args.img_size % step:
        raise SystemExit(f"{prog}: --img-size must be a positive multiple of {step} for {args.architecture}, "
                         f"got {args.img_size}")
    if args.init and not Path(args.init).is_file():
        raise SystemExit(f"{prog}: --init model not found: {args.init}")
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit(f"{prog}: --epochs and --batch-size must be >= 1")
    from classseg.models.names import parse_weights

    weights = parse_weights(args.weights)
    if weights is not None and weights.lower() != "imagenet" and not Path(weights).is_file():
        raise SystemExit(f"{prog}: --weights must be imagenet, none or an existing weights file; "
                         f"{weights} not found")
    normalization = getattr(args, "normalization", None)
    if normalization not in (None, "raw") and args.architecture == "resnet50_unet":
        raise SystemExit(f"{prog}: --normalization {normalization} needs --architecture resunet (resnet50_unet "
                         "carries ImageNet preprocessing and takes raw pixels)")
    return replace(JointConfig(), architecture=args.architecture, width=args.width, init=args.init,
                   normalization=normalization, select_gate=args.select_gate, weights=weights, img_size=args.img_size,
                   epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                   lambda_cls=args.lambda_cls, lambda_seg=args.lambda_seg, schedule=args.schedule,
                   class_loss=args.class_loss, multiscale_head=args.multiscale, augment=args.augment, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Check arguments, train, and print the headline figures."""
    from classseg.training.joint import train_joint

    prog = "classseg train-joint"
    config = config_from_args(args)
    check_run_inputs(prog, args, FINISHED_FILES)
    strategy = None
    if args.strategy == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    try:
        m = train_joint(config, args.data_dir, args.splits, args.out, strategy=strategy, progress=not args.quiet)
    except (FileNotFoundError, NotADirectoryError, ValueError, RuntimeError, OSError) as err:
        raise SystemExit(f"{prog}: {err}") from None

    from classseg.reporting.tables import DETECTION_FIELDS, GATE_FIELDS, SEGMENTATION_FIELDS, scores_line

    print(f"test ({m['n_slices']} slices, {m['n_tumor_slices']} with tumor; {m['img_size']} px, {m['epochs']} epochs, "
          f"best epoch {m['best_epoch']}, schedule {m['schedule']}, seed {m['seed']}, weights {m['weights']}, "
          f"input {m.get('normalization', 'raw')}; masks scored at the original slice size):")
    for record in m.get("leakage_check", []):
        print(f"  leakage check of {record['model']}: " + (
            f"none of this run's {record['new_val_test_patients']} val/test patients was among its "
            f"{record['start_train_val_patients']} train/val patients" if record["checked"]
            else f"NOT checked, {record['why']}"))
    print("  delivered masks: " + scores_line(m, DETECTION_FIELDS[:4]))
    if "class" in m.get("tasks", ["class"]):
        print("  class output:    " + scores_line(m, GATE_FIELDS))
    if "mask" in m.get("tasks", ["mask"]):
        print("  masks:           " + scores_line(m, SEGMENTATION_FIELDS))
    print(f"  {m['params']:,} parameters, {m['ms_per_slice']:.1f} ms/slice (batch {m['infer_batch']}, {m['device']})")
    print(f"wrote {args.out}")
    return 0

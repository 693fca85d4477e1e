"""Quality per CPU-minute: val Dice of every epoch snapshot of one training run against its training minutes.

    classseg train-segmenter DATA --splits data/splits/kaggle_3m_seed0.csv ... --snapshots --out RUN
    python benchmarks/quality_per_minute.py RUN --data DATA --splits data/splits/kaggle_3m_seed0.csv \
        --out docs/quality_per_minute

``RUN/snapshots/snapshots.csv`` (written by ``--snapshots``) lists each epoch's model and the training
minutes spent when it was saved (wall clock, and CPU minutes of the process where recorded). Each
snapshot is scored on the val patients only, fed as the run's
normalisation says, with one fixed delivery for every snapshot (threshold 0.5, hole filling, no flips,
no 3D filter) so the curve shows what training adds, not what selection adds. Figures are scored at
the slices' original size (:func:`classseg.evaluation.score_slices`). Prints the table and machine
info and writes ``OUT.csv`` and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402


def plot(table: pd.DataFrame, args: argparse.Namespace) -> None:
    """``OUT.png``: the val figures against ``args.x`` minutes, with the aim line."""
    from classseg.reporting.plotting import plot_quality_per_minute

    plot_quality_per_minute(table[args.x], {
        "val Dice per patient": table["val_dice_per_patient"],
        "val Dice, tumor slices": table["val_dice_tumor_slices"], "val slice accuracy": table["val_accuracy"]},
        args.out.with_suffix(".png"), title=args.title, aim=args.aim,
        xlabel="training minutes (wall clock)" if args.x == "train_minutes" else "CPU minutes of the training process")


def main(argv: list[str] | None = None) -> int:
    import keras

    from classseg import data as cdata
    from classseg.data.standardize import prepare_input
    from classseg.delivery.postprocess import PostprocessConfig
    from classseg.delivery.rules import deliver_masks
    from classseg.evaluation import score_slices
    from classseg.evaluation.scores import read_truths
    from classseg.models.predict import predict
    from classseg.training.segmenter import _select
    from classseg.utils.atomic import atomic_to_csv
    from classseg.utils.environment import environment_info
    from classseg.utils.jsonio import read_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/quality_per_minute"))
    parser.add_argument("--aim", type=float, default=0.80, help="the aim line (val Dice per patient)")
    parser.add_argument("--title", default="")
    parser.add_argument("--x", choices=("train_minutes", "cpu_minutes"), default="train_minutes",
                        help="x axis: wall-clock training minutes, or CPU minutes of the training process (all "
                             "threads; fair when the machine was shared)")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUT.png from OUT.csv (no scoring)")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(pd.read_csv(args.out.with_suffix(".csv")), args)
        return 0

    config = read_json(args.run / "training.json")["config"]
    snapshots = pd.read_csv(args.run / "snapshots" / "snapshots.csv")
    frame = cdata.resolve_splits(cdata.discover(args.data), args.splits)
    val = cdata.load_arrays(_select(frame, "val", False), config["img_size"], progress=False)
    ids = val.frame["patient_id"].to_numpy()
    x = prepare_input(val.images, config["normalization"], ids)
    truths = read_truths(val.frame["mask_path"])
    shapes = [t.shape[:2] for t in truths]
    delivery = PostprocessConfig(threshold=0.5, closing=False, fill_holes=True, min_component_px=0)
    rows = []
    for snap in snapshots.itertuples():
        model = keras.models.load_model(args.run / "snapshots" / snap.path, compile=False)
        masks, _ = deliver_masks(predict(model, x, 32)["mask"], shapes, delivery)
        scores = score_slices(truths, masks, ids).to_dict(False)
        rows.append({"epoch": snap.epoch, "train_minutes": snap.train_minutes,
                     "cpu_minutes": getattr(snap, "cpu_minutes", float("nan")),
                     "val_dice_per_patient": scores["dice_per_patient"],
                     "val_dice_tumor_slices": scores["dice_tumor_slices"], "val_accuracy": scores["accuracy"]})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    atomic_to_csv(table, args.out.with_suffix(".csv"), index=False)
    plot(table, args)
    print(table.round(3).to_string(index=False))
    info = environment_info()
    print(f"machine: {info.get('cpu')} ({info.get('cpu_count')} cores); run {args.run}; init {config.get('init')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

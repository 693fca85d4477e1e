"""Quality per CPU-minute: val Dice of every epoch snapshot of one training run against its training minutes.

    classseg train-segmenter DATA --splits data/splits/kaggle_3m_seed0.csv ... --snapshots --out RUN
    python benchmarks/quality_per_minute.py RUN [RUN2 ...] --data DATA --splits data/splits/kaggle_3m_seed0.csv \
        --out docs/quality_per_minute [--x cpu_minutes] [--resume]

Several runs (e.g. with and without slice context) are scored into one table and drawn in one plot, so
they compare at equal (CPU) minutes; a run still training is read from its ``run_identity.json``, and
``--resume`` scores only the snapshots not yet in ``OUT.csv``.

``RUN/snapshots/snapshots.csv`` (written by ``--snapshots``) lists each epoch's model and the training
minutes spent when it was saved (wall clock, and CPU minutes of the process where recorded). Each
snapshot is scored on the val patients only, fed as the run's
normalisation says, with one fixed delivery for every snapshot (threshold 0.5, hole filling, no flips,
no 3D filter) so the curve shows what training adds, not what selection adds; the FLAIR-only stress set
of the same patients (:mod:`classseg.evaluation.robustness`) is scored beside it. Figures are scored at
the slices' original size (:func:`classseg.evaluation.score_slices`). Prints the table and machine
info and writes ``OUT.csv`` and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402


def plot(table: pd.DataFrame, args: argparse.Namespace) -> None:
    """``OUT.png``: each run's val Dice per patient (and on the FLAIR-only stress set) against ``args.x`` minutes,
    with the aim line."""
    from classseg.reporting.plotting import plot_quality_per_minute

    if "run" not in table:
        table = table.assign(run="run")
    runs = list(dict.fromkeys(table["run"]))
    grid = sorted(set(table[args.x].dropna()))
    values = {}
    for run in runs:  # one line per run and figure, on the union of the runs' minutes (gaps where a run has none)
        part = table[table["run"] == run].set_index(args.x)
        label = "" if len(runs) == 1 else f"{run}: "
        values[f"{label}val Dice per patient"] = [part["val_dice_per_patient"].get(m, float("nan")) for m in grid]
        if "val_flair_only_dice_per_patient" in part:
            values[f"{label}val FLAIR-only Dice per patient"] = [
                part["val_flair_only_dice_per_patient"].get(m, float("nan")) for m in grid]
        if len(runs) == 1:
            values["val Dice, tumor slices"] = [part["val_dice_tumor_slices"].get(m, float("nan")) for m in grid]
            values["val slice accuracy"] = [part["val_accuracy"].get(m, float("nan")) for m in grid]
    plot_quality_per_minute(grid, values, args.out.with_suffix(".png"), title=args.title, aim=args.aim,
                            xlabel="training minutes (wall clock)" if args.x == "train_minutes"
                            else "CPU minutes of the training process")


def run_config(run: Path) -> dict:
    """The run's training config: ``training.json`` (a finished run) or ``run_identity.json`` (still training)."""
    from classseg.utils.jsonio import read_json

    if (run / "training.json").is_file():
        return read_json(run / "training.json")["config"]
    return read_json(run / "run_identity.json")


def main(argv: list[str] | None = None) -> int:
    import keras

    from classseg import data as cdata
    from classseg.delivery.postprocess import PostprocessConfig
    from classseg.delivery.rules import deliver_masks
    from classseg.evaluation import score_slices
    from classseg.evaluation.robustness import stress_images
    from classseg.evaluation.scores import read_truths
    from classseg.models.predict import predict
    from classseg.training.segmenter import _select, model_inputs
    from classseg.utils.atomic import atomic_to_csv
    from classseg.utils.environment import environment_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="train-segmenter run folders made with --snapshots")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/quality_per_minute"))
    parser.add_argument("--aim", type=float, default=0.80, help="the aim line (val Dice per patient)")
    parser.add_argument("--title", default="")
    parser.add_argument("--x", choices=("train_minutes", "cpu_minutes"), default="train_minutes",
                        help="x axis: wall-clock training minutes, or CPU minutes of the training process (all "
                             "threads; fair when the machine was shared)")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUT.png from OUT.csv (no scoring)")
    parser.add_argument("--every", type=int, default=1, help="score every n-th snapshot (and the last)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows OUT.csv already has (same run and epoch) and score only new snapshots")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(pd.read_csv(args.out.with_suffix(".csv")), args)
        return 0

    csv = args.out.with_suffix(".csv")
    old = pd.read_csv(csv) if args.resume and csv.is_file() else pd.DataFrame()
    done = set(zip(old["run"], old["epoch"], strict=True)) if len(old) and "run" in old else set()
    rows = old.to_dict("records") if done else []
    frame = cdata.resolve_splits(cdata.discover(args.data), args.splits)
    arrays: dict[int, object] = {}
    delivery = PostprocessConfig(threshold=0.5, closing=False, fill_holes=True, min_component_px=0)
    for run in args.runs:
        config = run_config(run)
        size, context = int(config["img_size"]), int(config.get("context", 0))
        if size not in arrays:
            arrays[size] = cdata.load_arrays(_select(frame, "val", False), size, progress=False)
        val = arrays[size]
        ids = val.frame["patient_id"].to_numpy()
        truths = read_truths(val.frame["mask_path"])
        shapes = [t.shape[:2] for t in truths]
        flair = replace(val, images=stress_images(val.images, "flair_only"))
        inputs = {"plain": model_inputs(val, config["normalization"], context),
                  "flair_only": model_inputs(flair, config["normalization"], context)}
        snapshots = pd.read_csv(run / "snapshots" / "snapshots.csv")
        last = int(snapshots["epoch"].max())
        for snap in snapshots.itertuples():
            if (str(run), snap.epoch) in done or (snap.epoch % args.every and snap.epoch != last):
                continue
            model = keras.models.load_model(run / "snapshots" / snap.path, compile=False)
            scores = {}
            for name, x in inputs.items():
                masks, _ = deliver_masks(predict(model, x, 32)["mask"], shapes, delivery)
                scores[name] = score_slices(truths, masks, ids).to_dict(False)
            rows.append({"run": str(run), "epoch": snap.epoch, "train_minutes": snap.train_minutes,
                         "cpu_minutes": getattr(snap, "cpu_minutes", float("nan")), "context": context,
                         "val_dice_per_patient": scores["plain"]["dice_per_patient"],
                         "val_dice_tumor_slices": scores["plain"]["dice_tumor_slices"],
                         "val_accuracy": scores["plain"]["accuracy"],
                         "val_flair_only_dice_per_patient": scores["flair_only"]["dice_per_patient"]})
            print(rows[-1], flush=True)
            atomic_to_csv(pd.DataFrame(rows), csv, index=False)  # every scored snapshot kept, even if stopped
    table = pd.DataFrame(rows).sort_values(["run", "epoch"]).reset_index(drop=True)
    atomic_to_csv(table, csv, index=False)
    plot(table, args)
    print(table.round(3).to_string(index=False))
    info = environment_info()
    print(f"machine: {info.get('cpu')} ({info.get('cpu_count')} cores); runs {', '.join(map(str, args.runs))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

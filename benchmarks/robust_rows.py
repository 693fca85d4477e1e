"""Recipe rows with the robustness check of issue 17: plain val, val stress sets, and test, per model.

    python benchmarks/robust_rows.py --data ../shared/data/kaggle_3m --splits data/splits/kaggle_3m_seed0.csv \
        --model shipped_raw saved_models/segmenter.keras raw \
        --model shipped_pct saved_models/segmenter.keras patient_percentile \
        --model pct_ft runs/seg_pct_ft/segmenter.keras patient_percentile \
        --out runs/robust_rows --markdown docs/robust_rows.md

Each model is scored by :func:`classseg.training.segmenter.score_segmenter`, the function the trainer
calls: test-time flips, 2D post-processing and the per-patient 3D filter chosen on the 12 val patients,
then val, the val stress sets (:mod:`classseg.evaluation.robustness`: every channel x 0.35, x 2.0, and
FLAIR for pre- and post-contrast) and the 7 test patients scored at the slices' original size. The same
weights may be scored under another input normalisation (e.g. a raw-pixel model fed percentile-scaled
inputs, no retraining).

Selection rule (fixed before any row was scored): ``robust score = (val score + worst stress Dice per
patient) / 2`` with ``val score = (val Dice on tumor slices + val Dice per patient) / 2``, the rule of
docs/recipes.md; the highest robust score is shipped. Test columns are reported, never used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from classseg.utils.atomic import atomic_write_text  # noqa: E402
from classseg.utils.environment import environment_info  # noqa: E402
from classseg.utils.jsonio import write_json  # noqa: E402

COLUMNS = ["row", "normalization", "tta", "3D filter", "val Dice (tumor slices)", "val Dice / patient",
           "val slice acc", "val x0.35 Dice / patient", "val x2.0 Dice / patient", "val FLAIR-only Dice / patient",
           "val score", "robust score", "test acc", "test sens", "test Dice (tumor slices)", "test Dice / patient"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--model", nargs=3, action="append", default=[], metavar=("NAME", "PATH", "NORMALIZATION"),
                        help="score this model file fed this normalisation")
    parser.add_argument("--run", nargs=2, action="append", default=[], metavar=("NAME", "RUN_DIR"),
                        help="a train-segmenter or classseg ensemble folder: its metrics.json (scored by the same "
                             "function) as a row")
    parser.add_argument("--rows", nargs="+", type=Path, default=[],
                        help="earlier rows (JSON files written to --out) to include in the table")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/robust_rows"), help="one JSON per row")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here too")
    return parser.parse_args(argv)


def row_of(name: str, normalization: str, scored: dict) -> dict:
    """One table row (figures rounded to 3 decimals) of :func:`score_segmenter`'s result."""
    val, test, robust = scored["val"], scored["test"], scored["val_robustness"]
    val_score = (val["dice_tumor_slices"] + val["dice_per_patient"]) / 2
    worst = min(robust[k]["dice_per_patient"] for k in robust if k != "plain")
    pp3d = scored["postprocess_3d"]
    pp3d = pp3d if pp3d is None or isinstance(pp3d, dict) else vars(pp3d)
    return {"row": name, "normalization": normalization, "tta": scored["tta"],
            "3D filter": f"min {pp3d['min_fraction']:g} of largest" if pp3d else "off",
            "val Dice (tumor slices)": val["dice_tumor_slices"], "val Dice / patient": val["dice_per_patient"],
            "val slice acc": val["accuracy"], "val x0.35 Dice / patient": robust["dark_0.35"]["dice_per_patient"],
            "val x2.0 Dice / patient": robust["bright_2.0"]["dice_per_patient"],
            "val FLAIR-only Dice / patient": robust["flair_only"]["dice_per_patient"],
            "val score": val_score, "robust score": (val_score + worst) / 2,
            "test acc": test["accuracy"], "test sens": test["sensitivity"],
            "test Dice (tumor slices)": test["dice_tumor_slices"], "test Dice / patient": test["dice_per_patient"]}


def main(argv: list[str] | None = None) -> int:
    from dataclasses import asdict

    import keras

    from classseg import data as cdata
    from classseg.models.card import read_card
    from classseg.training.segmenter import SegmenterConfig, _select, score_segmenter

    args = parse_args(argv)
    if args.model:
        frame = cdata.resolve_splits(cdata.discover(args.data), args.splits)
        val = cdata.load_arrays(_select(frame, "val", False), args.img_size, progress=False)
        test = cdata.load_arrays(_select(frame, "test", False), args.img_size, progress=False)
    rows = [json.loads(p.read_text())["row"] for p in args.rows]
    for name, run in args.run:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        scored = {"val": metrics["val"], "test": metrics, "val_robustness": metrics["val_robustness"],
                  "tta": metrics.get("tta", "none"), "postprocess_3d": metrics.get("postprocess_3d")}
        rows.append(row_of(name, metrics["normalization"], scored))
        write_json(args.out / f"{name}.json", {"run": run, "row": rows[-1]})
    for name, path, normalization in args.model:
        model = keras.models.load_model(path, compile=False)
        card = read_card(path)  # slice context as the model's card says (the pipeline's reading)
        config = SegmenterConfig(img_size=args.img_size, normalization=normalization,
                                 context=card.context_slices if card else 0)
        flair = None  # the card's flair_only_model segments the FLAIR-only patients, as in the pipeline
        if card is not None and card.flair_only_model:
            from classseg.models.predict import _checked_file

            flair = keras.models.load_model(_checked_file(path, card.flair_only_model, "flair-only model"),
                                            compile=False)
        scored = score_segmenter(model, config, val, test, flair_model=flair)
        row = row_of(name, normalization, scored)
        rows.append(row)
        write_json(args.out / f"{name}.json", {
            "model": path, "normalization": normalization, "tta": scored["tta"],
            "postprocess": asdict(scored["postprocess"]),
            "postprocess_3d": asdict(scored["postprocess_3d"]) if scored["postprocess_3d"] else None,
            "val": scored["val"], "val_robustness": scored["val_robustness"], "test": scored["test"],
            "row": row, "splits": str(args.splits), "data": str(args.data), "img_size": args.img_size})
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    from classseg.reporting.tables import to_markdown

    text = to_markdown(table.round(3))
    print(text)
    print(f"machine: {environment_info().get('cpu', '?')}", file=sys.stderr)
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does ``python -m classseg.pipeline --joint`` reproduce a joint run's own test figures? (issue 19)

    python benchmarks/joint_reproduction.py runs/quick/joint runs/quick/phase3/test_patients \
        --out runs/quick_joint_pipeline

Runs :func:`classseg.pipeline.folder.predict_folder` on the joint run's model (``joint.keras`` with its
``joint.card.json``: class threshold, mask post-processing, gate rule) over the run's test patients, and
prints the run's ``metrics.json`` figures beside the pipeline's ``metrics.json`` (``gated``). Exit 1 when a
count differs or a Dice differs by more than 1e-6 (both are computed by
:func:`classseg.evaluation.score_slices` on masks at the slices' original size).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COUNTS = ("tp", "fp", "tn", "fn")
FIGURES = ("accuracy", "sensitivity", "specificity", "dice_tumor_slices", "dice_per_patient", "dice_end_to_end")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train-joint run folder (joint.keras, metrics.json)")
    parser.add_argument("test_dir", type=Path, help="the run's test patients (e.g. run-all's phase3/test_patients)")
    parser.add_argument("--out", type=Path, required=True, help="the pipeline's output folder")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    from classseg.pipeline.folder import FolderPredictionConfig, predict_folder
    from classseg.utils.environment import machine
    from classseg.utils.jsonio import read_json

    run = read_json(args.run_dir / "metrics.json")
    result = predict_folder(FolderPredictionConfig(test_dir=args.test_dir, out=args.out,
                                                   joint=args.run_dir / "joint.keras", overlays=False,
                                                   overwrite=args.overwrite))
    if result.metrics is None:
        raise SystemExit(f"{args.test_dir}: no ground truth, nothing to compare")
    piped = result.metrics["gated"]
    print(f"machine: {machine()}; run {args.run_dir}, test folder {args.test_dir}")
    print(f"| figure | {args.run_dir}/metrics.json | pipeline --joint |\n|---|---:|---:|")
    ok = True
    for key in COUNTS + FIGURES:
        a, b = run.get(key), piped.get(key)
        same = a == b if key in COUNTS else (a is None and b is None) or (
            a is not None and b is not None and abs(float(a) - float(b)) <= 1e-6)
        ok &= bool(same)
        print(f"| {key} | {a} | {b} |{'' if same else ' DIFFERS'}")
    print("reproduced" if ok else "NOT reproduced")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

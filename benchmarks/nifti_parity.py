"""The sample as NIfTI: the same figures through both input paths.

Converts every patient folder of a kaggle_3m-style tree into a NIfTI case (``<patient>_t1`` / ``_flair`` /
``_t1ce.nii.gz`` from the slices' pre-contrast, FLAIR and post-contrast channels, ``<patient>_mask.nii.gz``
from the masks; uint8, slices stacked on the superior axis in their natural order, affine axis codes P, L, S:
:func:`classseg.data.nifti.write_case`), runs the pipeline with the shipped models on the slices and on the
volumes, scores both with ``classseg evaluate`` (the slices against their masks, the volumes against the
NIfTI truth) and prints the figures side by side with the largest difference per slice mask.

    python benchmarks/nifti_parity.py --data data/sample/kaggle_3m --out runs/nifti_parity [--four-d]

Exit code 1 when a figure or a delivered mask differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FIGURES = ("accuracy", "sensitivity", "specificity", "precision", "dice_tumor_slices", "dice_per_patient",
           "hd95_detected_px", "tp", "fp", "tn", "fn")


def convert(data: Path, out: Path, four_d: bool = False) -> int:
    """Every patient folder of ``data`` as a NIfTI case under ``out``; returns the number of cases."""
    from classseg.data.io import read_image, read_mask
    from classseg.data.nifti import write_case
    from classseg.data.walk import walk_images

    found, _ = walk_images(data)
    patients: dict[str, list] = {}
    for item in found:
        patients.setdefault(item.patient, []).append(item)
    for patient, items in patients.items():
        images = np.stack([read_image(i.path) for i in items])
        masks = np.stack([read_mask(i.mask_path, images.shape[1:3]) for i in items])
        write_case(out, patient, images, masks, four_d=four_d)
    return len(patients)


def main(argv: list[str] | None = None) -> int:
    """Convert, predict both ways, evaluate both ways, compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sample/kaggle_3m"))
    parser.add_argument("--out", type=Path, default=Path("runs/nifti_parity"))
    parser.add_argument("--four-d", action="store_true", help="one 4D volume per case instead of three")
    args = parser.parse_args(argv)

    import cv2

    from classseg.evaluation.folder import evaluate_folder
    from classseg.pipeline.folder import FolderPredictionConfig, predict_folder

    volumes = args.out / "nifti"
    print(f"{convert(args.data, volumes, args.four_d)} cases written to {volumes}")
    runs = {}
    for name, folder in (("slices", args.data), ("nifti", volumes)):
        result = predict_folder(FolderPredictionConfig(test_dir=folder, out=args.out / f"pred_{name}", overlays=False,
                                                       overwrite=True))
        runs[name] = (result, evaluate_folder(result.out, folder))
    rows_s = runs["slices"][1]["per_slice"]
    rows_n = runs["nifti"][1]["per_slice"]
    pred = {name: [r for r in _rows(runs[name][0].predictions_csv)] for name in runs}
    differing = 0
    for a, b in zip(pred["slices"], pred["nifti"], strict=True):
        ma = cv2.imread(str(runs["slices"][0].out / a["mask_path"]), cv2.IMREAD_UNCHANGED)
        mb = cv2.imread(str(runs["nifti"][0].out / b["mask_path"]), cv2.IMREAD_UNCHANGED)
        differing += int(not np.array_equal(ma, mb))
    table = {k: (runs["slices"][1][k], runs["nifti"][1][k]) for k in FIGURES}
    print(f"{'figure':22s} {'slices':>10s} {'nifti':>10s}")
    for k, (a, b) in table.items():
        print(f"{k:22s} {a:10.4f} {b:10.4f}" if isinstance(a, float) else f"{k:22s} {a!s:>10s} {b!s:>10s}")
    print(f"slices scored: {len(rows_s)} / {len(rows_n)}; delivered masks that differ: {differing}")
    same = differing == 0 and all(a == b for a, b in table.values()) and len(rows_s) == len(rows_n)
    print(json.dumps({"same": same, "slices": len(rows_s), "differing_masks": differing}))
    return 0 if same else 1


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    sys.exit(main())

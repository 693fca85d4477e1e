"""Shared set-up of the fault-injection tests: a tiny test folder, the two tiny pipeline models, snapshots."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np


def make_data(root: Path, patients: tuple[str, ...] = ("P1", "P2"), slices: int = 2) -> Path:
    """``root/<patient>/<patient>_<k>.png`` 32x32 slices (the first bright: tumor) with 0/255 masks."""
    from tests.pipeline.test_pipeline import box_mask, slice_image, write_rgb

    for patient in patients:
        for k in range(1, slices + 1):
            write_rgb(root / patient / f"{patient}_{k}.png", slice_image(32, 32, 250 if k == 1 else None))
            mask = box_mask(32, 32) if k == 1 else np.zeros((32, 32), np.uint8)
            cv2.imwrite(str(root / patient / f"{patient}_{k}_mask.png"), mask * 255)
    return root


def make_models(folder: Path) -> tuple[Path, Path]:
    """(classifier.keras, segmenter.keras): the pipeline tests' tiny models, saved in ``folder``."""
    from tests.pipeline.test_pipeline import tiny_classifier, tiny_segmenter

    folder.mkdir(parents=True, exist_ok=True)
    classifier, segmenter = folder / "classifier.keras", folder / "segmenter.keras"
    if not classifier.is_file():
        tiny_classifier().save(classifier)
        tiny_segmenter().save(segmenter)
    return classifier, segmenter


def pipeline_argv(data: Path, models: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    """``python -m classseg.pipeline`` options for ``data`` into ``out`` (threshold 0.5, no overlays)."""
    return ["--test-dir", str(data), "--classifier", str(models[0]), "--segmenter", str(models[1]),
            "--threshold", "0.5", "--no-overlays", "--out", str(out), *extra]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (files) or ``link:target`` / ``dir`` of everything under ``root``: a tree
    is untouched when its snapshot is unchanged."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = os.fsdecode(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found

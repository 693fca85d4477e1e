"""Shared fixtures: tiny synthetic kaggle_3m-style trees written with OpenCV."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_patient(root: Path, patient: str, n_slices: int = 4, size: int = 32, tumor_slices=(1, 2),
                  mask_scale: int = 255, ext: str = ".tif", seed: int = 0) -> list[Path]:
    """Write ``n_slices`` RGB slices (+ masks) of one patient; tumor = a bright square."""
    rng = np.random.default_rng(seed)
    folder = root / patient
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, n_slices + 1):
        image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if i in tumor_slices:
            a, b = size // 4, size // 2
            mask[a:b, a:b] = 1
            image[a:b, a:b] = 200
        path = folder / f"{patient}_{i}{ext}"
        cv2.imwrite(str(path), image)
        cv2.imwrite(str(folder / f"{patient}_{i}_mask{ext}"), mask * mask_scale)
        paths.append(path)
    return paths


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    """Four patients of four 32x32 slices, two tumor slices each."""
    root = tmp_path / "kaggle_3m"
    for k, pid in enumerate(["TCGA_AA_0001_20000101", "TCGA_AA_0002_20000101",
                             "TCGA_BB_0003_20000101", "TCGA_BB_0004_20000101"]):
        write_patient(root, pid, seed=k)
    return root


def interrupt_on_call(monkeypatch: pytest.MonkeyPatch, module: object, name: str, n: int = 2) -> None:
    """Make ``module.name`` raise ``KeyboardInterrupt`` on its ``n``-th call (Ctrl-C half-way through a run)."""
    real, calls = getattr(module, name), []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupt)

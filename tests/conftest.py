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


# ------------------------------------------------------------------------------------------------------
# Tiny training runs shared by several test modules (session-scoped: each is trained once per test run).
# Every one is a finished run folder with its run.json (tests/training/test_run_record.py reads all four).

CLASSIFIER_PATIENTS = ["TCGA_CS_0001_20000101", "TCGA_CS_0002_20000101", "TCGA_DU_0003_20000101",
                       "TCGA_DU_0004_20000101"]


SEGMENTER_PATIENTS = [f"TCGA_EV_000{k}_20000101" for k in range(5)]


@pytest.fixture(scope="session")
def segmenter_cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, out, split file): one 1-epoch ``train-segmenter`` CLI run at 32 px (width 0.5) on a given split
    of five patients: test EV_0000, val EV_0001, train the other three. Tests that rewrite a run folder
    work on a copy of ``out``."""
    import pandas as pd

    from classseg.cli import main

    root = tmp_path_factory.mktemp("segmenter")
    data = root / "kaggle_3m"
    for k, patient in enumerate(SEGMENTER_PATIENTS):
        write_patient(data, patient, n_slices=4, size=32, tumor_slices=(2, 3), seed=k)
    split_file = root / "given_splits.csv"
    pd.DataFrame({"patient_id": SEGMENTER_PATIENTS,
                  "split": ["test", "val", "train", "train", "train"]}).to_csv(split_file, index=False)
    out = root / "run"
    rc = main(["train-segmenter", str(data), "--img-size", "32", "--epochs", "1", "--batch-size", "8",
               "--width", "0.5", "--splits", str(split_file), "--seed", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    return data, out, split_file


@pytest.fixture(scope="session")
def gate_run(segmenter_cli_run: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch gate CNN (32 px, width 0.25) on the segmenter run's data and split, its rule chosen against
    that segmenter; returns the run folder."""
    from classseg.training.gate import GateConfig, train_gate

    data, seg_out, split_file = segmenter_cli_run
    out = tmp_path_factory.mktemp("gate")
    train_gate(GateConfig(img_size=32, epochs=1, batch_size=8, width=0.25, augment=False, workers=1), data,
               split_file, out, segmenter_path=seg_out / "segmenter.keras", progress=False)
    return out


@pytest.fixture(scope="session")
def classifier_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 patients x 4 slices of 32x32 RGB TIFF; slices 3-4 have a bright tumor blob in the mask; one stray
    ``notes.txt`` (never silent, issue 13)."""
    root = tmp_path_factory.mktemp("kaggle_3m")
    rng = np.random.default_rng(0)
    for patient in CLASSIFIER_PATIENTS:
        folder = root / patient
        folder.mkdir()
        for k in range(1, 5):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            mask = np.zeros((32, 32), np.uint8)
            if k >= 3:
                cv2.circle(mask, (16, 16), 6, 255, -1)
                image[mask > 0] = 220
            cv2.imwrite(str(folder / f"{patient}_{k}.tif"), image)
            cv2.imwrite(str(folder / f"{patient}_{k}_mask.tif"), mask)
    (root / CLASSIFIER_PATIENTS[0] / "notes.txt").write_text("not a slice")
    return root


@pytest.fixture(scope="session")
def classifier_run(classifier_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``train_classifiers`` on two backbones (ResNet-50: randomly initialised MobileNetV2 features vanish;
    the ResUNet encoder: small), 1 epoch at 32 px, Ctrl-C while the second backbone trains, then resumed.

    Returns ``out``, ``results`` (of the resumed call), ``resumed_calls`` (backbones trained by the resume)
    and ``refused`` (the message of a resume with other settings)."""
    from classseg.training import classifiers
    from classseg.training.identity import RunIdentityError

    out = tmp_path_factory.mktemp("classifiers") / "run"
    config = classifiers.ClassifierConfig(backbones=("resnet50", "resunet_encoder"), weights=None, img_size=32,
                                          head="gap", epochs=1, batch_size=3, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        interrupt_on_call(mp, classifiers, "train_backbone", n=2)
        with pytest.raises(KeyboardInterrupt):
            classifiers.train_classifiers(config, classifier_data, out_dir=out)
    interrupted = {"first_done": (out / "resnet50" / "run.json").is_file(),
                   "results_json": (out / "results.json").exists()}
    from dataclasses import replace

    with pytest.raises(RunIdentityError) as info:
        classifiers.train_classifiers(replace(config, epochs=2), classifier_data, out_dir=out)
    calls: list[str] = []
    real = classifiers.train_backbone
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(classifiers, "train_backbone", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
        results = classifiers.train_classifiers(config, classifier_data, out_dir=out)
    return {"out": out, "results": results, "resumed_calls": calls, "refused": str(info.value),
            "interrupted": interrupted}


@pytest.fixture(scope="session")
def joint_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch ResUNet joint model (32 px, width 0.25) initialised from a segmenter file (no card: fed raw
    pixels), with augmentation, Ctrl-C at the end of epoch 2, then resumed.

    Returns ``data``, ``out``, ``metrics`` (of the resumed call), ``interrupted`` (what the folder held then),
    ``resumed_epochs`` (epochs the resume trained) and ``refused`` (a resume with another seed)."""
    from dataclasses import replace

    from classseg.models.resunet import build_resunet
    from classseg.training import callbacks
    from classseg.training.identity import RunIdentityError
    from classseg.training.joint import JointConfig, train_joint

    root = tmp_path_factory.mktemp("joint")
    data = root / "kaggle_3m"
    for k in range(4):
        write_patient(data, f"TCGA_AB_{k:04d}_20000101", n_slices=4, size=32, tumor_slices=(1, 2), seed=k)
    build_resunet((32, 32, 3), width=0.25).save(root / "seg.keras")
    out = root / "run"
    config = JointConfig(architecture="resunet", width=0.25, init=str(root / "seg.keras"), img_size=32, epochs=2,
                         batch_size=4, infer_batch=4, augment=True, workers=1, run_eagerly=True)
    with pytest.MonkeyPatch.context() as mp:
        interrupt_on_call(mp, callbacks.AtomicCSVLogger, "on_epoch_end", n=2)
        with pytest.raises(KeyboardInterrupt):
            train_joint(config, data, out_dir=out, progress=False)
    import pandas as pd

    interrupted = {"backup": (out / "backup").is_dir(), "epochs": len(pd.read_csv(out / "history.csv")),
                   "run_json": (out / "run.json").exists()}
    with pytest.raises(RunIdentityError) as info:
        train_joint(replace(config, seed=1), data, out_dir=out, progress=False)
    epochs: list[int] = []
    real = callbacks.AtomicCSVLogger.on_epoch_end
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(callbacks.AtomicCSVLogger, "on_epoch_end",
                   lambda self, epoch, logs=None: epochs.append(epoch) or real(self, epoch, logs))
        metrics = train_joint(config, data, out_dir=out, progress=False)
    return {"data": data, "out": out, "metrics": metrics, "interrupted": interrupted, "resumed_epochs": epochs,
            "refused": str(info.value)}

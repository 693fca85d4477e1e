"""Where classseg looks for data and models by default: ``$CLASSSEG_DATA`` and ``$CLASSSEG_MODELS``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "CLASSSEG_DATA"
MODELS_ENV = "CLASSSEG_MODELS"
#: The repository checkout this package was imported from.
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$CLASSSEG_DATA``, else the bundled sample ``data/sample/kaggle_3m`` of the repository."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo_sample = REPO_ROOT / "data" / "sample" / "kaggle_3m"
    if repo_sample.exists():
        return repo_sample
    return Path("data") / "sample" / "kaggle_3m"


def default_models_dir() -> Path:
    """``$CLASSSEG_MODELS``, else the repository's ``saved_models/``."""
    env = os.environ.get(MODELS_ENV)
    return Path(env) if env else REPO_ROOT / "saved_models"


def shipped_model(name: str, hint: str = "") -> Path:
    """``default_models_dir() / name`` (e.g. ``segmenter.keras``); ``FileNotFoundError`` naming the file and
    saying how to restore it (plus ``hint``) when it is missing."""
    path = default_models_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shipped {Path(name).stem} is missing{hint}; restore saved_models/ "
                                f"from the repository (or point ${MODELS_ENV} at a folder holding it)")
    return path

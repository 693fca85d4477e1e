"""Fetch the full LGG MRI Segmentation dataset (Buda et al. 2019) from Kaggle, else use the bundled sample.

The Kaggle archive ``mateuszbuda/lgg-mri-segmentation`` unzips to ``kaggle_3m/`` (110 patient folders)
and a second copy under ``lgg-mri-segmentation/kaggle_3m/``. :func:`kaggle_dataset` downloads it into a
staging folder with the official ``kaggle`` client, keeps one ``kaggle_3m`` as ``<dest>/kaggle_3m`` and
deletes the rest, so an interrupted download is never mistaken for a complete one. It never raises
for a missing client or missing credentials: it prints why and returns the fallback folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from classseg.data import DEFAULT_DATA_DIR
from classseg.data.io import is_mask_file

#: Kaggle dataset handle (owner/slug) of the LGG MRI Segmentation dataset.
KAGGLE_DATASET = "mateuszbuda/lgg-mri-segmentation"
#: Name of the folder of patient folders inside the archive.
DATASET_FOLDER = "kaggle_3m"
_STAGING = ".download"


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found, or None.

    Looked up like the ``kaggle`` client does: ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, then
    ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR``, ``~/.kaggle`` or ``$XDG_CONFIG_HOME/kaggle`` (Colab).
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME, KAGGLE_KEY)"
    home = Path.home()
    folders = [os.environ.get("KAGGLE_CONFIG_DIR"), home / ".kaggle",
               Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    for folder in folders:
        if folder and (Path(folder) / "kaggle.json").is_file():
            return str(Path(folder) / "kaggle.json")
    return None


def _is_dataset(folder: Path) -> bool:
    """A folder of patient folders, at least one holding a ``*_mask.<ext>`` file."""
    if not folder.is_dir():
        return False
    return any(p.is_dir() and any(is_mask_file(f) for f in p.iterdir()) for p in folder.iterdir())


def find_dataset(root: str | Path) -> Path | None:
    """The shallowest ``kaggle_3m`` folder under ``root`` that holds patient folders, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    candidates = sorted((p for p in root.rglob(DATASET_FOLDER) if _STAGING not in p.relative_to(root).parts),
                        key=lambda p: (len(p.parts), str(p)))
    return next((p for p in candidates if _is_dataset(p)), None)


def _download(dest: Path) -> Path:
    """Download + unzip into ``dest/.download``, move one ``kaggle_3m`` to ``dest/kaggle_3m``; return it."""
    from kaggle.api.kaggle_api_extended import KaggleApi  # importing `kaggle` authenticates

    staging = dest / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(KAGGLE_DATASET, path=str(staging), unzip=True, quiet=False)
        found = find_dataset(staging)
        if found is None:
            raise FileNotFoundError(f"no {DATASET_FOLDER}/ folder with patient folders in the downloaded archive")
        target = dest / DATASET_FOLDER
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(found), str(target))
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def kaggle_dataset(dest: str | Path = "datasets/lgg", fallback: str | Path = DEFAULT_DATA_DIR) -> Path:
    """The ``kaggle_3m`` folder of the full dataset under ``dest``, downloading it when possible.

    1. A ``kaggle_3m`` folder with patient folders already under ``dest`` is reused (no network).
    2. Else, with Kaggle credentials (:func:`kaggle_credentials`) and the ``kaggle`` package, the
       dataset ``mateuszbuda/lgg-mri-segmentation`` is downloaded and unzipped
       (``KaggleApi.dataset_download_files(..., unzip=True)``) to ``dest/kaggle_3m``.
    3. Otherwise, or when the download fails, prints why and returns ``fallback`` (the bundled
       7-patient sample by default). Never raises for missing credentials or client.
    """
    dest = Path(dest)
    found = find_dataset(dest)
    if found is not None:
        print(f"Kaggle dataset already downloaded: using {found}")
        return found
    fallback = Path(fallback)
    creds = kaggle_credentials()
    if creds is None:
        print(f"no Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME + KAGGLE_KEY): using the bundled "
              f"sample {fallback}")
        return fallback
    try:
        import kaggle  # noqa: F401  - only checks that the client is installed
    except ImportError:
        print(f"Kaggle credentials found ({creds}) but the `kaggle` package is not installed "
              f"(pip install kaggle): using the bundled sample {fallback}")
        return fallback
    except Exception as err:  # noqa: BLE001 - the client authenticates on import; any failure means "no download"
        print(f"the kaggle client failed to start ({type(err).__name__}: {err}): using the bundled sample {fallback}")
        return fallback
    print(f"downloading {KAGGLE_DATASET} to {dest} (credentials: {creds}) ...")
    try:
        path = _download(dest)
    except Exception as err:  # noqa: BLE001 - network, quota, disk, licence: report and fall back
        print(f"Kaggle download failed ({type(err).__name__}: {err}): using the bundled sample {fallback}")
        return fallback
    print(f"Kaggle dataset ready: {path}")
    return path

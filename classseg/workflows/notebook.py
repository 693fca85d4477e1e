"""The setup the four notebooks share (notebooks/src): accelerator check, data, one split file.

Each function prints or displays what the notebook cell used to show and returns what later cells use,
so a notebook cell is one call. The install cell stays in the notebooks (notebooks/src/_install.py, put
into each by notebooks/build_notebooks.py): it runs before classseg can be imported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["check_accelerator", "load_data", "prepare_split"]


def _display(obj: object) -> None:
    try:
        from IPython.display import display
    except ImportError:  # outside IPython: print it
        print(obj)
    else:
        display(obj)


def check_accelerator() -> dict:
    """Print the GPUs (or that the run is on the CPU), Python / TensorFlow / Keras versions and the CPU;
    return :func:`classseg.utils.environment.environment_info`."""
    from classseg.utils.environment import environment_info

    env = environment_info()
    print("GPUs:", ", ".join(env["gpus"]) or "none - running on the CPU: keep IMG_SIZE and EPOCHS small")
    print(f"python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}; "
          f"CPU {env['cpu']} x{env['cpu_count']}")
    return env


def load_data(data_dir: str | Path | None) -> tuple[Path, pd.DataFrame]:
    """(data folder, its slices): ``data_dir``, or None = the full Kaggle dataset when credentials exist
    (downloaded once, reused), else the bundled sample (:func:`classseg.data.kaggle.kaggle_dataset`); its
    patients, slices and tumor share are displayed."""
    from classseg.data import discover, summarize
    from classseg.data.kaggle import kaggle_dataset

    folder = kaggle_dataset() if data_dir is None else Path(data_dir)
    slices = discover(folder)
    summary = summarize(slices)
    _display(pd.Series({k: summary[k] for k in ("patients", "slices", "tumor_slices", "tumor_share")},
                       name=str(folder)).to_frame())
    return folder, slices


def prepare_split(slices: pd.DataFrame, out_dir: str | Path, splits: str | Path | None,
                  seed: int) -> tuple[Path, Path]:
    """(output folder, split file): ``splits``, or None = a patient-level 70/15/15 split of ``slices`` with
    ``seed`` written to ``out_dir/splits.csv``; patients it does not list are named, and the patients,
    slices and tumor slices per split are displayed (docs/design.md, "Splits")."""
    from classseg.data import apply_splits, load_splits, resolve_splits, save_splits, split_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if splits is None:
        splits = save_splits(split_table(resolve_splits(slices, seed=seed)), out / "splits.csv")
        print(f"computed a patient-level 70/15/15 split with seed {seed}: {splits}")
    splits = Path(splits)
    listed = load_splits(splits)
    unlisted = sorted(set(slices["patient_id"]) - set(listed["patient_id"]))
    if unlisted:  # training on DATA_DIR with this split stops with an error; the pipeline uses listed patients only
        print(f"{len(unlisted)} patient(s) of DATA_DIR are not in {splits.name}, e.g. {unlisted[:3]}")
    present = listed[listed["patient_id"].isin(slices["patient_id"])]  # a split file of a larger dataset
    _display(apply_splits(slices[slices["patient_id"].isin(listed["patient_id"])], present).groupby("split").agg(
        patients=("patient_id", "nunique"), slices=("slice", "size"), tumor_slices=("tumor", "sum")))
    return out, splits

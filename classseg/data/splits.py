"""Patient-level splits: train/val/test with similar tumor-slice shares, and k folds."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from classseg.utils.atomic import atomic_to_csv

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)

#: Whether a split file may list patients the data lacks (``--allow-missing``); see
#: :func:`missing_patients_allowed`.
_ALLOW_MISSING: ContextVar[bool] = ContextVar("classseg_allow_missing_patients", default=False)


@contextlib.contextmanager
def missing_patients_allowed(allowed: bool = True) -> Iterator[None]:
    """Within the block, :func:`apply_splits` goes on without listed patients the data lacks (with a warning)
    instead of refusing: what ``--allow-missing`` sets for a whole command, down to the trainers."""
    token = _ALLOW_MISSING.set(allowed)
    try:
        yield
    finally:
        _ALLOW_MISSING.reset(token)


def check_listed_patients(df: pd.DataFrame, splits: pd.DataFrame, allow_missing: bool | None = None,
                          source: str = "the split file") -> dict[str, object]:
    """Refuse (``ValueError``, with counts per split) when ``splits`` lists patients that ``df`` lacks.

    A split would then shrink silently (a test set of 12 patients scored on 9). ``allow_missing`` (None:
    :func:`missing_patients_allowed`) goes on with a warning, except where a split that lists patients
    would keep none of them (always refused: nothing of it could be trained on or scored). Returns
    ``{"missing": n, "listed": n, "per_split": {split: [missing, listed]}, "examples": [...]}`` (``missing``
    0 when all are present), which callers record.
    """
    allow = _ALLOW_MISSING.get() if allow_missing is None else allow_missing
    present = set(df["patient_id"].astype(str))
    table = splits.assign(patient_id=splits["patient_id"].astype(str))
    absent = table[~table["patient_id"].isin(present)]
    per_split = {name: [int((absent["split"] == name).sum()), int((table["split"] == name).sum())]
                 for name in SPLITS if (table["split"] == name).any()}
    info: dict[str, object] = {"missing": len(absent), "listed": len(table), "per_split": per_split,
                               "examples": sorted(absent["patient_id"])[:5]}
    if absent.empty:
        return info
    counts = ", ".join(f"{name} {m} of {n}" for name, (m, n) in per_split.items())
    what = (f"{len(absent)} of {len(table)} patient(s) listed in {source} are not in the data ({counts} missing; "
            f"e.g. {', '.join(info['examples'][:3])})")
    emptied = [name for name, (m, n) in per_split.items() if m == n]
    if emptied:
        raise ValueError(f"{what}: the {' and '.join(emptied)} split(s) would be empty; use the split file made "
                         "for this data (`classseg data split`)")
    if not allow:
        raise ValueError(f"{what}: the splits would lose them silently; use the split file made for this data "
                         "(`classseg data split`), or pass --allow-missing to go on without them")
    log.warning("%s; going on without them (--allow-missing)", what)
    return info


def _patient_table(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        raise ValueError("cannot split an empty slice table")
    tumor = df["tumor"].fillna(False).astype(bool)
    return (df.assign(tumor=tumor).groupby("patient_id", sort=True)
            .agg(slices=("tumor", "size"), tumor_slices=("tumor", "sum")).reset_index())


def split_patients(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   seed: int = 0, trials: int = 2000) -> pd.DataFrame:
    """Assign every patient to exactly one of train/val/test.

    Patient counts follow ``fractions``; among ``trials`` seeded random assignments the one
    whose splits' tumor-slice shares are closest to the whole set's (smallest worst deviation)
    is kept, so each split sees a similar share of tumor slices. Deterministic for a seed.
    Returns a frame with columns ``patient_id`` and ``split``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    patients = _patient_table(df)
    n = len(patients)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if fractions[1] > 0:
        n_val = max(n_val, 1)
    if fractions[2] > 0:
        n_test = max(n_test, 1)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} patients are too few for fractions {fractions}")
    slices = patients["slices"].to_numpy(float)
    tumor = patients["tumor_slices"].to_numpy(float)
    overall = tumor.sum() / slices.sum()
    sizes = (n_train, n_val, n_test)
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(trials):
        order = rng.permutation(n)
        labels = np.empty(n, dtype=int)
        start = 0
        for k, size in enumerate(sizes):
            labels[order[start:start + size]] = k
            start += size
        cost = 0.0
        for k, size in enumerate(sizes):
            if size:
                sel = labels == k
                cost = max(cost, abs(tumor[sel].sum() / slices[sel].sum() - overall))
        if cost < best_cost:
            best, best_cost = labels, cost
    return pd.DataFrame({"patient_id": patients["patient_id"], "split": [SPLITS[k] for k in best]})


def split_with_test(df: pd.DataFrame, test_patients: set[str] | list[str],
                    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """``test_patients`` form the test split; the others are split train/val by :func:`split_patients`
    in the ratio ``fractions[0] : fractions[1]`` (e.g. to keep a bundled sample as the held-out test set)."""
    test = set(test_patients)
    rest = df[~df["patient_id"].isin(test)]
    if rest.empty:
        raise ValueError("every patient is a test patient: nothing is left to train on")
    total = fractions[0] + fractions[1]
    if total <= 0:
        raise ValueError(f"fractions {fractions} leave no share for train and val")
    trainval = split_patients(rest, (fractions[0] / total, fractions[1] / total, 0.0), seed=seed)
    held = pd.DataFrame({"patient_id": sorted(test & set(df["patient_id"])), "split": "test"})
    return pd.concat([trainval, held], ignore_index=True).sort_values("patient_id").reset_index(drop=True)


def kfold_patients(df: pd.DataFrame, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Patient-level k folds stratified on the tumor label (scikit-learn StratifiedGroupKFold).

    Returns ``patient_id`` and ``fold`` (0..k-1): the fold in which the patient is held out.
    """
    tumor = df["tumor"].fillna(False).astype(int).to_numpy()
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    for fold, (_, held_out) in enumerate(folds.split(np.zeros(len(df)), tumor, groups=df["patient_id"])):
        for patient in df["patient_id"].iloc[held_out].unique():
            assignment[patient] = fold
    return pd.DataFrame(sorted(assignment.items()), columns=["patient_id", "fold"])


def save_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    """Write a split table as CSV (``patient_id,split``), atomically."""
    return atomic_to_csv(splits, Path(path), index=False)


def load_splits(path: str | Path) -> pd.DataFrame:
    """Read a split CSV and check it (columns, known split names, no patient twice)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: split file does not exist")
    splits = pd.read_csv(path, dtype={"patient_id": str, "split": str})
    missing = {"patient_id", "split"} - set(splits.columns)
    if missing:
        raise ValueError(f"{path}: split file lacks column(s) {sorted(missing)}")
    unknown = set(splits["split"]) - set(SPLITS)
    if unknown:
        raise ValueError(f"{path}: unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
    dup = splits["patient_id"][splits["patient_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: patient(s) listed twice: {sorted(dup)[:5]}")
    return splits[["patient_id", "split"]]


def apply_splits(df: pd.DataFrame, splits: pd.DataFrame, only_listed: bool = False,
                 allow_missing: bool | None = None, source: str = "the split file") -> pd.DataFrame:
    """Add the ``split`` column to a slice table.

    Every patient must be in the split table, unless ``only_listed``: then the patients it does not
    list are left out (a warning says how many; ``attrs["left_out_patients"]`` lists them). Every
    patient the table lists must be in the data, unless ``allow_missing`` (:func:`check_listed_patients`;
    ``attrs["missing_listed_patients"]`` records what was missing).
    """
    lookup = dict(zip(splits["patient_id"], splits["split"]))
    missing = sorted(set(df["patient_id"]) - set(lookup))
    if missing and not only_listed:
        raise ValueError(f"{len(missing)} patient(s) are not in the split file, e.g. {missing[:3]}; "
                         "make a split for this data with `classseg data split`, or keep only the split's "
                         "patients with `classseg data link DATA --splits FILE --out DIR`")
    missing_listed = check_listed_patients(df, splits, allow_missing, source)
    out = df[~df["patient_id"].isin(missing)].copy() if missing else df.copy()
    out["split"] = out["patient_id"].map(lookup)
    out.attrs.update(df.attrs)
    out.attrs["left_out_patients"] = missing
    out.attrs["missing_listed_patients"] = missing_listed
    if missing:
        log.warning("%d patient(s) not in the split file were left out (%d kept), e.g. %s", len(missing),
                    out["patient_id"].nunique(), ", ".join(missing[:3]))
    return out


def resolve_splits(df: pd.DataFrame, splits_path: str | Path | None = None, seed: int = 0,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), only_listed: bool = False,
                   allow_missing: bool | None = None) -> pd.DataFrame:
    """The slice table with a ``split`` column: from ``splits_path`` if given, else computed.

    ``only_listed``: keep only the patients the split file lists (see :func:`apply_splits`);
    ``allow_missing``: go on without listed patients the data lacks (:func:`check_listed_patients`).
    Files that discovery skipped (``df.attrs["skipped"]``) are reported on the console (logger
    ``classseg.data``), so no training command passes over them silently.
    """
    from classseg.data.skipped import log_skipped

    log_skipped(df, "not used for training")
    if not splits_path:
        return apply_splits(df, split_patients(df, fractions, seed), only_listed=only_listed)
    return apply_splits(df, load_splits(splits_path), only_listed=only_listed, allow_missing=allow_missing,
                        source=str(splits_path))


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """The ``patient_id,split`` table of a slice table that has a ``split`` column."""
    return df[["patient_id", "split"]].drop_duplicates().sort_values("patient_id").reset_index(drop=True)


def link_patients(data_dir: Path, splits: pd.DataFrame, split: str | Sequence[str], dest: Path,
                  overwrite: bool = False) -> Path:
    """A folder of symbolic links to the patient folders of one split, or of several (read-only use:
    the pipeline walks it; training on it keeps exactly the split file's patients).

    Patient ids are paths relative to ``data_dir`` (``case/flair`` links ``dest/case/flair``). A ``dest``
    that already holds anything is refused (``FileExistsError``) unless ``overwrite``; then only its
    symbolic links are replaced, and a ``dest`` holding real files or folders is still refused, so
    nothing but links is ever removed."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a folder")
    entries = list(dest.rglob("*")) if dest.is_dir() else []
    links = [e for e in entries if e.is_symlink()]
    real = [e for e in entries if not e.is_symlink() and not e.is_dir()
            and not any(parent in links for parent in e.parents)]
    if entries and not overwrite:
        raise FileExistsError(f"{dest} is not empty; pass --overwrite to replace its links, or choose another --out")
    if real:
        raise FileExistsError(f"{dest} holds files that are not links (e.g. {real[0]}); refusing to touch it")
    for link in links:
        link.unlink()
    wanted = [split] if isinstance(split, str) else list(split)
    dest.mkdir(parents=True, exist_ok=True)
    for patient in splits.loc[splits["split"].isin(wanted), "patient_id"]:
        source = (Path(data_dir) / patient).resolve()
        link = dest / patient
        if source.is_dir() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=True)
    return dest

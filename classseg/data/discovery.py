"""Discover a kaggle_3m-style tree (patient folders of ``<stem>.tif`` + ``<stem>_mask.tif``)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from classseg.data.io import ImageReadError, read_image, read_mask
from classseg.data.walk import METADATA_FILES, grouping, walk_images

__all__ = ["COLUMNS", "METADATA_FILES", "discover", "institution_of", "slice_number", "summarize"]
COLUMNS = ["patient_id", "institution", "slice", "image_path", "mask_path", "tumor", "tumor_area_px"]
_TRAILING_NUMBER = re.compile(r"_(\d+)$")


def slice_number(stem: str) -> int:
    """Numeric slice index from ``..._<n>`` (so 2 sorts before 10); -1 when there is none."""
    match = _TRAILING_NUMBER.search(stem)
    return int(match.group(1)) if match else -1


def _tcga_part(patient_id: str) -> str:
    """The path component of a patient id (a folder path relative to the data folder) that is a TCGA case
    id (``site/TCGA_CS_4942_19970222/flair`` -> ``TCGA_CS_4942_19970222``), else the whole id."""
    for part in str(patient_id).split("/"):
        if part.startswith("TCGA_") and len(part.split("_")) >= 3:
            return part
    return str(patient_id)


def institution_of(patient_id: str) -> str:
    """Institution code of a TCGA case id (``TCGA_CS_4942_19970222`` -> ``CS``, also inside a nested
    patient path); '' otherwise."""
    parts = _tcga_part(patient_id).split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "TCGA" else ""


def _case_key(patient_id: str) -> str:
    """``TCGA_CS_4942_19970222`` -> ``TCGA_CS_4942``, the key used by the dataset's data.csv."""
    return "_".join(_tcga_part(patient_id).split("_")[:3])


def _check_slice(image_path: Path, mask_path: Path | None, require_mask: bool) -> tuple[int, ImageReadError | None]:
    """Read an image (and its mask); return (tumor area, the error or None)."""
    try:
        image = read_image(image_path)
        if mask_path is None:
            if require_mask:
                raise ImageReadError(image_path, f"no mask ({image_path.stem}_mask{image_path.suffix}); "
                                                 "a mask is required for training")
            return -1, None
        mask = read_mask(mask_path, shape=image.shape[:2])
        return int(mask.sum()), None
    except ImageReadError as err:
        return -1, err


def _load_clinical(root: Path) -> pd.DataFrame | None:
    csv = root / "data.csv"
    if not csv.exists():
        return None
    try:
        clinical = pd.read_csv(csv)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError):
        return None
    if "Patient" not in clinical.columns:
        return None
    return clinical.rename(columns={"Patient": "case_id"})


def _add_volume_cases(root: Path, skipped: list[dict[str, str]], candidates: list[tuple[Path, Path | None]],
                      patients: dict[Path, str]) -> None:
    """The NIfTI cases under ``root`` (:mod:`classseg.data.nifti`): their slices as references, which every reader
    reads; a case that cannot be used, and NIfTI files that are no input, replace the walker's skip entries."""
    from classseg.data.nifti import find_cases, is_nifti, slice_ref

    if not any(is_nifti(s["path"]) for s in skipped):
        return
    cases, volume_skipped = find_cases(root)
    skipped[:] = [s for s in skipped if not is_nifti(s["path"])]
    skipped.extend({"path": str(root / s["path"]), "reason": s["reason"]} for s in volume_skipped)
    for case in cases:
        if case.problem:
            skipped.append({"path": str(root / case.relative), "reason": case.problem})
            continue
        for k in range(case.n_slices):
            image = slice_ref(case, root, k)
            candidates.append((image, slice_ref(case, root, k, truth=True) if case.truth else None))
            patients[image] = case.case_id


def discover(data_dir: str | Path, require_masks: bool = True, workers: int = 8) -> pd.DataFrame:
    """Read a kaggle_3m-style tree into one row per slice.

    Columns: ``patient_id`` (the slice's folder by its path relative to ``data_dir``,
    :data:`classseg.data.walk.GROUPING_RULE`; how the tree was grouped is ``df.attrs["grouping"]``),
    ``institution``, ``slice`` (numeric),
    ``image_path``, ``mask_path``, ``tumor`` (mask non-empty), ``tumor_area_px``, plus the
    columns of ``data.csv`` when the tree has one (joined on the TCGA case id).
    Every image is decoded once, so corrupt files, non-binary masks and masks whose shape
    differs from the image are found here; they are skipped and listed, with the reason, in
    ``df.attrs["skipped"]`` (a list of ``{"path", "reason"}``). With ``require_masks`` an image
    without ``<stem>_mask.<ext>`` is skipped too (training needs the mask), and so is an image
    whose mask is ambiguous (:func:`classseg.data.walk.pair_mask`: ``x_1.tif`` and ``x_1.png``
    beside one ``x_1_mask.tif`` -> the ``.tif`` is paired, the ``.png`` skipped with the reason);
    without it such images are kept unpaired and listed in ``df.attrs["ambiguous"]``.
    Symbolic links to patient folders are followed.
    """
    root = Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    found, walked_skipped = walk_images(root)  # symlinked patient folders count
    skipped: list[dict[str, str]] = [{"path": str(root / item["path"]), "reason": item["reason"]}
                                     for item in walked_skipped]
    ambiguous: list[dict[str, str]] = []
    candidates: list[tuple[Path, Path | None]] = []
    for item in found:
        if item.note:  # the same stem twice beside one mask: said, never paired silently
            if require_masks:
                skipped.append({"path": str(item.path), "reason": item.note})
                continue
            ambiguous.append({"path": str(item.path), "reason": item.note})
        candidates.append((item.path, item.mask_path))
    patients = {item.path: item.patient for item in found}
    _add_volume_cases(root, skipped, candidates, patients)  # NIfTI cases: one candidate per axial slice
    if not candidates and not skipped:
        raise ValueError(f"{root}: no images found (expected patient folders of .tif/.png/.jpg slices)")

    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decoding releases the GIL
        checks = list(pool.map(lambda c: _check_slice(*c, require_masks), candidates))

    rows = []
    for (image, mask), (area, error) in zip(candidates, checks):
        if error is not None:
            skipped.append({"path": error.path, "reason": error.problem})
            continue
        patient = patients[image]
        rows.append({
            "patient_id": patient,
            "institution": institution_of(patient),
            "slice": slice_number(image.stem),
            "image_path": str(image),
            "mask_path": str(mask) if mask is not None else None,
            "tumor": bool(area > 0) if mask is not None else None,
            "tumor_area_px": area if mask is not None else None,
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    if not df.empty:
        df = df.sort_values(["patient_id", "slice", "image_path"], kind="stable").reset_index(drop=True)
        clinical = _load_clinical(root)
        if clinical is not None:
            df["case_id"] = df["patient_id"].map(_case_key)
            df = df.merge(clinical, on="case_id", how="left")
    df.attrs["skipped"] = skipped
    df.attrs["ambiguous"] = ambiguous
    df.attrs["data_dir"] = str(root)
    df.attrs["grouping"] = grouping(found)
    return df


def summarize(df: pd.DataFrame) -> dict:
    """Counts for ``classseg data summary``: patients, slices, tumor slices, per institution."""
    per_inst = (
        df.groupby("institution").agg(patients=("patient_id", "nunique"), slices=("slice", "size"),
                                      tumor_slices=("tumor", "sum"))
        if not df.empty else pd.DataFrame(columns=["patients", "slices", "tumor_slices"])
    )
    tumor = df["tumor"].fillna(False).astype(bool) if not df.empty else df["tumor"]
    return {
        "data_dir": df.attrs.get("data_dir"),
        "patients": int(df["patient_id"].nunique()),
        "slices": int(len(df)),
        "tumor_slices": int(tumor.sum()),
        "tumor_share": float(tumor.mean()) if len(df) else 0.0,
        "per_institution": {str(k): {c: int(v) for c, v in row.items()} for k, row in per_inst.iterrows()},
        "grouping": df.attrs.get("grouping"),
        "skipped": list(df.attrs.get("skipped", [])),
    }

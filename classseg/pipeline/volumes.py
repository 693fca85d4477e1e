"""The NIfTI side of a folder run: each case's delivered masks as ``masks/<case>_mask.nii.gz`` (the input's affine
and header, voxel for voxel on its grid) and ``volumes.csv``, one row per case with its status."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.data.io import ImageReadError, read_mask
from classseg.data.nifti import reference_image, write_mask_volume
from classseg.pipeline.inputs import InputSlice, cases_of
from classseg.pipeline.outputs import write_csv

#: Columns of volumes.csv (one row per NIfTI case).
VOLUME_COLUMNS = ["case", "files", "truth", "shape", "orientation", "axial_axis", "slices", "status", "mask_volume",
                  "note", "error"]


def mask_volume_name(case_id: str) -> Path:
    """Where a case's mask volume goes in the output folder: ``masks/<case>_mask.nii.gz``."""
    return Path("masks") / f"{case_id}_mask.nii.gz"


def write_volume_outputs(out: Path, inputs: Sequence[InputSlice], names: dict[Path, Path]) -> list[dict[str, Any]]:
    """For every NIfTI case among ``inputs``: its slices' delivered masks (``masks/<case>/z<k>.png``) stacked into
    ``masks/<case>_mask.nii.gz``; ``volumes.csv`` (none when there is no case). Returns the rows. A case whose
    volumes could not be read, or with a slice missing its mask, gets ``status`` error and no mask volume."""
    rows = []
    for case_id, (case, items) in cases_of(inputs).items():
        row = dict.fromkeys(VOLUME_COLUMNS, "")
        row.update(case.describe(), status="ok")
        try:
            if case.problem:
                raise ImageReadError(case.first_file, case.problem)
            slices = [read_mask(out / "masks" / names[item.relative]) for item in items]
            write_mask_volume(out / mask_volume_name(case_id), np.stack(slices), reference_image(case))
            row["mask_volume"] = mask_volume_name(case_id).as_posix()
        except (ImageReadError, OSError) as err:
            row.update(status="error", error=str(err))
        rows.append(row)
    if rows:
        write_csv(out / "volumes.csv", rows, VOLUME_COLUMNS)
    return rows

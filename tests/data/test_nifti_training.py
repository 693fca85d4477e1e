"""The training readers take NIfTI cases like slice folders: ``discover`` lists each axial slice (patient = case,
slice number, tumor area) and ``load_arrays`` gives the very arrays of the same slices stored as TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classseg.data import discover, load_arrays
from classseg.data.nifti import write_case
from tests.pipeline.test_nifti import N_SLICES, case_arrays, ras_affine, write_slices


def test_discover_and_load_arrays_read_nifti_cases_as_their_slices(tmp_path: Path) -> None:
    tif, nii = tmp_path / "tif", tmp_path / "nii"
    for k, patient in enumerate(("P1", "P2")):
        images, masks = case_arrays(seed=k)
        write_slices(tif, patient, images, masks)
        write_case(nii / ("site" if k else ""), patient, images, masks, affine=ras_affine() if k else None)
    (nii / "P3_t1.nii.gz").write_bytes(b"broken")
    from_tif, from_nii = discover(tif), discover(nii)
    assert list(from_nii["patient_id"]) == ["P1"] * N_SLICES + ["site/P2"] * N_SLICES
    assert list(from_nii["slice"]) == list(range(N_SLICES)) * 2
    for column in ("tumor", "tumor_area_px"):
        assert list(from_nii[column]) == list(from_tif[column])
    assert [s["reason"] for s in from_nii.attrs["skipped"]] == [
        "no FLAIR volume (<case>_flair.nii.gz) beside P3_t1.nii.gz; FLAIR stands in for a missing pre- or "
        "post-contrast sequence but cannot itself be replaced"]
    a, b = load_arrays(from_tif, img_size=32, progress=False), load_arrays(from_nii, img_size=32, progress=False)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.labels, b.labels) and a.masks.sum() > 0

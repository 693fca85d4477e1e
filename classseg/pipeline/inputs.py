"""What the pipeline reads: the slices of a test folder (the package's one walker), the axial slices of its
NIfTI volumes (:mod:`classseg.data.nifti`), and their output names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from classseg.data.io import ImageReadError, read_image, read_mask
from classseg.data.nifti import NAMING_RULE, VolumeCase, case_slice, find_cases, is_nifti, slice_name, truth_slice
from classseg.data.walk import FoundImage, natural_key, walk_images

#: One input image: absolute path, path relative to the test folder, patient, ground-truth mask.
InputSlice = FoundImage

__all__ = ["InputSlice", "VolumeSlice", "find_inputs", "natural_key", "output_names", "read_input_image",
           "read_input_mask"]


@dataclass(frozen=True)
class VolumeSlice(FoundImage):
    """Axial slice ``index`` of a NIfTI case (``relative`` = ``<case>/z<index>``, ``path`` = the case's first file,
    ``mask_path`` = its ground-truth volume). A case that cannot be used is one item with ``index`` -1, whose
    reading raises the case's problem (one error row naming the file)."""

    case: VolumeCase | None = None
    index: int = -1


def volume_slices(case: VolumeCase, root: Path) -> list[VolumeSlice]:
    """The items of one case: one per axial slice, or a single error item for a case with a problem."""
    if case.problem:
        return [VolumeSlice(root / case.relative, case.relative, case.case_id, None, "", case, -1)]
    return [VolumeSlice(root / case.relative, slice_name(case.case_id, k), case.case_id, case.truth,
                        "", case, k) for k in range(case.n_slices)]


def find_inputs(test_dir: str | Path) -> tuple[list[InputSlice], list[dict[str, str]]]:
    """Images under ``test_dir`` and the skipped files, by the rules of :mod:`classseg.data.walk`, then the axial
    slices of its NIfTI cases (:data:`classseg.data.nifti.NAMING_RULE`).

    Every image is predicted; one whose ground truth is ambiguous (:func:`classseg.data.walk.pair_mask`)
    has no mask and says why in its ``note`` (``"ground truth not used: ..."``).
    """
    root = Path(test_dir)
    found, skipped = walk_images(root)
    inputs: list[InputSlice] = [replace(s, note=f"ground truth not used: {s.note}") if s.note else s for s in found]
    if any(is_nifti(s["path"]) for s in skipped):
        cases, volume_skipped = find_cases(root)
        skipped = [s for s in skipped if not is_nifti(s["path"])] + volume_skipped
        for case in cases:
            inputs.extend(volume_slices(case, root))
    return inputs, skipped


def read_input_image(item: InputSlice) -> np.ndarray:
    """The slice as uint8 RGB (H, W, 3): :func:`classseg.data.io.read_image`, or the slice of a NIfTI case."""
    if not isinstance(item, VolumeSlice):
        return read_image(item.path)
    if item.index < 0:
        raise ImageReadError(item.path, item.case.problem if item.case is not None else NAMING_RULE)
    return case_slice(item.case, item.index)


def read_input_mask(item: InputSlice, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The slice's ground truth as uint8 (H, W) in {0, 1} (:func:`classseg.data.io.read_mask` or the slice of a
    ground-truth volume); raises :class:`ImageReadError` naming the file."""
    if not isinstance(item, VolumeSlice):
        return read_mask(item.mask_path, shape=shape)
    truth = truth_slice(item.mask_path, item.index, item.case.shape)
    if shape is not None and truth.shape != tuple(shape):
        raise ImageReadError(item.mask_path, f"slice shape {truth.shape} differs from the image's {tuple(shape)}")
    return truth


def output_names(inputs: Sequence[InputSlice]) -> dict[Path, Path]:
    """Relative PNG name per input: the suffix replaced by ``.png`` (``.<ext>.png`` where that would clash)."""
    replaced = {s.relative: s.relative.with_suffix(".png") for s in inputs}
    counts: dict[Path, int] = {}
    for name in replaced.values():
        counts[name] = counts.get(name, 0) + 1
    return {rel: (name if counts[name] == 1 else rel.with_name(rel.name + ".png")) for rel, name in replaced.items()}


def cases_of(inputs: Sequence[InputSlice]) -> dict[str, tuple[VolumeCase, list[Any]]]:
    """The NIfTI cases among ``inputs``: case id -> (case, its items in slice order)."""
    cases: dict[str, tuple[VolumeCase, list[Any]]] = {}
    for item in inputs:
        if isinstance(item, VolumeSlice):
            cases.setdefault(item.case.case_id, (item.case, []))[1].append(item)
    return cases

"""The one folder walker of classseg: which files under a folder are MRI slices, their masks and patients.

Used by :func:`classseg.data.discover` (training data) and by the pipeline's input discovery
(:func:`classseg.pipeline.inputs.find_inputs`), so both read a folder by the same rules:

* Recursive; symlinked folders are followed (a shared patient folder linked into a test folder
  counts), each real folder once (no link loops).
* Images: ``.tif .tiff .png .jpg .jpeg`` in any case. ``<stem>_mask.<ext>`` is the ground truth of
  ``<stem>`` and never an input; a mask without its image is listed as skipped.
* Metadata files (``data.csv``, README, licence) and hidden files are ignored silently; any other
  file is listed as skipped with the reason.
* Patient = the name of the folder holding the slice (the kaggle_3m layout: one folder per patient);
  a slice directly in the walked folder belongs to a patient named after that folder.
* Order: patient, then the natural order of the path (``slice_2`` before ``slice_10``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from classseg.data.io import MASK_SUFFIX, is_image_file, is_mask_file, mask_path_for

#: Files that belong to a dataset but are not slices (compared in lower case).
METADATA_FILES = frozenset({"data.csv", "readme.md", "readme.txt", "license", "license.txt", "attribution.md"})


@dataclass(frozen=True)
class FoundImage:
    """One input image: absolute path, path relative to the walked folder, patient, ground-truth mask."""

    path: Path
    relative: Path
    patient: str
    mask_path: Path | None


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``slice_2`` before ``slice_10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


def patient_of(relative: Path, root: Path) -> str:
    """The patient of a slice at ``relative`` under ``root``: its folder's name (``root``'s own for loose files)."""
    return relative.parent.name if len(relative.parts) > 1 else Path(os.path.realpath(root)).name


def walk_images(root: str | Path) -> tuple[list[FoundImage], list[dict[str, str]]]:
    """Images under ``root`` and the files skipped (``{"path": relative posix path, "reason"}``)."""
    root = Path(root)
    found: list[FoundImage] = []
    skipped: list[dict[str, str]] = []
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        seen.update(os.path.realpath(os.path.join(dirpath, d)) for d in dirnames)
        folder = Path(dirpath)
        stems = {Path(n).stem for n in filenames if is_image_file(n) and not is_mask_file(n)}
        for name in sorted(filenames):
            if name.startswith(".") or name.lower() in METADATA_FILES:
                continue
            path = folder / name
            relative = path.relative_to(root)
            if not is_image_file(path):
                skipped.append({"path": relative.as_posix(),
                                "reason": f"not an image (extension {path.suffix or 'none'!r})"})
            elif is_mask_file(path):
                if path.stem[: -len(MASK_SUFFIX)] not in stems:
                    skipped.append({"path": relative.as_posix(), "reason": "ground-truth mask without its image"})
            else:
                found.append(FoundImage(path, relative, patient_of(relative, root), mask_path_for(path)))
    found.sort(key=lambda s: (natural_key(s.patient), tuple(natural_key(p) for p in s.relative.parts)))
    return found, skipped

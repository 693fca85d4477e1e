"""The one folder walker of classseg: which files under a folder are MRI slices, their masks and patients.

Used by :func:`classseg.data.discover` (training data) and by the pipeline's input discovery
(:func:`classseg.pipeline.inputs.find_inputs`), so both read a folder by the same rules:

* Recursive; symlinked folders are followed (a shared patient folder linked into a test folder
  counts), each real folder once (no link loops).
* Images: ``.tif .tiff .png .jpg .jpeg`` in any case. ``<stem>_mask.<ext>`` is the ground truth of
  ``<stem>`` and never an input; a mask without its image is listed as skipped. When two images share
  a stem beside one mask (``x_1.tif``, ``x_1.png``, ``x_1_mask.tif``) the mask goes to the image of its
  own extension and the other is left unpaired with a note (:func:`pair_mask`): never paired silently.
* Never its own outputs: a folder carrying the pipeline's marker (:data:`classseg.utils.guards.OUTPUT_MARKER`),
  or laid out as a pipeline output (``predictions.csv`` + ``summary.json`` + ``masks/``, as older runs left
  them), is not entered, and a PNG the pipeline wrote (:func:`classseg.data.io.is_pipeline_png`) is not an
  input; each is listed as skipped with a reason starting :data:`WRITTEN_BY_CLASSSEG`.
* Metadata files (``data.csv``, README, licence) and hidden files are ignored silently; any other
  file is listed as skipped with the reason.
* Patient = the folder holding the slice, named by its path relative to the walked folder
  (``TCGA_CS_4942_19970222`` in the kaggle_3m layout, ``case_7/flair`` one level deeper, so two
  patients' ``flair`` folders stay two patients); a slice directly in the walked folder belongs to a
  patient named after that folder. :func:`grouping` says how a tree was grouped.
* Order: patient, then the natural order of the path (``slice_2`` before ``slice_10``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from classseg.data.io import MASK_SUFFIX, is_image_file, is_mask_file, is_pipeline_png, mask_path_for
from classseg.utils.guards import OUTPUT_MARKER

__all__ = ["GROUPING_RULE", "METADATA_FILES", "WRITTEN_BY_CLASSSEG", "FoundImage", "grouping", "natural_key",
           "output_folder_reason", "pair_mask", "patient_of",
           "walk_following_links", "walk_images"]

#: Files that belong to a dataset but are not slices (compared in lower case).
METADATA_FILES = frozenset({"data.csv", "readme.md", "readme.txt", "license", "license.txt", "attribution.md"})


#: How the reason of a skipped file or folder that classseg itself wrote begins.
WRITTEN_BY_CLASSSEG = "written by classseg"


def output_folder_reason(folder: str | Path, filenames: Collection[str] | None = None) -> str | None:
    """Why ``folder`` is a classseg output and never an input (its marker, or a pipeline output's layout),
    or None."""
    folder = Path(folder)
    names = set(filenames) if filenames is not None else {p.name for p in folder.iterdir()}
    if OUTPUT_MARKER in names:
        return f"{WRITTEN_BY_CLASSSEG}: an output folder (it carries {OUTPUT_MARKER}); not read as input"
    if {"predictions.csv", "summary.json"} <= names and (folder / "masks").is_dir():
        return (f"{WRITTEN_BY_CLASSSEG}: a pipeline output folder (predictions.csv, summary.json, masks/); "
                "not read as input")
    return None


@dataclass(frozen=True)
class FoundImage:
    """One input image: absolute path, path relative to the walked folder, patient, ground-truth mask.

    ``note`` says why the ground truth beside the image was not paired with it (:func:`pair_mask`);
    ``""`` when nothing is ambiguous.
    """

    path: Path
    relative: Path
    patient: str
    mask_path: Path | None
    note: str = ""


def walk_following_links(root: str | Path, skip_hidden: bool = False
                         ) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root, followlinks=True)`` in sorted order, each real folder visited once (no link loops).

    Patient folders that are symbolic links (as ``run-all`` builds for phase 3) are walked like
    real ones; the paths yielded keep the link names. ``skip_hidden`` leaves out folders whose
    name starts with a dot.
    """
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if skip_hidden and d.startswith("."):
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        yield dirpath, dirnames, sorted(filenames)


def pair_mask(image: str | Path, folder_names: Collection[str] | None = None) -> tuple[Path | None, str]:
    """The ground-truth mask of ``image`` and, when the pairing is ambiguous, why it was not made.

    ``<stem>_mask<ext>`` of the image's own extension always pairs. A mask of another extension
    pairs only when no other image in the folder has the same stem: with ``x_1.tif``, ``x_1.png``
    and one ``x_1_mask.tif``, the mask belongs to ``x_1.tif`` and ``x_1.png`` gets none (the note
    says so); with ``x_1.png``, ``x_1.jpg`` and ``x_1_mask.tif`` neither is paired. Returns
    ``(mask or None, note)``; the note is ``""`` when nothing is ambiguous.
    """
    image = Path(image)
    mask = mask_path_for(image)
    if mask is None or mask.name == image.stem + MASK_SUFFIX + image.suffix:
        return mask, ""
    names = folder_names if folder_names is not None else [p.name for p in image.parent.iterdir()]
    rivals = sorted(n for n in names if n != image.name and is_image_file(n) and not is_mask_file(n)
                    and Path(n).stem == image.stem)
    if not rivals:
        return mask, ""
    owners = [n for n in rivals if Path(n).suffix == mask.suffix]
    if owners:
        return None, (f"same stem as {owners[0]}, whose mask {mask.name} is; this image has no mask of its own "
                      f"(<stem>_mask{image.suffix}), so it is not paired with one")
    return None, (f"ambiguous ground truth: {', '.join(sorted([image.name, *rivals]))} share the stem "
                  f"{image.stem!r} and the one mask {mask.name}; not paired (rename or remove one)")


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``slice_2`` before ``slice_10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


#: How slices are grouped into patients (the unit of splits, per-patient normalisation, the 3D filter and
#: per-patient Dice), stated in ``summary.json`` and ``classseg data summary``.
GROUPING_RULE = ("patient = the folder holding the slice, named by its path relative to the data folder "
                 "(slices directly in the data folder: one patient named after that folder)")


def patient_of(relative: Path, root: Path) -> str:
    """The patient of a slice at ``relative`` under ``root``: the path of its folder relative to ``root``
    (posix, ``case_7/flair`` for nested folders), or ``root``'s own name for a slice lying in ``root``."""
    relative = Path(relative)
    return relative.parent.as_posix() if len(relative.parts) > 1 else Path(os.path.realpath(root)).name


def grouping(found: list[FoundImage]) -> dict[str, object]:
    """How the slices of a walk were grouped into patients: the rule, the count, how deep the patient
    folders lie (``{depth: patients}``), slices lying loose in the walked folder, and a nested example."""
    depths: dict[int, set[str]] = {}
    loose = 0
    for item in found:
        depth = len(item.relative.parts) - 1
        loose += depth == 0
        depths.setdefault(depth, set()).add(item.patient)
    nested = sorted(p for d, ps in depths.items() if d > 1 for p in ps)
    return {"rule": GROUPING_RULE, "patients": len({item.patient for item in found}),
            "patients_by_folder_depth": {str(d): len(ps) for d, ps in sorted(depths.items())},
            "loose_slices": loose, "nested_example": nested[0] if nested else None}


def walk_images(root: str | Path) -> tuple[list[FoundImage], list[dict[str, str]]]:
    """Images under ``root`` and the files skipped (``{"path": relative posix path, "reason"}``).

    Every image is returned, an ambiguously paired one with ``mask_path=None`` and the reason in its
    ``note``; callers decide whether to use it (training skips it, the pipeline predicts it).
    """
    root = Path(root)
    found: list[FoundImage] = []
    skipped: list[dict[str, str]] = []
    for dirpath, dirnames, filenames in walk_following_links(root, skip_hidden=True):
        folder = Path(dirpath)
        reason = output_folder_reason(folder, filenames)
        if reason is not None:  # an output of an earlier run: neither it nor anything below it is input
            dirnames[:] = []
            skipped.append({"path": folder.relative_to(root).as_posix() + "/", "reason": reason})
            continue
        stems = {Path(n).stem for n in filenames if is_image_file(n) and not is_mask_file(n)}
        for name in filenames:
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
            elif path.suffix.lower() == ".png" and is_pipeline_png(path):
                skipped.append({"path": relative.as_posix(),
                                "reason": f"{WRITTEN_BY_CLASSSEG}: a mask or overlay the pipeline wrote; not read "
                                          "as input"})
            else:
                mask, note = pair_mask(path, filenames)  # the same stem twice beside one mask: never silent
                found.append(FoundImage(path, relative, patient_of(relative, root), mask, note))
    found.sort(key=lambda s: (natural_key(s.patient), tuple(natural_key(p) for p in s.relative.parts)))
    return found, skipped

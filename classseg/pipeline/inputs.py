"""What the pipeline reads: the slices of a test folder (the package's one walker) and their output names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from classseg.data.walk import FoundImage, natural_key, walk_images

#: One input image: absolute path, path relative to the test folder, patient, ground-truth mask.
InputSlice = FoundImage

__all__ = ["InputSlice", "find_inputs", "natural_key", "output_names"]


def find_inputs(test_dir: str | Path) -> tuple[list[InputSlice], list[dict[str, str]]]:
    """Images under ``test_dir`` and the skipped files, by the rules of :mod:`classseg.data.walk`.

    Every image is predicted; one whose ground truth is ambiguous (:func:`classseg.data.walk.pair_mask`)
    has no mask and says why in its ``note`` (``"ground truth not used: ..."``).
    """
    found, skipped = walk_images(test_dir)
    return [replace(s, note=f"ground truth not used: {s.note}") if s.note else s for s in found], skipped


def output_names(inputs: Sequence[InputSlice]) -> dict[Path, Path]:
    """Relative PNG name per input: the suffix replaced by ``.png`` (``.<ext>.png`` where that would clash)."""
    replaced = {s.relative: s.relative.with_suffix(".png") for s in inputs}
    counts: dict[Path, int] = {}
    for name in replaced.values():
        counts[name] = counts.get(name, 0) + 1
    return {rel: (name if counts[name] == 1 else rel.with_name(rel.name + ".png")) for rel, name in replaced.items()}

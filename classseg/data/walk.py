"""Walking a data tree the same way everywhere: symbolic links followed, each real folder once, sorted."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path

from classseg.data.io import MASK_SUFFIX, is_image_file, is_mask_file, mask_path_for


def walk_following_links(root: str | Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root, followlinks=True)`` in sorted order, each real folder visited once (no link loops).

    Patient folders that are symbolic links (as ``run-all`` builds for phase 3) are walked like
    real ones; the paths yielded keep the link names.
    """
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
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

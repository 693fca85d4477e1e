"""Several predictions folders scored as one (``classseg evaluate PART_0 PART_1 ... --truth DIR``): the parts of a
sharded prediction (``--num-parts N --part-id K``, :mod:`classseg.pipeline.shards`) give the figures of the whole.

Refused, with the folders named: an image predicted in two folders; parts whose ``summary.json`` says they belong
to different splits, repeat a part or leave one out; parts predicted with different settings (gate threshold and
rule, post-processing, 3D filter, flips, input normalisation, model cards with their hashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The ``summary.json`` ``models`` entries that decide the figures; parts must agree on all of them.
SETTINGS = ("threshold", "gate_rule", "postprocess", "postprocess_3d", "tta", "inputs", "cards")


def _summary(pred_dir: Path) -> dict[str, Any]:
    from classseg.utils.jsonio import read_json

    path = pred_dir / "summary.json"
    try:
        return read_json(path) if path.is_file() else {}
    except (ValueError, OSError):
        return {}


def check_parts(pred_dirs: Sequence[Path]) -> dict[str, Any]:
    """Check that the folders are the parts of one sharded run (or unsharded folders of one setting); returns
    ``{"folders": n, "num_parts": N or None}``. Raises ``ValueError`` naming the folders."""
    summaries = {d: _summary(d) for d in pred_dirs}
    settings = {d: {k: s.get("models", {}).get(k) for k in SETTINGS} for d, s in summaries.items() if s}
    if settings:
        first, *rest = settings.items()
        for folder, setting in rest:
            differ = [k for k in SETTINGS if setting[k] != first[1][k]]
            if differ:
                raise ValueError(f"{folder} was predicted with other settings than {first[0]} ({', '.join(differ)} "
                                 "differ in summary.json); parts scored together must come from one setting")
    parts = {d: (s.get("data") or {}).get("part") for d, s in summaries.items()}
    sharded = {d: p for d, p in parts.items() if p}
    if not sharded:
        return {"folders": len(pred_dirs), "num_parts": None}
    counts = {p["num_parts"] for p in sharded.values()}
    if len(counts) > 1 or len(sharded) != len(pred_dirs):
        shown = ", ".join(f"{d} ({_part_text(p)})" for d, p in parts.items())
        raise ValueError(f"the folders are not the parts of one split: {shown}")
    n = counts.pop()
    seen: dict[int, Path] = {}
    for folder, part in sharded.items():
        if part["part_id"] in seen:
            raise ValueError(f"{seen[part['part_id']]} and {folder} are both part {part['part_id']} of {n}")
        seen[part["part_id"]] = folder
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ValueError(f"part(s) {', '.join(map(str, missing))} of {n} missing (given: "
                         f"{', '.join(f'{k}: {seen[k]}' for k in sorted(seen))}); the figures of the whole need "
                         "every part")
    return {"folders": len(pred_dirs), "num_parts": n}


def _part_text(part: dict[str, Any] | None) -> str:
    return f"part {part['part_id']} of {part['num_parts']}" if part else "not a part"


def check_no_repeats(rows: Sequence[tuple[Path, dict[str, str]]]) -> None:
    """Refuse an image predicted in two of the folders (``ValueError`` naming both)."""
    where: dict[str, Path] = {}
    for folder, row in rows:
        image = row.get("image", "")
        if image in where and where[image] != folder:
            raise ValueError(f"{image} is predicted in both {where[image]} and {folder}; the folders must hold "
                             "different patients (the parts of one --num-parts split)")
        where.setdefault(image, folder)

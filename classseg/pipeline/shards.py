"""Sharded prediction: ``--num-parts N --part-id K`` (nnU-Net's ``-num_parts`` / ``-part_id``) predicts part ``K``
of a folder on one machine, the other parts elsewhere; ``classseg evaluate PART_0 ... PART_N-1 --truth DIR``
scores them as one run.

The split (:data:`PART_RULE`) is by whole patients, so each patient's per-patient normalisation, 3D filter and
Dice per patient are those of a single run: the folder's patients in natural order, patient ``i`` going to part
``i mod N``. It depends only on the patients' names, so every machine computes the same parts from the same folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from classseg.data.walk import natural_key

T = TypeVar("T")

PART_RULE = "the folder's patients in natural order; patient i goes to part i mod num_parts (whole patients)"


def part_patients(patients: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """The patients of part ``part_id`` of ``num_parts`` by :data:`PART_RULE`."""
    ordered = sorted(set(patients), key=natural_key)
    return ordered[part_id::num_parts]


def select_part(inputs: Sequence[T], num_parts: int = 1, part_id: int = 0) -> tuple[list[T], dict[str, Any] | None]:
    """The inputs (anything with a ``patient``) of one part and what ``summary.json`` records about it (None for
    an unsharded run). Raises ``ValueError`` for impossible options or a part without a patient."""
    if num_parts < 1:
        raise ValueError(f"--num-parts {num_parts}: must be at least 1")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id {part_id}: must be between 0 and --num-parts - 1 = {num_parts - 1}")
    if num_parts == 1:
        return list(inputs), None
    all_patients = [item.patient for item in inputs]
    chosen = set(part_patients(all_patients, num_parts, part_id))
    n_all = len(set(all_patients))
    if not chosen:
        raise ValueError(f"part {part_id} of {num_parts} holds no patient: the folder has only {n_all} "
                         "(use at most that many parts)")
    return [item for item in inputs if item.patient in chosen], {
        "num_parts": num_parts, "part_id": part_id, "rule": PART_RULE, "patients": len(chosen),
        "patients_in_folder": n_all}

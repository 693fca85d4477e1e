"""``classseg evaluate PRED_DIR --truth DIR``: score a predictions folder against ground truth.

A predictions folder is what ``python -m classseg.pipeline`` writes (any tool may write one):
``predictions.csv`` with at least ``image`` (path relative to the test folder) and ``mask_path``
(PNG relative to the predictions folder; 0 / 255 or 0 / 1), optionally ``status`` (rows other than
``ok`` are left out), ``patient``, ``gate_prob``, ``gate_verdict`` and ``final_call``. The ground truth of
``TRUTH/<image>`` is ``TRUTH/<stem>_mask.<ext>``, paired by the walker's rule
(:func:`classseg.data.walk.pair_mask`: one mask beside two images of the same stem belongs to the
image of its own extension only); images without one are counted, not scored.

Figures (per slice, per patient, overall) are those of :func:`classseg.evaluation.score_slices`, the
function behind the pipeline's own ``metrics.json``, accumulated slice by slice
(:class:`classseg.evaluation.scores.ScoreAccumulator`: no mask is kept, so a folder of any size is scored
in bounded memory); nnU-Net's ``evaluate_folder`` is the model. Masks, predicted and true, follow the one
rule of every command (:data:`classseg.data.io.MASK_RULE`): a mask that breaks it is refused in one line
naming it, never left out of the figures. Patients without a ``patient`` column are the truth folder's
patient folders by their relative path (:func:`classseg.data.walk.patient_of`).

Detection counts the slice's final call (issue 19): the ``final_call`` column (``tumor`` /
``no_tumor``, the gate rule's call: :func:`classseg.delivery.rules.final_calls`) when every scored row
has one, which is what the pipeline's ``metrics.json`` counts; a folder without it falls back to "the
predicted mask is non-empty" and says so (``detection_source`` in the output).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classseg.data.io import ImageReadError, read_mask
from classseg.data.nifti import VolumeTruth
from classseg.data.walk import pair_mask, patient_of
from classseg.evaluation.scores import ScoreAccumulator

#: What the detection figures counted (``detection_source`` of :func:`evaluate_folder`).
DETECTION_FROM_CALLS = "final_call column (the gate rule's final call)"
DETECTION_FROM_MASKS = "predicted mask non-empty (no final_call column in predictions.csv)"


def _read_predictions(pred_dir: Path) -> list[dict[str, str]]:
    path = pred_dir / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions.csv in the predictions folder")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"image", "mask_path"} - set(rows[0] if rows else {"image": "", "mask_path": ""})
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return rows


def _gate_threshold(pred_dir: Path) -> float | None:
    from classseg.utils.jsonio import read_json

    for name in ("summary.json", "metrics.json"):
        path = pred_dir / name
        if path.is_file():
            try:
                value = read_json(path).get("models", {}).get("threshold")
            except (ValueError, OSError, AttributeError):
                continue
            if value is not None:
                return float(value)
    return None


def evaluate_folder(pred_dir: str | Path | Sequence[str | Path], truth_dir: str | Path,
                    hd95_pooling: str = "pooled") -> dict[str, Any]:
    """Scores of a predictions folder: the :class:`Scores` fields, ``per_patient``, ``per_slice`` and counts.

    ``pred_dir`` may be several folders, scored as one: the parts of a sharded run
    (:mod:`classseg.evaluation.parts` checks they are). NIfTI ground truth (``<case>_mask.nii.gz``) scores the
    slices named ``<case>/z<k>`` (:class:`classseg.data.nifti.VolumeTruth`). Raises ``FileNotFoundError`` /
    ``ValueError`` naming the file for missing or unreadable inputs.
    """
    from classseg.evaluation.parts import check_no_repeats, check_parts

    pred_dirs = [Path(d) for d in ([pred_dir] if isinstance(pred_dir, (str, Path)) else pred_dir)]
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"{truth_dir}: ground-truth folder does not exist")
    parts = check_parts(pred_dirs)
    in_folders = [(d, row) for d in pred_dirs for row in _read_predictions(d)]
    check_no_repeats(in_folders)
    volumes = VolumeTruth(truth_dir)
    acc = ScoreAccumulator(hd95_pooling=hd95_pooling)
    images, probs, verdicts, finals = [], [], [], []
    skipped = {"not_ok": 0, "no_ground_truth": 0}
    for pred_dir, row in in_folders:
        if row.get("status", "ok") not in ("ok", ""):
            skipped["not_ok"] += 1
            continue
        image = Path(row["image"])
        in_volume = volumes.covers(row["image"])  # a slice <case>/z<k> of a NIfTI ground-truth volume
        truth_path = volumes.files[row["image"].rsplit("/", 1)[0]] if in_volume else pair_mask(truth_dir / image)[0]
        if truth_path is None:
            skipped["no_ground_truth"] += 1
            continue
        mask = read_mask(pred_dir / row["mask_path"])
        try:
            truth = volumes.mask(row["image"], mask.shape) if in_volume else read_mask(truth_path, shape=mask.shape)
        except ImageReadError as err:
            raise ValueError(f"{err} (predicted mask {pred_dir / row['mask_path']})") from None
        acc.add([truth], [mask], [row.get("patient") or patient_of(image, truth_dir)])  # masks dropped here
        images.append(image.as_posix())
        probs.append(float(row["gate_prob"]) if row.get("gate_prob") not in (None, "") else np.nan)
        verdicts.append(row.get("gate_verdict", ""))
        finals.append(row.get("final_call") or "")
    if not len(acc):
        raise ValueError(f"{', '.join(map(str, pred_dirs))}: no predicted slice has ground truth under {truth_dir}")
    has_gate = not np.isnan(probs).any() and all(v in ("tumor", "no_tumor") for v in verdicts)
    has_calls = all(v in ("tumor", "no_tumor") for v in finals)
    per = acc.slice_scores()
    patients = acc.patient_ids
    scored = ScoreAccumulator(hd95_pooling=hd95_pooling)  # the same numbers, with the gate where there was one
    scored.add_scores(per, patients, probs if has_gate else None,
                      [v == "tumor" for v in verdicts] if has_gate else None,
                      [v == "tumor" for v in finals] if has_calls else None)
    scores = scored.scores(_gate_threshold(pred_dirs[0]))
    called = per.predicted if not has_calls else np.array([v == "tumor" for v in finals], bool)
    per_slice = [{"image": name, "patient": pid, "tumor": bool(t), "predicted": bool(p), "called": bool(c),
                  "dice": float(d),
                  "iou": float(j), "hd95_px": None if np.isnan(h) else float(h), "truth_px": int(tp),
                  "pred_px": int(pp)}
                 for name, pid, t, p, c, d, j, h, tp, pp in zip(images, patients, per.tumor, per.predicted, called,
                                                                 per.dice, per.iou, per.hd95, per.truth_px,
                                                                 per.pred_px, strict=True)]
    source = DETECTION_FROM_CALLS if has_calls else DETECTION_FROM_MASKS
    return {**scores.to_dict(), "detection_source": source, "per_slice": per_slice,
            "pred_dir": str(pred_dirs[0]) if len(pred_dirs) == 1 else [str(d) for d in pred_dirs], "parts": parts,
            "truth_dir": str(truth_dir),
            "slices_not_ok": skipped["not_ok"], "slices_without_ground_truth": skipped["no_ground_truth"]}

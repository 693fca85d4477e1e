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

Rows that would be counted wrong are refused before scoring, with counts and examples (line numbers of
``predictions.csv``): the unfinished output of an interrupted run; rows that repeat an image with other
values (two runs concatenated); rows for images that are not in the truth folder; rows whose ``patient``
is not the truth folder's patient of that image; slices of the truth folder with ground truth that have
no row (the figures would be those of a subset). Exact repeats of a row and repeated header lines are
dropped with a warning naming their lines. ``allow_partial`` scores anyway where the predictions and the
truth folder cover different slices (rows for absent images left out, truth slices without a row not
scored); the result's ``warnings`` say so.

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
from classseg.data.walk import pair_mask, patient_of, walk_images
from classseg.evaluation.scores import ScoreAccumulator
from classseg.utils.guards import UNFINISHED_MARKER, is_unfinished

#: What the detection figures counted (``detection_source`` of :func:`evaluate_folder`).
DETECTION_FROM_CALLS = "final_call column (the gate rule's final call)"
DETECTION_FROM_MASKS = "predicted mask non-empty (no final_call column in predictions.csv)"


def _examples(items: list[str], n: int = 3) -> str:
    return "; ".join(items[:n]) + ("; ..." if len(items) > n else "")


def _read_predictions(pred_dir: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of ``predictions.csv`` (each with its line number under ``"_line"``), one per image, and
    the warnings about rows dropped (exact repeats, repeated header lines). Rows that repeat an image with
    other values are refused (``ValueError`` naming the lines)."""
    path = pred_dir / "predictions.csv"
    if is_unfinished(pred_dir):
        raise ValueError(f"{pred_dir} is the unfinished output of an interrupted run (it carries "
                         f"{UNFINISHED_MARKER}); its files are not trusted: run the same pipeline command again")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions.csv in the predictions folder")
    # file names are bytes on POSIX: undecodable ones travel as surrogates, as the pipeline wrote them
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = []
        for row in reader:
            rows.append({**row, "_line": str(reader.line_num)})
    missing = {"image", "mask_path"} - set(header)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    warnings: list[str] = []
    headers = [r["_line"] for r in rows if all(r.get(k) == k for k in header)]
    if headers:
        warnings.append(f"{path}: {len(headers)} repeated header line(s) dropped (line(s) {', '.join(headers[:5])}; "
                        "two files concatenated?)")
        rows = [r for r in rows if not all(r.get(k) == k for k in header)]
    first: dict[str, dict[str, str]] = {}
    repeats, conflicts = [], []
    for row in rows:
        seen = first.get(row["image"])
        if seen is None:
            first[row["image"]] = row
        elif {k: v for k, v in seen.items() if k != "_line"} == {k: v for k, v in row.items() if k != "_line"}:
            repeats.append(f"line {row['_line']} repeats line {seen['_line']} ({row['image']})")
        else:
            conflicts.append(f"lines {seen['_line']} and {row['_line']} ({row['image']})")
    if conflicts:
        raise ValueError(f"{path}: {len(conflicts)} image(s) have several rows that disagree ({_examples(conflicts)}): "
                         "predictions of different runs concatenated? Keep one row per image")
    if repeats:
        warnings.append(f"{path}: {len(repeats)} duplicated row(s) dropped, each scored once ({_examples(repeats)})")
    return list(first.values()), warnings


def _check_coverage(rows: list[dict[str, str]], truth_dir: Path, allow_partial: bool,
                    volumes: VolumeTruth | None = None) -> tuple[set[str], list[str]]:
    """The images of ``rows`` that are absent from ``truth_dir`` (neither the image nor its mask there, nor a
    slice of one of its NIfTI truth ``volumes``), and warnings. Refused (``ValueError`` with counts) unless
    ``allow_partial``: absent images, and truth slices with ground truth that have no row; always refused:
    a ``patient`` column that names another patient than the truth folder does."""
    found, _ = walk_images(truth_dir)
    truth = {item.relative.as_posix(): item for item in found}
    absent = sorted(r["image"] for r in rows
                    if r["image"] not in truth and not (volumes is not None and volumes.covers(r["image"]))
                    and pair_mask(truth_dir / r["image"])[0] is None)
    listed = {r["image"] for r in rows}
    unlisted = sorted(name for name, item in truth.items() if item.mask_path is not None and name not in listed)
    other = [f"{r['image']} (line {r['_line']}): {r['patient']!r} in predictions.csv, {truth[r['image']].patient!r} "
             f"in {truth_dir}" for r in rows
             if r.get("patient") and r["image"] in truth and len(Path(r["image"]).parts) > 1
             and r["patient"] != truth[r["image"]].patient]  # a loose slice's patient is its folder's own name
    if other:
        raise ValueError(f"{len(other)} row(s) of predictions.csv name another patient than the truth folder "
                         f"({_examples(other)}): per-patient figures would group the slices wrongly; is --truth "
                         "the folder these predictions were made on?")
    problems = []
    if absent:
        problems.append(f"{len(absent)} of {len(rows)} row(s) of predictions.csv name images that are not in "
                        f"{truth_dir} ({_examples(absent)})")
    if unlisted:
        patients = sorted({truth[name].patient for name in unlisted})
        problems.append(f"{len(unlisted)} slice(s) with ground truth in {truth_dir}, of {len(patients)} patient(s) "
                        f"({_examples(patients)}), have no row in predictions.csv")
    if problems and not allow_partial:
        raise ValueError("; ".join(problems) + ": the figures would be those of another set of slices; is --truth "
                         "the folder these predictions were made on? (--allow-partial scores the slices both have)")
    return set(absent), [f"partial: {p}" for p in problems]


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
                    hd95_pooling: str = "pooled", allow_partial: bool = False) -> dict[str, Any]:
    """Scores of a predictions folder: the :class:`Scores` fields, ``per_patient``, ``per_slice``, counts and
    ``warnings`` (rows dropped, a partial score).

    ``pred_dir`` may be several folders, scored as one: the parts of a sharded run
    (:mod:`classseg.evaluation.parts` checks they are). NIfTI ground truth (``<case>_mask.nii.gz``) scores the
    slices named ``<case>/z<k>`` (:class:`classseg.data.nifti.VolumeTruth`). Raises ``FileNotFoundError`` /
    ``ValueError`` naming the file for missing or unreadable inputs and for rows that would be counted wrong
    (see the module docstring; ``allow_partial`` for differing coverage).
    """
    from classseg.evaluation.parts import check_no_repeats, check_parts

    pred_dirs = [Path(d) for d in ([pred_dir] if isinstance(pred_dir, (str, Path)) else pred_dir)]
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"{truth_dir}: ground-truth folder does not exist")
    parts = check_parts(pred_dirs)
    in_folders, warnings = [], []
    for folder in pred_dirs:
        folder_rows, folder_warnings = _read_predictions(folder)
        in_folders += [(folder, row) for row in folder_rows]
        warnings += folder_warnings
    check_no_repeats(in_folders)
    volumes = VolumeTruth(truth_dir)
    absent, partial = _check_coverage([row for _, row in in_folders], truth_dir, allow_partial, volumes)
    warnings += partial
    in_folders = [(folder, row) for folder, row in in_folders if row["image"] not in absent]
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
            "slices_not_ok": skipped["not_ok"], "slices_without_ground_truth": skipped["no_ground_truth"],
            "rows_for_absent_images": len(absent), "warnings": warnings}

"""The one results schema: :class:`Scores`, written by every stage and read by every table.

A set of slices is scored once, by :func:`score_slices`, from what a user receives: a mask per slice
at the slice's original size and, when a gate (classifier or joint class output) took part, its
P(tumor). The same names mean the same thing in every ``metrics.json``, ``results.csv``,
``classseg compare`` / ``classseg report`` table and in ``classseg evaluate --json``:

* Detection, ``tp`` ``fp`` ``tn`` ``fn`` ``accuracy`` ``sensitivity`` ``specificity`` ``precision``
  ``f1_macro``: the slice's final call (``calls=``, :func:`classseg.delivery.rules.final_calls`) under
  the gate rule that delivered the masks: for rules ``mask`` and ``gate_and_mask`` (and anything
  without a gate: a segmenter) this is "the delivered mask is non-empty"; for rule ``gate`` it is the
  gate's verdict (a passed slice with an empty mask is called tumor). Without ``calls`` (a folder
  written without a ``final_call`` column) it is "the delivered mask is non-empty". A classifier alone:
  the verdict ``P(tumor) >= threshold``. ``precision == tp / (tp + fp)`` always (a slice figure, never
  pixels). The pipeline's ``metrics.json``, ``classseg evaluate``, the training runs and the gate
  selection (:func:`classseg.training.selection.choose_gate`) all count these same calls.
* Gate, ``gate_*`` (same definitions): the gate's own verdict, reported beside the delivered masks'
  figures; ``gate_auc`` is the AUC of its P(tumor). Absent (None) when no gate took part.
* Segmentation (:func:`classseg.evaluation.segmentation.segmentation_figures`): at the slice's original
  size, distances in pixels of that size: ``dice_tumor_slices`` ``iou_tumor_slices``
  ``hd95_detected_px`` ``missed_tumor_slices`` ``hd95_with_miss_penalty_px`` ``dice_end_to_end``
  ``iou_end_to_end`` ``dice_per_patient`` ``dice_global`` ``pixel_precision`` ``pixel_recall``
  ``false_positive_slices``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from classseg.evaluation.classification import detection
from classseg.evaluation.segmentation import figures_from_slice_scores, segmentation_figures

#: Where a mask was scored; every stage scores at the slice's original size.
RESOLUTION = "original slice size"


@dataclass
class Scores:
    """Figures of one set of slices (see the module docstring for the definitions). None = not defined."""

    n_slices: int = 0
    n_tumor_slices: int = 0
    # detection of the delivered call
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    accuracy: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    precision: float | None = None
    f1_macro: float | None = None
    auc: float | None = None  # only when the delivered call is a thresholded probability (a classifier)
    # the gate's own verdict
    gate_threshold: float | None = None
    gate_tp: int | None = None
    gate_fp: int | None = None
    gate_tn: int | None = None
    gate_fn: int | None = None
    gate_accuracy: float | None = None
    gate_sensitivity: float | None = None
    gate_specificity: float | None = None
    gate_precision: float | None = None
    gate_auc: float | None = None
    # segmentation at the original slice size
    dice_tumor_slices: float | None = None
    iou_tumor_slices: float | None = None
    hd95_detected_px: float | None = None
    missed_tumor_slices: int | None = None
    hd95_with_miss_penalty_px: float | None = None
    dice_end_to_end: float | None = None
    iou_end_to_end: float | None = None
    dice_per_patient: float | None = None
    dice_global: float | None = None
    pixel_precision: float | None = None
    pixel_recall: float | None = None
    false_positive_slices: int | None = None
    hd95_pooling: str | None = None
    resolution: str | None = None
    per_patient: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, per_patient: bool = True) -> dict[str, Any]:
        """Plain dict for JSON (``per_patient`` list optional)."""
        out = asdict(self)
        if not per_patient:
            out.pop("per_patient")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scores:
        """The schema's fields of ``data`` (other keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


#: Schema field names, in order.
SCORE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Scores))

#: Figures that are numbers (everything but the labels and the per-patient list).
NUMERIC_FIELDS: tuple[str, ...] = tuple(n for n in SCORE_FIELDS if n not in ("hd95_pooling", "resolution",
                                                                            "per_patient"))

#: Display label of each figure, with its unit where it has one (tables, metrics.md).
LABELS: dict[str, str] = {
    "n_slices": "slices", "n_tumor_slices": "tumor slices",
    "tp": "TP (slices)", "fp": "FP (slices)", "tn": "TN (slices)", "fn": "FN (slices)",
    "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
    "precision": "precision (slices)", "f1_macro": "F1 macro", "auc": "AUC",
    "gate_threshold": "gate threshold", "gate_tp": "gate TP", "gate_fp": "gate FP", "gate_tn": "gate TN",
    "gate_fn": "gate FN", "gate_accuracy": "gate accuracy", "gate_sensitivity": "gate sensitivity",
    "gate_specificity": "gate specificity", "gate_precision": "gate precision", "gate_auc": "gate AUC",
    "dice_tumor_slices": "Dice (tumor slices)", "iou_tumor_slices": "IoU (tumor slices)",
    "hd95_detected_px": "HD95 px (detected tumor slices)", "missed_tumor_slices": "missed tumor slices",
    "hd95_with_miss_penalty_px": "HD95 px (miss = diagonal)",
    "dice_end_to_end": "Dice end to end (all slices)", "iou_end_to_end": "IoU end to end (all slices)",
    "dice_per_patient": "Dice per patient (volume)", "dice_global": "Dice (pixels pooled)",
    "pixel_precision": "pixel precision (tumor slices)", "pixel_recall": "pixel recall (tumor slices)",
    "false_positive_slices": "false-positive slices",
}

#: One line saying how the figures were made, for the notes of every table.
DEFINITIONS = ("Detection figures (accuracy, sensitivity, specificity, precision, TP/FP/TN/FN) are per slice "
               "and score the delivered call: mask non-empty for models that output masks, P(tumor) >= "
               "threshold for a classifier; gate_* score the gate's own verdict. Masks are scored at the "
               "slice's original size; HD95 in pixels of that size, both directed distances pooled (medpy), "
               "averaged over tumor slices with a non-empty prediction (missed slices counted apart); Dice "
               "end to end counts empty vs empty as 1; Dice per patient is the mean volume Dice.")


def score_slices(truths: Sequence[np.ndarray], masks: Sequence[np.ndarray], patient_ids: Sequence[str],
                 gate_prob: Sequence[float] | np.ndarray | None = None, gate_threshold: float | None = None,
                 gate_verdict: Sequence[bool] | np.ndarray | None = None, hd95_pooling: str = "pooled",
                 calls: Sequence[bool] | np.ndarray | None = None) -> Scores:
    """Score delivered ``masks`` against ``truths`` (both at the slice's original size, (H_i, W_i)).

    ``calls``: each slice's final call under the gate rule (:func:`classseg.delivery.rules.final_calls`);
    the detection figures count them (None: "the delivered mask is non-empty").
    ``gate_prob`` / ``gate_threshold``: the gate's P(tumor) and threshold when a gate took part
    (``gate_*`` figures; the verdict is ``gate_prob >= gate_threshold`` unless ``gate_verdict`` gives it).
    This is the one scoring function behind the pipeline's ``metrics.json``,
    ``classseg evaluate`` and the training runs' test figures.
    """
    truths = [np.asarray(t) for t in truths]
    masks = [np.asarray(m) for m in masks]
    if not (len(truths) == len(masks) == len(patient_ids)):
        raise ValueError(f"length mismatch: {len(truths)} truths, {len(masks)} masks, {len(patient_ids)} ids")
    seg = segmentation_figures(masks, truths, patient_ids, hd95_pooling=hd95_pooling)
    y_true = np.array([bool((t >= 0.5).any()) for t in truths], bool)
    called = np.array([bool((m >= 0.5).any()) for m in masks], bool) if calls is None else np.asarray(calls, bool)
    if len(called) != len(truths):
        raise ValueError(f"length mismatch: {len(called)} calls for {len(truths)} slices")
    det = detection(y_true, called)
    values: dict[str, Any] = {k: v for k, v in {**det, **seg}.items() if k in SCORE_FIELDS}
    values["resolution"] = RESOLUTION
    if gate_prob is not None or gate_verdict is not None:
        threshold = 0.5 if gate_threshold is None else float(gate_threshold)
        prob = None if gate_prob is None else np.asarray(gate_prob, float)
        verdict = np.asarray(gate_verdict, bool) if gate_verdict is not None else prob >= threshold
        gate = detection(y_true, verdict)
        values.update({f"gate_{k}": gate[k] for k in ("tp", "fp", "tn", "fn", "accuracy", "sensitivity",
                                                       "specificity", "precision")})
        values["gate_threshold"] = gate_threshold
        if prob is not None and len(np.unique(y_true)) == 2:
            from sklearn.metrics import roc_auc_score

            values["gate_auc"] = float(roc_auc_score(y_true, prob))
    return Scores(**values)


def classifier_scores(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> Scores:
    """Schema figures of a classifier alone: its verdict is the delivered call (``auc`` of its P(tumor))."""
    from classseg.evaluation.classification import classification_metrics

    m = classification_metrics(y_true, y_prob, threshold)
    return Scores.from_dict({**m, "n_slices": m["n"], "n_tumor_slices": m["tp"] + m["fn"]})


def read_truths(mask_paths: Sequence[str | None], shapes: Sequence[tuple[int, int]] | None = None
                ) -> list[np.ndarray]:
    """Ground-truth masks at their original size from ``mask_path`` values (a frame's column).

    A missing path (None / NaN / "") gives an empty mask of ``shapes[i]``, which must then be given.
    """
    from classseg.data.io import read_mask

    out = []
    for i, path in enumerate(mask_paths):
        if path is None or (isinstance(path, float) and np.isnan(path)) or path == "":
            if shapes is None:
                raise ValueError(f"slice {i} has no mask path and no shape was given")
            out.append(np.zeros(tuple(shapes[i])[:2], np.uint8))
        else:
            out.append(read_mask(path))
    return out


# ------------------------------------------------------------------------------- streaming (issue 20)
class ScoreAccumulator:
    """:func:`score_slices` fed a patient (or a slice) at a time, holding no mask.

    :meth:`add` scores the slices given (Dice, IoU, HD95, pixel counts: :func:`slice_scores`) and keeps
    only those numbers, the patient, the final call (``calls=``) and the gate's P(tumor) / verdict per
    slice (about 80 bytes a slice in typed arrays); :meth:`scores` gives the :class:`Scores` that
    :func:`score_slices` gives on all the slices at once, to the last bit (same values, same order, same
    NumPy reductions). What the pipeline and ``classseg evaluate`` use,
    so memory does not grow with the masks of a folder.
    """

    _FIELDS = ("dice", "iou", "hd95", "inter", "pred_px", "truth_px", "diagonal")

    def __init__(self, hd95_pooling: str = "pooled") -> None:
        from array import array

        self.hd95_pooling = hd95_pooling
        self._values = {k: array("d") for k in self._FIELDS}
        self._tumor, self._predicted = array("b"), array("b")
        self._codes = array("q")
        self._names: dict[str, int] = {}
        self._prob, self._verdict = array("d"), array("b")
        self._gate: bool | None = None
        self._calls = array("b")
        self._has_calls: bool | None = None

    def __len__(self) -> int:
        return len(self._tumor)

    def add(self, truths: Sequence[np.ndarray], masks: Sequence[np.ndarray], patient_ids: Sequence[str],
            gate_prob: Sequence[float] | None = None, gate_verdict: Sequence[bool] | None = None,
            calls: Sequence[bool] | None = None) -> Any:
        """Score ``masks`` against ``truths`` (lists of (H_i, W_i) arrays) and keep the per-slice numbers;
        returns their :class:`~classseg.evaluation.segmentation.SliceScores`. ``calls``: the final calls
        (as in :func:`score_slices`), for every slice added or for none."""
        from classseg.evaluation.segmentation import slice_scores

        s = slice_scores(list(masks), list(truths), hd95_pooling=self.hd95_pooling)
        self.add_scores(s, patient_ids, gate_prob, gate_verdict, calls)
        return s

    def add_scores(self, s: Any, patient_ids: Sequence[str], gate_prob: Sequence[float] | None = None,
                   gate_verdict: Sequence[bool] | None = None, calls: Sequence[bool] | None = None) -> None:
        """Keep per-slice figures computed elsewhere (same order as the slices are meant to be scored)."""
        n = len(s.dice)
        if len(patient_ids) != n or (calls is not None and len(calls) != n):
            raise ValueError(f"length mismatch: {n} slices but {len(patient_ids)} patient ids"
                             + ("" if calls is None else f" and {len(calls)} calls"))
        gate = gate_prob is not None or gate_verdict is not None
        if n and self._gate is not None and gate != self._gate:
            raise ValueError("gate figures given for some slices only")
        if n and self._has_calls is not None and (calls is not None) != self._has_calls:
            raise ValueError("final calls given for some slices only")
        if n:
            self._gate = gate
            self._has_calls = calls is not None
        if calls is not None:
            self._calls.extend(np.asarray(calls, bool).astype(int).tolist())
        for k in self._FIELDS:
            self._values[k].extend(np.asarray(getattr(s, k), np.float64).tolist())
        self._tumor.extend(np.asarray(s.tumor, bool).astype(int).tolist())
        self._predicted.extend(np.asarray(s.predicted, bool).astype(int).tolist())
        for pid in patient_ids:
            self._codes.append(self._names.setdefault(str(pid), len(self._names)))
        if gate:
            prob = np.full(n, np.nan) if gate_prob is None else np.asarray(gate_prob, np.float64)
            self._prob.extend(prob.tolist())
            if gate_verdict is None:
                self._verdict.extend([-1] * n)  # decided by the threshold in scores()
            else:
                self._verdict.extend(np.asarray(gate_verdict, bool).astype(int).tolist())

    @property
    def patient_ids(self) -> list[str]:
        """Each slice's patient, in the order added."""
        names = list(self._names)
        return [names[c] for c in self._codes]

    @property
    def calls(self) -> np.ndarray | None:
        """The final calls given (None when none were)."""
        return np.asarray(self._calls, np.int8).astype(bool) if self._has_calls else None

    @property
    def gate_verdicts(self) -> np.ndarray | None:
        """The gate verdicts given (None when no gate took part)."""
        return np.asarray(self._verdict, np.int8).astype(bool) if self._gate else None

    def slice_scores(self) -> Any:
        """The per-slice figures as one :class:`~classseg.evaluation.segmentation.SliceScores`."""
        from classseg.evaluation.segmentation import SliceScores

        arrays = {k: np.frombuffer(self._values[k], np.float64).copy() if len(self) else np.zeros(0)
                  for k in self._FIELDS}
        return SliceScores(tumor=np.asarray(self._tumor, np.int8).astype(bool),
                           predicted=np.asarray(self._predicted, np.int8).astype(bool), **arrays)

    def scores(self, gate_threshold: float | None = None) -> Scores:
        """The :class:`Scores` of every slice added, as :func:`score_slices` computes them."""
        s = self.slice_scores()
        seg = figures_from_slice_scores(s, self.patient_ids, self.hd95_pooling)
        calls = self.calls
        det = detection(s.tumor, s.predicted if calls is None else calls)
        values: dict[str, Any] = {k: v for k, v in {**det, **seg}.items() if k in SCORE_FIELDS}
        values["resolution"] = RESOLUTION
        if self._gate:
            threshold = 0.5 if gate_threshold is None else float(gate_threshold)
            prob = np.asarray(self._prob, np.float64)
            given = np.asarray(self._verdict, np.int8)
            verdict = np.where(given >= 0, given == 1, prob >= threshold)
            gate = detection(s.tumor, verdict)
            values.update({f"gate_{k}": gate[k] for k in ("tp", "fp", "tn", "fn", "accuracy", "sensitivity",
                                                           "specificity", "precision")})
            values["gate_threshold"] = gate_threshold
            if not np.isnan(prob).any() and len(np.unique(s.tumor)) == 2:
                from sklearn.metrics import roc_auc_score

                values["gate_auc"] = float(roc_auc_score(s.tumor, prob))
        return Scores(**values)

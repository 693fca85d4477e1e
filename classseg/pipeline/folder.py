"""Predict a folder: :func:`predict_folder` runs the pipeline over every slice of a test folder and writes
its results; ``python -m classseg.pipeline`` (:mod:`classseg.pipeline.cli`, ``classseg predict``) and
``classseg run-all`` (phase 3) both call it with a :class:`FolderPredictionConfig`.

Writes ``predictions.csv`` (:data:`classseg.pipeline.outputs.PREDICTION_COLUMNS`), ``masks/``,
``overlays/``, ``skipped.csv``, ``summary.json`` and, where ground truth exists, ``metrics.json`` /
``metrics.md``: :class:`classseg.evaluation.Scores` of the delivered masks (``gated``; detection counts
the gate rule's final calls, the ``final_call`` column) and of the
segmenter on every slice (``segment_all``), the numbers of :func:`classseg.evaluation.score_slices`,
the function ``classseg evaluate`` uses.

Streaming (issue 20): patients (folders) are processed one at a time. A patient's slices go through
:meth:`ClassSegPipeline.infer` in one call when a card normalises per patient or asks for the 3D filter
(both need the whole patient), else in chunks of whole batches (:func:`chunk_size`; with raw pixels a
slice's result does not depend on the other slices). Slices are held at the models' input size where
that is exact (one input size for all models, slices at least that large). Masks, overlays and
per-slice scores are then made one slice at a time and only the per-slice numbers are kept
(:class:`classseg.evaluation.scores.ScoreAccumulator`); ``predictions.csv`` rows go to a temporary
file as they come. Memory holds one chunk (or one patient) of slices at model size, whatever the folder
holds in all (``benchmarks/pipeline_memory.py``); progress is shown per slice.

Reliability: ``out`` may not lie inside ``test_dir`` nor inside any folder reached from it through
symbolic links (unless ``out_inside_test_dir``); it carries :data:`classseg.utils.guards.OUTPUT_MARKER` from
the start and every PNG it gets is tagged (:func:`classseg.data.io.tag_png`), so neither it nor any earlier
output is ever read back as input (the walker skips them; ``summary.json``'s ``data.outputs_not_read``);
it is locked while the run writes it (:class:`classseg.utils.atomic.OutputLock`: a second run
into the same ``out`` is refused in one line naming the first, by pid and host); a finished output is
replaced only with ``overwrite``. Each model is checked against its role (:mod:`classseg.models.check`)
and its card against the model (:func:`classseg.models.card.check_card`: another model's card is refused;
a missing card or one without a hash is a warning, on the console and in ``summary.json``). Ground
truth follows the one mask rule (:data:`classseg.data.io.MASK_RULE`); when a mask is refused no
``metrics.json`` is written (it would score a subset) and :attr:`FolderResult.exit_code` is 1. The
output folder is marked unfinished (:func:`classseg.utils.guards.mark_unfinished`) until ``predictions.csv``
and ``summary.json`` are written, and a rerun replaces an unfinished folder. Every CSV / JSON / Markdown
file is written atomically.

Refusals (bad options, an output that may not be written, missing or mismatched models) raise
:class:`PredictionRefused`, a ``SystemExit`` with the one line the command prints; Ctrl-C while the
patients are processed raises :class:`FolderInterrupted` (a ``KeyboardInterrupt``) saying how far it got.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from classseg.data.io import MASK_RULE, ImageReadError
from classseg.data.walk import WRITTEN_BY_CLASSSEG, grouping, output_folder_reason
from classseg.evaluation.scores import ScoreAccumulator
from classseg.evaluation.segmentation import slice_scores, to_original_size
from classseg.models.check import ModelCheckError
from classseg.pipeline.core import ClassSegPipeline
from classseg.pipeline.inputs import InputSlice, find_inputs, output_names, read_input_image, read_input_mask
from classseg.pipeline.models import model_info, resize_to
from classseg.pipeline.outputs import (
    PREDICTION_COLUMNS,
    draw_overlay,
    metrics_markdown,
    per_slice_rate,
    prediction_note,
    write_csv,
    write_png,
)
from classseg.pipeline.shards import select_part
from classseg.pipeline.volumes import write_volume_outputs
from classseg.utils.atomic import LOCK_NAME, OutputLock, OutputLockError, atomic_write_text, temp_path_for
from classseg.utils.environment import environment_info
from classseg.utils.guards import (
    OUTPUT_MARKER,
    UNFINISHED_MARKER,
    OutputError,
    check_can_create,
    check_not_inside,
    is_unfinished,
    mark_finished,
    mark_output,
    mark_unfinished,
)
from classseg.utils.jsonio import write_json
from classseg.utils.paths import MODELS_ENV, default_models_dir
from classseg.utils.runtime import available_cores

TRAIN_HINT = ("train them first: `classseg run-all` (everything), or `classseg train-classifiers` and "
              "`classseg train-segmenter`, then put the chosen models at {dir}/classifier.keras and "
              "{dir}/segmenter.keras (or pass --classifier/--segmenter, or set $" + MODELS_ENV + ")")

#: What the pipeline writes into --out; --overwrite removes these (and nothing else) from a finished output.
OUTPUT_ENTRIES = ("predictions.csv", "skipped.csv", "summary.json", "metrics.json", "metrics.md", "masks",
                  "overlays", "onnx", UNFINISHED_MARKER, OUTPUT_MARKER, "volumes.csv", "viewer")



class PredictionRefused(SystemExit):
    """A folder prediction refused before or while it starts, with the one line the command prints."""


class FolderInterrupted(KeyboardInterrupt):
    """Ctrl-C while the patients were processed: no ``predictions.csv`` was written, ``out`` is marked
    unfinished; ``str()`` is the one line the command prints."""

    def __init__(self, done: int, patients: int, out: Path) -> None:
        super().__init__(f"interrupted (Ctrl-C) after {done} of {patients} patients; no predictions.csv was written "
                         f"and {out} is marked unfinished: run the same command again to replace it")
        self.done, self.patients, self.out = done, patients, out


@dataclass(frozen=True)
class FolderPredictionConfig:
    """The options of ``python -m classseg.pipeline`` (``classseg predict``), with their defaults.

    - ``test_dir``: folder of MRI slices, searched recursively (``<stem>_mask.<ext>`` = ground truth).
    - ``out``: output folder (None: ``./classseg_out_<timestamp>``); never inside ``test_dir``.
    - ``classifier`` / ``segmenter``: ``.keras`` / ``.onnx`` models (None: ``classifier.keras`` /
      ``segmenter.keras`` of :func:`classseg.utils.paths.default_models_dir`); or ``joint``, one model with class
      and mask outputs, instead of both.
    - ``threshold`` / ``gate_rule``: None = the gate's model card (else its JSON sidecar / 0.5, ``gate``).
    - ``overlays``: write overlay PNGs; ``overwrite``: replace the finished output of an earlier run.
    - ``out_inside_test_dir``: allow ``out`` inside ``test_dir`` (refused otherwise); its files are never
      read as inputs (nor is any pipeline output folder or PNG the pipeline wrote, whatever this says).
    - ``num_parts`` / ``part_id``: predict only part ``part_id`` (0-based) of ``num_parts``, whole patients
      (:func:`classseg.pipeline.shards.select_part`); ``classseg evaluate PART...`` scores the parts together.

    Where the folder has ground truth the segmenter is also scored on every slice (``segment_all``).
    """

    test_dir: Path
    out: Path | None = None
    classifier: Path | None = None
    segmenter: Path | None = None
    joint: Path | None = None
    threshold: float | None = None
    gate_rule: str | None = None
    batch_size: int = 16
    backend: str = "keras"
    overlays: bool = True
    overwrite: bool = False
    out_inside_test_dir: bool = False
    num_parts: int = 1
    part_id: int = 0


@dataclass
class FolderResult:
    """What :func:`predict_folder` wrote: paths, counts, ``summary.json``'s content and ``metrics.json``'s
    (None when the folder has no ground truth or a mask was refused)."""

    out: Path
    images: int
    ok: int
    called_tumor: int
    patients: int
    with_ground_truth: int
    truth_refused: list[str]
    unpaired: int
    summary: dict[str, Any]
    metrics: dict[str, Any] | None
    test_dir: Path

    @property
    def predictions_csv(self) -> Path:
        """``predictions.csv``: one row per image."""
        return self.out / "predictions.csv"

    @property
    def summary_json(self) -> Path:
        """``summary.json``: data, models, timing, warnings, environment."""
        return self.out / "summary.json"

    @property
    def metrics_json(self) -> Path | None:
        """``metrics.json`` (with ``metrics.md``), or None when none was written."""
        return self.out / "metrics.json" if self.metrics is not None else None

    @property
    def exit_code(self) -> int:
        """0, or 1 when no image could be read or a ground-truth mask was refused (no metrics.json)."""
        return 1 if self.ok == 0 or self.truth_refused else 0

    def announce(self) -> int:
        """Print the run's closing lines (errors and notes on stderr, the one-line summary on stdout), as
        ``python -m classseg.pipeline`` does; return :attr:`exit_code`."""
        if self.truth_refused:
            n = len(self.truth_refused)
            print(f"error: {n} ground-truth mask(s) could not be used (first: {self.truth_refused[0]}); predictions "
                  f"are written but no metrics.json, since the other slices alone would be a filtered subset: fix "
                  f"the masks and score with `classseg evaluate {self.out} --truth {self.test_dir}`", file=sys.stderr)
        if self.unpaired:
            print(f"note: {self.unpaired} image(s) have ambiguous ground truth and are not scored (their reason is "
                  f"in {self.predictions_csv}, column error)", file=sys.stderr)
        volumes = self.summary["data"].get("volumes")
        if volumes:  # NIfTI cases: one mask volume each, status per case
            print(f"note: {volumes['ok']}/{volumes['cases']} NIfTI case(s) written as masks/<case>_mask.nii.gz; "
                  f"status per case in {self.out / 'volumes.csv'}", file=sys.stderr)
        ms = self.summary["timing"]["gated"]["ms_per_slice"]
        print(f"{self.ok}/{self.images} slices processed, {self.images - self.ok} unreadable; "
              f"{self.called_tumor} called tumor; {ms:.1f} ms/slice (models), results in {self.out}")
        if self.ok == 0:
            print(f"error: none of the {self.images} images could be read (see {self.predictions_csv})",
                  file=sys.stderr)
        return self.exit_code


def _resolve_out(out: Path | None, test_dir: Path, inside_allowed: bool = False) -> Path:
    """The output folder's absolute path; refused inside the test folder (also through symbolic links)
    unless ``inside_allowed``. Nothing is created or removed here (see :func:`_prepare_out`, under the
    output lock)."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path.cwd() / f"classseg_out_{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = Path.cwd() / f"classseg_out_{stamp}_{n}"
    resolved = out.resolve()
    if resolved == test_dir:
        raise PredictionRefused(f"refusing to write into the test folder itself: output {resolved}; choose --out "
                                "elsewhere")
    if not inside_allowed:
        hint = ("choose --out elsewhere (or pass --out-inside-test-dir: the output is then never read as "
                "input)")
        if test_dir in resolved.parents:
            raise PredictionRefused(f"refusing to write into the test folder: output {resolved} is inside "
                                    f"{test_dir}; {hint}")
        try:  # also patient folders reached through symbolic links
            check_not_inside(resolved, test_dir, "the test folder")
        except OutputError as err:
            raise PredictionRefused(str(err).replace("choose --out elsewhere", hint)) from None
    if resolved.exists() and not resolved.is_dir():
        raise PredictionRefused(f"output {resolved} already exists and is not a folder; choose another --out")
    return resolved


def _clear(folder: Path, names: Sequence[str]) -> None:
    for name in names:
        child = folder / name
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.exists() or child.is_symlink():
            child.unlink()


def _prepare_out(out: Path, overwrite: bool) -> None:
    """With the output lock held: empty an unfinished output (a dead run's), refuse a finished one unless
    ``overwrite`` (then remove only what the pipeline writes), refuse any other non-empty folder."""
    present = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if not present:
        return
    if is_unfinished(out):  # the lock is ours, so the run that left it has ended
        _clear(out, present)
        print(f"note: {out} held the unfinished output of an interrupted run; replacing it", file=sys.stderr)
        return
    foreign = [name for name in present if name not in OUTPUT_ENTRIES and not name.startswith(".")]
    if not overwrite:
        hint = ("pass --overwrite to replace it, or choose another --out" if not foreign and
                ("summary.json" in present or "predictions.csv" in present) else "choose another --out")
        raise PredictionRefused(f"output {out} already exists and is not an empty folder; {hint}")
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise PredictionRefused(f"output {out} holds files the pipeline did not write ({shown}); --overwrite replaces "
                         "only a pipeline output: choose another --out")
    _clear(out, present)
    print(f"note: --overwrite: replacing the earlier output in {out}", file=sys.stderr)


def _resolve_models(config: FolderPredictionConfig) -> dict[str, Path]:
    """The model files of ``config`` (defaults: the models folder's), each checked to exist."""
    if config.joint is not None:
        if config.classifier is not None or config.segmenter is not None:
            raise PredictionRefused("give either --joint or --classifier/--segmenter, not both")
        models = {"joint": config.joint}
    else:
        folder = default_models_dir()
        models = {"classifier": config.classifier or folder / "classifier.keras",
                  "segmenter": config.segmenter or folder / "segmenter.keras"}
    for kind, path in models.items():
        if not Path(path).is_file():
            hint = (TRAIN_HINT.format(dir=default_models_dir()) if kind != "joint"
                    else "train one with `classseg train-joint`")
            raise PredictionRefused(f"{kind} model not found: {path}; {hint}")
    return models


def _model_size(pipe: ClassSegPipeline) -> tuple[int, int] | None:
    """The one square input size of every model, or None (then slices are kept at their own size)."""
    sizes = {tuple(pm.input_size) for pm in pipe.models.values()}
    size = next(iter(sizes)) if len(sizes) == 1 else None
    return size if size is not None and size[0] == size[1] else None


def _load_small(item: InputSlice, size: tuple[int, int] | None
                ) -> tuple[np.ndarray | None, tuple[int, int] | None, str]:
    """(the slice for the models, its original (H, W), error or ''). The slice is resized to the models'
    ``size`` when it is at least that large (exact: the models would resize it so anyway, and the masks,
    resized back to the original size by nearest neighbour, are the same); else kept as read."""
    try:
        image = read_input_image(item)
    except (ImageReadError, OSError) as err:
        return None, None, str(err)
    shape = image.shape[:2]
    if size is not None and shape[0] >= size[0] and shape[1] >= size[1]:
        image = resize_to(image, size)
    return image, shape, ""


@dataclass
class _Collected:
    """What is kept across patients: counts, per-slice scores (numbers only) and the open CSV of rows."""

    writer: Any = None  # csv.DictWriter on the temporary predictions.csv
    rows: int = 0
    ok: int = 0
    called_tumor: int = 0
    gated: ScoreAccumulator = field(default_factory=ScoreAccumulator)
    segment_all: ScoreAccumulator = field(default_factory=ScoreAccumulator)
    truth_refused: list[str] = field(default_factory=list)  # ground truth that the mask rule refused
    unpaired: int = 0  # images whose ground truth the walker did not pair (ambiguous)
    gated_s: float = 0.0
    slices: int = 0
    segment_all_s: float = 0.0  # over the patients with ground truth (where segment-all is run)
    segment_all_slices: int = 0
    extra_pass_s: float = 0.0  # the evaluation-only segmenter pass on slices the rule did not segment


def _finish_slice(item: InputSlice, shape: tuple[int, int], delivered: np.ndarray,
                  all_mask: np.ndarray | None, verdict: bool, segmented: bool, final: bool, prob: float, note: str,
                  mask_name: Path, out: Path, overlays: bool) -> tuple[dict[str, Any], Any, Any, str]:
    """One slice's outputs: mask (and overlay) PNG at the original size, its row, its scores against the
    ground truth ((gated, segment-all) SliceScores, or None) and why ground truth was refused ('' if not)."""
    mask = to_original_size([delivered], [shape])[0]
    write_png(out / "masks" / mask_name, mask * np.uint8(255))
    row = dict.fromkeys(PREDICTION_COLUMNS, "")
    row.update(image=item.relative.as_posix(), patient=item.patient, status="ok", error=item.note,
               gate_prob=f"{prob:.6f}", gate_verdict="tumor" if verdict else "no_tumor",
               segmented="yes" if segmented else "no", mask_area_px=int(mask.sum()),
               final_call="tumor" if final else "no_tumor", mask_path=(Path("masks") / mask_name).as_posix(),
               note="; ".join(filter(None, (prediction_note(verdict, bool(mask.any())), note))))
    truth, refused = None, ""
    if item.mask_path is not None:
        try:
            truth = read_input_mask(item, shape=shape)
        except (ImageReadError, OSError) as err:
            refused = str(err)
            row["error"] = f"ground truth not used: {err}"
    if overlays:
        try:
            image = read_input_image(item)  # read again: only the patient's model-size slices are held
        except (ImageReadError, OSError) as err:
            row["error"] = "; ".join(filter(None, (row["error"], f"no overlay: {err}")))
        else:
            overlay_name = Path("overlays") / mask_name
            write_png(out / overlay_name, draw_overlay(image, mask, truth))
            row["overlay_path"] = overlay_name.as_posix()
    scores = None
    if truth is not None:
        every = to_original_size([all_mask], [shape])[0] if all_mask is not None else mask
        scores = (slice_scores([mask], [truth]), slice_scores([every], [truth]))
    return row, scores, truth is not None, refused


#: Slices per model call for a patient folder when its models need no patient-level statistics.
CHUNK_SLICES = 256


def chunk_size(pipe: ClassSegPipeline) -> int | None:
    """How many of a patient's slices may go through the models at once: all of them (None) when a card
    normalises per patient or the segmenter's card asks for the per-patient 3D filter (both need the whole
    patient); else :data:`CHUNK_SLICES` rounded up to whole batches (``raw`` pixels: each slice is fed on
    its own values, so the gate's and the segment-all batches are those of one call per patient)."""
    if pipe.postprocess_3d is not None or any(pm.normalization != "raw" for pm in pipe.models.values()):
        return None
    return -(-CHUNK_SLICES // pipe.batch_size) * pipe.batch_size


def _process_patient(pipe: ClassSegPipeline, items: list[InputSlice], names: dict[Path, Path], out: Path,
                     overlays: bool, pool: ThreadPoolExecutor, acc: _Collected, bar: Any = None) -> None:
    """One patient folder: its slices through the models together (in chunks of :func:`chunk_size` where
    the models need no patient-level statistics), then outputs and scores slice by slice."""
    step = chunk_size(pipe) or len(items)
    for start in range(0, len(items), max(1, step)):
        _process_slices(pipe, items[start:start + step], names, out, overlays, pool, acc, bar)


def _process_slices(pipe: ClassSegPipeline, items: list[InputSlice], names: dict[Path, Path], out: Path,
                    overlays: bool, pool: ThreadPoolExecutor, acc: _Collected, bar: Any = None) -> None:
    """Slices of one patient through the models at once, then outputs and scores slice by slice."""
    size = _model_size(pipe)
    loaded = list(pool.map(lambda item: _load_small(item, size), items))
    good = [i for i, (image, _, _) in enumerate(loaded) if image is not None]
    images = [loaded[i][0] for i in good]
    # one patient folder = one standardisation group; a loose image in the test folder itself stands alone
    groups = [items[i].patient if len(items[i].relative.parts) > 1 else None for i in good]
    has_truth = any(items[i].mask_path is not None for i in good)
    result = pipe.infer(images, segment_all=has_truth and pipe.is_joint, groups=groups)
    t = result.timings
    stage_s = t["resize"] + t["classify"] + t["segment"] + t["postprocess"]
    all_masks = list(result.masks if result.all_masks is None else result.all_masks)
    delivered = result.delivered
    final = result.final_call
    extra_s = 0.0
    if has_truth and not pipe.is_joint and not result.segmented.all():  # the slices the rule did not segment
        # (every slice when the card's 3D filter is on: it must see the whole patient, as segment-all means)
        rest = np.flatnonzero(~result.segmented) if pipe.postprocess_3d is None else np.arange(len(images))
        extra, et = pipe.segment_timed(images, groups, subset=rest)
        extra_s = sum(et.values())
        acc.extra_pass_s += extra_s
        for i, mask in zip(rest, extra, strict=True):
            all_masks[i] = mask
    del images
    acc.gated_s += stage_s
    acc.slices += len(good)
    if has_truth:  # segment every slice = resize + segmenter on all + post-processing (no classifier)
        acc.segment_all_s += stage_s if pipe.is_joint else stage_s - t["classify"] + extra_s
        acc.segment_all_slices += len(good)
    position = {i: k for k, i in enumerate(good)}

    def finish(i: int) -> tuple[dict[str, Any], Any, Any, str]:
        item = items[i]
        if i not in position:
            row = dict.fromkeys(PREDICTION_COLUMNS, "")
            row.update(image=item.relative.as_posix(), patient=item.patient, status="error",
                       error=loaded[i][2] or item.note)
            return row, None, False, ""
        k = position[i]
        return _finish_slice(item, loaded[i][1], delivered[k], all_masks[k] if has_truth else None,
                             bool(result.passed[k]), bool(result.segmented[k]), bool(final[k]),
                             float(result.tumor_probability[k]),
                             result.notes[k] if result.notes else "", names[item.relative], out, overlays)

    for i, (row, scores, _, refused) in enumerate(pool.map(finish, range(len(items)))):
        acc.writer.writerow(row)
        acc.rows += 1
        acc.ok += row["status"] == "ok"
        acc.called_tumor += row["final_call"] == "tumor"
        acc.unpaired += bool(items[i].note)
        if refused:
            acc.truth_refused.append(refused)
        if scores is not None:
            k = position[i]
            acc.gated.add_scores(scores[0], [items[i].patient], [float(result.tumor_probability[k])],
                                 [bool(result.passed[k])], calls=[bool(final[k])])
            acc.segment_all.add_scores(scores[1], [items[i].patient])
        if bar is not None:
            bar.update(1)


def _variants(acc: _Collected, threshold: float) -> dict[str, Any]:
    """:func:`evaluate_variants` from the per-slice numbers accumulated patient by patient."""
    gated = acc.gated.scores(threshold)
    segment_all = acc.segment_all.scores()
    return _gating_report(acc.gated.slice_scores().tumor, acc.gated.gate_verdicts, gated, segment_all,
                          len(acc.segment_all))


def _gating_report(tumor: np.ndarray, passed: np.ndarray, gated: Any, segment_all: Any, n_all: int) -> dict[str, Any]:
    """The ``gated`` / ``segment_all`` Scores and the gating effect (slices the gate stopped, masks it spared)."""
    effect = {
        "tumor_slices": int(tumor.sum()),
        "non_tumor_slices": int((~tumor).sum()),
        "tumor_slices_stopped_by_gate": int((tumor & ~passed).sum()),
        "non_tumor_slices_with_mask_gated": gated.false_positive_slices,
        "non_tumor_slices_with_mask_segment_all": segment_all.false_positive_slices,
        "segmenter_calls_gated": int(passed.sum()),
        "segmenter_calls_segment_all": n_all,
    }
    return {"gated": gated.to_dict(), "segment_all": segment_all.to_dict(), "gating_effect": effect}


def evaluate_variants(truths: Sequence[np.ndarray], delivered: Sequence[np.ndarray], all_masks: Sequence[np.ndarray],
                      passed: Sequence[bool], prob: Sequence[float], patients: Sequence[str],
                      threshold: float, calls: Sequence[bool] | None = None) -> dict[str, Any]:
    """Delivered (``gated``: the masks written, detection of the final ``calls``, with the gate's own
    figures) vs segment-every-slice (``segment_all``) :class:`classseg.evaluation.Scores`, and the gating effect."""
    from classseg.evaluation import score_slices

    passed = np.asarray(passed, bool)
    gated = score_slices(truths, delivered, patients, gate_prob=prob, gate_threshold=threshold, gate_verdict=passed,
                         calls=calls)
    segment_all = score_slices(truths, all_masks, patients)
    return _gating_report(np.array([t.any() for t in truths], bool), passed, gated, segment_all, len(all_masks))


def _open_rows(out: Path) -> tuple[IO, Path]:
    tmp = temp_path_for(out / "predictions.csv")
    # file names are bytes on POSIX: one that is not UTF-8 is written back as the same bytes
    f = open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - closed in _stream
    return f, tmp




def predict_folder(config: FolderPredictionConfig) -> FolderResult:
    """Run the pipeline over every slice of ``config.test_dir`` and write the results into ``config.out``
    (see the module docstring). Raises :class:`PredictionRefused` (one line) before any output when an
    option, the output folder or a model is refused, :class:`FolderInterrupted` on Ctrl-C half-way."""
    test_dir = Path(config.test_dir).resolve()
    if not test_dir.is_dir():
        raise PredictionRefused(f"--test-dir {config.test_dir}: not an existing folder")
    if config.threshold is not None and not 0.0 <= config.threshold <= 1.0:
        raise PredictionRefused(f"--threshold {config.threshold}: must be between 0 and 1")
    if config.batch_size < 1:
        raise PredictionRefused(f"--batch-size {config.batch_size}: must be at least 1")
    own = output_folder_reason(test_dir)
    if own is not None:
        raise PredictionRefused(f"--test-dir {test_dir} is itself {own.split(': ', 1)[1].split(';')[0]}; give the "
                                "folder of the input slices")
    out = _resolve_out(config.out, test_dir, config.out_inside_test_dir)
    try:
        check_can_create(out)  # before the models load: an unwritable --out is one line, not a traceback
    except OutputError as err:
        raise PredictionRefused(str(err)) from None
    models = _resolve_models(config)
    inputs, skipped = find_inputs(test_dir)
    inputs, skipped = _without_out(inputs, skipped, out, test_dir)
    if not inputs:
        raise PredictionRefused(f"no images (.tif/.tiff/.png/.jpg/.jpeg) or NIfTI volumes (.nii/.nii.gz) found in "
                                f"{test_dir}")
    try:  # sharded prediction: whole patients, the same split on every machine
        inputs, part = select_part(inputs, config.num_parts, config.part_id)
    except ValueError as err:
        raise PredictionRefused(f"error: {err}") from None
    try:
        lock = OutputLock(out, "python -m classseg.pipeline").__enter__()
    except OutputLockError as err:  # another run is writing this --out: nothing touched
        raise PredictionRefused(f"error: {err}") from None
    try:
        return _predict_locked(config, test_dir, out, models, inputs, skipped, part)
    finally:
        lock.release()


def _without_out(inputs: list[InputSlice], skipped: list[dict[str, str]], out: Path, test_dir: Path
                 ) -> tuple[list[InputSlice], list[dict[str, str]]]:
    """The inputs outside ``out`` (which may lie in the test folder with ``out_inside_test_dir``, before it
    carries its marker), the ones inside it added to the skipped files."""
    real_out = Path(os.path.realpath(out))
    inside = {item for item in inputs if real_out in Path(os.path.realpath(item.path)).parents}
    if not inside:
        return inputs, skipped
    try:
        where = out.relative_to(test_dir).as_posix() + "/"
    except ValueError:
        where = str(out)
    note = {"path": where, "reason": f"{WRITTEN_BY_CLASSSEG}: this run's --out; not read as input"}
    return [item for item in inputs if item not in inside], [*skipped, note]


def _load_pipeline(config: FolderPredictionConfig, out: Path, models: dict[str, Path]) -> ClassSegPipeline:
    """The models, checked against their roles and cards; a model that cannot be loaded is one line."""
    try:
        kwargs = dict(threshold=config.threshold, gate_rule=config.gate_rule, batch_size=config.batch_size,
                      backend=config.backend, onnx_dir=out / "onnx")
        return (ClassSegPipeline.from_joint(models["joint"], **kwargs) if "joint" in models
                else ClassSegPipeline(models["classifier"], models["segmenter"], **kwargs))
    except BaseException as err:
        shutil.rmtree(out / "onnx", ignore_errors=True)  # converted models of a run that never started
        if isinstance(err, ModelCheckError):  # names the one model at fault and the problem
            raise PredictionRefused(f"error: {err}") from None
        if not isinstance(err, Exception):
            raise
        raise PredictionRefused(f"cannot load the models ({', '.join(map(str, models.values()))}): "  # one line
                                f"{type(err).__name__}: {err}") from err


def _predict_locked(config: FolderPredictionConfig, test_dir: Path, out: Path, models: dict[str, Path],
                    inputs: list[InputSlice], skipped: list[dict[str, str]], part: dict[str, Any] | None = None
                    ) -> FolderResult:
    _prepare_out(out, config.overwrite)
    pipe = _load_pipeline(config, out, models)
    warnings = [note for pm in pipe.models.values() for note in getattr(pm, "card_notes", [])]
    for note in warnings:
        print(f"warning: {note}", file=sys.stderr)
    groups_info = grouping(inputs)
    if groups_info["nested_example"]:
        print(f"note: patients are the folders holding the slices, by their path relative to {test_dir} "
              f"(e.g. {groups_info['nested_example']!r}): {groups_info['patients']} patients", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, command="python -m classseg.pipeline", test_dir=str(test_dir))  # kept: never an input
    # removed once predictions.csv and summary.json are written
    mark_unfinished(out, test_dir=str(test_dir), pid=os.getpid(), host=socket.gethostname())
    write_csv(out / "skipped.csv", skipped, ["path", "reason"])
    own = [item for item in skipped if item["reason"].startswith(WRITTEN_BY_CLASSSEG)]
    if own:
        print(f"note: {len(own)} output folder(s) or file(s) that classseg wrote lie in {test_dir} (first: "
              f"{own[0]['path']}); they are not read as inputs", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not input images (listed in {out / 'skipped.csv'})",
              file=sys.stderr)
    warmup_s = pipe.warmup()
    by_patient: dict[str, list[InputSlice]] = {}
    for item in inputs:
        by_patient.setdefault(item.patient, []).append(item)
    acc, wall_s = _stream(pipe, by_patient, output_names(inputs), out, config.overlays, len(inputs))
    volumes = write_volume_outputs(out, inputs, output_names(inputs))  # NIfTI cases: mask volumes, volumes.csv
    timing = {"gated": per_slice_rate(acc.gated_s, acc.slices),
              "end_to_end": per_slice_rate(wall_s - acc.extra_pass_s, len(inputs)), "warmup_s": warmup_s,
              "wall_s": wall_s, "evaluation_extra_pass_s": acc.extra_pass_s,
              "notes": "models = resize + inference + post-processing; end_to_end = reading, models, writing "
                       "masks/overlays, excluding the evaluation-only segment-all pass; warm-up excluded"}
    with_truth = len(acc.gated)
    data = {"test_dir": str(test_dir), "images": len(inputs), "ok": acc.ok, "errors": len(inputs) - acc.ok,
            "skipped": len(skipped), "patients": len(by_patient), "with_ground_truth": with_truth,
            "outputs_not_read": {"count": len(own), "examples": [item["path"] for item in own[:5]],
                                 "note": "output folders and files written by classseg are never inputs"},
            "grouping": groups_info, "part": part,
            "volumes": {"cases": len(volumes), "ok": sum(v["status"] == "ok" for v in volumes)} if volumes else None,
            "ground_truth": {"rule": MASK_RULE,
                             "scored": with_truth, "refused": len(acc.truth_refused),
                             "refused_examples": acc.truth_refused[:5], "unpaired_ambiguous": acc.unpaired}}
    summary = {"data": data, "models": pipe.describe(), "model_info": model_info(models), "timing": timing,
               "warnings": warnings, "environment": environment_info()}
    metrics = None
    if acc.truth_refused:  # never a metrics.json on a silently filtered subset
        data["metrics"] = (f"not written: {len(acc.truth_refused)} ground-truth mask(s) were refused and the rest "
                           "would be a filtered subset")
    elif with_truth:
        timing["segment_all"] = per_slice_rate(acc.segment_all_s, acc.segment_all_slices)
        metrics = {**_variants(acc, pipe.threshold), **summary}
        for variant in ("gated", "segment_all"):
            metrics[variant].update({k: timing[variant][k] for k in ("ms_per_slice", "slices_per_s")})
        write_json(out / "metrics.json", metrics)
        atomic_write_text(out / "metrics.md", metrics_markdown(metrics))
    write_json(out / "summary.json", summary)
    mark_finished(out)
    return FolderResult(out=out, images=len(inputs), ok=acc.ok, called_tumor=acc.called_tumor,
                        patients=len(by_patient), with_ground_truth=with_truth, truth_refused=acc.truth_refused,
                        unpaired=acc.unpaired, summary=summary, metrics=metrics, test_dir=test_dir)


def _stream(pipe: ClassSegPipeline, by_patient: dict[str, list[InputSlice]], names: dict[Path, Path], out: Path,
            overlays: bool, total: int) -> tuple[_Collected, float]:
    """Every patient through :func:`_process_patient`, rows streamed into ``predictions.csv`` (moved into
    place only when all are done); (what was collected, wall seconds)."""
    from tqdm.auto import tqdm

    rows_file, rows_tmp = _open_rows(out)
    acc = _Collected(writer=csv.DictWriter(rows_file, fieldnames=PREDICTION_COLUMNS))
    acc.writer.writeheader()
    start = time.perf_counter()
    done = 0
    finished = False
    try:
        with ThreadPoolExecutor(max_workers=min(8, 2 * available_cores())) as pool, \
                tqdm(total=total, unit="slice", desc="Class-Seg") as bar:
            for patient, items in by_patient.items():
                bar.set_postfix_str(patient[-24:])
                before = acc.rows
                _process_patient(pipe, items, names, out, overlays, pool, acc, bar)
                bar.update(len(items) - (acc.rows - before))  # a replaced _process_patient may not count
                done += 1
        rows_file.flush()
        os.fsync(rows_file.fileno())
        rows_file.close()
        finished = True
    except KeyboardInterrupt:
        raise FolderInterrupted(done, len(by_patient), out) from None
    finally:
        if not finished:
            rows_file.close()
            rows_tmp.unlink(missing_ok=True)
    wall_s = time.perf_counter() - start
    os.replace(rows_tmp, out / "predictions.csv")
    return acc, wall_s

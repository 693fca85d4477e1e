"""``python -m classseg.pipeline --test-dir DIR`` (and ``classseg predict``): the pipeline over a folder.

Writes ``predictions.csv`` (:data:`classseg.pipeline.outputs.PREDICTION_COLUMNS`), ``masks/``,
``overlays/``, ``skipped.csv``, ``summary.json`` and, where ground truth exists, ``metrics.json`` /
``metrics.md``: :class:`classseg.evaluation.Scores` of the delivered masks (``gated``) and of the
segmenter on every slice (``segment_all``), from :func:`classseg.evaluation.score_slices`, the same
function ``classseg evaluate`` uses. Patients (folders) are processed one at a time, their slices as
one batch, so a card's per-patient standardisation sees all of a patient's slices.

Reliability: ``--out`` may not lie inside ``--test-dir`` nor inside any folder reached from it through
symbolic links; each model is checked against its role before use (:mod:`classseg.modelcheck`); the
output folder is marked unfinished (:func:`classseg.guards.mark_unfinished`) until ``predictions.csv``
and ``summary.json`` are written, and a rerun replaces an unfinished folder; Ctrl-C exits with 130 and
one line. Every CSV / JSON / Markdown file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from classseg.atomic import atomic_write_text
from classseg.data.io import ImageReadError, read_image, read_mask
from classseg.environment import environment_info
from classseg.guards import (
    OutputError,
    check_can_create,
    check_not_inside,
    clear_unfinished,
    is_unfinished,
    mark_finished,
    mark_unfinished,
)
from classseg.jsonio import write_json
from classseg.modelcheck import ModelCheckError
from classseg.paths import MODELS_ENV, default_models_dir
from classseg.pipeline.core import ClassSegPipeline
from classseg.pipeline.inputs import InputSlice, find_inputs, output_names
from classseg.pipeline.models import model_info
from classseg.pipeline.outputs import (
    PREDICTION_COLUMNS,
    draw_overlay,
    metrics_markdown,
    per_slice_rate,
    prediction_note,
    write_csv,
    write_png,
)
from classseg.pipeline.runners import BACKENDS
from classseg.runtime import available_cores

TRAIN_HINT = ("train them first: `classseg run-all` (everything), or `classseg train-classifiers` and "
              "`classseg train-segmenter`, then put the chosen models at {dir}/classifier.keras and "
              "{dir}/segmenter.keras (or pass --classifier/--segmenter, or set $" + MODELS_ENV + ")")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m classseg.pipeline`` and ``classseg predict``."""
    parser.add_argument("--test-dir", required=True, type=Path,
                        help="folder of MRI slices (searched recursively; <stem>_mask.<ext> = ground truth)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ./classseg_out_<timestamp>); must not be inside --test-dir")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="classifier .keras/.onnx (default: saved_models/classifier.keras or $CLASSSEG_MODELS)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="segmenter .keras/.onnx (default: saved_models/segmenter.keras or $CLASSSEG_MODELS)")
    parser.add_argument("--joint", type=Path, default=None,
                        help="joint model (class + mask outputs) instead of --classifier/--segmenter")
    parser.add_argument("--threshold", type=float, default=None,
                        help="gate threshold on P(tumor) (default: the gate's model card, else gate_threshold in "
                             "its JSON sidecar, else 0.5)")
    parser.add_argument("--gate-rule", choices=("gate", "gate_and_mask", "mask"), default=None,
                        help="final call per slice: the gate's verdict, verdict and a non-empty mask, or mask "
                             "non-empty (default: the gate's model card, else gate)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per model call (default 16)")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend (default keras)")
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m classseg.pipeline`` parser."""
    parser = argparse.ArgumentParser(prog="python -m classseg.pipeline",
                                     description="Gate every MRI slice of a folder and outline tumors.")
    add_arguments(parser)
    return parser


def _resolve_out(out: Path | None, test_dir: Path) -> Path:
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path.cwd() / f"classseg_out_{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = Path.cwd() / f"classseg_out_{stamp}_{n}"
    resolved = out.resolve()
    if resolved == test_dir or test_dir in resolved.parents:
        raise SystemExit(f"refusing to write into the test folder: output {resolved} is inside {test_dir}; "
                         "choose --out elsewhere")
    try:  # also patient folders reached through symbolic links; a half-written earlier output is replaced
        check_not_inside(resolved, test_dir, "the test folder")
        if resolved.is_dir() and is_unfinished(resolved):
            clear_unfinished(resolved)
            print(f"note: {resolved} held the unfinished output of an interrupted run; replacing it",
                  file=sys.stderr)
    except OutputError as err:
        raise SystemExit(str(err)) from None
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())):
        raise SystemExit(f"output {resolved} already exists and is not an empty folder; choose another --out")
    return resolved


def _resolve_models(args: argparse.Namespace) -> dict[str, Path]:
    if args.joint is not None:
        if args.classifier is not None or args.segmenter is not None:
            raise SystemExit("give either --joint or --classifier/--segmenter, not both")
        models = {"joint": args.joint}
    else:
        folder = default_models_dir()
        models = {"classifier": args.classifier or folder / "classifier.keras",
                  "segmenter": args.segmenter or folder / "segmenter.keras"}
    for kind, path in models.items():
        if not Path(path).is_file():
            hint = (TRAIN_HINT.format(dir=default_models_dir()) if kind != "joint"
                    else "train one with `classseg train-joint`")
            raise SystemExit(f"{kind} model not found: {path}; {hint}")
    return models


def _read_slice(item: InputSlice) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image, ground truth or None, error message or '')."""
    try:
        image = read_image(item.path)
    except (ImageReadError, OSError) as err:
        return None, None, str(err)
    if item.mask_path is None:
        return image, None, ""
    try:
        return image, read_mask(item.mask_path, shape=image.shape[:2]), ""
    except (ImageReadError, OSError) as err:
        return image, None, f"ground truth not used: {err}"


@dataclass
class _Collected:
    rows: list[dict[str, Any]] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)
    delivered: list[np.ndarray] = field(default_factory=list)
    all_masks: list[np.ndarray] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    gated_s: float = 0.0
    slices: int = 0
    segment_all_s: float = 0.0  # over the patients with ground truth (where segment-all is run)
    segment_all_slices: int = 0
    extra_pass_s: float = 0.0  # the evaluation-only segmenter pass on slices the rule did not segment


def _process_patient(pipe: ClassSegPipeline, items: list[InputSlice], names: dict[Path, Path], out: Path,
                     overlays: bool, pool: ThreadPoolExecutor, acc: _Collected) -> None:
    loaded = list(pool.map(_read_slice, items))
    good = [i for i, (image, _, _) in enumerate(loaded) if image is not None]
    images = [loaded[i][0] for i in good]
    # one patient folder = one standardisation group; a loose image in the test folder itself stands alone
    groups = [items[i].patient if len(items[i].relative.parts) > 1 else None for i in good]
    has_truth = any(loaded[i][1] is not None for i in good)
    result = pipe.infer(images, segment_all=has_truth and pipe.is_joint, groups=groups)
    t = result.timings
    stage_s = t["resize"] + t["classify"] + t["segment"] + t["postprocess"]
    all_masks = list(result.masks)
    delivered = result.delivered
    final = result.final_call
    extra_s = 0.0
    if has_truth and not pipe.is_joint:  # one extra segmenter pass on the slices not segmented
        rest = np.flatnonzero(~result.segmented)
        extra, et = pipe.segment_timed(images, groups, subset=rest)
        extra_s = sum(et.values())
        acc.extra_pass_s += extra_s
        for i, mask in zip(rest, extra, strict=True):
            all_masks[i] = mask
    acc.gated_s += stage_s
    acc.slices += len(images)
    if has_truth:  # segment every slice = resize + segmenter on all + post-processing (no classifier)
        acc.segment_all_s += stage_s if pipe.is_joint else stage_s - t["classify"] + extra_s
        acc.segment_all_slices += len(images)
    position = {i: k for k, i in enumerate(good)}
    for i, (item, (image, truth, error)) in enumerate(zip(items, loaded, strict=True)):
        row = dict.fromkeys(PREDICTION_COLUMNS, "")
        row.update(image=item.relative.as_posix(), patient=item.patient,
                   status="error" if image is None else "ok", error=error or item.note)
        if image is not None:
            k = position[i]
            mask = delivered[k]
            verdict = bool(result.passed[k])
            mask_rel = Path("masks") / names[item.relative]
            write_png(out / mask_rel, mask * np.uint8(255))
            row.update(gate_prob=f"{result.tumor_probability[k]:.6f}", gate_verdict="tumor" if verdict else "no_tumor",
                       segmented="yes" if verdict or pipe.gate_rule == "mask" else "no",
                       mask_area_px=int(mask.sum()), final_call="tumor" if final[k] else "no_tumor",
                       mask_path=mask_rel.as_posix(),
                       note="; ".join(filter(None, (prediction_note(verdict, bool(mask.any())),
                                                    result.notes[k] if result.notes else ""))))
            if overlays:
                overlay_rel = Path("overlays") / names[item.relative]
                write_png(out / overlay_rel, draw_overlay(image, mask, truth))
                row["overlay_path"] = overlay_rel.as_posix()
            if truth is not None:
                acc.truths.append(truth)
                acc.delivered.append(mask)
                acc.all_masks.append(all_masks[k])
                acc.passed.append(verdict)
                acc.probs.append(float(result.tumor_probability[k]))
                acc.patients.append(item.patient)
        acc.rows.append(row)


def evaluate_variants(truths: Sequence[np.ndarray], delivered: Sequence[np.ndarray], all_masks: Sequence[np.ndarray],
                      passed: Sequence[bool], prob: Sequence[float], patients: Sequence[str],
                      threshold: float) -> dict[str, Any]:
    """Delivered (``gated``: the masks written, with the gate's own figures) vs segment-every-slice
    (``segment_all``) :class:`classseg.evaluation.Scores`, and the gating effect."""
    from classseg.evaluation import score_slices

    passed = np.asarray(passed, bool)
    gated = score_slices(truths, delivered, patients, gate_prob=prob, gate_threshold=threshold, gate_verdict=passed)
    segment_all = score_slices(truths, all_masks, patients)
    tumor = np.array([t.any() for t in truths], bool)
    effect = {
        "tumor_slices": int(tumor.sum()),
        "non_tumor_slices": int((~tumor).sum()),
        "tumor_slices_stopped_by_gate": int((tumor & ~passed).sum()),
        "non_tumor_slices_with_mask_gated": gated.false_positive_slices,
        "non_tumor_slices_with_mask_segment_all": segment_all.false_positive_slices,
        "segmenter_calls_gated": int(passed.sum()),
        "segmenter_calls_segment_all": len(all_masks),
    }
    return {"gated": gated.to_dict(), "segment_all": segment_all.to_dict(), "gating_effect": effect}


def run(args: argparse.Namespace) -> int:
    """Run the pipeline over ``args.test_dir``; 0 when at least one slice was processed."""
    from tqdm.auto import tqdm

    test_dir = Path(args.test_dir).resolve()
    if not test_dir.is_dir():
        raise SystemExit(f"--test-dir {args.test_dir}: not an existing folder")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size {args.batch_size}: must be at least 1")
    out = _resolve_out(args.out, test_dir)
    try:
        check_can_create(out)  # before the models load: an unwritable --out is one line, not a traceback
    except OutputError as err:
        raise SystemExit(str(err)) from None
    models = _resolve_models(args)
    inputs, skipped = find_inputs(test_dir)
    if not inputs:
        raise SystemExit(f"no images (.tif/.tiff/.png/.jpg/.jpeg) found in {test_dir}")
    try:
        kwargs = dict(threshold=args.threshold, gate_rule=getattr(args, "gate_rule", None),
                      batch_size=args.batch_size, backend=args.backend, onnx_dir=out / "onnx")
        pipe = (ClassSegPipeline.from_joint(models["joint"], **kwargs) if "joint" in models
                else ClassSegPipeline(models["classifier"], models["segmenter"], **kwargs))
    except ModelCheckError as err:  # names the one model at fault and the problem
        raise SystemExit(f"error: {err}") from None
    except Exception as err:  # noqa: BLE001 - any load/convert failure is reported in one line
        raise SystemExit(f"cannot load the models ({', '.join(map(str, models.values()))}): "
                         f"{type(err).__name__}: {err}") from err
    out.mkdir(parents=True, exist_ok=True)
    mark_unfinished(out, test_dir=str(test_dir))  # removed once predictions.csv and summary.json are written
    write_csv(out / "skipped.csv", skipped, ["path", "reason"])
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not input images (listed in {out / 'skipped.csv'})",
              file=sys.stderr)
    warmup_s = pipe.warmup()
    names = output_names(inputs)
    acc = _Collected()
    by_patient: dict[str, list[InputSlice]] = {}
    for item in inputs:
        by_patient.setdefault(item.patient, []).append(item)
    start = time.perf_counter()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=min(8, 2 * available_cores())) as pool, \
                tqdm(total=len(inputs), unit="slice", desc="Class-Seg") as bar:
            for patient, items in by_patient.items():
                bar.set_postfix_str(patient[-24:])
                _process_patient(pipe, items, names, out, not args.no_overlays, pool, acc)
                bar.update(len(items))
                done += 1
    except KeyboardInterrupt:
        if getattr(args, "reraise_interrupt", False):  # run-all phase 3: run-all says what was finished
            raise
        print(f"interrupted (Ctrl-C) after {done} of {len(by_patient)} patients; no predictions.csv was written "
              f"and {out} is marked unfinished: run the same command again to replace it", file=sys.stderr)
        return 130
    wall_s = time.perf_counter() - start
    write_csv(out / "predictions.csv", acc.rows, PREDICTION_COLUMNS)
    n_ok = sum(r["status"] == "ok" for r in acc.rows)
    timing = {"gated": per_slice_rate(acc.gated_s, acc.slices),
              "end_to_end": per_slice_rate(wall_s - acc.extra_pass_s, len(inputs)), "warmup_s": warmup_s,
              "wall_s": wall_s, "evaluation_extra_pass_s": acc.extra_pass_s,
              "notes": "models = resize + inference + post-processing; end_to_end = reading, models, writing "
                       "masks/overlays, excluding the evaluation-only segment-all pass; warm-up excluded"}
    data = {"test_dir": str(test_dir), "images": len(inputs), "ok": n_ok, "errors": len(inputs) - n_ok,
            "skipped": len(skipped), "patients": len(by_patient), "with_ground_truth": len(acc.truths)}
    summary = {"data": data, "models": pipe.describe(), "model_info": model_info(models), "timing": timing,
               "environment": environment_info()}
    if acc.truths:
        timing["segment_all"] = per_slice_rate(acc.segment_all_s, acc.segment_all_slices)
        metrics = {**evaluate_variants(acc.truths, acc.delivered, acc.all_masks, acc.passed, acc.probs, acc.patients,
                                       pipe.threshold), **summary}
        for variant in ("gated", "segment_all"):
            metrics[variant].update({k: timing[variant][k] for k in ("ms_per_slice", "slices_per_s")})
        write_json(out / "metrics.json", metrics)
        atomic_write_text(out / "metrics.md", metrics_markdown(metrics))
    write_json(out / "summary.json", summary)
    mark_finished(out)
    print(f"{n_ok}/{len(inputs)} slices processed, {len(inputs) - n_ok} unreadable; "
          f"{sum(r['final_call'] == 'tumor' for r in acc.rows)} called tumor; "
          f"{timing['gated']['ms_per_slice']:.1f} ms/slice (models), results in {out}")
    if n_ok == 0:
        print(f"error: none of the {len(inputs)} images could be read (see {out / 'predictions.csv'})",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m classseg.pipeline``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before the slices were processed; an output folder it created is marked "
              "unfinished and the same command replaces it", file=sys.stderr)
        return 130
    except OSError as err:  # an output that cannot be written, a full disk: one line
        from classseg.guards import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 1

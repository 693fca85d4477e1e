"""``python -m classseg.pipeline --test-dir DIR`` (and ``classseg predict``): the pipeline over a folder.

A thin front on :func:`classseg.pipeline.folder.predict_folder` (what it writes, how it streams and what
it refuses are described there): options -> :class:`~classseg.pipeline.folder.FolderPredictionConfig`
(argparse defaults are the dataclass's) -> ``predict_folder`` -> console lines and the exit code: 0; 1
when a ground-truth mask was refused (predictions are written, no ``metrics.json``), no image could be
read or an output cannot be written; 130 on Ctrl-C, with one line. Refusals exit with their one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from classseg.delivery.rules import GATE_RULES
from classseg.models.predict import BACKENDS
from classseg.pipeline.folder import (
    OUTPUT_ENTRIES,
    TRAIN_HINT,
    FolderInterrupted,
    FolderPredictionConfig,
    evaluate_variants,
    predict_folder,
)
from classseg.utils.defaults import default_of

__all__ = ["OUTPUT_ENTRIES", "TRAIN_HINT", "add_arguments", "build_parser", "config_from_args", "evaluate_variants",
           "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m classseg.pipeline`` and ``classseg predict``."""
    parser.add_argument("--test-dir", required=True, type=Path,
                        help="folder of MRI slices (searched recursively; <stem>_mask.<ext> = ground truth) and/or "
                             "NIfTI volumes (<case>_flair.nii.gz, _t1, _t1ce, or one 4D <case>.nii.gz; <case>_mask "
                             "or _seg = ground truth; docs/nifti.md)")
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
    parser.add_argument("--gate-rule", choices=GATE_RULES, default=None,
                        help="final call per slice: the gate's verdict, verdict and a non-empty mask, or mask "
                             "non-empty (default: the gate's model card, else gate)")
    parser.add_argument("--batch-size", type=int, default=default_of(FolderPredictionConfig, "batch_size"),
                        help="slices per model call (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default=default_of(FolderPredictionConfig, "backend"),
                        help="inference backend (default %(default)s)")
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the finished output of an earlier run in --out (only the files the pipeline "
                             "writes; a folder holding anything else is refused)")
    parser.add_argument("--out-inside-test-dir", action="store_true",
                        help="allow --out inside --test-dir (refused otherwise); the pipeline never reads its own "
                             "outputs as inputs")
    parser.add_argument("--num-parts", type=int, default=default_of(FolderPredictionConfig, "num_parts"),
                        help="split the folder into this many parts by whole patients (default %(default)s); "
                             "score the parts together with `classseg evaluate PART_DIR... --truth DIR`")
    parser.add_argument("--part-id", type=int, default=default_of(FolderPredictionConfig, "part_id"),
                        help="which part (0-based) this run predicts (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m classseg.pipeline`` parser."""
    parser = argparse.ArgumentParser(prog="python -m classseg.pipeline",
                                     description="Gate every MRI slice of a folder and outline tumors.")
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> FolderPredictionConfig:
    """The :class:`FolderPredictionConfig` of parsed options (options a caller's namespace lacks take the
    dataclass's defaults)."""
    given = vars(args)
    overlays = not given.get("no_overlays", False)
    names = ("out", "classifier", "segmenter", "joint", "threshold", "gate_rule", "batch_size", "backend", "overwrite",
             "out_inside_test_dir", "num_parts", "part_id")
    return FolderPredictionConfig(test_dir=args.test_dir, overlays=overlays,
                                  **{name: given[name] for name in names if name in given})


def run(args: argparse.Namespace) -> int:
    """Run the pipeline over ``args.test_dir``; 0 when at least one slice was processed (and, where there is
    ground truth, every mask could be scored), 130 on Ctrl-C while the patients are processed."""
    try:
        result = predict_folder(config_from_args(args))
    except FolderInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    return result.announce()


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
        from classseg.utils.guards import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 1

"""Phase 3 of Class-Seg: gate every MRI slice, outline the tumor, write the results (a package by job).

* :mod:`~classseg.pipeline.models`: a runner (:mod:`classseg.models.predict`) plus its model card (input
  size, normalisation), and the gate-threshold sidecars of models without a card.
* :mod:`~classseg.pipeline.core`: :class:`ClassSegPipeline` (gate, segment, deliver). The gate rule, final
  call and delivered mask are :mod:`classseg.delivery.rules`' (the function training and selection score
  with: 2D post-processing, the 3D filter over the slices the rule segments, resize back, rule), so
  ``metrics.json`` (``gated``), the ``final_call`` column and ``classseg evaluate`` count the same calls.
* :mod:`~classseg.pipeline.inputs`: the slices of a test folder (:mod:`classseg.data.walk`).
* :mod:`~classseg.pipeline.outputs`: predictions.csv columns, mask / overlay PNGs, metrics.md.
* :mod:`~classseg.pipeline.folder`: :func:`predict_folder` (a :class:`FolderPredictionConfig` in, a
  :class:`FolderResult` out): the folder loop, predictions.csv, masks, metrics, timings; the CLI and run-all call it.
* :mod:`~classseg.pipeline.cli`: ``python -m classseg.pipeline --test-dir DIR`` (``classseg predict``): options ->
  config -> :func:`predict_folder` -> console lines and exit code.

Command line::

    python -m classseg.pipeline --test-dir DIR [--out OUT] [--classifier PATH] [--segmenter PATH]
        [--joint PATH] [--threshold P] [--gate-rule RULE] [--batch-size N] [--backend keras|onnx]
        [--no-overlays] [--overwrite]
"""

from classseg.models.predict import BACKENDS, KerasRunner, OnnxRunner, make_runner
from classseg.pipeline.cli import add_arguments, build_parser, main, run
from classseg.pipeline.core import DEFAULT_THRESHOLD, BatchResult, ClassSegPipeline, SlicePrediction
from classseg.pipeline.folder import (
    TRAIN_HINT,
    FolderInterrupted,
    FolderPredictionConfig,
    FolderResult,
    PredictionRefused,
    evaluate_variants,
    predict_folder,
)
from classseg.pipeline.inputs import InputSlice, find_inputs, natural_key, output_names
from classseg.pipeline.models import PipelineModel, model_info, resize_to, sidecar_candidates, sidecar_threshold
from classseg.pipeline.outputs import PREDICTION_COLUMNS, draw_overlay, metrics_markdown
from classseg.utils.paths import MODELS_ENV, default_models_dir

__all__ = [
    "BACKENDS", "DEFAULT_THRESHOLD", "MODELS_ENV", "PREDICTION_COLUMNS", "TRAIN_HINT", "BatchResult",
    "ClassSegPipeline", "FolderInterrupted", "FolderPredictionConfig", "FolderResult", "InputSlice", "KerasRunner",
    "OnnxRunner", "PipelineModel", "PredictionRefused", "SlicePrediction", "add_arguments", "build_parser",
    "default_models_dir", "draw_overlay", "evaluate_variants", "find_inputs", "main", "make_runner",
    "metrics_markdown", "model_info", "natural_key", "output_names", "predict_folder", "resize_to", "run",
    "sidecar_candidates", "sidecar_threshold",
]

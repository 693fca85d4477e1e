"""What the pipeline writes: predictions.csv rows, mask and overlay PNGs, metrics.md."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Columns of predictions.csv, one row per input image.
#: ``gate_prob`` / ``gate_verdict``: the gate's P(tumor) and verdict; ``segmented``: yes when the delivered
#: mask came from the segmenter, no when the rule delivered an empty mask without segmenting (gate said
#: no tumor); ``mask_area_px``: tumor pixels of the delivered (post-processed) mask at the slice's
#: original size; ``final_call``: the slice's call under the gate rule; ``note``: disagreements worth
#: a look (e.g. ``verdict tumor, empty mask``); ``status``: ok / error (``error`` says why).
PREDICTION_COLUMNS = ["image", "patient", "gate_prob", "gate_verdict", "segmented", "mask_area_px", "final_call",
                      "mask_path", "overlay_path", "status", "note", "error"]


def prediction_note(verdict: bool, mask_non_empty: bool) -> str:
    """Why a slice deserves a second look: the gate's verdict and the delivered mask disagree ("" otherwise)."""
    if verdict and not mask_non_empty:
        return "verdict tumor, empty mask"
    if not verdict and mask_non_empty:
        return "verdict no tumor, mask non-empty"
    return ""


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (any path, also non-ASCII, unlike ``cv2.imwrite``); parents are created. It
    carries the pipeline's tag (:func:`classseg.data.io.tag_png`), so it is never read back as an input slice.
    Not fsynced one by one: the output folder stays marked unfinished until the run has ended."""
    from classseg.data.io import tag_png
    from classseg.utils.atomic import atomic_path

    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_bytes(tag_png(buffer.tobytes()))


def draw_overlay(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """BGR overlay: predicted outline in red, ground-truth outline in green (cv2.drawContours)."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for m, color in ((truth, (0, 255, 0)), (mask, (0, 0, 255))):
        if m is not None and m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, color, 1)
    return canvas


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows (dicts) as a CSV with the given column order, written atomically."""
    from classseg.utils.atomic import atomic_open

    with atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # names are bytes
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def per_slice_rate(seconds: float, n: int) -> dict[str, float]:
    """``ms_per_slice``, ``slices_per_s``, ``seconds``, ``slices``."""
    return {"ms_per_slice": 1000.0 * seconds / n if n else float("nan"),
            "slices_per_s": n / seconds if seconds > 0 else float("nan"), "seconds": seconds, "slices": n}


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """metrics.md: delivered (gated) vs segment-every-slice figures, gating effect, how they were obtained."""
    from classseg.reporting.tables import (
        DETECTION_FIELDS,
        GATE_FIELDS,
        SEGMENTATION_FIELDS,
        format_value,
        scores_markdown,
    )

    m, d, effect = metrics["models"], metrics["data"], metrics["gating_effect"]
    facts = [
        f"Models: {', '.join(f'{k} `{m[k]}`' for k in ('classifier', 'segmenter', 'joint') if k in m)}; "
        f"backend {m['backend']}; gate threshold {m['threshold']} ({m['threshold_source']}); gate rule "
        f"`{m['gate_rule']}`; post-processing {m['postprocess']}; batch size {m['batch_size']}.",
        f"Data: {d['ok']} slices read ({d['errors']} unreadable) from {d['patients']} patients; "
        f"{d['with_ground_truth']} with ground truth, {effect['tumor_slices']} of them tumor.",
        "Delivered: the masks written to masks/ (gate rule applied). Segment every slice: the segmenter's "
        "post-processed mask on every slice, no gate. Detection figures score 'delivered mask non-empty'; "
        "gate_* score the gate's verdict.",
        f"Timing: 'models' = resize, inference, post-processing (warm-up excluded): delivered "
        f"{format_value(metrics['timing']['gated']['ms_per_slice'], 1)} ms/slice, segment every slice "
        f"{format_value(metrics['timing'].get('segment_all', {}).get('ms_per_slice'), 1)} ms/slice; end to end "
        f"incl. reading and writing files {format_value(metrics['timing']['end_to_end']['ms_per_slice'], 1)} "
        f"ms/slice. Machine: {metrics['environment'].get('cpu')} ({metrics['environment'].get('cpu_count')} CPUs).",
        "Gating effect: " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in effect.items()) + ".",
    ]
    sections = {"Delivered (gate rule)": metrics["gated"], "Segment every slice": metrics["segment_all"]}
    return scores_markdown("Class-Seg pipeline on " + str(d["test_dir"]), sections,
                           DETECTION_FIELDS + GATE_FIELDS + SEGMENTATION_FIELDS, facts)

"""Issue 20: scoring a patient at a time gives the numbers of scoring everything at once, and the pipeline
holds a bounded number of slices whatever the folder sizes."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from classseg.evaluation.scores import ScoreAccumulator, score_slices
from classseg.evaluation.segmentation import figures_from_slice_scores, segmentation_figures, slice_scores


def _random_set(seed: int = 0, n: int = 23):
    """Masks of several sizes: tumor and empty truths, hits, misses, false positives, three patients."""
    rng = np.random.default_rng(seed)
    truths, masks, ids = [], [], []
    for i in range(n):
        h, w = (24, 24) if i % 3 else (20, 31)
        truth = np.zeros((h, w), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if i % 4 != 0:  # tumor slice
            y, x = rng.integers(2, 10, 2)
            truth[y:y + rng.integers(3, 9), x:x + rng.integers(3, 9)] = 1
        if i % 5 != 1:  # something predicted
            y, x = rng.integers(2, 10, 2)
            mask[y:y + rng.integers(2, 10), x:x + rng.integers(2, 10)] = 1
        truths.append(truth)
        masks.append(mask)
        ids.append(f"P{i % 3}" if i < 20 else "P9")
    prob = rng.uniform(0, 1, n)
    return truths, masks, ids, prob


def test_figures_from_slice_scores_match_segmentation_figures() -> None:
    truths, masks, ids, _ = _random_set()
    for pooling in ("pooled", "max"):
        ref = segmentation_figures(masks, truths, ids, hd95_pooling=pooling)
        got = figures_from_slice_scores(slice_scores(masks, truths, hd95_pooling=pooling), ids, pooling)
        assert got == ref  # exactly: the same arithmetic on the same numbers


@pytest.mark.parametrize("chunk", [1, 4, 23])
def test_accumulator_equals_score_slices_to_the_last_bit(chunk: int) -> None:
    truths, masks, ids, prob = _random_set(1)
    verdict = prob >= 0.4
    ref = score_slices(truths, masks, ids, gate_prob=prob, gate_threshold=0.4, gate_verdict=verdict)
    acc = ScoreAccumulator()
    for i in range(0, len(truths), chunk):
        acc.add(truths[i:i + chunk], masks[i:i + chunk], ids[i:i + chunk], prob[i:i + chunk], verdict[i:i + chunk])
    assert len(acc) == len(truths) and acc.patient_ids == ids
    assert acc.scores(0.4).to_dict() == ref.to_dict()
    plain = ScoreAccumulator()
    plain.add(truths, masks, ids)
    assert plain.scores().to_dict() == score_slices(truths, masks, ids).to_dict()
    assert plain.scores().gate_tp is None


def test_accumulator_known_values_and_empty() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :1] = 1
    acc = ScoreAccumulator()
    acc.add([truth, np.zeros((4, 4), np.uint8)], [mask, np.zeros((4, 4), np.uint8)], ["A", "A"])
    s = acc.scores()
    assert s.dice_tumor_slices == pytest.approx(2 * 2 / (2 + 4)) and s.dice_end_to_end == pytest.approx((2 / 3 + 1) / 2)
    assert (s.tp, s.tn, s.fp, s.fn) == (1, 1, 0, 0) and s.dice_per_patient == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="some slices only"):
        acc.add([truth], [mask], ["B"], gate_prob=[0.9])
    assert ScoreAccumulator().scores().n_slices == 0


# ------------------------------------------------------------------------------------------ the pipeline
def test_pipeline_streams_patient_by_patient_at_model_size_with_the_same_numbers(tmp_path: Path, monkeypatch) -> None:
    """Each model call sees one patient's slices, held at the models' input size (64x64 slices, 32-px
    models); masks come back at 64x64 and the metrics equal scoring every slice at once on the
    original-size path (ClassSegPipeline.infer on the full images + score_slices)."""
    import cv2

    from classseg.pipeline import folder as pl
    from classseg.pipeline import main
    from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb

    models = tmp_path / "models"
    models.mkdir()
    tiny_classifier().save(models / "classifier.keras")
    tiny_segmenter().save(models / "segmenter.keras")
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    cases = {"PA": 3, "PB": 2, "PC": 4}
    for patient, n in cases.items():
        for k in range(n):
            y, x = rng.integers(4, 30, 2)
            box = (int(y), int(x), int(y) + 20, int(x) + 24)
            image = slice_image(64, 64, int(rng.choice([140, 250])) if k % 3 else None, box=box)
            write_rgb(data / patient / f"{patient}_{k}.png", image)
            truth = np.zeros((64, 64), np.uint8)
            if k % 3:
                truth[box[0] + 2:box[2], box[1]:box[3] - 3] = 255
            cv2.imwrite(str(data / patient / f"{patient}_{k}_mask.png"), truth)
    seen = []
    real = pl.ClassSegPipeline.infer

    def spy(self, images, segment_all=False, groups=None):
        seen.append([im.shape for im in images])
        return real(self, images, segment_all=segment_all, groups=groups)

    monkeypatch.setattr(pl.ClassSegPipeline, "infer", spy)
    out = tmp_path / "out"
    assert main(["--test-dir", str(data), "--out", str(out), "--classifier", str(models / "classifier.keras"),
                 "--segmenter", str(models / "segmenter.keras"), "--threshold", "0.5", "--no-overlays"]) == 0
    assert [len(s) for s in seen] == list(cases.values())  # one call per patient, all of its slices
    assert all(shape == (32, 32, 3) for s in seen for shape in s)  # held at the models' size
    monkeypatch.undo()

    pipe = pl.ClassSegPipeline(models / "classifier.keras", models / "segmenter.keras", threshold=0.5)
    truths, gated, every, ids, probs, passed = [], [], [], [], [], []
    for patient in cases:
        paths = sorted((data / patient).glob(f"{patient}_?.png"))
        images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
        result = real(pipe, images, groups=[patient] * len(images))
        all_masks = pipe.segment(images, [patient] * len(images))
        truths += [(cv2.imread(str(p.with_name(p.stem + "_mask.png")), 0) > 0).astype(np.uint8) for p in paths]
        gated += result.delivered
        every += all_masks
        ids += [patient] * len(images)
        probs += list(result.tumor_probability)
        passed += list(result.passed)
    metrics = json.loads((out / "metrics.json").read_text())
    timing = ("ms_per_slice", "slices_per_s")
    expected = score_slices(truths, gated, ids, gate_prob=probs, gate_threshold=0.5, gate_verdict=passed).to_dict()
    assert {k: v for k, v in metrics["gated"].items() if k not in timing} == expected
    assert {k: v for k, v in metrics["segment_all"].items() if k not in timing} == \
        score_slices(truths, every, ids).to_dict()
    masks = sorted((out / "masks").rglob("*.png"))
    assert len(masks) == 9 and all(cv2.imread(str(m), 0).shape == (64, 64) for m in masks)


def test_a_huge_patient_folder_is_chunked_only_where_that_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    """Raw pixels and no 3D filter: a patient's slices go through the models in chunks of whole batches,
    with the same outputs; a card that normalises per patient keeps the whole patient in one call."""
    from classseg.models.card import ModelCard, write_card
    from classseg.pipeline import folder as pl
    from classseg.pipeline import main
    from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb

    models = tmp_path / "models"
    models.mkdir()
    tiny_classifier().save(models / "classifier.keras")
    tiny_segmenter().save(models / "segmenter.keras")
    data = tmp_path / "data"
    for k in range(7):
        write_rgb(data / "P" / f"P_{k}.png", slice_image(32, 32, (250, 140, None)[k % 3]))
    argv = ["--test-dir", str(data), "--classifier", str(models / "classifier.keras"), "--segmenter",
            str(models / "segmenter.keras"), "--threshold", "0.5", "--batch-size", "2", "--no-overlays"]
    seen = []
    real = pl.ClassSegPipeline.infer
    monkeypatch.setattr(pl.ClassSegPipeline, "infer", lambda self, images, **kw: seen.append(len(images)) or
                        real(self, images, **kw))
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(pl, "CHUNK_SLICES", 3)  # rounded up to whole batches of 2: 4
    assert main([*argv, "--out", str(tmp_path / "chunks")]) == 0
    assert seen == [7, 4, 3]
    assert (tmp_path / "whole" / "predictions.csv").read_text() == (tmp_path / "chunks" / "predictions.csv").read_text()
    write_card(models / "segmenter.keras", ModelCard(role="segmenter", img_size=32, normalization="patient_zscore"))
    seen.clear()
    assert main([*argv, "--out", str(tmp_path / "zscore")]) == 0
    assert seen == [7]  # patient statistics: the whole patient at once

"""The FLAIR-only segmenter: known answers for the channel choice and the patients it is used for, a card that
round-trips it, and one routing in selection and the pipeline (Keras and ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classseg.data.standardize import flair_only_rows, prepare_input, use_sequences
from classseg.models.card import ModelCard, model_sha256, read_card, write_card
from classseg.models.predict import route_flair_only

SIZE = 32


def test_use_sequences_copies_flair_into_every_channel() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    assert use_sequences(x, "all") is x
    assert use_sequences(x, "flair")[0, 0, 0].tolist() == [1, 1, 1]
    assert use_sequences(x, "flair")[0, 1, 1].tolist() == [10, 10, 10]
    groups = ["a"]
    np.testing.assert_array_equal(prepare_input(x, "patient_percentile", groups, sequences="flair"),
                                  prepare_input(use_sequences(x, "flair"), "patient_percentile", groups))
    with pytest.raises(ValueError, match="input_sequences"):
        use_sequences(x, "t1")
    with pytest.raises(ValueError, match="3-channel"):
        use_sequences(np.zeros((1, 2, 2, 9)), "flair")


def test_flair_only_rows_flags_whole_patients_whose_pre_and_post_equal_flair() -> None:
    rng = np.random.default_rng(0)
    plain = rng.integers(0, 200, (4, 4, 3), dtype=np.uint8)
    flair = np.repeat(plain[..., 1:2], 3, axis=-1)
    pre_missing = plain.copy()
    pre_missing[..., 0] = plain[..., 1]
    images = [flair, flair, flair, plain, pre_missing, flair]
    # patient a: all FLAIR; b: one plain slice, so none of its slices; c: pre missing only; lone slice: itself
    groups = ["a", "a", "b", "b", "c", None]
    assert flair_only_rows(images, groups).tolist() == [True, True, False, False, False, True]
    assert flair_only_rows(images).tolist() == [True, True, True, False, False, True]


def test_route_flair_only_replaces_only_the_flagged_rows() -> None:
    probs = np.zeros((3, 4, 4, 1), np.float32)

    def runner(x):
        return {"mask": np.full((len(x), 4, 4, 1), 0.7, np.float32)}

    out = route_flair_only(probs, np.array([False, True, False]), runner, np.zeros((3, 4, 4, 3), np.float32), 2)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.7, 0.0])
    assert route_flair_only(probs, None, runner, probs, 2) is probs


def _models(tmp_path: Path) -> tuple[Path, Path]:
    import keras

    from classseg.models.resunet import build_resunet

    paths = []
    for k, name in enumerate(("seg.keras", "seg_flair.keras")):
        keras.utils.set_random_seed(k)
        build_resunet((SIZE, SIZE, 3), width=0.25).save(tmp_path / name)
        paths.append(tmp_path / name)
    write_card(paths[1], ModelCard(role="segmenter", img_size=SIZE, normalization="patient_percentile",
                                   input_sequences="flair", postprocess={"threshold": 0.5}))
    write_card(paths[0], ModelCard(role="segmenter", img_size=SIZE, normalization="patient_percentile",
                                   tta="hflip", postprocess={"threshold": 0.5},
                                   flair_only_model={"file": paths[1].name, "sha256": model_sha256(paths[1])}))
    return paths[0], paths[1]


def test_card_round_trips_the_flair_only_model_and_refuses_bad_values(tmp_path: Path) -> None:
    main, flair = _models(tmp_path)
    assert read_card(main).flair_only_model == {"file": flair.name, "sha256": model_sha256(flair)}
    assert read_card(flair).input_sequences == "flair"
    for bad, match in [({"input_sequences": "t2"}, "input_sequences"), ({"input_sequences": 3}, "input_sequences"),
                       ({"flair_only_model": "x.keras"}, "flair_only_model"),
                       ({"flair_only_model": {"file": "../x.keras", "sha256": "0" * 64}}, "flair_only_model.file")]:
        with pytest.raises(ValueError, match=match):
            ModelCard(role="segmenter", img_size=SIZE, **bad)


def test_flair_only_patients_get_the_flair_model_in_selection_and_the_pipeline(tmp_path: Path) -> None:
    import keras

    from classseg.models.check import ModelCheckError
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline
    from classseg.training.segmenter import SegmenterConfig, score_segmenter

    main, flair = _models(tmp_path)
    rng = np.random.default_rng(1)
    plain = rng.integers(0, 200, (3, SIZE, SIZE, 3), dtype=np.uint8)
    flair_only = np.repeat(rng.integers(0, 200, (3, SIZE, SIZE, 1), dtype=np.uint8), 3, axis=-1)
    images = np.concatenate([plain, flair_only])
    groups = np.array(["p"] * 3 + ["f"] * 3)
    x = prepare_input(images, "patient_percentile", groups)
    m0, m1 = keras.models.load_model(main), keras.models.load_model(flair)

    def hflip_mean(m):
        return (m(x).numpy() + np.flip(m(np.flip(x, axis=2)).numpy(), axis=2)) / 2

    expected = np.concatenate([hflip_mean(m0)[:3], hflip_mean(m1)[3:]])
    assert np.abs(hflip_mean(m0)[3:] - hflip_mean(m1)[3:]).max() > 1e-3  # the two models differ
    gate = build_gate_cnn((SIZE, SIZE, 3), width=0.25)
    for backend in ("keras", "onnx"):
        pipe = ClassSegPipeline(gate, str(main), threshold=0.0, backend=backend, onnx_dir=tmp_path / "onnx")
        seg = pipe.models["segmenter"]
        rows = seg.flair_rows(list(images), list(groups))
        assert rows.tolist() == [False] * 3 + [True] * 3
        got = seg.run(seg.prepare(list(images), list(groups), {}), 4, rows)["mask"]
        np.testing.assert_allclose(got, expected, atol=1e-4)
        notes = pipe.infer(list(images), groups=list(groups)).notes
        assert all("flair-only model" in n for n in notes[3:]) and not any("flair-only" in n for n in notes[:3])

    # selection scores the same routing (no flips here: the config's)
    from types import SimpleNamespace

    import pandas as pd

    masks = np.zeros((6, SIZE, SIZE, 1), np.uint8)
    truth = tmp_path / "truth"
    truth.mkdir()
    import cv2

    paths = []
    for i in range(6):
        cv2.imwrite(str(truth / f"m{i}.png"), masks[i, ..., 0])
        paths.append(str(truth / f"m{i}.png"))
    frame = pd.DataFrame({"patient_id": groups, "slice": [1, 2, 3] * 2, "mask_path": paths})
    val = SimpleNamespace(images=images, masks=masks, labels=np.zeros(6, int), frame=frame)
    scored = score_segmenter(m0, SegmenterConfig(img_size=SIZE, select_postprocess=False), val, flair_model=m1)
    np.testing.assert_allclose(scored["val_probs"], np.concatenate([m0(x).numpy()[:3], m1(x).numpy()[3:]]),
                               atol=1e-5)

    flair.write_bytes(flair.read_bytes() + b"0")  # replaced after the card was written
    with pytest.raises(ModelCheckError, match="sha256"):
        ClassSegPipeline(gate, str(main), threshold=0.0)

"""Slice context (2.5D) and ensembles: known answers, and one path for training, selection and the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_patient

from classseg.data.augment import _flair_transform_class, _zscore_intensity_class
from classseg.data.context import add_context, context_channels, context_index, lone_slices
from classseg.data.standardize import prepare_input
from classseg.models.card import ModelCard, model_sha256, read_card, write_card
from classseg.models.predict import EnsembleRunner, member_paths, predict

SIZE = 32


def test_context_index_clamps_inside_each_patient_in_slice_order() -> None:
    groups = ["a", "a", "a", "b", "b", None]
    assert context_index(groups, 6, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4],
                                                    [5, 5, 5]]
    # slice numbers given out of order: neighbours follow the numbers, not the rows
    assert context_index(["a", "a", "a"], 3, 1, order=[3, 1, 2]).tolist() == [[2, 0, 0], [1, 1, 2], [1, 2, 0]]
    assert context_index(["a"] * 3, 3, 2).tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
    assert context_index(None, 2, 1).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert context_index(["a", "b"], 2, 0).tolist() == [[0], [1]]
    assert lone_slices(["a", "a", "b", None], 4).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="0..4"):
        context_index(["a"], 1, 5)


def test_add_context_stacks_neighbours_as_channel_triplets() -> None:
    x = np.arange(3, dtype=np.float32)[:, None, None, None] * 10 + np.arange(3, dtype=np.float32)  # (3,1,1,3)
    out = add_context(x, ["p", "p", "p"], 1)
    assert out.shape == (3, 1, 1, 9) and context_channels(1) == 9
    # slice 1: [slice 0's three channels, its own, slice 2's]
    assert out[1, 0, 0].tolist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert out[0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 10, 11, 12]  # first slice repeats itself before
    assert add_context(x, None, 1)[2, 0, 0].tolist() == [20, 21, 22] * 3  # lone slices: copies of themselves
    assert add_context(x, ["p"] * 3, 0) is x


def test_prepare_input_with_context_is_normalisation_then_stacking() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (5, 8, 8, 3), dtype=np.uint8)
    groups = ["a", "a", "a", "b", "b"]
    expected = add_context(prepare_input(images, "patient_percentile", groups), groups, 1)
    np.testing.assert_array_equal(prepare_input(images, "patient_percentile", groups, context=1), expected)


def test_missing_sequence_and_intensity_transforms_treat_every_neighbour_alike() -> None:
    img = np.arange(9, dtype=np.float32)[None, None, :].repeat(2, 0).repeat(2, 1)  # channels 0..8
    out = _flair_transform_class()(p=1.0).apply(img, channels=(0, 2))
    assert out[0, 0].tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]  # FLAIR (the middle of each triplet) everywhere
    z = _zscore_intensity_class()(p=1.0).apply(img, gain=[2.0, 1.0, 0.5], offset=[0.0, 1.0, 0.0], noise=0.0)
    assert z[0, 0].tolist() == pytest.approx([0, 2, 1, 6, 5, 2.5, 12, 8, 4])


class _Constant:
    """A runner double: every slice's mask probability is ``value``."""

    def __init__(self, value: float, name: str = "mask") -> None:
        self.value, self.name, self.input_size, self.output_names = value, name, (4, 4), [name]

    def __call__(self, x):
        return {self.name: np.full((len(x), 4, 4, 1), self.value, np.float32)}


def test_ensemble_runner_is_the_mean_of_its_members() -> None:
    x = np.zeros((3, 4, 4, 3), np.float32)
    out = predict(EnsembleRunner([_Constant(0.2), _Constant(0.9, "other_name"), _Constant(0.4)]), x, batch_size=2)
    np.testing.assert_allclose(out["mask"], 0.5, atol=1e-7)
    with pytest.raises(ValueError, match="at least one"):
        EnsembleRunner([])


def _models(tmp_path: Path) -> tuple[Path, Path]:
    """A 9-channel (context 1) ResUNet with a card naming a second member as its ensemble."""
    import keras

    from classseg.models.resunet import build_resunet

    paths = []
    for k, name in enumerate(("seg.keras", "seg_member1.keras")):
        keras.utils.set_random_seed(k)
        model = build_resunet((SIZE, SIZE, 9), width=0.25)
        model.save(tmp_path / name)
        paths.append(tmp_path / name)
    write_card(paths[0], ModelCard(role="segmenter", img_size=SIZE, normalization="patient_percentile",
                                   context_slices=1, tta="hflip", postprocess={"threshold": 0.5},
                                   ensemble=[{"file": paths[1].name, "sha256": model_sha256(paths[1])}]))
    return paths[0], paths[1]


def test_card_round_trips_context_and_ensemble_and_refuses_bad_values(tmp_path: Path) -> None:
    main, member = _models(tmp_path)
    card = read_card(main)
    assert card.context_slices == 1 and card.ensemble == [{"file": member.name, "sha256": model_sha256(member)}]
    assert member_paths(main, card) == [member]
    for bad, match in [({"context_slices": 7}, "context_slices"), ({"context_slices": 1.5}, "context_slices"),
                       ({"ensemble": []}, "ensemble"), ({"ensemble": [{"file": "../x.keras", "sha256": "0" * 64}]},
                                                        "file name"),
                       ({"ensemble": [{"file": "x.keras"}]}, "exactly")]:
        with pytest.raises(ValueError, match=match):
            ModelCard(role="segmenter", img_size=SIZE, **bad)
    member.write_bytes(member.read_bytes() + b"0")  # a member replaced after the card was written
    with pytest.raises(ValueError, match="sha256"):
        member_paths(main, card)


def _patient_tree(tmp_path: Path) -> tuple[Path, object]:
    from classseg.data import discover

    data = tmp_path / "kaggle_3m"
    for k in range(2):
        write_patient(data, f"TCGA_CX_000{k}_20000101", n_slices=4, size=SIZE, tumor_slices=(2, 3), seed=k)
    return data, discover(data)


def test_context_and_ensemble_identical_in_training_selection_and_pipeline(tmp_path: Path) -> None:
    import keras

    from classseg import data as cdata
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline
    from classseg.training.segmenter import SegmenterConfig, model_inputs, predict_with_card, score_segmenter

    main, member = _models(tmp_path)
    _, frame = _patient_tree(tmp_path)
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows out of slice order
    arrays = cdata.load_arrays(frame, SIZE, progress=False)
    # training's inputs: percentile per patient, then neighbours in slice order
    x = model_inputs(arrays, "patient_percentile", 1)
    m0, m1 = keras.models.load_model(main), keras.models.load_model(member)
    flip = np.flip(x, axis=2)
    expected = np.mean([(m(x).numpy() + np.flip(m(flip).numpy(), axis=2)) / 2 for m in (m0, m1)], axis=0)
    # the card's reading (selection, gate training, run-all)
    _, probs, _, _ = predict_with_card(main, frame)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    # selection's scoring of the two models as an ensemble
    frame["split"] = "val"
    scored = score_segmenter([m0, m1], SegmenterConfig(img_size=SIZE, context=1, select_postprocess=False),
                             arrays)
    np.testing.assert_allclose(scored["val_probs"], np.mean([m(x).numpy() for m in (m0, m1)], axis=0), atol=1e-5)
    # the pipeline: one patient at a time, slices in slice order, on Keras and on ONNX Runtime
    gate = build_gate_cnn((SIZE, SIZE, 3), width=0.25)
    for backend in ("keras", "onnx"):
        pipe = ClassSegPipeline(gate, str(main), threshold=0.0, backend=backend, onnx_dir=tmp_path / "onnx")
        seg = pipe.models["segmenter"]
        for patient, rows in frame.groupby("patient_id"):
            rows = rows.sort_values("slice")
            images = [arrays.images[i] for i in rows.index]
            got = seg.run(seg.prepare(images, [patient] * len(images), {}), 4)["mask"]
            np.testing.assert_allclose(got, expected[rows.index.to_numpy()], atol=1e-4)


def test_a_lone_slice_gets_copies_of_itself_and_a_note(tmp_path: Path) -> None:
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline

    main, _ = _models(tmp_path)
    pipe = ClassSegPipeline(build_gate_cnn((SIZE, SIZE, 3), width=0.25), str(main), threshold=0.0)
    image = np.random.default_rng(0).integers(0, 200, (40, 40, 3), dtype=np.uint8)
    result = pipe.infer([image])
    assert result.masks[0].shape == (40, 40)
    assert "copies of itself" in result.notes[0]
    seg = pipe.models["segmenter"]
    assert seg.prepare([image], None, {}).shape == (1, SIZE, SIZE, 9)


def test_a_card_whose_context_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    from classseg.models.check import ModelCheckError
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline

    main, _ = _models(tmp_path)
    card = read_card(main)
    write_card(main, ModelCard(**{**card.__dict__, "context_slices": 2}))
    with pytest.raises(ModelCheckError, match="context_slices 2"):
        ClassSegPipeline(build_gate_cnn((SIZE, SIZE, 3), width=0.25), str(main), threshold=0.0)


def test_train_segmenter_with_context_writes_it_to_the_card_and_the_pipeline_runs_it(tmp_path: Path) -> None:
    from classseg.cli import main
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline

    data, _ = _patient_tree(tmp_path)
    for k in range(2, 4):
        write_patient(data, f"TCGA_CX_000{k}_20000101", n_slices=4, size=SIZE, tumor_slices=(2, 3), seed=k)
    out = tmp_path / "run"
    rc = main(["train-segmenter", str(data), "--img-size", str(SIZE), "--epochs", "1", "--batch-size", "8",
               "--width", "0.25", "--context", "1", "--out", str(out), "--quiet", "--workers", "1"])
    assert rc == 0
    card = read_card(out / "segmenter.keras")
    assert card.context_slices == 1
    pipe = ClassSegPipeline(build_gate_cnn((SIZE, SIZE, 3), width=0.25), str(out / "segmenter.keras"))
    images = [np.random.default_rng(k).integers(0, 200, (SIZE, SIZE, 3), dtype=np.uint8) for k in range(3)]
    assert len(pipe.predict(images, groups=["p"] * 3)) == 3


def test_ensemble_command_writes_a_card_the_pipeline_runs_as_the_mean(segmenter_cli_run, tmp_path: Path) -> None:
    from dataclasses import replace

    import keras

    from classseg.cli import main
    from classseg.data import discover, resolve_splits
    from classseg.models.resunet import build_resunet
    from classseg.training.segmenter import predict_with_card

    data, run, split_file = segmenter_cli_run
    first = tmp_path / "first.keras"  # a copy: the shared run folder stays as it is
    first.write_bytes((run / "segmenter.keras").read_bytes())
    write_card(first, read_card(run / "segmenter.keras"))
    keras.utils.set_random_seed(3)
    second = tmp_path / "other.keras"
    build_resunet((32, 32, 3), width=0.5).save(second)
    write_card(second, read_card(first))  # fed alike, bound to its own file
    out = tmp_path / "ens"
    assert main(["ensemble", str(first), str(second), "--data", str(data), "--splits", str(split_file),
                 "--out", str(out), "--quiet"]) == 0
    card = read_card(out / "segmenter.keras")
    assert [m["file"] for m in card.ensemble] == ["segmenter.member1.keras"]
    assert card.provenance["kind"] == "ensemble"
    # the ensemble's card read as the pipeline reads it = the mean of the members fed with the same flips
    frame = resolve_splits(discover(data), split_file)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    _, probs, _, _ = predict_with_card(out / "segmenter.keras", test)
    singles = []
    for path in (first, second):
        write_card(path, replace(read_card(path), tta=card.tta))
        singles.append(predict_with_card(path, test)[1])
    np.testing.assert_allclose(probs, np.mean(singles, axis=0), atol=1e-5)
    # a second ensemble into the finished folder is refused without --overwrite
    with pytest.raises(SystemExit, match="overwrite"):
        main(["ensemble", str(first), str(second), "--data", str(data), "--splits", str(split_file),
              "--out", str(out), "--quiet"])


def test_export_writes_every_members_onnx_and_the_pipeline_runs_them(tmp_path: Path) -> None:
    from classseg.cli import main as cli
    from classseg.models.resunet import build_gate_cnn
    from classseg.pipeline import ClassSegPipeline

    main, member = _models(tmp_path)
    assert cli(["export", str(main)]) == 0
    assert main.with_suffix(".onnx").is_file() and member.with_suffix(".onnx").is_file()
    images = [np.random.default_rng(k).integers(0, 200, (SIZE, SIZE, 3), dtype=np.uint8) for k in range(3)]
    gate = build_gate_cnn((SIZE, SIZE, 3), width=0.25)
    masks = {}
    for backend in ("keras", "onnx"):
        pipe = ClassSegPipeline(gate, str(main), threshold=0.0, backend=backend)
        if backend == "onnx":
            runners = pipe.models["segmenter"].runner.runners
            assert [Path(r.path).name for r in runners] == ["seg.onnx", "seg_member1.onnx"]
        seg = pipe.models["segmenter"]
        masks[backend] = seg.run(seg.prepare(images, ["p"] * 3, {}), 2)["mask"]
    np.testing.assert_allclose(masks["onnx"], masks["keras"], atol=1e-4)

"""Prediction on arrays (classseg.models.predict): batching, outputs by role, P(tumor), flips, ONNX, timing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from classseg.models.predict import (  # noqa: E402
    KerasRunner,
    inference_ms_per_slice,
    make_runner,
    predict,
    tumor_probability,
)

SIZE = 16


def _trunk(inputs: keras.KerasTensor) -> keras.KerasTensor:
    # 1x1 convolutions only: every flip of the input flips the feature maps the same way
    x = keras.layers.Rescaling(1 / 255)(inputs)
    return keras.layers.Conv2D(4, 1, activation="relu")(x)


def _classifier() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(_trunk(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probs")(x))


def _segmenter() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid", name="seg")(_trunk(inputs)))


def _joint() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = _trunk(inputs)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    cls = keras.layers.Dense(2, activation="softmax", name="class")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, [mask, cls])


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, SIZE, SIZE, 3)).astype(np.uint8)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("build, roles", [(_classifier, {"class"}), (_segmenter, {"mask"}),
                                          (_joint, {"class", "mask"})])
def test_outputs_by_role_and_batching_changes_nothing(build, roles, pixels) -> None:
    runner = KerasRunner(build())
    whole = predict(runner, pixels, batch_size=len(pixels))
    assert set(whole) == roles
    if "class" in whole:
        assert whole["class"].shape == (7, 2) and whole["class"].dtype == np.float32
    if "mask" in whole:
        assert whole["mask"].shape == (7, SIZE, SIZE, 1) and whole["mask"].dtype == np.float32
    batched = predict(runner, pixels, batch_size=3)  # 3 + 3 + 1
    for role in roles:
        _close(batched[role], whole[role])
    empty = predict(runner, pixels[:0])
    assert {k: v.shape[1:] for k, v in empty.items()} == {k: v.shape[1:] for k, v in whole.items()}
    assert all(len(v) == 0 for v in empty.values())


def test_tumor_probability_rule() -> None:
    softmax = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    np.testing.assert_array_equal(tumor_probability(softmax), np.float32([0.1, 0.8]).astype(np.float64))
    np.testing.assert_array_equal(tumor_probability(np.array([[0.3], [0.7]])), [0.3, 0.7])  # sigmoid unit
    np.testing.assert_array_equal(tumor_probability([0.3, 0.7]), [0.3, 0.7])  # already P(tumor)
    assert tumor_probability(np.zeros((0, 2))).shape == (0,)
    assert tumor_probability(softmax).dtype == np.float64
    with pytest.raises(ValueError, match="3 classes"):
        tumor_probability(np.full((2, 3), 1 / 3))


def test_hflip_of_a_flip_equivariant_model_is_the_plain_answer(pixels) -> None:
    runner = KerasRunner(_joint())
    plain = predict(runner, pixels)
    for mode in ("hflip", "flips"):
        flipped = predict(runner, pixels, tta=mode)
        for role in ("class", "mask"):
            _close(flipped[role], plain[role])


def test_callables_are_runners_and_timing_is_positive(pixels) -> None:
    def double(x: np.ndarray) -> dict[str, np.ndarray]:  # a test double: not a Keras model
        return {"out": np.stack([1 - x[:, 0, 0, 0] / 255, x[:, 0, 0, 0] / 255], axis=1)}

    assert make_runner(double) is double
    probs = tumor_probability(predict(double, pixels, batch_size=2)["class"])
    np.testing.assert_allclose(probs, pixels[:, 0, 0, 0] / 255, rtol=1e-6)
    assert inference_ms_per_slice(_classifier(), pixels, batch_size=4, min_seconds=0.0, max_reps=3) > 0


def test_onnx_runner_agrees_with_keras(tmp_path, pixels) -> None:
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    model = _joint()
    runner = make_runner(model, backend="onnx", onnx_dir=tmp_path)
    assert runner.path.is_file() and runner.path.parent == tmp_path
    got, want = predict(runner, pixels, batch_size=3), predict(model, pixels, batch_size=3)
    assert set(got) == set(want) == {"class", "mask"}
    for role in want:
        np.testing.assert_allclose(got[role], want[role], atol=1e-5)

"""Backbone registry, in-model preprocessing and the offline ImageNet error."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402

from classseg.models.backbones import BACKBONES, CaffePreprocess, get_backbone, get_spec, preprocessing_layer  # noqa: E402

EXPECTED = {"resnet50", "resnet50v2", "resnet101", "resnet152", "inceptionresnetv2", "efficientnetb0",
            "efficientnetb7", "mobilenetv2", "resunet_encoder", "resunet_decoder", "gate_encoder"}


def _pixels(n=2, size=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_registry_names_and_modes():
    assert set(BACKBONES) == EXPECTED
    modes = {name: spec.preprocess_mode for name, spec in BACKBONES.items()}
    assert modes["resnet50"] == modes["resnet101"] == modes["resnet152"] == "caffe"
    assert modes["resnet50v2"] == modes["inceptionresnetv2"] == modes["mobilenetv2"] == "tf"
    assert modes["efficientnetb0"] == modes["efficientnetb7"] == "raw"
    assert modes["resunet_encoder"] == modes["resunet_decoder"] == modes["gate_encoder"] == "raw"  # rescale inside
    assert get_spec(" ResNet50 ").name == "resnet50"


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_spec("resnet18")
    msg = str(info.value)
    assert "resnet18" in msg and all(name in msg for name in EXPECTED)


def test_caffe_layer_matches_keras_preprocess_input():
    x = _pixels()
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(CaffePreprocess()(x)), expected, atol=1e-4)
    # pure red pixel -> BGR (0, 0, 255) minus the BGR mean
    red = np.zeros((1, 1, 1, 3), "float32")
    red[..., 0] = 255
    np.testing.assert_allclose(np.asarray(CaffePreprocess()(red)).ravel(),
                               [-103.939, -116.779, 255 - 123.68], atol=1e-4)


def test_tf_mode_matches_keras_preprocess_input_and_raw_is_none():
    x = _pixels()
    expected = keras.applications.mobilenet_v2.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(preprocessing_layer("tf")(x)), expected, atol=1e-5)
    assert preprocessing_layer("raw") is None
    with pytest.raises(ValueError):
        preprocessing_layer("torch")


def test_caffe_layer_serialises():
    layer = CaffePreprocess(name="preprocess")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    x = _pixels(seed=1)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_backbone_takes_raw_pixels_and_feature_layers_have_strides(name):
    model = get_backbone(name, (64, 64, 3), weights=None)
    assert model.layers[1].name == "preprocess"
    sizes = [model.get_layer(n).output.shape[1] for n in BACKBONES[name].feature_layers]
    assert sizes == [32, 16, 8, 4, 2]
    assert model.output.shape[1:3] == (2, 2)


def test_efficientnet_has_no_extra_preprocessing():
    model = get_backbone("efficientnetb0", (32, 32, 3), weights=None)
    assert "preprocess" not in [layer.name for layer in model.layers]


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="inceptionresnetv2 needs .* >= 75"):
        get_backbone("inceptionresnetv2", (64, 64, 3), weights=None)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        get_backbone("mobilenetv2", (32, 32, 3), weights=tmp_path / "nope.h5")


def test_local_weights_file_is_loaded(tmp_path):
    source = get_backbone("mobilenetv2", (32, 32, 3), weights=None)
    # keras.applications loads a headless network's weights file (here: written by Keras)
    net = source.get_layer("Conv1")
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    headless = keras.Model(source.layers[1].output, source.output)
    headless.save_weights(path)
    loaded = get_backbone("mobilenetv2", (32, 32, 3), weights=path)
    np.testing.assert_array_equal(loaded.get_layer("Conv1").get_weights()[0], net.get_weights()[0])


def test_offline_imagenet_raises_helpful_runtime_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError) as info:
        get_backbone("resnet50", (32, 32, 3), weights="imagenet")
    msg = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert ".keras/models" in msg and "--weights PATH" in msg and "--weights none" in msg
    with pytest.raises(RuntimeError, match="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"):
        get_backbone("mobilenetv2", (128, 128, 3), weights="imagenet")


def test_efficientnet_local_imagenet_file_is_fed_like_keras_imagenet(tmp_path, monkeypatch):
    """Defect: with ``--weights PATH`` Keras skipped the ImageNet rescaling it adds for ``weights="imagenet"``."""
    net = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    norm = next(layer for layer in net.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]), np.array(0)])
    path = tmp_path / "efficientnetb0_notop.weights.h5"  # an ImageNet-like file kept locally
    net.save_weights(path)
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(path))  # "imagenet" = this file
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(64, 64, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    local = get_backbone("efficientnetb0", (64, 64, 3), weights=path)
    want = reference.predict(x, verbose=0)
    # random-weight features are ~1e-5 (a fixed atol=1e-4 accepted anything, even zeros or the skipped
    # rescaling): compare at their scale; float32 round-off here is ~1e-6 of it
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(local.predict(x, verbose=0), want, rtol=1e-4, atol=1e-4 * scale)
    # weights not derived from ImageNet (Normalization never adapted) load as Keras loads them
    plain = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    other = tmp_path / "scratch.weights.h5"
    plain.save_weights(other)
    assert "imagenet_stddev_rescaling" not in [layer.name for layer in
                                               get_backbone("efficientnetb0", (64, 64, 3), weights=other).layers]


def test_weights_option_is_read_one_way():
    from classseg.models.names import parse_weights

    assert [parse_weights(v) for v in (None, "", "none", " None ", "NONE")] == [None] * 5
    assert parse_weights("imagenet") == "imagenet" and parse_weights("w/resnet.h5") == "w/resnet.h5"

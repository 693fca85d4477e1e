"""Frozen-backbone classifier: exact parameter counts, truly frozen backbone, cached head == end-to-end."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from classseg.models.classifier import (  # noqa: E402
    FrozenBackbone,
    backbone_of,
    build_classifier,
    build_head,
    fine_tune,
    head_of,
    load_classifier,
    split_head,
)


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _pixels(n=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name, expected", [("resnet50", 35_917_570), ("mobilenetv2", 23_334_658)])
def test_paper_head_exact_trainable_params_at_256(name, expected):
    model = build_classifier(name, (256, 256, 3), weights=None, head="paper")
    assert _trainable(model) == expected
    assert _trainable(head_of(model)) == expected  # everything trainable is in the head
    assert not model.get_layer("backbone").trainable


def test_paper_head_layers_follow_figure_2():
    head = build_head((8, 8, 2048), "paper")
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [1024, 1024, 1024, 256, 2]
    assert [d.count_params() for d in dense[1:]] == [1_049_600, 1_049_600, 262_400, 514]  # Figure 2
    drops = [layer.rate for layer in head.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops == [0.3] * 4
    gap = build_head((1, 1, 1280), "gap", dropout=0.5)
    assert _trainable(gap) == 1280 * 2 + 2
    with pytest.raises(ValueError, match="unknown head"):
        build_head((1, 1, 8), "mlp")


def test_split_head_shares_weights():
    head = build_head((2, 2, 16), "paper")
    fixed, trainable = split_head(head)
    assert fixed.count_params() == 0
    assert {id(v) for v in trainable.weights} == {id(v) for v in head.weights}
    feats = np.random.default_rng(0).normal(size=(3, 2, 2, 16)).astype("float32")
    np.testing.assert_array_equal(np.asarray(trainable(fixed(feats))), np.asarray(head(feats)))


def test_fit_leaves_every_backbone_variable_bit_identical():
    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenetv2", (32, 32, 3), weights=None, head="gap")
    net = backbone_of(model)
    bn = [v for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)
          for v in layer.weights]
    assert any("moving_mean" in v.path for v in bn) and any("moving_variance" in v.path for v in bn)
    before = [np.array(v) for v in net.weights]
    head_before = [np.array(v) for v in head_of(model).weights]
    x, y = _pixels(8), keras.utils.to_categorical([0, 1] * 4, 2)
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    after = [np.array(v) for v in net.weights]
    assert len(before) == len(after) == len(net.weights)
    for b, a, v in zip(before, after, net.weights, strict=True):
        assert np.array_equal(b, a), f"backbone variable changed: {v.path}"
    assert any(not np.array_equal(b, np.array(v)) for b, v in zip(head_before, head_of(model).weights, strict=True))


def test_backbone_ignores_outer_training_flag():
    # EfficientNet has stochastic-depth Dropout inside: it must stay off while the head trains.
    keras.utils.set_random_seed(0)
    model = build_classifier("efficientnetb0", (32, 32, 3), weights=None, head="gap", dropout=0.0)
    x = _pixels(4)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))
    assert isinstance(model.get_layer("backbone"), FrozenBackbone)


def test_cached_feature_head_equals_end_to_end():
    keras.utils.set_random_seed(1)
    model = build_classifier("resnet50", (32, 32, 3), weights=None, head="paper")
    x = _pixels(6, seed=2)
    fixed, trainable = split_head(head_of(model))
    feats = np.asarray(fixed(model.get_layer("backbone")(x)))
    # train the head on cached features only, then compare with the end-to-end model
    trainable.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    trainable.fit(feats, keras.utils.to_categorical([0, 1, 0, 1, 0, 1], 2), epochs=1, verbose=0)
    cached = np.asarray(trainable.predict(feats, verbose=0))
    end_to_end = np.asarray(model.predict(x, verbose=0))
    # The random head saturates (P ~ 1 and ~1e-10): an absolute atol=1e-5 would accept any small P.
    # Compare relatively: a small P's relative round-off is the absolute round-off of its logit gap (~20).
    np.testing.assert_allclose(cached, end_to_end, rtol=1e-3, atol=0)


def test_save_and_load_roundtrip(tmp_path):
    model = build_classifier("resnet50", (32, 32, 3), weights=None, head="gap")
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = load_classifier(path)
    x = _pixels(3, seed=3)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    assert loaded.get_layer("backbone").layer.layers[1].name == "preprocess"
    assert _trainable(loaded) == _trainable(model)


def test_fine_tune_unfreezes_top_layers_but_not_batchnorm():
    model = build_classifier("mobilenetv2", (32, 32, 3), weights=None, head="gap")
    net = backbone_of(model)
    fine_tune(model, 10)
    top = net.layers[-10:]
    for layer in net.layers:
        expected = layer in top and not isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == expected, layer.name
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert _trainable(model) > _trainable(head_of(model))
    fine_tune(model, 0)
    assert _trainable(model) == _trainable(head_of(model))


def test_train_backbone_option_trains_everything_and_batchnorm(tmp_path) -> None:
    """--train-backbone (from scratch with weights=None): every weight trains, BN statistics move."""
    from classseg.models.classifier import backbone_of

    model = build_classifier("resunet_encoder", (32, 32, 3), weights=None, head="gap", train_backbone=True)
    net = backbone_of(model)
    assert len(model.trainable_weights) > len(head_of(model).trainable_weights)
    moving_mean = next(w for w in net.non_trainable_weights if "moving_mean" in w.path)
    before = moving_mean.numpy().copy()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.fit(x, np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
    assert not np.array_equal(before, moving_mean.numpy())


def test_resunet_encoder_takes_a_trained_segmenter(tmp_path) -> None:
    from classseg.models.resunet import build_resunet

    seg = build_resunet((32, 32, 3))
    path = tmp_path / "segmenter.keras"
    seg.save(path)
    model = build_classifier("resunet_encoder", (64, 64, 3), weights=str(path), head="gap")
    from classseg.models.classifier import backbone_of

    kernel = next(w for w in backbone_of(model).weights if "bottleneck_conv2" in w.path and "kernel" in w.path)
    want = next(w for w in seg.weights if "bottleneck_conv2" in w.path and "kernel" in w.path)
    np.testing.assert_array_equal(kernel.numpy(), want.numpy())
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_classifier("resunet_encoder", (32, 32, 3), weights="imagenet", head="gap")


def test_resunet_decoder_backbone_with_gapmax_head() -> None:
    """The gate design: frozen ResUNet decoder features + mask, [GAP, GMP] head (2 x 17 features)."""
    model = build_classifier("resunet_decoder", (32, 32, 3), weights=None, head="gapmax")
    assert head_of(model).get_layer("pool").output.shape[-1] == 2 * (16 + 1)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2 * 17 * 2 + 2
    x = np.zeros((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("head", ["gap", "gapmax", "paper"])
def test_split_head_keeps_dropout_on_the_trained_side(head: str) -> None:
    model = build_classifier("mobilenetv2", (32, 32, 3), weights=None, head=head)
    fixed, trainable = split_head(head_of(model))
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in fixed.layers)
    assert isinstance(trainable.layers[1], keras.layers.Dropout) or head == "paper"

"""Frozen-backbone slice classifier with the dense head of seed paper 002 (Figure 2).

The end-to-end model is ``image (raw RGB 0..255) -> "backbone" -> "head" -> softmax(2)``:

* ``"backbone"`` is a :class:`FrozenBackbone` wrapping :func:`~classseg.models.backbones.get_backbone`
  (preprocessing layer + headless ``keras.applications`` network), ``trainable=False`` and always
  run in inference mode;
* ``"head"`` is the separate Functional model of :func:`build_head`, so a head trained on cached
  backbone features *is* the head of the end-to-end model (same layer objects, same weights).
"""

from __future__ import annotations

from pathlib import Path

import keras

from classseg.models.backbones import get_backbone, get_spec

HEADS = ("paper", "gap", "gapmax")

#: Seed 002, Figure 2: Dense 1024-1024-1024-256 (ReLU), each followed by Dropout.
PAPER_UNITS = (1024, 1024, 1024, 256)


@keras.saving.register_keras_serializable(package="classseg")
class FrozenBackbone(keras.layers.Wrapper):
    """Runs the wrapped backbone with ``training=False`` whatever the outer call says.

    Hand-written because Keras 3 Functional models propagate the outer ``training`` flag into
    nested layers and override a ``training=False`` given at graph-construction time
    (``keras.src.models.functional.operation_fn``). BatchNormalization would still be safe
    (frozen BN runs in inference mode), but EfficientNet's stochastic-depth Dropout would not.
    This layer's ``call`` has no ``training`` argument, so nothing is propagated through it.
    """

    def call(self, inputs):
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def build_head(
    feature_shape: tuple[int, ...],
    head: str = "paper",
    num_classes: int = 2,
    dropout: float = 0.3,
    name: str = "head",
) -> keras.Model:
    """Classification head on backbone features of shape ``(h, w, c)``.

    ``"paper"`` (seed 002, Figure 2): AveragePooling2D(2x2) -> Flatten -> Dense 1024, 1024, 1024,
    256 (ReLU), each followed by Dropout(``dropout``) -> Dense(``num_classes``, softmax).
    Pooling uses ``padding="same"`` so tiny inputs (1x1 features) work; for even feature maps
    (8x8 at 256 px) it equals the paper's valid pooling.
    ``"gap"``: GlobalAveragePooling2D -> Dropout -> Dense softmax.
    ``"gapmax"``: [GlobalAveragePooling2D, GlobalMaxPooling2D] concatenated -> Dropout -> Dense
    softmax; the max keeps small, local findings (a small tumor) that averaging dilutes.
    The layers before the first Dense have no weights; :func:`split_head` separates them.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    inputs = keras.Input(tuple(feature_shape), name="features")
    if head == "paper":
        x = keras.layers.AveragePooling2D(pool_size=2, padding="same", name="pool")(inputs)
        x = keras.layers.Flatten(name="flatten")(x)
        for i, units in enumerate(PAPER_UNITS, start=1):
            x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    elif head == "gapmax":
        x = keras.layers.Concatenate(name="pool")([keras.layers.GlobalAveragePooling2D(name="pool_avg")(inputs),
                                                   keras.layers.GlobalMaxPooling2D(name="pool_max")(inputs)])
        x = keras.layers.Dropout(dropout, name="dropout_1")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
        x = keras.layers.Dropout(dropout, name="dropout_1")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def split_head(head: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(fixed, trainable)``: the weight-free prefix of ``head`` (pooling, flatten) and the rest.

    Both share the layers of ``head``: fitting ``trainable`` on ``fixed(features)`` trains
    ``head`` itself. Caching pooled features is 4x smaller than raw feature maps for "paper".
    """
    layers = head.layers[1:]  # skip the InputLayer
    first = next(i for i, layer in enumerate(layers) if layer.weights)
    while first > 0 and isinstance(layers[first - 1], keras.layers.Dropout):
        first -= 1  # Dropout must stay on the trained side, or cached-feature training never drops
    if first == 0:
        return keras.Model(head.input, head.input, name="head_fixed"), head
    cut = layers[first - 1].output
    fixed = keras.Model(head.input, cut, name="head_fixed")
    trainable = keras.Model(cut, head.output, name="head_trainable")
    return fixed, trainable


def build_classifier(
    backbone: str | keras.Model,
    input_shape: tuple[int, int, int] = (256, 256, 3),
    weights: str | Path | None = "imagenet",
    head: str = "paper",
    num_classes: int = 2,
    dropout: float = 0.3,
    train_backbone: bool = False,
) -> keras.Model:
    """Frozen backbone + dense head, taking raw RGB 0..255 of ``input_shape``.

    ``backbone``: a registry name (:data:`~classseg.models.backbones.BACKBONES`) or a
    Keras model that already takes raw pixels. ``weights``: "imagenet", None or a local file
    (see :func:`~classseg.models.backbones.get_backbone`). Only the head is trainable, unless
    ``train_backbone``: then the whole backbone trains end to end with BatchNorm in training
    mode (with ``weights=None`` this is training from scratch, an explicit opt-in that is not
    seed 002's method; used where ImageNet weights are unavailable).
    """
    if isinstance(backbone, str):
        name = get_spec(backbone).name
        net = get_backbone(name, input_shape, weights)
    else:
        name, net = backbone.name, backbone
    inputs = keras.Input(tuple(input_shape), name="image")
    if train_backbone:
        net.trainable = True
        net.name = "backbone"
        features = net(inputs)
    else:
        net.trainable = False
        frozen = FrozenBackbone(net, name="backbone")
        frozen.trainable = False
        features = frozen(inputs)
    head_model = build_head(tuple(features.shape[1:]), head, num_classes, dropout, name="head")
    outputs = head_model(features)
    return keras.Model(inputs, outputs, name=f"{name}_classifier")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone network (raw pixels -> feature map) inside a classifier."""
    layer = model.get_layer("backbone")
    return layer.layer if isinstance(layer, FrozenBackbone) else layer


def head_of(model: keras.Model) -> keras.Model:
    """The head model inside a classifier (trainable on cached features)."""
    return model.get_layer("head")


def fine_tune(model: keras.Model, n_layers: int) -> keras.Model:
    """Unfreeze the top ``n_layers`` backbone layers; BatchNormalization stays frozen.

    The backbone keeps running in inference mode (:class:`FrozenBackbone`), so BN uses its
    moving statistics (the Keras transfer-learning recipe). Recompile the model afterwards.
    ``n_layers <= 0`` freezes the whole backbone again. Returns ``model``.
    """
    wrapper = model.get_layer("backbone")
    net = wrapper.layer
    if n_layers <= 0:
        wrapper.trainable = False
        return model
    wrapper.trainable = True  # sets every sub-layer trainable; re-freeze below
    for layer in net.layers:
        layer.trainable = False
    for layer in net.layers[-n_layers:]:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    return model


def load_classifier(path: str | Path) -> keras.Model:
    """Load a saved ``classifier.keras`` (custom layers are registered by this module)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)  # a Lambda in the file never runs

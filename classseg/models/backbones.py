"""ImageNet backbones (``keras.applications``) that take raw RGB pixels 0..255.

Seed paper 002 (Duong-Trung, "Classification-Segmentation Pipeline for MRI via Transfer
Learning and Residual Networks", Table I) benchmarks ResNet50, ResNet50V2, InceptionResNetV2,
EfficientNetB0 and MobileNetV2 as frozen feature extractors; seed 003 adds ResNet101/152.

Every backbone returned by :func:`get_backbone` carries the preprocessing its ImageNet weights
expect as layers (design.md, "Pixels"), so a saved or exported model needs nothing else:

* ``"caffe"`` (ResNet50/101/152): RGB -> BGR, subtract the ImageNet BGR mean (no scaling),
* ``"tf"`` (ResNet50V2, InceptionResNetV2, MobileNetV2): ``x / 127.5 - 1`` into [-1, 1],
* ``"raw"`` (EfficientNet): nothing, the network rescales and normalises inside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from classseg.models.names import BACKBONE_NAMES, parse_weights

#: ImageNet channel means in BGR order used by the "caffe" mode
#: (``keras.applications.imagenet_utils.preprocess_input``).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

#: ImageNet statistics (RGB, 0..1) of ``keras.applications.efficientnet``: its ``Normalization`` layer holds
#: the mean (and the std as variance), and for ``weights="imagenet"`` Keras adds ``Rescaling(1 / sqrt(std))``.
EFFICIENTNET_MEAN_RGB = (0.485, 0.456, 0.406)
EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one ImageNet backbone.

    ``feature_layers`` names the last layer at stride 2, 4, 8, 16, 32 (for U-Net style
    decoders); ``None`` where Keras gives those layers auto-generated, unstable names.
    ``min_size`` is the smallest input side ``keras.applications`` accepts.
    ``weights_file`` is the no-top ImageNet file name Keras looks for in ``~/.keras/models/``.
    """

    name: str
    constructor: Callable[..., keras.Model]
    preprocess_mode: str
    default_size: int
    feature_layers: tuple[str, ...] | None = None
    min_size: int = 32
    weights_file: str = ""
    #: in-domain backbones: the shipped model (in ``saved_models/``) that ``weights="shipped"`` means
    shipped_model: str = ""

    def imagenet_weights_file(self, img_size: int) -> str:
        """File name of the no-top ImageNet weights for an input of side ``img_size``."""
        if self.name == "mobilenetv2":
            # keras.applications.MobileNetV2 only ships these sizes; others load the 224 file.
            rows = img_size if img_size in (96, 128, 160, 192, 224) else 224
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return self.weights_file


def _trained_resunet(part: str, weights: str | None, input_shape, outputs) -> keras.Model:
    """A ResUNet rebuilt at ``input_shape`` with a trained segmenter's weights (``weights``) or random
    ones (None), cut at ``outputs(model) -> tensor``. The ResUNet is fully convolutional, so any size
    (a multiple of 16) takes the trained weights; its own ``Rescaling(1/255)`` stays inside."""
    from classseg.models.resunet import build_resunet

    if weights == "imagenet":
        raise ValueError(f"{part} has no ImageNet weights: pass weights=PATH to a trained segmenter "
                         ".keras file (classseg train-segmenter), or None for random initialisation")
    model = build_resunet(tuple(input_shape))
    if weights is not None:
        model.set_weights(keras.saving.load_model(weights, compile=False, safe_mode=True).get_weights())
    return keras.Model(model.input, outputs(model), name=part)


def _attach(net: keras.Model, input_tensor) -> keras.Model:
    return net if input_tensor is None else keras.Model(input_tensor, net(input_tensor), name=net.name)


def _resunet_encoder(weights: str | None = None, input_tensor=None, input_shape=None, include_top=False):
    """The encoder (stem to bottleneck) of seed 002's ResUNet."""
    return _attach(_trained_resunet("resunet_encoder", weights, input_shape,
                                    lambda m: m.get_layer("bottleneck_out").output), input_tensor)


def _resunet_decoder(weights: str | None = None, input_tensor=None, input_shape=None, include_top=False):
    """Last decoder features (16 channels) + tumor-probability map of a trained ResUNet."""
    return _attach(_trained_resunet(
        "resunet_decoder", weights, input_shape,
        lambda m: keras.layers.Concatenate(name="decoder_and_mask")([m.get_layer("dec4_out").output, m.output])),
        input_tensor)


def _gate_encoder(weights: str | None = None, input_tensor=None, input_shape=None, include_top=False):
    """The encoder (stem to bottleneck) of a trained gate CNN (:func:`classseg.models.resunet.build_gate_cnn`,
    weights = its ``.keras`` file, e.g. the shipped ``classifier.keras``), rebuilt at ``input_shape``."""
    from classseg.models.loading import copy_weights_by_name, load_model
    from classseg.models.resunet import build_gate_cnn

    if weights == "imagenet":
        raise ValueError("gate_encoder has no ImageNet weights: pass weights=PATH to a trained gate CNN .keras "
                         "file (classseg train-gate), 'shipped', or None for random initialisation")
    width, scale, source = 1.0, 1.0 / 255.0, None
    if weights is not None:
        source = load_model(weights)
        width = source.get_layer("stem_conv1").filters / 16
        scale = 1.0 / 255.0 if any(layer.name == "rescale" for layer in source.layers) else None
    model = build_gate_cnn(tuple(input_shape), width=width, input_scale=scale)
    if source is not None:
        copy_weights_by_name(model, source, label=weights)  # the model loaded above, not a second load
    return _attach(keras.Model(model.input, model.get_layer("bottleneck_out").output, name="gate_encoder"),
                   input_tensor)


def _resnet_file(name: str) -> str:
    return f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "resnet50", keras.applications.ResNet50, "caffe", 224,
            ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
             "conv5_block3_out"),
            weights_file=_resnet_file("resnet50"),
        ),
        BackboneSpec(
            "resnet50v2", keras.applications.ResNet50V2, "tf", 224,
            ("conv1_conv", "conv2_block3_1_relu", "conv3_block4_1_relu", "conv4_block6_1_relu",
             "post_relu"),
            weights_file=_resnet_file("resnet50v2"),
        ),
        BackboneSpec(
            "resnet101", keras.applications.ResNet101, "caffe", 224,
            ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block23_out",
             "conv5_block3_out"),
            weights_file=_resnet_file("resnet101"),
        ),
        BackboneSpec(
            "resnet152", keras.applications.ResNet152, "caffe", 224,
            ("conv1_relu", "conv2_block3_out", "conv3_block8_out", "conv4_block36_out",
             "conv5_block3_out"),
            weights_file=_resnet_file("resnet152"),
        ),
        BackboneSpec(
            # Its activations are auto-named ("activation_74", ...), so no stable feature names.
            "inceptionresnetv2", keras.applications.InceptionResNetV2, "tf", 299, None,
            min_size=75,
            weights_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        BackboneSpec(
            "efficientnetb0", keras.applications.EfficientNetB0, "raw", 224,
            ("block2a_expand_activation", "block3a_expand_activation",
             "block4a_expand_activation", "block6a_expand_activation", "top_activation"),
            weights_file="efficientnetb0_notop.h5",
        ),
        BackboneSpec(
            "efficientnetb7", keras.applications.EfficientNetB7, "raw", 600,
            ("block2a_expand_activation", "block3a_expand_activation",
             "block4a_expand_activation", "block6a_expand_activation", "top_activation"),
            weights_file="efficientnetb7_notop.h5",
        ),
        BackboneSpec(
            # Not an ImageNet network: the encoder of a trained phase-2 ResUNet (weights = its
            # segmenter.keras). In-domain transfer for when ImageNet weights are unavailable.
            "resunet_encoder", _resunet_encoder, "raw", 256,
            ("stem_bn2", "enc2_out", "enc3_out", "enc4_out", "bottleneck_out"), min_size=16,
            shipped_model="segmenter.keras",
        ),
        BackboneSpec(
            # The whole trained ResUNet: its last decoder features (16 channels) and its tumor
            # probability map, concatenated. A gate that reuses what the segmenter learned.
            "resunet_decoder", _resunet_decoder, "raw", 256, None, min_size=16, shipped_model="segmenter.keras",
        ),
        BackboneSpec(
            # The encoder of a gate CNN trained from scratch for tumor / no tumor (weights = its
            # .keras file): in-domain features learned for the classification task itself.
            "gate_encoder", _gate_encoder, "raw", 128,
            ("stem_bn2", "enc2_out", "enc3_out", "enc4_out", "bottleneck_out"), min_size=16,
            shipped_model="classifier.keras",
        ),
        BackboneSpec(
            "mobilenetv2", keras.applications.MobileNetV2, "tf", 224,
            ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
             "block_13_expand_relu", "out_relu"),
        ),
    )
}


if tuple(BACKBONES) != BACKBONE_NAMES:  # the one list of names (classseg.models.names) must match the registry
    raise RuntimeError(f"classseg.models.names.BACKBONE_NAMES {BACKBONE_NAMES} != registry {tuple(BACKBONES)}")


@keras.saving.register_keras_serializable(package="classseg")
class CaffePreprocess(keras.layers.Layer):
    """Caffe-style ImageNet preprocessing: ``y = x[..., ::-1] - mean_bgr``.

    Same as ``keras.applications.resnet50.preprocess_input`` (He et al. 2016, the original
    Caffe ResNet weights), but as a serializable layer so it travels inside the model.
    Implemented as a gather + subtraction, both exportable to ONNX / TFLite.
    """

    def __init__(self, mean: tuple[float, float, float] = CAFFE_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs):
        bgr = ops.take(inputs, [2, 1, 0], axis=-1)
        return bgr - ops.convert_to_tensor(self.mean, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": list(self.mean)}


def preprocessing_layer(mode: str) -> keras.layers.Layer | None:
    """The layer mapping raw RGB 0..255 to what a backbone expects (``None`` for ``"raw"``)."""
    if mode == "caffe":
        return CaffePreprocess(name="preprocess")
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if mode == "raw":
        return None
    raise ValueError(f"unknown preprocess mode {mode!r}; expected 'caffe', 'tf' or 'raw'")


def get_spec(name: str) -> BackboneSpec:
    """Registry lookup; ``KeyError`` listing the valid names for an unknown one."""
    key = name.strip().lower()
    if key not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    return BACKBONES[key]


def _offline_message(spec: BackboneSpec, img_size: int, err: Exception) -> str:
    fname = spec.imagenet_weights_file(img_size)
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"  # as keras get_file
    return (
        f"could not get the ImageNet weights for {spec.name} ({type(err).__name__}: {err}). "
        f"Either place the file '{fname}' in {cache}/ (download it from "
        f"{WEIGHTS_URL} on a machine with network), or pass a local weights file with "
        f"--weights PATH, or train from random initialisation with --weights none."
    )


def get_backbone(
    name: str,
    input_shape: tuple[int, int, int] = (256, 256, 3),
    weights: str | Path | None = "imagenet",
    include_preprocessing: bool = True,
) -> keras.Model:
    """Build a headless ``keras.applications`` backbone.

    ``weights``: ``"imagenet"``, ``None`` (random init) or a path to a local ``.h5`` /
    ``.weights.h5`` file for the headless network. With ``include_preprocessing`` the model
    takes raw RGB 0..255 and its first layer (``"preprocess"``) is the backbone's own
    preprocessing; the backbone layers are inlined, so ``model.get_layer(spec.feature_layers[i])``
    works. Raises ``KeyError`` for an unknown name, ``FileNotFoundError`` for a missing weights
    file and ``RuntimeError`` (saying how to proceed) when ImageNet weights cannot be fetched.
    """
    spec = get_spec(name)
    h, w, c = (int(v) for v in input_shape)
    if c != 3 or min(h, w) < spec.min_size:
        raise ValueError(
            f"{spec.name} needs input shape (H, W, 3) with H, W >= {spec.min_size}, "
            f"got {tuple(input_shape)}"
        )
    if isinstance(weights, str):
        weights = parse_weights(weights)
    if weights == "shipped":  # an in-domain backbone's shipped model (saved_models/ or $CLASSSEG_MODELS)
        from classseg.utils.paths import shipped_model

        if not spec.shipped_model:
            raise ValueError(f"{spec.name} has no shipped in-domain weights; 'shipped' applies to "
                             f"{', '.join(n for n, s in BACKBONES.items() if s.shipped_model)}")
        weights = str(shipped_model(spec.shipped_model))
    if weights is not None and weights != "imagenet":
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        weights = str(weights)

    inputs = keras.Input((h, w, 3), name="image")
    layer = preprocessing_layer(spec.preprocess_mode) if include_preprocessing else None
    x = layer(inputs) if layer is not None else inputs
    kwargs = dict(include_top=False, input_tensor=x, input_shape=(h, w, 3))
    if weights == "imagenet" and not spec.weights_file and spec.name != "mobilenetv2":
        spec.constructor(weights="imagenet")  # raises its own ValueError: no ImageNet weights exist
    if weights == "imagenet":
        try:
            net = spec.constructor(weights="imagenet", **kwargs)
        except Exception as err:  # get_file raises plain Exception / URLError / OSError offline
            raise RuntimeError(_offline_message(spec, min(h, w), err)) from err
    elif weights is not None and spec.name.startswith("efficientnet"):
        net = _efficientnet_from_file(spec, weights, x, (h, w, 3))
    else:
        net = spec.constructor(weights=weights, **kwargs)
    return keras.Model(inputs, net.output, name=f"{spec.name}_backbone")


def _efficientnet_from_file(spec: BackboneSpec, path: str, x: Any, shape: tuple[int, int, int]) -> keras.Model:
    """EfficientNet with a local weights file, fed exactly as Keras feeds it for ``weights="imagenet"``.

    Keras adds ``Rescaling(1 / sqrt(std))`` after the stem's ``Normalization`` only when
    ``weights == "imagenet"``, so a local copy of the ImageNet file (or weights trained from it) got
    inputs about 2x off. Where the file's ``Normalization`` mean is ImageNet's, the same rescaling
    is applied here, as ``y = c x + 255 mean (1 - c)`` before the network (``c = 1 / sqrt(std)``),
    which gives ``c (x / 255 - mean) / sqrt(var)`` after its ``Normalization``: Keras's numbers.
    """
    probe = spec.constructor(weights=path, include_top=False, input_shape=shape)
    norm = next(layer for layer in probe.layers if isinstance(layer, keras.layers.Normalization))
    mean = np.asarray(norm.mean).reshape(-1)
    del probe
    if not np.allclose(mean, EFFICIENTNET_MEAN_RGB, atol=1e-3):  # not ImageNet-derived: as Keras loads it
        return spec.constructor(weights=path, include_top=False, input_tensor=x, input_shape=shape)
    scale = [1.0 / math.sqrt(s) for s in EFFICIENTNET_STDDEV_RGB]
    offset = [255.0 * m * (1.0 - c) for m, c in zip(EFFICIENTNET_MEAN_RGB, scale, strict=True)]
    y = keras.layers.Rescaling(scale, offset=offset, name="imagenet_stddev_rescaling")(x)
    return spec.constructor(weights=path, include_top=False, input_tensor=y, input_shape=shape)

"""ResUNet segmenter of Duong-Trung et al. (seed 002, phase 2), trained from scratch.

The architecture follows the Kaggle "Brain MRI segmentation ResUNet" notebook that seed 002 adapted:
a U-Net whose encoder/decoder levels are residual blocks. At 256x256x3 it has 1,210,513 parameters,
1,206,129 of them trainable (seed 002, Table I). The non-trainable 4,384 are BatchNorm moving statistics.

Layout (``f`` = filters x ``width``)::

    Rescaling(1/255)
    stem: Conv3x3(16, ReLU)-BN-Conv3x3(16, ReLU)-BN            -> skip 1      (H)
    MaxPool2 -> res_block(32)                                 -> skip 2      (H/2)
    MaxPool2 -> res_block(64)                                 -> skip 3      (H/4)
    MaxPool2 -> res_block(128)                                -> skip 4      (H/8)
    MaxPool2 -> res_block(256)  (bottleneck)                                 (H/16)
    [UpSampling2x, concat skip k, res_block(f)] for f, k in (128, 4), (64, 3), (32, 2), (16, 1)
    Conv1x1(1, sigmoid)  -> float32 (H, W, 1)

res_block(x, f) = ReLU( BN(Conv3x3(ReLU(BN(Conv1x1(x))))) + BN(Conv1x1(x)) )   (He et al. 2016 style
residual unit with a projection shortcut).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers


def _res_block(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Residual block: main path 1x1 conv-BN-ReLU, 3x3 conv-BN; projection shortcut 1x1 conv-BN; add; ReLU."""
    shortcut = x
    x = layers.Conv2D(filters, 1, kernel_initializer="he_normal", name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = layers.Activation("relu", name=f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    shortcut = layers.Conv2D(filters, 1, kernel_initializer="he_normal", name=f"{name}_short_conv")(shortcut)
    shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(shortcut)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(x)


def build_resunet(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    width: float = 1.0,
    name: str = "resunet",
    input_scale: float | None = 1.0 / 255.0,
) -> keras.Model:
    """Build seed 002's ResUNet returning a float32 sigmoid mask (H, W, 1).

    ``width`` multiplies every filter count (1.0 = the paper's 1,210,513-parameter model). The spatial
    size must be divisible by 16 (four 2x2 poolings) for the skip connections to line up.
    ``input_scale``: the first layer's ``Rescaling`` factor (1/255 for raw RGB 0..255 pixels, the
    paper's input); None = no rescaling, for inputs that are already normalised (patient z-scores,
    :mod:`classseg.data.standardize`; the model card says which).
    """
    height, wid = input_shape[0], input_shape[1]
    if height is not None and height % 16 or wid is not None and wid % 16:
        raise ValueError(f"ResUNet input size must be divisible by 16, got {input_shape[:2]}")
    f = _filters(width)
    x, inputs = _input(input_shape, input_scale)
    return keras.Model(inputs, _decoder(_encoder(x, f), f), name=name)


def build_resunet_joint(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    width: float = 1.0,
    input_scale: float | None = 1.0 / 255.0,
    multiscale_head: bool = False,
    dropout: float = 0.5,
    num_classes: int = 2,
    name: str = "joint_resunet",
) -> keras.Model:
    """The ResUNet of :func:`build_resunet` with a classification head: a joint multi-task model on the
    *same* encoder-decoder as the two-stage arm, so that joint vs two-stage compares training, not
    architectures.

    Head (seed 000, eq. 6): global average pooling of the bottleneck, dropout ``p = 0.5``, dense softmax.
    ``multiscale_head=True`` (seed 004, Bui et al. 2026): GAP of every encoder level (skips 2-4 and the
    bottleneck; 32 + 64 + 128 + 256 channels at width 1) concatenated before the dropout. Layer names
    of the encoder and decoder are :func:`build_resunet`'s, so a trained segmenter's weights load by
    name (:func:`classseg.training.joint.init_by_name`). Outputs ``{"class": (N, num_classes) softmax,
    "mask": (N, H, W, 1) sigmoid}``, both float32.
    """
    height, wid = input_shape[0], input_shape[1]
    if height is not None and height % 16 or wid is not None and wid % 16:
        raise ValueError(f"ResUNet input size must be divisible by 16, got {input_shape[:2]}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for the softmax head, got {num_classes}")
    f = _filters(width)
    x, inputs = _input(input_shape, input_scale)
    levels = _encoder(x, f)
    mask = _decoder(levels, f)
    if multiscale_head:
        pooled = [layers.GlobalAveragePooling2D(name=f"class_gap{k}")(t) for k, t in enumerate(levels[1:], start=2)]
        feats = layers.Concatenate(name="class_gap_concat")(pooled)
    else:
        feats = layers.GlobalAveragePooling2D(name="class_gap")(levels[-1])
    feats = layers.Dropout(dropout, name="class_dropout")(feats)
    cls = layers.Dense(num_classes, activation="softmax", dtype="float32", name="class")(feats)
    return keras.Model(inputs, {"class": cls, "mask": mask}, name=name)


def _decoder(levels: tuple[keras.KerasTensor, ...], f: Callable[[int], int]) -> keras.KerasTensor:
    """Four [UpSampling2x, concat skip, res_block] steps from the bottleneck, then the sigmoid mask."""
    skip1, skip2, skip3, skip4, x = levels
    for level, (filters, skip) in enumerate(((128, skip4), (64, skip3), (32, skip2), (16, skip1)), start=1):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skip])
        x = _res_block(x, f(filters), f"dec{level}")
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)


def _filters(width: float) -> Callable[[int], int]:
    """The filter count of a layer at ``width``: ``max(1, round(n * width))``."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return lambda n: max(1, int(round(n * width)))


def _input(input_shape: tuple[int, int, int], input_scale: float | None) -> tuple[keras.KerasTensor, ...]:
    """(first tensor, model input): the input, rescaled by ``input_scale`` unless it is None."""
    inputs = keras.Input(shape=input_shape, name="image")
    return (inputs if input_scale is None else layers.Rescaling(input_scale, name="rescale")(inputs)), inputs


def _encoder(x: keras.KerasTensor, f: Callable[[int], int]) -> tuple[keras.KerasTensor, ...]:
    """Stem, three residual down levels and the bottleneck; returns (skip1, skip2, skip3, skip4, bottleneck)."""
    # Stem (the reference notebook's "stage 1": two plain convs, ReLU before BN).
    x = layers.Conv2D(f(16), 3, padding="same", activation="relu", kernel_initializer="he_normal", name="stem_conv1")(x)
    x = layers.BatchNormalization(name="stem_bn1")(x)
    x = layers.Conv2D(f(16), 3, padding="same", activation="relu", kernel_initializer="he_normal", name="stem_conv2")(x)
    skip1 = layers.BatchNormalization(name="stem_bn2")(x)

    x = layers.MaxPooling2D(2, name="pool1")(skip1)
    skip2 = _res_block(x, f(32), "enc2")
    x = layers.MaxPooling2D(2, name="pool2")(skip2)
    skip3 = _res_block(x, f(64), "enc3")
    x = layers.MaxPooling2D(2, name="pool3")(skip3)
    skip4 = _res_block(x, f(128), "enc4")
    x = layers.MaxPooling2D(2, name="pool4")(skip4)
    return skip1, skip2, skip3, skip4, _res_block(x, f(256), "bottleneck")


def build_gate_cnn(input_shape: tuple[int, int, int] = (128, 128, 3), width: float = 1.0,
                   input_scale: float | None = None, dropout: float = 0.3, name: str = "gate_cnn") -> keras.Model:
    """A small tumor / no-tumor CNN trained from scratch: the ResUNet encoder (same blocks and widths),
    global average + max pooling, dropout, softmax 2 (index 1 = tumor). The in-domain alternative to a
    frozen ImageNet backbone where no ImageNet weights can be had."""
    f = _filters(width)
    x, inputs = _input(input_shape, input_scale)
    x = _encoder(x, f)[-1]
    x = layers.Concatenate(name="gapmax")([layers.GlobalAveragePooling2D(name="gap")(x),
                                           layers.GlobalMaxPooling2D(name="gmp")(x)])
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(2, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)

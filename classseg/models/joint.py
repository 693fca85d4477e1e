"""Joint multi-task model: shared ResNet-50 encoder, U-Net decoder (mask) and a softmax head (class).

Seed 000 (Ravikiran et al., "A Hybrid Multi-Task Deep Learning Framework for Brain Tumor
Classification and Segmentation Using ResNet-U-Net Architecture", Sec. III, Fig. 1, eq. 1-6):

* encoder: ImageNet ResNet-50 without its top (He et al. 2016), bottleneck F in R^{7x7x2048} at 224 px;
* segmentation decoder: U-Net style (Ronneberger et al. 2015), transposed convolutions for upsampling
  and skip connections from the encoder; sigmoid per-pixel probability S in R^{224x224x1} (eq. 5);
* classification head on the bottleneck: global average pooling, dropout p = 0.5, dense softmax (eq. 6).

The seed gives no decoder widths or block layout; here each of the five decoder stages is
``Conv2DTranspose(f, 2, stride 2) -> concat(skip) -> 2 x [Conv3x3 -> BatchNorm -> ReLU]`` with
f = 256, 128, 64, 32, 16, skips from ``conv4_block6_out`` (1/16), ``conv3_block4_out`` (1/8),
``conv2_block3_out`` (1/4) and ``conv1_relu`` (1/2); the last stage (back to full resolution) has no
skip. Input sides must be multiples of 32 (224 and 256 both work).

``multiscale_head=True`` follows seed 004 (Bui et al. 2026, "Multi-scale feature enhancement in
multi-task learning for medical image analysis"): the class head pools features of several encoder
levels -- here GAP of stages 2, 3, 4 and 5 (``conv2_block3_out`` ... ``conv5_block3_out``,
256 + 512 + 1024 + 2048 = 3840 channels), concatenated before dropout and the softmax layer.

The model takes raw RGB float32 0..255 (design.md "Pixels"): the first layer is the Caffe-style
ImageNet preprocessing of :mod:`classseg.models.backbones`. Outputs are a dict
``{"class": (N, num_classes) softmax, "mask": (N, H, W, 1) sigmoid}``, both float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from classseg.models.backbones import get_backbone, get_spec

ENCODER = "resnet50"
#: Encoder layers used as U-Net skips, shallow to deep (strides 2, 4, 8, 16).
SKIP_LAYERS = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out")
BOTTLENECK_LAYER = "conv5_block3_out"
#: Encoder levels pooled by the multi-scale class head (seed 004).
MULTISCALE_LAYERS = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _decoder_stage(x: keras.KerasTensor, skip: keras.KerasTensor | None, filters: int,
                   name: str) -> keras.KerasTensor:
    """U-Net up-step: 2x2 stride-2 transposed convolution, concat the encoder skip, two 3x3 conv-BN-ReLU."""
    x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", kernel_initializer="he_normal",
                               name=f"{name}_up")(x)
    if skip is not None:
        x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = _conv_bn_relu(x, filters, f"{name}_a")
    return _conv_bn_relu(x, filters, f"{name}_b")


def build_joint_model(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    weights: str | Path | None = "imagenet",
    num_classes: int = 2,
    multiscale_head: bool = False,
    decoder_filters: Sequence[int] = (256, 128, 64, 32, 16),
    dropout: float = 0.5,
    name: str = "joint_resnet50_unet",
) -> keras.Model:
    """Build seed 000's ResNet-50 U-Net with a classification head (see the module docstring).

    ``weights``: ``"imagenet"``, ``None`` / ``"none"`` (random init) or a path to a local no-top
    ResNet-50 weights file (e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``) for the
    encoder. Offline, ``"imagenet"`` raises ``RuntimeError`` saying where to put the file
    (:func:`classseg.models.backbones.get_backbone`). Returns a model with outputs
    ``{"class": (None, num_classes), "mask": (None, H, W, 1)}``.
    """
    h, w, c = (int(v) for v in input_shape)
    if c != 3:
        raise ValueError(f"the joint model takes RGB input (H, W, 3), got {tuple(input_shape)}")
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise ValueError(f"input sides must be positive multiples of 32 (five 2x downsamplings), got {(h, w)}")
    if len(decoder_filters) != 5:
        raise ValueError(f"decoder_filters needs 5 values (one per upsampling stage), got {tuple(decoder_filters)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for the softmax head, got {num_classes}")

    spec = get_spec(ENCODER)
    assert spec.feature_layers is not None and spec.feature_layers[-1] == BOTTLENECK_LAYER
    encoder = get_backbone(ENCODER, (h, w, 3), weights=weights, include_preprocessing=True)
    skips = [encoder.get_layer(n).output for n in SKIP_LAYERS]
    bottleneck = encoder.get_layer(BOTTLENECK_LAYER).output

    # Segmentation branch: deepest skip first, the last stage returns to full resolution without a skip.
    x = bottleneck
    for i, (filters, skip) in enumerate(zip(decoder_filters, [*reversed(skips), None], strict=True)):
        x = _decoder_stage(x, skip, int(filters), f"dec{i + 1}")
    mask = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)

    # Classification branch on the bottleneck (seed 000) or on several encoder levels (seed 004).
    if multiscale_head:
        pooled = [layers.GlobalAveragePooling2D(name=f"class_gap_{n.split('_')[0]}")(encoder.get_layer(n).output)
                  for n in MULTISCALE_LAYERS]
        feats = layers.Concatenate(name="class_gap_concat")(pooled)
    else:
        feats = layers.GlobalAveragePooling2D(name="class_gap")(bottleneck)
    feats = layers.Dropout(dropout, name="class_dropout")(feats)
    cls = layers.Dense(num_classes, activation="softmax", dtype="float32", name="class")(feats)

    return keras.Model(encoder.input, {"class": cls, "mask": mask}, name=name)

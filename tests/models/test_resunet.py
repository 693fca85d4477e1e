"""ResUNet architecture: seed 002's parameter counts, I/O convention and width scaling."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from classseg.models.resunet import build_resunet  # noqa: E402


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_param_counts_match_seed_002():
    model = build_resunet((256, 256, 3))
    assert model.count_params() == 1_210_513
    assert _trainable(model) == 1_206_129  # seed 002, Table I


def test_io_convention_small():
    model = build_resunet((32, 32, 3))
    assert model.layers[1].__class__.__name__ == "Rescaling"
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 32, 32, 1)
    assert y.dtype == np.float32
    assert np.all((y >= 0) & (y <= 1))


def test_width_scales_params_and_size_check():
    small = build_resunet((32, 32, 3), width=0.5).count_params()
    base = build_resunet((32, 32, 3)).count_params()
    assert small < base / 3  # conv params scale ~ width**2
    assert base == 1_210_513  # parameter count does not depend on the image size
    with pytest.raises(ValueError, match="divisible by 16"):
        build_resunet((40, 40, 3))

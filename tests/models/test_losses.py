"""Focal Tversky / Tversky / Dice / BCE+Dice losses: known values, finiteness, reductions, serialization."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from classseg.models import losses  # noqa: E402


def _masks():
    g = np.zeros((2, 16, 16, 1), "float32")
    g[0, 4:12, 4:12] = 1.0
    g[1, 2:6, 2:6] = 1.0
    return g


def _val(x):
    return float(np.asarray(keras.ops.convert_to_numpy(x)).reshape(-1)[0])


@pytest.mark.parametrize("name", ["focal_tversky", "tversky", "dice", "bce_dice"])
def test_perfect_and_inverted(name):
    g = _masks()
    loss = losses.get_loss(name)
    assert _val(loss(g, g)) == pytest.approx(0.0, abs=2e-3)
    inverted = _val(loss(g, 1.0 - g))
    assert inverted > 0.99  # Tversky-type: ~1 ; BCE+Dice: >> 1
    fn = {"focal_tversky": losses.focal_tversky, "tversky": losses.tversky,
          "dice": losses.dice_loss, "bce_dice": losses.bce_dice}[name]
    assert _val(fn(g, 1.0 - g)) == pytest.approx(inverted, rel=1e-5)


def test_known_tversky_value():
    # 1-D case: g = [1, 1, 0, 0], p = [1, 0, 1, 0]: TP=1, FN=1, FP=1.
    g = np.array([[1, 1, 0, 0]], "float32")
    p = np.array([[1, 0, 1, 0]], "float32")
    ti = _val(losses.tversky_index(g, p, alpha=0.7, beta=0.3, smooth=1.0))
    assert ti == pytest.approx(2.0 / 3.0)  # (1 + 1) / (1 + 0.7 + 0.3 + 1)
    ft = _val(losses.FocalTverskyLoss()(g, p))
    assert ft == pytest.approx((1.0 / 3.0) ** 0.75, rel=1e-5)
    # alpha weights false negatives: missing tumour costs more than a false alarm.
    miss = _val(losses.tversky(np.array([[1, 1, 0, 0]], "float32"), np.array([[1, 0, 0, 0]], "float32")))
    alarm = _val(losses.tversky(np.array([[1, 0, 0, 0]], "float32"), np.array([[1, 1, 0, 0]], "float32")))
    assert miss > alarm


def test_empty_masks_finite():
    z = np.zeros((2, 8, 8, 1), "float32")
    for name in losses.LOSSES:
        value = _val(losses.get_loss(name)(z, z))
        assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("reduction", ["batch", "image"])
def test_gradients_finite_at_perfect_prediction(reduction):
    g = tf.constant(_masks())
    p = tf.Variable(_masks())
    loss = losses.FocalTverskyLoss(reduction=reduction)
    with tf.GradientTape() as tape:
        value = loss(g, p)
    grad = tape.gradient(value, p).numpy()
    assert np.isfinite(float(value)) and float(value) < 1e-3
    assert np.all(np.isfinite(grad))


def test_batch_vs_image_reduction_differ():
    g = _masks()
    p = g.copy()
    p[1] = 0.0  # big tumour perfect, small tumour missed
    batch = _val(losses.TverskyLoss(reduction="batch")(g, p))
    image = _val(losses.TverskyLoss(reduction="image")(g, p))
    # batch: TP=64, FN=16 -> 1 - 65/(64+11.2+1); image: mean(0, 1 - 1/(11.2+1))
    assert batch == pytest.approx(1 - 65 / 76.2, rel=1e-4)
    assert image == pytest.approx(0.5 * (1 - 1 / 12.2), rel=1e-4)
    assert image > 3 * batch


def test_serialization_roundtrip():
    loss = losses.FocalTverskyLoss(alpha=0.6, beta=0.75, gamma=2.0, reduction="image")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, losses.FocalTverskyLoss)
    assert (clone.alpha, clone.beta, clone.gamma, clone.tversky_reduction) == (0.6, 0.75, 2.0, "image")
    for cls in (losses.TverskyLoss, losses.DiceLoss, losses.BCEDiceLoss):
        assert type(keras.losses.deserialize(keras.losses.serialize(cls()))) is cls
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get_loss("hinge")


def test_compiled_model_reloads_safe_mode(tmp_path):
    inp = keras.Input((4, 4, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))
    model.compile("adam", loss=losses.FocalTverskyLoss(beta=0.75))
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    assert again.loss.beta == 0.75

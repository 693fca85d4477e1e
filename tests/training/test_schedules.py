"""Loss-weight schedules (seed 001, eq. 13-15) and the callback that applies them during fit."""

from __future__ import annotations

import numpy as np
import pytest

from classseg.training.schedules import LossWeightScheduler, loss_weights, task_multipliers

# Hand-computed for epochs = 9, base = (1.0, 1.5); see the table in classseg/training/schedules.py.
EXPECTED_9 = {
    "fixed": [(1.0, 1.5)] * 9,
    "freeze": [(0.0, 1.5)] * 3 + [(1.0, 0.0)] * 3 + [(0.5, 0.75)] * 3,
    "dynamic": [(0 / 9, 1.5), (1 / 9, 4 / 3), (2 / 9, 7 / 6), (3 / 9, 1.0), (4 / 9, 5 / 6), (5 / 9, 2 / 3),
                (6 / 9, 1 / 2), (7 / 9, 1 / 3), (8 / 9, 1 / 6)],
}


@pytest.mark.parametrize("schedule", sorted(EXPECTED_9))
def test_weights_per_epoch_for_nine_epochs(schedule: str) -> None:
    got = [loss_weights(schedule, e, 9) for e in range(9)]
    np.testing.assert_allclose(got, EXPECTED_9[schedule], rtol=0, atol=1e-12)


def test_base_one_one_is_seed_001_alpha() -> None:
    # With base (1, 1): freeze ends with alpha = 0.5 for both tasks; dynamic is (alpha, 1 - alpha), alpha = e / E.
    assert loss_weights("freeze", 8, 9, base=(1, 1)) == (0.5, 0.5)
    assert loss_weights("dynamic", 3, 12, base=(1, 1)) == (0.25, 0.75)
    assert task_multipliers("freeze", 0, 9) == (0.0, 1.0)  # segmentation first (seed 001, Sec. 3.4)


def test_freeze_phases_for_25_epochs() -> None:
    # N = 25 // 3 = 8: epochs 0-7 segmentation, 8-15 classification, 16-24 (9 epochs) both.
    phases = [task_multipliers("freeze", e, 25) for e in range(25)]
    assert phases[:8] == [(0.0, 1.0)] * 8
    assert phases[8:16] == [(1.0, 0.0)] * 8
    assert phases[16:] == [(0.5, 0.5)] * 9


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown loss-weight schedule"):
        loss_weights("linear", 0, 9)
    with pytest.raises(ValueError, match="epoch must be in"):
        loss_weights("fixed", 9, 9)


def _tiny_model():
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    cls = keras.layers.Dense(2, activation="softmax", name="class")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, {"class": cls, "mask": mask})


def _data(n: int = 8):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3), dtype=np.float32)
    y = {"class": np.eye(2, dtype=np.float32)[np.arange(n) % 2],
         "mask": (rng.random((n, 8, 8, 1)) > 0.7).astype(np.float32)}
    return x, y


def test_callback_changes_effective_loss_weights() -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = _tiny_model()
    w_cls = keras.Variable(1.0, trainable=False)
    w_seg = keras.Variable(1.5, trainable=False)
    model.compile("adam", loss={"class": "categorical_crossentropy", "mask": "binary_crossentropy"},
                  loss_weights={"class": w_cls, "mask": w_seg})
    x, y = _data()
    sched = LossWeightScheduler("dynamic", 3, w_cls, w_seg, base=(1.0, 1.5))
    h = model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=4, verbose=0, callbacks=[sched]).history

    expected = [(0.0, 1.5), (1 / 3, 1.0), (2 / 3, 0.5)]
    np.testing.assert_allclose(list(zip(h["w_cls"], h["w_seg"], strict=True)), expected, atol=1e-7)
    # Keras logs the unweighted per-output losses; the total is the scheduled weighted sum, every epoch.
    for e, (wc, ws) in enumerate(expected):
        assert h["loss"][e] == pytest.approx(wc * h["class_loss"][e] + ws * h["mask_loss"][e], rel=1e-4)
        assert h["val_loss"][e] == pytest.approx(wc * h["val_class_loss"][e] + ws * h["val_mask_loss"][e], rel=1e-4)
        assert h["val_fixed_loss"][e] == pytest.approx(h["val_class_loss"][e] + 1.5 * h["val_mask_loss"][e],
                                                       rel=1e-6)
    # ... and not the base-weighted sum the model was compiled with (epoch 0 has w_cls = 0).
    assert h["loss"][0] != pytest.approx(h["class_loss"][0] + 1.5 * h["mask_loss"][0], rel=1e-3)
    assert (float(w_cls.numpy()), float(w_seg.numpy())) == pytest.approx(expected[-1])


def test_freeze_keeps_class_head_fixed_while_segmentation_trains() -> None:
    import keras

    keras.utils.set_random_seed(1)
    model = _tiny_model()
    w_cls, w_seg = keras.Variable(1.0, trainable=False), keras.Variable(1.0, trainable=False)
    model.compile(keras.optimizers.Adam(0.01),
                  loss={"class": "categorical_crossentropy", "mask": "binary_crossentropy"},
                  loss_weights={"class": w_cls, "mask": w_seg})
    head = model.get_layer("class").kernel
    snapshots = [np.array(head.numpy())]
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(np.array(head.numpy())))
    x, y = _data()
    # epochs = 3 -> N = 1: epoch 0 segmentation only, epoch 1 classification only, epoch 2 both.
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[LossWeightScheduler("freeze", 3, w_cls, w_seg, base=(1.0, 1.0)), record])
    np.testing.assert_array_equal(snapshots[1], snapshots[0])  # zero class weight: no gradient reaches the head
    assert np.abs(snapshots[2] - snapshots[1]).max() > 1e-4  # classification phase trains it

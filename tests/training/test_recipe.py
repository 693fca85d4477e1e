"""Issue 10: the CPU recipe's parts — standardisation, augmentation, schedules, resumable training,
atomic checkpoints, validation-time choices and model cards — against known values."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from classseg.data.standardize import channel_stats, prepare_input, standardize, standardize_groups  # noqa: E402


def _stack(seed=0, n=4, size=16, scale=(1.0, 2.0, 0.5)):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 3), np.uint8)
    x[:, 4:12, 4:12] = (rng.integers(40, 200, (n, 8, 8, 3)) * np.asarray(scale)).clip(0, 255).astype(np.uint8)
    return x


def test_channel_stats_use_foreground_only():
    x = np.zeros((1, 10, 10, 3), np.uint8)
    x[0, :5] = (100, 50, 200)
    x[0, 5:] = (120, 70, 220)
    stats = channel_stats(x)
    assert stats.mean == pytest.approx((110, 60, 210))
    assert stats.std == pytest.approx((10, 10, 10))
    z = standardize(x, stats)
    assert z[0, 0, 0] == pytest.approx([-1, -1, -1]) and z[0, 9, 9] == pytest.approx([1, 1, 1])


def test_patient_groups_and_per_slice_fallback():
    a, b = _stack(0), _stack(1, scale=(0.5, 0.5, 0.5))
    both = np.concatenate([a, b])
    out = standardize_groups(both, ["p"] * 4 + ["q"] * 4)
    assert np.allclose(out[:4], standardize(a, channel_stats(a)))
    assert np.allclose(out[4:], standardize(b, channel_stats(b)))
    loose = standardize_groups(both[:2], None)  # no patient: each slice its own statistics
    assert np.allclose(loose[1], standardize(both[1], channel_stats(both[1])))
    with pytest.raises(ValueError, match="normalization"):
        prepare_input(both, "minmax")


def test_training_inputs_equal_inference_inputs():
    """Training (model_inputs over SliceArrays) and inference (prepare_input with the patient of each
    slice, what the pipeline calls) give bit-identical model inputs."""
    from classseg.data.arrays import SliceArrays
    from classseg.training.segmenter import model_inputs

    images = np.concatenate([_stack(0), _stack(1)])
    frame = pd.DataFrame({"patient_id": ["p"] * 4 + ["q"] * 4})
    arrays = SliceArrays(images, np.zeros((8, 16, 16, 1), np.uint8), np.zeros(8, int), frame)
    train_side = model_inputs(arrays, "patient_zscore")
    infer_side = np.concatenate([prepare_input(images[:4], "patient_zscore", ["p"] * 4),
                                 prepare_input(images[4:], "patient_zscore", ["q"] * 4)])
    assert np.array_equal(train_side, infer_side)
    assert model_inputs(arrays, "raw") is images


def test_flair_substitution_copies_flair_and_keeps_mask():
    from classseg.data.augment import AugmentConfig, build_augmenter

    only = AugmentConfig(hflip=0, rotate_p=0, elastic_p=0, noise_p=0, brightness_contrast_p=0,
                         flair_for_missing_p=1.0)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 3)).astype(np.float32)
    mask = (rng.random((16, 16, 1)) > 0.7).astype(np.uint8)
    seen = set()
    for seed in range(12):
        out, out_mask = build_augmenter(only, seed=seed, float_input=True)(image.copy(), mask.copy())
        assert np.array_equal(out_mask, mask)
        assert np.array_equal(out[..., 1], image[..., 1])
        replaced = tuple(c for c in (0, 2) if np.array_equal(out[..., c], image[..., 1]))
        kept = tuple(c for c in (0, 2) if np.array_equal(out[..., c], image[..., c]))
        assert len(replaced) + len(kept) == 2 and replaced
        seen.add(replaced)
    assert seen == {(0,), (2,), (0, 2)}


def test_recipe_augmentation_keeps_image_and_mask_aligned():
    """A bright square marked by the mask stays under the mask through every geometric transform."""
    from classseg.data.augment import RECIPE_AUGMENT, build_augmenter

    image = np.full((64, 64, 3), -1.0, np.float32)
    mask = np.zeros((64, 64, 1), np.uint8)
    image[20:40, 24:44] = 3.0
    mask[20:40, 24:44] = 1
    for seed in range(8):
        out, out_mask = build_augmenter(RECIPE_AUGMENT, seed=seed, float_input=True)(image.copy(), mask.copy())
        assert out.min() < -0.5 and out.max() > 2.0  # z-scores are not clipped to [0, 1]
        inside = out[..., 1][out_mask[..., 0] == 1]
        outside = out[..., 1][out_mask[..., 0] == 0]
        assert inside.mean() > outside.mean() + 2.5, seed


def test_uint8_augmenter_refuses_float_images():
    from classseg.data.augment import AugmentConfig, build_augmenter

    with pytest.raises(TypeError, match="float_input=True"):
        build_augmenter(AugmentConfig(), seed=0)(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8))


def test_array_sequence_batches_and_labels():
    from classseg.data.sequence import ArraySequence

    images = np.arange(5 * 4 * 4 * 3, dtype=np.float32).reshape(5, 4, 4, 3)
    masks = np.zeros((5, 4, 4, 1), np.uint8)
    masks[1, 0, 0] = 1
    seq = ArraySequence(images, masks, batch_size=2, target="label")
    assert len(seq) == 3
    x, y = seq[0]
    assert x.dtype == np.float32 and np.array_equal(x, images[:2])
    assert y.tolist() == [[1, 0], [0, 1]]
    assert seq[2][0].shape == (1, 4, 4, 3)
    shuffled = ArraySequence(images, masks, batch_size=5, shuffle=True, seed=3)
    first = shuffled[0][0].copy()
    shuffled.on_epoch_end()
    assert not np.array_equal(first, shuffled[0][0]) and np.array_equal(np.sort(first.ravel()), images.ravel())


def test_learning_rate_schedules_known_values():
    from classseg.training.callbacks import lr_at_progress, scheduled_lr

    assert lr_at_progress(0.0, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_at_progress(0.5, 1.0, "cosine") == pytest.approx(0.505)
    assert lr_at_progress(1.0, 1.0, "cosine") == pytest.approx(0.01)
    assert lr_at_progress(0.0, 1.0, "onecycle") == pytest.approx(0.1)
    assert lr_at_progress(0.3, 1.0, "onecycle") == pytest.approx(1.0)
    assert scheduled_lr(0, 1.0, 10, "cosine", warmup_epochs=1) == pytest.approx(0.5)  # warm-up
    assert scheduled_lr(1, 1.0, 10, "cosine", warmup_epochs=1) == pytest.approx(1.0)
    assert scheduled_lr(9, 1.0, 10, "cosine", warmup_epochs=1) == pytest.approx(0.01)
    assert scheduled_lr(5, 1.0, 10, "cosine", progress=0.5) == pytest.approx(0.505)  # time budget
    with pytest.raises(ValueError):
        lr_at_progress(0.5, 1.0, "step")


def _tiny_model():
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_interrupted_fit_resumes_at_next_epoch(tmp_path):
    """A fit killed after epoch 2 (an exception, as Ctrl-C would raise) resumes at epoch 3 with the
    best score remembered, and the history holds every epoch once."""
    import keras

    from classseg.training.callbacks import AtomicBackupAndRestore, AtomicCSVLogger, ResumableBestCheckpoint, RunState

    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    def callbacks(extra=()):
        state = RunState(tmp_path / "train_state.json")
        return state, [ResumableBestCheckpoint(tmp_path / "m.keras", state, monitor="loss", mode="min"),
                       AtomicCSVLogger(tmp_path / "history.csv", append=True),
                       AtomicBackupAndRestore(str(tmp_path / "backup")), *extra]

    model = _tiny_model()
    _, cbs = callbacks([Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=cbs)
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    resumed = _tiny_model()
    state, cbs = callbacks()
    seen = []
    cbs.append(keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e)))
    resumed.fit(x, y, epochs=5, verbose=0, callbacks=cbs)
    assert seen == [2, 3, 4]
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert not (tmp_path / "backup").exists()
    assert state.values["best_epoch"] >= 1 and (tmp_path / "m.keras").is_file()


def test_failed_checkpoint_save_keeps_the_good_one(tmp_path, monkeypatch):
    """A save that dies half-way (partial bytes, then an error) never replaces the last good model."""
    import keras

    from classseg.training.callbacks import ResumableBestCheckpoint, RunState

    model = _tiny_model()
    path = tmp_path / "m.keras"
    state = RunState(tmp_path / "train_state.json")
    ckpt = ResumableBestCheckpoint(path, state, monitor="loss", mode="min")
    ckpt.set_model(model)
    ckpt.on_epoch_end(0, {"loss": 1.0})
    good = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.on_epoch_end(1, {"loss": 0.5})
    monkeypatch.undo()
    assert path.read_bytes() == good
    keras.models.load_model(path)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert state.values["best"] == 1.0


def test_time_budget_stops_before_overrun(tmp_path):
    from classseg.training.callbacks import RunState, TimeBudget

    state = RunState(tmp_path / "s.json")
    budget = TimeBudget(minutes=1.0, max_epochs=100, state=state)

    class Model:
        stop_training = False

    budget.set_model(Model())
    budget.on_train_begin()
    budget._start -= 50.0  # 50 s spent; an epoch of ~0 s fits
    budget.on_epoch_begin(0)
    budget.on_epoch_end(0)
    assert not budget.model.stop_training and 0.8 < state.values["progress"] < 0.9
    budget._epoch_start = budget._epoch_start - 15.0  # the last epoch took 15 s: the next would overrun
    budget.on_epoch_end(1)
    assert budget.model.stop_training
    assert RunState(tmp_path / "s.json").values["elapsed_s"] > 50  # persisted for a resume


def test_choose_postprocess_removes_small_false_positives():
    from classseg.training.selection import choose_postprocess

    gt = np.zeros((4, 32, 32), np.uint8)
    gt[0, 8:20, 8:20] = 1
    gt[1, 10:22, 10:22] = 1
    probs = gt.astype(np.float32) * 0.9
    probs[2, 2:5, 2:5] = 0.8  # a 9-pixel blob on a healthy slice
    chosen, table = choose_postprocess(probs, gt, ["a", "a", "b", "b"],
                                       grid={"threshold": (0.5,), "closing": (False,), "min_component_px": (0, 16)})
    assert chosen.min_component_px == 16 and len(table) == 2
    assert table["detection_accuracy"].tolist() == [0.75, 1.0]


def test_choose_gate_must_beat_mask_nonempty():
    from classseg.delivery.rules import final_calls
    from classseg.training.selection import choose_gate

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    mask = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)  # baseline: accuracy 0.75, sensitivity 0.75
    good_gate = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.3, 0.1])  # perfect at 0.5
    choice, table = choose_gate(y, good_gate, mask)
    assert choice["rule"] == "gate" and choice["accuracy"] == 1.0 and choice["threshold"] is not None
    assert choice["baseline_mask_nonempty"]["accuracy"] == 0.75
    useless = np.full(8, 0.5)  # no better than the masks: the baseline stays
    assert choose_gate(y, useless, mask)[0]["rule"] == "mask"
    assert final_calls(good_gate, mask, 0.5, "gate_and_mask").tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_model_card_round_trip_and_validation(tmp_path):
    from classseg.models.card import ModelCard, card_path, read_card, write_card

    model = tmp_path / "segmenter.keras"
    card = ModelCard(role="segmenter", img_size=128, normalization="patient_zscore", threshold=0.4,
                     postprocess={"closing": False, "closing_kernel": 5, "fill_holes": True, "min_component_px": 48})
    write_card(model, card)
    assert card_path(model).name == "segmenter.card.json"
    back = read_card(model)
    assert back == card.upgraded() and back.threshold is None  # written under the new names (issue 19)
    assert back.postprocess["threshold"] == 0.4
    pp = back.postprocess_config()
    assert pp.threshold == 0.4 and pp.min_component_px == 48 and not pp.closing
    assert read_card(tmp_path / "other.keras") is None
    card_path(model).write_text('{"role": "segmenter", "img_size": 128, "normalization": "hist"}')
    with pytest.raises(ValueError, match="segmenter.card.json"):
        read_card(model)


def test_train_gate_refuses_a_finished_run(tmp_path):
    from classseg.cli import main
    from classseg.data import DEFAULT_DATA_DIR

    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["train-gate", str(DEFAULT_DATA_DIR), "--out", str(tmp_path), "--quiet"])

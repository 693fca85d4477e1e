"""ONNX / SavedModel export: parity, output names, augmentation stripping, CLI (tiny models, 32 px)."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from classseg.commands import export as export_cmd  # noqa: E402
from classseg.models import export  # noqa: E402

SIZE = 32


def _conv_classifier() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs)


def _two_output() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    cls = keras.layers.Dense(2, activation="softmax", name="class")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, [mask, cls])


def _with_augmentation() -> keras.Model:
    augment = keras.Sequential([keras.layers.RandomRotation(0.2), keras.layers.RandomZoom(0.1)], name="augment")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.RandomFlip("horizontal", name="flip")(inputs)
    x = augment(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)


def test_onnx_parity_conv_with_rescaling(tmp_path, pixels):
    keras.utils.set_random_seed(0)
    model = _conv_classifier()
    result = export.export_onnx(model, tmp_path / "clf.onnx", parity_inputs=pixels)
    assert result.passed and result.max_abs_diff < 1e-4
    assert result.path.is_file() and result.opset == 17
    assert result.input_names == ("image",) and result.output_names == ("probs",)
    assert result.parity_shape == (3, SIZE, SIZE, 3)
    # independent check: a fresh session, another batch size (dynamic batch dim)
    session = export.onnx_session(result.path, threads=1)
    assert session.get_inputs()[0].shape[0] == "batch"
    assert session.get_modelmeta().custom_metadata_map["classseg.input"].startswith("RGB float32 0..255")
    x = pixels[:1] * 0.5
    got = session.run(None, {"image": x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # softmax kept inside the export


def test_two_outputs_keep_names(tmp_path, pixels):
    model = _two_output()
    result = export.export_onnx(model, tmp_path / "joint.onnx", parity_inputs=pixels)
    assert set(result.output_names) == {"mask", "class"}
    assert set(result.per_output) == {"mask", "class"} and result.max_abs_diff < 1e-4
    from classseg.models.predict import OnnxRunner, predict

    out = predict(OnnxRunner(result.path), pixels)  # the pipeline's ONNX path, outputs by role
    assert out["mask"].shape == (3, SIZE, SIZE, 1) and out["class"].shape == (3, 2)
    mask, cls = model(pixels, training=False)
    np.testing.assert_allclose(out["mask"], np.asarray(mask), atol=1e-5)
    np.testing.assert_allclose(out["class"], np.asarray(cls), atol=1e-5)


def test_augmentation_layers_are_stripped(tmp_path, pixels):
    import onnx

    model = _with_augmentation()
    assert export.find_augmentation_layers(model) == ["flip", "augment/random_rotation", "augment/random_zoom"]
    clean = export.inference_model(model)
    assert export.find_augmentation_layers(clean) == []
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer for layer in clean.layers if isinstance(layer, keras.layers.Conv2D)] == conv  # shared weights
    result = export.export_onnx(model, tmp_path / "aug.onnx", parity_inputs=pixels)
    assert result.stripped_layers == ("flip", "augment/random_rotation", "augment/random_zoom")
    assert result.passed
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert not any("Random" in op for op in ops), ops


def test_subclassed_model_with_augmentation_is_refused():
    class Augmented(keras.Model):
        def __init__(self):
            super().__init__()
            self.flip = keras.layers.RandomFlip()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(self.flip(x))

    model = Augmented()
    model(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="augmentation layers"):
        export.inference_model(model)


def test_mixed_precision_is_exported_in_float32(tmp_path, pixels):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255, dtype="mixed_float16")(inputs)
    x = keras.layers.Conv2D(4, 3, dtype="mixed_float16")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(x))
    clean = export.inference_model(model)
    assert all(layer.dtype_policy.name == "float32" for layer in clean.layers)
    result = export.export_onnx(model, tmp_path / "mp.onnx", parity_inputs=pixels)
    assert result.passed
    # the float32 copy is within half-precision error of the original
    np.testing.assert_allclose(np.asarray(clean(pixels)), np.asarray(model(pixels)), atol=1e-2)


def test_parity_failure_raises(tmp_path):
    bad = export.ExportResult(path=tmp_path / "m.onnx", max_abs_diff=2e-4, per_output={"mask": 2e-4}, tolerance=1e-4)
    assert not bad.passed and "mask: max |diff| = 0.0002" in bad.summary() and "parity FAIL" in bad.summary()
    with pytest.raises(export.ParityError, match="0.0002 > tolerance 0.0001"):
        export._finish(bad, raise_on_failure=True)
    assert export._finish(bad, raise_on_failure=False) is bad


def test_savedmodel_loads_with_tf(tmp_path, pixels):
    import tensorflow as tf

    model = _two_output()
    path = export.export_savedmodel(model, tmp_path / "saved")
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["image"]
    got = signature(image=tf.constant(pixels))
    assert set(got) == {"mask", "class"}
    mask, cls = model(pixels, training=False)
    # graph-mode serving vs eager Keras (kernels may be fused differently): float32 round-off of probabilities
    np.testing.assert_allclose(got["mask"].numpy(), np.asarray(mask), atol=1e-5)
    np.testing.assert_allclose(got["class"].numpy(), np.asarray(cls), atol=1e-5)
    assert export.check_savedmodel(model, path, parity_inputs=pixels).passed


def test_cli_export_onnx(tmp_path, capsys):
    model_path = tmp_path / "clf.keras"
    _with_augmentation().save(model_path)
    args = argparse.Namespace(model=str(model_path), format="onnx", out=None, opset=17, tolerance=1e-4,
                              samples=2, seed=0, overwrite=False)
    assert export_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "parity PASS" in out and "stripped augmentation layers: flip" in out
    assert (tmp_path / "clf.onnx").is_file()
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):  # issue 13: never silently
        export_cmd.run(args)
    args.overwrite = True
    args.tolerance = -1.0  # impossible: must exit non-zero and say FAIL
    assert export_cmd.run(args) == 1
    assert "parity FAIL" in capsys.readouterr().out
    args.tolerance, args.format = 1e-4, "savedmodel"
    assert export_cmd.run(args) == 0
    assert "exported (savedmodel)" in capsys.readouterr().out
    assert (tmp_path / "clf_savedmodel" / "saved_model.pb").is_file()
    with pytest.raises(SystemExit, match="not found"):
        export_cmd.run(argparse.Namespace(**{**vars(args), "model": str(tmp_path / "missing.keras")}))


def test_nearest_upsampling_becomes_one_resize(tmp_path, pixels):
    import onnx

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    x = keras.layers.UpSampling2D()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x))
    result = export.export_onnx(model, tmp_path / "up.onnx", parity_inputs=pixels)
    assert result.passed and "Resize: 1 layer(s)" in result.summary()
    nodes = onnx.load(str(result.path)).graph.node
    resize = [n for n in nodes if n.op_type == "Resize"]
    assert len(resize) == 1 and not any(n.op_type == "Tile" for n in nodes)
    mode = {a.name: a.s for a in resize[0].attribute}["coordinate_transformation_mode"]
    assert mode == b"asymmetric"  # not the deprecated tf_half_pixel_for_nn
    # the SavedModel keeps the original layer (no rewrite needed there)
    assert export.inference_model(model) is model


def test_saturated_outputs_are_flagged(tmp_path, pixels):
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    kernel = keras.initializers.Constant([[100.0, -100.0]] * 3)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", kernel_initializer=kernel)(x))
    result = export.check_savedmodel(model, export.export_savedmodel(model, tmp_path / "sat"), parity_inputs=pixels)
    assert result.passed and result.max_abs_diff == 0.0
    assert any("saturated" in note for note in result.notes)
    dead = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros")(x))
    result = export.check_savedmodel(dead, export.export_savedmodel(dead, tmp_path / "dead"), parity_inputs=pixels)
    assert result.passed and any("identical for every parity input" in note for note in result.notes)
    healthy = _two_output()
    assert not export.check_savedmodel(healthy, export.export_savedmodel(healthy, tmp_path / "ok"),
                                       parity_inputs=pixels).notes


def test_large_graphs_get_collecting_optimizers():
    from tf2onnx import optimizer

    assert export._collecting_optimizers(1_000) is None  # small graphs: tf2onnx defaults, no gc cost
    wrapped = export._collecting_optimizers(10**9)
    assert list(wrapped) == list(optimizer._get_optimizers())
    assert type(wrapped["fold_constants"]()).__name__ == "ConstFoldOptimizer"


# ------------------------------------------------------------------------------------------------ issue 20
def _args(model, out, **kw):
    return argparse.Namespace(**{"model": str(model), "format": "onnx", "out": None if out is None else str(out),
                                 "opset": 17,
                                 "tolerance": 1e-4, "samples": 2, "seed": 0, "overwrite": False, **kw})


def test_export_writes_the_card_beside_the_onnx_bound_to_it(tmp_path, capsys):
    """The card travels with the export, bound to the .onnx by its SHA-256 (the pipeline checks it); a model
    without a card gets none and a warning; --samples 0 is one line before anything is written."""
    from classseg.models.card import ModelCard, card_path, check_card, model_sha256, read_card, write_card

    model_path = tmp_path / "seg.keras"
    _conv_classifier().save(model_path)
    write_card(model_path, ModelCard(role="gate", img_size=SIZE, threshold=0.3, gate_rule="mask"))
    out = tmp_path / "exported" / "model.onnx"
    with pytest.raises(SystemExit, match="--samples 0: the parity check needs at least 1 image") as info:
        export_cmd.run(_args(model_path, out, samples=0))
    assert "\n" not in str(info.value.code) and not out.exists()  # nothing written (was: .onnx, then traceback)
    assert export_cmd.run(_args(model_path, out)) == 0
    card = read_card(out)
    assert card_path(out).name == "model.card.json" and card.model_file == "model.onnx"
    assert card.model_sha256 == model_sha256(out) and (card.class_cut(), card.gate_rule) == (0.3, "mask")
    assert card.provenance["exported_from"]["sha256"] == model_sha256(model_path)
    assert check_card(card, "classifier", out, (SIZE, SIZE)) == []  # what the pipeline checks at load
    assert "model card:" in capsys.readouterr().out

    # the default --out (seg.onnx beside seg.keras) reads the same seg.card.json: shared, the export listed
    (tmp_path / "d").mkdir()
    shared = tmp_path / "d" / "seg.keras"
    shared.write_bytes(model_path.read_bytes())
    write_card(shared, ModelCard(role="gate", img_size=SIZE, threshold=0.3))
    assert export_cmd.run(_args(shared, None)) == 0
    card = read_card(shared)
    assert card.model_file == "seg.keras" and card.model_sha256 == model_sha256(shared)
    assert card.exports == {"seg.onnx": model_sha256(tmp_path / "d" / "seg.onnx")}
    assert check_card(card, "classifier", shared) == [] == check_card(card, "classifier", tmp_path / "d" / "seg.onnx")

    bare = tmp_path / "bare.keras"
    _conv_classifier().save(bare)
    card_path(tmp_path / "bare_out.onnx").write_text("{}")  # a stale card beside the target is not left there
    assert export_cmd.run(_args(bare, tmp_path / "bare_out.onnx")) == 0
    assert "has no model card, so none was written" in capsys.readouterr().out
    assert not card_path(tmp_path / "bare_out.onnx").exists()

    write_card(bare, ModelCard(role="segmenter", img_size=SIZE, model_sha256="0" * 64))  # written before the model?
    card_path(bare).write_text(card_path(bare).read_text().replace(model_sha256(bare), "0" * 64))
    with pytest.raises(SystemExit, match="was made for another model file") as info:
        export_cmd.run(_args(bare, tmp_path / "b2.onnx"))
    assert "\n" not in str(info.value.code) and not (tmp_path / "b2.onnx").exists()

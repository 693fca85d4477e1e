"""Issue 13: a model of the wrong kind, shape or channels, or a corrupt file, is one clear error at load time."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import interrupt_on_call  # noqa: E402

from classseg.models.check import (  # noqa: E402
    ModelCheckError,
    Signature,
    check_model_file,
    check_model_role,
    check_signature,
)
from classseg.models.export import load_model  # noqa: E402
from classseg.pipeline import ClassSegPipeline  # noqa: E402
from classseg.pipeline import main as pipeline_main  # noqa: E402
from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb  # noqa: E402


def three_class_classifier() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalMaxPooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(pooled))


def two_channel_segmenter() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="sigmoid", name="masks")(inputs))


def gray_input_segmenter() -> keras.Model:
    inputs = keras.Input((32, 32, 1))
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    made = {"classifier": tiny_classifier(), "segmenter": tiny_segmenter(), "three": three_class_classifier(),
            "two_channel": two_channel_segmenter(), "gray": gray_input_segmenter()}
    paths = {}
    for name, model in made.items():
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    data = paths["classifier"].read_bytes()
    paths["truncated"] = folder / "truncated.keras"
    paths["truncated"].write_bytes(data[: len(data) // 2])  # as a killed save leaves it
    paths["empty"] = folder / "empty.keras"
    paths["empty"].write_bytes(b"")
    return paths


@pytest.fixture
def test_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "test" / "P1"
    write_rgb(folder / "P1_1.png", slice_image(32, 32, 250))
    return tmp_path / "test"


def _predict_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        pipeline_main(argv)
    message = str(info.value.code)
    assert info.value.code not in (0, None) and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(("classifier", "segmenter", "expected"), [
    ("classifier", "classifier", "segmenter model {segmenter}: outputs class (N, 2); a segmenter has one mask "
                                 "output (N, H, W, 1); it looks like a classifier (give it as --classifier)"),
    ("segmenter", "segmenter", "classifier model {classifier}: outputs mask (N, 32, 32, 1); a classifier has one "
                               "class output (N, 2); it looks like a segmenter (give it as --segmenter)"),
    ("three", "segmenter", "classifier model {classifier}: output probs (N, 3) has 3 classes; expected 2"),
    ("classifier", "two_channel", "segmenter model {segmenter}: mask output masks (N, 32, 32, 2) has 2 channels"),
    ("classifier", "gray", "segmenter model {segmenter}: input has 1 channel(s) (N, 32, 32, 1)"),
    ("classifier", "truncated", "segmenter model {segmenter}: corrupt or truncated .keras file"),
    ("empty", "segmenter", "classifier model {classifier}: file is empty (0 bytes"),
])
def test_wrong_model_for_its_role_is_one_line_naming_it(classifier: str, segmenter: str, expected: str,
                                                        files, test_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    message = _predict_error(["--test-dir", str(test_dir), "--classifier", str(files[classifier]),
                              "--segmenter", str(files[segmenter]), "--out", str(out)], capsys)
    assert expected.format(classifier=files[classifier], segmenter=files[segmenter]) in message
    other = files[segmenter] if "classifier model" in expected else files[classifier]
    if classifier != segmenter:
        assert str(other) not in message  # only the model at fault is named
    assert not out.exists() or not any(out.iterdir())  # no predictions, no metrics


def test_classifier_given_as_joint_is_refused(files, test_dir: Path, tmp_path: Path, capsys) -> None:
    message = _predict_error(["--test-dir", str(test_dir), "--joint", str(files["classifier"]),
                              "--out", str(tmp_path / "out")], capsys)
    assert "joint model" in message and "a joint model has a class output (N, 2) and a mask output" in message
    assert "looks like a classifier" in message


def test_in_memory_models_are_checked_too() -> None:
    with pytest.raises(ModelCheckError, match="looks like a classifier"):
        ClassSegPipeline(tiny_classifier(), tiny_classifier())
    with pytest.raises(ModelCheckError, match="joint model"):
        ClassSegPipeline.from_joint(tiny_segmenter())
    check_model_role(tiny_classifier(), "classifier")


def test_joint_model_passes_and_signatures_of_onnx_shapes() -> None:
    from classseg.models.joint import build_joint_model

    check_model_role(build_joint_model((64, 64, 3), weights=None), "joint")
    onnx_like = Signature([(None, "h", "w", 3)], {"mask": ("n", None, None, 1)})
    check_signature(Signature([tuple(d if isinstance(d, int) else None for d in onnx_like.inputs[0])],
                              onnx_like.outputs), "segmenter")
    with pytest.raises(ModelCheckError, match="expected one RGB image input"):
        check_signature(Signature([(None, 32, 32, 3), (None, 4)], {"c": (None, 2)}), "classifier")
    with pytest.raises(ModelCheckError, match="does not fit"):
        check_signature(Signature([(None, 784)], {"c": (None, 2)}), "classifier")


def test_corrupt_keras_file_is_not_reported_as_missing(files) -> None:
    with pytest.raises(ModelCheckError, match="corrupt or truncated .keras file") as info:
        load_model(files["truncated"])
    assert "File not found" not in str(info.value)
    with pytest.raises(ModelCheckError, match="file not found"):
        check_model_file(files["truncated"].with_name("missing.keras"), "segmenter")
    assert np.asarray(load_model(files["classifier"])(np.zeros((1, 32, 32, 3), np.float32))).shape == (1, 2)


# ----------------------------------------------------------------------------- interruptions, symlinks
def _two_patient_dir(tmp_path: Path) -> Path:
    for patient in ("P1", "P2"):
        write_rgb(tmp_path / "test" / patient / f"{patient}_1.png", slice_image(32, 32, 250))
    return tmp_path / "test"


def test_ctrl_c_half_way_exits_130_and_the_rerun_replaces_the_unfinished_output(files, tmp_path: Path,
                                                                               monkeypatch, capsys) -> None:
    import classseg.pipeline.folder as pl  # the module that calls _process_patient

    test_dir = _two_patient_dir(tmp_path)
    out = tmp_path / "out"
    argv = ["--test-dir", str(test_dir), "--classifier", str(files["classifier"]), "--segmenter",
            str(files["segmenter"]), "--out", str(out), "--threshold", "0.5"]
    interrupt_on_call(monkeypatch, pl, "_process_patient")  # Ctrl-C on the second patient
    assert pipeline_main(argv) == 130
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "interrupted" in x]
    assert len(line) == 1 and "after 1 of 2 patients" in line[0] and "run the same command again" in line[0]
    assert "Traceback" not in err
    assert not (out / "predictions.csv").exists() and any((out / "masks").rglob("*.png"))  # half-way
    monkeypatch.undo()  # the real _process_patient again
    assert pipeline_main(argv) == 0  # today: refused, the folder exists
    assert "replacing it" in capsys.readouterr().err
    assert (out / "predictions.csv").is_file() and not (out / ".classseg-unfinished.json").exists()
    with pytest.raises(SystemExit, match="already exists"):  # a finished output is never replaced
        pipeline_main(argv)


def test_output_inside_a_symlinked_patient_folder_is_refused(files, tmp_path: Path) -> None:
    data = _two_patient_dir(tmp_path)
    tree = tmp_path / "links"
    tree.mkdir()
    (tree / "P1").symlink_to(data / "P1", target_is_directory=True)  # as run-all's phase 3 builds it
    with pytest.raises(SystemExit, match="refusing to write into the test folder") as info:
        pipeline_main(["--test-dir", str(tree), "--classifier", str(files["classifier"]), "--segmenter",
                       str(files["segmenter"]), "--out", str(data / "P1" / "out")])
    assert "\n" not in str(info.value.code)
    assert not (data / "P1" / "out").exists()


def test_unwritable_output_is_one_line(files, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write to") as info:
        pipeline_main(["--test-dir", str(_two_patient_dir(tmp_path)), "--classifier", str(files["classifier"]),
                       "--segmenter", str(files["segmenter"]), "--out", str(blocker / "out")])
    assert "\n" not in str(info.value.code)

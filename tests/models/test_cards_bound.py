"""Issue 20: model cards bound to their models (role, input size, SHA-256), checked at load; every field
validated with a one-line error; a missing or unbound card is a warning on the console and in summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from classseg.models.card import (
    CardMismatchError,
    ModelCard,
    bind_card,
    card_path,
    check_card,
    model_sha256,
    read_card,
    write_card,
)


def test_write_card_binds_to_the_model_and_bind_card_rebinds(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    write_card(model, ModelCard(role="segmenter", img_size=64))  # no model yet: nothing to bind to
    assert read_card(model).model_sha256 is None
    model.write_bytes(b"weights v1")
    write_card(model, ModelCard(role="segmenter", img_size=64))
    card = read_card(model)
    assert card.model_sha256 == model_sha256(model)
    assert card.model_file == "m.keras" and len(card.model_sha256) == 64
    model.write_bytes(b"weights v2")  # the model replaced after its card was written
    with pytest.raises(CardMismatchError, match="was made for another model file \\(m.keras\\)"):
        check_card(read_card(model), "segmenter", model)
    assert bind_card(model).model_sha256 == model_sha256(model)  # after checking, e.g. scripts/ship_models.py
    assert check_card(read_card(model), "segmenter", model, (64, 64)) == []
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"pb")
    (folder / "variables" / "v").write_bytes(b"w")
    first = model_sha256(folder)
    (folder / "variables" / "v").write_bytes(b"w2")
    assert model_sha256(folder) != first and len(first) == 64


@pytest.mark.parametrize("data, message", [
    ({"role": "segmenter", "img_size": "128"}, "img_size '128' must be a whole number of pixels, not str"),
    ({"role": "segmenter", "img_size": 128.0}, "img_size 128.0 must be a whole number"),
    ({"role": "segmenter", "img_size": True}, "img_size True must be a whole number"),
    ({"role": "segmenter", "img_size": 4}, "img_size 4 is outside 8..8192"),
    ({"role": 3, "img_size": 128}, "role 3 must be a string"),
    ({"role": "segmenter", "img_size": 128, "threshold": "0.5"}, "threshold '0.5' must be a number in \\[0, 1\\]"),
    ({"role": "segmenter", "img_size": 128, "threshold": True}, "threshold True must be a number"),
    ({"role": "segmenter", "img_size": 128, "threshold": 1.5}, "threshold 1.5 is outside"),
    ({"role": "gate", "img_size": 128, "gate_rule": 1}, "gate_rule 1 must be a string or null"),
    ({"role": "gate", "img_size": 128, "gate_rule": "always"}, "gate_rule 'always' is not one of"),
    ({"role": "segmenter", "img_size": 128, "postprocess": [0.5]}, "postprocess \\[0.5\\] must be an object"),
    ({"role": "segmenter", "img_size": 128, "postprocess": {"closing": "yes"}},
     "postprocess.closing 'yes' must be true or false"),
    ({"role": "segmenter", "img_size": 128, "postprocess": {"min_component_px": -3}},
     "postprocess.min_component_px -3 must be a whole number >= 0"),
    ({"role": "segmenter", "img_size": 128, "postprocess": {"min_size": 3}},
     "postprocess has unknown field 'min_size'"),
    ({"role": "segmenter", "img_size": 128, "provenance": "x"}, "provenance 'x' must be an object"),
    ({"role": "segmenter", "img_size": 128, "tta": None}, "tta None must be a string"),
    ({"role": "segmenter", "img_size": 128, "model_sha256": "abc"}, "model_sha256 'abc' must be 64 lower-case hex"),
    ({"role": "segmenter", "img_size": 128, "gate_rul": "mask"}, "unknown field\\(s\\) 'gate_rul'"),
    ({"role": "segmenter"}, "missing field\\(s\\) img_size"),
    ([1, 2], "expected a JSON object, got list"),
])
def test_every_card_field_is_validated_in_one_line(tmp_path: Path, data, message) -> None:
    model = tmp_path / "m.keras"
    card_path(model).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
        read_card(model)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{card_path(model)}: not a valid model card")


def test_old_cards_without_the_new_fields_still_load_with_a_warning(tmp_path: Path) -> None:
    model = tmp_path / "segmenter.keras"
    model.write_bytes(b"x")
    card_path(model).write_text(json.dumps({"role": "segmenter", "img_size": 128, "normalization": "raw",
                                            "threshold": 0.3, "postprocess": {"threshold": 0.3, "closing": False},
                                            "gate_rule": None, "provenance": {"x": float("nan")}}))
    card = read_card(model)
    assert card.model_sha256 is None and card.threshold == 0.3
    notes = check_card(card, "segmenter", model, (None, None))
    assert len(notes) == 1 and "has no model_sha256" in notes[0]
    assert "has no model card" in check_card(None, "segmenter", tmp_path / "other.keras")[0]


def test_check_card_role_and_input_size() -> None:
    gate = ModelCard(role="gate", img_size=128)
    assert check_card(gate, "classifier", None, (128, 128)) == []
    assert check_card(ModelCard(role="classifier", img_size=64), "classifier", None, (None, None)) == []
    with pytest.raises(CardMismatchError, match="card of a gate, but this model is used as the segmenter"):
        check_card(gate, "segmenter")
    with pytest.raises(CardMismatchError, match="says img_size 128, but the model takes 256x256 inputs"):
        check_card(gate, "classifier", None, (256, 256))


# ------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture()
def setup(tmp_path: Path):
    from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb

    folder = tmp_path / "models"
    folder.mkdir()
    tiny_classifier().save(folder / "classifier.keras")
    tiny_segmenter().save(folder / "segmenter.keras")
    data = tmp_path / "data"
    write_rgb(data / "P1" / "P1_1.png", slice_image(32, 32, 250))
    argv = ["--test-dir", str(data), "--classifier", str(folder / "classifier.keras"), "--segmenter",
            str(folder / "segmenter.keras")]
    return folder, argv


def test_pipeline_refuses_swapped_copied_or_mis_sized_cards_in_one_line(setup, tmp_path: Path) -> None:
    from classseg.pipeline import main

    folder, argv = setup
    gate, seg = folder / "classifier.keras", folder / "segmenter.keras"

    def swapped() -> None:
        write_card(gate, ModelCard(role="gate", img_size=32, gate_rule="mask"))
        write_card(seg, ModelCard(role="segmenter", img_size=32, threshold=0.4))
        texts = card_path(gate).read_text(), card_path(seg).read_text()
        card_path(gate).write_text(texts[1])
        card_path(seg).write_text(texts[0])

    def copied() -> None:  # the gate's card with another model's hash
        write_card(gate, ModelCard(role="gate", img_size=32))
        write_card(seg, ModelCard(role="segmenter", img_size=32))
        card = json.loads(card_path(gate).read_text())
        card["model_sha256"] = json.loads(card_path(seg).read_text())["model_sha256"]
        card_path(gate).write_text(json.dumps(card))

    cases = [(swapped, "the card of a segmenter, but this model is used as the classifier"),
             (copied, "was made for another model file"),
             (lambda: card_path(gate).write_text(json.dumps({"role": "gate", "img_size": 64})),
              "says img_size 64, but the model takes 32x32 inputs"),  # was a traceback
             (lambda: card_path(gate).write_text(json.dumps({"role": "gate", "img_size": 32, "threshold": "0.5"})),
              "threshold '0.5' must be a number")]  # was a traceback
    for k, (make, message) in enumerate(cases):
        make()
        out = tmp_path / f"out{k}"
        with pytest.raises(SystemExit) as info:
            main([*argv, "--out", str(out)])
        text = str(info.value.code)
        assert message in text and "\n" not in text and text.startswith("error: classifier"), text
        assert not out.exists()  # refused before anything was written


def test_missing_or_unbound_card_is_a_warning_on_the_console_and_in_summary(setup, tmp_path: Path, capsys) -> None:
    from classseg.pipeline import main

    folder, argv = setup
    card_path(folder / "segmenter.keras").write_text(json.dumps({"role": "segmenter", "img_size": 32}))  # old card
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    warnings = json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"]
    assert len(warnings) == 2
    assert "classifier.keras has no model card" in warnings[0] and "runs on defaults" in warnings[0]
    assert "segmenter.card.json has no model_sha256" in warnings[1]
    assert all(f"warning: {w}" in err for w in warnings)

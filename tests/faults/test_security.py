"""Loading a model never runs code from it; no command writes outside its --out."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from faultkit import make_data, make_models, pipeline_argv, snapshot

from classseg.cli import main as cli_main
from classseg.pipeline import main as pipeline_main


def _lambda_segmenter(path: Path, witness: Path) -> Path:
    """A segmenter whose Lambda layer writes ``witness`` whenever it is called (built, or run)."""
    def payload(x):
        witness.write_text("code from the model file ran")
        return x

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: payload(t) * (1 / 255))(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    keras.Model(inputs, outputs).save(path)
    witness.unlink()  # written while the model was built here
    return path


def test_a_lambda_layer_in_a_model_file_never_runs(tmp_path: Path) -> None:
    from classseg.models.classifier import load_classifier
    from classseg.models.loading import load_model

    data = make_data(tmp_path / "data")
    classifier, _ = make_models(tmp_path / "models")
    witness = tmp_path / "witness.txt"
    evil = _lambda_segmenter(tmp_path / "evil.keras", witness)
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(evil)
    with pytest.raises(ValueError, match="safe_mode"):
        load_classifier(evil)
    with pytest.raises(SystemExit) as info:
        pipeline_main(pipeline_argv(data, (classifier, evil), tmp_path / "out"))
    assert "\n" not in str(info.value.code) and "evil.keras" in str(info.value.code)
    with pytest.raises(SystemExit, match="classseg export: cannot load .*safe_mode"):
        cli_main(["export", str(evil), "--out", str(tmp_path / "evil.onnx")])
    assert not witness.exists() and not (tmp_path / "evil.onnx").exists()
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_no_command_writes_outside_its_out(tmp_path: Path, monkeypatch) -> None:
    """Everything under the working folder, the data and the models is unchanged but --out."""
    data = make_data(tmp_path / "data", patients=("P1", "P2", "P3", "P4"))
    models = make_models(tmp_path / "models")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    assert pipeline_main(pipeline_argv(data, models, out)) == 0
    assert cli_main(["evaluate", str(out), "--truth", str(data), "--out", str(tmp_path / "ev"), "--json"]) == 0
    assert cli_main(["data", "split", str(data), "--out", str(tmp_path / "s.csv"), "--fractions", "0.5", "0.25",
                     "0.25"]) == 0
    after = snapshot(tmp_path)
    written = {k for k in set(after) ^ set(before) | {k for k in before if after.get(k) != before[k]}}
    assert written and all(k.split("/")[0] in ("out", "ev", "s.csv") for k in written), sorted(written)
    assert np.all([after[k] == v for k, v in before.items()])

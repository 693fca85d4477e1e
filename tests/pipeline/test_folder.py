"""predict_folder: the folder run the CLI and run-all share, called with a config (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from classseg.pipeline.folder import FolderPredictionConfig, FolderResult, PredictionRefused, predict_folder
from tests.pipeline.test_pipeline import slice_image, tiny_classifier, tiny_segmenter, write_rgb


def test_predict_folder_returns_what_it_wrote(tmp_path: Path, capsys) -> None:
    tiny_classifier().save(tmp_path / "c.keras")
    tiny_segmenter().save(tmp_path / "s.keras")
    data = tmp_path / "data"
    for k, spot in enumerate((250, None, 140)):
        write_rgb(data / "P" / f"P_{k}.png", slice_image(32, 32, spot))
        cv2.imwrite(str(data / "P" / f"P_{k}_mask.png"), np.zeros((32, 32), np.uint8))
    config = FolderPredictionConfig(test_dir=data, out=tmp_path / "out", classifier=tmp_path / "c.keras",
                                    segmenter=tmp_path / "s.keras", threshold=0.5, overlays=False)
    result = predict_folder(config)
    assert isinstance(result, FolderResult) and result.exit_code == 0
    assert (result.images, result.ok, result.patients, result.with_ground_truth) == (3, 3, 1, 3)
    assert result.predictions_csv.is_file() and not (result.out / "overlays").exists()
    assert json.loads(result.summary_json.read_text())["data"]["images"] == 3
    assert json.loads(result.metrics_json.read_text())["gated"] == result.metrics["gated"]
    assert result.announce() == 0 and "3/3 slices processed" in capsys.readouterr().out
    with pytest.raises(PredictionRefused, match="--overwrite"):  # a finished output is kept
        predict_folder(config)
    with pytest.raises(SystemExit, match="must be between 0 and 1"):  # PredictionRefused is a SystemExit
        predict_folder(FolderPredictionConfig(test_dir=data, threshold=2.0))

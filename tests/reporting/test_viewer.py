"""``classseg view``: the HTML viewer of a predictions folder, opened in real headless Chromium (DOM and screenshot).

Chromium is looked up as ``$CLASSSEG_CHROMIUM``, ``chromium``, ``chromium-browser``, ``google-chrome``; CI
(.ci/run) installs Debian's ``chromium`` when none is there. Without one the browser tests are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from classseg.cli import main as classseg_main
from classseg.evaluation.folder import evaluate_folder
from classseg.pipeline.folder import FolderPredictionConfig, predict_folder
from classseg.reporting.viewer import viewer_data, write_viewer
from tests.pipeline.test_pipeline import SIZE, slice_image, tiny_classifier, tiny_segmenter, write_rgb

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The headless browser to use, or None."""
    given = os.environ.get("CLASSSEG_CHROMIUM")
    if given:
        return given
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def chromium(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with flags that work in containers and without a network."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser, google-chrome or $CLASSSEG_CHROMIUM); .ci/run "
                    "installs Debian's chromium")
    profile = tmp_path / f"profile_{len(list(tmp_path.glob('profile_*')))}"
    profile.mkdir()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
             "--window-size=1280,1000"]
    return subprocess.run([browser, *flags, *mode, page.as_uri()], capture_output=True, text=True, timeout=120,
                          check=True)


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, predictions folder) of the tiny raw-pixel models: three patients with ground truth; ``P_bad`` has a
    tumor the models miss (dark, below the segmenter's cut), ``P_good`` one they find, ``P_none`` no tumor."""
    root = tmp_path_factory.mktemp("viewer")
    tiny_classifier().save(root / "c.keras")
    tiny_segmenter().save(root / "s.keras")
    data = root / "data"
    box = (8, 8, 24, 24)
    for patient, spot in (("P_good", 250), ("P_bad", 90), ("P_none", None)):
        for k in range(3):
            value = spot if k == 1 else None
            write_rgb(data / patient / f"{patient}_{k}.png", slice_image(SIZE, SIZE, value, box))
            mask = np.zeros((SIZE, SIZE), np.uint8)
            if value is not None:
                mask[8:24, 8:24] = 255
            cv2.imwrite(str(data / patient / f"{patient}_{k}_mask.png"), mask)
    config = FolderPredictionConfig(test_dir=data, out=root / "pred", classifier=root / "c.keras",
                                    segmenter=root / "s.keras", threshold=0.5)
    return data, predict_folder(config).out


def test_viewer_data_sorts_worst_patients_first_with_evaluate_figures(predictions: tuple[Path, Path]) -> None:
    data, pred = predictions
    view = viewer_data(pred, data)
    assert [p["patient"] for p in view["patients"]] == ["P_bad", "P_good", "P_none"]
    scores = {p["patient_id"]: p["dice"] for p in evaluate_folder(pred, data)["per_patient"]}
    assert {p["patient"]: p["dice"] for p in view["patients"]} == scores
    bad = view["patients"][0]
    assert (bad["dice"], bad["tumor_slices"], bad["missed"], bad["n_slices"]) == (0.0, 1, 1, 3)
    assert view["patients"][1]["dice"] == pytest.approx(1.0) and view["patients"][2]["dice"] == 1.0
    assert bad["slices"][1]["overlay"] == "../overlays/P_bad/P_bad_1.png" and bad["slices"][1]["dice"] == 0.0
    without = viewer_data(pred)  # no truth: most slices called tumor first
    assert without["patients"][0]["patient"] == "P_good" and without["patients"][0]["dice"] is None


def test_view_command_writes_once_and_finds_the_truth(predictions: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data, pred = predictions
    out = tmp_path / "page"
    assert classseg_main(["view", str(pred), "--out", str(out)]) == 0
    assert f"ground truth: {data}" in capsys.readouterr().out  # from summary.json
    text = (out / "index.html").read_text()
    assert '"dice_per_patient"' in text and "<script src" not in text and "http" not in text.split("<body>")[1]
    with pytest.raises(SystemExit, match="--overwrite"):
        classseg_main(["view", str(pred), "--out", str(out)])
    assert classseg_main(["view", str(pred), "--out", str(out), "--overwrite", "--no-truth"]) == 0


def test_viewer_renders_in_headless_chromium(predictions: tuple[Path, Path], tmp_path: Path) -> None:
    """The real browser: the patient list is built (worst first), the worst patient's overlays load, and the
    screenshot shows the ground-truth outline (pure green, drawn by the pipeline's overlay)."""
    data, pred = predictions
    page = write_viewer(pred, data, overwrite=True)
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    rows = re.findall(r'<tr class="patient[^"]*" data-patient="([^"]+)"', dom)
    assert rows == ["P_bad", "P_good", "P_none"]
    images = re.findall(r'<img class="overlay"[^>]*>', dom)
    assert len(images) == 3 and all('data-loaded="1"' in tag for tag in images)  # decoded by the browser
    assert 'src="../overlays/P_bad/P_bad_1.png"' in dom and "P_bad: 3 slices" in dom
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path, f"--screenshot={shot}")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1280)
    b, g, r = (image[..., k].astype(int) for k in range(3))
    assert ((g > 200) & (r < 60) & (b < 60)).sum() > 50  # the green truth outline of the missed tumor
    assert image.std() > 10  # not a blank page

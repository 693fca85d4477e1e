"""kaggle_dataset(): reuse, fallback without credentials / client, and the download path with a fake client."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from classseg.data.kaggle import KAGGLE_DATASET, find_dataset, kaggle_credentials, kaggle_dataset


def _fake_tree(root: Path, patients=("TCGA_CS_0001_20000101",)) -> Path:
    """A kaggle_3m-like folder: one image + mask file per patient (contents are never read)."""
    for pid in patients:
        (root / pid).mkdir(parents=True)
        (root / pid / f"{pid}_1.tif").write_bytes(b"x")
        (root / pid / f"{pid}_1_mask.tif").write_bytes(b"x")
    return root


@pytest.fixture
def no_creds(monkeypatch, tmp_path):
    """An empty home, no Kaggle variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def fallback(tmp_path):
    return _fake_tree(tmp_path / "sample" / "kaggle_3m")


def test_credentials_lookup(no_creds, monkeypatch):
    assert kaggle_credentials() is None
    (no_creds / ".kaggle").mkdir()
    (no_creds / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert kaggle_credentials() == str(no_creds / ".kaggle" / "kaggle.json")
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    assert kaggle_credentials() == str(no_creds / ".kaggle" / "kaggle.json")  # a username alone is not enough
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle_credentials().startswith("environment")


def test_no_credentials_falls_back(no_creds, fallback, tmp_path, capsys):
    dest = tmp_path / "datasets" / "lgg"
    assert kaggle_dataset(dest, fallback=fallback) == fallback
    assert "no Kaggle credentials" in capsys.readouterr().out
    assert not dest.exists()  # nothing written


def test_credentials_but_no_client_falls_back(no_creds, fallback, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.setitem(sys.modules, "kaggle", None)  # `import kaggle` raises ImportError
    assert kaggle_dataset(tmp_path / "lgg", fallback=fallback) == fallback
    assert "package is not installed" in capsys.readouterr().out


def test_already_downloaded_is_reused_without_credentials(no_creds, fallback, tmp_path, capsys):
    dest = tmp_path / "lgg"
    nested = _fake_tree(dest / "lgg-mri-segmentation" / "kaggle_3m")
    assert kaggle_dataset(dest, fallback=fallback) == nested  # a manual unzip, copy in a sub-folder
    top = _fake_tree(dest / "kaggle_3m")
    assert kaggle_dataset(dest, fallback=fallback) == top  # the shallowest copy wins
    assert "already downloaded" in capsys.readouterr().out


def test_empty_kaggle_3m_folder_is_not_a_dataset(no_creds, fallback, tmp_path):
    dest = tmp_path / "lgg"
    (dest / "kaggle_3m" / "TCGA_CS_0001_20000101").mkdir(parents=True)  # patient folder without masks
    assert find_dataset(dest) is None
    assert kaggle_dataset(dest, fallback=fallback) == fallback


def _install_fake_client(monkeypatch, download):
    """sys.modules entries for `kaggle` and `kaggle.api.kaggle_api_extended.KaggleApi`."""
    calls = []

    class KaggleApi:
        def authenticate(self):
            calls.append("authenticate")

        def dataset_download_files(self, dataset, path, unzip, quiet=True):
            calls.append((dataset, unzip))
            download(Path(path))

    extended = types.ModuleType("kaggle.api.kaggle_api_extended")
    extended.KaggleApi = KaggleApi
    api = types.ModuleType("kaggle.api")
    api.kaggle_api_extended = extended
    root = types.ModuleType("kaggle")
    root.api = api
    monkeypatch.setitem(sys.modules, "kaggle", root)
    monkeypatch.setitem(sys.modules, "kaggle.api", api)
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", extended)
    return calls


def test_download_keeps_one_copy(no_creds, fallback, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")

    def unzip(path: Path) -> None:  # the real archive holds two copies of kaggle_3m
        _fake_tree(path / "kaggle_3m", ("TCGA_CS_0001_20000101", "TCGA_DU_0002_20000101"))
        _fake_tree(path / "lgg-mri-segmentation" / "kaggle_3m", ("TCGA_CS_0001_20000101",))

    calls = _install_fake_client(monkeypatch, unzip)
    dest = tmp_path / "lgg"
    got = kaggle_dataset(dest, fallback=fallback)
    assert got == dest / "kaggle_3m"
    assert sorted(p.name for p in got.iterdir()) == ["TCGA_CS_0001_20000101", "TCGA_DU_0002_20000101"]
    assert sorted(p.name for p in dest.iterdir()) == ["kaggle_3m"]  # staging and the duplicate removed
    assert calls == ["authenticate", (KAGGLE_DATASET, True)]
    assert "Kaggle dataset ready" in capsys.readouterr().out
    # a second call reuses it without downloading
    assert kaggle_dataset(dest, fallback=fallback) == got and len(calls) == 2


@pytest.mark.parametrize("failure", ["raises", "no_kaggle_3m"])
def test_failed_download_falls_back(no_creds, fallback, tmp_path, monkeypatch, capsys, failure):
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")

    def download(path: Path) -> None:
        (path / "partial.zip").write_bytes(b"x")
        if failure == "raises":
            raise OSError("403 Forbidden: accept the dataset licence first")

    _install_fake_client(monkeypatch, download)
    dest = tmp_path / "lgg"
    assert kaggle_dataset(dest, fallback=fallback) == fallback
    out = capsys.readouterr().out
    assert "Kaggle download failed" in out and ("403" in out if failure == "raises" else "no kaggle_3m/" in out)
    assert find_dataset(dest) is None and list(dest.iterdir()) == []  # nothing half-done left to reuse

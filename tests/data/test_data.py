"""Data layer: discovery, ordering, masks, bad input, splits (no leakage, determinism), datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import write_patient

from classseg.cli import main as cli_main
from classseg.data import (
    ImageReadError,
    apply_splits,
    discover,
    kfold_patients,
    load_arrays,
    load_splits,
    read_image,
    read_mask,
    save_splits,
    split_patients,
    summarize,
)


def test_discover_rows_and_numeric_order(tmp_path: Path) -> None:
    write_patient(tmp_path, "TCGA_CS_0001_19990101", n_slices=12, tumor_slices=(2, 10))
    df = discover(tmp_path)
    assert list(df["slice"]) == list(range(1, 13))  # lexical order would give 1, 10, 11, 12, 2, ...
    assert df["institution"].unique().tolist() == ["CS"]
    assert df["tumor"].sum() == 2
    assert df.loc[df["slice"] == 10, "tumor_area_px"].item() == 8 * 8
    assert set(df.columns) >= {"patient_id", "institution", "slice", "image_path", "mask_path", "tumor",
                               "tumor_area_px"}


@pytest.mark.parametrize("scale", [1, 255])
def test_masks_0_1_and_0_255_become_binary(tmp_path: Path, scale: int) -> None:
    write_patient(tmp_path, "P1", mask_scale=scale, ext=".png")
    df = discover(tmp_path)
    mask = read_mask(df["mask_path"].iloc[0])
    assert set(np.unique(mask)) == {0, 1}
    assert df["tumor_area_px"].tolist() == [64, 64, 0, 0]


def test_clinical_csv_is_joined(tiny_tree: Path) -> None:
    (tiny_tree / "data.csv").write_text("Patient,age\nTCGA_AA_0001,44\n")
    df = discover(tiny_tree)
    assert df.loc[df["patient_id"] == "TCGA_AA_0001_20000101", "age"].unique().tolist() == [44]
    assert df.attrs["skipped"] == []  # data.csv is metadata, not a skipped file


def test_bad_files_are_skipped_with_reasons(tiny_tree: Path) -> None:
    folder = tiny_tree / "TCGA_AA_0001_20000101"
    (folder / "TCGA_AA_0001_20000101_7.tif").write_bytes(b"not a tiff at all")  # corrupt
    (folder / "notes.txt").write_text("hello")  # not an image
    cv2.imwrite(str(folder / "TCGA_AA_0001_20000101_8.tif"), np.zeros((32, 32, 3), np.uint8))  # no mask
    cv2.imwrite(str(folder / "TCGA_AA_0001_20000101_9.tif"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(folder / "TCGA_AA_0001_20000101_9_mask.tif"), np.zeros((16, 16), np.uint8))  # wrong shape
    cv2.imwrite(str(folder / "TCGA_AA_0001_20000101_11.tif"), np.zeros((32, 32, 3), np.uint8))
    several = np.zeros((32, 32), np.uint8)
    several[:4], several[4:8] = 7, 200  # two different non-zero values (issue 20: one value = tumor, else refused)
    cv2.imwrite(str(folder / "TCGA_AA_0001_20000101_11_mask.tif"), several)  # not binary
    df = discover(tiny_tree)
    assert len(df) == 16
    reasons = {Path(s["path"]).name: s["reason"] for s in df.attrs["skipped"]}
    assert "corrupt" in reasons["TCGA_AA_0001_20000101_7.tif"]
    assert "not an image" in reasons["notes.txt"]
    assert "no mask" in reasons["TCGA_AA_0001_20000101_8.tif"]
    assert "differs from the image" in reasons["TCGA_AA_0001_20000101_9_mask.tif"]
    assert "not binary" in reasons["TCGA_AA_0001_20000101_11_mask.tif"]
    # Without masks required (inference), the mask-less image is kept.
    df2 = discover(tiny_tree, require_masks=False)
    assert "TCGA_AA_0001_20000101_8.tif" in {Path(p).name for p in df2["image_path"]}


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(ImageReadError, match="nope.tif: file does not exist"):
        read_image(missing)
    text = tmp_path / "a.txt"
    text.write_text("x")
    with pytest.raises(ImageReadError, match="a.txt: not an image"):
        read_image(text)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="e.png: file is empty"):
        read_image(empty)


def test_16bit_gray_and_rgba_are_converted(tmp_path: Path) -> None:
    gray16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 10)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    out = read_image(tmp_path / "g16.png")
    # full-range mapping round(v / 257) (issue 20), not the slice's own min-max: 40950 -> 159, not 255
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.max() == 159 and out.min() == 0
    np.testing.assert_array_equal(out[..., 0], np.round(gray16 / 257.0).astype(np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (8, 8, 3) and out[0, 0].tolist() == [255, 0, 0]  # returned as RGB


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        discover(tmp_path / "empty")


def _many_patients(tmp_path: Path, n: int = 20) -> pd.DataFrame:
    for k in range(n):
        write_patient(tmp_path, f"TCGA_X{k % 3}_{k:04d}_20000101", n_slices=6, size=16,
                      tumor_slices=tuple(range(1, 1 + k % 5)), seed=k)
    return discover(tmp_path)


def test_split_no_leakage_deterministic_and_stratified(tmp_path: Path) -> None:
    df = _many_patients(tmp_path)
    a = split_patients(df, seed=3)
    b = split_patients(df, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a["patient_id"].is_unique and set(a["patient_id"]) == set(df["patient_id"])
    assert a["split"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    merged = apply_splits(df, a)
    overall = df["tumor"].mean()
    for _, part in merged.groupby("split"):
        assert abs(part["tumor"].mean() - overall) <= 0.10
    # a patient's slices never straddle two splits
    assert merged.groupby("patient_id")["split"].nunique().max() == 1
    assert not split_patients(df, seed=4).equals(a)


def test_split_roundtrip_and_validation(tmp_path: Path) -> None:
    df = _many_patients(tmp_path / "d", n=8)
    path = save_splits(split_patients(df, seed=0), tmp_path / "s.csv")
    assert load_splits(path).equals(split_patients(df, seed=0))
    (tmp_path / "bad.csv").write_text("patient_id,split\nA,train\nA,test\n")
    with pytest.raises(ValueError, match="listed twice"):
        load_splits(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="not in the split file"):
        apply_splits(df, pd.DataFrame({"patient_id": ["zzz"], "split": ["train"]}))


def test_kfold_by_patient(tmp_path: Path) -> None:
    df = _many_patients(tmp_path, n=10)
    folds = kfold_patients(df, k=5, seed=0)
    assert folds["patient_id"].is_unique and len(folds) == 10
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]


def test_arrays_and_datasets(tiny_tree: Path) -> None:
    from classseg.data import AugmentConfig, build_augmenter, classification_dataset, segmentation_dataset

    df = discover(tiny_tree)
    arr = load_arrays(df, img_size=16, progress=False)
    assert arr.images.shape == (16, 16, 16, 3) and arr.masks.shape == (16, 16, 16, 1)
    assert arr.labels.tolist() == df["tumor"].astype(int).tolist()
    seg = segmentation_dataset(arr.images, arr.masks, batch_size=5, augment=build_augmenter(AugmentConfig(), seed=0))
    batches = list(seg)
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 1]  # every sample counted
    x, y = batches[0]
    assert x.dtype.name == "float32" and float(x.numpy().max()) <= 255.0
    assert set(np.unique(y.numpy())) <= {0.0, 1.0}
    cls = classification_dataset(arr.images, arr.labels, batch_size=16)
    x, y = next(iter(cls))
    assert y.shape == (16, 2) and y.numpy()[:, 1].tolist() == arr.labels.tolist()


def test_augmenter_moves_image_and_mask_together() -> None:
    from classseg.data import AugmentConfig, build_augmenter

    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32, 1), np.uint8)
    image[4:12, 2:10] = 255
    mask[4:12, 2:10] = 1
    flip_only = AugmentConfig(hflip=1.0, rotate_p=0, elastic_p=0, noise_p=0, brightness_contrast_p=0)
    out_img, out_mask = build_augmenter(flip_only, seed=0)(image, mask)
    assert out_mask.shape == (32, 32, 1)
    np.testing.assert_array_equal(out_mask[..., 0], mask[:, ::-1, 0])
    np.testing.assert_array_equal(out_img[..., 0] > 0, out_mask[..., 0] > 0)


def test_cli_summary_json_and_split(tiny_tree: Path, tmp_path: Path, capsys) -> None:
    (tiny_tree / "TCGA_AA_0001_20000101" / "junk.txt").write_text("x")
    assert cli_main(["data", "summary", str(tiny_tree), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["patients"], info["slices"], info["tumor_slices"]) == (4, 16, 8)
    assert len(info["skipped"]) == 1
    out = tmp_path / "split.csv"
    assert cli_main(["data", "split", str(tiny_tree), "--out", str(out), "--seed", "1"]) == 0
    first = out.read_text()
    cli_main(["data", "split", str(tiny_tree), "--out", str(out), "--seed", "1", "--overwrite"])
    assert out.read_text() == first
    with pytest.raises(SystemExit, match="does not exist"):
        cli_main(["data", "summary", str(tmp_path / "missing")])


def test_summary_counts(tiny_tree: Path) -> None:
    info = summarize(discover(tiny_tree))
    assert info["per_institution"] == {"AA": {"patients": 2, "slices": 8, "tumor_slices": 4},
                                       "BB": {"patients": 2, "slices": 8, "tumor_slices": 4}}


def test_restricting_to_the_split_files_patients(tmp_path: Path, capsys) -> None:
    """Defect: a dataset with patients the split file does not list could not be used at all."""
    df = _many_patients(tmp_path / "d", n=8)
    listed = split_patients(df, seed=0).head(5)
    kept = apply_splits(df, listed, only_listed=True)
    assert set(kept["patient_id"]) == set(listed["patient_id"]) and len(kept.attrs["left_out_patients"]) == 3
    save_splits(listed, tmp_path / "s.csv")
    assert cli_main(["data", "link", str(tmp_path / "d"), "--splits", str(tmp_path / "s.csv"),
                     "--out", str(tmp_path / "linked")]) == 0
    out = capsys.readouterr().out
    assert "linked 5 patient folder(s)" in out and "3 patient folder(s)" in out and "left out" in out
    assert set(discover(tmp_path / "linked")["patient_id"]) == set(listed["patient_id"])


def test_one_walker_for_discover_and_the_pipeline(tmp_path: Path) -> None:
    """discover and the pipeline's find_inputs read a folder by the same rules (symlinks, metadata, order)."""
    from classseg.pipeline import find_inputs

    write_patient(tmp_path / "real", "P2", n_slices=3)
    write_patient(tmp_path / "d", "P1", n_slices=12)
    (tmp_path / "d" / "P2").symlink_to(tmp_path / "real" / "P2", target_is_directory=True)
    (tmp_path / "d" / "data.csv").write_text("Patient\n")
    (tmp_path / "d" / "P1" / ".DS_Store").write_text("x")
    df = discover(tmp_path / "d")
    inputs, skipped = find_inputs(tmp_path / "d")
    assert [Path(p).name for p in df["image_path"]] == [s.path.name for s in inputs]
    assert list(df["patient_id"]) == [s.patient for s in inputs] and "P2" in set(df["patient_id"])
    assert skipped == [] and df.attrs["skipped"] == []


# ------------------------------------------------------------------------------------------------ issue 20
def test_one_bit_depth_rule_independent_of_the_slice_range(tmp_path: Path) -> None:
    """16-bit: round(v / 257) whatever the slice's own min and max; float: [0, 1] x 255 or [0, 255], else
    refused; signed integers refused. Training (load_arrays) reads through the same function."""
    from classseg.data.io import BIT_DEPTH_RULE

    dim = np.full((8, 8), 1000, np.uint16)
    dim[:4] = 2000  # a dark 16-bit slice: min-max would stretch it to 0..255
    cv2.imwrite(str(tmp_path / "dim.png"), dim)
    bright = dim.copy()
    bright[0, 0] = 65535  # the same scan with one bright pixel: min-max would change every other pixel
    cv2.imwrite(str(tmp_path / "bright.png"), bright)
    a, b = read_image(tmp_path / "dim.png"), read_image(tmp_path / "bright.png")
    assert a[4, 0, 0] == 4 and a[0, 1, 0] == 8  # round(1000 / 257), round(2000 / 257)
    assert (a[1:] == b[1:]).all() and b[0, 0, 0] == 255
    assert "257" in BIT_DEPTH_RULE
    for name, values, expected in (("unit.tiff", np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), [0, 128, 255, 64]),
                                   ("byte.tiff", np.array([[0.0, 2.4], [255.0, 100.6]], np.float32), [0, 2, 255, 101])):
        cv2.imwrite(str(tmp_path / name), values)
        assert read_image(tmp_path / name)[..., 0].ravel().tolist() == expected
    cv2.imwrite(str(tmp_path / "hdr.tiff"), np.array([[0.0, 300.0]], np.float32))
    with pytest.raises(ImageReadError, match=r"hdr.tiff: float image with values 0..300, outside \[0, 1\] and"):
        read_image(tmp_path / "hdr.tiff")
    cv2.imwrite(str(tmp_path / "neg.tiff"), np.array([[-1.0, 0.5]], np.float32))
    with pytest.raises(ImageReadError, match="outside"):
        read_image(tmp_path / "neg.tiff")
    cv2.imwrite(str(tmp_path / "signed.tiff"), np.array([[-5, 7]], np.int16))
    with pytest.raises(ImageReadError, match="unsupported pixel type int16"):
        read_image(tmp_path / "signed.tiff")
    # training reads the same numbers
    (tmp_path / "P").mkdir()
    cv2.imwrite(str(tmp_path / "P" / "P_1.png"), bright)
    cv2.imwrite(str(tmp_path / "P" / "P_1_mask.png"), np.zeros((8, 8), np.uint8))
    arrays = load_arrays(discover(tmp_path / "P"), img_size=8, progress=False)
    np.testing.assert_array_equal(arrays.images[0], b)


def test_one_mask_rule_non_zero_is_tumor_or_refused(tmp_path: Path) -> None:
    """0 = background and one other value = tumor (0/128 too); two or more non-zero values (JPEG) refused."""
    from classseg.data.io import MASK_RULE

    half = np.zeros((8, 8), np.uint8)
    half[2:5, 2:5] = 128
    cv2.imwrite(str(tmp_path / "m128.png"), half)
    assert read_mask(tmp_path / "m128.png").sum() == 9
    cv2.imwrite(str(tmp_path / "m16.png"), half.astype(np.uint16) * 256)
    assert read_mask(tmp_path / "m16.png").sum() == 9
    jpeg_like = half.copy()
    jpeg_like[2, 2], jpeg_like[7, 7] = 250, 3  # compression artefacts
    cv2.imwrite(str(tmp_path / "m.png"), jpeg_like)
    with pytest.raises(ImageReadError, match=r"m.png: mask is not binary \(values 0, 3, 128, 250\).*JPEG"):
        read_mask(tmp_path / "m.png")
    assert "refused" in MASK_RULE


def test_patients_are_identified_by_their_path_relative_to_the_data_folder(tmp_path: Path) -> None:
    """<patient>/flair/*.tif made every patient 'flair'; now each folder is its relative path, and the
    grouping says how it was decided (discover's attrs, data summary --json)."""
    for k, pid in enumerate(("TCGA_CS_0001_20000101", "TCGA_HT_0002_20000101")):
        write_patient(tmp_path / "d" / pid, "flair", n_slices=3, seed=k)
    df = discover(tmp_path / "d")
    assert sorted(df["patient_id"].unique()) == ["TCGA_CS_0001_20000101/flair", "TCGA_HT_0002_20000101/flair"]
    assert sorted(df["institution"].unique()) == ["CS", "HT"]
    info = summarize(df)
    assert info["patients"] == 2 and info["grouping"]["patients_by_folder_depth"] == {"2": 2}
    assert info["grouping"]["nested_example"] == "TCGA_CS_0001_20000101/flair"
    assert "relative to the data folder" in info["grouping"]["rule"]
    splits = split_patients(df, fractions=(0.5, 0.5, 0.0), seed=0)
    assert set(splits["patient_id"]) == set(df["patient_id"])  # two patients, never merged


def test_data_link_refuses_a_used_folder_and_overwrites_only_links(tmp_path: Path) -> None:
    """Issue 20: `data link` never mixes two splits' links silently and never removes anything but links;
    nested patient ids (a path relative to the data folder) get nested links."""
    from classseg.cli import main

    data = tmp_path / "data"
    for pid in ("A", "B"):
        write_patient(data, pid)
    write_patient(data / "C", "flair")  # patient id "C/flair"
    splits = tmp_path / "s.csv"
    pd.DataFrame({"patient_id": ["A", "B", "C/flair"], "split": ["train", "test", "test"]}).to_csv(splits, index=False)
    out = tmp_path / "links"
    assert main(["data", "link", str(data), "--splits", str(splits), "--split", "test", "--out", str(out)]) == 0
    assert (out / "B").is_symlink() and (out / "C" / "flair").is_symlink() and not (out / "A").exists()
    with pytest.raises(SystemExit, match="not empty; pass --overwrite"):
        main(["data", "link", str(data), "--splits", str(splits), "--split", "train", "--out", str(out)])
    assert main(["data", "link", str(data), "--splits", str(splits), "--split", "train", "--out", str(out),
                 "--overwrite"]) == 0
    assert (out / "A").is_symlink() and not (out / "B").exists() and not (out / "C" / "flair").exists()
    assert (data / "B").is_dir()  # the linked folders themselves are untouched
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not links"):
        main(["data", "link", str(data), "--splits", str(splits), "--split", "test", "--out", str(out),
              "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine"

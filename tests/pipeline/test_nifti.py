"""NIfTI volumes through the pipeline and ``classseg evaluate``: a synthetic case round-trips (affine, shape and
orientation kept, masks identical to the slice path), bad volumes get a per-file status, missing sequences are
replaced by FLAIR and noted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from classseg.data import nifti
from classseg.evaluation.folder import evaluate_folder
from classseg.pipeline.folder import FolderPredictionConfig, predict_folder
from tests.pipeline.test_pipeline import SIZE, tiny_classifier, tiny_segmenter, write_rgb

N_SLICES = 6


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def case_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (Z, H, W, 3), masks (Z, H, W)): textured slices, a bright tumor on slices 1-3 whose
    channels differ (so a channel mix-up or a flip would change the masks), a small island on slice 4."""
    rng = np.random.default_rng(seed)
    images = rng.integers(5, 60, size=(N_SLICES, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((N_SLICES, SIZE, SIZE), np.uint8)
    for z, (y0, x0) in zip((1, 2, 3), ((4, 6), (6, 9), (8, 12))):
        images[z, y0:y0 + 14, x0:x0 + 10] = (230, 250, 200)
        masks[z, y0:y0 + 14, x0:x0 + 10] = 1
    images[4, 2:5, 26:29] = 250
    return images, masks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models with cards asking for per-patient percentile inputs, flips and the 3D filter."""
    from classseg.models.card import ModelCard, write_card

    folder = tmp_path_factory.mktemp("models")
    tiny_classifier().save(folder / "classifier.keras")
    tiny_segmenter().save(folder / "segmenter.keras")
    write_card(folder / "classifier.keras", ModelCard(role="gate", img_size=SIZE, gate_rule="mask"))
    write_card(folder / "segmenter.keras", ModelCard(
        role="segmenter", img_size=SIZE, threshold=0.5, normalization="patient_percentile", tta="hflip",
        postprocess={"closing": False, "fill_holes": False}, postprocess_3d={"min_fraction": 0.2, "connectivity": 26}))
    return folder


def predict(test_dir: Path, out: Path, model_dir: Path, **options) -> object:
    return predict_folder(FolderPredictionConfig(test_dir=test_dir, out=out, classifier=model_dir / "classifier.keras",
                                                 segmenter=model_dir / "segmenter.keras", **options))


def write_slices(root: Path, patient: str, images: np.ndarray, masks: np.ndarray) -> None:
    for z, (image, mask) in enumerate(zip(images, masks), 1):
        write_rgb(root / patient / f"{patient}_{z}.tif", image)
        cv2.imwrite(str(root / patient / f"{patient}_{z}_mask.tif"), mask * 255)


def ras_affine() -> np.ndarray:
    """An affine storing the same voxels in another orientation: axes R, A, S with 0.9 x 0.9 x 3 mm voxels."""
    return np.array([[0.9, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 3.0, 2], [0, 0, 0, 1]])


def test_layout_reads_the_axial_axis_and_inverts_exactly() -> None:
    rng = np.random.default_rng(1)
    slices = rng.integers(0, 255, size=(5, 7, 9), dtype=np.uint8)
    for affine, axial in ((nifti.display_affine(), 2), (ras_affine(), 2),
                          (np.array([[0, 0, 1, 0], [0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float), 0)):
        layout = nifti.layout_of(affine)
        assert layout.axial_axis == axial
        stored = nifti.from_display(slices, layout)
        assert np.array_equal(nifti.to_display(stored, layout), slices)
    # RAS storage: rows run anterior -> posterior = the stored A axis reversed, columns right -> left = R reversed
    layout = nifti.layout_of(ras_affine())
    assert layout.codes == ("R", "A", "S") and layout.order == (2, 1, 0) and layout.flip == (True, True)


def test_nifti_case_round_trips_and_matches_the_slice_path(tmp_path: Path, model_dir: Path) -> None:
    images, masks = case_arrays()
    tif, nii, ras, four = (tmp_path / name for name in ("tif", "nii", "ras", "four"))
    write_slices(tif, "P1", images, masks)
    nifti.write_case(nii, "P1", images, masks)
    nifti.write_case(ras, "P1", images, masks, affine=ras_affine())
    nifti.write_case(four, "P1", images, masks, four_d=True)
    results = {name: predict(folder, tmp_path / f"out_{name}", model_dir)
               for name, folder in (("tif", tif), ("nii", nii), ("ras", ras), ("four", four))}
    assert all(r.exit_code == 0 and r.ok == N_SLICES for r in results.values())
    rows = {name: read_rows(r.predictions_csv) for name, r in results.items()}
    assert [r["image"] for r in rows["nii"]] == [f"P1/z{z:03d}" for z in range(N_SLICES)]
    assert [r["patient"] for r in rows["nii"]] == ["P1"] * N_SLICES
    delivered = {}
    for name, result in results.items():
        delivered[name] = np.stack([cv2.imread(str(result.out / r["mask_path"]), cv2.IMREAD_UNCHANGED) // 255
                                    for r in rows[name]])
        for key in ("gate_prob", "final_call", "mask_area_px", "note"):
            assert [r[key] for r in rows[name]] == [r[key] for r in rows["tif"]], (name, key)
        assert np.array_equal(delivered[name], delivered["tif"]), name
    assert delivered["tif"][1:4].any() and not delivered["tif"][4].any()  # tumor found; the island filtered (3D)
    timing = ("ms_per_slice", "slices_per_s")
    for variant in ("gated", "segment_all"):
        figures = {name: {k: v for k, v in results[name].metrics[variant].items() if k not in timing}
                   for name in ("tif", "nii")}
        assert figures["nii"] == figures["tif"]
    # the mask volume: the input's affine, shape and orientation, voxel for voxel on its grid
    for name, folder, affine in (("nii", nii, nifti.display_affine()), ("ras", ras, ras_affine())):
        source = nib.load(folder / "P1_flair.nii.gz")
        volume = nib.load(results[name].out / "masks" / "P1_mask.nii.gz")
        assert volume.shape == source.shape and np.allclose(volume.affine, affine)
        assert nib.aff2axcodes(volume.affine) == nib.aff2axcodes(source.affine)
        assert volume.get_data_dtype() == np.uint8
        stored = np.asarray(volume.dataobj)
        assert np.array_equal(stored, nifti.from_display(delivered["tif"], nifti.layout_of(affine)))
    assert nib.load(results["four"].out / "masks" / "P1_mask.nii.gz").shape == (SIZE, SIZE, N_SLICES)
    volumes = read_rows(results["nii"].out / "volumes.csv")
    assert [(v["case"], v["status"], v["slices"], v["orientation"]) for v in volumes] == [("P1", "ok", "6", "PLS")]
    summary = json.loads(results["nii"].summary_json.read_text())
    assert summary["data"]["volumes"] == {"cases": 1, "ok": 1}
    # classseg evaluate scores the NIfTI truth volume as the slices' masks
    from_volume = evaluate_folder(results["ras"].out, ras)
    from_slices = evaluate_folder(results["tif"].out, tif)
    for key in ("dice_per_patient", "dice_tumor_slices", "accuracy", "sensitivity", "hd95_detected_px", "tp", "fp"):
        assert from_volume[key] == from_slices[key], key
    assert from_volume["n_slices"] == N_SLICES


def test_bad_volumes_get_a_status_and_missing_sequences_are_replaced_by_flair(tmp_path: Path, model_dir: Path) -> None:
    images, masks = case_arrays()
    root = tmp_path / "data"
    nifti.write_case(root, "good", images, masks)
    nifti.write_case(root / "site", "noflair", images)
    (root / "site" / "noflair_flair.nii.gz").unlink()
    nifti.write_case(root, "shapes", images)
    small = nifti.from_display(images[:, :16, :, 0], nifti.layout_of(nifti.display_affine()))
    nib.save(nib.Nifti1Image(small, nifti.display_affine()), root / "shapes_t1.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((SIZE, SIZE, 4, 2), np.uint8), nifti.display_affine()), root / "twochan.nii.gz")
    nifti.write_case(root, "onlyflair", images)
    for name in ("onlyflair_t1.nii.gz", "onlyflair_t1ce.nii.gz"):
        (root / name).unlink()
    nib.save(nib.Nifti1Image(np.zeros((SIZE, SIZE, N_SLICES), np.uint8), nifti.display_affine()),
             root / "good_t2.nii.gz")
    (root / "broken_flair.nii.gz").write_bytes(b"not a volume")
    result = predict(root, tmp_path / "out", model_dir, overlays=False)
    assert result.exit_code == 0
    rows = read_rows(result.predictions_csv)
    errors = {r["image"]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"broken_flair.nii.gz", "shapes_t1.nii.gz", "site/noflair_t1.nii.gz", "twochan.nii.gz"}
    assert "different shapes (shapes_t1.nii.gz 16x32x6, shapes_flair.nii.gz 32x32x6" in errors["shapes_t1.nii.gz"]
    assert "no FLAIR volume" in errors["site/noflair_t1.nii.gz"]
    assert "must be 4D with 3 channels" in errors["twochan.nii.gz"]
    assert "not a readable NIfTI volume" in errors["broken_flair.nii.gz"]
    assert sum(r["status"] == "ok" for r in rows) == 2 * N_SLICES  # good and onlyflair
    volumes = {v["case"]: v for v in read_rows(result.out / "volumes.csv")}
    assert volumes["onlyflair"]["status"] == "ok" and volumes["onlyflair"]["note"] == (
        "pre-contrast missing: FLAIR used in its place; post-contrast missing: FLAIR used in its place")
    assert volumes["site/noflair"]["status"] == "error" and not (result.out / "masks" / "site").exists()
    assert (result.out / "masks" / "onlyflair_mask.nii.gz").is_file()
    skipped = read_rows(result.out / "skipped.csv")
    assert [s["path"] for s in skipped] == ["good_t2.nii.gz"] and "not used by the models" in skipped[0]["reason"]
    # FLAIR in place of both missing channels: the slices read are FLAIR three times
    case = next(c for c in nifti.find_cases(root)[0] if c.case_id == "onlyflair")
    loaded = nifti.load_case(case).images
    assert np.array_equal(loaded[..., 0], images[..., 1]) and np.array_equal(loaded[..., 2], images[..., 1])


def test_intensities_of_a_float_volume_follow_one_gain_per_sequence(tmp_path: Path) -> None:
    images, _ = case_arrays()
    affine = nifti.display_affine()
    layout = nifti.layout_of(affine)
    for k, name in enumerate(("t1", "flair", "t1ce")):
        stored = nifti.from_display(images[..., k], layout).astype(np.float32) * (7.5 + k)
        nib.save(nib.Nifti1Image(stored, affine), tmp_path / f"F_{name}.nii.gz")
    cases, _ = nifti.find_cases(tmp_path)
    loaded = nifti.load_case(cases[0]).images
    for k in range(3):
        top = np.percentile(images[..., k][images[..., k] > 0], 99.9)
        expected = np.round(np.clip(images[..., k].astype(np.float32) * (255.0 / top), 0, 255))
        assert np.abs(loaded[..., k].astype(int) - expected).max() <= 1

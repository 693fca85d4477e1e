"""Per-patient percentile normalisation and the intensity augmentation of issue 17 (known values)."""

from __future__ import annotations

import numpy as np
import pytest

from classseg.data.augment import ROBUST_AUGMENT, AugmentConfig, build_augmenter, channel_gain_gamma
from classseg.data.standardize import (
    PERCENTILE_TARGETS,
    channel_percentiles,
    model_input_scale,
    normalize_groups,
    percentile_scale,
    prepare_input,
)


def brain_stack(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 slices: a black border and a 'brain' of values 40..200 per channel."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 3), np.uint8)
    x[:, 4:-4, 4:-4] = rng.integers(40, 201, (n, size - 8, size - 8, 3), dtype=np.uint8)
    return x


def test_percentile_scale_maps_each_channels_brain_p99_to_its_target() -> None:
    x = brain_stack()
    x[..., 2] //= 2  # a darker post-contrast channel
    out = prepare_input(x, "patient_percentile", ["P"] * len(x))
    brain = out[:, 4:-4, 4:-4].reshape(-1, 3)
    np.testing.assert_allclose(np.percentile(brain, 99, axis=0), PERCENTILE_TARGETS, rtol=1e-3)
    assert out.dtype == np.float32 and out[:, :4].max() == 0  # background stays 0; nothing clipped
    assert model_input_scale("patient_percentile") == pytest.approx(1 / 255)
    assert model_input_scale("patient_zscore") is None


def test_percentile_is_invariant_to_a_per_channel_gain_of_the_patient() -> None:
    x = brain_stack(seed=1)
    scaled = np.clip(np.rint(x.astype(np.float32) * np.array([0.5, 0.35, 1.25])), 0, 255).astype(np.uint8)
    a = prepare_input(x, "patient_percentile", ["P"] * 3)
    b = prepare_input(scaled, "patient_percentile", ["P"] * 3)
    # only uint8 rounding differs: at most ~1 grey level before scaling (x 1/0.35 on FLAIR);
    # no clipping (200 x 1.25 < 255)
    assert np.abs(a - b).max() < 4.0
    assert np.abs(a - b).mean() < 0.6
    raw_a, raw_b = prepare_input(x, "raw"), prepare_input(scaled, "raw")
    assert np.abs(raw_a - raw_b).mean() > 20  # raw pixels are not invariant


def test_percentile_uses_the_whole_patient_and_lone_slices_their_own() -> None:
    x = brain_stack(4, seed=2)
    x[3] //= 3  # one darker slice inside patient P
    groups = ["P", "P", "P", "P"]
    out = normalize_groups(x, groups, "patient_percentile")
    gains = np.asarray(PERCENTILE_TARGETS) / np.asarray(channel_percentiles(x))
    np.testing.assert_allclose(out, x.astype(np.float32) * gains.astype(np.float32), rtol=1e-6, atol=1e-4)
    lone = normalize_groups(x, [None] * 4, "patient_percentile")  # each slice on its own statistics
    np.testing.assert_allclose(lone[3], percentile_scale(x[3], channel_percentiles(x[3])), rtol=1e-6, atol=1e-4)
    assert not np.allclose(lone[3], out[3])


def test_a_zero_filled_channel_is_left_as_it_is() -> None:
    x = brain_stack()
    x[..., 0] = 0  # a missing sequence stored as zeros
    out = prepare_input(x, "patient_percentile", ["P"] * 3)
    assert out[..., 0].max() == 0 and np.isfinite(out).all()


def test_channel_gain_gamma_known_values() -> None:
    img = np.zeros((2, 2, 3), np.float32)
    img[..., 0] = [[0, 50], [100, 200]]
    img[..., 1] = [[10, 10], [10, 10]]  # flat: only the gain applies
    img[..., 2] = [[-2, 0], [1, 2]]  # z-scores: negative values are fine
    out = channel_gain_gamma(img, gain=(2.0, 0.5, 1.0), gamma=(0.5, 1.0, 2.0))
    # channel 0: lo 0, span 200: 2 * 200 * (x / 200) ** 0.5
    np.testing.assert_allclose(out[..., 0], 400 * np.sqrt(img[..., 0] / 200), rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], 5.0)
    # channel 2: lo -2, span 4: -2 + 4 * ((x + 2) / 4) ** 2
    np.testing.assert_allclose(out[..., 2], -2 + 4 * ((img[..., 2] + 2) / 4) ** 2, rtol=1e-6)
    assert out.dtype == np.float32 and out[1, 1, 0] == pytest.approx(400.0)  # float inputs are not clipped
    big = channel_gain_gamma(np.full((2, 2, 3), 200, np.uint8) * np.uint8(1), gain=(2.0,), gamma=(1.0,))
    assert big.dtype == np.uint8 and big.max() == 255  # uint8 cannot hold more


def test_robust_augmenter_keeps_float_inputs_unclipped_and_masks_aligned() -> None:
    x = prepare_input(brain_stack(1, 64, seed=3), "patient_percentile", ["P"])[0]
    mask = np.zeros((64, 64, 1), np.uint8)
    mask[20:40, 24:44] = 1
    aug = build_augmenter(ROBUST_AUGMENT, seed=0, float_input=True, value_scale=255.0)
    seen_above_255 = False
    for _ in range(30):
        img, m = aug(x, mask)
        assert img.dtype == np.float32 and img.shape == x.shape and m.shape == mask.shape
        assert set(np.unique(m)) <= {0, 1}
        seen_above_255 |= bool(img.max() > 255)
        assert np.isfinite(img).all()
    assert seen_above_255  # gains up to 2 push bright brain above 255: no clipping to [0, 1] or [0, 255]
    # geometry only (no intensity): the image's bright square and the mask move together
    geo = build_augmenter(AugmentConfig(hflip=1.0, rotate_p=0.0, elastic_p=0.0, noise_p=0.0,
                                                  brightness_contrast_p=0.0), seed=0, float_input=True)
    img = np.zeros((64, 64, 3), np.float32)
    img[20:40, 24:44] = 300.0
    out, m = geo(img, mask)
    assert np.array_equal(out[..., 0] > 0, m[..., 0] > 0)


def test_shipped_pipeline_masks_barely_change_when_a_patient_is_scaled_by_half() -> None:
    """Issue 17, item 3: with the shipped models (per-patient normalisation on) a patient's delivered masks
    agree with Dice >= 0.98 when every slice is multiplied by 0.5 (a darker scanner or export)."""
    from classseg.data import discover, read_image
    from classseg.evaluation.segmentation import dice
    from classseg.pipeline import ClassSegPipeline
    from classseg.utils.paths import REPO_ROOT

    models = REPO_ROOT / "saved_models"
    pipe = ClassSegPipeline(models / "classifier.keras", models / "segmenter.keras")
    assert pipe.mask_model.normalization != "raw" and pipe.gate_model.normalization != "raw"
    frame = discover(REPO_ROOT / "data" / "sample" / "kaggle_3m")
    rows = frame[frame["patient_id"] == "TCGA_HT_7694_19950404"]
    images = [read_image(p) for p in rows["image_path"]]
    darker = [np.rint(im.astype(np.float32) * 0.5).astype(np.uint8) for im in images]
    groups = ["P"] * len(images)
    plain = pipe.infer(images, groups=groups)
    dark = pipe.infer(darker, groups=groups)
    a, b = np.stack(plain.delivered), np.stack(dark.delivered)
    assert a.sum() > 1000  # the patient has a visible tumor
    assert dice(a, b) >= 0.98
    assert (plain.final_call == dark.final_call).mean() >= 0.95

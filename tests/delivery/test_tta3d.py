"""Test-time flips, the per-patient 3D filter, their selection on val and the model card (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from classseg.delivery.postprocess import (
    Postprocess3DConfig,
    PostprocessConfig,
    filter_components_3d,
    filter_components_3d_groups,
)
from classseg.evaluation.robustness import STRESS_SETS, robustness_scores, stress_images
from classseg.models.card import ModelCard, read_card, write_card
from classseg.models.tta import TTA_MODES, tta_predict
from classseg.training.selection import choose_delivery


def test_tta_of_a_flip_equivariant_model_is_the_model() -> None:
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)

    def model(b: np.ndarray) -> np.ndarray:  # pixelwise: flips commute with it
        return b.mean(axis=-1, keepdims=True)

    for mode in TTA_MODES:
        np.testing.assert_allclose(tta_predict(model, x, mode), model(x), rtol=1e-6)


def test_tta_averages_flipped_predictions_back_in_place() -> None:
    x = np.zeros((1, 4, 4, 1), np.float32)

    def left_column(b: np.ndarray) -> dict[str, np.ndarray]:  # marks column 0 whatever the input
        out = np.zeros_like(b)
        out[:, :, 0] = 1.0
        return {"mask": out, "class": np.array([[0.2, 0.8]], np.float32)}

    out = tta_predict(left_column, x, "hflip")
    expected = np.zeros((4, 4), np.float32)
    expected[:, 0] = 0.5  # identity
    expected[:, 3] = 0.5  # the flipped copy's column 0 is flipped back to column 3
    np.testing.assert_allclose(out["mask"][0, ..., 0], expected)
    np.testing.assert_allclose(out["class"], [[0.2, 0.8]])  # class outputs averaged as they are
    with pytest.raises(ValueError, match="unknown tta"):
        tta_predict(left_column, x, "rot90")


def volume_with_island() -> np.ndarray:
    """5 slices: a 3-slice tumor of 4x4 px (48 voxels) and a lone 2x2 island on slice 4 (4 voxels)."""
    vol = np.zeros((5, 10, 10), np.uint8)
    vol[0:3, 2:6, 2:6] = 1
    vol[4, 7:9, 7:9] = 1
    return vol


def test_3d_filter_removes_small_components_relative_to_the_largest() -> None:
    vol = volume_with_island()
    out, removed = filter_components_3d(vol, Postprocess3DConfig(min_fraction=0.2))
    assert out[:3].sum() == 48 and out[4].sum() == 0
    assert removed.tolist() == [False, False, False, False, True]
    kept, removed = filter_components_3d(vol, Postprocess3DConfig(min_fraction=0.05))  # 4 >= 0.05 * 48
    assert kept.sum() == 52 and not removed.any()
    # diagonal contact: 26-connectivity joins a corner-touching voxel, 6-connectivity does not
    diag = np.zeros((2, 4, 4), np.uint8)
    diag[0, 0:2, 0:2] = 1
    diag[1, 2, 2] = 1
    assert filter_components_3d(diag, Postprocess3DConfig(0.5, 26))[0].sum() == 5
    assert filter_components_3d(diag, Postprocess3DConfig(0.5, 6))[0].sum() == 4


def test_3d_filter_per_patient_in_slice_order() -> None:
    vol = volume_with_island()
    # two patients interleaved and shuffled; order = slice numbers
    stack = np.concatenate([vol, vol])
    groups = ["A"] * 5 + ["B"] * 5
    order = list(range(5)) * 2
    perm = np.random.default_rng(0).permutation(10)
    out, removed = filter_components_3d_groups(stack[perm], [groups[i] for i in perm],
                                               Postprocess3DConfig(0.2), [order[i] for i in perm])
    back = np.empty_like(out)
    back[perm] = out
    assert back[[4, 9]].sum() == 0 and back.sum() == 96
    assert removed.sum() == 2
    # a slice of patient B does not keep patient A's island alive, and lone slices are untouched
    lone, flags = filter_components_3d_groups(stack, [None] * 10, Postprocess3DConfig(0.2))
    assert lone.sum() == stack.sum() and not flags.any()


def test_choose_delivery_prefers_the_filter_only_when_val_says_so() -> None:
    vol = volume_with_island().astype(np.float32)
    truths = [m.astype(np.uint8) for m in vol]
    truths[4] = np.zeros((10, 10), np.uint8)  # the island is a false positive
    ids = ["P"] * 5
    tta, cfg, cfg3d, table = choose_delivery({"none": vol[..., None]}, truths, ids, order=range(5),
                                             grid={"threshold": (0.5,), "closing": (False,),
                                                   "min_component_px": (0,)})
    assert tta == "none" and cfg3d is not None and cfg3d.min_fraction == pytest.approx(0.1)
    assert len(table) == 4
    truths[4] = vol[4].astype(np.uint8)  # now the island is a real tumor: the filter must stay off
    _, _, cfg3d, _ = choose_delivery({"none": vol[..., None]}, truths, ids, order=range(5),
                                     grid={"threshold": (0.5,), "closing": (False,), "min_component_px": (0,)})
    assert cfg3d is None


def test_card_round_trips_tta_and_3d(tmp_path) -> None:
    card = ModelCard(role="segmenter", img_size=128, normalization="patient_percentile",
                     postprocess={"threshold": 0.4, "min_component_px": 12}, tta="flips",
                     postprocess_3d={"min_fraction": 0.2, "connectivity": 26})
    path = tmp_path / "segmenter.keras"
    write_card(path, card)
    back = read_card(path)
    assert back == card
    assert back.postprocess_3d_config() == Postprocess3DConfig(0.2, 26)
    assert ModelCard(role="segmenter", img_size=128).postprocess_3d_config() is None
    with pytest.raises(ValueError, match="tta"):
        ModelCard(role="segmenter", img_size=128, tta="rot")
    with pytest.raises(ValueError, match="postprocess_3d"):
        ModelCard(role="segmenter", img_size=128, postprocess_3d={"min_fraction": 2.0})
    with pytest.raises(ValueError, match="postprocess_3d"):
        ModelCard(role="segmenter", img_size=128, postprocess_3d={"fraction": 0.2})
    with pytest.raises(ValueError, match="normalization"):
        ModelCard(role="segmenter", img_size=128, normalization="minmax")


def test_stress_sets_known_values() -> None:
    x = np.array([[[[10, 100, 200]]]], np.uint8)
    assert stress_images(x, "dark_0.35").tolist() == [[[[4, 35, 70]]]]
    assert stress_images(x, "bright_2.0").tolist() == [[[[20, 200, 255]]]]
    assert stress_images(x, "flair_only").tolist() == [[[[100, 100, 100]]]]
    with pytest.raises(ValueError):
        stress_images(x, "blur")


def test_robustness_scores_of_a_gain_invariant_and_a_raw_model() -> None:
    size = 16
    images = np.full((2, size, size, 3), 60, np.uint8)
    images[0, 4:10, 4:10] = 180
    truths = [np.zeros((size, size), np.uint8) for _ in range(2)]
    truths[0][4:10, 4:10] = 1
    ids = ["P", "P"]

    def raw_model(x: np.ndarray) -> np.ndarray:  # tumor = brighter than 120 in absolute terms
        return (x.mean(axis=-1, keepdims=True) > 120).astype(np.float32)

    def relative_model(x: np.ndarray) -> np.ndarray:  # tumor = brighter than half the patient's maximum
        return (x.mean(axis=-1, keepdims=True) > 0.5 * x.max()).astype(np.float32)

    cfg = PostprocessConfig(threshold=0.5, closing=False, fill_holes=False)
    raw = robustness_scores(raw_model, images, truths, ids, cfg)
    rel = robustness_scores(relative_model, images, truths, ids, cfg)
    assert list(raw) == ["plain", *STRESS_SETS]
    assert raw["plain"]["dice_per_patient"] == pytest.approx(1.0)
    assert raw["dark_0.35"]["dice_per_patient"] == pytest.approx(0.0)  # 180 * 0.35 = 63 < 120: tumor missed
    assert rel["dark_0.35"]["dice_per_patient"] == pytest.approx(1.0)
    assert rel["bright_2.0"]["dice_per_patient"] == pytest.approx(1.0)


def test_a_joint_cards_class_threshold_never_replaces_its_mask_threshold() -> None:
    """Issue 19: joint.card.json holds the class threshold chosen on val (0.3) and the mask threshold its run
    was scored with (0.5); the pipeline must post-process the masks at 0.5."""
    card = ModelCard(role="joint", img_size=32, threshold=0.3, gate_rule="gate",
                     postprocess={"threshold": 0.5, "closing": True, "min_component_px": 0})
    assert card.postprocess_config().threshold == 0.5
    old = ModelCard(role="segmenter", img_size=32, threshold=0.4, postprocess={"closing": False})
    assert old.postprocess_config().threshold == 0.4  # a card without a mask threshold: the card's

"""Post-processing: hole filling, speck removal, closing, batch shapes."""

import numpy as np

from classseg.delivery.postprocess import PostprocessConfig, postprocess


def _ring():
    m = np.zeros((32, 32), np.float32)
    m[8:24, 8:24] = 0.9
    m[12:20, 12:20] = 0.1  # 8x8 hole
    return m


def test_ring_gets_filled():
    out = postprocess(_ring(), PostprocessConfig(closing=False))
    assert out.dtype == np.uint8 and out.shape == (32, 32)
    assert out[8:24, 8:24].all() and out.sum() == 256
    kept = postprocess(_ring(), PostprocessConfig(closing=False, fill_holes=False))
    assert kept.sum() == 256 - 64


def test_small_speck_removed():
    m = np.zeros((32, 32), np.uint8)
    m[4:14, 4:14] = 1
    m[25, 25] = 1
    m[28:30, 2:4] = 1
    out = postprocess(m, PostprocessConfig(closing=False, min_component_px=10))
    assert out.sum() == 100 and out[25, 25] == 0 and out[28, 2] == 0
    assert postprocess(m, PostprocessConfig(closing=False)).sum() == 105


def test_closing_joins_gap():
    m = np.zeros((32, 32), np.uint8)
    m[10:20, 4:14] = 1
    m[10:20, 16:26] = 1  # 2-pixel gap at columns 14, 15
    off = postprocess(m, PostprocessConfig(closing=False, fill_holes=False))
    on = postprocess(m, PostprocessConfig(closing=True, closing_kernel=5, fill_holes=False))
    assert off[15, 14:16].sum() == 0
    assert on[15, 14:16].all()
    assert np.array_equal(on[m == 1], np.ones(int(m.sum()), np.uint8))  # closing is extensive


def test_batch_shapes_and_threshold():
    ring = _ring()
    for arr in (ring[..., None], np.stack([ring, ring]), np.stack([ring, ring])[..., None]):
        out = postprocess(arr)
        assert out.shape == arr.shape and out.dtype == np.uint8
        assert out.reshape(-1, 32, 32)[0].sum() == 256
    assert postprocess(ring, PostprocessConfig(threshold=0.95, closing=False)).sum() == 0
    empty = postprocess(np.zeros((2, 16, 16, 1), np.float32))
    assert empty.shape == (2, 16, 16, 1) and empty.sum() == 0

"""The pyramid beside a chunked store's activity: the numpy definition (reduce_blocks), the streamed
levels equal to it whatever the slab size, metadata for readers."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.recordings import make_recording
from pocoviz.recordings.chunked import write_chunked
from pocoviz.recordings.pyramid import (
    PyramidWriter,
    build_pyramid,
    level_shape,
    n_levels,
    open_level,
    pyramid_info,
    reduce_blocks,
    reference_pyramid,
    slab_shape,
)


def test_reduce_blocks_mean_peak_ragged_and_nan():
    x = np.array(
        [
            [1, 2, 3, np.nan, 5],
            [4, np.nan, -9, np.nan, 6],
            [7, 8, 0.5, np.nan, np.nan],
        ],
        dtype=np.float32,
    )
    mean, counts = reduce_blocks(x, 2, "mean", return_counts=True)
    np.testing.assert_allclose(mean, [[7 / 3, -3.0, 5.5], [7.5, 0.5, np.nan]], rtol=1e-6)
    np.testing.assert_array_equal(counts, [[3, 2, 2], [2, 1, 0]])
    peak = reduce_blocks(x, 2, "peak")
    np.testing.assert_array_equal(peak, np.array([[4, -9, 6], [8, 0.5, np.nan]], dtype=np.float32))
    assert peak.dtype == np.float32 and mean.dtype == np.float32


def test_peak_keeps_sign_and_prefers_positive_on_ties():
    x = np.zeros((4, 4), dtype=np.float32)
    x[1, 2] = -3.0
    x[3, 3] = 2.0
    assert reduce_blocks(x, 4, "peak")[0, 0] == -3.0
    x[0, 0] = 3.0
    assert reduce_blocks(x, 4, "peak")[0, 0] == 3.0


def test_weighted_means_of_means_equal_the_mean_of_all_finite_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 45)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:16, :16] = np.nan  # one level-2 block with nothing finite
    levels = reference_pyramid(x, 2)
    direct = np.full((3, 3), np.nan)
    for i in range(3):
        for j in range(3):
            block = x[i * 16 : (i + 1) * 16, j * 16 : (j + 1) * 16].astype(np.float64)
            if np.isfinite(block).any():
                direct[i, j] = np.nanmean(block)
    np.testing.assert_allclose(levels[1]["mean"], direct, rtol=1e-5, atol=1e-6)
    assert np.isnan(levels[1]["mean"][0, 0]) and np.isnan(levels[1]["peak"][0, 0])
    # peak of level 2 is the largest-magnitude value of each 16x16 block
    blk = x[16:32, 16:32]
    assert levels[1]["peak"][1, 1] == blk.flat[np.nanargmax(np.abs(blk))]


def test_level_count_and_shapes_of_the_layout():
    assert n_levels((7879, 71721)) == 4
    assert level_shape((7879, 71721), 4) == (31, 281)
    assert n_levels((2000, 3001)) == 2
    assert n_levels((512, 100)) == 0


def _store(tmp_path, x, name="rec.zarr"):
    ds = make_recording(x, sampling_rate_hz=2.0, species="zebrafish", session="s0")
    dest = tmp_path / name
    write_chunked(ds, dest, pyramid=False, sort_by_region=False)
    return dest


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 3001)).astype(np.float32) * 0.1
    x[rng.random(x.shape) < 0.01] = np.nan
    x[100:140, 200:260] = np.nan  # a whole level-1 and -2 region without values
    x[1999, 3000] = -50.0  # a single event in the ragged corner
    x[777, 1234] = 40.0
    return x, _store(tmp_path_factory.mktemp("pyr"), x)


def test_streamed_levels_equal_the_numpy_reference(ragged):
    x, dest = ragged
    assert pyramid_info(dest) is None
    info = build_pyramid(dest, memory_cap_bytes=64 * 2**20)
    assert info["levels"] == 2 and info["level_shapes"] == {1: [500, 751], 2: [125, 188]}
    assert pyramid_info(dest) == info
    ref = reference_pyramid(x)
    for k, level in enumerate(ref, start=1):
        for kind in ("mean", "peak"):
            got = open_level(dest, k, kind)[:]
            np.testing.assert_array_equal(got, level[kind], err_msg=f"level {k} {kind}")
    # the single events survive every level, with their sign, at the cell covering them
    assert open_level(dest, 2, "peak")[1999 // 16, 3000 // 16] == -50.0
    assert open_level(dest, 2, "peak")[777 // 16, 1234 // 16] == 40.0
    assert np.isnan(open_level(dest, 1, "mean")[100 // 4 + 1, 200 // 4 + 1])


def test_small_cap_cuts_slabs_in_units_and_gives_the_same_levels(ragged, tmp_path):
    x, _ = ragged
    dest = _store(tmp_path, x)
    cap = 3 * 2**20
    rows, cols = slab_shape(x.shape, cap, align=16)
    assert cols < x.shape[1]  # really streamed in unit blocks
    build_pyramid(dest, memory_cap_bytes=cap)
    ref = reference_pyramid(x)
    for k, level in enumerate(ref, start=1):
        for kind in ("mean", "peak"):
            np.testing.assert_array_equal(open_level(dest, k, kind)[:], level[kind])


def test_writer_refuses_misaligned_slabs(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    w = PyramidWriter(root, (1000, 1000))
    assert w.block == 4
    with pytest.raises(ValueError, match="multiple of the pyramid block"):
        w.add(np.zeros((8, 8), np.float32), 2, 0)
    with pytest.raises(ValueError, match="whole 4-blocks"):
        w.add(np.zeros((6, 8), np.float32), 0, 0)


def test_pyramid_info_of_a_folder_that_is_not_a_store(tmp_path):
    assert pyramid_info(tmp_path) is None
    assert pyramid_info(tmp_path / "missing.zarr") is None

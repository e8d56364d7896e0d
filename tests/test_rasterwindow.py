"""Raster windows (pocoviz.recordings.rasterwindow): the cells equal a plain block reduction of the
activity, a stored pyramid is read level by level and only under the window, in-memory and
Dask-backed recordings give the same windows, and nothing reads a lazy recording whole."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from pocoviz.recordings import make_recording
from pocoviz.recordings.rasterwindow import RasterSource, reduce_cells

pytestmark = pytest.mark.filterwarnings("ignore:The data type")  # zarr v3 on the label strings


def reference(x: np.ndarray, b0: int, b1: int, kind: str) -> np.ndarray:
    """Block reduction by loops: (ceil(T/b0), ceil(U/b1)) cells of the finite values."""
    n0, n1 = -(-x.shape[0] // b0), -(-x.shape[1] // b1)
    out = np.full((n0, n1), np.nan, np.float32)
    for i in range(n0):
        for j in range(n1):
            block = x[i * b0 : (i + 1) * b0, j * b1 : (j + 1) * b1]
            v = block[np.isfinite(block)]
            if v.size:
                out[i, j] = v.astype(np.float64).mean() if kind == "mean" else v[np.argmax(np.abs(v))]
    return out


def recording(T: int = 150, U: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, U)).astype(np.float32)
    x[3, 5] = 40.0  # a single event
    x[7, 11] = -50.0
    x[20:24, 30:34] = np.nan  # a block of level 1 with no finite value
    ds = make_recording(x, sampling_rate_hz=2.0, species="fish", session="s", units="z-score")
    return x, ds


def write_store(path, ds: xr.Dataset, chunks=(32, 16)) -> None:
    """A test-only writer of docs/wholebrain.md's layout: the recording and pyramid/<k>/{mean,peak}."""
    x = ds["activity"].values
    ds.to_zarr(str(path), mode="w", encoding={"activity": {"chunks": chunks}}, consolidated=False)
    root = zarr.open_group(str(path), mode="a")
    pyr = root.create_group("pyramid")
    k, shape = 0, x.shape
    while max(shape) > 16:
        k += 1
        b = 4**k
        g = pyr.create_group(str(k))
        for kind in ("mean", "peak"):
            cells = reference(x, b, b, kind)
            g.create_array(kind, data=cells, chunks=(min(8, cells.shape[0]), min(8, cells.shape[1])))
        shape = cells.shape
    pyr.attrs.update(factor=4, levels=k, reductions=["mean", "peak"], shape=list(x.shape))


class CountingStore(zarr.storage.WrapperStore):
    """Counts the chunk keys read."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


@pytest.mark.parametrize("kind", ["mean", "peak"])
def test_reduce_cells_equals_a_loop_reference_with_ragged_edges_and_nans(kind):
    x, _ = recording()
    for s0, s1 in [(1, 1), (4, 4), (7, 3), (150, 90)]:
        np.testing.assert_allclose(reduce_cells(x, s0, s1, kind), reference(x, s0, s1, kind), rtol=1e-5, equal_nan=True)


def test_in_memory_windows_equal_the_block_reduction_and_keep_events():
    x, ds = recording()
    src = RasterSource(ds)
    w = src.window(0, 150, 0, 90, max_cols=40, max_rows=20)
    # level 1 (38 x 23 cells) has >= the requested cells along time? no: 38 < 40, so level 0,
    # then whole factors: 150 // 40 = 3 frames and 90 // 20 = 4 rows a cell
    assert (w.level, w.frame_step, w.row_step) == (0, 3, 4)
    assert w.values.shape == (23, 50)
    np.testing.assert_allclose(w.values, reference(x, 3, 4, "mean").T, rtol=1e-5, equal_nan=True)
    peak = src.window(0, 150, 0, 90, max_cols=40, max_rows=20, reduce="peak")
    assert np.nanmax(peak.values) == 40.0 and np.nanmin(peak.values) == -50.0
    # at most twice the requested cells along each axis, never fewer than asked where they exist
    assert 40 <= w.values.shape[1] < 80 and 20 <= w.values.shape[0] < 40
    # a window of the recording: columns on the fixed grid of its step, covering the request
    z = src.window(31, 77, 10, 50, max_cols=10, max_rows=10)
    assert z.frame0 <= 31 and z.frame_edges[-1] >= 77 and z.row0 <= 10 and z.row_edges[-1] >= 50
    assert z.frame0 % z.frame_step == 0 and z.row0 % z.row_step == 0
    full = reference(x, z.frame_step, z.row_step, "mean").T
    r0, c0 = z.row0 // z.row_step, z.frame0 // z.frame_step
    np.testing.assert_allclose(z.values, full[r0 : r0 + z.values.shape[0], c0 : c0 + z.values.shape[1]], rtol=1e-5, equal_nan=True)
    assert src.window(31, 77, 10, 50, max_cols=10, max_rows=10) is z  # the window cache


def test_a_display_order_permutes_rows():
    x, ds = recording()
    order = np.random.default_rng(3).permutation(90)
    w = RasterSource(ds, order=order).window(0, 150, 0, 90, max_cols=150, max_rows=90)
    np.testing.assert_array_equal(w.values, x[:, order].T)


def test_a_stored_pyramid_is_read_at_the_coarsest_level_with_enough_cells(tmp_path):
    x, ds = recording(T=600, U=300)
    write_store(tmp_path / "r.zarr", ds)
    ds = xr.open_zarr(tmp_path / "r.zarr", consolidated=False)
    counting = CountingStore(zarr.storage.LocalStore(str(tmp_path / "r.zarr"), read_only=True))
    src = RasterSource(ds, store=counting)
    assert src.pyramid and src.n_levels == 4  # 600x300 -> 150x75 -> 38x19 -> 10x5
    for kind in ("mean", "peak"):
        w = src.window(0, 600, 0, 300, max_cols=30, max_rows=15, reduce=kind)
        # level 2 (38 x 19 cells of 16 x 16) is the coarsest with >= 30 x 15 cells
        assert (w.level, w.frame_step, w.row_step) == (2, 16, 16)
        np.testing.assert_allclose(w.values, reference(x, 16, 16, kind).T, rtol=1e-5, equal_nan=True)
        assert all(key.startswith(f"pyramid/2/{kind}/") for key in counting.keys if "/c/" in key)
        counting.keys.clear()
    # zoomed in: level 0, and only the chunks of activity under the window (32 x 16 chunks)
    z = src.window(100, 160, 40, 70, max_cols=100, max_rows=100)
    assert z.level == 0 and (z.frame_step, z.row_step) == (1, 1)
    np.testing.assert_array_equal(z.values, x[100:160, 40:70].T)
    chunk_keys = sorted(k for k in counting.keys if "/c/" in k)
    assert chunk_keys == sorted(f"activity/c/{i}/{j}" for i in range(3, 5) for j in range(2, 5))
    counting.keys.clear()  # a pan nearby reads from the decoded chunks it kept
    np.testing.assert_array_equal(src.window(110, 150, 45, 75, max_cols=100, max_rows=100).values, x[110:150, 45:75].T)
    assert not [k for k in counting.keys if "/c/" in k] and src.chunks.hits >= 6
    # the mean of a coarser reduction of a level weighs its ragged edge cells by their counts
    m = src.window(0, 600, 0, 300, max_cols=5, max_rows=2)
    assert (m.level, m.frame_step, m.row_step) == (3, 128, 128) and m.values.shape == (3, 5)
    # the last column joins a full level-3 cell (frames 512-575) and a short one (576-599)
    np.testing.assert_allclose(m.values[:, -1], reference(x, 128, 128, "mean").T[:, -1], rtol=1e-5)


def test_a_lazy_recording_without_pyramid_is_never_computed_whole(tmp_path):
    x, ds = recording(T=600, U=300)
    computed: list[tuple] = []

    def counted(block, block_info=None):
        computed.append(block.shape)
        return block

    lazy_act = da.from_array(x, chunks=(64, 100)).map_blocks(counted, dtype=np.float32)
    lazy = ds.copy()
    lazy["activity"] = (("time", "unit"), lazy_act, ds["activity"].attrs)
    src = RasterSource(lazy)
    assert src.lazy and not src.pyramid
    eager = RasterSource(ds)
    for kind in ("mean", "peak"):
        a = src.window(0, 600, 0, 300, max_cols=30, max_rows=15, reduce=kind)
        b = eager.window(0, 600, 0, 300, max_cols=30, max_rows=15, reduce=kind)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, equal_nan=True)
        assert a.level == b.level >= 1
    # the levels were built one time slab after another: no block larger than a chunk was made
    assert computed and max(s[0] for s in computed) <= 64 and max(s[1] for s in computed) <= 100
    computed.clear()
    z = src.window(100, 160, 40, 70, max_cols=100, max_rows=100)
    np.testing.assert_array_equal(z.values, x[100:160, 40:70].T)
    assert len(computed) == 2  # the two chunks under the window
    computed.clear()
    np.testing.assert_array_equal(src.unit_block([5, 250, 7]), x[:, [5, 250, 7]])
    assert sum(s[0] for s in computed) == 2 * 600 and len(computed) == 2 * 10  # two unit chunks x ten time chunks

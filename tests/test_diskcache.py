"""The on-disk forecast cache (pocoviz.forecast.diskcache): its forecasts and metrics equal the
in-RAM RecordingForecast's, a second instance (another browser session or process) reuses the
blocks, partial and corrupt blocks are ignored and computed again, the least recently used
entries are evicted, the key follows the file, lazily read recordings give the numbers of eager
ones, and the z-scoring statistics from chunks equal zscore()'s."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.forecast import SessionInfo, build_model
from pocoviz.forecast.diskcache import (
    ArrayActivity,
    ChunkedActivity,
    DiskForecast,
    cache_root,
    chunked_stats,
    evict,
    path_identity,
)
from pocoviz.forecast.playback import RecordingForecast
from pocoviz.forecast.unit_subset import forecast_units
from pocoviz.recordings.preprocess import zscore

torch.set_num_threads(1)

T, U = 420, 37
REGIONS = ["A"] * 12 + ["B"] * 15 + [""] * 10
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)


def raw_activity(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, U)).cumsum(0) * 0.3 + rng.uniform(-2, 5, U)
    x[200, 4] = np.nan  # one missing value: the windows holding frame 200 are invalid
    return x.astype(np.float32)


def poco(seed: int = 0):
    torch.manual_seed(seed)
    m = build_model("POCO", [SessionInfo("fish/s", U, "fish")], **POCO_SMALL)
    with torch.no_grad():  # switch the FiLM on (α = β = 0 at init would ignore the encoder)
        for lin in (m.film_alpha, m.film_beta):
            lin.weight.copy_(0.3 * torch.randn(lin.weight.shape))
            lin.bias.copy_(0.3 * torch.randn(lin.bias.shape))
    return m.eval()


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def close(a, b, rtol=2e-6, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)


def test_cache_root_follows_the_environment_and_never_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("POCOVIZ_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == (tmp_path / "xdg" / "pocoviz").resolve()
    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "data" / "cache"))
    assert cache_root() == (tmp_path / "data" / "cache").resolve()
    with pytest.raises(ValueError, match="inside the data directory"):
        cache_root(tmp_path / "data")


def test_chunked_stats_and_slabs_equal_zscore():
    x = raw_activity()
    m, s = chunked_stats(x, rows=50)
    with np.errstate(invalid="ignore"):
        close(m, np.nanmean(x.astype(np.float64), 0), rtol=1e-12)
        close(s, np.nanstd(x.astype(np.float64), 0), rtol=1e-10)
    src = ChunkedActivity(x, zscored=False, rows=64)
    ref = zscore(x)
    before = x.copy()
    np.testing.assert_allclose(src.slab(0, T), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(src.slab(100, 230), ref[100:230], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(src.columns(10, 300, [3, 30]), ref[10:300][:, [3, 30]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(src.columns(380, 400, [0, 36]), ref[380:400][:, [0, 36]], rtol=1e-6, atol=1e-6)  # not cached
    np.testing.assert_array_equal(x, before)  # the source is never scaled in place
    assert src.reads == 1  # [0, T) once: [100, 230) lies in it, and columns read only their units


def test_disk_forecast_equals_the_in_ram_forecast(root):
    x = zscore(raw_activity())
    model = poco()
    ref = RecordingForecast(model, x, "fish/s", regions=REGIONS)
    ref.compute()
    fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "t1"}, regions=REGIONS)
    assert fc.compute() == ref.n_valid
    np.testing.assert_array_equal(fc.valid, ref.valid)
    np.testing.assert_array_equal(fc.done, ref.done)
    assert fc.fraction_done == 1.0
    for t in (48, 130, 263, ref.cursors[-1]):
        np.testing.assert_array_equal(fc.lines(t, [0, 5, 36]), ref.forecast[t][:, [0, 5, 36]].astype(np.float32))
    assert fc.lines(199, [0]) is None  # its window holds the NaN
    for upto, split in ((None, None), (300, None), (None, "test"), (400, "train")):
        a, b = fc.metrics(upto, split=split), ref.metrics(upto, split=split)
        assert a["n_windows"] == b["n_windows"] > 0
        for k in ("score", "mse", "mae", "copy_mse", "per_step_mse", "per_step_mae", "per_step_copy_mse"):
            close(a[k], b[k])
    a, b = fc.metrics(), ref.metrics()
    close(a["per_unit_score"], b["per_unit_score"], rtol=1e-5)
    close(a["per_unit_mse"], b["per_unit_mse"], rtol=1e-5)
    assert a["region_scores"].keys() == b["region_scores"].keys() == {"A", "B"}
    close(list(a["region_scores"].values()), list(b["region_scores"].values()), rtol=1e-5)


def test_second_session_reuses_the_blocks_and_partial_blocks_are_recomputed(root):
    x = zscore(raw_activity())
    model = poco()
    one = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "shared"})
    assert one.compute(max_windows=100) == 100  # one whole block (cursors 48..63: 16) + 64 + 20 of the third
    assert one.block_done.sum() == 2
    one.close()  # the half-done third block is given up: nothing of it on disk
    two = DiskForecast(poco(), ArrayActivity(x), "fish/s", identity={"name": "shared"})  # another session, same weights
    assert two.path == one.path
    np.testing.assert_array_equal(two.block_done[:3], [True, True, False])
    assert two.done[48:128].all() and not two.done[128:192].any()
    np.testing.assert_array_equal(two.lines(100, [1, 2]), one.lines(100, [1, 2]))
    n = two.compute()
    assert n == two.n_valid - 80 == 293 - 80  # only what the first session had not finished (64 windows hold the NaN)
    one.refresh(force=True)  # and the first session sees the second's blocks
    assert one.fraction_done == 1.0
    close(one.metrics()["score"], two.metrics()["score"])


def test_corrupt_and_unfinished_entries_are_ignored_and_rewritten(root):
    x = zscore(raw_activity())
    model = poco()
    fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "c"})
    fc.compute()
    want = fc.lines(300, [0, 20])
    # a truncated marker: that block counts as not done and is computed again
    (fc.path / "blocks" / "4.npz").write_bytes(b"PK\x03\x04 truncated")
    # a forecast chunk overwritten after its marker: its CRC no longer matches
    arr = fc._array
    arr[64:128, :, 0:U] = np.zeros((64, 16, U), np.float16)
    again = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "c"})
    assert not again.block_done[4] and again.block_done[1]
    assert again.lines(100, [0]) is None  # the CRC check drops block 1
    assert not again.block_done[1]
    assert again.compute() == 64 + 64  # blocks 1 and 4 (cursors 64..127 and 256..319), nothing else
    np.testing.assert_array_equal(again.lines(300, [0, 20]), want)
    assert again.lines(100, [0]) is not None
    # an entry whose metadata is unreadable is replaced as a whole
    (fc.path / "meta.json").write_text("{")
    third = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "c"})
    assert not third.block_done.any() and third.fraction_done == 0.0


def test_another_process_claim_is_respected(root):
    x = zscore(raw_activity())
    model = poco()
    fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "claim"})
    (fc.path / "blocks" / ".1.claim").write_text("12345")  # block 1 is being computed elsewhere
    n = fc.compute()
    assert not fc.block_done[1] and fc.block_done[0] and fc.block_done[2]
    stale = time.time() - 3600
    os.utime(fc.path / "blocks" / ".1.claim", (stale, stale))  # that process died
    assert fc.compute() == 64 and fc.fraction_done == 1.0
    assert n + 64 == fc.n_valid


def test_eviction_drops_the_least_recently_used_entries(root):
    x = zscore(raw_activity())
    model = poco()
    entries = []
    for i in range(3):
        fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": f"e{i}"})
        fc.compute()
        entries.append(fc)
    sizes = [e.size_bytes() for e in entries]
    old = time.time() - 3600
    for i, e in enumerate(entries):  # e0 used longest ago, e2 most recently
        os.utime(e.path / "used", (old + i, old + i))
    removed = evict(root, max_bytes=sizes[2] + sizes[1] + 10)
    assert removed == [entries[0].path]
    assert not entries[0].path.exists() and entries[1].path.exists() and entries[2].path.exists()
    assert evict(root, max_bytes=0, keep=[entries[2].path]) == [entries[1].path]
    assert entries[2].path.exists()


def test_the_key_changes_with_the_file_and_the_model(root, tmp_path):
    f = tmp_path / "rec.nc"
    f.write_bytes(b"one")
    ident = path_identity(f, "fish/s")
    x = zscore(raw_activity())
    a = DiskForecast(poco(0), ArrayActivity(x), "fish/s", identity=ident)
    assert DiskForecast(poco(0), ArrayActivity(x), "fish/s", identity=path_identity(f, "fish/s")).path == a.path
    assert DiskForecast(poco(1), ArrayActivity(x), "fish/s", identity=ident).path != a.path  # other weights
    time.sleep(0.01)
    f.write_bytes(b"two!")
    assert path_identity(f, "fish/s") != ident
    assert DiskForecast(poco(0), ArrayActivity(x), "fish/s", identity=path_identity(f, "fish/s")).path != a.path
    store = tmp_path / "rec.zarr"
    xr.Dataset({"activity": (("time", "unit"), x)}).to_zarr(store, zarr_format=3)
    before = path_identity(store)
    xr.Dataset({"extra": ("time", np.zeros(T))}).to_zarr(store, mode="a")
    assert path_identity(store)["size"] > before["size"]


def test_lazy_and_eager_recordings_give_identical_forecasts_and_metrics(root, tmp_path):
    x = raw_activity()
    store = tmp_path / "rec.zarr"
    xr.Dataset({"activity": (("time", "unit"), x)}).chunk({"time": 64, "unit": 16}).to_zarr(store, zarr_format=3)
    lazy = xr.open_zarr(store)["activity"]
    assert lazy.chunks is not None  # Dask-backed
    src = ChunkedActivity(lazy.data, zscored=False, stats_path=tmp_path / "stats.npz", rows=64)
    model = poco()
    fc_lazy = DiskForecast(model, src, "fish/s", identity={"name": "lazy"}, regions=REGIONS)
    fc_lazy.compute()
    assert src.reads <= 2 * -(-T // 64)  # the stats pass, then each row block once (two cached)
    eager = RecordingForecast(model, zscore(x), "fish/s", regions=REGIONS)
    eager.compute()
    np.testing.assert_array_equal(fc_lazy.valid, eager.valid)
    got = fc_lazy.forecast_at(eager.cursors, [0, 9, 36])
    np.testing.assert_allclose(got, eager.forecast[eager.cursors][:, :, [0, 9, 36]].astype(np.float32), atol=2e-3, rtol=2e-3)
    a, b = fc_lazy.metrics(), eager.metrics()
    assert a["n_windows"] == b["n_windows"]
    for k in ("score", "mse", "mae"):
        close(a[k], b[k], rtol=1e-5)
    assert (tmp_path / "stats.npz").is_file()  # the statistics are kept for the next opening


def test_units_on_screen_first_equal_the_full_pass(root):
    x = zscore(raw_activity())
    model = poco()
    fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "screen"})
    cursors = [60, 61, 250]
    units = [3, 17, 30]
    ctx = torch.from_numpy(fc.context(cursors))
    with torch.inference_mode():
        first = forecast_units(model, ctx, fc.session_index, units).to(torch.float16).float().numpy()
    fc.compute()
    full = fc.forecast_at(cursors, units)
    np.testing.assert_allclose(first, full, atol=2e-3, rtol=2e-3)


def test_large_windows_go_in_unit_slices_and_give_way_to_the_screen(root):
    """Above ``unit_slice`` units a window is computed slice by slice (same numbers); a preemption
    drops the window, which the next call computes."""
    x = zscore(raw_activity())
    model = poco()
    fc = DiskForecast(model, ArrayActivity(x), "fish/s", identity={"name": "slices"})
    fc.unit_slice = 10  # 37 units: 4 slices a window
    assert fc.compute(max_windows=3, preempt=lambda: True) == 0 and not fc.done.any()
    assert fc.compute(max_windows=3) == 3
    ref = RecordingForecast(model, x, "fish/s")
    ref.compute(cursors=[48, 49, 50])
    np.testing.assert_allclose(fc.forecast_at([48, 49, 50], range(U)), ref.forecast[[48, 49, 50]].astype(np.float32), atol=2e-3)
    close(fc.metrics()["mse"], ref.metrics()["mse"], rtol=1e-5)


def test_metrics_from_block_sums_equal_todays_on_the_demo(root):
    """The demo's worm0 with the shipped POCO: the disk cache's metrics table (score, MSE,
    MAE, per step, per region) equals the in-RAM forecast's, over all windows and the test split."""
    from pocoviz.controllers.models import LOADED_MODELS
    from pocoviz.controllers.sources import SOURCE_CACHE

    ds = SOURCE_CACHE.load("demo", None)["worm/worm0"]
    x = zscore(np.asarray(ds["activity"].transpose("time", "unit").values, dtype=np.float32))
    regions = np.asarray(ds["region"].values).astype(str)
    for key in ("poco_demo",):
        model = LOADED_MODELS.get(key, None).eval()
        ref = RecordingForecast(model, x, "worm/worm0", regions=regions)
        ref.compute()
        fc = DiskForecast(model, ArrayActivity(x), "worm/worm0", identity={"demo": "worm0"}, regions=regions)
        fc.compute()
        for upto, split in ((None, None), (None, "test"), (ref.T // 2, None)):
            a, b = fc.metrics(upto, split=split), ref.metrics(upto, split=split)
            assert a["n_windows"] == b["n_windows"] > 0
            for k in ("score", "mse", "mae", "per_step_mse", "per_step_mae", "per_step_copy_mse", "per_step_copy_mae"):
                close(a[k], b[k], rtol=1e-6)
        a, b = fc.metrics(), ref.metrics()
        close([a["region_scores"][r] for r in sorted(b["region_scores"])], [b["region_scores"][r] for r in sorted(b["region_scores"])], rtol=1e-5)
        assert f"{a['score']:.3f}" == f"{b['score']:.3f}"  # the table's figures


def test_an_entry_evicted_under_a_session_is_opened_again(root):
    x = zscore(raw_activity())
    fc = DiskForecast(poco(), ArrayActivity(x), "fish/s", identity={"name": "gone"})
    fc.compute(max_windows=16)
    assert fc.block_done[0]
    old = time.time() - 3600
    os.utime(fc.path / "used", (old, old))
    assert evict(root, max_bytes=0) == [fc.path]  # another process's eviction
    assert fc.lines(50, [0]) is None  # its chunks are gone: the block is dropped
    assert fc.compute() == fc.n_valid and fc.fraction_done == 1.0  # the entry is made again
    assert (fc.path / "meta.json").is_file() and fc.lines(50, [0]) is not None


def _compute_in_another_process(root: str, conn) -> None:  # runs in a spawned process
    os.environ["POCOVIZ_CACHE_DIR"] = root
    torch.set_num_threads(1)
    fc = DiskForecast(poco(), ArrayActivity(zscore(raw_activity())), "fish/s", identity={"name": "two-processes"})
    conn.send("ready")
    conn.recv()
    conn.send(fc.compute())


def test_two_processes_share_the_pass_block_by_block(root):
    """Two server processes on one entry: claims split the blocks, each is computed once, and both
    end with every block."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_compute_in_another_process, args=(str(root), there))
    proc.start()
    try:
        assert here.poll(120) and here.recv() == "ready"
        fc = DiskForecast(poco(), ArrayActivity(zscore(raw_activity())), "fish/s", identity={"name": "two-processes"})
        here.send("go")
        mine = fc.compute()
        assert here.poll(120)
        theirs = here.recv()
    finally:
        proc.join(60)
    fc.refresh(force=True)
    assert fc.fraction_done == 1.0 and mine + theirs == fc.n_valid  # no window computed twice
    assert len(list((fc.path / "blocks").glob("*.npz"))) == fc.n_blocks

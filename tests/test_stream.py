"""Training and evaluation that stream from chunked storage (pocoviz.forecast.stream, lazy windows).

A small store (300 units × 2,000 frames, chunks (256, 128)) is opened lazily (Dask-backed
``activity``) and compared with the same recording in memory.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.forecast import TrainConfig, evaluate, make_model, train
from pocoviz.forecast.data import ForecastCorpus
from pocoviz.forecast.stream import WindowStream
from pocoviz.recordings.preprocess import zscore
from pocoviz.recordings.windows import BandCache, LazyActivity, WindowDataset

T, U = 2000, 300
CHUNKS = (256, 128)


def _recording(nan: bool = True) -> xr.Dataset:
    rng = np.random.default_rng(0)
    t = np.arange(T)[:, None]
    phase = rng.uniform(0, 2 * np.pi, U)
    a = (np.sin(2 * np.pi * t / 40 + phase) * 2 + 0.3 * rng.standard_normal((T, U)) + rng.normal(0, 5, U)).astype(np.float32)
    if nan:
        a[1234, 7] = np.nan  # a frame whose windows are skipped
    regions = np.array(["tel"] * 100 + ["mid"] * 100 + ["hind"] * 100)
    return xr.Dataset(
        {"activity": (("time", "unit"), a, {"units": "dF/F"})},
        coords={"time": np.arange(T) / 2.0, "unit": np.arange(U), "region": ("unit", regions)},
        attrs={"species": "zebrafish", "session": "fish0", "sampling_rate_hz": 2.0, "source": "synthetic", "citation": ""},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "rec.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _recording().to_zarr(path, mode="w", encoding={"activity": {"chunks": CHUNKS}})
    return path


def _lazy(path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path)
    assert ds["activity"].chunks is not None
    return ds


def _eager(path) -> xr.Dataset:
    return _lazy(path).compute()


class CountingArray:
    """A (T, U) array that counts the rows read from it (a stand-in for a store wrapper)."""

    def __init__(self, a: np.ndarray, chunks: tuple[int, int]) -> None:
        self.a, self.shape, self.ndim, self.dtype = a, a.shape, 2, a.dtype
        self.chunks = (tuple([chunks[0]] * (a.shape[0] // chunks[0]) + ([a.shape[0] % chunks[0]] if a.shape[0] % chunks[0] else [])), (a.shape[1],))
        self.rows_read = 0

    def __getitem__(self, key):
        out = self.a[key]
        self.rows_read += out.shape[0]
        return out


def test_lazy_windows_equal_in_memory(store):
    lazy, eager = _lazy(store), _eager(store)
    for split in ("train", "val", "test"):
        wl = WindowDataset(lazy, split=split)
        we = WindowDataset(eager, split=split)
        assert wl.lazy and not we.lazy
        np.testing.assert_array_equal(wl._start, we._start)
        assert not np.any((wl._start <= 1234) & (wl._start + 64 > 1234))  # the NaN frame's windows are skipped
        starts = torch.as_tensor(we._start[::37])
        np.testing.assert_array_equal(wl.read_windows(0, starts).numpy(), we.read_windows(0, starts).numpy())
        i = len(we) // 2
        np.testing.assert_array_equal(wl[i]["context"].numpy(), we[i]["context"].numpy())
    with pytest.raises(ValueError, match="never loaded whole"):
        wl.recording_tensor(0)


def test_zscore_statistics_from_block_sums_equal_in_memory(store):
    lazy, eager = _lazy(store), _eager(store)
    wl = WindowDataset(lazy, split="train", zscore=True)
    we = WindowDataset(zscore(eager), split="train")
    np.testing.assert_array_equal(wl._start, we._start)
    starts = we._start[::11]
    np.testing.assert_array_equal(wl.read_windows(0, starts).numpy(), we.read_windows(0, torch.as_tensor(starts)).numpy())
    # and without NaN: numpy's var path
    a = _recording(nan=False)["activity"].values
    src = LazyActivity(CountingArray(a, CHUNKS), BandCache())
    m, s = src.zscore_stats()
    np.testing.assert_array_equal(m, a.mean(0, dtype=np.float64))
    np.testing.assert_array_equal(s, a.std(0, dtype=np.float64))


def test_opening_windows_reads_each_frame_once_and_cache_keeps_its_cap():
    a = _recording()["activity"].values
    arr = CountingArray(a, CHUNKS)
    cache = BandCache(cap_bytes=3 * 256 * U * 4)  # three bands
    src = LazyActivity(arr, cache)
    assert src.band_frames == 256
    src.nan_rows()
    src.nan_rows()  # once per array and cache
    assert arr.rows_read == T
    rng = np.random.default_rng(1)
    for t in rng.integers(0, T - 64, 300):
        np.testing.assert_array_equal(src.window(int(t), 64), a[t : t + 64])
        assert cache.bytes <= cache.cap_bytes
    st = cache.stats()
    assert st["peak_bytes"] <= st["cap_bytes"] and st["evictions"] > 0 and st["bands"] <= 3


def test_stream_epoch_covers_every_window_once_and_cache_stays_under_cap(store):
    corpus = ForecastCorpus(_lazy(store))
    cap = 3 * 256 * U * 4
    ws = WindowStream(corpus, batch_size=32, max_units=64, seed=5, cache_bytes=cap)
    n = ws.windows_per_epoch()["zebrafish"]
    assert n == len(corpus.windows("train", "zebrafish"))
    batches = -(-2 * n // 32)
    ids = np.concatenate([ws.window_ids(0, k) for k in range(batches)])
    for e in range(2):  # each epoch: every window once
        np.testing.assert_array_equal(np.sort(ids[e * n : (e + 1) * n]), np.arange(n))
    starts = corpus.windows("train", "zebrafish")._start
    full = _eager(store)["activity"].values
    for k in range(-(-n // 32)):
        b = ws.step(k)[0]
        assert b.context.shape == (32, 48, 64) and b.target.shape == (32, 16, 64)
        assert bool(b.unit_mask.all())
        idx = b.unit_index.numpy()
        assert np.all(np.diff(idx, axis=1) > 0) and idx.max() < U  # sorted distinct units
        w0 = ws.window_ids(0, k)[0]
        t = starts[w0]
        np.testing.assert_array_equal(b.context[0].numpy(), full[t : t + 48][:, idx[0]])
        assert ws.cache.bytes <= cap
    st = ws.cache.stats()
    assert st["peak_bytes"] <= cap and st["reads"] > 0
    # chunk-aware: an epoch reads each band about once (blocks of 256 frames need the band after)
    bands_in_train = len({int(t) // 256 for t in starts} | {(int(t) + 63) // 256 for t in starts})
    assert st["reads"] <= 2 * bands_in_train


def test_stream_workers_give_the_batches_of_one_process(store):
    corpus = ForecastCorpus(_lazy(store))
    ws = WindowStream(corpus, batch_size=16, max_units=50, seed=2, cache_bytes=2 * 2**20)
    ref = [ws.step(k)[0] for k in range(3, 3 + 25)]
    it = ws.iterate(3, workers=2)
    got = [next(it)[0] for _ in range(25)]
    it.close()
    for a, b in zip(ref, got):
        for x, y in zip((a.context, a.target, a.unit_mask, a.session, a.unit_index), (b.context, b.target, b.unit_mask, b.session, b.unit_index)):
            np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_stream_lazy_equals_in_memory_and_max_units(store):
    lazy, eager = ForecastCorpus(_lazy(store)), ForecastCorpus(_eager(store))
    kw = dict(batch_size=8, seed=0, block_frames=512)
    for mu in (None, 40, 1000):
        a, b = WindowStream(lazy, max_units=mu, **kw), WindowStream(eager, max_units=mu, **kw)
        for k in (0, 7):
            x, y = a.step(k)[0], b.step(k)[0]
            np.testing.assert_array_equal(x.context.numpy(), y.context.numpy())
            assert x.context.shape[2] == (U if mu is None or mu >= U else mu)
            assert (x.unit_index is None) == (mu is None)


def test_lazy_evaluation_equals_in_memory(store):
    lazy = ForecastCorpus(_lazy(store), strides={"train": 1, "val": 3, "test": 2}, cache_bytes=2 * 256 * U * 4)
    eager = ForecastCorpus(_eager(store), strides={"train": 1, "val": 3, "test": 2})
    model = make_model("POCO", eager, seed=0, hidden=64, dim=32, dim_head=16)
    for split in ("val", "test"):
        rl, re = evaluate(model, lazy, split, batch_size=32), evaluate(model, eager, split, batch_size=32)
        (sl,), (se,) = rl.sessions, re.sessions
        assert sl.n_windows == se.n_windows > 0
        np.testing.assert_array_equal(sl.sse, se.sse)  # the same windows and batches: the same sums
        np.testing.assert_array_equal(sl.copy_sse, se.copy_sse)
        assert rl.score == re.score
    assert lazy.cache.stats()["peak_bytes"] <= lazy.cache.cap_bytes
    # the same forecasts window by window
    ctx_l, _, st_l = next(lazy.session_windows("test", 0, 16))
    ctx_e, _, st_e = next(eager.session_windows("test", 0, 16))
    s = torch.zeros(len(st_l), dtype=torch.int64)
    with torch.no_grad():
        np.testing.assert_array_equal(model(ctx_l, s).numpy(), model(ctx_e, s).numpy())


def test_lazy_sample_equals_in_memory(store):
    lazy, eager = ForecastCorpus(_lazy(store)), ForecastCorpus(_eager(store))
    a = lazy.sample("zebrafish", 16, torch.Generator().manual_seed(4), max_units=32)
    b = eager.sample("zebrafish", 16, torch.Generator().manual_seed(4), max_units=32)
    np.testing.assert_array_equal(a.context.numpy(), b.context.numpy())
    np.testing.assert_array_equal(a.unit_index.numpy(), b.unit_index.numpy())


def test_poco_trains_on_the_lazy_store_and_workers_change_nothing(store):
    torch.set_num_threads(1)
    corpus = ForecastCorpus(_lazy(store), strides={"train": 1, "val": 8, "test": 8})
    assert corpus.lazy
    cfg = dict(steps=24, batch_size=16, eval_every=12, max_units=64, lr=1e-3, cache_bytes=2 * 2**20)
    losses = {}
    for workers in (0, 2):
        model = make_model("POCO", corpus, seed=0, hidden=64, dim=32, dim_head=16)
        res = train(model, corpus, TrainConfig(workers=workers, **cfg))
        losses[workers] = [h["train_loss"] for h in res.history[1:]]
        vals = [h["val_mse"] for h in res.history]
        assert res.steps_done == 24 and res.windows == 24 * 16
        assert res.best_val_mse < vals[0]  # training lowered the validation loss
    assert losses[0][-1] < losses[0][0]
    assert losses[0] == losses[2]  # worker processes read the same batches


def test_cli_train_with_workers(store, tmp_path, capsys):
    import json

    from pocoviz.cli import main

    out = tmp_path / "poco_stream"
    small = '{"hidden": 32, "dim": 32, "dim_head": 16}'
    args = ["train", "POCO", str(store), "--out", str(out), "--steps", "4", "--eval-every", "4", "--batch-size", "8", "--max-units", "32",
            "--workers", "1", "--cache-mb", "4", "--val-stride", "50", "--config", small, "--quiet", "--json"]  # fmt: skip
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["sessions"][0]["units"] == U and np.isfinite(rep["score"])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["config"]["workers"] == 1 and card["training"]["config"]["cache_bytes"] == 4 * 2**20
    assert main([*args[:-6], "--workers", "-1", "--quiet"]) == 2


def test_stream_pads_sessions_of_different_sizes(store):
    lazy, eager = _lazy(store), _eager(store)
    small = eager.isel(unit=slice(0, 200))
    corpus = ForecastCorpus({"zebrafish/a": lazy, "zebrafish/b": small})
    ws = WindowStream(corpus, batch_size=24, seed=1, max_units=250)
    wd = corpus.windows("train", "zebrafish")
    assert ws.windows_per_epoch()["zebrafish"] == len(wd)
    for k in range(3):
        b = ws.step(k)[0]
        ids = ws.window_ids(0, k)
        assert b.context.shape == (24, 48, 250)
        for r, i in enumerate(ids):
            s, t = int(wd._session[i]), int(wd._start[i])
            assert int(b.session[r]) == s and int(b.unit_mask[r].sum()) == (250 if s == 0 else 200)
            rec = (eager if s == 0 else small)["activity"].values
            n = int(b.unit_mask[r].sum())
            np.testing.assert_array_equal(b.target[r, :, :n].numpy(), rec[t + 48 : t + 64][:, b.unit_index[r, :n].numpy()])
            assert not b.target[r, :, n:].any()
    n = len(wd)
    ids = np.concatenate([ws.window_ids(0, k) for k in range(-(-n // 24))])[:n]
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))  # an epoch over both sessions' windows

"""Batch forecasting on a Dask cluster (pocoviz.forecast.batch, ``pocoviz forecast``): the store a
2-worker LocalCluster writes equals the in-process forecasts and metrics (a recording in memory
and a lazily opened Zarr store), a re-run computes only the blocks whose markers are missing, bad
inputs fail before anything is written, naming the file, a failed task names the recording and
its blocks, and the Forecast tab reads a matching store in its data directory instead of computing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.cli import build_parser
from pocoviz.forecast import SessionInfo, build_model, load_model, save_model
from pocoviz.forecast.batch import (
    BatchForecastError,
    _run_tasks,
    forecast_to_store,
    is_forecast_store,
    local_cluster,
    open_store_entry,
    read_store,
)
from pocoviz.forecast.playback import RecordingForecast
from pocoviz.recordings import make_recording, save_recording
from pocoviz.recordings.preprocess import zscore

torch.set_num_threads(1)

T, U = 330, 24
T_LAZY = 400  # the Zarr store's activity (38,400 bytes) is above LAZY_BYTES, the netCDF file's (31,680) below
LAZY_BYTES = "35000"
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)
REGIONS = ["a"] * 10 + ["b"] * 14


def _activity(seed: int, units: int = U, frames: int = T) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, units)).cumsum(0) * 0.3 + rng.uniform(0, 3, units)).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data directory: a netCDF recording (opens in memory), a chunked Zarr store (opened lazily
    with POCOVIZ_LAZY_BYTES small), a small POCO that knows both sessions, a session-free NLinear."""
    d = tmp_path_factory.mktemp("batchdata")
    x = _activity(1)
    x[150, 3] = np.nan  # the windows holding frame 150 are invalid
    save_recording(make_recording(x, sampling_rate_hz=2.0, species="fish", session="s", units="dF/F", region=REGIONS), d / "rec.nc")
    z = _activity(2, frames=T_LAZY)
    lazy = make_recording(z, sampling_rate_hz=2.0, species="fish", session="lazy", units="dF/F", region=REGIONS)
    lazy.chunk({"time": 64, "unit": 16}).to_zarr(d / "fish.zarr", zarr_format=3)
    torch.manual_seed(0)
    poco = build_model("POCO", [SessionInfo("fish/s", U, "fish"), SessionInfo("fish/lazy", U, "fish")], **POCO_SMALL)
    with torch.no_grad():  # switch the FiLM on (α = β = 0 at init would ignore the encoder)
        for lin in (poco.film_alpha, poco.film_beta):
            lin.weight.copy_(0.3 * torch.randn(lin.weight.shape))
    save_model(poco, d / "models" / "poco")
    save_model(build_model("NLinear", [SessionInfo("fish/other", U, "fish")]), d / "models" / "nlinear")
    return d


@pytest.fixture(autouse=True)
def lazy_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", LAZY_BYTES)  # the Zarr store opens Dask-backed, the netCDF file in memory
    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the tests that pass ``client=`` (the CLI test starts its own)."""
    from distributed import Client

    cluster = local_cluster(2)
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def _reference(model_path: Path, ds: xr.Dataset, session: str) -> RecordingForecast:
    model = load_model(model_path, device="cpu")
    act = zscore(np.asarray(ds["activity"].transpose("time", "unit").values, dtype=np.float32)).astype(np.float32)
    rf = RecordingForecast(model, act, session, regions=REGIONS)
    rf.compute()
    return rf


def _entry_by_session(out: Path, session: str) -> tuple[str, dict]:
    entries = read_store(out)["entries"]
    (key,) = [k for k, e in entries.items() if e["session"] == session]
    return key, entries[key]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_on_a_2_worker_local_cluster_writes_the_in_process_forecasts(data, tmp_path, capsys):
    parser = build_parser()  # the pocoviz command's parser
    out = tmp_path / "forecasts.zarr"
    args = parser.parse_args(["forecast", str(data / "models" / "poco"), str(data / "rec.nc"), str(data / "fish.zarr"), "--out", str(out),
                              "--workers", "2", "--blocks-per-task", "2", "--device", "cpu", "--json"])  # fmt: skip
    t0 = time.perf_counter()
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    print(f"pocoviz forecast, 2 workers: {time.perf_counter() - t0:.1f} s")
    assert summary["workers"] == 2 and summary["devices"] == ["cpu"] and len(summary["sessions"]) == 2
    assert is_forecast_store(out) and read_store(out)["model"]["kind"] == "POCO"
    for ds_path, session, lazy, frames in ((data / "rec.nc", "fish/s", False, T), (data / "fish.zarr", "fish/lazy", True, T_LAZY)):
        ds = xr.open_dataset(ds_path) if not lazy else xr.open_zarr(ds_path)
        ref = _reference(data / "models" / "poco", ds.load(), session)
        key, e = _entry_by_session(out, session)
        assert e["complete"] and e["lazy"] == lazy and e["cursors"] == ref.n_valid and e["T"] == frames and e["U"] == U
        got = open_store_entry(out, key)
        np.testing.assert_array_equal(got["valid"].values, ref.valid)  # the NaN's windows found by the workers
        np.testing.assert_array_equal(got["done"].values, ref.valid)
        f = got["forecast"].values.astype(np.float32)
        v = ref.valid
        assert np.isnan(f[~v]).all() and np.isfinite(f[v]).all()
        np.testing.assert_allclose(f[v], ref.forecast[v].astype(np.float32), rtol=2e-3, atol=2e-3)  # float16 forecasts
        np.testing.assert_allclose(got["sse_step"].values[v], ref.sse_step[v], rtol=1e-4)
        np.testing.assert_allclose(got["copy_sae_step"].values[v], ref.copy_sae_step[v], rtol=1e-4)
        m, r = e["metrics"]["all"], ref.metrics()
        assert m["n_windows"] == r["n_windows"] == ref.n_valid
        for k in ("score", "mse", "copy_mse", "mae"):
            assert m[k] == pytest.approx(r[k], rel=1e-5, abs=1e-7), k
        np.testing.assert_allclose(m["per_step_mse"], r["per_step_mse"], rtol=1e-5)
        assert m["region_scores"]["a"] == pytest.approx(r["region_scores"]["a"], rel=1e-5)
        assert e["metrics"]["test"]["n_windows"] == ref.metrics(split="test")["n_windows"] > 0
        s = next(s for s in summary["sessions"] if s["session"] == session)
        assert s["score"] == pytest.approx(r["score"], rel=1e-5) and s["blocks_computed"] == s["blocks"] > 1
    assert (out / "stats").is_dir() and len(list((out / "stats").glob("*.npz"))) == 1  # the lazy store's statistics, once


def test_rerun_computes_only_the_block_whose_marker_is_missing(data, tmp_path, client):
    out = tmp_path / "f.zarr"
    model = str(data / "models" / "poco")
    first = forecast_to_store(model, [data / "rec.nc"], out, client=client)
    (s,) = first["sessions"]
    assert first["tasks"] == s["blocks"] == s["blocks_computed"] == first["blocks_computed"] == 5
    key, _ = _entry_by_session(out, "fish/s")
    before = open_store_entry(out, key)["forecast"].values
    (out / "forecasts" / key / "blocks" / "2.npz").unlink()
    (out / "forecasts" / key / "blocks" / ".3.claim").write_text("12345")  # a claim an interrupted run left
    again = forecast_to_store(model, [data / "rec.nc"], out, scheduler=client.scheduler.address)  # --scheduler: a running cluster
    assert again["workers"] == 2
    assert again["tasks"] == 1 and again["blocks_computed"] == 1 and again["sessions"][0]["blocks_computed"] == 1
    assert again["sessions"][0]["score"] == pytest.approx(s["score"], rel=1e-12)
    np.testing.assert_array_equal(open_store_entry(out, key)["forecast"].values, before)
    done = forecast_to_store(model, [data / "rec.nc"], out, client=client)  # nothing left: no task, no cluster needed
    assert done["tasks"] == 0 and done["blocks_computed"] == 0 and read_store(out)["entries"][key]["complete"]


def test_bad_inputs_fail_before_writing_and_name_the_file(data, tmp_path):
    model = str(data / "models" / "poco")
    out = tmp_path / "out.zarr"
    with pytest.raises(BatchForecastError, match="no_such_model"):
        forecast_to_store("no_such_model", [data / "rec.nc"], out)
    wrong = tmp_path / "wrong.nc"
    save_recording(make_recording(_activity(3, U + 3), sampling_rate_hz=2.0, species="fish", session="s", units="dF/F"), wrong)
    with pytest.raises(BatchForecastError, match=r"wrong\.nc.*27 units"):
        forecast_to_store(model, [wrong], out)
    assert not out.exists() and not list(tmp_path.glob(".*"))  # nothing written, no temporary left
    user = tmp_path / "mine.zarr"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    before = _snapshot(user)
    with pytest.raises(BatchForecastError, match=r"mine\.zarr exists and is a folder, not a pocoviz forecast store"):
        forecast_to_store(model, [data / "rec.nc"], user)
    assert _snapshot(user) == before
    # the CLI: exit status 2 and the message, naming the file
    parser = build_parser()  # the pocoviz command's parser
    args = parser.parse_args(["forecast", model, str(wrong), "--out", str(out)])
    assert args.func(args) == 2 and not out.exists()


def test_a_store_of_another_model_is_refused_and_a_failed_task_names_recording_and_blocks(data, tmp_path, client):
    out = tmp_path / "nl.zarr"
    forecast_to_store(str(data / "models" / "nlinear"), [data / "rec.nc"], out, client=client, blocks_per_task=5)
    before = _snapshot(out)
    with pytest.raises(BatchForecastError, match=r"nl\.zarr holds the forecasts of another model"):
        forecast_to_store(str(data / "models" / "poco"), [data / "rec.nc"], out, client=client)
    assert _snapshot(out) == before
    # a task whose recording vanished: the error names it and the blocks
    key, e = _entry_by_session(out, "fish/s")
    spec = {"key": key, "out": str(out), "model": str(data / "models" / "nlinear"), "device": "cpu", "recording": str(tmp_path / "gone.nc"),
            "source": str(tmp_path / "gone.nc"), "session": "fish/s", "identity": e["recording"], "lazy": False, "stats": None,
            "block": e["block"], "unit_chunk": e["unit_chunk"]}  # fmt: skip
    with pytest.raises(BatchForecastError, match=r"gone\.nc \(session fish/s\), blocks 1–2"):
        _run_tasks(client, [(spec, [1, 2])], None)


# ------------------------------------------------------------------------------- the Forecast tab
@pytest.fixture(scope="module")
def tab_data(data, client, tmp_path_factory):
    """The data directory with a POCO store of both recordings in it."""
    os.environ["POCOVIZ_LAZY_BYTES"] = LAZY_BYTES
    try:
        forecast_to_store(str(data / "models" / "poco"), [data / "rec.nc", data / "fish.zarr"], data / "forecasts.zarr", client=client)
    finally:
        os.environ.pop("POCOVIZ_LAZY_BYTES", None)
    return data


@pytest.mark.parametrize("source, session, lazy", [("rec.nc", "fish/s", False), ("fish.zarr", "fish/lazy", True)])
def test_forecast_tab_reads_a_matching_store_instead_of_computing(tab_data, tmp_path, source, session, lazy):
    from pocoviz.controllers.forecast import FORECAST_CACHE, RECORDINGS, ForecastController, _fmt
    from pocoviz.controllers.sources import SOURCE_CACHE

    FORECAST_CACHE.clear()
    RECORDINGS.clear()
    SOURCE_CACHE._cache.clear()
    store = tab_data / "forecasts.zarr"
    before = _snapshot(store)
    ctl = ForecastController(str(tab_data), models=[])
    try:
        ctl.source = source
        assert ctl.session == session and ctl.recording is not None and ctl.recording.lazy == lazy
        ctl.select_by = "units"
        ctl.unit_ids = "2, 11, 20"
        ctl.models = ["data:models/poco", "data:models/nlinear"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (len(ctl.runs) == 2 and all(r.state == "ready" for r in ctl.runs)):
            time.sleep(0.05)
        poco, nlin = ctl.runs
        assert poco.state == nlin.state == "ready", [(r.label, r.state, r.message) for r in ctl.runs]
        fc = poco.forecast
        key, e = _entry_by_session(store, session)
        assert type(fc).__name__ == "DiskForecast" and fc.read_only and fc.path == store / "forecasts" / key
        assert fc.blocks_written == 0 and "precomputed" in poco.message and "forecasts.zarr" in poco.message
        # the store's lines and metrics, nothing computed for POCO: no cache entry of it, the store unchanged
        ctl.cursor = 200
        t = int(ctl.cursor)
        stored = open_store_entry(store, key)["forecast"].values[t][:, [2, 11, 20]].astype(np.float32)
        np.testing.assert_array_equal(poco.lines(t, [2, 11, 20]), stored)
        assert fc.metrics()["score"] == pytest.approx(e["metrics"]["all"]["score"], rel=1e-9)
        assert ctl.snapshot().metrics.rows[0][1] == _fmt(fc.metrics(upto=t)["score"])  # the running score over the windows played
        cache = tmp_path / "cache" / "forecasts"
        cached = [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.is_dir() else []
        # the NLinear run (a model the store does not hold) was computed: in RAM, or in the cache when lazy
        assert not getattr(nlin.forecast, "read_only", False) and nlin.forecast.fraction_done == 1.0
        assert len(cached) == (1 if lazy else 0)
        if lazy:
            assert nlin.forecast.path == cached[0]
        assert _snapshot(store) == before
        # the export of a stored forecast of a recording in memory works too
        exported = ctl.forecasts_dataset("shown")
        np.testing.assert_array_equal(exported["forecast_models_poco__data_directory_"].sel(cursor=t).values, stored)
    finally:
        ctl.close()
        FORECAST_CACHE.clear()
        RECORDINGS.clear()


def test_bench_forecast_dask_reports_the_pass_per_worker_count(tmp_path):
    from pocoviz.forecast.batch import bench_forecast_dask

    got = bench_forecast_dask(units=12, frames=260, model_kind="NLinear", workers=(1,), folder=tmp_path)
    (run,) = got["runs"]
    assert run["workers"] == 1 and run["cursors"] == got["in_process"]["cursors"] == 260 - 48 - 16 + 1
    assert run["seconds"] > 0 and run["cursors_per_s"] == pytest.approx(run["cursors"] / run["seconds"], rel=0.01) and run["efficiency"] == 1.0
    assert run["score"] == pytest.approx(got["in_process"]["score"], rel=1e-5)  # the same numbers as in this process
    assert not list(tmp_path.iterdir())  # its temporary folder is removed

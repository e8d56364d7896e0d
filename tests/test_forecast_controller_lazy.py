"""The Forecast tab's controller on a lazily opened (Dask-backed) recording: no full read of the
activity, forecasts in the on-disk cache that a second session (another process: the in-process
caches cleared) reuses, and the same lines and metrics as the same recording loaded in memory."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.controllers.forecast import FORECAST_CACHE, RECORDINGS, ForecastController

torch.set_num_threads(1)

T, U = 360, 48
SESSION = "testfish/lazy"
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A chunked Zarr store (dF/F, not z-scored, units grouped by region) and two checkpoints: a
    small POCO that knows the session, and a session-free NLinear."""
    from pocoviz.forecast import SessionInfo, build_model, save_model
    from pocoviz.recordings import make_recording

    folder = tmp_path_factory.mktemp("lazydata")
    rng = np.random.default_rng(3)
    act = rng.standard_normal((T, U)).cumsum(0) * 0.2 + rng.uniform(0, 3, U)
    ds = make_recording(act.astype(np.float32), sampling_rate_hz=2.0, species="testfish", session="lazy", units="dF/F",
                        region=["alpha"] * 20 + ["beta"] * 28)  # fmt: skip
    ds.chunk({"time": 64, "unit": 16}).to_zarr(folder / "fish.zarr", zarr_format=3)
    torch.manual_seed(0)
    poco = build_model("POCO", [SessionInfo(SESSION, U, "testfish")], **POCO_SMALL)
    with torch.no_grad():
        for lin in (poco.film_alpha, poco.film_beta):
            lin.weight.copy_(0.3 * torch.randn(lin.weight.shape))
    save_model(poco, folder / "models" / "poco_lazy")
    save_model(build_model("NLinear", [SessionInfo("testfish/other", U, "testfish")]), folder / "models" / "nlinear")
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "cache"))
    FORECAST_CACHE.clear()
    RECORDINGS.clear()
    yield tmp_path / "cache"
    FORECAST_CACHE.clear()
    RECORDINGS.clear()


MODELS = ["data:models/poco_lazy", "data:models/nlinear"]


def controller(data_dir, ds: xr.Dataset) -> ForecastController:
    """A controller playing ``ds`` (injected as the only session of the chosen source)."""
    ctl = ForecastController(str(data_dir), models=[])
    ctl._sessions = {SESSION: ds}
    ctl.param.session.objects = [SESSION]
    ctl.session = SESSION
    if ctl.recording is None or ctl.recording.ds is not ds:
        ctl._on_session()
    ctl.select_by = "units"
    ctl.unit_ids = "3, 17, 30, 41"
    return ctl


def wait_for(pred, ctl, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; models: {[(m.label, m.state, m.message) for m in ctl.snapshot().models]}")


def ready(ctl):
    return lambda: bool(ctl.runs) and all(m.state == "ready" for m in ctl.snapshot().models)


def model_lines(snap) -> list:
    return [snap.lines["ys"][i] for i, layer in enumerate(snap.lines["layer"]) if layer.startswith("model-")]


def test_lazy_recording_is_read_in_slabs_and_its_forecasts_go_to_disk(data_dir, cache):
    lazy = xr.open_zarr(data_dir / "fish.zarr")
    ctl = controller(data_dir, lazy)
    try:
        rec = ctl.recording
        assert rec.lazy and rec.activity is None and rec.identity["path"].endswith("fish.zarr")
        # dF/F: the z-scoring statistics take one chunked pass in the background; meanwhile no traces
        wait_for(lambda: rec.src.stats_ready(), ctl, what="the z-scoring statistics")
        assert (cache / "stats").is_dir()  # kept for the next opening
        wait_for(lambda: len(ctl.snapshot().lines["layer"]) == 8, ctl, what="the traces")
        snap = ctl.snapshot()  # raster, layout and lines before any forecast
        assert snap.raster is not None and snap.raster.image.shape[0] <= U and snap.raster.rows is not None
        assert rec.src.reads <= 2  # the traces' frames: one or two row blocks, not the recording
        ctl.models = MODELS
        ctl.cursor = 100
        wait_for(lambda: len(model_lines(ctl.snapshot())) == 8, ctl, what="forecasts of the units on screen")
        wait_for(ready(ctl), ctl, what="the whole passes")
        for run in ctl.runs:
            assert type(run.forecast).__name__ == "DiskForecast" and run.forecast.path.is_relative_to(cache)
            assert run.forecast.fraction_done == 1.0
        # the export of the units on screen: their forecasts and recorded frames only
        out = ctl.forecasts_dataset("shown")
        assert list(out["unit"].values) == [3, 17, 30, 41] and out.sizes["cursor"] == ctl.runs[0].forecast.n_valid
        got = out["forecast_models_poco_lazy__data_directory_"].sel(cursor=100).values  # (step, unit)
        np.testing.assert_array_equal(got, ctl.runs[0].forecast.lines(100, [3, 17, 30, 41]))
        np.testing.assert_allclose(out["activity"].values, rec.frames(0, T, [3, 17, 30, 41]))
        assert (out["sse"].values >= 0).all() and np.isfinite(out["copy_sse"].values).all()
    finally:
        ctl.close()


def test_second_session_in_another_process_reuses_the_disk_cache(data_dir, cache):
    first = controller(data_dir, xr.open_zarr(data_dir / "fish.zarr"))
    try:
        first.models = MODELS
        wait_for(ready(first), first, what="the first session's passes")
        paths = [r.forecast.path for r in first.runs]
        m1 = first.snapshot().metrics
    finally:
        first.close()
    FORECAST_CACHE.clear()  # as in another server process: only the disk is shared
    RECORDINGS.clear()
    second = controller(data_dir, xr.open_zarr(data_dir / "fish.zarr"))
    try:
        second.models = MODELS
        wait_for(lambda: len(second.runs) == 2 and all(r.forecast is not None for r in second.runs), second, what="the runs")
        fcs = [r.forecast for r in second.runs]
        assert [fc.path for fc in fcs] == paths
        assert all(fc.fraction_done == 1.0 and fc.blocks_written == 0 for fc in fcs)  # nothing recomputed
        wait_for(ready(second), second, what="ready")
        assert second.snapshot().metrics.rows == m1.rows
    finally:
        second.close()


def test_lazy_and_eager_recordings_give_the_same_lines_and_metrics(data_dir):
    lazy = xr.open_zarr(data_dir / "fish.zarr")
    eager = xr.open_zarr(data_dir / "fish.zarr").load()
    out = []
    for ds in (lazy, eager):
        ctl = controller(data_dir, ds)
        try:
            ctl.models = MODELS
            wait_for(ready(ctl), ctl, what="whole passes")
            ctl.cursor = 211
            snap = ctl.snapshot()
            out.append((snap, ctl.recording))
        finally:
            ctl.close()
    (a, ra), (b, rb) = out
    assert ra.lazy and not rb.lazy
    assert a.lines["layer"] == b.lines["layer"] and len(model_lines(a)) == 8
    for ya, yb in zip(a.lines["ys"], b.lines["ys"], strict=True):
        np.testing.assert_allclose(ya, yb, atol=2e-3)
    for ra_row, rb_row in zip(a.metrics.rows, b.metrics.rows, strict=True):
        assert ra_row[0] == rb_row[0] and ra_row[4:] == rb_row[4:]  # model, windows, computed
        for x, y in zip(ra_row[1:4], rb_row[1:4], strict=True):  # score, MSE, MAE (3 decimals)
            assert abs(float(x) - float(y)) <= 0.0011
    np.testing.assert_allclose(a.metrics.per_step[0]["y"], b.metrics.per_step[0]["y"], rtol=1e-4)

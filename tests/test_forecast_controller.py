"""The Forecast tab's controller without Panel: recordings, models, background forecasts (the units
on screen first), frames, units, metrics, errors, adaptation, exports and link state, driven
through public methods and asserted on :meth:`ForecastController.snapshot`."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.controllers.forecast import (
    COPY_LAST_COLOR,
    MODEL_COLORS,
    ForecastController,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A good recording, a malformed file, and checkpoints: ``tiny_mlp`` (session-free),
    ``mismatched`` (a POCO for a 30-unit testfish/good; good.nc has 40 units) and ``short_nlinear``
    (context 32, horizon 8: the tab takes C and P from the model)."""
    from pocoviz.forecast import SessionInfo, build_model, save_model
    from pocoviz.recordings import make_recording, save_recording

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    act = rng.standard_normal((400, 40)).cumsum(axis=0) * 0.1
    ds = make_recording(act, sampling_rate_hz=2.0, species="testfish", session="good", units="dF/F",
                        region=["alpha"] * 20 + ["beta"] * 20, x=rng.uniform(0, 100, 40), y=rng.uniform(0, 100, 40))  # fmt: skip
    save_recording(ds, folder / "good.nc")
    (folder / "broken.nc").write_text("this is not a netCDF file\n")
    models = folder / "models"
    torch.manual_seed(0)
    save_model(build_model("MLP", [SessionInfo("testfish/other", 40, "testfish")], hidden=16), models / "tiny_mlp")
    poco = build_model("POCO", [SessionInfo("testfish/good", 30, "testfish")], dim=16, hidden=32, self_heads=2, dim_head=8)
    save_model(poco, models / "mismatched")
    save_model(build_model("NLinear", [SessionInfo("testfish/other", 40, "testfish")], context=32, horizon=8), models / "short_nlinear")
    return folder


@pytest.fixture
def ctl(data_dir):
    c = ForecastController(str(data_dir))
    yield c
    c.close()


def wait_for(pred, ctl, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; models: {[(m.label, m.state, m.message) for m in ctl.snapshot().models]}")


def all_ready(ctl):
    return lambda: all(m.state == "ready" for m in ctl.snapshot().models)


def lines(snap, layer: str) -> tuple[list, list]:
    d = snap.lines
    rows = [i for i, name in enumerate(d["layer"]) if name == layer]
    return [d["xs"][i] for i in rows], [d["ys"][i] for i in rows]


def has_layer(ctl, layer: str):
    return lambda: layer in ctl.snapshot().lines["layer"]


def test_defaults_models_session_and_the_window_from_the_models(ctl):
    assert {"poco_demo", "mlp_demo", "nlinear_demo"} <= set(ctl.param.models.objects)
    assert "data:models/tiny_mlp" in ctl.param.models.objects
    assert ctl.models == ["poco_demo", "mlp_demo", "nlinear_demo"]
    assert ctl.session == "zebrafish/fish0"
    snap = ctl.snapshot()
    assert (snap.C, snap.P) == (48, 16) and snap.cursor_bounds == (48, 1500 - 16)
    assert [e.color for e in snap.legend[2:]] == MODEL_COLORS[:3]


def test_context_and_horizon_come_from_the_model(ctl):
    """A checkpoint with a 32-frame context and an 8-frame horizon: cursors from 32, 8 steps drawn."""
    ctl.source = "good.nc"
    ctl.models = ["data:models/short_nlinear"]
    snap = ctl.snapshot()
    assert (snap.C, snap.P) == (32, 8) and snap.cursor_bounds == (32, 400 - 8)
    ctl.cursor = 32
    wait_for(has_layer(ctl, "model-0"), ctl, what="short_nlinear forecasts")
    snap = ctl.snapshot()
    (past_x, _), (fut_x, _), (mx, _) = lines(snap, "context"), lines(snap, "horizon"), lines(snap, "model-0")
    assert len(past_x[0]) == 32 and len(fut_x[0]) == 9 and len(mx[0]) == 9
    assert "last 32 frames" in snap.layout.title and "next 8 recorded" in snap.layout.title
    assert snap.metrics.per_step == () or len(snap.metrics.per_step[0]["x"]) == 8


def test_forecasts_land_on_the_traces_and_follow_the_cursor(ctl):
    ctl.session = "worm/worm0"
    ctl.models = ["poco_demo", "nlinear_demo"]
    ctl.cursor = 300
    wait_for(lambda: {"model-0", "model-1"} <= set(ctl.snapshot().lines["layer"]), ctl, what="forecasts at the cursor")
    wait_for(all_ready(ctl), ctl, what="whole passes")
    snap = ctl.snapshot()
    rec = ctl.recording
    units = list(snap.layout.units)
    assert len(units) == 8 and ctl.select_by == "region" and (rec.regions[units] == ctl.region).all()
    (past_x, past), (fut_x, _fut) = lines(snap, "context"), lines(snap, "horizon")
    assert len(past) == 8 and len(past_x[0]) == 48 and len(fut_x[0]) == 17
    assert past_x[0][0] == pytest.approx(-48 * rec.dt, abs=1e-4) and fut_x[0][-1] == pytest.approx(15 * rec.dt, abs=1e-4)
    k, u = 2, units[2]
    off = snap.layout.offsets[k]
    np.testing.assert_allclose(past[k], rec.activity[300 - 48 : 300, u] + off, atol=1e-4)
    for i, run in enumerate(ctl.runs):
        _, ys = lines(snap, f"model-{i}")
        assert len(ys) == 8
        want = run.forecast.forecast[300][:, u].astype(np.float32) + off
        np.testing.assert_allclose(ys[k][1:], want, atol=1e-4)
        assert ys[k][0] == pytest.approx(rec.activity[299, u] + off, abs=1e-4)  # joined to the last seen frame
        assert snap.legend[2 + i].color == run.color and {c for c, name in zip(snap.lines["color"], snap.lines["layer"])
                                                          if name == f"model-{i}"} == {run.color}  # fmt: skip
    assert not np.allclose(lines(snap, "model-0")[1][k], lines(snap, "model-1")[1][k])
    ctl.step(1)
    after = ctl.snapshot()
    assert after.cursor == 301 and not np.allclose(lines(after, "model-0")[1][k], lines(snap, "model-0")[1][k])
    assert "frame <b>301</b>" in after.clock


def test_running_metrics_match_numpy(ctl):
    ctl.session = "worm/worm1"
    ctl.models = ["nlinear_demo", "mlp_demo"]
    wait_for(all_ready(ctl), ctl, what="two whole passes")
    ctl.cursor = 420
    snap = ctl.snapshot()
    t = np.arange(48, 420 - 16 + 1)
    act = ctl.recording.activity.astype(np.float64)
    target = np.stack([act[s : s + 16] for s in t])
    copy = np.stack([np.repeat(act[s - 1 : s], 16, 0) for s in t])
    table = {r[0]: dict(zip(snap.metrics.header, r)) for r in snap.metrics.rows}
    assert set(table) == {"nlinear_demo", "mlp_demo"}
    per_step = {}
    for run in ctl.runs:
        pred = run.forecast.forecast[t].astype(np.float64)  # float16 storage: 2e-3 tolerances
        row = table[run.label]
        assert row["windows"] == str(len(t))
        assert float(row["MSE"]) == pytest.approx(((pred - target) ** 2).mean(), abs=2e-3)
        assert float(row["MAE"]) == pytest.approx(np.abs(pred - target).mean(), abs=2e-3)
        score = 1 - ((pred - target) ** 2).sum() / ((copy - target) ** 2).sum()
        assert float(row["score"]) == pytest.approx(score, abs=2e-3)
        per_step[run.label] = np.abs(pred - target).mean(axis=(0, 2))
    lines_ = {s["model"]: s for s in snap.metrics.per_step}
    assert list(lines_) == ["nlinear_demo", "mlp_demo", "copy-last"] and snap.metrics.per_step_title == "MSE per step ahead"
    ctl.step_metric = "MAE"  # at once, not at the next throttled refresh
    snap = ctl.snapshot()
    assert snap.metrics.per_step_title == "MAE per step ahead" and "absolute" in snap.metrics.per_step_axis
    for s in snap.metrics.per_step:
        want = np.abs(copy - target).mean(axis=(0, 2)) if s["model"] == "copy-last" else per_step[s["model"]]
        np.testing.assert_allclose(s["y"], want, atol=2e-3)
    assert snap.metrics.region_rows and snap.metrics.region_header == ("region", "nlinear_demo", "mlp_demo")
    ctl.metrics_over = "test"
    assert "test-split windows" in ctl.snapshot().metrics.caption


def test_copy_last_has_a_legend_entry_of_its_own(ctl):
    """Issue 15, defect 4: the copy-last baseline line on the per-step plot had no legend entry."""
    ctl.session = "worm/worm2"
    ctl.models = ["nlinear_demo"]
    wait_for(all_ready(ctl), ctl, what="a whole pass")
    ctl.cursor = 600
    copy = [s for s in ctl.snapshot().metrics.per_step if s["model"] == "copy-last"]
    assert len(copy) == 1 and copy[0]["color"] == COPY_LAST_COLOR and copy[0]["dash"] == "dashed"


def test_the_metrics_table_matches_the_models_and_session_at_once(ctl):
    """Issue 15, defect 4: after a model was removed or the session switched, the metrics table
    kept the old rows until the next throttled refresh."""
    ctl.session = "worm/worm0"
    ctl.models = ["nlinear_demo", "mlp_demo"]
    wait_for(all_ready(ctl), ctl, what="whole passes")
    ctl.cursor = 500
    assert [r[0] for r in ctl.snapshot().metrics.rows] == ["nlinear_demo", "mlp_demo"]
    ctl.models = ["mlp_demo"]
    assert [r[0] for r in ctl.snapshot().metrics.rows] == ["mlp_demo"]
    before = ctl.snapshot().metrics.rows[0]
    ctl.session = "worm/worm1"
    rows = ctl.snapshot().metrics.rows
    assert [r[0] for r in rows] == ["mlp_demo"] and rows[0] != before  # worm1's windows, not worm0's
    ctl.cursor = 700
    wait_for(lambda: ctl.snapshot().metrics.rows[0][4] != "0" and ctl.snapshot().metrics.rows[0][5] == "100%", ctl, what="worm1 metrics")


def test_best_and_worst_units_by_score(ctl):
    ctl.session = "worm/worm2"
    ctl.models = ["nlinear_demo"]
    wait_for(all_ready(ctl), ctl, what="a whole pass")
    scores = ctl.runs[0].forecast.unit_scores()
    ctl.select_by = "best"
    best = ctl.selected_units()
    ctl.select_by = "worst"
    worst = list(ctl.snapshot().layout.units)
    assert len(best) == len(worst) == 8 and min(scores[best]) > max(scores[worst]) and scores[best[0]] == np.nanmax(scores)


def test_unit_ids_and_clicks_on_the_raster(ctl):
    ctl.session = "worm/worm0"
    ctl.select_by = "units"
    ctl.unit_ids = "0-2, 5"
    assert ctl.selected_units() == [0, 1, 2, 5]
    ctl.unit_ids = "999"
    assert "no unit with id [999]" in ctl.snapshot().selection
    row = int(ctl.recording.rank[7])
    ctl.tap_row(float(row))
    assert ctl.select_by == "units" and ctl.unit_ids.endswith("7")
    raster = ctl.snapshot().raster
    assert raster.row_ids[row] == int(ctl.recording.ids[7]) and raster.row_regions[row] == ctl.recording.regions[7]


def test_bad_file_shows_an_error_and_the_recording_stays(ctl):
    ctl.session = "worm/worm0"
    before = ctl.recording
    ctl.source = "broken.nc"
    snap = ctl.snapshot()
    assert "broken.nc" in snap.error and ctl.recording is before
    ctl.cursor = 200
    assert "frame <b>200</b>" in ctl.snapshot().clock
    ctl.source = "good.nc"
    assert ctl.snapshot().error == "" and ctl.session == "testfish/good"


def test_mismatched_checkpoint_is_an_error_message(ctl):
    ctl.source = "good.nc"
    ctl.models = ["data:models/mismatched", "data:models/tiny_mlp"]
    wait_for(lambda: all(m.state in ("error", "ready") for m in ctl.snapshot().models), ctl, what="models prepared")
    bad, ok = ctl.snapshot().models
    assert bad.state == "error" and "40 units" in bad.message and "30" in bad.message
    assert "mismatched" in ctl.snapshot().error
    snap = ctl.snapshot()
    assert len(lines(snap, "model-1")[1]) == len(snap.layout.units) > 0 and lines(snap, "model-0")[1] == []
    ctl.models = ["data:models/tiny_mlp"]  # the refused model is no longer chosen: its message goes
    assert ctl.snapshot().error == ""


def test_adapting_a_model_to_an_unseen_recording(ctl):
    ctl.source = "good.nc"
    ctl.adapt_steps = 6
    ctl.models = ["poco_demo"]
    wait_for(lambda: ctl.snapshot().needs_adaptation, ctl, what="needs-adaptation")
    ctl.adapt()
    wait_for(lambda: ctl.snapshot().models[0].state in ("computing", "ready", "error"), ctl, timeout=180, what="adaptation")
    status = ctl.snapshot().models[0]
    assert status.state != "error", status.message
    assert status.adapted and "adapted poco_demo to testfish/good" in status.message
    curve = ctl.snapshot().curves[0]
    assert curve["x"][0] == 0 and curve["x"][-1] == 6
    wait_for(has_layer(ctl, "model-0"), ctl, what="adapted forecasts")
    assert ctl.snapshot().legend[2].label == "poco_demo (adapted)"


def test_a_model_keeps_its_colour_when_another_is_removed(ctl):
    ctl.session = "worm/worm0"
    ctl.models = ["poco_demo", "mlp_demo", "nlinear_demo"]
    before = {m.key: m.color for m in ctl.snapshot().models}
    assert len(set(before.values())) == 3
    ctl.models = ["poco_demo", "nlinear_demo"]
    assert [e.color for e in ctl.snapshot().legend[2:]] == [before["poco_demo"], before["nlinear_demo"]]
    ctl.models = ["poco_demo", "nlinear_demo", "mlp_demo"]
    colors = [m.color for m in ctl.snapshot().models]
    assert colors[:2] == [before["poco_demo"], before["nlinear_demo"]] and len(set(colors)) == 3


def test_the_frame_readout_follows_a_session_switch_at_the_same_cursor(ctl):
    ctl.session = "zebrafish/fish0"
    ctl.cursor = 300
    assert "/ 1499 " in ctl.snapshot().clock
    ctl.session = "worm/worm0"
    rec = ctl.recording
    snap = ctl.snapshot()
    assert f"/ {rec.T - 1} " in snap.clock and f"t = {rec.time[300]:.2f} s" in snap.clock


def test_step_wraps_around_the_playable_range(ctl):
    ctl.session = "worm/worm0"  # cursors 48 .. 1584
    ctl.cursor = 1583
    ctl.step(1)
    assert ctl.cursor == 1584
    ctl.step(1)
    assert ctl.cursor == 48
    ctl.step(-1)
    assert ctl.cursor == 1584


def test_link_state_is_applied_in_order_and_round_trips(data_dir):
    link = {"recording": "demo", "session": "worm/worm0", "models": "['mlp_demo', 'nlinear_demo']", "units_by": "region",
            "region": "Dorsal Ganglion", "traces": "5", "speed": "25", "t": "81"}  # fmt: skip
    c = ForecastController(str(data_dir))
    try:
        assert c.apply_url(link) == [] and c.notice == ""
        assert (c.session, c.models, c.region, c.n_traces, c.fps, c.cursor) == ("worm/worm0", ["mlp_demo", "nlinear_demo"], "Dorsal Ganglion", 5, 25, 81)
        assert set(c.recording.regions[c.selected_units()]) == {"Dorsal Ganglion"}
        query = c.url_query()
        assert query["session"] == "worm/worm0" and query["t"] == "81" and query["models"] == "mlp_demo,nlinear_demo"
    finally:
        c.close()
    c2 = ForecastController(str(data_dir))
    try:
        c2.apply_url(query)
        assert (c2.session, c2.models, c2.region, c2.n_traces, c2.cursor) == ("worm/worm0", ["mlp_demo", "nlinear_demo"], "Dorsal Ganglion", 5, 81)
    finally:
        c2.close()


@pytest.mark.parametrize(
    "query, says, check",
    [
        ({"units_by": "units", "units": "17"}, None, lambda c: c.select_by == "units" and c.selected_units() == [17]),
        ({"t": "1000", "session": "worm/worm0"}, None, lambda c: c.cursor == 1000),
        ({"t": "100000"}, "t=100000 is above 1484", lambda c: c.cursor == 1484),
        ({"t": "-5"}, "t=-5 is below", lambda c: c.cursor == 48),
        ({"t": "1e309"}, "not a finite number", lambda c: c.cursor == 48),
        ({"units_by": "units", "units": "10^30"}, "units='10^30'", lambda c: c.unit_ids == ""),
        ({"units_by": "units", "units": "1000000000000000000000000000000"}, "no unit with id", lambda c: c.unit_ids == ""),
        ({"session": "no/such", "models": "not a list"}, "session='no/such'", lambda c: c.session == "zebrafish/fish0" and c.models == []),
        ({"models": "a,b,c,d,e,poco_demo"}, "ignored unknown", lambda c: c.models == ["poco_demo"]),
        ({"speed": "99", "traces": "abc"}, "speed=99 is above 30", lambda c: c.fps == 30 and c.n_traces == 8),
    ],
)
def test_a_bad_link_never_stops_the_tab(data_dir, query, says, check):
    c = ForecastController(str(data_dir))
    try:
        messages = c.apply_url(query)
        if says is None:
            assert messages == [] and c.notice == ""
        else:
            assert any(says in m for m in messages), messages
            assert says in c.notice
        assert check(c)
        snap = c.snapshot()  # still draws
        assert snap.recording is not None and "frame <b>" in snap.clock
    finally:
        c.close()


def test_the_playhead_gets_poco_lines_before_the_whole_population_pass(ctl):
    """Issue 15, defect 11: POCO's lines for the units on screen come ahead of the full pass over
    fish0's 1500 units (which the metrics need and which trails behind)."""
    ctl.models = ["poco_demo"]
    ctl.cursor = 900
    wait_for(has_layer(ctl, "model-0"), ctl, timeout=60, what="POCO lines at the cursor")
    fc = ctl.runs[0].forecast
    assert fc.fraction_done < 0.5 and not fc.done[900]  # drawn from the on-screen pass
    units = list(ctl.snapshot().layout.units)
    ctl.step(10)
    wait_for(has_layer(ctl, "model-0"), ctl, timeout=30, what="POCO lines 10 frames on")
    with torch.inference_mode():
        ctx = torch.from_numpy(ctl.recording.activity[910 - 48 : 910][None])
        want = ctl.runs[0].model(ctx, torch.tensor([fc.session_index]))[0][:, units].numpy()
    got = np.asarray(lines(ctl.snapshot(), "model-0")[1])[:, 1:] - np.asarray(ctl.snapshot().layout.offsets)[:, None]
    np.testing.assert_allclose(got, want.T, atol=2e-2)  # float16 storage and rounding of the drawn values


def test_exports_hold_the_units_on_screen_and_say_their_size_first(ctl, tmp_path):
    """Issue 15, defect 2: "Forecasts (netCDF)" of fish0 with three models pushed about 300 MB of
    base64 through the websocket. The export now holds the units on screen (or, asked for, every
    unit, compressed), says its size before downloading, and refuses what a browser cannot take."""
    ctl.models = ["nlinear_demo", "mlp_demo"]
    wait_for(all_ready(ctl), ctl, timeout=240, what="fish0 whole passes")
    assert ctl.export_scope == "shown"
    label = ctl.snapshot().export_label
    assert label.startswith("Forecasts (netCDF, ≤ ") and "kB" in label
    size = ctl.write_export(tmp_path / "shown.nc")
    assert size < 1_000_000 and size <= ctl.export_estimate() + 100_000
    units = list(ctl.snapshot().layout.units)
    with xr.open_dataset(tmp_path / "shown.nc") as ds:
        assert {"forecast_nlinear_demo", "forecast_mlp_demo"} <= set(ds.data_vars)
        f = ds["forecast_mlp_demo"]
        assert f.dims == ("cursor", "step", "unit") and list(ds["unit"].values) == units and f.sizes["step"] == 16
        np.testing.assert_allclose(f.sel(cursor=300).values, ctl.runs[1].forecast.forecast[300][:, units].astype(np.float32), atol=2e-3)
        assert ds.attrs["recording"] == "zebrafish/fish0"
    ctl.export_scope = "all"
    label = ctl.snapshot().export_label
    assert "MB" in label  # the size, before anything is written or sent
    assert ctl.export_file() is None  # fish0's every unit is more than a browser download takes
    assert "export the units on screen" in ctl.snapshot().error


def test_all_units_export_is_packed_and_compressed(ctl, tmp_path):
    ctl.session = "worm/worm0"
    ctl.models = ["nlinear_demo"]
    wait_for(all_ready(ctl), ctl, what="a whole pass")
    ctl.export_scope = "all"
    fc = ctl.runs[0].forecast
    size = ctl.write_export(tmp_path / "all.nc")
    assert size <= ctl.export_estimate() and size < 0.5 * fc.n_valid * fc.P * fc.U * 4  # below half the float32 forecasts
    with xr.open_dataset(tmp_path / "all.nc") as ds:
        assert ds.sizes["unit"] == fc.U
        np.testing.assert_allclose(ds["forecast_nlinear_demo"].sel(cursor=700).values, fc.forecast[700].astype(np.float32), atol=2e-3)


def test_an_export_too_large_for_a_browser_is_refused_with_a_reason(ctl, monkeypatch):
    import pocoviz.controllers.forecast as mod

    ctl.session = "worm/worm0"
    ctl.models = ["nlinear_demo"]
    wait_for(all_ready(ctl), ctl, what="a whole pass")
    ctl.export_scope = "all"
    monkeypatch.setattr(mod, "MAX_EXPORT_BYTES", 10_000)
    assert ctl.export_file() is None
    assert "browser download" in ctl.snapshot().error and "export the units on screen" in ctl.snapshot().error
    ctl.export_scope = "shown"  # another choice: the refusal's message goes
    assert ctl.snapshot().error == ""


def test_busy_follows_the_background_work(ctl):
    ctl.session = "worm/worm3"
    ctl.models = ["nlinear_demo"]
    wait_for(lambda: not ctl.busy, ctl, what="idle")
    assert ctl.snapshot().models[0].state == "ready" and not ctl.snapshot().busy

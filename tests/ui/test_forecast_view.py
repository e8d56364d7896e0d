"""The Forecast tab's view-model without a browser: models, background forecasts, frames, units,
metrics, errors, adaptation and export."""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

from pocoviz.ui.forecast import MODEL_COLORS, ForecastView

P, C = 16, 48


def wait_for(pred, view, timeout: float = 90.0, what: str = "condition"):
    """Poll the view (as the served app's periodic callback does) until ``pred()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view._poll()
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; runs: {[(r.label, r.state, r.message) for r in view._runs]}")


@pytest.fixture
def view(ui_data_dir):
    v = ForecastView(str(ui_data_dir), sync_url=False)
    yield v
    v.close()


def lines(view, layer: str) -> tuple[list, list]:
    """(xs, ys) of one layer of the traces plot: "context", "horizon" or "model-<i>"."""
    d = view._frame_src.data
    rows = [i for i, name in enumerate(d["layer"]) if name == layer]
    return [d["xs"][i] for i in rows], [d["ys"][i] for i in rows]


def cursor_ready(view):
    return lambda: all(r.forecast is not None and r.forecast.done[view.cursor] for r in view._runs)


def test_defaults_list_shipped_and_data_dir_models(view):
    objects = view.param.models.objects
    assert {"poco_demo", "mlp_demo", "nlinear_demo"} <= set(objects)
    assert "data:models/tiny_mlp" in objects and "data:models/mismatched" in objects
    assert view.models == ["poco_demo", "mlp_demo", "nlinear_demo"]
    assert view.session == "zebrafish/fish0"
    assert view.param.cursor.bounds == (C, 1500 - P)


def test_forecasts_land_on_the_traces_and_follow_the_cursor(view):
    view.session = "worm/worm0"
    view.models = ["poco_demo", "nlinear_demo"]
    view.cursor = 300
    wait_for(cursor_ready(view), view, what="forecasts at the cursor")
    view._draw_frame()
    rec = view._recording
    units = view._units
    assert len(units) == 8 and view.select_by == "region"
    regions = rec.prep.regions[units]
    assert (regions == view.region).all()
    (past_x, past), (fut_x, fut) = lines(view, "context"), lines(view, "horizon")
    assert len(past) == 8 and len(fut) == 8 and len(past_x[0]) == C and len(fut_x[0]) == P + 1
    dt = 1 / rec.prep.ds.attrs["sampling_rate_hz"]
    # time runs relative to the cursor: context -C..-1 frames, horizon from the last seen frame
    assert past_x[0][0] == pytest.approx(-C * dt, abs=1e-4) and fut_x[0][-1] == pytest.approx((P - 1) * dt, abs=1e-4)
    k, u = 2, units[2]
    off = view._offsets[k]
    np.testing.assert_allclose(past[k], rec.activity[300 - C : 300, u] + off, atol=1e-4)
    data = view._frame_src.data
    for i, run in enumerate(view._runs):
        xs, ys = lines(view, f"model-{i}")
        assert len(ys) == 8
        assert {c for c, name in zip(data["color"], data["layer"]) if name == f"model-{i}"} == {run.color}
        assert run.color in MODEL_COLORS
        want = run.forecast.forecast[300][:, u].astype(np.float32) + off
        np.testing.assert_allclose(ys[k][1:], want, atol=1e-4)
        assert ys[k][0] == pytest.approx(rec.activity[299, u] + off, abs=1e-4)  # joined to the last seen frame
        assert view._model_renderers[i].glyph.line_color == run.color  # its legend entry
    # the models differ, and moving the cursor moves the forecasts
    assert not np.allclose(lines(view, "model-0")[1][k], lines(view, "model-1")[1][k])
    before = lines(view, "model-0")[1]
    view.cursor = 301
    wait_for(cursor_ready(view), view, what="forecasts at 301")
    view._draw_frame()
    after = lines(view, "model-0")[1]
    assert not np.allclose(before[k], after[k])
    np.testing.assert_allclose(lines(view, "context")[1][k], rec.activity[301 - C : 301, u] + off, atol=1e-4)
    view._poll()
    assert "frame <b>301</b>" in view._clock.object


def test_running_metrics_count_played_windows_and_match_the_forecasts(view):
    view.session = "worm/worm1"
    view.models = ["nlinear_demo"]
    wait_for(lambda: view._runs[0].state == "ready", view, what="a whole pass")
    fc = view._runs[0].forecast
    view.cursor = 400
    view._refresh_metrics()
    m = fc.metrics(upto=400)
    assert m["n_windows"] == 400 - P + 1 - C  # cursors 48..384 have played their horizon
    assert f"{m['score']:.3f}" in view._metrics_pane.object
    # the score is 1 - MSE / MSE(copy-last), recomputed here from the arrays
    t = np.arange(C, 400 - P + 1)
    act = view._recording.activity
    target = np.stack([act[s : s + P] for s in t])
    pred = fc.forecast[t].astype(np.float64)
    copy = np.stack([np.repeat(act[s - 1 : s], P, 0) for s in t])
    score = 1 - ((pred - target) ** 2).sum() / ((copy - target) ** 2).sum()
    assert m["score"] == pytest.approx(score, abs=2e-3)  # float16 storage of the forecasts
    steps = view._step_src.data
    assert steps["model"] == ["nlinear_demo", "copy-last"] and len(steps["ys"][0]) == P
    # per-step MSE grows with the horizon for a forecaster on real dynamics
    assert steps["ys"][0][-1] > steps["ys"][0][0]
    assert "Score per region" in view._regions_pane.object
    view.metrics_over = "test"
    view._refresh_metrics()
    assert "test-split windows" in view._metrics_pane.object


def metrics_table(view) -> dict[str, dict[str, str]]:
    """The running-metrics table as {model: {column: cell text}} (read back from its HTML)."""
    import re

    text = view._metrics_pane.object
    header = re.findall(r"<th>(.*?)</th>", text)
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", text.split("<tbody>")[1])]
    return {re.sub(r"<[^>]+>|■", "", r[0]).strip(): dict(zip(header, r)) for r in rows}


def test_mae_in_the_table_and_per_step_equals_numpy(view):
    view.session = "worm/worm1"
    view.models = ["nlinear_demo", "mlp_demo"]
    wait_for(lambda: all(r.state == "ready" for r in view._runs), view, what="two whole passes")
    view.cursor = 420
    view._refresh_metrics()
    # the windows whose horizon has played: cursors C..420-P, recomputed here from the arrays
    t = np.arange(C, 420 - P + 1)
    act = view._recording.activity.astype(np.float64)
    target = np.stack([act[s : s + P] for s in t])
    copy = np.stack([np.repeat(act[s - 1 : s], P, 0) for s in t])
    table = metrics_table(view)
    assert set(table) == {"nlinear_demo", "mlp_demo"} and "MAE" in next(iter(table.values()))
    per_step = {}
    for run in view._runs:
        pred = run.forecast.forecast[t].astype(np.float64)  # float16 storage: 2e-3 tolerances below
        err = np.abs(pred - target)
        row = table[run.label]
        assert row["windows"] == str(len(t))
        assert float(row["MAE"]) == pytest.approx(err.mean(), abs=2e-3)
        assert float(row["MSE"]) == pytest.approx(((pred - target) ** 2).mean(), abs=2e-3)
        per_step[run.label] = err.mean(axis=(0, 2))
    assert float(table["nlinear_demo"]["MAE"]) != float(table["mlp_demo"]["MAE"])
    # MSE per step by default; the toggle switches the plot (models and copy-last) to MAE per step
    assert view.step_metric == "MSE" and view._step_fig.title.text == "MSE per step ahead"
    mse_lines = [list(y) for y in view._step_src.data["ys"]]
    view.step_metric = "MAE"  # redrawn at once, without waiting for a poll
    steps = view._step_src.data
    assert steps["model"] == ["nlinear_demo", "mlp_demo", "copy-last"]
    assert view._step_fig.title.text == "MAE per step ahead" and "absolute" in view._step_fig.yaxis[0].axis_label
    for label, ys in zip(steps["model"], steps["ys"]):
        want = np.abs(copy - target).mean(axis=(0, 2)) if label == "copy-last" else per_step[label]
        assert len(ys) == P
        exact = label == "copy-last"  # from the float32 recording, not the float16 forecasts
        np.testing.assert_allclose(ys, want, atol=0 if exact else 2e-3, rtol=1e-6 if exact else 0)
    assert all(not np.allclose(a, b) for a, b in zip(mse_lines, steps["ys"]))
    assert steps["ys"][2][-1] > steps["ys"][2][0]  # copy-last errs more further ahead
    view.step_metric = "MSE"
    assert view._step_fig.title.text == "MSE per step ahead"
    np.testing.assert_allclose(view._step_src.data["ys"][0], mse_lines[0], rtol=1e-12)


def test_best_and_worst_units_by_score(view):
    view.session = "worm/worm2"
    view.models = ["nlinear_demo"]
    wait_for(lambda: view._runs[0].state == "ready", view, what="a whole pass")
    scores = view._runs[0].forecast.unit_scores()
    view.select_by = "best"
    best = list(view._units)
    view.select_by = "worst"
    worst = list(view._units)
    assert len(best) == len(worst) == 8
    assert min(scores[best]) > max(scores[worst])
    assert scores[best[0]] == np.nanmax(scores)


def test_unit_ids_and_clicks_on_the_raster(view):
    view.session = "worm/worm0"
    view.select_by = "units"
    view.unit_ids = "0-2, 5"
    assert view._units == [0, 1, 2, 5]
    view.unit_ids = "999"
    assert "no unit with id [999]" in view._selection_info.object
    rec = view._recording
    row = int(rec.prep.rank[7])
    view._on_tap(x=1.0, y=float(row))
    assert view.select_by == "units" and view.unit_ids.endswith("7")


def test_bad_file_shows_an_error_and_the_view_keeps_its_recording(view):
    view.session = "worm/worm0"
    before = view._recording
    view.source = "broken.nc"
    assert view._alert.visible and "broken.nc" in view._alert.object
    assert view._recording is before  # still the demo recording, still playable
    view.cursor = 200
    view._draw_frame()
    view._poll()
    assert "frame <b>200</b>" in view._clock.object
    view.source = "good.nc"
    assert not view._alert.visible and view.session == "testfish/good"


def test_mismatched_checkpoint_is_an_error_message(view):
    view.source = "good.nc"
    view.models = ["data:models/mismatched", "data:models/tiny_mlp"]
    wait_for(lambda: all(r.state in ("error", "ready", "computing") for r in view._runs), view, what="models prepared")
    bad, ok = view._runs
    assert bad.state == "error" and "40 units" in bad.message and "30" in bad.message
    assert view._alert.visible and "mismatched" in view._alert.object
    wait_for(cursor_ready_for(ok, view), view, what="tiny_mlp forecasts")
    view._draw_frame()
    assert len(lines(view, "model-1")[1]) == len(view._units) > 0
    assert lines(view, "model-0")[1] == []  # the refused checkpoint draws nothing


def cursor_ready_for(run, view):
    return lambda: run.forecast is not None and run.forecast.done[view.cursor]


def test_adapting_a_model_to_an_unseen_recording(view):
    view.source = "good.nc"
    view.adapt_steps = 6
    view.models = ["poco_demo"]
    wait_for(lambda: view._runs[0].state == "needs-adaptation", view, what="needs-adaptation")
    view._refresh_status()
    assert view._adapt_button.visible
    view.adapt()
    wait_for(lambda: view._runs[0].state in ("computing", "ready", "error"), view, timeout=180, what="adaptation")
    run = view._runs[0]
    assert run.state != "error", run.message
    assert run.adapted and [h["step"] for h in run.curve][0] == 0 and run.curve[-1]["step"] == 6
    assert "adapted poco_demo to testfish/good" in run.message
    view._refresh_curve()
    assert view._curve_pane.visible and view._curve_src.data["xs"][0][-1] == 6
    wait_for(cursor_ready(view), view, what="adapted forecasts")
    assert "testfish/good" in {s.name for s in run.model.sessions}


def test_netcdf_export_holds_every_model(view, tmp_path):
    view.session = "worm/worm0"
    view.models = ["nlinear_demo", "mlp_demo"]
    wait_for(lambda: all(r.state == "ready" for r in view._runs), view, what="whole passes")
    data = view._export_netcdf().getvalue()
    path = tmp_path / "f.nc"
    path.write_bytes(data)
    with xr.open_dataset(path) as ds:
        assert {"forecast_nlinear_demo", "forecast_mlp_demo"} <= set(ds.data_vars)
        f = ds["forecast_mlp_demo"]
        assert f.dims == ("cursor", "step", "unit") and f.sizes["step"] == P
        np.testing.assert_allclose(f.sel(cursor=300).values, view._runs[1].forecast.forecast[300].astype(np.float32), rtol=1e-3)
        assert ds.attrs["recording"] == "worm/worm0"


def test_link_state_is_applied_in_order(ui_data_dir, monkeypatch):
    """A shared link's query (as Panel writes it: lists as Python literals) rebuilds the view."""
    link = {"source": "demo", "session": "worm/worm0", "models": "['mlp_demo', 'nlinear_demo']", "select_by": "region",
            "region": "Dorsal Ganglion", "labels": "[]", "n_traces": "5", "fps": "25", "cursor": "81"}  # fmt: skip
    monkeypatch.setattr(ForecastView, "_url_state", lambda self: dict(link))
    v = ForecastView(str(ui_data_dir))
    try:
        assert v.session == "worm/worm0" and v._recording.name == "worm/worm0"
        assert v.models == ["mlp_demo", "nlinear_demo"]
        assert (v.region, v.n_traces, v.fps, v.cursor) == ("Dorsal Ganglion", 5, 25, 81)
        assert (v._player.start, v._player.end) == (48, 1600 - 16)
        assert set(v._recording.prep.regions[v._units]) == {"Dorsal Ganglion"}
    finally:
        v.close()
    link.update(session="no/such", cursor="abc", models="not a list")
    v = ForecastView(str(ui_data_dir))  # bad values are ignored, never fatal
    try:
        assert v.session == "zebrafish/fish0" and v.models == ["poco_demo", "mlp_demo", "nlinear_demo"]
    finally:
        v.close()


def test_step_wraps_around_the_playable_range(view):
    view.session = "worm/worm0"  # cursors 48 .. 1584
    view.cursor = 1583
    view.step(1)
    assert view.cursor == 1584
    view.step(1)
    assert view.cursor == 48
    view.step(-1)
    assert view.cursor == 1584
    view.step(-10)
    assert view.cursor == 1574


def test_a_duplicated_label_is_offered_once_and_selects_both_units(tmp_path):
    """Two traces labelled URADL (as in worm 2022-07-27-38): the Forecast tab's label picker marks
    the label as duplicated, picking it shows both units, and the selection line says so."""
    from pocoviz.recordings import make_recording, save_recording

    rng = np.random.default_rng(5)
    ds = make_recording(
        rng.standard_normal((200, 5)).astype(np.float32), sampling_rate_hz=2.0, species="C. elegans", session="dup",
        label=["URADL", "AVAL", "", "URADL", ""], region=["Anterior Ganglion"] * 5, units="z-score",
    )  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    save_recording(ds, folder / "dup.nc")
    v = ForecastView(str(folder), sync_url=False)
    try:
        v.source = "dup.nc"
        assert v.param.labels.names == {"AVAL": "AVAL", "URADL (2 units: duplicated label)": "URADL"}
        v.select_by, v.labels = "label", ["URADL"]
        assert v.selected_units() == [0, 3]
        assert "2 unit(s) shown" in v._selection_info.object
        assert "URADL is carried by 2 units (#0, #3)" in v._selection_info.object
    finally:
        v.close()


def test_a_model_keeps_its_colour_when_another_is_removed(view):
    view.session = "worm/worm0"
    view.models = ["poco_demo", "mlp_demo", "nlinear_demo"]
    before = {r.key: r.color for r in view._runs}
    assert len(set(before.values())) == 3
    view.models = ["poco_demo", "nlinear_demo"]
    assert {r.key: r.color for r in view._runs} == {k: before[k] for k in ("poco_demo", "nlinear_demo")}
    view._refresh_legend()
    assert [view._model_renderers[i].glyph.line_color for i in range(2)] == [before["poco_demo"], before["nlinear_demo"]]
    view.models = ["poco_demo", "nlinear_demo", "mlp_demo"]  # a model added takes a free colour
    colors = [r.color for r in view._runs]
    assert colors[:2] == [before["poco_demo"], before["nlinear_demo"]] and len(set(colors)) == 3


def test_the_frame_readout_follows_a_session_switch_at_the_same_cursor(view):
    """Before: '/ 1499 · t = ...' of fish0 stayed on screen after switching to a 1600-frame worm at
    the same cursor, because the readout was redrawn only when the cursor moved."""
    view.session = "zebrafish/fish0"
    view.cursor = 300
    view._poll()
    assert "/ 1499 " in view._clock.object
    view.session = "worm/worm0"
    view.cursor = 300
    view._poll()
    rec = view._recording
    assert f"/ {rec.T - 1} " in view._clock.object and rec.T != 1500
    assert f"t = {rec.prep.time[300]:.2f} s" in view._clock.object

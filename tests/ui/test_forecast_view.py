"""The Forecast tab's widgets and figures without a browser: they draw the controller's snapshot
(the controller itself is tested in tests/test_forecast_controller.py)."""

from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pytest
import xarray as xr
from bokeh.models import CustomJSHover, DataRange1d, HoverTool, Range1d

from pocoviz.controllers.forecast import MAX_EXPORT_BYTES
from pocoviz.ui.forecast import MODEL_COLORS, ForecastView

from .helpers import wait_for


@pytest.fixture
def view(ui_data_dir):
    v = ForecastView(str(ui_data_dir))
    yield v
    v.close()


def ready(view):
    return lambda: all(m.state == "ready" for m in view.controller.snapshot().models)


def test_the_traces_plot_draws_the_snapshot_and_its_legend(view):
    ctl = view.controller
    ctl.session = "worm/worm0"
    ctl.models = ["poco_demo", "nlinear_demo"]
    ctl.cursor = 300
    wait_for(ready(view), 120, "whole passes")
    snap = view.render()
    assert view.frame_source.data == snap.lines and {"model-0", "model-1"} <= set(snap.lines["layer"])
    assert view.traces_figure.title.text == snap.layout.title and "48 frames" in snap.layout.title
    assert view.traces_figure.yaxis[0].major_label_overrides == dict(zip(snap.layout.offsets, snap.layout.names))
    items = [i for i in view.traces_legend.items if i.visible]
    labels = [i.label.value for i in items]
    assert labels == ["recorded (context)", "recorded (horizon)", "poco_demo", "nlinear_demo"]
    colors = {m.label: m.color for m in snap.models}
    assert [i.renderers[0].glyph.line_color for i in items[2:]] == [colors["poco_demo"], colors["nlinear_demo"]]
    assert set(colors.values()) <= set(MODEL_COLORS)
    assert "frame <b>300</b>" in view.clock.object
    ctl.models = ["nlinear_demo"]  # a model removed: the other keeps its colour and its entry
    view.render()
    items = [i for i in view.traces_legend.items if i.visible]
    assert [i.label.value for i in items[2:]] == ["nlinear_demo"] and items[2].renderers[0].glyph.line_color == colors["nlinear_demo"]


def test_the_per_step_plot_has_a_legend_entry_for_copy_last(view):
    """Issue 15, defect 4: the copy-last line had no legend entry."""
    ctl = view.controller
    ctl.session = "worm/worm1"
    ctl.models = ["nlinear_demo", "mlp_demo"]
    wait_for(ready(view), 120, "whole passes")
    ctl.cursor = 500
    view.render()
    legend = view.step_figure.legend[0]
    shown = [(i.label.value, i.renderers[0].glyph.line_color, i.renderers[0].glyph.line_dash) for i in legend.items if i.visible]
    assert [s[0] for s in shown] == ["nlinear_demo", "mlp_demo", "copy-last"]
    assert shown[2][2] == [6] or shown[2][2] == "dashed" or list(shown[2][2]) == [6]
    assert view.step_figure.title.text == "MSE per step ahead"
    ctl.step_metric = "MAE"
    view.render()
    assert view.step_figure.title.text == "MAE per step ahead"
    assert "MSE" in view.metrics_pane.object and "mlp_demo" in view.metrics_pane.object and "Score per region" in view.regions_pane.object


def test_no_figure_asks_the_browser_to_guess_its_ranges(view):
    """Issue 15, defect 10: 'could not set initial ranges' about 100 times a minute came from
    figures with data ranges (DataRange1d) over empty data, redrawn at each metrics refresh."""
    view.render()
    for fig in (view.traces_figure, view.step_figure, view.curve_figure):
        assert isinstance(fig.x_range, Range1d) and isinstance(fig.y_range, Range1d)
        assert not isinstance(fig.x_range, DataRange1d)
    assert view.step_figure.x_range.end > view.step_figure.x_range.start


def test_raster_tooltips_name_the_unit_label_region_and_time(view):
    """Issue 15, defect 4: the raster's hover showed ``frow``/``ftime`` and fractional rows."""
    ctl = view.controller
    ctl.session = "worm/worm0"
    view.render()
    plot = hv.renderer("bokeh").get_plot(view.raster_pane.object)
    hover = next(t for t in plot.state.tools if isinstance(t, HoverTool))
    names = [name for name, _ in hover.tooltips]
    assert names == ["unit", "label", "region", "time", "activity"]
    assert not any("frow" in str(v) or "ftime" in str(v) for _, v in hover.tooltips)
    fmt = hover.formatters["$y"]
    assert isinstance(fmt, CustomJSHover) and "Math.round" in fmt.code
    raster = ctl.snapshot().raster
    assert list(fmt.args["ids"]) == list(raster.row_ids) and list(fmt.args["regions"]) == list(raster.row_regions)
    rec = ctl.recording
    row = int(rec.rank[5])
    assert fmt.args["ids"][row] == int(rec.ids[5]) and fmt.args["regions"][row] == rec.regions[5]


def test_the_busy_spinner_follows_the_controller(view):
    ctl = view.controller
    ctl.session = "worm/worm3"
    ctl.models = ["mlp_demo"]
    view.render()
    assert view.spinner.value == ctl.busy
    wait_for(lambda: not ctl.busy, 120, "idle")
    view.render()
    assert view.spinner.value is False and view.spinner.visible is False


def test_the_netcdf_download_says_its_size_and_sends_the_units_on_screen(view, tmp_path):
    """Issue 15, defect 2: the export's size is on its button before downloading, and what is sent
    holds the units on screen (bounded), not every unit of the recording."""
    ctl = view.controller
    ctl.models = ["nlinear_demo"]
    wait_for(ready(view), 240, "fish0 pass")
    view.render()
    label = view.netcdf_download.label
    assert label.startswith("Forecasts (netCDF, ≤ ") and label.endswith("kB)")
    data = view.netcdf_download.callback()
    assert isinstance(data, io.BytesIO) and 0 < len(data.getvalue()) < 1_000_000 <= MAX_EXPORT_BYTES
    path = tmp_path / "f.nc"
    path.write_bytes(data.getvalue())
    with xr.open_dataset(path) as ds:
        assert list(ds["unit"].values) == list(ctl.snapshot().layout.units)
        np.testing.assert_allclose(ds["forecast_nlinear_demo"].sel(cursor=300).values,
                                   ctl.runs[0].forecast.forecast[300][:, list(ds["unit"].values)].astype(np.float32), atol=2e-3)  # fmt: skip
    assert view.netcdf_download.filename == "pocoviz_forecasts_zebrafish_fish0.nc"
    ctl.export_scope = "all"
    view.render()
    assert "MB" in view.netcdf_download.label
    assert view.netcdf_download.callback().getvalue() == b""  # too large for a browser download: refused
    view.render()
    assert view.alert.visible and "export the units on screen" in view.alert.object


def test_link_notice_and_errors_are_shown(view):
    ctl = view.controller
    ctl.apply_url({"t": "1e309", "units_by": "units", "units": "10^30"})
    view.render()
    assert view.notice.visible and "not a finite number" in view.notice.object and "10^30" in view.notice.object
    ctl.source = "broken.nc"
    view.render()
    assert view.alert.visible and "broken.nc" in view.alert.object
    ctl.source = "good.nc"
    view.render()
    assert not view.alert.visible


def test_a_lazy_recording_raster_reads_the_viewport_window_only(ui_data_dir, tmp_path, monkeypatch):
    """A Dask-backed recording: the raster's image is the pyramid window under the viewport (at most
    about twice the viewport cells along each axis), with its bounds in seconds × display rows."""
    from pocoviz.controllers.forecast import VIEWPORT_CELLS
    from pocoviz.recordings import make_recording

    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    ds = make_recording(rng.standard_normal((3000, 2000)).astype(np.float32), sampling_rate_hz=2.0, species="fish", session="big",
                        units="z-score", region=["a"] * 700 + ["b"] * 1300)  # fmt: skip
    ds.chunk({"time": 256, "unit": 512}).to_zarr(tmp_path / "big.zarr", zarr_format=3)
    lazy = xr.open_zarr(tmp_path / "big.zarr")
    v = ForecastView(str(ui_data_dir))
    try:
        ctl = v.controller
        ctl.models = []
        ctl._sessions = {"fish/big": lazy}
        ctl.param.session.objects = ["fish/big"]
        ctl.session = "fish/big"
        snap = v.render()
        assert ctl.recording.lazy and snap.raster.window is not None
        whole = v._image(("window", snap.raster.window, snap.raster.key))
        rows, cols = whole.data.shape
        assert rows <= 2 * VIEWPORT_CELLS[1] and cols <= 2 * VIEWPORT_CELLS[0]
        assert whole.bounds.lbrt() == pytest.approx((-0.25, -0.5, 1499.75, 1999.5), abs=2.0)
        zoom = v._image(("window", snap.raster.window, snap.raster.key), x_range=(100.0, 110.0), y_range=(50.0, 90.0))
        left, bottom, right, top = zoom.bounds.lbrt()
        assert left <= 100.0 and right >= 110.0 and right - left < 30 and bottom <= 50 and top >= 90 and top - bottom < 100
        # level 0 under this viewport: the recorded cells, rows from 50 (frame 200 = 100 s at 2 Hz)
        np.testing.assert_allclose(zoom.data[::-1][:40, :4], lazy["activity"].values[200:204, 50:90].T, atol=1e-6)
    finally:
        v.close()

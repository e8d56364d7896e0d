"""The Recordings view without a browser: it draws its controller's snapshots (the selection, the
trace labels, errors, the time window) and its position map never holds another recording's units.
The tab's state and logic are tested through the controller in tests/test_recordings_controller.py."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.recordings import make_recording, save_recording
from pocoviz.ui.recordings import RecordingsView


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(1)
    ds = make_recording(
        rng.standard_normal((200, 12)), sampling_rate_hz=4.0, species="fly", session="a",
        region=["r1"] * 5 + ["r2"] * 4 + [""] * 3, label=["n0", "n1", "", "", "", "m0", "", "", "", "", "", ""],
        x=rng.uniform(0, 10, 12), y=rng.uniform(0, 10, 12), units="z-score",
    )  # fmt: skip
    save_recording(ds, folder / "fly_a.nc")
    (folder / "broken.nc").write_text("not netcdf")
    return folder


def test_the_view_draws_the_controllers_snapshots(data_dir):
    view = RecordingsView(data_dir=str(data_dir))
    c = view.controller
    c.source = "fly_a.nc"
    c.param.update(select_by="label", labels=["m0", "n1"])
    assert view._selection_info.object == "2 unit(s) shown" == c.snapshot().selection
    assert view._trace_ticks == list(c.snapshot().trace_ticks) and [n for _, n in view._trace_ticks] == ["m0", "n1"]
    c.set_window(5, 20)
    start, end = view._window_inputs
    assert (start.value, end.value) == (5.0, 20.0) and view._xlim == (5.0, 20.0)
    end.value = 9.0  # typing a bound moves the window
    assert c.window == (5.0, 9.0)
    start.value = 1.0
    assert c.window == (1.0, 9.0) and view._xlim == (1.0, 9.0)
    c.source = "broken.nc"
    assert view._alert.visible and "unknown format" in view._alert.object
    c.source = "fly_a.nc"
    assert not view._alert.visible


def test_the_position_map_never_holds_another_recordings_units(shared_data):
    """The demo's fish0 (1500 positioned units), then a worm without positions, then the tectum
    (114 positioned units): while the worm is shown the map's stream is empty, and the tectum's
    map is filled before it is shown again (before, the worm left fish0's 1500 points in the
    stream, and the map came back drawing them)."""
    view = RecordingsView(data_dir=str(shared_data))
    c = view.controller
    assert len(view._map_pipe.data["points"]["pos_a"]) == 1500
    worm = next(s for s in c.param.source.objects if str(s).endswith("-data.h5"))
    tectum = next(s for s in c.param.source.objects if str(s).endswith(".mat"))
    c.source = worm
    assert c.snapshot().map_kind == "none"
    assert view._map_pane.object is not view._map_dmap and view._map_pipe.data is None
    c.source = tectum
    assert view._map_pane.object is view._map_dmap
    assert len(view._map_pipe.data["points"]["pos_a"]) == c.prepared.ds.sizes["unit"] == 114


def test_a_links_clamped_settings_are_shown(data_dir):
    view = RecordingsView(data_dir=str(data_dir))
    messages = view.controller.apply_url({"rec_src": "fly_a.nc", "rec_n": "400"})
    assert messages == ["rec_n=400 is above 40; using 40"]
    assert view._notice.visible and "rec_n=400 is above 40" in view._notice.object


def test_pans_and_zooms_stay_inside_the_recording(data_dir):
    """Issue 16: a zoom out past the recording's edges asked for cells that do not exist and the
    image that came back reset the axes, a second round trip; the raster's ranges are bounded by
    the recording (frame f centred on its time, row r on r)."""
    import holoviews as hv

    view = RecordingsView(data_dir=str(data_dir))
    view.controller.source = "fly_a.nc"
    view.__panel__()
    figure = hv.render(view._raster_pane.object, backend="bokeh")
    assert figure.x_range.bounds == (-0.5 / 4.0, (200 - 0.5) / 4.0)  # 200 frames at 4 Hz
    assert figure.y_range.bounds == (-0.5, 12 - 0.5)  # 12 units


def test_a_wheel_zoom_is_reported_at_the_first_paint(data_dir):
    """Issue 16: Bokeh reports a wheel zoom's ranges when its level-of-detail mode ends, which any
    plot of the page ends at a paint after its lod_interval (300 ms by default) and re-checks
    lod_timeout later (500 ms): a paint of the traces or bands during a zoom held the raster's new
    ranges back ~0.9 s (1-2 of 20 gestures at 71k units). Every figure of the tab ends it at once."""
    import holoviews as hv

    view = RecordingsView(data_dir=str(data_dir))
    view.controller.source = "fly_a.nc"
    view.__panel__()
    for pane in (view._raster_pane, view._traces_pane, view._bands_pane, view._map_pane):
        figure = hv.render(pane.object, backend="bokeh")
        assert (figure.lod_interval, figure.lod_timeout) == (0, 100), pane

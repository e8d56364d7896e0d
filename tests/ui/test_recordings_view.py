"""The Recordings view-model and the data sources, without a browser."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pocoviz.recordings import RecordingError, make_recording, save_recording
from pocoviz.ui.recordings import RecordingsView, parse_unit_ids, prepare_session
from pocoviz.controllers.sources import DEMO_KEY, SourceCache, list_sources


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("3", [3]),
        ("0-3, 7", [0, 1, 2, 3, 7]),
        ("5 5 2-3", [5, 2, 3]),
        ("1,\n2", [1, 2]),
        ("x", ValueError("not a unit id")),
        ("4-2", ValueError("bad range")),
        ("0-100000", ValueError("bad range")),
    ],
)
def test_parse_unit_ids(text, expected):
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=str(expected)):
            parse_unit_ids(text)
    else:
        assert parse_unit_ids(text) == expected


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    ds = make_recording(
        rng.standard_normal((200, 12)),
        sampling_rate_hz=4.0,
        species="fly",
        session="a",
        region=["r1"] * 5 + ["r2"] * 4 + [""] * 3,
        label=["n0", "n1", "", "", "", "m0", "", "", "", "", "", ""],
        x=rng.uniform(0, 10, 12),
        y=rng.uniform(0, 10, 12),
        z=rng.uniform(0, 10, 12),
        units="z-score",
    )
    save_recording(ds, folder / "sub" / "fly_a.nc")
    (folder / "notes.txt").write_text("not listed")
    (folder / ".hidden.nc").write_text("hidden")
    (folder / "broken.nc").write_text("not netcdf")
    outside = tmp_path / "outside.nc"
    save_recording(ds, outside)
    os.symlink(outside, folder / "escape.nc")  # a link out of the data directory is never listed
    return folder


def test_list_sources_only_lists_recordings_inside_the_data_dir(data_dir):
    sources = list_sources(data_dir)
    assert sources == {DEMO_KEY: "demo", "broken.nc": "broken.nc", "sub/fly_a.nc": "sub/fly_a.nc"}
    assert list_sources(None) == {DEMO_KEY: "demo"}


def test_source_cache_refuses_paths_outside_the_data_dir(data_dir):
    cache = SourceCache()
    with pytest.raises(RecordingError, match="outside the data directory"):
        cache.load("escape.nc", data_dir)
    with pytest.raises(RecordingError, match="outside the data directory"):
        cache.load("../outside.nc", data_dir)
    with pytest.raises(RecordingError, match="no data directory"):
        cache.load("sub/fly_a.nc", None)
    sessions = cache.load("sub/fly_a.nc", data_dir)
    assert list(sessions) == ["fly/a"]
    assert cache.load("sub/fly_a.nc", data_dir) is sessions  # cached


def test_view_selects_units_by_region_label_and_id(data_dir):
    view = RecordingsView(data_dir=str(data_dir))
    view.source = "sub/fly_a.nc"
    assert view.session == "fly/a"
    prep = view._prepared
    # regions in display order, unknown last; bands cover every row once
    assert [b.region for b in prep.bands] == ["r1", "r2", "(no region)"]
    assert sorted(prep.order.tolist()) == list(range(12))
    view.region, view.n_traces = "r2", 2
    units = view.selected_units()
    assert len(units) == 2 and all(5 <= u < 9 for u in units)
    view.select_by, view.labels = "label", ["m0", "n1"]
    assert view.selected_units() == [5, 1]
    view.select_by, view.unit_ids = "index", "0-2, 11"
    assert view.selected_units() == [0, 1, 2, 11]
    view.unit_ids = "12"
    with pytest.raises(ValueError, match="no unit with id"):
        view.selected_units()
    view._update_selection()
    assert "no unit with id" in view._selection_info.object
    assert set(view.param.projection.objects) == {"x–y", "x–z", "y–z"}


def test_tapping_the_raster_toggles_the_unit_in_that_row(data_dir):
    view = RecordingsView(data_dir=str(data_dir))
    view.source = "sub/fly_a.nc"
    prep = view._prepared
    view._on_tap(0.0, 3.2)  # row 3
    uid = int(prep.ds["unit"].values[prep.order[3]])
    assert view.select_by == "index" and view.unit_ids == str(uid)
    view._on_tap(0.0, 0.0)
    assert parse_unit_ids(view.unit_ids) == [uid, int(prep.order[0])]
    view._on_tap(0.0, 3.0)  # again: removed
    assert parse_unit_ids(view.unit_ids) == [int(prep.order[0])]
    view._on_tap(0.0, 99.0)  # outside the raster: ignored
    assert parse_unit_ids(view.unit_ids) == [int(prep.order[0])]


def test_a_broken_file_shows_an_error_and_keeps_the_last_view(data_dir):
    view = RecordingsView(data_dir=str(data_dir))
    view.source = "sub/fly_a.nc"
    view.source = "broken.nc"
    assert view._alert.visible
    assert "broken.nc" in view._alert.object and "unknown format" in view._alert.object
    assert view.session == "fly/a" and view._prepared.name == "fly/a"
    view.source = "sub/fly_a.nc"
    assert not view._alert.visible and view.status == ""


def test_prepare_session_colour_limits_follow_the_units():
    rng = np.random.default_rng(0)
    z = make_recording(rng.standard_normal((100, 5)), sampling_rate_hz=1, species="s", session="z", units="z-score")
    f = make_recording(rng.uniform(0, 2, (100, 5)), sampling_rate_hz=1, species="s", session="f", units="dF/F")
    pz, pf = prepare_session(("t", "z"), z), prepare_session(("t", "f"), f)
    assert pz.cmap == "RdBu_r" and pz.clim[1] == -pz.clim[0] > 0
    assert pf.cmap == "viridis" and 0 <= pf.clim[0] < pf.clim[1] <= 2
    assert pz.time_label == "time (s)"


def test_a_duplicated_label_selects_every_unit_carrying_it(tmp_path):
    """Two units labelled URADL (as in 2022-07-27-38): the picker offers URADL once, marked as
    duplicated; picking it shows both traces, named apart, and says they are duplicates."""
    from pocoviz.ui.recordings import label_options, units_with_labels

    rng = np.random.default_rng(3)
    ds = make_recording(
        rng.standard_normal((100, 6)), sampling_rate_hz=2.0, species="C. elegans", session="dup",
        label=["URADL", "AVAL", "", "URADL", "AVAR", ""], region=["Anterior Ganglion"] * 6, units="z-score",
    )  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    save_recording(ds, folder / "dup.nc")
    view = RecordingsView(data_dir=str(folder))
    view.source = "dup.nc"
    assert label_options(ds) == {"AVAL": "AVAL", "AVAR": "AVAR", "URADL (2 units: duplicated label)": "URADL"}
    assert view.param.labels.names == label_options(ds) and list(view.param.labels.objects) == ["AVAL", "AVAR", "URADL"]
    prep = view._prepared
    assert prep.duplicates == {"URADL": [0, 3]}
    assert prep.names.tolist() == ["URADL (dup #0)", "AVAL", "#2", "URADL (dup #3)", "AVAR", "#5"]
    view.select_by, view.labels = "label", ["URADL", "AVAR"]
    assert view.selected_units() == [0, 3, 4] == units_with_labels(prep, ["URADL", "AVAR", "URADL"], 40)
    assert "3 unit(s) shown" in view._selection_info.object
    assert "duplicated label: URADL is carried by 2 units (#0, #3)" in view._selection_info.object
    assert [name for _, name in view._trace_ticks] == ["URADL (dup #0)", "URADL (dup #3)", "AVAR"]
    assert "duplicate_labels" in view._meta_pane.object and "URADL" in view._meta_pane.object
    view.labels = ["AVAL"]
    assert "duplicated" not in view._selection_info.object


def test_the_position_map_never_holds_another_recordings_units(shared_data):
    """The demo's fish0 (1500 positioned units), then a worm without positions, then the tectum
    (114 positioned units): while the worm is shown the map's stream is empty, and the tectum's
    map is filled before it is shown again (before, the worm left fish0's 1500 points in the
    stream, and the map came back drawing them)."""
    view = RecordingsView(data_dir=str(shared_data))
    assert len(view._map_pipe.data["points"]["pos_a"]) == 1500
    worm = next(s for s in view.param.source.objects if str(s).endswith("-data.h5"))
    tectum = next(s for s in view.param.source.objects if str(s).endswith(".mat"))
    view.source = worm
    assert view._map_pane.object is not view._map_dmap and view._map_pipe.data is None
    view.source = tectum
    assert view._map_pane.object is view._map_dmap
    assert len(view._map_pipe.data["points"]["pos_a"]) == view._prepared.ds.sizes["unit"] == 114

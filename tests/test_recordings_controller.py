"""The Recordings tab's controller without a browser: sources, sessions, the trace selection, the
time window, the position map's data, errors, and its settings in links."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pocoviz.controllers.recordings import RecordingsController, parse_unit_ids, prepare_session
from pocoviz.controllers.sources import DEMO_KEY, SourceCache, list_sources
from pocoviz.recordings import RecordingError, make_recording, save_recording


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
    nopos = make_recording(rng.standard_normal((50, 3)), sampling_rate_hz=1.0, species="fly", session="b", units="dF/F")
    save_recording(nopos, folder / "nopos.nc")
    (folder / "broken.nc").write_text("not netcdf")
    return folder


def test_selects_units_by_region_label_and_id(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    c.source = "sub/fly_a.nc"
    snap = c.snapshot()
    assert snap.session == "fly/a" and snap.raster_title == "fly/a: 12 units × 200 frames (z-score)"
    # regions in display order, unknown last; bands cover every row once
    assert [b.region for b in snap.prepared.bands] == ["r1", "r2", "(no region)"]
    assert sorted(snap.prepared.order.tolist()) == list(range(12))
    c.region, c.n_traces = "r2", 2
    snap = c.snapshot()
    assert len(snap.units) == 2 and all(5 <= u < 9 for u in snap.units) and snap.selection == "2 unit(s) shown"
    assert [name for _, name in snap.trace_ticks] == [t["unit"] for t in snap.traces] and len(snap.traces) == 2
    c.select_by, c.labels = "label", ["m0", "n1"]
    assert c.snapshot().units == (5, 1)
    c.select_by, c.unit_ids = "index", "0-2, 11"
    assert c.snapshot().units == (0, 1, 2, 11)
    c.unit_ids = "12"
    snap = c.snapshot()
    assert snap.units == () and "no unit with id [12]" in snap.selection and snap.traces == ()
    assert set(c.param.projection.objects) == {"x–y", "x–z", "y–z"}
    c.projection = "y–z"
    snap = c.snapshot()
    assert snap.map_kind == "points" and snap.map["axes"] == ("y", "z") and len(snap.map["pos_a"]) == 12


def test_tapping_a_raster_row_toggles_that_unit(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    c.source = "sub/fly_a.nc"
    prep = c.prepared
    c.tap_row(3.2)  # row 3
    uid = int(prep.ds["unit"].values[prep.order[3]])
    assert c.select_by == "index" and c.unit_ids == str(uid) and c.snapshot().units == (int(prep.order[3]),)
    c.tap_row(0.0)
    assert parse_unit_ids(c.unit_ids) == [uid, int(prep.order[0])]
    c.tap_row(3.0)  # again: removed
    assert parse_unit_ids(c.unit_ids) == [int(prep.order[0])]
    c.tap_row(99.0)  # outside the raster: ignored
    c.tap_row(None)
    assert parse_unit_ids(c.unit_ids) == [int(prep.order[0])]


def test_a_broken_file_is_reported_and_the_last_session_stays(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    c.source = "sub/fly_a.nc"
    c.source = "broken.nc"
    snap = c.snapshot()
    assert "broken.nc" in snap.error and "unknown format" in snap.error
    assert snap.session == "fly/a" and snap.prepared.name == "fly/a"
    c.source = "sub/fly_a.nc"
    assert c.snapshot().error == ""


def test_a_recording_without_positions_has_no_map_data(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    assert c.snapshot().map_kind == "points" and len(c.snapshot().map["pos_a"]) == 1500  # the demo's fish0
    c.source = "nopos.nc"
    snap = c.snapshot()
    assert snap.session == "fly/b" and snap.map_kind == "none" and snap.map is None
    assert c.param.projection.objects == ["x–y"]


def test_the_time_window_is_clamped_and_reset_with_the_session(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    c.source = "sub/fly_a.nc"
    assert c.snapshot().window == c.snapshot().extent == (0.0, 49.75)
    c.set_window(40, 10)
    assert c.window == (10.0, 40.0) and c.snapshot().window == (10.0, 40.0)
    c.set_window(-5, 1000)  # the whole recording: no window
    assert c.window is None
    c.set_window(5, 20)
    c.source = "nopos.nc"
    assert c.window is None and c.snapshot().window == (0.0, 49.0)


def test_a_link_reproduces_the_settings_and_bad_values_are_reported(data_dir):
    c = RecordingsController(data_dir=str(data_dir))
    c.source = "sub/fly_a.nc"
    c.param.update(select_by="label", labels=["n1", "m0"], projection="x–z", n_traces=3)
    c.set_window(2.5, 30)
    query = c.url_query()
    assert query == {
        "rec_src": "sub/fly_a.nc", "rec_session": "fly/a", "rec_region": "r1", "rec_labels": "n1,m0", "rec_n": "3",
        "rec_by": "label", "rec_proj": "x–z", "rec_t": "2.5,30.0",
    }  # fmt: skip
    d = RecordingsController(data_dir=str(data_dir))
    assert d.apply_url(query) == []
    a, b = c.snapshot(), d.snapshot()
    assert (a.session, a.units, a.window, a.map["axes"], a.selection) == (b.session, b.units, b.window, b.map["axes"], b.selection)
    e = RecordingsController(data_dir=str(data_dir))
    messages = e.apply_url({"rec_src": "../secret.nc", "rec_t": "900,1000", "rec_n": "99", "rec_units": "1-3", "rec_by": "index"})
    assert e.source == "demo" and e.window is None and e.n_traces == 40 and e.snapshot().units == (1, 2, 3)
    assert any("rec_src" in m for m in messages) and any("rec_t" in m for m in messages) and e.notice.startswith("Link settings")
    e.n_traces = 5  # the user's next change clears the link's message
    assert e.notice == "" and e.snapshot().notice == ""


def test_a_duplicated_label_selects_every_unit_carrying_it(tmp_path):
    """Two units labelled URADL (as in 2022-07-27-38): the picker offers URADL once, marked as
    duplicated; picking it shows both traces, named apart, and says they are duplicates."""
    from pocoviz.controllers.recordings import label_options, units_with_labels

    rng = np.random.default_rng(3)
    ds = make_recording(
        rng.standard_normal((100, 6)), sampling_rate_hz=2.0, species="C. elegans", session="dup",
        label=["URADL", "AVAL", "", "URADL", "AVAR", ""], region=["Anterior Ganglion"] * 6, units="z-score",
    )  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    save_recording(ds, folder / "dup.nc")
    c = RecordingsController(data_dir=str(folder))
    c.source = "dup.nc"
    assert label_options(ds) == {"AVAL": "AVAL", "AVAR": "AVAR", "URADL (2 units: duplicated label)": "URADL"}
    assert c.param.labels.names == label_options(ds) and list(c.param.labels.objects) == ["AVAL", "AVAR", "URADL"]
    prep = c.prepared
    assert prep.duplicates == {"URADL": [0, 3]}
    assert prep.names.tolist() == ["URADL (dup #0)", "AVAL", "#2", "URADL (dup #3)", "AVAR", "#5"]
    c.select_by, c.labels = "label", ["URADL", "AVAR"]
    snap = c.snapshot()
    assert snap.units == (0, 3, 4) and list(snap.units) == units_with_labels(prep, ["URADL", "AVAR", "URADL"], 40)
    assert "3 unit(s) shown" in snap.selection
    assert "duplicated label: URADL is carried by 2 units (#0, #3)" in snap.selection
    assert [name for _, name in snap.trace_ticks] == ["URADL (dup #0)", "URADL (dup #3)", "AVAR"]
    assert ("duplicate_labels", str(ds.attrs["duplicate_labels"])) in snap.metadata or any("URADL" in v for _, v in snap.metadata)
    c.labels = ["AVAL"]
    assert "duplicated" not in c.snapshot().selection


def test_prepare_session_colour_limits_follow_the_units():
    rng = np.random.default_rng(0)
    z = make_recording(rng.standard_normal((100, 5)), sampling_rate_hz=1, species="s", session="z", units="z-score")
    f = make_recording(rng.uniform(0, 2, (100, 5)), sampling_rate_hz=1, species="s", session="f", units="dF/F")
    pz, pf = prepare_session(("t", "z"), z), prepare_session(("t", "f"), f)
    assert pz.cmap == "RdBu_r" and pz.clim[1] == -pz.clim[0] > 0
    assert pf.cmap == "viridis" and 0 <= pf.clim[0] < pf.clim[1] <= 2
    assert pz.time_label == "time (s)"


@pytest.fixture
def source_dir(tmp_path):
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


def test_list_sources_only_lists_recordings_inside_the_data_dir(source_dir):
    sources = list_sources(source_dir)
    assert sources == {DEMO_KEY: "demo", "broken.nc": "broken.nc", "sub/fly_a.nc": "sub/fly_a.nc"}
    assert list_sources(None) == {DEMO_KEY: "demo"}


def test_source_cache_refuses_paths_outside_the_data_dir(source_dir):
    cache = SourceCache()
    with pytest.raises(RecordingError, match="outside the data directory"):
        cache.load("escape.nc", source_dir)
    with pytest.raises(RecordingError, match="outside the data directory"):
        cache.load("../outside.nc", source_dir)
    with pytest.raises(RecordingError, match="no data directory"):
        cache.load("sub/fly_a.nc", None)
    sessions = cache.load("sub/fly_a.nc", source_dir)
    assert list(sessions) == ["fly/a"]
    assert cache.load("sub/fly_a.nc", source_dir) is sessions  # cached


def test_labels_on_the_raster_bands_and_trace_axis_never_overlap():
    """Issue 15 defect 6: region names on the raster's bands are at least 1/28 of its rows apart
    (at 1/40 two small neighbouring bands' 8 pt labels overlapped), and 40 traces name at most 20
    units on their axis (the hover names every trace)."""
    from pocoviz.controllers.recordings import BAND_LABEL_SPACING, band_labels

    c = RecordingsController()
    prep = c.prepared
    rows = [row for row, _ in band_labels(prep)]
    assert len(rows) >= 5 and all(b - a >= len(prep.order) * BAND_LABEL_SPACING for a, b in zip(rows, rows[1:]))
    assert c.snapshot().band_labels == band_labels(prep)
    c.n_traces = 40
    c.region = "hindbrain"
    snap = c.snapshot()
    assert len(snap.traces) == 40 and len(snap.trace_ticks) == 20
    assert [name for _, name in snap.trace_ticks] == [t["unit"] for t in snap.traces][::2]


# ---------------------------------------------------------------------------- whole-brain recordings
def _lazy_fish(computed: list, T: int = 300, U: int = 2000):
    """A Dask-backed recording (chunks 64 frames x 500 units) whose computed blocks are recorded;
    units grouped by region as docs/wholebrain.md stores them."""
    import dask.array as da

    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, U)).astype(np.float32)
    region = np.repeat(["hindbrain", "midbrain", "tectum", ""], U // 4)
    label = np.array([""] * U, dtype=object)
    label[[10, 1500]] = ["AVAL", "RIM"]
    ds = make_recording(x, sampling_rate_hz=2.0, species="fish", session="big", units="z-score", region=region, label=label,
                        x=rng.uniform(0, 100, U), y=rng.uniform(0, 100, U))  # fmt: skip

    def count(block):
        if block.size:  # dask calls it once on an empty block to learn the output's type
            computed.append(block.shape)
        return block

    lazy = ds.copy()
    lazy["activity"] = (("time", "unit"), da.from_array(x, chunks=(64, 500)).map_blocks(count, dtype=np.float32), ds["activity"].attrs)
    return x, lazy


def test_a_lazy_recording_is_shown_without_reading_it_whole(monkeypatch):
    import pocoviz.controllers.recordings as rec

    computed: list[tuple] = []
    x, lazy = _lazy_fish(computed)
    monkeypatch.setattr(rec, "load_sessions", lambda key, data_dir: {"fish/big": lazy})
    c = RecordingsController()
    prep = c.prepared
    assert prep.lazy and prep.stored_order and list(prep.order[:5]) == [0, 1, 2, 3, 4]
    assert [(b.region, b.start, b.stop) for b in prep.bands] == [
        ("hindbrain", 0, 500), ("midbrain", 500, 1000), ("tectum", 1000, 1500), ("(no region)", 1500, 2000)
    ]  # fmt: skip
    snap = c.snapshot()
    # the colour sample (one row of chunks: 4 blocks of 64 frames) and the first region's 8 traces
    # (its one column of chunks: 5 blocks); never the whole array (30 blocks)
    assert len(computed) == 4 + 5 and sum(a * b for a, b in computed) == (8 * 64 + 44) * 500 < x.size / 2
    assert len(snap.traces) == 8 and snap.traces[0]["unit"] == "#0"
    np.testing.assert_allclose(snap.traces[1]["offset"] - snap.traces[1]["offset"].mean(), x[:, 71] - x[:, 71].mean(), rtol=1e-5, atol=1e-5)
    assert ("storage", "chunked, opened lazily (chunks (64, 500))") in snap.metadata
    computed.clear()
    c.set_window(10, 20)  # a new window: the traces are not read again
    assert c.snapshot().window == (10.0, 20.0) and computed == []
    # the raster's levels are built one chunk at a time (no pyramid here), then windows are cheap
    win, bounds = rec.raster_window(prep, None, None, max_cols=50, max_rows=20)  # levels while larger than 512: one (75 x 500)
    assert computed and max(computed) <= (64, 500) and win.level == 1 and (win.frame_step, win.row_step) == (4, 4 * 25)
    computed.clear()
    win, bounds = rec.raster_window(prep, (10, 20), (495.5, 520.5))
    assert win.level == 0 and win.values.shape == (25, 21) and len(computed) == 2  # two chunks beside unit 500
    np.testing.assert_array_equal(win.values, x[20:41, 496:521].T)
    assert bounds == (9.75, 495.5, 20.25, 520.5)  # frames 20-40 at 2 Hz, centred on their times


def test_find_selects_units_by_id_region_or_label_and_zooms_the_rows(monkeypatch):
    import pocoviz.controllers.recordings as rec

    x, lazy = _lazy_fish([])
    monkeypatch.setattr(rec, "load_sessions", lambda key, data_dir: {"fish/big": lazy})
    c = RecordingsController()
    c.find = "1200-1203"
    assert (c.select_by, c.unit_ids) == ("index", "1200-1203") and c.selected_units() == [1200, 1201, 1202, 1203]
    assert c.rows == (1181.0, 1222.0)  # at least 40 rows around them
    c.find = "Tectum"
    assert (c.select_by, c.region) == ("region", "tectum") and c.rows == (999.5, 1499.5)
    c.find = "aval, RIM"
    assert (c.select_by, c.labels) == ("label", ["AVAL", "RIM"]) and c.rows == (9.5, 1500.5)
    c.find = "cerebellum"
    assert c.notice == "Find: no unit id, region or label matches 'cerebellum'" and c.select_by == "label"
    c.find = "99999"
    assert "no unit with id [99999]" in c.notice
    snap = c.snapshot()
    assert snap.rows == (9.5, 1500.5) and snap.reduce == "mean"
    c.reduce = "peak"
    assert c.snapshot().reduce == "peak" and c.url_query()["rec_reduce"] == "peak"

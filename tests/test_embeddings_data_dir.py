"""Issue 16: the Embeddings tab finds a data-directory checkpoint's recordings in the data
directory (not only in the demo corpus), matches session names the way corpora name their nodes,
and reads the selected units' traces from a whole brain's store without loading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocoviz.controllers.embeddings import EmbeddingsController
from pocoviz.controllers.sources import SOURCE_CACHE, find_sessions
from pocoviz.forecast import SessionInfo, build_model, save_model
from pocoviz.recordings import is_lazy, make_recording, open_recording, save_recording, session_key
from pocoviz.recordings.chunked import write_chunked
from pocoviz.recordings.rasterwindow import read_units

torch.set_num_threads(1)


def _rec(n_time: int, n_units: int, species: str, session: str, seed: int):
    rng = np.random.default_rng(seed)
    return make_recording(
        rng.standard_normal((n_time, n_units)).cumsum(axis=0).astype(np.float32) * 0.1, sampling_rate_hz=2.0, species=species,
        session=session, units="dF/F", region=[f"r{i % 3}" for i in range(n_units)], x=rng.uniform(0, 50, n_units), y=rng.uniform(0, 50, n_units),
    )  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A worm with unsafe names (netCDF), a larger fish as a chunked store, a broken file, and a
    POCO checkpoint trained (its card says) on the store."""
    folder = tmp_path_factory.mktemp("data")
    save_recording(_rec(300, 30, "C. elegans", "worm 1", 0), folder / "a_worm.nc")
    (folder / "b_broken.nc").write_text("not a netCDF file\n")
    write_chunked(_rec(300, 50, "zebrafish (larval)", "fish 7", 1), folder / "z_fish.zarr", pyramid=False)
    torch.manual_seed(0)
    sessions = [SessionInfo("C. elegans/worm 1", 30, "C. elegans"), SessionInfo("zebrafish_larval/fish_7", 50, "zebrafish"),
                SessionInfo("mouse/absent", 20, "mouse")]  # fmt: skip
    model = build_model("POCO", sessions, dim=16, hidden=32, self_heads=2, dim_head=8)
    save_model(model, folder / "models" / "wb", training={"data": [str(folder / "z_fish.zarr")]})
    return folder


def test_session_keys_match_corpus_node_names():
    assert session_key("C. elegans/worm 1") == "C_elegans/worm_1" == session_key("C_elegans/worm_1")
    assert session_key("larval zebrafish (Danio rerio), synthetic/seed0") == "larval_zebrafish_Danio_rerio_synthetic/seed0"
    assert session_key("a/b") != session_key("a/c")


def test_find_sessions_searches_the_data_dir_by_safe_name_and_unit_count(data_dir, monkeypatch):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", "1000")  # the store opens lazily, as a whole brain's would
    SOURCE_CACHE._cache.clear()
    found = find_sessions({"C. elegans/worm 1": 30, "zebrafish_larval/fish_7": 50, "mouse/absent": 20, "worm/worm0": 112}, data_dir)
    assert set(found) == {"C. elegans/worm 1", "zebrafish_larval/fish_7", "worm/worm0"}  # worm0 from the demo corpus
    assert found["C. elegans/worm 1"].sizes["unit"] == 30 and found["zebrafish_larval/fish_7"].sizes["unit"] == 50
    assert is_lazy(found["zebrafish_larval/fish_7"])
    assert find_sessions({"C. elegans/worm 1": 31}, data_dir) == {}  # another unit count: not this recording
    assert find_sessions({"C. elegans/worm 1": 30}, None) == {}  # no data directory: the demo corpus only
    SOURCE_CACHE._cache.clear()


def test_find_sessions_opens_the_hinted_file_first_and_stops_when_all_are_found(data_dir, monkeypatch):
    opened = []
    real = SOURCE_CACHE.load
    monkeypatch.setattr(SOURCE_CACHE, "load", lambda key, d: (opened.append(key), real(key, d))[1])
    found = find_sessions({"zebrafish_larval/fish_7": 50}, data_dir, hints=[str(data_dir / "z_fish.zarr"), "/elsewhere/x.nc"])
    assert list(found) == ["zebrafish_larval/fish_7"] and opened == ["demo", "z_fish.zarr"]


def test_a_data_dir_checkpoint_shows_regions_positions_and_traces_from_its_store(data_dir, monkeypatch):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", "1000")
    SOURCE_CACHE._cache.clear()
    c = EmbeddingsController(data_dir=data_dir)
    try:
        c.model = "data:models/wb"
        assert c.wait_idle(120)
        snap = c.snapshot()
        assert snap.error == "" and snap.table.sizes["unit"] == 100
        table = snap.table
        fish = np.flatnonzero(table["session"].values == "zebrafish_larval/fish_7")
        absent = np.flatnonzero(table["session"].values == "mouse/absent")
        store = open_recording(data_dir / "z_fish.zarr", load=True)
        assert set(table["region"].values[fish]) == {"r0", "r1", "r2"} and set(table["region"].values[absent]) == {""}
        np.testing.assert_allclose(table["x"].values[fish], store["x"].values)
        rows = [int(fish[3]), int(fish[40]), int(absent[0]), int(fish[7])]
        c.select(rows)
        traces = c.snapshot().traces
        assert [t.row for t in traces] == [int(fish[3]), int(fish[7]), int(fish[40])]  # the absent session has no trace
        for t in traces:
            unit = int(table["unit_index"].values[t.row])
            np.testing.assert_allclose(t.activity, store["activity"].values[:, unit], rtol=1e-6)
            assert t.time[1] == pytest.approx(0.5)
    finally:
        c.close()
        SOURCE_CACHE._cache.clear()


def test_read_units_from_a_store_equals_reading_through_xarray(data_dir, monkeypatch):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", "1000")
    lazy = open_recording(data_dir / "z_fish.zarr")
    assert is_lazy(lazy)
    full = open_recording(data_dir / "z_fish.zarr", load=True)
    units = [40, 3, 3, 17]
    got = read_units(lazy, units)
    assert got.shape == (300, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got, full["activity"].values[:, units])
    np.testing.assert_array_equal(read_units(full, units), got)
    assert read_units(lazy, []).shape == (300, 0)

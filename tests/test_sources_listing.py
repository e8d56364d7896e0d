"""The data directory lists bare Zarr arrays (ZAPBench's layout) as recordings, next to pocoviz stores."""

from __future__ import annotations

import numpy as np
import zarr

from pocoviz.controllers.sources import list_sources
from pocoviz.recordings import open_recording


def test_a_bare_zarr_array_folder_is_listed_and_opens(tmp_path):
    data = np.random.default_rng(0).standard_normal((120, 30)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "traces"), shape=data.shape, chunks=(64, 16), dtype="float32", zarr_format=3)
    arr[:] = data
    (tmp_path / "notes").mkdir()  # a folder that is not a recording
    listed = list_sources(tmp_path)
    assert [k for k in listed.values() if k != "demo"] == ["traces"], listed
    ds = open_recording("traces", data_dir=tmp_path)
    np.testing.assert_array_equal(ds["activity"].values, data)


def test_a_forecast_store_is_not_offered_as_a_recording(tmp_path):
    import json

    from pocoviz.controllers.sources import list_sources
    from pocoviz.storeformat import FORECAST_STORE_ATTR, FORECAST_STORE_LAYOUT, is_forecast_store

    store = tmp_path / "forecasts.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {FORECAST_STORE_ATTR: {"layout": FORECAST_STORE_LAYOUT}}}))  # fmt: skip
    other = tmp_path / "brain.zarr"
    other.mkdir()
    (other / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    assert is_forecast_store(store) and not is_forecast_store(other) and not is_forecast_store(tmp_path / "absent")
    listed = set(list_sources(tmp_path).values())
    assert "brain.zarr" in listed and "forecasts.zarr" not in listed

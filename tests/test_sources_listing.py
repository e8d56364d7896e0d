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

"""The Recordings tab on a chunked whole-brain-layout store (small here: 3,000 units × 1,200
frames, opened lazily), driven by pocoviz.ui.scale_bench in headless Chromium: the raster opens,
follows random pans and zooms with a new window each time (never more than about twice the cells
asked for), and the server logs no error and nothing leaves loopback. Timings are reported by
``pocoviz bench --only scale``, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pocoviz.controllers.recordings import RASTER_COLS, RASTER_ROWS

pytestmark = pytest.mark.ui


def test_the_raster_follows_pans_and_zooms_of_a_lazily_opened_store(tmp_path):
    from pocoviz.recordings.wholebrain import write_wholebrain

    data = tmp_path / "data"
    data.mkdir()
    write_wholebrain(data / "brain.zarr", units=3000, frames=1200, seed=3)
    # in a process of its own: Playwright's sync API runs one instance per thread, and the other
    # browser tests' session browser may be open; POCOVIZ_LAZY_BYTES opens the 14 MB store lazily
    env = {**os.environ, "POCOVIZ_LAZY_BYTES": "1000000", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pocoviz.ui.scale_bench", str(data), "brain.zarr", "6"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["units"] == 3000 and out["open_s"] > 0
    # the first window: 1200 frames x 3000 units at >= 500 x 256 cells and < 2x that per axis
    rows, cols = out["first_image_shape"]
    assert RASTER_ROWS <= rows < 2 * RASTER_ROWS and cols <= 2 * RASTER_COLS, out["first_image_shape"]
    views = out["viewport_detail"]
    assert len(views) == 6 and out["viewport_missed"] == 0, views
    assert all("ms" in v and v["image"][0] <= 2 * RASTER_ROWS and v["image"][1] <= 2 * RASTER_COLS for v in views), views
    assert len({tuple(v["view"]) for v in views}) == 6  # six different viewports, each redrawn
    assert out["server_errors"] == 0 and out["external_requests"] == 0
    assert out["server_rss_mb"] > 0


_EMBEDDINGS_RUN = """
import json, sys
from pocoviz.ui.scale_bench import measure_embeddings_app, write_untrained_poco
data = sys.argv[1]
write_untrained_poco(data + "/brain.zarr", data + "/models/untrained")
print(json.dumps(measure_embeddings_app(data, "data:models/untrained", 3000, timeout_s=240)))
"""


def test_the_embeddings_of_a_stores_units_are_drawn_by_datashader_selected_and_traced(tmp_path):
    """The bench's Embeddings measurement on a small store, told to use Datashader above 1,000
    units: a checkpoint of the store's units finds its recording in the data directory, a box on
    the image selects, the traces are read from the store, and the separation test samples."""
    from pocoviz.recordings.wholebrain import write_wholebrain

    data = tmp_path / "data"
    data.mkdir()
    write_wholebrain(data / "brain.zarr", units=3000, frames=600, seed=4)
    env = {**os.environ, "POCOVIZ_LAZY_BYTES": "1000000", "POCOVIZ_DATASHADE_ABOVE": "1000", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _EMBEDDINGS_RUN, str(data)], capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    selected = int(out["selection"].split()[0])
    assert 0 < selected < 3000 and "selected (" in out["selection"], out["selection"]
    assert out["traces"] == 8 and out["image_s"] >= out["table_s"] > 0
    assert "Region silhouette" in out["separation"] and "scored on a random" in out["separation"], out["separation"]
    assert out["server_errors"] == 0 and out["external_requests"] == 0

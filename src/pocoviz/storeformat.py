"""What marks a store ``pocoviz forecast`` wrote (:mod:`pocoviz.forecast.batch`), readable without
torch: the source pickers must not offer such a store as a recording, and the Forecast tab looks
for them in the data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: the layout written by pocoviz.forecast.batch (docs in its module docstring)
FORECAST_STORE_LAYOUT = "pocoviz-forecast-store-1"
#: the root group's attribute that marks a pocoviz forecast store and describes it
FORECAST_STORE_ATTR = "pocoviz_forecast_store"


def is_forecast_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a pocoviz forecast store (its root ``zarr.json``
    carries :data:`FORECAST_STORE_ATTR` with this layout); reads that file only."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        meta = json.loads((p / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    got = attrs.get(FORECAST_STORE_ATTR) if isinstance(attrs, dict) else None
    return isinstance(got, dict) and got.get("layout") == FORECAST_STORE_LAYOUT

"""Issue 17: with several server processes (``pocoviz serve --num-procs N`` sets
POCOVIZ_SHARED_FORECASTS) the forecasts of a recording in memory go to the disk cache, and a
second process reads the blocks the first computed instead of computing them again; the tab's
metrics equal those computed in RAM."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pocoviz.controllers.forecast import ForecastController, shared_forecasts
from pocoviz.controllers.models import FORECAST_CACHE

torch.set_num_threads(1)


def _ready(ctl, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = ctl.snapshot().models
        if models and all(m.state == "ready" for m in models):
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {[(m.label, m.state, m.message) for m in ctl.snapshot().models]}")


def _metrics(ctl) -> dict:
    snap = ctl.snapshot()
    return {r[0]: dict(zip(snap.metrics.header, r)) for r in snap.metrics.rows}


def _run(session: str) -> tuple[ForecastController, dict]:
    ctl = ForecastController()
    ctl.session = session
    ctl.models = ["nlinear_demo"]
    _ready(ctl)
    ctl.cursor = 300
    return ctl, _metrics(ctl)


def test_a_second_process_reads_the_first_ones_forecasts(tmp_path, monkeypatch):
    monkeypatch.setenv("POCOVIZ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("POCOVIZ_SHARED_FORECASTS", raising=False)
    FORECAST_CACHE.clear()
    ram, in_ram = _run("worm/worm2")
    assert not shared_forecasts() and hasattr(ram.runs[0].forecast, "to_dataset")  # one process: in RAM
    ram.close()

    monkeypatch.setenv("POCOVIZ_SHARED_FORECASTS", "1")
    FORECAST_CACHE.clear()
    first, shared = _run("worm/worm2")
    fc = first.runs[0].forecast
    assert type(fc).__name__ == "DiskForecast" and fc.fraction_done == 1.0
    assert list((tmp_path / "cache" / "forecasts").iterdir())  # on disk
    row, want = shared["nlinear_demo"], in_ram["nlinear_demo"]
    for key in ("windows", "score", "MSE", "MAE"):
        assert float(row[key]) == pytest.approx(float(want[key]), abs=2e-3), key  # float16 storage
    first.close()

    FORECAST_CACHE.clear()  # a fresh process: nothing in memory
    computed = []
    from pocoviz.forecast import diskcache

    real = diskcache.DiskForecast._run
    monkeypatch.setattr(diskcache.DiskForecast, "_run", lambda self, *a, **k: (computed.append(1), real(self, *a, **k))[1])
    second, again = _run("worm/worm2")
    assert computed == [] and second.runs[0].forecast.fraction_done == 1.0  # read, not computed
    assert again == shared
    lines = second.runs[0].forecast.lines(300, [0, 5])
    assert lines is not None and np.isfinite(lines).all()
    second.close()
    FORECAST_CACHE.clear()

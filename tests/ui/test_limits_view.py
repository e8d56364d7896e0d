"""The Transformer limits tab's view-model without a browser: shipped sweeps drawn with their
slopes, forward-pass views, a live run that streams and can be stopped, missing sweeps reported."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pocoviz.ui.limits import LimitsView
from tests.ui.helpers import wait_idle


@pytest.fixture(scope="module")
def view():
    v = LimitsView()
    wait_idle(v)
    yield v
    v.close()


def test_sweeps_and_forward_views(view):
    assert set(view.sweeps) == {"N", "lr", "H", "L"} and not view._alert.visible
    assert "head variance vs N: slope" in view._summary.object and "per step" in view._summary.object
    assert len(view._f_headvar.renderers) >= 6 and len(view._f_dwk.renderers) >= 5
    hist = view.forward["hist"]
    # αA = 1: logits at init shrink with N; αA = ½: same spread at N = 1 and 16
    assert np.std(hist[(1.0, 16)]) < 0.5 * np.std(hist[(1.0, 1)])
    assert 0.5 < np.std(hist[(0.5, 16)]) / np.std(hist[(0.5, 1)]) < 2
    K = view.forward["kernels"][(1.0, 32)]
    assert K.shape == (24, 24) and np.allclose(np.diag(K), 1.0, atol=1e-5)


def test_live_run_streams_its_loss_and_stops(view):
    view.live_steps = 40
    view.start_live()
    wait_idle(view)
    assert view._live_source.data["step"] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert view.status.startswith("done: 40 steps")
    np.testing.assert_allclose(view._live_source.data["loss"], view.live["result"].loss)
    view.live_steps = 2000
    view.start_live()
    time.sleep(0.5)
    view.stop_live()
    wait_idle(view)
    assert view.status == "stopped" and len(view._live_source.data["step"]) < 400


def test_missing_sweeps_are_reported(monkeypatch, tmp_path):
    import pocoviz.limits.sweep as sweep

    monkeypatch.setattr(sweep, "sweeps_dir", lambda: tmp_path)
    v = LimitsView()
    try:
        assert v._alert.visible and "make-assets --limits" in v._alert.object and v.sweeps == {}
    finally:
        v.close()

"""The Transformer limits tab's view-model without a browser: shipped sweeps drawn with their
slopes, forward-pass views, a live run that streams and can be stopped, both computed on the
backend's device, missing sweeps reported."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize(
    "where", ["stand-in", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
)
def test_forward_views_and_live_run_compute_on_the_backend_device(monkeypatch, where):
    """The view hands both computations the device pocoviz.backend picks (CUDA on a GPU machine),
    and every forward pass runs there with weights and inputs on it; the plots get NumPy arrays.
    Without a GPU, ``cpu:0`` stands in for the backend's choice: it is not ``torch.device("cpu")``
    (what a hard-coded ``"cpu"`` gives), yet it computes here."""
    import pocoviz.backend as backend
    import pocoviz.limits as limits
    from pocoviz.limits import LimitsTransformer

    monkeypatch.delenv("POCOVIZ_DEVICE", raising=False)
    if where == "cuda":
        chosen = torch.device("cuda")  # what get_device() picks when a GPU is present
    else:
        chosen, real_get_device = torch.device("cpu", 0), backend.get_device
        monkeypatch.setattr(backend, "get_device", lambda preference=None: chosen if preference is None else real_get_device(preference))
    given: dict[str, list] = {"init_statistics": [], "train_run": []}
    real_stats, real_train = limits.init_statistics, limits.train_run
    monkeypatch.setattr(limits, "init_statistics", lambda device=None, **kw: given["init_statistics"].append(device) or real_stats(device, **kw))
    monkeypatch.setattr(limits, "train_run", lambda cfg, **kw: given["train_run"].append(kw.get("device")) or real_train(cfg, **kw))
    ran_on: set[tuple[str, str]] = set()  # (weights' device type, input's device type) of every forward pass
    real_trunk = LimitsTransformer._trunk

    def trunk(self, x, *args, **kwargs):
        ran_on.add((next(self.parameters()).device.type, x.device.type))
        return real_trunk(self, x, *args, **kwargs)

    monkeypatch.setattr(LimitsTransformer, "_trunk", trunk)
    v = LimitsView()
    try:
        wait_idle(v)
        v.live_steps = 10
        v.start_live()
        wait_idle(v)
        assert given == {"init_statistics": [chosen], "train_run": [chosen]}
        assert ran_on == {(chosen.type, chosen.type)}
        assert v.status.startswith("done: 10 steps"), v.status
        assert isinstance(v.forward["kernels"][(1.0, 2)], np.ndarray) and isinstance(v.live["result"].f_probe, np.ndarray)
        assert v._live_source.data["step"] == [5, 10]
    finally:
        v.close()

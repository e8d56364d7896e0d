"""The Transformer limits tab's controller without a browser: figure data from the shipped sweeps
(slopes, ranges and ticks a log axis can show), the forward-pass statistics and the live run in
background jobs on the backend's device, stopping, missing sweeps, and its settings in links."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from pocoviz.controllers.limits import LimitsController, Series, log_ticks, make_figure


def wait_idle(c: LimitsController, timeout: float = 180.0) -> None:
    assert c.jobs.wait_idle(timeout), "background jobs did not finish"


@pytest.fixture(scope="module")
def controller():
    c = LimitsController()
    wait_idle(c)
    yield c
    c.close()


def test_sweep_figures_forward_statistics_and_summary(controller):
    snap = controller.snapshot()
    assert set(controller.sweeps) == {"N", "lr", "H", "L"} and snap.missing == "" and snap.forward_error == ""
    assert "head variance vs N: slope" in snap.summary and "per step" in snap.summary
    assert set(snap.figures) == {"headvar", "lr", "spread", "dwk", "loss-n", "loss-h", "loss-l", "hist"}
    headvar = snap.figures["headvar"]
    trained = {s.label.split(",")[0]: s for s in headvar.series if "trained" in s.label}
    # αA = 1: heads collapse (variance ∝ N^-1); αA = ½: heads stay diverse (flat)
    slopes = {k: float(s.label.split("slope ")[1].rstrip(")")) for k, s in trained.items()}
    assert slopes["αA = 1"] < -0.8 and abs(slopes["αA = ½"]) < 0.3
    hist = {s.label: s for s in snap.figures["hist"].series}
    assert set(hist) == {"αA = 1, N = 1", "αA = 1, N = 16", "αA = ½, N = 1", "αA = ½, N = 16"}
    K = snap.kernels[(1.0, 32)]
    assert K.shape == (24, 24) and np.allclose(np.diag(K), 1.0, atol=1e-5)


def test_log_axes_show_only_positive_data_with_ranges_and_labelled_ticks(controller):
    """Issue 15 defects 6 and 10: every log axis has an explicit positive range (Bokeh warned
    'could not determine minimum/maximum data value for log axis' when it had to guess one) and at
    least three tick positions inside it (a log axis spanning less than a decade had no labels)."""
    for name, fig in controller.snapshot().figures.items():
        assert fig.series, name
        for axis, log, rng, ticks in (("x", fig.x_log, fig.x_range, fig.x_ticks), ("y", fig.y_log, fig.y_range, fig.y_ticks)):
            assert rng is not None and rng[0] < rng[1], (name, axis)
            values = np.concatenate([getattr(s, axis) for s in fig.series])
            assert np.isfinite(values).all() and rng[0] <= values.min() and values.max() <= rng[1], (name, axis)
            if log:
                assert rng[0] > 0 and (values > 0).all(), (name, axis)
                inside = [t for t in ticks if rng[0] <= t <= rng[1]]
                assert len(inside) >= 3, (name, axis, ticks, rng)


@pytest.mark.parametrize(
    "lo, hi, expected",
    [
        (0.001, 1.0, (0.001, 0.01, 0.1, 1.0)),
        (0.2, 0.45, (0.2, 0.3, 0.4)),
        (2.0, 32.0, (2.0, 5.0, 10.0, 20.0)),
        (0.25, 0.28, (0.25, 0.26, 0.27, 0.28)),
        (0.0, 1.0, ()),
        (math.nan, 1.0, ()),
    ],
)
def test_log_ticks(lo, hi, expected):
    assert log_ticks(lo, hi) == expected


def test_a_figure_drops_points_its_log_axis_cannot_show():
    fig = make_figure("f", "t", "x", "y", [Series(np.array([1, 2, 3, 4.0]), np.array([0.5, -1, np.nan, 2.0]), "a", "#000")], y_log=True)
    assert fig.series[0].x.tolist() == [1, 4] and fig.series[0].y.tolist() == [0.5, 2.0]
    empty = make_figure("g", "t", "x", "y", [Series(np.array([1.0]), np.array([0.0]), "a", "#000")], y_log=True)
    assert empty.series == () and empty.y_range is None


def test_live_run_streams_its_loss_and_stops(controller):
    controller.live_steps = 40
    job = controller.start_live()
    wait_idle(controller)
    live = controller.snapshot().live
    assert job.state == "done" and live.id == job.id
    assert live.steps == (5, 10, 15, 20, 25, 30, 35, 40) and live.status.startswith("done: 40 steps")
    np.testing.assert_allclose(live.loss, live.result.loss)
    controller.live_steps = 2000
    job = controller.start_live()
    deadline = time.monotonic() + 60
    while not (controller.snapshot().live.id == job.id and len(controller.snapshot().live.steps) >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    controller.stop_live()
    wait_idle(controller)
    live = controller.snapshot().live
    assert job.state == "cancelled" and live.status == "stopped" and 2 <= len(live.steps) < 400 and live.result is None


def test_a_newer_run_replaces_the_running_one():
    c = LimitsController(forward=False)
    try:
        c.live_steps = 2000
        first = c.start_live()
        c.live_steps = 20
        second = c.start_live()
        wait_idle(c)
        live = c.snapshot().live
        assert first.state == "cancelled" and second.state == "done"
        assert live.id == second.id and live.steps == (5, 10, 15, 20) and live.status.startswith("done: 20 steps")
    finally:
        c.close()


def test_missing_sweeps_are_reported(monkeypatch, tmp_path):
    import pocoviz.limits.sweep as sweep

    monkeypatch.setattr(sweep, "sweeps_dir", lambda: tmp_path)
    c = LimitsController(forward=False)
    try:
        snap = c.snapshot()
        assert "make-assets --limits" in snap.missing and c.sweeps == {} and snap.figures == {} and snap.summary == ""
    finally:
        c.close()


def test_a_link_reproduces_the_live_run_settings_and_clamps_bad_values():
    c = LimitsController(forward=False)
    c.param.update(live_N=16, live_H=8, live_L=4, live_alpha_A=0.5, live_alpha_L=0.5, live_eta0=0.25, live_steps=300)
    query = c.url_query()
    assert query == {"lim_N": "16", "lim_H": "8", "lim_L": "4", "lim_aA": "0.5", "lim_aL": "0.5", "lim_eta0": "0.25", "lim_steps": "300"}
    d = LimitsController(forward=False)
    assert d.apply_url(query) == []
    assert [getattr(d, p) for p in d.url.params] == [getattr(c, p) for p in c.url.params]
    e = LimitsController(forward=False)
    messages = e.apply_url({"lim_N": "1000", "lim_aA": "0.7", "lim_steps": "-3"})
    assert e.live_N == 64 and e.live_alpha_A == 1.0 and e.live_steps == 10 and len(messages) == 3
    assert e.snapshot().notice.startswith("Link settings")
    e.live_H = 2  # the user's next change clears the link's message
    assert e.snapshot().notice == ""
    for x in (c, d, e):
        x.close()


@pytest.mark.parametrize(
    "where", ["stand-in", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
)
def test_forward_views_and_live_run_compute_on_the_backend_device(monkeypatch, where):
    """The controller hands both computations the device pocoviz.backend picks (CUDA on a GPU
    machine), and every forward pass runs there with weights and inputs on it; the snapshots get
    NumPy arrays. Without a GPU, ``cpu:0`` stands in for the backend's choice: it is not
    ``torch.device("cpu")`` (what a hard-coded ``"cpu"`` gives), yet it computes here."""
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
    c = LimitsController()
    try:
        wait_idle(c)
        c.live_steps = 10
        c.start_live()
        wait_idle(c)
        snap = c.snapshot()
        assert given == {"init_statistics": [chosen], "train_run": [chosen]}
        assert ran_on == {(chosen.type, chosen.type)}
        assert snap.live.status.startswith("done: 10 steps"), snap.live.status
        assert isinstance(snap.kernels[(1.0, 2)], np.ndarray) and isinstance(snap.live.result.f_probe, np.ndarray)
        assert snap.live.steps == (5, 10)
    finally:
        c.close()

"""The Sequence memory tab's view-model without a browser: the drawn images, heatmap and errors are
the rollout's, presets reproduce the paper's set-ups, the capacity markers follow the tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.seqmem import DenseNet, capacity_estimate, random_patterns, recall
from pocoviz.seqmem.capacity import _crossing
from pocoviz.ui.seqmem import SeqMemView
from tests.ui.helpers import wait_idle


@pytest.fixture(scope="module")
def view():
    v = SeqMemView()
    wait_idle(v)
    yield v
    v.close()


def test_playback_draws_the_rollout(view):
    ref = recall(DenseNet(random_patterns(100, 40, seed=0), 2), 41)  # P·τ + τ steps
    np.testing.assert_array_equal(view.rollout.states, ref.states)
    view.t = 7
    heat = view._heat_source.data["image"][0]
    np.testing.assert_allclose(heat[:, :8], ref.overlaps[:8].T, rtol=1e-6)
    assert np.isnan(heat[:, 8:]).all()  # the future is not drawn yet
    np.testing.assert_array_equal(view._err_source.data["errors"], ref.errors[:8])
    target_img = view._img_sources[0].data["image"][0]
    np.testing.assert_array_equal(np.flipud(target_img).ravel(), random_patterns(100, 40, seed=0).numpy()[7])
    assert "step <b>7</b>" in view._readout.object and "recall perfect so far" in view._readout.object
    view.advance(100)
    assert view.t == len(ref.errors) - 1  # stops at the end


def test_presets_reproduce_the_papers_figures(view):
    view.preset = "Fig. 1: SeqNet fails (N 300, P 100)"
    wait_idle(view)
    assert view.rollout.first_error == 1 and view.N == 300 and view.P == 100
    view.t = 3
    assert "first error at step 1" in view._readout.object
    view.preset = "Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)"
    wait_idle(view)
    assert view.rollout.first_error is None and view.rollout.visits()[:3] == [(0, 5), (1, 5), (2, 5)]
    view.preset = "Digits: d = 2 fails, pseudoinverse recalls (P 40)"
    wait_idle(view)
    assert view.N == 64 and view.rollout.first_error is None and "rank O = 40" in view._readout.object
    view.model = "dense"
    wait_idle(view)
    assert view.rollout.first_error is not None


def test_capacity_markers_follow_the_tolerance(view):
    assert len(view.capacity) == 35  # d = 1, 2 (N 10..100), d = 3 (N 10..40), exponential (N 6..13)
    est = next(e for e in view.capacity if e["N"] == 50 and e["degree"] == 2)
    ref = capacity_estimate(50, 2, n_seq=8)
    np.testing.assert_array_equal(est["trans_ok"], ref["trans_ok"])
    view.c = 0.1
    rows = dict(zip(zip(view._cap_t_source.data["N"], view._cap_t_source.data["color"]), view._cap_t_source.data["P"]))
    assert rows[(50, "#E69F00")] == pytest.approx(_crossing(ref["grid"], ref["trans_ok"], 0.9))
    view.c = 0.4  # a looser tolerance: larger capacities, no new simulation
    rows2 = dict(zip(zip(view._cap_t_source.data["N"], view._cap_t_source.data["color"]), view._cap_t_source.data["P"]))
    assert rows2[(50, "#E69F00")] >= rows[(50, "#E69F00")] and view._runner.idle


def test_correlated_and_timing_views(view):
    rates = view.corr["rates"]
    assert (rates[("pseudoinverse", 3)] == 1.0).all()  # exact at every bias (rank = P)
    assert rates[("plain", 3)][0] == 1.0 and rates[("plain", 3)][-1] == 0.0
    view.correlated = "digits"
    wait_idle(view)
    assert view.corr["family"] == "digits" and view.corr["rates"][("plain", "exp")][0] == 1.0
    np.testing.assert_array_equal(view.timing[10], np.arange(1, 9))  # d = 10 dwells exactly τ
    assert not np.allclose(view.timing[2], np.arange(1, 9))

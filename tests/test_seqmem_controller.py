"""The Sequence memory tab's controller without a browser or Panel: playback frames are the
rollout's, presets reproduce the paper's set-ups and say "custom" once a setting leaves them, typed
values outside the bounds are clamped visibly, capacity markers follow the tolerance, settings
round-trip through the URL."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.controllers.seqmem import CUSTOM, SeqMemController
from pocoviz.seqmem import DenseNet, capacity_estimate, random_patterns, recall
from pocoviz.seqmem.capacity import _crossing


@pytest.fixture(scope="module")
def ctrl():
    c = SeqMemController()
    assert c.wait_settled()
    yield c
    c.close()


def test_playback_frames_are_the_rollout(ctrl):
    ref = recall(DenseNet(random_patterns(100, 40, seed=0), 2), 41)  # P·τ + τ steps
    snap = ctrl.snapshot()
    np.testing.assert_array_equal(snap.rollout.states, ref.states)
    ctrl.t = 7
    fr = ctrl.snapshot().frame
    np.testing.assert_allclose(fr.heat[:, :8], ref.overlaps[:8].T, rtol=1e-6)
    assert np.isnan(fr.heat[:, 8:]).all()  # the future is not drawn yet
    np.testing.assert_array_equal(fr.errors, ref.errors[:8])
    np.testing.assert_array_equal(np.flipud(fr.images[0]).ravel(), random_patterns(100, 40, seed=0).numpy()[7])
    assert (fr.t, fr.last, fr.target, fr.bit_errors, fr.first_error) == (7, 41, 7, 0, None)
    ctrl.toggle_play()
    assert ctrl.playing
    ctrl.advance(100)
    assert ctrl.t == len(ref.errors) - 1 and not ctrl.playing  # stops at the end
    ctrl.toggle_play()  # at the end: plays again from the start
    assert ctrl.t == 0 and ctrl.playing
    ctrl.toggle_play()
    assert not ctrl.playing


def test_presets_reproduce_the_papers_figures(ctrl):
    ctrl.preset = "Fig. 1: SeqNet fails (N 300, P 100)"
    assert ctrl.wait_settled()
    assert ctrl.snapshot().rollout.first_error == 1 and ctrl.N == 300 and ctrl.P == 100
    ctrl.preset = "Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)"
    assert ctrl.wait_settled()
    r = ctrl.snapshot().rollout
    assert r.first_error is None and r.visits()[:3] == [(0, 5), (1, 5), (2, 5)]
    ctrl.preset = "Digits: d = 2 fails, pseudoinverse recalls (P 40)"
    assert ctrl.wait_settled()
    snap = ctrl.snapshot()
    assert ctrl.N == 64 and snap.rollout.first_error is None and snap.info["rank"] == 40 and snap.frame.label is not None


def test_a_preset_reads_custom_once_a_setting_differs(ctrl):
    """Issue 15, defect 7: a preset's name stayed selected after its settings changed."""
    ctrl.preset = "Fig. 1: DenseNet d = 2 recalls (N 300, P 100)"
    assert ctrl.preset != CUSTOM and ctrl.matching_preset() == ctrl.preset
    ctrl.seed = 3  # not one of the preset's own settings, but it changes what is shown
    assert ctrl.preset == CUSTOM
    ctrl.preset = "Digits: d = 2 fails, pseudoinverse recalls (P 40)"
    assert ctrl.wait_settled()
    ctrl.model = "dense"
    assert ctrl.preset == CUSTOM
    assert ctrl.wait_settled()
    assert ctrl.snapshot().rollout.first_error is not None  # the plain d = 2 rule fails on the digits


@pytest.mark.parametrize(
    ("name", "typed", "used", "says"),
    [
        ("P", 5000, 400, "P = 5000 is above the maximum 400: using 400"),
        ("P", -3, 2, "P = -3 is below the minimum 2: using 2"),
        ("P", 120, 120, ""),
        ("degree", 99, 60, "above the maximum 60"),
        ("bias", 1.5, 0.95, "above the maximum 0.95"),
        ("seed", 2.6, 3, "not a whole number"),
    ],
)
def test_typed_values_outside_the_bounds_are_clamped_visibly(name, typed, used, says):
    """Issue 15, defect 7: the P box took 5000 or −3 and silently ignored it."""
    c = SeqMemController()
    try:
        assert c.set_setting(name, typed) == used and getattr(c, name) == used
        assert c.notice == says if not says or says.startswith(name) else says in c.notice
        assert c.bounds_text("P") == "2–400"
    finally:
        c.close()


def test_capacity_markers_follow_the_tolerance(ctrl):
    snap = ctrl.snapshot()
    assert len(snap.capacity) == 35  # d = 1, 2 (N 10..100), d = 3 (N 10..40), exponential (N 6..13)
    est = next(e for e in snap.capacity if e["N"] == 50 and e["degree"] == 2)
    ref = capacity_estimate(50, 2, n_seq=8)
    np.testing.assert_array_equal(est["trans_ok"], ref["trans_ok"])

    def at(points):
        return dict(zip(zip(points["P_T"]["N"], points["P_T"]["degree"]), points["P_T"]["P"]))

    ctrl.c = 0.1
    rows = at(ctrl.snapshot().capacity_points)
    assert rows[(50, "2")] == pytest.approx(_crossing(ref["grid"], ref["trans_ok"], 0.9))
    ctrl.c = 0.4  # a looser tolerance: larger capacities, no new simulation
    assert at(ctrl.snapshot().capacity_points)[(50, "2")] >= rows[(50, "2")] and not ctrl.jobs.busy("capacity")


def test_correlated_and_timing_views(ctrl):
    rates = ctrl.snapshot().corr["rates"]
    assert (rates[("pseudoinverse", 3)] == 1.0).all()  # exact at every bias (rank = P)
    assert rates[("plain", 3)][0] == 1.0 and rates[("plain", 3)][-1] == 0.0
    ctrl.correlated = "digits"
    assert ctrl.wait_settled()
    snap = ctrl.snapshot()
    assert snap.corr["family"] == "digits" and snap.corr["rates"][("plain", "exp")][0] == 1.0
    np.testing.assert_array_equal(snap.timing[10], np.arange(1, 9))  # d = 10 dwells exactly τ
    assert not np.allclose(snap.timing[2], np.arange(1, 9))


def test_settings_round_trip_through_the_url():
    a = SeqMemController()
    a.preset = "Fig. 4A: MixedNet d = 2 (too early)"
    a.param.update(speed=20, c=0.25, correlated="digits")
    assert a.wait_settled()
    a.t = 17
    q = a.url_query()
    assert all(k.startswith("seq_") for k in q) and q["seq_preset"].startswith("Fig. 4A") and q["seq_t"] == "17"
    b = SeqMemController()
    assert b.apply_url(q) == []
    assert b.wait_settled()
    keys = ("preset", "model", "degree", "patterns", "N", "P", "tau", "lam", "speed", "c", "correlated", "t")
    assert {k: getattr(b, k) for k in keys} == {k: getattr(a, k) for k in keys}
    a.seed = 5  # custom settings travel one by one
    c = SeqMemController()
    c.apply_url(a.url_query())
    assert c.preset == CUSTOM and c.seed == 5 and c.model == "mixed" and c.degree == 2
    assert any("above 400" in m for m in c.apply_url({"seq_P": "5000"})) and c.P == 400
    for x in (a, b, c):
        x.close()

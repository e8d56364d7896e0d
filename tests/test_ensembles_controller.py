"""The Ensembles tab's controller without a browser or Panel: its snapshot holds the theory's
numbers for the current settings, the simulation's markers, the scaling view's sizes and verdicts;
settings round-trip through the URL."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.controllers.ensembles import EnsemblesController
from pocoviz.ensembles import ensemble_risk, optimal_risk, power_law_task
from pocoviz.ensembles.curves import SCALING_D, TabParams, k_values, simulate_tab, simulation_markers


@pytest.fixture
def ctrl():
    c = EnsemblesController()
    assert c.wait_settled()
    yield c
    c.close()


def test_default_snapshot_is_the_optimal_ridge_theory(ctrl):
    snap = ctrl.snapshot()
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = k_values(512).astype(float)
    np.testing.assert_array_equal(K, [1, 2, 4, 8, 16, 32, 64])
    risk, _ = optimal_risk(s, w2, np.array([62.5, 500.0, 4000.0])[:, None], 512 / K[None, :], K[None, :])
    vk = snap.theory["vs_K"]
    np.testing.assert_allclose(vk["total"], risk.total, rtol=1e-10)
    np.testing.assert_allclose(vk["bias"][1], risk.bias[1], rtol=1e-10)
    np.testing.assert_allclose(vk["var_over_K"][1], risk.variance[1] / K, rtol=1e-10)
    assert snap.best_K == 1 and snap.verdict == "K = 1 optimal"
    vr = snap.theory["vs_ridge"]
    np.testing.assert_allclose(vr["total"][2], ensemble_risk(s, w2, 500, 128, 4, vr["ridge"]).total, rtol=1e-10)
    assert abs(float(snap.scaling["ell_star"]) - 0.526) < 1e-3
    assert int(snap.scaling["D"]) == SCALING_D and not snap.refining  # the fine pass replaced the quick one
    assert snap.ridge_note.startswith("ridge: optimal") and snap.markers is None and snap.status == ""


def test_moving_alpha_or_r_recomputes(ctrl):
    before = ctrl.snapshot().theory["vs_K"]["total"][1]
    ctrl.alpha = 2.0
    assert ctrl.wait_settled()
    snap = ctrl.snapshot()
    s, w2 = power_law_task(2.0, 0.8, 1000)
    K = k_values(512).astype(float)
    np.testing.assert_allclose(snap.theory["vs_K"]["total"][1], optimal_risk(s, w2, 500, 512 / K, K)[0].total, rtol=1e-10)
    assert not np.allclose(before, snap.theory["vs_K"]["total"][1]) and snap.scaling["params"].alpha == 2.0
    ctrl.r = 0.3  # a hard task: no crossover
    assert ctrl.wait_settled()
    assert np.isnan(float(ctrl.snapshot().scaling["ell_star"]))


def test_fixed_ridge_and_the_regime_toggle(ctrl):
    ctrl.ridge_mode = "fixed"
    ctrl.log_ridge = -4.0  # far below the optimum (near-ridgeless at N = M = 512 ≈ P)
    assert ctrl.wait_settled()
    snap = ctrl.snapshot()
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = k_values(512).astype(float)
    want = ensemble_risk(s, w2, 500, 512 / K, K, 1e-4).total
    np.testing.assert_allclose(snap.theory["vs_K"]["total"][1], want, rtol=1e-10)
    assert "λ/P = 2e-07" in snap.ridge_note
    best = int(K[np.argmin(want)])
    assert snap.best_K == best > 1 and snap.verdict.startswith(f"K = {best} optimal")  # a mistuned ridge favours ensembles
    ctrl.regime = "under"
    assert ctrl.P == 4096
    ctrl.regime = "over"
    assert ctrl.P == 32
    ctrl.M = 1024
    assert ctrl.P == 64 and ctrl.regime == "over"  # the regime follows the budget
    ctrl.P = 500  # P by hand: no longer the regime's
    assert ctrl.regime == "custom"


def test_simulation_markers_are_the_simulation(ctrl):
    ctrl.seeds = 2
    ctrl.simulate = True
    assert ctrl.wait_settled()
    snap = ctrl.snapshot()
    want = simulation_markers(simulate_tab(TabParams(), [0, 1]), None)
    np.testing.assert_allclose(snap.markers["mean"], want["mean"], rtol=1e-12)
    np.testing.assert_allclose(snap.markers["upper"], want["upper"], rtol=1e-12)
    assert snap.sim_curves["mean"].shape == (7, 20) and snap.progress is None
    assert snap.status.startswith("simulated 2 seeds")
    # a new setting restarts it; D above the limit is theory only, with the reason
    ctrl.D = 4000
    snap = ctrl.snapshot()
    assert snap.markers is None and "limited to D ≤ 2000" in snap.status
    ctrl.simulate = False
    assert ctrl.snapshot().status == ""


def test_a_newer_simulation_replaces_a_running_one(ctrl):
    ctrl.seeds = 16
    ctrl.simulate = True
    first = ctrl.jobs.current("simulate")
    ctrl.seeds = 1
    assert ctrl.wait_settled()
    assert first.state == "cancelled" and int(ctrl.snapshot().markers["n_seeds"]) == 1


def test_settings_round_trip_through_the_url():
    a = EnsemblesController()
    a.param.update(alpha=1.25, r=0.6, noise=0.1, D=2000, M=1024, ridge_mode="fixed", log_ridge=-1.5, seeds=2)
    a.regime = "over"
    q = a.url_query()
    assert set(q) <= {k for k in a.url.keys} and all(k.startswith("ens_") for k in q)
    assert q["ens_regime"] == "over" and q["ens_P"] == "64"
    b = EnsemblesController()
    assert b.apply_url(q) == []
    assert b.tab_params() == a.tab_params() and b.regime == "over" and b.seeds == 2
    messages = b.apply_url({"ens_alpha": "7", "ens_P": "5000"})
    assert b.alpha == 3.0 and b.P == 64 and any("above 3" in m for m in messages) and "ens_P" in b.notice
    a.close()
    b.close()


def test_scaling_view_says_its_sizes_and_where_fit_and_theory_agree():
    """Issue 15, defect 8: at α 1.25, r 0.8 the E*-vs-M fits (0.18–0.61 for ℓ ≤ 0.4) sat far below
    s(ℓ) at sizes the figure did not name. The snapshot names them (P = 10⁵, D = 16000, M 100–1000,
    not the sidebar's) and says per ℓ whether fit and theory agree there, and why not."""
    c = EnsemblesController(alpha=1.25, r=0.8, P=500, D=1000)
    assert c.wait_settled()
    snap = c.snapshot()
    assert "P = 100000, D = 16000, M = 100–1000" in snap.scaling_sizes and "not the sidebar's" in snap.scaling_sizes
    rows = snap.scaling_rows
    assert [r.ell for r in rows] == [0.2, 0.4, 0.6, 0.8, 1.0]
    np.testing.assert_allclose([r.theory for r in rows], [0.4, 0.8, 1.15, 1.2, 1.25])
    np.testing.assert_allclose([r.fitted for r in rows], [0.184, 0.610, 1.054, 1.228, 1.335], atol=0.005)
    assert [r.agrees for r in rows] == [False, False, True, True, True]
    for r in rows[2:]:  # ℓ > ℓ* = 0.571: variance-limited, the fit is within 0.1 of s(ℓ)
        assert abs(r.fitted - r.theory) <= 0.1
    for r in rows[:2]:  # members of a handful of features: below s(ℓ), and still steepening with M
        assert r.fitted < r.theory and r.local_top > r.fitted and r.N_max <= 16
        assert "features per member" in r.why and "steepens" in r.why
    assert "N = M^ℓ = 2.5–4.0" in rows[0].why
    c.close()

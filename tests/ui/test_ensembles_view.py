"""The Ensembles tab's view-model without a browser: the drawn lines are the theory's numbers, the
controls recompute them, the simulation markers are the simulation's."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.ensembles import ensemble_risk, optimal_risk, power_law_task
from pocoviz.ensembles.curves import SCALING_D, TabParams, k_values, simulate_tab, simulation_markers
from pocoviz.ui.ensembles import EnsemblesView
from tests.ui.helpers import wait_for


def settled(view: EnsemblesView) -> bool:
    return view._runner.idle and "scaling" in view.results


@pytest.fixture
def view():
    v = EnsemblesView()
    wait_for(lambda: settled(v), what="the first theory pass")
    yield v
    v.close()


def test_default_lines_are_the_optimal_ridge_theory(view):
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = k_values(512).astype(float)
    np.testing.assert_array_equal(K, [1, 2, 4, 8, 16, 32, 64])
    risk, _ = optimal_risk(s, w2, 500, 512 / K, K)
    data = view._k_sources[1].data  # the chosen P
    np.testing.assert_allclose(data["K"], K)
    np.testing.assert_allclose(data["E"], risk.total, rtol=1e-10)
    np.testing.assert_allclose(view._bias_source.data["E"], risk.bias, rtol=1e-10)
    np.testing.assert_allclose(view._var_source.data["E"], risk.variance / K, rtol=1e-10)
    assert "K = 1 optimal" in view._badge.object
    # the other two rows are P/8 and 8P
    other, _ = optimal_risk(s, w2, np.array([62.5, 4000.0])[:, None], 512 / K[None, :], K[None, :])
    np.testing.assert_allclose(view._k_sources[0].data["E"], other.total[0], rtol=1e-10)
    np.testing.assert_allclose(view._k_sources[2].data["E"], other.total[1], rtol=1e-10)
    assert [item.label.value for item in view._fig_k.legend.items[:3]] == ["P = 62.5", "P = 500 (chosen)", "P = 4000"]
    # E vs λ: one line per K
    lam = view._lam_source.data
    assert len(lam["ys"]) == 7
    np.testing.assert_allclose(lam["ys"][2], ensemble_risk(s, w2, 500, 128, 4, lam["xs"][2]).total, rtol=1e-10)
    # scaling: ℓ* of the default task and slopes per ℓ in the legend
    assert "ℓ* = 0.526" in view._fig_s.title.text
    assert len(view._m_source.data["label"]) == 5 and view._m_source.data["label"][-1].startswith("ℓ = 1.0: slope −1.5")
    assert int(view.results["scaling"]["D"]) == SCALING_D and "refining" not in view._fig_m.title.text  # the fine pass replaced the quick one


def test_moving_alpha_or_r_redraws(view):
    before = np.array(view._k_sources[1].data["E"])
    star = view._fig_s.title.text
    view.alpha = 2.0
    wait_for(lambda: settled(view) and view.results["params"].alpha == 2.0, what="the α = 2 pass")
    after = np.array(view._k_sources[1].data["E"])
    assert not np.allclose(before, after)
    s, w2 = power_law_task(2.0, 0.8, 1000)
    K = k_values(512).astype(float)
    np.testing.assert_allclose(after, optimal_risk(s, w2, 500, 512 / K, K)[0].total, rtol=1e-10)
    assert view._fig_s.title.text != star and "α = 2.00" in view._badge.object
    view.r = 0.3  # a hard task: no crossover
    wait_for(lambda: settled(view) and view.results["params"].r == 0.3, what="the r = 0.3 pass")
    assert "bias-limited" in view._fig_s.title.text and not view._ell_span.visible


def test_fixed_ridge_and_regime_toggle(view):
    view.ridge_mode = "fixed"
    view.log_ridge = -4.0  # far below the optimum (near-ridgeless at N = M = 512 ≈ P)
    wait_for(lambda: settled(view) and view.results["params"].ridge == 1e-4, what="the fixed-ridge pass")
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = k_values(512).astype(float)
    want = ensemble_risk(s, w2, 500, 512 / K, K, 1e-4).total
    np.testing.assert_allclose(view._k_sources[1].data["E"], want, rtol=1e-10)
    assert "λ/P = 2e-07" in view._ridge_note.object and view._lam_span.visible and view._lam_span.location == 1e-4
    best = int(K[np.argmin(want)])
    assert (f"K = {best} optimal" in view._badge.object) and (best > 1)  # a mistuned ridge favours ensembles
    view.regime = "under"
    assert view.P == 4096
    view.regime = "over"
    assert view.P == 32
    view.M = 1024
    assert view.P == 64  # the regime follows the budget


def test_simulation_markers_are_the_simulation(view):
    view.seeds = 2
    view.simulate = True
    wait_for(lambda: view.sim_markers is not None and int(view.sim_markers["n_seeds"]) == 2, what="two seeds simulated")
    view._sim_thread.join()
    want = simulation_markers(simulate_tab(TabParams(), [0, 1]), None)
    np.testing.assert_allclose(view._sim_source.data["mean"], want["mean"], rtol=1e-12)
    np.testing.assert_allclose(view._sim_source.data["upper"], want["upper"], rtol=1e-12)
    assert len(view._lam_sim_source.data["ridge"]) == 7 * 20
    assert view.status.startswith("simulated 2 seeds")
    # a new setting restarts it; D above the limit is theory only, with the reason
    view.D = 4000
    assert view.sim_markers is None and len(view._sim_source.data["K"]) == 0
    assert "limited to D ≤ 2000" in view.status
    view.simulate = False


@pytest.mark.parametrize(("x", "text"), [(4096, "4096"), (512 / 4, "128"), (16000.0, "16000"), (512 / 3, "171"), (0.001, "0.001"), (2.5e-5, "2.5e-05")])
def test_numbers_in_labels_are_written_as_people_read_them(x, text):
    """Issue 15, defect 6: a member size of 4096 was labelled 'N = 4.1e+03'."""
    from pocoviz.ui.ensembles import _fmt

    assert _fmt(x) == text

"""Random-feature ensembles (spec rf_ensembles.md): the deterministic-equivalent theory against its
closed form and the spec's check tables, the scaling exponents, and the exact simulation against
direct solves and against the theory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocoviz.ensembles import (
    ell_star,
    ensemble_risk,
    fit_exponent,
    optimal_risk,
    power_law_task,
    scaling_curves,
    scaling_exponent,
    simulate_ensembles,
    solve_kappa,
)
from pocoviz.ensembles.simulate import _member_readouts

#: spec §4.1: α = 1.2, r = 0.4, D = 10⁴, M = 1024, optimal ridge; rows P = 128, 1024, 8192
TABLE_41 = np.array([
    [0.03044, 0.03178, 0.03506, 0.04068, 0.04992, 0.07945, 0.14349, 0.25679],
    [0.01151, 0.01335, 0.01627, 0.02343, 0.04023, 0.07450, 0.14010, 0.25440],
    [0.00765, 0.00967, 0.01369, 0.02214, 0.03945, 0.07396, 0.13969, 0.25410],
])  # fmt: skip
KS_41 = np.array([1, 2, 4, 8, 16, 32, 64, 128.0])
PS_41 = np.array([128, 1024, 8192.0])


def test_isotropic_closed_form():
    """s = 1/D, Σ s w̄² = 1, P → ∞, λ → 0: E_1 = 1 − N/D, E_∞ = (1 − N/D)², E_K = E_∞ + (N/D)(1 − N/D)/K."""
    D = 1000
    s, w2 = np.full(D, 1 / D), np.ones(D)
    for (N, K), want in {(250, 4): 0.609375, (500, 2): 0.375, (100, 1): 0.9}.items():
        assert ensemble_risk(s, w2, np.inf, N, K, 0.0).total == pytest.approx(want, abs=1e-7)
    N = np.array([10, 100, 333, 700, 990.0])[:, None]
    K = np.array([1, 3, 8.0])[None, :]
    r = ensemble_risk(s, w2, np.inf, N, K, 0.0)
    q = N / D
    np.testing.assert_allclose(r.bias, np.broadcast_to((1 - q) ** 2, r.bias.shape), atol=1e-7)
    np.testing.assert_allclose(r.bias + r.variance, np.broadcast_to(1 - q, r.bias.shape), atol=1e-7)
    np.testing.assert_allclose(r.total, (1 - q) ** 2 + q * (1 - q) / K, atol=1e-7)
    np.testing.assert_allclose(D * r.kappa, np.broadcast_to((D - N) / N, r.kappa.shape), rtol=1e-7)


def test_spec_table_41_to_three_significant_figures():
    s, w2 = power_law_task(1.2, 0.4, 10_000)
    risk, ridge = optimal_risk(s, w2, PS_41[:, None], 1024 / KS_41[None, :], KS_41[None, :])
    np.testing.assert_allclose(risk.total, TABLE_41, rtol=1e-3)
    # no free lunch: at the optimal ridge the risk rises with K at fixed M, for every P
    assert (np.diff(risk.total, axis=1) > 0).all()
    np.testing.assert_allclose(risk.total, risk.bias + risk.variance / KS_41, rtol=1e-12)
    assert (ridge >= 0).all()


@pytest.mark.parametrize("alpha,r,P,noise", [(1.5, 0.8, 500, 0.0), (2.0, 0.3, 64, 0.2), (1.1, 1.3, 4096, 0.0), (1.5, 0.8, 100, 0.5)])
def test_optimal_risk_increases_with_K_at_fixed_budget(alpha, r, P, noise):
    s, w2 = power_law_task(alpha, r, 1000)
    K = 2.0 ** np.arange(7)
    risk, _ = optimal_risk(s, w2, P, 512 / K, K, noise)
    assert (np.diff(risk.total) > 0).all(), risk.total


def test_optimal_ridge_beats_every_grid_ridge():
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = np.array([1, 4, 16.0])
    risk, ridge = optimal_risk(s, w2, 300, 256 / K, K)
    dense = ensemble_risk(s, w2, 300, (256 / K)[:, None], K[:, None], np.logspace(-8, 4, 3000)[None, :]).total
    assert (risk.total <= dense.min(1) * (1 + 1e-6)).all()
    np.testing.assert_allclose(ensemble_risk(s, w2, 300, 256 / K, K, ridge).total, risk.total, rtol=1e-10)


def test_kappa_solves_the_self_consistent_equation_on_the_physical_branch():
    s, w2 = power_law_task(1.5, 0.8, 2000)
    P = np.array([50, 500, 5000.0])[:, None, None]
    N = np.array([20, 400, 3000.0])[None, :, None]
    lam = np.array([1e-5, 1e-3, 1.0, 100.0])[None, None, :]
    k = solve_kappa(s, P, N, lam)
    df1 = (s / (s + k[..., None])).sum(-1)
    np.testing.assert_allclose(k * (1 - df1 / P) * (1 - df1 / N), np.broadcast_to(lam / P, k.shape), rtol=1e-4)  # naive residual: cancellation
    assert (df1 < np.minimum(N, P)).all()


def test_ridgeless_risk_diverges_at_the_interpolation_threshold():
    s, w2 = power_law_task(1.5, 0.8, 1000)
    assert np.isinf(ensemble_risk(s, w2, 200, 200, 1, 0.0).total)
    assert np.isfinite(ensemble_risk(s, w2, 200, 200, 1, 1e-2).total)
    near = ensemble_risk(s, w2, 200, np.array([150, 190, 199.0]), 1, 0.0).total
    assert (np.diff(near) > 0).all()  # rising towards the threshold


def test_power_law_task_normalisation():
    s, w2 = power_law_task(1.5, 0.8, 500)
    assert s.sum() == pytest.approx(1.0) and (s * w2).sum() == pytest.approx(1.0)
    k = np.arange(1, 501)
    power = s * w2
    np.testing.assert_allclose(power / power[0], k ** -(1 + 2 * 1.5 * 0.8), rtol=1e-10)
    with pytest.raises(ValueError, match="alpha"):
        power_law_task(-1, 0.5, 10)
    with pytest.raises(ValueError, match="D must be"):
        power_law_task(1.5, 0.5, 10.5)


def test_bad_inputs_name_the_field():
    s, w2 = power_law_task(1.5, 0.8, 100)
    with pytest.raises(ValueError, match="P must be positive"):
        ensemble_risk(s, w2, -5, 10, 1, 0.1)
    with pytest.raises(ValueError, match="ridge must be"):
        ensemble_risk(s, w2, 50, 10, 1, np.nan)
    with pytest.raises(ValueError, match="spectrum and target_sq"):
        ensemble_risk(s, w2[:-1], 50, 10, 1, 0.1)
    with pytest.raises(ValueError, match="spectrum must be positive"):
        ensemble_risk(-s, w2, 50, 10, 1, 0.1)
    with pytest.raises(ValueError, match="N must be positive integers"):
        simulate_ensembles(s, w2, 50, [2.5], [1], [0.1])
    with pytest.raises(ValueError, match="ridges must be"):
        simulate_ensembles(s, w2, 50, [2], [1], [-1.0])


def test_scaling_exponent_formulas():
    assert ell_star(1.5, 0.8) == pytest.approx(0.526, abs=5e-4) and ell_star(1.5, 1.2) == pytest.approx(0.40)
    assert np.isnan(ell_star(1.5, 0.4))
    for alpha, r in ((1.5, 0.8), (1.5, 1.2), (2.0, 0.7)):
        ls = ell_star(alpha, r)
        # the two lines cross at ℓ*, bias-limited below it, variance-limited above
        assert 2 * alpha * ls * min(r, 1) == pytest.approx((1 - ls) + 2 * alpha * ls * 0.5)
        assert scaling_exponent(ls / 2, alpha, r) == pytest.approx(2 * alpha * (ls / 2) * min(r, 1))
        assert scaling_exponent((1 + ls) / 2, alpha, r) == pytest.approx(1 + (alpha - 1) * (1 + ls) / 2)
        assert scaling_exponent(1.0, alpha, r) == pytest.approx(alpha)  # r >= 1/2: s(1) = α
    assert scaling_exponent(1.0, 1.5, 0.3) == pytest.approx(2 * 1.5 * 0.3)
    assert scaling_exponent(0.5, 1.5, 0.3) == pytest.approx(0.5 * scaling_exponent(1.0, 1.5, 0.3))  # hard tasks: ℓ·s(1)
    M = np.logspace(2, 4, 7)
    np.testing.assert_allclose(fit_exponent(M, 3.0 * M**-1.3), 1.3)


def test_spec_scaling_anchors_and_fitted_exponents():
    """Spec §4.2 (α = 1.5, r = 0.8, D = 30 000, P = 15 000): E*(316) = 9.46e−4, E*(3162) = 2.81e−5 at
    ℓ = 1; exponents fitted over M ∈ [316, 3162] 1.30, 1.42, 1.53 at ℓ = 0.6, 0.8, 1.0 (formula 1.30,
    1.40, 1.50: the variance-limited branch)."""
    s, w2 = power_law_task(1.5, 0.8, 30_000)
    risk, _ = optimal_risk(s, w2, 15_000, np.array([316.0, 3162.0]), 1.0)
    np.testing.assert_allclose(risk.total, [9.46e-4, 2.81e-5], rtol=2e-3)
    out = scaling_curves(1.5, 0.8, [0.6, 0.8, 1.0], np.logspace(2.5, 3.5, 6), P=15_000, D=30_000)
    np.testing.assert_allclose(out["fitted"], [1.30, 1.42, 1.53], atol=0.006)
    assert np.abs(out["fitted"] - scaling_exponent([0.6, 0.8, 1.0], 1.5, 0.8)).max() < 0.035


def test_member_readouts_equal_direct_ridge_solves():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    lam = torch.tensor([1e-3, 0.5, 20.0], dtype=torch.float64)
    for n in (12, 45):  # P >= N (primal eigenbasis) and P < N (dual)
        phi = torch.randn(3, 30, n, generator=g, dtype=torch.float64)
        V = _member_readouts(phi, y, lam)
        for k in range(3):
            for j, l in enumerate(lam):
                want = torch.linalg.solve(phi[k].T @ phi[k] + l * torch.eye(n, dtype=torch.float64), phi[k].T @ y)
                torch.testing.assert_close(V[k, :, j], want, rtol=1e-8, atol=1e-10)


def test_simulation_matches_spec_table_44():
    """Spec §4.4 (α = 1.5, r = 0.8, D = 2000, 5 seeds): sim 0.0056 / 0.0202 (P 400, N 100, K 1, λ 0.1 / 10),
    0.0017 / 0.0151 (K 4), 0.0004 / 0.0035 (P 1000, N 200, K 8, λ 1 / 10)."""
    s, w2 = power_law_task(1.5, 0.8, 2000)
    a = simulate_ensembles(s, w2, 400, [100, 100], [1, 4], [0.1, 10.0], seeds=5)
    b = simulate_ensembles(s, w2, 1000, [200], [8], [1.0, 10.0], seeds=5)
    got = np.concatenate([a.mean.ravel(), b.mean.ravel()])
    np.testing.assert_allclose(got, [0.0056, 0.0202, 0.0017, 0.0151, 0.0004, 0.0035], rtol=0.1, atol=5e-5)
    th = np.concatenate([
        ensemble_risk(s, w2, 400, 100, np.array([[1.0], [4.0]]), np.array([[0.1, 10.0]])).total.ravel(),
        ensemble_risk(s, w2, 1000, 200, 8, np.array([1.0, 10.0])).total,
    ])  # fmt: skip
    np.testing.assert_allclose(got, th, rtol=0.12)


def test_theory_inside_the_simulation_error_bars():
    """D = 1000, P = 500, M = 512, K = 1..64, at each configuration's optimal ridge: the theory lies
    within the markers' error bars (± one standard deviation over 8 seeds)."""
    s, w2 = power_law_task(1.5, 0.8, 1000)
    K = 2 ** np.arange(7)
    sim = simulate_ensembles(s, w2, 500, 512 // K, K, np.logspace(-4, 3, 20), seeds=8)
    mean, sd, _ = sim.optimal()
    th, _ = optimal_risk(s, w2, 500, 512 / K, K)
    assert (np.abs(mean - th.total) <= sd).all(), np.round((mean - th.total) / sd, 2)
    assert (np.diff(mean) > 0).all()  # and the simulation shows no free lunch too


def test_simulation_seeds_merge_stop_progress_and_relu():
    s, w2 = power_law_task(1.5, 0.8, 200)
    kw = dict(P=100, N=[32, 8], K=[1, 4], ridges=[0.01, 1.0])
    a = simulate_ensembles(s, w2, **kw, seeds=[0, 1])
    b = simulate_ensembles(s, w2, **kw, seeds=[1])
    np.testing.assert_array_equal(a.risk[1], b.risk[0])  # a seed fixes data and features
    m = simulate_ensembles(s, w2, **kw, seeds=[0]).merge(b)
    np.testing.assert_array_equal(m.risk, a.risk) and m.seeds == [0, 1]
    seen = []
    simulate_ensembles(s, w2, **kw, seeds=2, progress=seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0]
    calls = []
    assert simulate_ensembles(s, w2, **kw, seeds=2, should_stop=lambda: calls.append(1) or len(calls) > 2) is None
    relu = simulate_ensembles(s, w2, **kw, seeds=1, features="relu", n_test=2000)
    assert np.isfinite(relu.risk).all() and (relu.risk > 0).all() and (relu.risk < 2).all()
    noisy = simulate_ensembles(s, w2, **kw, seeds=[0], noise=0.3)
    assert (noisy.risk >= 0.09).all()  # the test-label noise σ² is part of the risk

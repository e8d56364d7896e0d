"""Sequence memories (spec seq_hopfield.md): the theory table, the paper's Fig. 1 and Fig. 4A
behaviour, the pseudoinverse rule on correlated patterns, and the batched fields against a direct
computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocoviz.seqmem import (
    BETA,
    BipartiteNet,
    DenseNet,
    MixedNet,
    PseudoinverseNet,
    capacity_estimate,
    capacity_paper_protocol,
    capacity_theory,
    digit_patterns,
    random_patterns,
    recall,
    success_rates,
    transitions_ok,
)


def test_theory_table_23():
    assert BETA == pytest.approx(np.exp(2) / np.cosh(2)) and BETA == pytest.approx(1.964028, abs=1e-6)
    t2, t3 = capacity_theory("dense", 100, 2), capacity_theory("dense", 100, 3)
    assert float(t2["P_T"]) == pytest.approx(361.9, abs=0.05) and float(t2["P_S"]) == pytest.approx(120.6, abs=0.05)
    assert float(t3["P_T"]) == pytest.approx(7238.2, abs=0.05) and float(t3["P_S"]) == pytest.approx(1809.6, abs=0.05)
    t1 = capacity_theory("dense", [10, 300], 1)
    np.testing.assert_allclose(t1["P_T"], [2.2, 26.3], atol=0.05)
    np.testing.assert_allclose(t1["P_S"], [1.1, 13.1], atol=0.05)
    e = capacity_theory("dense", [10, 15, 20, 25, 30], "exp")
    np.testing.assert_allclose(np.log10(e["P_T"]), [1.975, 3.370, 4.792, 6.227, 7.669], atol=5e-4)
    np.testing.assert_allclose(np.log10(e["P_S"]), [1.508, 2.798, 4.138, 5.507, 6.894], atol=5e-4)
    # polynomial P_T / P_S = d + 1
    for d in (1, 2, 3, 4):
        t = capacity_theory("dense", 50, d)
        assert float(t["P_T"] / t["P_S"]) == pytest.approx(d + 1)
    m = capacity_theory("mixed", 100, 2, lam=2.5)
    assert float(m["P_T"]) == pytest.approx(1.5**2 * 100**2 / (2 * (7.25 * 3 + 2 * 2.5) * np.log(100)))
    with pytest.raises(ValueError, match="λ > 1"):
        capacity_theory("mixed", 100, 2, lam=0.5)


def test_fig1_seqnet_fails_at_once_dense_d2_recalls_all_100():
    X = random_patterns(300, 100, seed=0)
    seq = recall(DenseNet(X, 1), 100)
    dense = recall(DenseNet(X, 2), 100)
    assert seq.first_error == 1 and seq.overlaps[np.arange(101), seq.target][1:].mean() < 0.2  # spec: mean target overlap 0.08
    assert dense.first_error is None
    np.testing.assert_allclose(dense.overlaps[np.arange(101), dense.target], 1.0)
    assert dense.visits() == [(i, 1) for i in range(100)] + [(0, 1)]


def test_fig4a_mixednet_d10_keeps_order_and_dwells_tau_steps():
    X = random_patterns(100, 40, seed=0)
    d10 = recall(MixedNet(X, 10, lam=2.5, tau=5), 200)
    assert d10.first_error is None  # the target is ⌊t/τ⌋ mod P: order and timing exact
    assert d10.visits()[:40] == [(i, 5) for i in range(40)]
    d2 = recall(MixedNet(X, 2, lam=2.5, tau=5), 200)
    runs = d2.visits()
    assert [i for i, _ in runs[:10]] == list(range(10))  # the right order ...
    assert {n for _, n in runs[:10]} <= {3, 4} and d2.first_error is not None  # ... but too early
    d1 = recall(MixedNet(X, 1, lam=2.5, tau=5), 200)
    assert len(d1.visits()) <= 1  # TAN with τ = 5 never reaches the next pattern


def test_dense_fields_exclude_self_coupling():
    rng = np.random.default_rng(0)
    N, P = 12, 7
    X = torch.as_tensor(rng.choice([-1.0, 1.0], (P, N)))
    S = torch.as_tensor(rng.choice([-1.0, 1.0], (3, N)))
    Xn = torch.roll(X, -1, 0)
    for degree in (1, 2, 3, "exp"):
        h = DenseNet(X, degree).fields(S)
        want = torch.zeros(3, N, dtype=torch.float64)
        for b in range(3):
            for i in range(N):
                others = [j for j in range(N) if j != i]
                m = (X[:, others] @ S[b, others]) / (N - 1)
                f = torch.exp((N - 1) * (m - 1)) if degree == "exp" else m**degree
                want[b, i] = (Xn[:, i] * f).sum()
        torch.testing.assert_close(h, want, rtol=1e-12, atol=1e-15)


def test_transitions_ok_is_the_one_step_recall():
    X = random_patterns(40, 60, seed=3)
    ok = transitions_ok(X, 2, chunk=16)
    nxt = DenseNet(X, 2).step(X)
    assert torch.equal(ok, (nxt == torch.roll(X, -1, 0)).all(1))
    batch = random_patterns(40, 60, seed=3, batch=2)
    assert transitions_ok(batch, 2).shape == (2, 60)


def test_pseudoinverse_recalls_independent_correlated_patterns_exactly():
    for eps in (0.5, 0.7, 0.9):
        X = random_patterns(100, 50, bias=eps, seed=1)
        gpi = PseudoinverseNet(X, 3)
        assert gpi.rank == 50
        assert recall(gpi, 50).first_error is None
    X = random_patterns(100, 20, bias=0.7, seed=1)
    assert recall(DenseNet(X, 3), 20).first_error is not None  # the plain rule fails on them
    digits, labels = digit_patterns(40)
    assert list(labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1] and len(torch.unique(digits, dim=0)) == 40
    for d in (1, 2, 3):
        gpi = PseudoinverseNet(digits, d)
        assert gpi.rank == 40 and recall(gpi, 40).first_error is None
        assert recall(DenseNet(digits, d), 40).first_error is not None


def test_bipartite_form_and_gating():
    X = random_patterns(200, 30, seed=2)
    net = BipartiteNet(X, 2)
    assert recall(net, 30).first_error is None
    gate = torch.ones(30, dtype=torch.float64)
    gate[4] = 0.0  # silence memory neuron 4: the transition ξ^5 -> ξ^6 is gone
    r = recall(BipartiteNet(X, 2, gate=gate), 10)
    assert r.first_error == 5 and r.visits()[:5] == [(i, 1) for i in range(5)]


def test_success_rate_at_theory_capacity_and_estimates():
    """Spec §2.5: at theory P_T (d = 2, N = 100) about 0.86 of transitions are exact; at theory P_S
    every sequence is recalled."""
    t, s = success_rates(100, 362, 2, n_seq=10)
    assert 0.8 < t < 0.95 and s == 0.0
    t, s = success_rates(100, 120, 2, n_seq=10)
    assert t == 1.0 and s == 1.0
    est = capacity_estimate(60, 2, n_seq=6)
    assert est["theory_P_S"] / 2 < est["P_S"] < est["P_T"] < 2 * est["theory_P_T"]
    assert (np.diff(est["grid"]) > 0).all() and est["trans_ok"][0] == 1.0
    p = capacity_paper_protocol(50, 1, "transition")
    assert 1 <= p <= 2 * float(capacity_theory("dense", 50, 1)["P_T"]) + 1


def test_bad_input():
    with pytest.raises(ValueError, match="±1"):
        DenseNet(torch.zeros(5, 10))
    with pytest.raises(ValueError, match="degree"):
        DenseNet(random_patterns(10, 5), 0)
    with pytest.raises(ValueError, match="bias"):
        random_patterns(10, 5, bias=1.0)
    with pytest.raises(ValueError, match="distinct binarised digits"):
        digit_patterns(5000)
    with pytest.raises(ValueError, match="c must be"):
        capacity_estimate(20, 2, c=1.5)

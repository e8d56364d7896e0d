"""Transformer limits (spec transformer_limits.md): the parameterization, and the acceptance checks
of §4.5 on the shipped sweeps (assets/limits), which a re-run reproduces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocoviz.limits import CentredModel, LimitsConfig, LimitsTransformer, learning_rates, load_sweep, sweep_runs, teacher_task, train_run
from pocoviz.limits.sweep import BATCH, STEPS, single_thread


def slope(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def test_learning_rates_follow_the_parameterization():
    eta = 0.5 * 0.5**2 * 32  # η0 γ0² n at N = 8, H = 4
    lr = learning_rates(LimitsConfig(N=8, H=4, L=8, alpha_A=1.0, alpha_L=1.0))
    assert lr["W_in"] == lr["w_out"] == lr["P"] == pytest.approx(eta)
    assert lr["V"] == lr["W1"] == pytest.approx(eta * 4)  # (L/L0)^(2αL−1) = 4
    assert lr["Q"] == lr["K"] == pytest.approx(eta * 4)  # N^(2αA−2) = 1
    lr = learning_rates(LimitsConfig(N=8, H=4, L=8, alpha_A=0.5, alpha_L=0.5))
    assert lr["V"] == pytest.approx(eta) and lr["K"] == pytest.approx(eta / 8)  # no depth factor; 1/N for W_Q, W_K


def test_model_scalings_at_initialisation():
    x, _ = teacher_task(8)
    model = CentredModel(LimitsConfig())
    assert torch.equal(model(x), torch.zeros(8, 1))  # the output is centred on its initial value
    names = {n for n, _ in model.net.named_parameters()}
    assert names == {"W_in", "P", "Q", "K", "V", "O", "W1", "W2", "w_out"}  # no LN gains, no biases
    assert abs(float(model.net.Q.detach().std()) - 1.0) < 0.02
    # the logits' variance across heads scales as N^(1−2αA) at initialisation
    var = {}
    for a in (1.0, 0.5):
        for N in (4, 64):
            with torch.no_grad():
                _, A = LimitsTransformer(LimitsConfig(N=N, H=64, L=1, alpha_A=a), seed=0)(x, return_attention=True)
            var[a, N] = float(A.var(dim=2).mean())
    assert 8 < var[1.0, 4] / var[1.0, 64] < 32  # 16 expected
    assert 0.5 < var[0.5, 4] / var[0.5, 64] < 2  # flat


def test_training_is_deterministic_and_learns():
    cfg = LimitsConfig(N=4, H=2, L=2)
    a = train_run(cfg, steps=60, seed=3)
    b = train_run(cfg, steps=60, seed=3)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert a.loss[-3:].mean() < 0.8 * a.loss[:2].mean()
    assert a.dWK.shape == (2,) and (a.dWK > 0).all() and a.A_heads_init.shape == (2,)


@pytest.fixture(scope="module")
def sweeps():
    return {name: load_sweep(name) for name in ("N", "lr", "H", "L")}


def test_head_variance_vs_N(sweeps):
    """§4.5: the log-log slope of the logits' variance across heads vs N is <= −0.8 for αA = 1 and
    flat (|slope| < 0.3) for αA = ½, after training."""
    ds = sweeps["N"]
    for a, check in ((1.0, lambda s: s <= -0.8), (0.5, lambda s: abs(s) < 0.3)):
        sel = ds.where(ds.alpha_A == a, drop=True)
        by_N = sel.head_var_final.groupby(sel.N).mean()
        s = slope(by_N.N, by_N)
        assert check(s), (a, s, by_N.values)


def test_learning_rate_transfers_across_N_for_muP_logits(sweeps):
    """§4.5: the loss-optimal η0 (final training loss, mean of the last 20 steps) is the same for
    every N with αA = 1."""
    ds = sweeps["lr"]
    sel = ds.where(ds.alpha_A == 1.0, drop=True)
    final = sel.loss.isel(step=slice(-4, None)).mean("step")
    best = {int(N): float(sel.eta0.values[sel.N.values == N][np.nanargmin(final.values[sel.N.values == N])]) for N in np.unique(sel.N)}
    assert len(set(best.values())) == 1, best


def test_key_weights_keep_moving_with_depth_only_for_alpha_L_1(sweeps):
    """§4.5: ‖ΔW_K‖/‖W_K(0)‖ vs L is flat (within 1.5x from L = 4 to 32) for αL = 1 and falls for
    αL = ½: as L^−½ per step (the first step's update: the scaling argument), and at least as fast
    over the 300 steps (measured about L^−0.8: deeper αL = ½ networks also fit less)."""
    ds = sweeps["L"]
    move, first = {}, {}
    for a in (1.0, 0.5):
        sel = ds.where(ds.alpha_L == a, drop=True)
        move[a] = sel.dWK.mean("layer", skipna=True).groupby(sel.L).mean()
        first[a] = sel.dWK_first.mean("layer", skipna=True).groupby(sel.L).mean()
    flat = move[1.0].sel(L=move[1.0].L >= 4)
    assert float(flat.max() / flat.min()) < 1.5, flat.values
    assert abs(slope(first[1.0].L, first[1.0])) < 0.25, first[1.0].values  # one batch: noisy, but no trend
    s_first = slope(first[0.5].L, first[0.5])
    assert -0.7 < s_first < -0.35, (s_first, first[0.5].values)
    s_trained = slope(move[0.5].L, move[0.5])
    assert s_trained < -0.35, (s_trained, move[0.5].values)


def test_output_spread_across_seeds_falls_as_one_over_H(sweeps):
    ds = sweeps["H"]
    spread = ds.f_probe.groupby(ds.H).var("run").mean("probe")
    s = slope(spread.H, spread)
    assert -1.3 < s < -0.7, (s, spread.values)


def test_rerunning_the_sweep_reproduces_the_shipped_numbers(sweeps):
    for name, index in (("H", 6), ("L", 0), ("N", 0)):
        cfg, seed = sweep_runs(name)[index]
        with single_thread():  # as the sweep command
            r = train_run(cfg, steps=STEPS, batch=BATCH, seed=seed, device="cpu")
        shipped = sweeps[name].isel(run=index)
        assert int(shipped.seed) == seed and int(shipped.N) == cfg.N and int(shipped.H) == cfg.H and int(shipped.L) == cfg.L
        np.testing.assert_allclose(r.loss, shipped.loss.values[: len(r.loss)], rtol=1e-6)
        np.testing.assert_allclose(r.dWK, shipped.dWK.values[: cfg.L], rtol=1e-5)
        np.testing.assert_allclose(r.dWK_first, shipped.dWK_first.values[: cfg.L], rtol=1e-5)
        assert r.head_var_final == pytest.approx(float(shipped.head_var_final), rel=1e-5)


def test_tiny_vit_on_the_bundled_digits_learns():
    cfg = LimitsConfig(N=8, H=4, L=2, D_in=4, S=16, n_out=10)
    r = train_run(cfg, task="digits", steps=100, batch=32)
    assert r.loss[0] == pytest.approx(np.log(10), abs=0.05)  # centred output: uniform at init
    assert r.loss[-2:].mean() < 0.9 * np.log(10) and r.f_probe.shape == (64, 10)  # 2.30 -> about 1.9 in 100 steps
    with pytest.raises(ValueError, match="digits task needs"):
        train_run(LimitsConfig(), task="digits", steps=1)

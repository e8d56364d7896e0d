"""The curves behind the Ensembles tab's five views (spec ``rf_ensembles.md`` §5), as plain arrays:
what the tab draws, and what ``pocoviz bench`` times. No UI imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .simulate import Simulation, simulate_ensembles
from .theory import bias_exponent, ell_star, ensemble_risk, optimal_risk, power_law_task, scaling_exponent, variance_exponent

#: the ridge grid of the E-vs-λ view (sum-loss units) and of the simulations
THEORY_RIDGES = np.logspace(-4, 3, 36)
SIM_RIDGES = np.logspace(-4, 3, 20)
#: growth exponents and budgets of the scaling view (N = M^ℓ, K = M^(1−ℓ), fractional)
ELLS = (0.2, 0.4, 0.6, 0.8, 1.0)
SCALING_M = np.logspace(2, 3, 8)
SCALING_P = 1e5
#: D = 16 max M: fitted slopes at ℓ = 1 (α 1.5, r 0.8; formula 1.50) are 1.66 at D = 4 max M, 1.59 at 8, 1.55 at 16
SCALING_D = 16 * int(SCALING_M.max())
#: smallest member width in the K sweep
MIN_N = 8
#: a fitted slope "agrees" with s(ℓ) when within this much (the finite-size spread in the variance-
#: limited branch, spec §4.2: 0.03 at α 1.5; up to 0.1 at α 1.25 near ℓ* and at ℓ = 1)
SCALING_TOL = 0.1


@dataclass(frozen=True)
class TabParams:
    """The Ensembles tab's settings (spec §5 defaults). ``ridge`` None: the optimal ridge."""

    alpha: float = 1.5
    r: float = 0.8
    noise: float = 0.0
    D: int = 1000
    P: int = 500
    M: int = 512
    ridge: float | None = None

    def task(self) -> tuple[np.ndarray, np.ndarray]:
        return power_law_task(self.alpha, self.r, self.D)


def k_values(M: int) -> np.ndarray:
    """Ensemble sizes of the K sweep: powers of two dividing M with members of at least MIN_N features."""
    K = 2 ** np.arange(0, int(np.log2(M)) + 1)
    K = K[(M % K == 0) & (M // K >= MIN_N)]
    return K if len(K) else np.array([1])


def regime_P(regime: str, M: int) -> int:
    """Sample counts of the regime toggle: ``over`` (N > P for K < 16: P = M/16) and ``under``
    (P = 8M, so N ≪ P for every K)."""
    if regime == "over":
        return int(max(8, M // 16))
    if regime == "under":
        return int(8 * M)
    raise ValueError(f"regime must be 'over' or 'under', got {regime!r}")


def _at(p: TabParams, s: np.ndarray, w2: np.ndarray, P: Any, N: Any, K: Any) -> tuple[Any, np.ndarray]:
    if p.ridge is None:
        return optimal_risk(s, w2, P, N, K, p.noise)
    risk = ensemble_risk(s, w2, P, N, K, p.ridge, p.noise)
    return risk, np.broadcast_to(np.asarray(p.ridge, dtype=float), risk.total.shape)


def curves_vs_K(p: TabParams) -> dict[str, np.ndarray]:
    """View 1: E vs K at fixed M, at P/8, P and 8P (rows), with bias and Var/K, at the optimal or
    the fixed ridge. Also the best K per row."""
    s, w2 = p.task()
    K = k_values(p.M).astype(float)
    Ps = np.array([p.P / 8, p.P, 8 * p.P], dtype=float)
    risk, ridge = _at(p, s, w2, Ps[:, None], p.M / K[None, :], K[None, :])
    total = risk.total
    return {
        "K": K, "N": p.M / K, "P": Ps, "total": total, "bias": risk.bias, "var_over_K": risk.variance / K, "ridge": ridge,
        "best_K": K[np.nanargmin(np.where(np.isfinite(total), total, np.nan), axis=1)],
    }  # fmt: skip


def curves_vs_ridge(p: TabParams) -> dict[str, np.ndarray]:
    """View 2: E vs λ (sum-loss) for each K at the chosen P and M."""
    s, w2 = p.task()
    K = k_values(p.M).astype(float)
    risk = ensemble_risk(s, w2, p.P, (p.M / K)[:, None], K[:, None], THEORY_RIDGES[None, :], p.noise)
    return {"K": K, "ridge": THEORY_RIDGES, "total": risk.total}


def curves_regime(p: TabParams) -> dict[str, np.ndarray]:
    """View 5: E(K)/E(1) at fixed M in the overparameterized (P = M/16) and underparameterized
    (P = 8M) regimes."""
    s, w2 = p.task()
    K = k_values(p.M).astype(float)
    Ps = np.array([regime_P("over", p.M), regime_P("under", p.M)], dtype=float)
    risk, _ = _at(p, s, w2, Ps[:, None], p.M / K[None, :], K[None, :])
    return {"K": K, "P": Ps, "relative": risk.total / risk.total[:, :1], "total": risk.total}


def curves_scaling(p: TabParams, D: int = SCALING_D) -> dict[str, np.ndarray]:
    """Views 3 and 4: optimal-ridge E vs M along N = M^ℓ (fractional; P = 10⁵, D = 16 max M), the
    fitted slopes, and the theory lines of s(ℓ) with ℓ*.

    The sizes are the scaling law's, not the tab's P and D: s(ℓ) holds for N ≪ P and an untruncated
    spectrum (D ≫ M). Per ℓ the result also has ``theory`` (s(ℓ)), the member widths ``N_min``,
    ``N_max`` over the M range, ``local_top`` (the slope over the last M step) and ``agrees``
    (|fit − s(ℓ)| ≤ SCALING_TOL). Where ℓ is small, members have a handful of features (N = M^0.2 is
    2.5–4 here) and the fit lies below s(ℓ), steepening with M towards it."""
    from .theory import scaling_curves

    out = scaling_curves(p.alpha, p.r, ELLS, SCALING_M, P=SCALING_P, D=D, noise=p.noise)
    ells = np.asarray(ELLS, dtype=float)
    theory = scaling_exponent(ells, p.alpha, p.r)
    lm = np.log(SCALING_M)
    # the slope over the last step of M: larger than the fit where the curve still steepens, i.e.
    # where the finite members (N = M^ℓ small) have not reached the power law yet
    local = -(np.log(out["risk"][:, -1]) - np.log(out["risk"][:, -2])) / (lm[-1] - lm[-2])
    out.update({
        "P": np.asarray(SCALING_P), "theory": theory, "local_top": local,
        "N_min": SCALING_M.min() ** ells, "N_max": SCALING_M.max() ** ells,
        "agrees": np.abs(out["fitted"] - theory) <= SCALING_TOL,
    })  # fmt: skip
    ell = np.linspace(0.0, 1.0, 101)
    out.update({
        "ell_line": ell, "bias_line": bias_exponent(ell, p.alpha, p.r), "var_line": variance_exponent(ell, p.alpha, p.r),
        "s_line": scaling_exponent(ell, p.alpha, p.r), "ell_star": np.asarray(ell_star(p.alpha, p.r)),
    })  # fmt: skip
    return out


def simulate_tab(p: TabParams, seeds: list[int], **kw: Any) -> Simulation | None:
    """The simulation markers of views 1 and 2: the K sweep at P (integer N = M/K), every ridge of
    SIM_RIDGES plus the fixed ridge if one is set."""
    s, w2 = p.task()
    K = k_values(p.M)
    ridges = SIM_RIDGES if p.ridge is None else np.unique(np.append(SIM_RIDGES, p.ridge))
    return simulate_ensembles(s, w2, int(p.P), p.M // K, K, ridges, p.noise, seeds=seeds, **kw)


def simulation_markers(sim: Simulation, ridge: float | None) -> dict[str, np.ndarray]:
    """Per K: the seed-mean risk and its ± one-standard-deviation bars, at the ridge that is best on
    average (optimal mode) or at the fixed ridge."""
    if ridge is None:
        mean, sd, at = sim.optimal()
    else:
        j = int(np.argmin(np.abs(np.log(sim.ridge) - np.log(ridge))))
        mean, sd, at = sim.mean[:, j], sim.std[:, j], np.full(len(sim.K), sim.ridge[j])
    return {"K": sim.K.astype(float), "mean": mean, "lower": mean - sd, "upper": mean + sd, "ridge": at, "n_seeds": np.asarray(len(sim.seeds))}

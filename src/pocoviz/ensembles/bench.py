"""Ensemble figures for ``pocoviz bench``: theory curves (the Ensembles tab's views) and the
default simulation sweep, on the backend device."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from .curves import SCALING_D, TabParams, curves_regime, curves_scaling, curves_vs_K, curves_vs_ridge
from .simulate import simulate_ensembles
from .theory import ensemble_risk, optimal_risk, power_law_task

#: the Ensembles tab's defaults (spec §5)
DEFAULTS = {"alpha": 1.5, "r": 0.8, "D": 1000, "P": 500, "M": 512, "n_ridges": 20, "seeds": 3}


def _timed(fn, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"first_ms": round(1000 * times[0], 2), "median_ms": round(1000 * statistics.median(times[1:] or times), 2)}


def bench_ensembles(quick: bool = False) -> dict[str, Any]:
    """Milliseconds per theory curve at the tab's defaults, and seconds for the default simulation
    sweep (K = 1..64 at M = 512, 20 ridges, 3 seeds, D = 1000, P = 500)."""
    from pocoviz.backend import get_device

    d = DEFAULTS
    s, w2 = power_law_task(d["alpha"], d["r"], d["D"])
    K = 2.0 ** np.arange(7)
    ridges = np.logspace(-4, 3, 30)
    out: dict[str, Any] = {"device": str(get_device()), "defaults": d}
    reps = 3 if quick else 10
    out["theory_E_vs_K_optimal_ridge_7K"] = _timed(lambda: optimal_risk(s, w2, d["P"], d["M"] / K, K), reps)
    out["theory_E_vs_ridge_7K_x_30"] = _timed(lambda: ensemble_risk(s, w2, d["P"], (d["M"] / K)[:, None], K[:, None], ridges[None, :]), reps)
    P_cmp = np.array([d["P"] / 8, d["P"], 8 * d["P"]])
    out["theory_E_vs_K_3P_optimal_ridge"] = _timed(lambda: optimal_risk(s, w2, P_cmp[:, None], d["M"] / K[None, :], K[None, :]), reps)
    p = TabParams()
    out["tab_theory_views_1_2_5"] = _timed(lambda: (curves_vs_K(p), curves_vs_ridge(p), curves_regime(p)), reps)
    out[f"tab_scaling_views_3_4_5ell_x_8M_D{SCALING_D}"] = _timed(lambda: curves_scaling(p), 2 if quick else 3)
    sim_ridges = np.logspace(-4, 3, d["n_ridges"])
    seeds = 1 if quick else d["seeds"]
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        simulate_ensembles(s, w2, d["P"], (d["M"] // K).astype(int), K.astype(int), sim_ridges, seeds=seeds)
        times.append(round(time.perf_counter() - t0, 3))
    out[f"simulation_default_sweep_{seeds}_seeds_s"] = {"first_s": times[0], "warm_s": times[1]}
    return out

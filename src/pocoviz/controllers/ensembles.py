"""The Ensembles tab's controller: its settings, the theory and simulation jobs, its URL state and
the snapshot of the five views (``pocoviz.ui.ensembles`` draws it). No panel, holoviews or bokeh.

Three job lanes: ``theory`` (views 1, 2, 5: at the sidebar's settings), ``scaling`` (views 3, 4:
only when α, r or σ_ε change; a quick pass at D/4, then the fine one) and ``simulate`` (seed by
seed, with progress). A newer request cancels the older one in its lane; results are stored only
by the job that is still current, so stale work is never shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param

from pocoviz.ensembles.curves import (
    SCALING_D,
    SCALING_M,
    SCALING_P,
    SCALING_TOL,
    TabParams,
    curves_regime,
    curves_scaling,
    curves_vs_K,
    curves_vs_ridge,
    regime_P,
    simulate_tab,
    simulation_markers,
)

from .base import Controller
from .jobs import Job
from .urlstate import UrlField

P_OPTIONS = [32, 64, 128, 256, 500, 1000, 2000, 4096]
M_OPTIONS = [32, 64, 128, 256, 512, 1024, 2048, 4096]
D_OPTIONS = [250, 500, 1000, 2000, 4000]
#: the simulation is exact but costs ~2PDM flops per seed: limited to D <= SIM_MAX_D
SIM_MAX_D = 2000
REGIMES = {"custom P": "custom", "N > P": "over", "N ≪ P": "under"}


def fmt(x: float) -> str:
    """Whole numbers as they are (N = 4096, not 4.1e+03); others to 3 significant digits."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.3g}"


def _width(n: float) -> str:
    return f"{float(n):.1f}" if n < 10 else f"{float(n):.0f}"


@dataclass
class ScalingRow:
    """One ℓ of views 3 and 4: the fitted slope against s(ℓ), the member widths it was fitted at,
    whether the two agree (within SCALING_TOL) and, where not, why."""

    ell: float
    fitted: float
    theory: float
    local_top: float
    N_min: float
    N_max: float
    agrees: bool
    why: str


@dataclass
class EnsemblesSnapshot:
    """What the Ensembles tab shows (arrays as the compute functions return them)."""

    params: TabParams
    theory: dict[str, Any] | None = None  # vs_K, vs_ridge, regime (views 1, 2, 5) and their params
    scaling: dict[str, Any] | None = None  # views 3, 4 (curves_scaling)
    scaling_rows: list[ScalingRow] = field(default_factory=list)
    scaling_sizes: str = ""  # the sizes views 3 and 4 use, in words
    refining: bool = False
    best_K: int | None = None
    verdict: str = ""
    ridge_note: str = ""
    markers: dict[str, np.ndarray] | None = None  # simulation, view 1
    sim_curves: dict[str, Any] | None = None  # simulation per K and ridge, view 2
    progress: float | None = None  # simulation progress while it runs
    status: str = ""
    notice: str = ""


class EnsemblesController(Controller):
    """The Ensembles tab's state (see module docstring)."""

    url_fields = (
        UrlField("alpha", "ens_alpha"),
        UrlField("r", "ens_r"),
        UrlField("noise", "ens_noise"),
        UrlField("D", "ens_D"),
        UrlField("M", "ens_M"),
        UrlField("regime", "ens_regime"),
        UrlField("P", "ens_P"),
        UrlField("ridge_mode", "ens_ridge"),
        UrlField("log_ridge", "ens_lam"),
        UrlField("simulate", "ens_sim"),
        UrlField("seeds", "ens_seeds"),
    )

    alpha = param.Number(default=1.5, bounds=(1.05, 3.0), doc="capacity exponent α (s_k ∝ k^−α)")
    r = param.Number(default=0.8, bounds=(0.1, 1.5), doc="source exponent r (mode power ∝ k^−(1+2αr))")
    noise = param.Number(default=0.0, bounds=(0.0, 0.5), doc="label noise σ_ε")
    D = param.Selector(default=1000, objects=D_OPTIONS, doc="input dimension (kernel rank), views 1, 2, 5")
    P = param.Selector(default=500, objects=P_OPTIONS, doc="training samples, views 1, 2")
    M = param.Selector(default=512, objects=M_OPTIONS, doc="total features M = K·N")
    ridge_mode = param.Selector(default="optimal", objects=["optimal", "fixed"])
    log_ridge = param.Number(default=0.0, bounds=(-4.0, 3.0), doc="log10 λ (sum-loss) when fixed")
    regime = param.Selector(default="custom", objects=REGIMES)
    seeds = param.Integer(default=3, bounds=(1, 16))
    simulate = param.Boolean(default=False, doc="simulate ensembles (markers ± 1 s.d. over seeds)")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._theory: dict[str, Any] | None = None
        self._scaling: dict[str, Any] | None = None
        self._sim: Any = None
        self._markers: dict[str, np.ndarray] | None = None
        self._sim_progress: float | None = None
        self._sim_note = ""
        self._start_theory()
        self._start_scaling()

    # ------------------------------------------------------------------ settings
    def tab_params(self) -> TabParams:
        return TabParams(
            alpha=float(self.alpha), r=float(self.r), noise=float(self.noise), D=int(self.D), P=int(self.P), M=int(self.M),
            ridge=None if self.ridge_mode == "optimal" else float(10**self.log_ridge),
        )  # fmt: skip

    @param.depends("alpha", "r", "noise", watch=True)
    def _on_task(self) -> None:
        self._start_theory()
        self._start_scaling()
        self._restart_simulation()

    @param.depends("D", "P", "M", "ridge_mode", "log_ridge", watch=True)
    def _on_setting(self) -> None:
        self._start_theory()
        self._restart_simulation()

    @param.depends("regime", watch=True)
    def _on_regime(self) -> None:
        if self.regime != "custom":
            self.P = self._regime_P()

    @param.depends("M", watch=True)
    def _keep_regime(self) -> None:
        if self.regime != "custom":
            self.P = self._regime_P()

    @param.depends("P", watch=True)
    def _leave_regime(self) -> None:
        # P set by hand away from the regime's value: the toggle says "custom P" again
        if self.regime != "custom" and self.P != self._regime_P():
            self.regime = "custom"

    def _regime_P(self) -> int:
        want = regime_P(self.regime, int(self.M))
        return min(P_OPTIONS, key=lambda p: abs(math.log(p / want)))

    @param.depends("simulate", "seeds", watch=True)
    def _on_simulate(self) -> None:
        self._restart_simulation()

    @param.depends("notice", watch=True)
    def _on_notice(self) -> None:
        self.changed()

    # ------------------------------------------------------------------ jobs
    def _start_theory(self) -> None:
        p = self.tab_params()

        def work(job: Job) -> None:
            res = {"vs_K": curves_vs_K(p), "vs_ridge": curves_vs_ridge(p), "regime": curves_regime(p), "params": p}
            self._store(job, _theory=res, _error="")

        self.jobs.start("theory", work, on_done=self._failed)

    def _start_scaling(self) -> None:
        p = self.tab_params()

        def work(job: Job) -> None:
            for i, D in enumerate((SCALING_D // 4, SCALING_D)):  # a quick pass (a quarter second), then the fine one
                job.report(i / 2, f"scaling at D = {D}")
                sc = curves_scaling(p, D=D)
                sc["params"] = p
                self._store(job, _scaling=sc)

        self.jobs.start("scaling", work, on_done=self._failed)

    def _restart_simulation(self) -> None:
        with self._lock:
            self._markers, self._sim, self._sim_progress, self._sim_note = None, None, None, ""
        p = self.tab_params()
        if not self.simulate:
            self.jobs.cancel("simulate")
            self.changed()
            return
        if p.D > SIM_MAX_D:
            self.jobs.cancel("simulate")
            self._sim_note = f"simulation limited to D ≤ {SIM_MAX_D} (D = {p.D}): theory only"
            self.changed()
            return
        n_seeds = int(self.seeds)

        def work(job: Job) -> None:
            from pocoviz.backend import configure_threads

            configure_threads()  # one BLAS thread on small machines: a 500 x 500 eigh is 10x slower with two
            sim = None
            self._store(job, _sim_progress=0.0)
            for i in range(n_seeds):

                def progress(f: float, i: int = i) -> None:
                    job.report((i + f) / n_seeds, f"seed {i + 1} of {n_seeds}")
                    self._store(job, _sim_progress=(i + f) / n_seeds)

                part = simulate_tab(p, [i], progress=progress, should_stop=lambda: job.cancelled)
                job.check()
                sim = part if sim is None else sim.merge(part)
                done = i + 1 == n_seeds
                self._store(job, _sim=sim, _markers=simulation_markers(sim, p.ridge), _sim_progress=None if done else (i + 1) / n_seeds)

        self.jobs.start("simulate", work, on_done=self._failed)
        self.changed()

    # ------------------------------------------------------------------ what is on screen
    def snapshot(self) -> EnsemblesSnapshot:
        p = self.tab_params()
        with self._lock:
            theory, scaling, sim, markers, progress = self._theory, self._scaling, self._sim, self._markers, self._sim_progress
            error, sim_note = self._error, self._sim_note
        snap = EnsemblesSnapshot(params=p, theory=theory, scaling=scaling, markers=markers, progress=progress, notice=self.notice)
        if p.ridge is None:
            snap.ridge_note = "ridge: optimal for each point (grid + zoom in log λ)"
        else:
            snap.ridge_note = f"λ = {fmt(p.ridge)} (sum loss), λ/P = {fmt(p.ridge / p.P)}"
        if theory is not None:
            best = int(theory["vs_K"]["best_K"][1])
            snap.best_K = best
            snap.verdict = "K = 1 optimal" if best == 1 else f"K = {best} optimal (mistuned ridge: see E vs λ)"
        if scaling is not None:
            snap.refining = int(scaling["D"]) < SCALING_D
            snap.scaling_rows = self._scaling_rows(scaling)
            snap.scaling_sizes = (
                f"P = {fmt(float(scaling['P']))}, D = {int(scaling['D'])}, M = {fmt(SCALING_M.min())}–{fmt(SCALING_M.max())} "
                "(the law's sizes, not the sidebar's P and D: s(ℓ) needs N ≪ P and D ≫ M)"
            )
        if sim is not None and markers is not None:
            snap.sim_curves = {"K": sim.K, "ridge": sim.ridge, "mean": sim.mean}
        n = 0 if sim is None else len(sim.seeds)
        if error:
            snap.status = error
        elif sim_note:
            snap.status = sim_note
        elif self.simulate and (progress is not None or sim is None):
            pct = int(round(100 * (progress or 0.0)))
            snap.status = f"simulating ensembles: {n}/{self.seeds} seeds ({pct}%)"
        elif self.simulate and sim is not None:
            snap.status = f"simulated {n} seed{'s' if n > 1 else ''} in {sim.seconds:.1f} s on {sim.meta.get('device', 'cpu')}"
        return snap

    @staticmethod
    def _scaling_rows(sc: dict[str, Any]) -> list[ScalingRow]:
        ls = float(sc["ell_star"])
        rows = []
        for i, ell in enumerate(sc["ell"]):
            fitted, theory, local = float(sc["fitted"][i]), float(sc["theory"][i]), float(sc["local_top"][i])
            agrees = bool(sc["agrees"][i])
            why = f"fit within {SCALING_TOL} of s(ℓ)"
            if not agrees:
                n = f"N = M^ℓ = {_width(sc['N_min'][i])}–{_width(sc['N_max'][i])} features per member"
                if np.isfinite(ls) and abs(ell - ls) < 0.1:
                    why = f"near the crossover ℓ* = {ls:.2f}, where bias and Var/K are both of size"
                elif fitted < theory:
                    why = f"{n}: too few for the N ≫ 1 law (κ ∝ N^−α); the slope steepens with M (last step {local:.2f}) towards s(ℓ)"
                else:
                    why = f"{n}: the spectrum is cut at D = {int(sc['D'])}, steepening the fit"
            rows.append(ScalingRow(float(ell), fitted, theory, local, float(sc["N_min"][i]), float(sc["N_max"][i]), agrees, why))
        return rows

    def wait_settled(self, timeout: float = 120.0) -> bool:
        """Block until no job runs (tests, notebooks)."""
        return self.jobs.wait_idle(timeout)


__all__ = ["D_OPTIONS", "EnsemblesController", "EnsemblesSnapshot", "M_OPTIONS", "P_OPTIONS", "REGIMES", "SCALING_P", "SIM_MAX_D", "fmt"]

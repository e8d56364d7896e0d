"""Ensembles tab: test risk of random-feature ridge ensembles at a fixed parameter budget
(spec ``rf_ensembles.md`` §5): theory lines (deterministic equivalent) against simulated ensembles.

Five views: (1) E vs K at fixed M for P/8, P and 8P, with bias and Var/K and simulation markers
(± one standard deviation over seeds); (2) E vs λ for each K; (3) E vs M along N = M^ℓ for several
ℓ, with fitted slopes; (4) the s(ℓ) diagram with ℓ*; (5) the over- vs under-parameterized contrast
E(K)/E(1), with a toggle that moves P into either regime.

Theory runs in one background job at a time (the latest settings win; the scaling views only when
α, r or σ_ε change) and simulations in another, seed by seed, with progress; plots are edited on the
session's event loop only.
"""

from __future__ import annotations

import html
import math
import threading
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.core.property.vectorization import value
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Span, Whisker
from bokeh.plotting import figure

from pocoviz.ensembles.curves import (
    SCALING_D,
    SCALING_P,
    TabParams,
    curves_regime,
    curves_scaling,
    curves_vs_K,
    curves_vs_ridge,
    regime_P,
    simulate_tab,
    simulation_markers,
)

from .base import TabView
from .jobs import LatestRunner
from .theme import REGION_PALETTE

P_OPTIONS = [32, 64, 128, 256, 500, 1000, 2000, 4096]
M_OPTIONS = [32, 64, 128, 256, 512, 1024, 2048, 4096]
D_OPTIONS = [250, 500, 1000, 2000, 4000]
#: the simulation is exact but costs ~2PDM flops per seed: limited to D <= SIM_MAX_D
SIM_MAX_D = 2000
REGIMES = {"custom P": "custom", "N > P": "over", "N ≪ P": "under"}
P_COLORS = ("#56B4E9", "#0072B2", "#003f6b")  # P/8, P, 8P
W, H = 470, 330
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _fmt(x: float) -> str:
    """Whole numbers as they are (N = 4096, not 4.1e+03); others to 3 significant digits."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.3g}"


def _finite(a: np.ndarray) -> np.ndarray:
    """NaN where a value cannot be drawn on a log axis (inf at the interpolation threshold, <= 0)."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


class EnsemblesView(TabView):
    """The Ensembles tab (see module docstring)."""

    css_prefix = "pocoviz-ens"

    alpha = param.Number(default=1.5, bounds=(1.05, 3.0), doc="capacity exponent α (s_k ∝ k^−α)")
    r = param.Number(default=0.8, bounds=(0.1, 1.5), doc="source exponent r (mode power ∝ k^−(1+2αr))")
    noise = param.Number(default=0.0, bounds=(0.0, 0.5), doc="label noise σ_ε")
    D = param.Selector(default=1000, objects=D_OPTIONS, doc="input dimension (kernel rank)")
    P = param.Selector(default=500, objects=P_OPTIONS, doc="training samples")
    M = param.Selector(default=512, objects=M_OPTIONS, doc="total features M = K·N")
    ridge_mode = param.Selector(default="optimal", objects=["optimal", "fixed"])
    log_ridge = param.Number(default=0.0, bounds=(-4.0, 3.0), doc="log10 λ (sum-loss) when fixed")
    regime = param.Selector(default="custom", objects=REGIMES)
    seeds = param.Integer(default=3, bounds=(1, 16))
    simulate = param.Boolean(default=False, doc="simulate ensembles (markers ± 1 s.d. over seeds)")
    status = param.String(default="")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self._runner = LatestRunner(self._work, "pocoviz-ens-theory")
        self._sim_thread: threading.Thread | None = None
        self._sim_gen = 0
        self._closed = False
        self.results: dict[str, Any] = {}
        self.sim_markers: dict[str, np.ndarray] | None = None
        self._build_plots()
        self._badge = pn.pane.HTML("", css_classes=["pocoviz-ens-badge"], sizing_mode="stretch_width")
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-ens-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._ridge_note = pn.pane.HTML("", css_classes=["pocoviz-ens-ridge"], width=260, styles={"font-size": "12px"})
        self._progress = pn.indicators.Progress(value=0, max=100, width=240, visible=False, css_classes=["pocoviz-ens-progress"])
        self._update_ridge_note()
        self._runner.request("theory", "scaling")

    # ------------------------------------------------------------------ parameters
    def params(self) -> TabParams:
        return TabParams(
            alpha=float(self.alpha), r=float(self.r), noise=float(self.noise), D=int(self.D), P=int(self.P), M=int(self.M),
            ridge=None if self.ridge_mode == "optimal" else float(10**self.log_ridge),
        )  # fmt: skip

    @param.depends("alpha", "r", "noise", watch=True)
    def _on_task(self) -> None:
        self._runner.request("theory", "scaling")
        self._restart_simulation()

    @param.depends("D", "P", "M", "ridge_mode", "log_ridge", watch=True)
    def _on_setting(self) -> None:
        self._update_ridge_note()
        self._runner.request("theory")
        self._restart_simulation()

    @param.depends("regime", watch=True)
    def _on_regime(self) -> None:
        if self.regime == "custom":
            return
        want = regime_P(self.regime, int(self.M))
        self.P = min(P_OPTIONS, key=lambda p: abs(math.log(p / want)))

    @param.depends("M", watch=True)
    def _keep_regime(self) -> None:
        if self.regime != "custom":
            self._on_regime()

    @param.depends("simulate", "seeds", watch=True)
    def _on_simulate(self) -> None:
        self._restart_simulation()

    @param.depends("status", watch=True)
    def _show_status(self) -> None:
        self._status_pane.object = html.escape(self.status)

    def _update_ridge_note(self) -> None:
        if self.ridge_mode == "optimal":
            self._ridge_note.object = "ridge: optimal for each point (grid + zoom in log λ)"
        else:
            lam = 10**self.log_ridge
            self._ridge_note.object = f"λ = {_fmt(lam)} (sum loss), λ/P = {_fmt(lam / int(self.P))}"

    # ------------------------------------------------------------------ background work
    def _work(self, what: set[str]) -> None:
        """Theory for ``what`` ("theory": views 1, 2, 5; "scaling": views 3, 4) at the current settings."""
        p = self.params()
        try:
            if "theory" in what:
                res = {"vs_K": curves_vs_K(p), "vs_ridge": curves_vs_ridge(p), "regime": curves_regime(p), "params": p}
                self._on_loop(lambda res=res: self._apply_theory(res))
            if "scaling" in what:
                # a quick pass at D = 4 max M (a quarter second), then the finer D = 16 max M
                for D in (SCALING_D // 4, SCALING_D):
                    if self._runner.pending("scaling"):
                        break  # newer settings are waiting
                    sc = curves_scaling(p, D=D)
                    self._on_loop(lambda sc=sc: self._apply_scaling(sc))
        except Exception as exc:  # shown in the tab, the app keeps running
            self._on_loop(lambda exc=exc: self._set_status(f"theory failed: {exc}"))

    def _restart_simulation(self) -> None:
        self._sim_gen += 1
        self.sim_markers = None
        self._on_loop(self._clear_simulation)
        if not self.simulate:
            return
        p = self.params()
        if p.D > SIM_MAX_D:
            self._on_loop(lambda: self._set_status(f"simulation limited to D ≤ {SIM_MAX_D} (D = {p.D}): theory only"))
            return
        gen = self._sim_gen
        t = threading.Thread(target=self._simulate_job, args=(gen, p, int(self.seeds)), daemon=False, name="pocoviz-ens-sim")
        self._sim_thread = t
        t.start()

    def _simulate_job(self, gen: int, p: TabParams, n_seeds: int) -> None:
        from pocoviz.backend import configure_threads

        configure_threads()  # one BLAS thread on small machines: a 500 x 500 eigh is 10x slower with two
        stop = lambda: gen != self._sim_gen or self._closed  # noqa: E731
        sim = None
        for i in range(n_seeds):
            part = simulate_tab(p, [i], progress=lambda f, i=i: self._on_loop(lambda: self._set_progress(gen, (i + f) / n_seeds)), should_stop=stop)
            if part is None:
                return
            sim = part if sim is None else sim.merge(part)
            markers = simulation_markers(sim, p.ridge)
            self._on_loop(lambda markers=markers, sim=sim: self._apply_simulation(gen, markers, sim))

    def close(self, timeout: float = 60.0) -> None:
        """Stop the simulation, and wait for the background jobs."""
        self._closed = True
        self._sim_gen += 1
        self._runner.close(timeout)
        if self._sim_thread is not None:
            self._sim_thread.join(timeout)

    # ------------------------------------------------------------------ drawing
    def _set_status(self, text: str) -> None:
        self.status = text

    def _set_progress(self, gen: int, frac: float) -> None:
        if gen != self._sim_gen:
            return
        self._progress.visible = True
        self._progress.value = int(round(100 * frac))
        self.status = f"simulating ensembles: {self._progress.value}%"

    def _apply_theory(self, res: dict[str, Any]) -> None:
        self.results.update(res)
        p: TabParams = res["params"]
        vk = res["vs_K"]
        for i, (src, Pv) in enumerate(zip(self._k_sources, vk["P"])):
            src.data = {"K": vk["K"], "E": _finite(vk["total"][i]), "N": vk["N"], "ridge": vk["ridge"][i]}
            self._fig_k.legend.items[i].label = value(f"P = {Pv:g}" + (" (chosen)" if i == 1 else ""))
        self._bias_source.data = {"K": vk["K"], "E": _finite(vk["bias"][1])}
        self._var_source.data = {"K": vk["K"], "E": _finite(vk["var_over_K"][1])}
        ticks = [float(k) for k in vk["K"]]
        self._fig_k.xaxis.ticker = FixedTicker(ticks=ticks)
        self._fig_regime.xaxis.ticker = FixedTicker(ticks=ticks)
        best = int(vk["best_K"][1])
        mode = "optimal ridge" if p.ridge is None else f"fixed λ = {_fmt(p.ridge)}"
        verdict = "K = 1 optimal" if best == 1 else f"K = {best} optimal (mistuned ridge: see E vs λ)"
        color = "#1a7f37" if best == 1 else "#b35900"
        self._badge.object = (
            f"<span style='background:{color};color:white;border-radius:4px;padding:2px 8px;font-weight:600'>{html.escape(verdict)}</span>"
            f" &nbsp; M = {p.M}, P = {p.P}, D = {p.D}, α = {p.alpha:.2f}, r = {p.r:.2f}, σ<sub>ε</sub> = {p.noise:.2f}, {html.escape(mode)}"
        )
        self._fig_k.title.text = f"E vs K at fixed M = {p.M} (N = M/K)"
        vr = res["vs_ridge"]
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(vr["K"]))]
        self._lam_source.data = {
            "xs": [vr["ridge"]] * len(vr["K"]), "ys": [_finite(row) for row in vr["total"]], "color": colors,
            "label": [f"K = {int(k)} (N = {_fmt(p.M / k)})" for k in vr["K"]],
        }  # fmt: skip
        self._lam_span.visible = p.ridge is not None
        if p.ridge is not None:
            self._lam_span.location = p.ridge
        self._fig_lam.title.text = f"E vs λ per K (P = {p.P}, M = {p.M})"
        rg = res["regime"]
        self._regime_source.data = {
            "xs": [rg["K"], rg["K"]], "ys": [_finite(rg["relative"][0]), _finite(rg["relative"][1])], "color": ["#D55E00", "#0072B2"],
            "label": [f"N > P: P = {int(rg['P'][0])}", f"N ≪ P: P = {int(rg['P'][1])}"],
        }  # fmt: skip
        self._fig_regime.title.text = f"E(K) / E(1) at M = {p.M}: over- vs under-parameterized"
        if not self.status.startswith(("simulating", "computing")):
            self.status = ""

    def _apply_scaling(self, sc: dict[str, Any]) -> None:
        self.results["scaling"] = sc
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(sc["ell"]))]
        self._m_source.data = {
            "xs": [sc["M"]] * len(sc["ell"]), "ys": [_finite(row) for row in sc["risk"]], "color": colors,
            "label": [f"ℓ = {ell:.1f}: slope −{s:.2f}" for ell, s in zip(sc["ell"], sc["fitted"])],
        }  # fmt: skip
        self._s_lines.data = {
            "ell": sc["ell_line"], "bias": sc["bias_line"], "var": sc["var_line"], "s": sc["s_line"],
        }  # fmt: skip
        self._s_dots.data = {"ell": sc["ell"], "s": sc["fitted"], "color": colors}
        ls = float(sc["ell_star"])
        self._ell_span.visible = bool(np.isfinite(ls))
        if np.isfinite(ls):
            self._ell_span.location = ls
        star = f"ℓ* = {ls:.3f}" if np.isfinite(ls) else "r ≤ 1/2: bias-limited for every ℓ < 1"
        self._fig_s.title.text = f"scaling exponent s(ℓ); {star}"
        D = int(sc["D"])
        refining = D < SCALING_D
        self._fig_m.title.text = f"E* vs M, N = M^ℓ, K = M^(1−ℓ) (P = {SCALING_P:.0e}, D = {D}{', refining …' if refining else ''})"

    def _apply_simulation(self, gen: int, markers: dict[str, np.ndarray], sim: Any) -> None:
        if gen != self._sim_gen:
            return
        self.sim_markers = markers
        lower = np.maximum(markers["lower"], markers["mean"] * 1e-3)  # log axis: bars stay positive
        self._sim_source.data = {"K": markers["K"], "mean": markers["mean"], "lower": lower, "upper": markers["upper"], "ridge": markers["ridge"]}
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(sim.K))]
        xs, ys, cs = [], [], []
        for i in range(len(sim.K)):
            xs.extend(sim.ridge.tolist())
            ys.extend(sim.mean[i].tolist())
            cs.extend([colors[i]] * len(sim.ridge))
        self._lam_sim_source.data = {"ridge": xs, "mean": _finite(np.array(ys)), "color": cs}
        n = len(sim.seeds)
        done = n >= int(self.seeds)
        self._progress.visible = not done
        self.status = (
            f"simulated {n} seed{'s' if n > 1 else ''} in {sim.seconds:.1f} s on {sim.meta.get('device', 'cpu')}"
            if done
            else f"simulating ensembles: {n}/{self.seeds} seeds"
        )

    def _clear_simulation(self) -> None:
        empty = {"K": [], "mean": [], "lower": [], "upper": [], "ridge": []}
        self._sim_source.data = empty
        self._lam_sim_source.data = {"ridge": [], "mean": [], "color": []}
        self._progress.visible = False
        if self.status.startswith(("simulat", "simulation")):
            self.status = ""

    def _build_plots(self) -> None:
        def fig(title: str, x: str, y: str, name: str, x_log: bool = True, y_log: bool = True, **kw: Any):
            f = figure(
                css_classes=[f"pocoviz-ens-{name}"],
                width=W, height=H, title=title, x_axis_label=x, y_axis_label=y, x_axis_type="log" if x_log else "linear",
                y_axis_type="log" if y_log else "linear", tools=TOOLS, toolbar_location="right", **kw,
            )  # fmt: skip
            f.title.text_font_size = "12px"
            f.y_range.range_padding = 0.25  # room for the legend
            return f

        # (1) E vs K
        self._fig_k = fig("E vs K at fixed M", "K (members; N = M/K each)", "test risk E", "vs-k")
        self._k_sources = [ColumnDataSource({"K": [], "E": [], "N": [], "ridge": []}) for _ in P_COLORS]
        for src, color, width, name in zip(self._k_sources, P_COLORS, (1.5, 3.0, 1.5), ("P/8", "P", "8P")):
            self._fig_k.line("K", "E", source=src, color=color, line_width=width, legend_label=name)  # labels set with the data
        self._bias_source = ColumnDataSource({"K": [], "E": []})
        self._var_source = ColumnDataSource({"K": [], "E": []})
        self._fig_k.line("K", "E", source=self._bias_source, color="#0072B2", line_dash="dotted", line_width=2, legend_label="bias (K → ∞)")
        self._fig_k.line("K", "E", source=self._var_source, color="#0072B2", line_dash="dashed", line_width=1.5, legend_label="Var / K")
        self._sim_source = ColumnDataSource({"K": [], "mean": [], "lower": [], "upper": [], "ridge": []})
        self._fig_k.scatter("K", "mean", source=self._sim_source, size=8, color="#D55E00", legend_label="simulation (± 1 s.d.)")
        self._fig_k.add_layout(Whisker(base="K", lower="lower", upper="upper", source=self._sim_source, line_color="#D55E00"))
        self._fig_k.add_tools(
            HoverTool(tooltips=[("K", "@K"), ("N", "@N{0.[0]}"), ("E", "@E{0.00000}"), ("λ", "@ridge{0.[000]e}")], renderers=self._fig_k.renderers[:1])
        )
        self._fig_k.legend.location = "top_left"
        self._fig_k.legend.ncols = 2
        self._fig_k.legend.label_text_font_size = "10px"
        # (2) E vs λ
        self._fig_lam = fig("E vs λ per K", "ridge λ (sum loss)", "test risk E", "vs-ridge")
        self._lam_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_lam.multi_line("xs", "ys", source=self._lam_source, color="color", line_width=2, legend_field="label")
        self._lam_sim_source = ColumnDataSource({"ridge": [], "mean": [], "color": []})
        self._fig_lam.scatter("ridge", "mean", source=self._lam_sim_source, color="color", size=5, marker="circle")
        self._lam_span = Span(location=1.0, dimension="height", line_color="#444", line_dash="dashed", visible=False)
        self._fig_lam.add_layout(self._lam_span)
        self._fig_lam.legend.location = "top_left"
        self._fig_lam.legend.ncols = 2
        self._fig_lam.legend.label_text_font_size = "10px"
        # (3) E vs M along N = M^ℓ
        self._fig_m = fig("E* vs M, N = M^ℓ, K = M^(1−ℓ)", "budget M = K·N", "optimal-ridge risk E*", "vs-m")
        self._m_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_m.xaxis.ticker = FixedTicker(ticks=[100, 200, 300, 500, 700, 1000])
        self._fig_m.multi_line("xs", "ys", source=self._m_source, color="color", line_width=2, legend_field="label")
        self._fig_m.legend.location = "bottom_left"
        self._fig_m.legend.label_text_font_size = "10px"
        # (4) s(ℓ)
        self._fig_s = fig("scaling exponent s(ℓ)", "growth exponent ℓ (N = M^ℓ)", "s: E* ∝ M^−s", "exponent", x_log=False, y_log=False)
        self._s_lines = ColumnDataSource({"ell": [], "bias": [], "var": [], "s": []})
        self._fig_s.line("ell", "bias", source=self._s_lines, color="#0072B2", line_dash="dashed", legend_label="bias: 2αℓ·min(r,1)")
        self._fig_s.line("ell", "var", source=self._s_lines, color="#D55E00", line_dash="dashed", legend_label="Var: 1−ℓ+2αℓ·min(r,½)")
        self._fig_s.line("ell", "s", source=self._s_lines, color="black", line_width=3, legend_label="s(ℓ) = min")
        self._s_dots = ColumnDataSource({"ell": [], "s": [], "color": []})
        self._fig_s.scatter("ell", "s", source=self._s_dots, color="color", size=9, legend_label="fitted slopes (left)")
        self._ell_span = Span(location=0.5, dimension="height", line_color="#d62728", line_width=2, visible=False)
        self._fig_s.add_layout(self._ell_span)
        self._fig_s.legend.location = "top_left"
        self._fig_s.legend.label_text_font_size = "10px"
        # (5) regimes
        self._fig_regime = fig("E(K)/E(1)", "K", "E(K) / E(1)", "regime")
        self._regime_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_regime.multi_line("xs", "ys", source=self._regime_source, color="color", line_width=2.5, legend_field="label")
        self._fig_regime.legend.location = "top_left"
        self._fig_regime.legend.label_text_font_size = "10px"

    def _slider(self, name: str, kind: type, label: str, **kw: Any) -> pn.widgets.Widget:
        """A slider bound to parameter ``name`` through ``value_throttled``: the parameter (and the
        recomputation) changes when the slider is released, not for every pixel of a drag."""
        w = kind(label=label, value=getattr(self, name), width=250, css_classes=[f"pocoviz-ens-{name}"], **kw)
        echo = {"from_widget": False}

        def from_widget(event: Any) -> None:
            echo["from_widget"] = True
            try:
                setattr(self, name, event.new)
            finally:
                echo["from_widget"] = False

        def to_widget(event: Any) -> None:
            # a change made elsewhere (the regime toggle sets P): move the slider; never echo the
            # slider's own value back while the user is still moving it (that would undo key presses)
            if not echo["from_widget"] and w.value != event.new:
                w.value = event.new

        w.param.watch(from_widget, "value_throttled")
        self.param.watch(to_widget, name)
        return w

    def _build_layout(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            pn.pane.Markdown("**Task** (Gaussian, power law)", margin=(5, 10, 0, 10)),
            self._slider("alpha", pn.widgets.FloatSlider, "α (capacity)", start=1.05, end=3.0, step=0.05, format="0.00"),
            self._slider("r", pn.widgets.FloatSlider, "r (source)", start=0.1, end=1.5, step=0.05, format="0.00"),
            self._slider("noise", pn.widgets.FloatSlider, "σ_ε (label noise)", start=0.0, end=0.5, step=0.01, format="0.00"),
            self._widget("D", pn.widgets.Select, "D (dimension)"),
            pn.pane.Markdown("**Budget and data**", margin=(5, 10, 0, 10)),
            self._slider("M", pn.widgets.DiscreteSlider, "M = K·N (total features)", options=M_OPTIONS),
            self._slider("P", pn.widgets.DiscreteSlider, "P (samples)", options=P_OPTIONS),
            self._widget("regime", pn.widgets.RadioButtonGroup, "Regime"),
            pn.pane.Markdown("**Ridge**", margin=(5, 10, 0, 10)),
            self._widget("ridge_mode", pn.widgets.RadioButtonGroup, "Ridge"),
            self._slider("log_ridge", pn.widgets.FloatSlider, "log10 λ (fixed mode)", start=-4.0, end=3.0, step=0.1, format="0.0"),
            self._ridge_note,
            pn.pane.Markdown("**Simulation**", margin=(5, 10, 0, 10)),
            self._widget("simulate", pn.widgets.Checkbox, "simulate ensembles (markers)"),
            self._slider("seeds", pn.widgets.IntSlider, "seeds", start=1, end=16),
            self._progress,
            self._status_pane,
            width=280,
        )
        explain = pn.pane.Markdown(
            "Ridge regression on linear random features: K members of N features each share P samples, and the ensemble "
            "averages them. Lines: deterministic-equivalent theory (Ruben, Tong, Chaudhry & Pehlevan, *No Free Lunch From "
            "Random Feature Ensembles*, ICML 2025), E = bias + Var/K. λ is in the sum-loss convention (the theory sees λ/P). "
            "Markers: simulated ensembles, exact population risk, mean ± 1 s.d. over seeds, at the ridge best on average.",
            css_classes=["pocoviz-ens-explain"], sizing_mode="stretch_width", styles={"font-size": "12px"},
        )  # fmt: skip
        pane = lambda f: pn.pane.Bokeh(f, width=W + 10, height=H + 10)  # noqa: E731  (css classes are on the figures)
        plots = pn.Column(
            self._badge,
            pn.Row(pane(self._fig_k), pane(self._fig_lam)),
            pn.Row(pane(self._fig_m), pane(self._fig_s)),
            pn.Row(pane(self._fig_regime), explain),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-ensembles"])

"""Ensembles tab: test risk of random-feature ridge ensembles at a fixed parameter budget
(spec ``rf_ensembles.md`` §5): theory lines (deterministic equivalent) against simulated ensembles.

Five views: (1) E vs K at fixed M for P/8, P and 8P, with bias and Var/K and simulation markers
(± one standard deviation over seeds); (2) E vs λ for each K; (3) E vs M along N = M^ℓ for several
ℓ, with fitted slopes, at the sizes the scaling law needs (said in the figure); (4) the s(ℓ) diagram
with ℓ*, fitted slopes filled where they should agree with s(ℓ) and hollow where not (the note
under the figures says why); (5) the over- vs under-parameterized contrast E(K)/E(1).

State, jobs and URL state live in :class:`pocoviz.controllers.ensembles.EnsemblesController`; this
module only draws its snapshots, on the session's event loop. Log axes have explicit ranges and
ticks set from the data (no empty log axis at start, a tick label in every decade or less).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import panel as pn
from bokeh.core.property.vectorization import value
from bokeh.models import ColumnDataSource, CustomJSTickFormatter, FixedTicker, HoverTool, Range1d, Span, Title, Whisker
from bokeh.plotting import figure

from pocoviz.controllers.ensembles import M_OPTIONS, P_OPTIONS, EnsemblesController, EnsemblesSnapshot, fmt

from .base import TabView
from .theme import REGION_PALETTE

P_COLORS = ("#56B4E9", "#0072B2", "#003f6b")  # P/8, P, 8P
W, H = 480, 300
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
#: tick labels of the log axes: 0.002, 0.05, 3, 1e-05 (short, never overlapping "2·10⁻³" strings)
TICK_JS = """
const a = Math.abs(tick);
if (a === 0) return "0";
if (a >= 1e-3 && a < 1e5) return String(Number(tick.toPrecision(2)));
return tick.toExponential(0);
"""

_fmt = fmt  # the labels' number format (tests import it from here)


def _finite(a: np.ndarray) -> np.ndarray:
    """NaN where a value cannot be drawn on a log axis (inf at the interpolation threshold, <= 0)."""
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def log_ticks(lo: float, hi: float) -> list[float]:
    """At least three readable ticks in [lo, hi] (> 0): decades, else 1-2-5, else 1..9 per decade,
    else four geometrically spaced values rounded to two digits."""
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        return []
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in decades for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3:
            if len(ticks) > 12:  # many decades: every other one
                ticks = ticks[:: math.ceil(len(ticks) / 10)]
            return ticks
    return [float(f"{x:.2g}") for x in np.geomspace(lo, hi, 6)[1:-1]]


def log_span(*arrays: Any, pad: float = 0.12) -> tuple[float, float] | None:
    """The positive finite extent of ``arrays``, padded by ``pad`` of its width in log space."""
    vals = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays]) if arrays else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return None
    lo, hi = math.log10(vals.min()), math.log10(vals.max())
    width = max(hi - lo, 0.3)
    mid = (hi + lo) / 2
    lo, hi = min(lo, mid - width / 2), max(hi, mid + width / 2)
    return 10 ** (lo - pad * width), 10 ** (hi + pad * width)


def _set_log_axis(rng: Range1d, axis: Any, span: tuple[float, float] | None) -> None:
    if span is None:
        return
    rng.start, rng.end = span
    rng.reset_start, rng.reset_end = span
    axis.ticker = FixedTicker(ticks=log_ticks(*span))


class EnsemblesView(TabView):
    """The Ensembles tab (see module docstring)."""

    css_prefix = "pocoviz-ens"

    def __init__(self, data_dir: str | None = None, controller: EnsemblesController | None = None, **params: Any):
        super().__init__(**params)
        self.controller = controller if controller is not None else EnsemblesController()
        self._build_plots()
        self._badge = pn.pane.HTML("", css_classes=["pocoviz-ens-badge"], sizing_mode="stretch_width")
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-ens-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._ridge_note = pn.pane.HTML("", css_classes=["pocoviz-ens-ridge"], width=260, styles={"font-size": "12px"})
        self._scaling_note = pn.pane.HTML("", css_classes=["pocoviz-ens-scaling-note"], sizing_mode="stretch_width", styles={"font-size": "12px"})
        self._progress = pn.indicators.Progress(value=0, max=100, width=240, visible=False, css_classes=["pocoviz-ens-progress"])
        self.controller.param.watch(lambda event: self._request_render(), "version")
        self._render()

    # ------------------------------------------------------------------ rendering
    def _render(self) -> None:
        self._render_pending = False
        snap = self.controller.snapshot()
        self._ridge_note.object = html.escape(snap.ridge_note)
        status = " · ".join(t for t in (snap.notice, snap.status) if t)
        self._status_pane.object = html.escape(status)
        self._progress.visible = snap.progress is not None
        self._progress.value = int(round(100 * (snap.progress or 0.0)))
        if snap.theory is not None and self._changed("theory", snap.theory):
            self._draw_theory(snap)
        if snap.scaling is not None and self._changed("scaling", snap.scaling):
            self._draw_scaling(snap)
        if self._changed("markers", snap.markers):
            self._draw_simulation(snap)

    def _draw_theory(self, snap: EnsemblesSnapshot) -> None:
        res = snap.theory
        p = res["params"]
        vk = res["vs_K"]
        for i, (src, Pv) in enumerate(zip(self._k_sources, vk["P"])):
            src.data = {"K": vk["K"], "E": _finite(vk["total"][i]), "N": vk["N"], "ridge": vk["ridge"][i]}
            self._fig_k.legend.items[i].label = value(f"P = {fmt(Pv)}" + (" (chosen)" if i == 1 else ""))
        self._bias_source.data = {"K": vk["K"], "E": _finite(vk["bias"][1])}
        self._var_source.data = {"K": vk["K"], "E": _finite(vk["var_over_K"][1])}
        ticks = [float(k) for k in vk["K"]]
        k_span = (min(ticks) / 1.3, max(ticks) * 1.3)
        for f in (self._fig_k, self._fig_regime):
            f.xaxis.ticker = FixedTicker(ticks=ticks)
            f.x_range.start, f.x_range.end = k_span
            f.x_range.reset_start, f.x_range.reset_end = k_span
        self._fit_k_y()
        mode = "optimal ridge" if p.ridge is None else f"fixed λ = {fmt(p.ridge)}"
        color = "#1a7f37" if snap.best_K == 1 else "#b35900"
        self._badge.object = (
            f"<span style='background:{color};color:white;border-radius:4px;padding:2px 8px;font-weight:600'>{html.escape(snap.verdict)}</span>"
            f" &nbsp; M = {p.M}, P = {p.P}, D = {p.D}, α = {p.alpha:.2f}, r = {p.r:.2f}, σ<sub>ε</sub> = {p.noise:.2f}, {html.escape(mode)}"
        )
        self._fig_k.title.text = f"E vs K at fixed M = {p.M} (N = M/K)"
        vr = res["vs_ridge"]
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(vr["K"]))]
        ys = [_finite(row) for row in vr["total"]]
        self._lam_source.data = {
            "xs": [vr["ridge"]] * len(vr["K"]), "ys": ys, "color": colors,
            "label": [f"K = {int(k)} (N = {fmt(p.M / k)})" for k in vr["K"]],
        }  # fmt: skip
        _set_log_axis(self._fig_lam.y_range, self._fig_lam.yaxis, log_span(*ys))
        self._lam_span.visible = p.ridge is not None
        if p.ridge is not None:
            self._lam_span.location = p.ridge
        self._fig_lam.title.text = f"E vs λ per K (P = {p.P}, M = {p.M})"
        rg = res["regime"]
        rel = [_finite(rg["relative"][0]), _finite(rg["relative"][1])]
        self._regime_source.data = {
            "xs": [rg["K"], rg["K"]], "ys": rel, "color": ["#D55E00", "#0072B2"],
            "label": [f"N > P: P = {int(rg['P'][0])}", f"N ≪ P: P = {int(rg['P'][1])}"],
        }  # fmt: skip
        _set_log_axis(self._fig_regime.y_range, self._fig_regime.yaxis, log_span(*rel))
        self._fig_regime.title.text = f"E(K) / E(1) at M = {p.M}"

    def _fit_k_y(self) -> None:
        """The E-vs-K axis spans the theory lines and the simulation bars."""
        arrays = [src.data["E"] for src in (*self._k_sources, self._bias_source, self._var_source)]
        arrays += [self._sim_source.data["lower"], self._sim_source.data["upper"]]
        _set_log_axis(self._fig_k.y_range, self._fig_k.yaxis, log_span(*arrays))

    def _draw_scaling(self, snap: EnsemblesSnapshot) -> None:
        sc = snap.scaling
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(sc["ell"]))]
        ys = [_finite(row) for row in sc["risk"]]
        self._m_source.data = {
            "xs": [sc["M"]] * len(sc["ell"]), "ys": ys, "color": colors,
            "label": [
                f"ℓ = {row.ell:.1f}: fit {row.fitted:.2f}, s(ℓ) {row.theory:.2f}" + ("" if row.agrees else " ✗")
                for row in snap.scaling_rows
            ],
        }  # fmt: skip
        _set_log_axis(self._fig_m.y_range, self._fig_m.yaxis, log_span(*ys))
        self._s_lines.data = {"ell": sc["ell_line"], "bias": sc["bias_line"], "var": sc["var_line"], "s": sc["s_line"]}
        for src, keep in ((self._s_dots, True), (self._s_off, False)):
            rows = [(row, c) for row, c in zip(snap.scaling_rows, colors) if row.agrees == keep]
            src.data = {"ell": [r.ell for r, _ in rows], "s": [r.fitted for r, _ in rows], "color": [c for _, c in rows]}
        top = max(float(np.nanmax(sc["s_line"])), float(np.nanmax(sc["fitted"])), float(np.nanmax(sc["var_line"])))
        span = (-0.05 * top, 1.12 * top + 0.05)  # the top dot stays whole
        self._fig_s.y_range.start, self._fig_s.y_range.end = span
        self._fig_s.y_range.reset_start, self._fig_s.y_range.reset_end = span
        ls = float(sc["ell_star"])
        self._ell_span.visible = bool(np.isfinite(ls))
        if np.isfinite(ls):
            self._ell_span.location = ls
        star = f"ℓ* = {ls:.3f} (red)" if np.isfinite(ls) else "r ≤ 1/2: bias-limited for every ℓ < 1"
        self._fig_s.title.text = f"scaling exponent s(ℓ); {star}"
        self._sub_m.text = f"P = {fmt(float(sc['P']))}, D = {int(sc['D'])}: the law's sizes, not the sidebar's" + (" (refining …)" if snap.refining else "")
        rows = "".join(
            f"<tr><td>{row.ell:.1f}</td><td>{row.fitted:.2f}</td><td>{row.theory:.2f}</td>"
            f"<td>{'✓' if row.agrees else '✗'}</td><td>{html.escape(row.why)}</td></tr>"
            for row in snap.scaling_rows
        )
        self._scaling_note.object = (
            f"<b>E* vs M sizes</b>: {html.escape(snap.scaling_sizes)}."
            "<table class='pocoviz-table'><tr><th>ℓ</th><th>fit</th><th>s(ℓ)</th><th>agree</th><th>why</th></tr>"
            f"{rows}</table>"
        )

    def _draw_simulation(self, snap: EnsemblesSnapshot) -> None:
        markers = snap.markers
        if markers is None:
            self._sim_source.data = {"K": [], "mean": [], "lower": [], "upper": [], "ridge": []}
            self._lam_sim_source.data = {"ridge": [], "mean": [], "color": []}
            self._fit_k_y()
            return
        lower = np.maximum(markers["lower"], markers["mean"] * 1e-3)  # log axis: bars stay positive
        self._sim_source.data = {"K": markers["K"], "mean": markers["mean"], "lower": lower, "upper": markers["upper"], "ridge": markers["ridge"]}
        sim = snap.sim_curves
        colors = [REGION_PALETTE[i % len(REGION_PALETTE)] for i in range(len(sim["K"]))]
        xs, ys, cs = [], [], []
        for i in range(len(sim["K"])):
            xs.extend(np.asarray(sim["ridge"]).tolist())
            ys.extend(np.asarray(sim["mean"][i]).tolist())
            cs.extend([colors[i]] * len(sim["ridge"]))
        self._lam_sim_source.data = {"ridge": xs, "mean": _finite(np.array(ys)), "color": cs}
        self._fit_k_y()

    # ------------------------------------------------------------------ figures and layout
    def _build_plots(self) -> None:
        def fig(title: str, x: str, y: str, name: str, legend_rows: int, x_log: bool = True, y_log: bool = True, **kw: Any):
            ranges = {}  # explicit ranges on log axes: no empty DataRange1d at start (Bokeh warns)
            if x_log:
                ranges["x_range"] = kw.pop("x_range", Range1d(1, 10))
            if y_log:
                ranges["y_range"] = Range1d(1e-3, 1)
            f = figure(
                css_classes=[f"pocoviz-ens-{name}"], width=W, height=H + 22 * legend_rows, title=title,
                x_axis_label=x, y_axis_label=y, x_axis_type="log" if x_log else "linear", y_axis_type="log" if y_log else "linear",
                tools=TOOLS, toolbar_location="right", **ranges, **kw,
            )  # fmt: skip
            f.title.text_font_size = "12px"
            for axis, log in ((f.xaxis, x_log), (f.yaxis, y_log)):
                if log:
                    axis.formatter = CustomJSTickFormatter(code=TICK_JS)
            return f

        def legend_below(f: Any, ncols: int) -> None:
            legend = f.legend[0]
            legend.ncols = ncols
            legend.label_text_font_size = "10px"
            legend.padding, legend.spacing, legend.margin = 2, 0, 2
            legend.glyph_width = 18
            f.add_layout(legend, "below")

        # (1) E vs K
        self._fig_k = fig("E vs K at fixed M", "K (members; N = M/K each)", "test risk E", "vs-k", 2)
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
        legend_below(self._fig_k, 3)
        # (2) E vs λ
        self._fig_lam = fig("E vs λ per K", "ridge λ (sum loss)", "test risk E", "vs-ridge", 2, x_range=Range1d(10**-4.3, 10**3.3))
        self._fig_lam.xaxis.ticker = FixedTicker(ticks=[10.0**e for e in range(-4, 4)])
        self._lam_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_lam.multi_line("xs", "ys", source=self._lam_source, color="color", line_width=2, legend_field="label")
        self._lam_sim_source = ColumnDataSource({"ridge": [], "mean": [], "color": []})
        self._fig_lam.scatter("ridge", "mean", source=self._lam_sim_source, color="color", size=5, marker="circle")
        self._lam_span = Span(location=1.0, dimension="height", line_color="#444", line_dash="dashed", visible=False)
        self._fig_lam.add_layout(self._lam_span)
        legend_below(self._fig_lam, 4)
        # (3) E vs M along N = M^ℓ
        self._fig_m = fig("E* vs M along N = M^ℓ, K = M^(1−ℓ)", "budget M = K·N", "optimal-ridge risk E*", "vs-m", 3, x_range=Range1d(90, 1100))
        self._sub_m = Title(text="", text_font_size="11px", text_font_style="normal", text_color="#444")
        self._fig_m.add_layout(self._sub_m, "above")
        self._m_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_m.xaxis.ticker = FixedTicker(ticks=[100, 200, 300, 500, 700, 1000])
        self._fig_m.multi_line("xs", "ys", source=self._m_source, color="color", line_width=2, legend_field="label")
        legend_below(self._fig_m, 2)
        # (4) s(ℓ)
        self._fig_s = fig(
            "scaling exponent s(ℓ)", "growth exponent ℓ (N = M^ℓ)", "s: E* ∝ M^−s", "exponent", 3, x_log=False, y_log=False,
            x_range=Range1d(-0.03, 1.03), y_range=Range1d(-0.1, 2.0),
        )  # fmt: skip
        self._s_lines = ColumnDataSource({"ell": [], "bias": [], "var": [], "s": []})
        self._fig_s.line("ell", "bias", source=self._s_lines, color="#0072B2", line_dash="dashed", legend_label="bias: 2αℓ·min(r,1)")
        self._fig_s.line("ell", "var", source=self._s_lines, color="#D55E00", line_dash="dashed", legend_label="Var: 1−ℓ+2αℓ·min(r,½)")
        self._fig_s.line("ell", "s", source=self._s_lines, color="black", line_width=3, legend_label="s(ℓ) = min")
        self._s_dots = ColumnDataSource({"ell": [], "s": [], "color": []})
        self._fig_s.scatter("ell", "s", source=self._s_dots, color="color", size=9, legend_label="fit agrees with s(ℓ)")
        self._s_off = ColumnDataSource({"ell": [], "s": [], "color": []})
        self._fig_s.scatter("ell", "s", source=self._s_off, line_color="color", fill_color="white", line_width=2, size=9, legend_label="fit off s(ℓ): see note")
        self._ell_span = Span(location=0.5, dimension="height", line_color="#d62728", line_width=2, visible=False)
        self._fig_s.add_layout(self._ell_span)
        legend_below(self._fig_s, 2)
        # (5) regimes
        self._fig_regime = fig("E(K)/E(1)", "K", "E(K) / E(1)", "regime", 1)
        self._regime_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._fig_regime.multi_line("xs", "ys", source=self._regime_source, color="color", line_width=2.5, legend_field="label")
        legend_below(self._fig_regime, 2)

    def _slider(self, name: str, kind: type, label: str, **kw: Any) -> pn.widgets.Widget:
        """A slider bound to the controller's parameter ``name`` through ``value_throttled``: the
        parameter (and the recomputation) changes when the slider is released, not for every pixel
        of a drag."""
        ctrl = self.controller
        w = kind(label=label, value=getattr(ctrl, name), width=250, css_classes=[f"pocoviz-ens-{name}"], **kw)
        echo = {"from_widget": False}

        def from_widget(event: Any) -> None:
            echo["from_widget"] = True
            try:
                setattr(ctrl, name, event.new)
            finally:
                echo["from_widget"] = False

        def to_widget(event: Any) -> None:
            # a change made elsewhere (the regime toggle sets P, a link): move the slider; never echo
            # the slider's own value back while the user is still moving it (that would undo key presses)
            if not echo["from_widget"] and w.value != event.new:
                w.value = event.new

        w.param.watch(from_widget, "value_throttled")
        ctrl.param.watch(to_widget, name)
        return w

    def _build_layout(self) -> pn.viewable.Viewable:
        ctrl = self.controller
        heading = lambda text: pn.pane.Markdown(text, margin=(5, 10, 0, 10))  # noqa: E731
        controls = pn.Column(
            heading("**Task** (Gaussian, power law)"),
            self._slider("alpha", pn.widgets.FloatSlider, "α (capacity)", start=1.05, end=3.0, step=0.05, format="0.00"),
            self._slider("r", pn.widgets.FloatSlider, "r (source)", start=0.1, end=1.5, step=0.05, format="0.00"),
            self._slider("noise", pn.widgets.FloatSlider, "σ_ε (label noise)", start=0.0, end=0.5, step=0.01, format="0.00"),
            self._widget("D", pn.widgets.Select, "D (dimension; E vs K, λ)", owner=ctrl),
            heading("**Budget and data** (E* vs M has its own)"),
            self._slider("M", pn.widgets.DiscreteSlider, "M = K·N (total features)", options=M_OPTIONS),
            self._slider("P", pn.widgets.DiscreteSlider, "P (samples)", options=P_OPTIONS),
            self._widget("regime", pn.widgets.RadioButtonGroup, "Regime", owner=ctrl),
            heading("**Ridge**"),
            self._widget("ridge_mode", pn.widgets.RadioButtonGroup, "Ridge", owner=ctrl),
            self._slider("log_ridge", pn.widgets.FloatSlider, "log10 λ (fixed mode)", start=-4.0, end=3.0, step=0.1, format="0.0"),
            self._ridge_note,
            heading("**Simulation**"),
            self._widget("simulate", pn.widgets.Checkbox, "simulate ensembles (markers)", owner=ctrl),
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
        pane = lambda f: pn.pane.Bokeh(f, width=f.width + 10, height=f.height + 10)  # noqa: E731  (css classes are on the figures)
        plots = pn.Column(
            self._badge,
            pn.FlexBox(pane(self._fig_k), pane(self._fig_lam), pane(self._fig_m), pane(self._fig_s), pane(self._fig_regime),
                       pn.Column(self._scaling_note, explain, width=W)),
            sizing_mode="stretch_width",
        )  # fmt: skip
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-ensembles"])

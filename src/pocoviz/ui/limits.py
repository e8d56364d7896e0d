"""Transformer limits tab: which parameterizations keep attention learning as the key/query
dimension N, the number of heads H and the depth L grow (Bordelon, Chaudhry & Pehlevan, *Infinite
Limits of Multi-head Transformer Dynamics*, NeurIPS 2024; spec ``transformer_limits.md`` §4.3).

From the shipped sweeps (``assets/limits``, made by ``pocoviz make-assets --limits-only``): the
variance of the attention logits across heads vs N (αA = 1 collapses heads, αA = ½ keeps them
diverse), learning-rate transfer across N, loss curves vs N, H and L, the spread of outputs across
seeds vs H, and the movement of the key weights vs L (αL = 1 keeps attention learning, αL = ½ does
not). Live, from forward passes: histograms of the logits over many heads (N = 1 vs 16) and the
initial feature kernels at two depths. And a live training run whose loss streams in.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

from .base import TabView
from .jobs import LatestRunner
from .theme import REGION_PALETTE

W, H_ = 420, 300
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def _fig(title: str, x: str, y: str, *, x_log: bool = False, y_log: bool = False, name: str = "", width: int = W, height: int = H_, **kw: Any):
    f = figure(
        width=width, height=height, title=title, x_axis_label=x, y_axis_label=y, x_axis_type="log" if x_log else "linear",
        y_axis_type="log" if y_log else "linear", tools=TOOLS, css_classes=[f"pocoviz-lim-{name}"] if name else [], **kw,
    )  # fmt: skip
    f.title.text_font_size = "12px"
    return f


def _legend(f, location: str = "top_right") -> None:
    if f.legend:
        f.legend.location = location
        f.legend.label_text_font_size = "10px"
        f.legend.background_fill_alpha = 0.7


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _device_name() -> str:
    from pocoviz.backend import BackendError, get_device

    try:
        return str(get_device())
    except BackendError:
        return "no usable device (see POCOVIZ_DEVICE)"


class LimitsView(TabView):
    """The Transformer limits tab (see module docstring)."""

    css_prefix = "pocoviz-lim"

    live_N = param.Integer(default=8, bounds=(1, 64))
    live_H = param.Integer(default=4, bounds=(1, 32))
    live_L = param.Integer(default=2, bounds=(1, 16))
    live_alpha_A = param.Selector(default=1.0, objects={"αA = 1 (μP logits)": 1.0, "αA = ½": 0.5})
    live_alpha_L = param.Selector(default=1.0, objects={"αL = 1": 1.0, "αL = ½": 0.5})
    live_eta0 = param.Number(default=0.5, bounds=(0.01, 8.0))
    live_steps = param.Integer(default=200, bounds=(10, 2000))
    status = param.String(default="")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self.sweeps: dict[str, Any] = {}
        self.live: dict[str, Any] = {}
        self._live_gen = 0
        self._runner = LatestRunner(self._work, "pocoviz-limits")
        self._alert = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-lim-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._summary = pn.pane.HTML("", css_classes=["pocoviz-lim-summary"], sizing_mode="stretch_width")
        self._train_button = pn.widgets.Button(label="▶ Train", width=110, css_classes=["pocoviz-lim-train"])
        self._train_button.on_click(lambda e: self.start_live())
        self._stop_button = pn.widgets.Button(label="■ Stop", width=80, css_classes=["pocoviz-lim-stop"])
        self._stop_button.on_click(lambda e: self.stop_live())
        self._build_plots()
        self._load_sweeps()
        self._runner.request("forward")

    # ------------------------------------------------------------------ data
    def _load_sweeps(self) -> None:
        from pocoviz.limits import SWEEPS, load_sweep

        missing = []
        for name in SWEEPS:
            try:
                self.sweeps[name] = load_sweep(name)
            except (FileNotFoundError, OSError, ValueError) as exc:
                missing.append(f"{name}: {exc}")
        if missing:
            self._alert.object = "Shipped sweeps missing or unreadable (live plots still work): " + html.escape("; ".join(missing))
            self._alert.visible = True
        self._draw_sweeps()

    def _work(self, what: set[str]) -> None:
        from pocoviz.backend import configure_threads

        try:
            configure_threads()  # one torch thread on small machines: the other core stays with the web server
            if "forward" in what:
                self._forward_views()
            if "live" in what:
                self._live_run()
        except Exception as exc:  # shown in the tab; the app keeps running
            self._on_loop(lambda exc=exc: setattr(self, "status", f"failed: {exc}"))

    def _forward_views(self) -> None:
        """Initialisation-only statistics (forward passes on the backend's device: a second or two)."""
        from pocoviz.backend import get_device
        from pocoviz.limits import init_statistics

        stats = init_statistics(get_device())  # NumPy arrays, for the plots
        self._on_loop(lambda: self._draw_forward(stats["hist"], stats["kernels"]))

    # ------------------------------------------------------------------ live run
    def start_live(self) -> None:
        self._live_gen += 1
        self.live = {"steps": [], "loss": [], "gen": self._live_gen}
        self._on_loop(lambda: setattr(self._live_source, "data", {"step": [], "loss": []}))
        self._runner.request("live")

    def stop_live(self) -> None:
        self._live_gen += 1

    def _live_run(self) -> None:
        import time

        from pocoviz.backend import get_device
        from pocoviz.limits import LimitsConfig, train_run

        gen = self._live_gen
        device = get_device()
        cfg = LimitsConfig(
            N=int(self.live_N), H=int(self.live_H), L=int(self.live_L), alpha_A=float(self.live_alpha_A), alpha_L=float(self.live_alpha_L),
            eta0=float(self.live_eta0),
        )  # fmt: skip
        t0 = time.perf_counter()
        self._on_loop(lambda: setattr(self, "status", f"training N={cfg.N}, H={cfg.H}, L={cfg.L} on {device} …"))

        def progress(step: int, loss: float) -> None:
            self.live["steps"].append(step)
            self.live["loss"].append(loss)
            self._on_loop(lambda step=step, loss=loss: self._live_source.stream({"step": [step], "loss": [loss]}))

        r = train_run(cfg, steps=int(self.live_steps), seed=0, progress=progress, should_stop=lambda: gen != self._live_gen, device=device)
        dt = time.perf_counter() - t0
        if r is None:
            self._on_loop(lambda: setattr(self, "status", "stopped"))
            return
        self.live["result"] = r
        per_step = 1000 * dt / max(1, len(self.live["steps"]) * 5)
        self._on_loop(
            lambda: setattr(
                self, "status",
                f"done: {int(self.live_steps)} steps in {dt:.1f} s ({per_step:.1f} ms/step); final loss {r.loss[-1]:.3f}, "
                f"head variance {r.head_var_init:.3g} → {r.head_var_final:.3g}",
            )
        )  # fmt: skip

    def close(self, timeout: float = 60.0) -> None:
        self._live_gen += 1
        self._runner.close(timeout)

    @param.depends("status", watch=True)
    def _show_status(self) -> None:
        self._status_pane.object = html.escape(self.status)

    # ------------------------------------------------------------------ drawing
    def _build_plots(self) -> None:
        self._f_headvar = _fig(
            "variance of attention logits across heads vs N", "N (key/query dimension)", "Var_heads(A)", x_log=True, y_log=True, name="headvar"
        )
        self._f_lr = _fig("learning-rate transfer (loss, steps 281–300)", "η0", "final training loss", x_log=True, y_log=True, name="lr")
        self._f_loss_N = _fig("loss vs steps, scaling N (αA = 1)", "step", "train loss", y_log=True, name="loss-n", width=300)
        self._f_loss_H = _fig("scaling H (N = 4)", "step", "train loss", y_log=True, name="loss-h", width=300)
        self._f_loss_L = _fig("scaling L (αL = 1)", "step", "train loss", y_log=True, name="loss-l", width=300)
        self._f_spread = _fig("output spread across seeds vs H", "H (heads)", "Var_seeds f(x)", x_log=True, y_log=True, name="spread")
        self._f_dwk = _fig("key-weight movement vs depth", "L (blocks)", "‖ΔW_K‖ / ‖W_K(0)‖", x_log=True, y_log=True, name="dwk")
        self._f_hist = _fig("logits over 256 heads at init (one token pair)", "A_h", "density", name="hist")
        self._f_live = _fig("live run: training loss", "step", "loss", y_log=True, name="live", width=560)
        self._live_source = ColumnDataSource({"step": [], "loss": []})
        self._f_live.line("step", "loss", source=self._live_source, color="#D55E00", line_width=2)
        self._f_live.scatter("step", "loss", source=self._live_source, color="#D55E00", size=3)
        self._kernel_figs = {}
        self._kernel_sources = {}
        cmap = LinearColorMapper(palette="Viridis256", low=-1, high=1)
        for a in (1.0, 0.5):
            for L in (2, 32):
                f = figure(
                    width=170,
                    height=185,
                    title=f"αL = {'1' if a == 1 else '½'}, L = {L}",
                    toolbar_location=None,
                    x_range=(0, 24),
                    y_range=(0, 24),
                    css_classes=["pocoviz-lim-kernel"],
                )
                f.axis.visible = False
                f.grid.visible = False
                f.title.text_font_size = "11px"
                src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
                f.image("image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=cmap)
                self._kernel_figs[(a, L)] = f
                self._kernel_sources[(a, L)] = src

    def _draw_sweeps(self) -> None:
        lines = []
        ds = self.sweeps.get("N")
        if ds is not None:
            for a, color in ((1.0, "#0072B2"), (0.5, "#D55E00")):
                sel = ds.where(ds.alpha_A == a, drop=True)
                fin = sel.head_var_final.groupby(sel.N).mean()
                ini = sel.head_var_init.groupby(sel.N).mean()
                name = "1" if a == 1 else "½"
                s = _slope(fin.N.values, fin.values)
                self._f_headvar.line(fin.N.values, fin.values, color=color, line_width=2.5, legend_label=f"αA = {name}, trained (slope {s:+.2f})")
                self._f_headvar.scatter(fin.N.values, fin.values, color=color, size=7)
                self._f_headvar.line(ini.N.values, ini.values, color=color, line_dash="dotted", legend_label=f"αA = {name}, init")
                lines.append(f"head variance vs N: slope <b>{s:+.2f}</b> for αA = {name}")
            Ns = np.array([4.0, 64.0])
            top = float(ds.head_var_final.where(ds.alpha_A == 1.0).max())
            self._f_headvar.line(Ns, top * (Ns / 4) ** -1, color="#999999", line_dash="dashed", legend_label="∝ N⁻¹")
            self._f_headvar.line(Ns, top * (Ns / 4) ** -2, color="#cccccc", line_dash="dashed", legend_label="∝ N⁻²")
            _legend(self._f_headvar, "bottom_left")
            sel = ds.where((ds.alpha_A == 1.0) & (ds.seed == 0), drop=True)
            for i, N in enumerate(sel.N.values):
                run = sel.where(sel.N == N, drop=True)
                self._f_loss_N.line(run.step.values, run.loss.values[0], color=REGION_PALETTE[i], legend_label=f"N = {int(N)}")
            _legend(self._f_loss_N)
        ds = self.sweeps.get("lr")
        if ds is not None:
            for a, dash in ((1.0, "solid"), (0.5, "dashed")):
                for i, N in enumerate(np.unique(ds.N.values)):
                    sel = ds.where((ds.alpha_A == a) & (ds.N == N), drop=True)
                    final = sel.loss.isel(step=slice(-4, None)).mean("step").values  # last 20 steps
                    y = np.where(np.isfinite(final), final, np.nan)
                    self._f_lr.line(
                        sel.eta0.values, y, color=REGION_PALETTE[i], line_dash=dash, line_width=2, legend_label=f"N = {int(N)}, αA = {'1' if a == 1 else '½'}"
                    )
                    best = int(np.nanargmin(y))
                    self._f_lr.scatter([sel.eta0.values[best]], [y[best]], color=REGION_PALETTE[i], size=9, marker="star")
            _legend(self._f_lr, "top_left")
        ds = self.sweeps.get("H")
        if ds is not None:
            spread = ds.f_probe.groupby(ds.H).var("run").mean("probe")
            s = _slope(spread.H.values, spread.values)
            self._f_spread.line(spread.H.values, spread.values, color="#009E73", line_width=2.5, legend_label=f"measured (slope {s:+.2f})")
            self._f_spread.scatter(spread.H.values, spread.values, color="#009E73", size=7)
            Hs = spread.H.values.astype(float)
            self._f_spread.line(Hs, float(spread.values[0]) * Hs[0] / Hs, color="#999999", line_dash="dashed", legend_label="∝ 1/H")
            _legend(self._f_spread, "bottom_left")
            lines.append(f"output spread across seeds vs H: slope <b>{s:+.2f}</b>")
            sel = ds.where(ds.seed == 0, drop=True)
            for i, H in enumerate(sel.H.values):
                run = sel.where(sel.H == H, drop=True)
                self._f_loss_H.line(run.step.values, run.loss.values[0], color=REGION_PALETTE[i], legend_label=f"H = {int(H)}")
            _legend(self._f_loss_H)
        ds = self.sweeps.get("L")
        if ds is not None:
            for a, color in ((1.0, "#0072B2"), (0.5, "#D55E00")):
                sel = ds.where(ds.alpha_L == a, drop=True)
                move = sel.dWK.mean("layer", skipna=True).groupby(sel.L).mean()
                s = _slope(move.L.values, move.values)
                name = "1" if a == 1 else "½"
                self._f_dwk.line(move.L.values, move.values, color=color, line_width=2.5, legend_label=f"αL = {name}, 300 steps (slope {s:+.2f})")
                self._f_dwk.scatter(move.L.values, move.values, color=color, size=7)
                if "dWK_first" in sel:
                    first = sel.dWK_first.mean("layer", skipna=True).groupby(sel.L).mean()
                    s1 = _slope(first.L.values, first.values)
                    self._f_dwk.line(
                        first.L.values, first.values, color=color, line_dash="dotted", line_width=2, legend_label=f"αL = {name}, first step (slope {s1:+.2f})"
                    )
                    lines.append(f"‖ΔW_K‖/‖W_K(0)‖ vs L for αL = {name}: slope <b>{s1:+.2f}</b> per step, <b>{s:+.2f}</b> over 300 steps")
            Ls = np.array([2.0, 32.0])
            base = float(ds.dWK.where(ds.alpha_L == 0.5).mean("layer").where(ds.L == 2).mean())
            self._f_dwk.line(Ls, base * (Ls / 2) ** -0.5, color="#999999", line_dash="dashed", legend_label="∝ L^−½")
            _legend(self._f_dwk, "bottom_left")
            sel = ds.where((ds.alpha_L == 1.0) & (ds.seed == 0), drop=True)
            for i, L in enumerate(sel.L.values):
                run = sel.where(sel.L == L, drop=True)
                self._f_loss_L.line(run.step.values, run.loss.values[0], color=REGION_PALETTE[i], legend_label=f"L = {int(L)}")
            _legend(self._f_loss_L)
        if lines:
            self._summary.object = "From the shipped sweeps: " + "; ".join(lines) + "."

    def _draw_forward(self, hist: dict, kernels: dict) -> None:
        self.forward = {"hist": hist, "kernels": kernels}
        for i, ((a, N), vals) in enumerate(hist.items()):
            counts, edges = np.histogram(vals, bins=40, density=True)
            self._f_hist.step(
                np.repeat(edges, 2)[1:-1], np.repeat(counts, 2), color=REGION_PALETTE[i], line_width=2, legend_label=f"αA = {'1' if a == 1 else '½'}, N = {N}"
            )
        _legend(self._f_hist)
        for key, K in kernels.items():
            self._kernel_sources[key].data = {"image": [np.flipud(K)], "x": [0], "y": [0], "dw": [K.shape[0]], "dh": [K.shape[0]]}

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            pn.pane.Markdown(f"**Live run** (teacher task, SGD, {html.escape(_device_name())})", margin=(5, 10, 0, 10)),
            self._widget("live_N", pn.widgets.IntInput, "N (key/query dimension)"),
            self._widget("live_H", pn.widgets.IntInput, "H (heads)"),
            self._widget("live_L", pn.widgets.IntInput, "L (blocks)"),
            self._widget("live_alpha_A", pn.widgets.RadioButtonGroup, "αA"),
            self._widget("live_alpha_L", pn.widgets.RadioButtonGroup, "αL"),
            self._widget("live_eta0", pn.widgets.FloatInput, "η0", step=0.1),
            self._widget("live_steps", pn.widgets.IntInput, "steps"),
            pn.Row(self._train_button, self._stop_button),
            self._status_pane,
            width=280,
        )
        explain = pn.pane.Markdown(
            "Residual width n = N·H; branches × β0 (L/L0)^−αL; logits q·k / N^αA; SGD with learning rates η0 γ0² n × "
            "(L/L0)^(2αL−1) (× N^(2αA−2) for W_Q, W_K). With αA = 1 every head's logits vanish at init and heads become "
            "identical as N grows; αA = ½ keeps a random population of heads. With αL = 1 the key weights keep moving O(1) "
            "at any depth; with αL = ½ they move as L^−½ and attention stops learning (Bordelon, Chaudhry & Pehlevan, "
            "*Infinite Limits of Multi-head Transformer Dynamics*, NeurIPS 2024). Sweeps: teacher task, 300 steps, batch 32.",
            css_classes=["pocoviz-lim-explain"], sizing_mode="stretch_width", styles={"font-size": "12px"},
        )  # fmt: skip
        pane = lambda f: pn.pane.Bokeh(f)  # noqa: E731
        kernels = pn.Column(
            pn.pane.Markdown("**Initial feature kernels** (24 samples, cosine)", margin=(0, 10)),
            pn.Row(*[pane(self._kernel_figs[(a, L)]) for a in (1.0, 0.5) for L in (2, 32)]),
        )
        plots = pn.Column(
            self._alert,
            self._summary,
            pn.Row(pane(self._f_headvar), pane(self._f_lr), explain),
            pn.Row(pane(self._f_loss_N), pane(self._f_loss_H), pane(self._f_loss_L)),
            pn.Row(pane(self._f_spread), pane(self._f_dwk)),
            pn.Row(pane(self._f_hist), kernels),
            pane(self._f_live),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-limits"])

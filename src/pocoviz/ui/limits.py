"""Transformer limits tab: which parameterizations keep attention learning as the key/query
dimension N, the number of heads H and the depth L grow (Bordelon, Chaudhry & Pehlevan, *Infinite
Limits of Multi-head Transformer Dynamics*, NeurIPS 2024; spec ``transformer_limits.md`` §4.3).

From the shipped sweeps (``assets/limits``, made by ``pocoviz make-assets --limits-only``): the
variance of the attention logits across heads vs N (αA = 1 collapses heads, αA = ½ keeps them
diverse), learning-rate transfer across N, loss curves vs N, H and L, the spread of outputs across
seeds vs H, and the movement of the key weights vs L (αL = 1 keeps attention learning, αL = ½ does
not). Live, from forward passes: histograms of the logits over many heads (N = 1 vs 16) and the
initial feature kernels at two depths. And a live training run whose loss streams in, drawn beside
its settings and Train button.

The state, the jobs and the figure data live in
:class:`pocoviz.controllers.limits.LimitsController`; this module draws its snapshots.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import panel as pn
from bokeh.models import ColorBar, ColumnDataSource, FixedTicker, Legend, LinearColorMapper, PrintfTickFormatter, Range1d
from bokeh.plotting import figure

from pocoviz.controllers.limits import FigureData, LimitsController, LimitsSnapshot, log_range, log_ticks

from .base import TabView

W, H_ = 400, 330
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
#: the sweep figures, in the order shown
SWEEP_FIGURES = ("headvar", "lr", "spread", "dwk", "loss-n", "loss-h", "loss-l", "hist")


def _fig(name: str, *, width: int = W, height: int = H_, x_log: bool = False, y_log: bool = False, **kw: Any):
    """An empty figure with explicit ranges (Bokeh warns when it must guess a log range from no
    data), the toolbar beside it (above, it covers the title) and the CSS class the tests use."""
    f = figure(
        width=width, height=height, x_axis_type="log" if x_log else "linear", y_axis_type="log" if y_log else "linear",
        x_range=Range1d(1, 10) if x_log else Range1d(0, 1), y_range=Range1d(0.1, 1) if y_log else Range1d(0, 1),
        tools=TOOLS, toolbar_location="right", css_classes=[f"pocoviz-lim-{name}"], **kw,
    )  # fmt: skip
    f.title.text_font_size = "12px"
    f.min_border_right = 10
    return f


def _ticks(f, axis: str, ticks: tuple[float, ...]) -> None:
    """Ticks at ``ticks`` on a log axis, written plainly (0.05, not 5.000e−2)."""
    if ticks:
        ax = getattr(f, f"{axis}axis")
        ax.ticker = FixedTicker(ticks=list(ticks), minor_ticks=[])
        ax.formatter = PrintfTickFormatter(format="%g")


def draw_figure(f, data: FigureData, legend_columns: int = 2) -> None:
    """Draw ``data`` into the empty figure ``f``: series, ranges, log ticks, and the legend below
    the plot (inside, it covered the data)."""
    f.title.text = data.title
    f.xaxis.axis_label, f.yaxis.axis_label = data.xlabel, data.ylabel
    items = []
    for s in data.series:
        if s.kind == "point":
            f.scatter(s.x, s.y, color=s.color, size=10, marker="star")
            continue
        if s.kind == "step":
            r = f.line(s.x, s.y, color=s.color, line_width=s.width)
        else:
            r = f.line(s.x, s.y, color=s.color, line_dash=s.dash, line_width=s.width)
            if s.markers:
                f.scatter(s.x, s.y, color=s.color, size=6)
        if s.label:
            items.append((s.label, [r]))
    if data.x_range is not None:
        f.x_range.start, f.x_range.end = data.x_range
    if data.y_range is not None:
        f.y_range.start, f.y_range.end = data.y_range
    _ticks(f, "x", data.x_ticks)
    _ticks(f, "y", data.y_ticks)
    if items:
        # columns only as many as fit side by side (Bokeh sizes every column by the widest label)
        label_width = int(5.8 * max(len(label) for label, _ in items))
        columns = max(1, min(legend_columns, (f.width - 20) // (label_width + 40)))
        rows = (len(items) + columns - 1) // columns
        legend = Legend(items=items, ncols=columns, nrows=rows, label_text_font_size="10px", spacing=0, padding=2, margin=2)
        legend.glyph_width, legend.label_width = 18, label_width
        f.add_layout(legend, "below")
        f.height = H_ + 18 * rows


class LimitsView(TabView):
    """The Transformer limits tab: widgets bound to a :class:`LimitsController`, figures drawn from
    its snapshots (see module docstring)."""

    css_prefix = "pocoviz-lim"

    def __init__(self, data_dir: str | None = None, **params: Any):
        self.controller = LimitsController()
        super().__init__(**params)
        self._alert = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-lim-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._summary = pn.pane.HTML("", css_classes=["pocoviz-lim-summary"], sizing_mode="stretch_width")
        self._train_button = pn.widgets.Button(label="▶ Train", width=110, css_classes=["pocoviz-lim-train"])
        self._train_button.on_click(lambda e: self.controller.start_live())
        self._stop_button = pn.widgets.Button(label="■ Stop", width=80, css_classes=["pocoviz-lim-stop"])
        self._stop_button.on_click(lambda e: self.controller.stop_live())
        self._drawn: set[str] = set()
        self._live_id = -1
        self._render_pending = False
        self._build_plots()
        self.controller.param.watch(lambda event: self._schedule_render(), "version")
        self.render(self.controller.snapshot())

    # ------------------------------------------------------------------ controller -> figures
    def _schedule_render(self) -> None:
        if self._render_pending:
            return
        self._render_pending = True

        def run() -> None:
            self._render_pending = False
            self.render(self.controller.snapshot())

        self._on_loop(run)

    def render(self, snap: LimitsSnapshot) -> None:
        """Draw what is new in ``snap``: each figure once its data exist, the live run's new points."""
        problems = [
            m for m in (snap.missing and f"Shipped sweeps missing or unreadable (live plots still work): {snap.missing}", snap.forward_error, snap.notice) if m
        ]
        self._alert.object = html.escape("; ".join(problems))
        self._alert.visible = bool(problems)
        self._summary.object = snap.summary
        for name, data in snap.figures.items():
            if name not in self._drawn and name in self._figs:
                draw_figure(self._figs[name], data, legend_columns=3 if name.startswith("loss") else 2)
                self._drawn.add(name)
        if snap.kernels and "kernels" not in self._drawn:
            for key, K in snap.kernels.items():
                self._kernel_sources[key].data = {"image": [np.flipud(K)], "x": [0], "y": [0], "dw": [K.shape[0]], "dh": [K.shape[0]]}
            self._drawn.add("kernels")
        self._render_live(snap)

    def _render_live(self, snap: LimitsSnapshot) -> None:
        live = snap.live
        src, f = self._live_source, self._f_live
        if live.id != self._live_id:
            self._live_id = live.id
            src.data = {"step": [], "loss": []}
            if live.total_steps:
                f.x_range.start, f.x_range.end = 0, live.total_steps
        n = len(src.data["step"])
        if len(live.steps) > n:
            src.stream({"step": list(live.steps[n:]), "loss": list(live.loss[n:])})
            loss = np.asarray(live.loss, float)
            loss = loss[np.isfinite(loss) & (loss > 0)]
            if loss.size:
                lo, hi = log_range(float(loss.min()), float(loss.max()))
                f.y_range.start, f.y_range.end = lo, hi
                _ticks(f, "y", log_ticks(lo, hi))
        self._status_pane.object = html.escape(live.status)  # after the points: "done" never precedes the last one

    # ------------------------------------------------------------------ figures
    def _build_plots(self) -> None:
        log_x = {"headvar", "lr", "spread", "dwk"}
        self._figs = {
            name: _fig(name, x_log=name in log_x, y_log=name != "hist", width=W if not name.startswith("loss") else 330)
            for name in SWEEP_FIGURES
        }
        self._f_live = _fig("live", width=620, height=420, y_log=True, title="live run: training loss (every 5 steps)")
        self._f_live.x_range.end = float(self.controller.live_steps)
        self._f_live.xaxis.axis_label, self._f_live.yaxis.axis_label = "step", "train loss"
        _ticks(self._f_live, "y", log_ticks(0.1, 1.0))
        self._live_source = ColumnDataSource({"step": [], "loss": []})
        self._f_live.line("step", "loss", source=self._live_source, color="#D55E00", line_width=2)
        self._f_live.scatter("step", "loss", source=self._live_source, color="#D55E00", size=3)
        self._kernel_figs = {}
        self._kernel_sources = {}
        cmap = LinearColorMapper(palette="Viridis256", low=-1, high=1)
        for a in (1.0, 0.5):
            for L in (2, 32):
                f = figure(
                    width=165 if L == 2 else 215, height=180, title=f"αL = {'1' if a == 1 else '½'}, L = {L}", toolbar_location=None,
                    x_range=(0, 24), y_range=(0, 24), css_classes=["pocoviz-lim-kernel"],
                )  # fmt: skip
                if L != 2:  # the scale of the row's two kernels, beside the second
                    f.add_layout(ColorBar(color_mapper=cmap, width=10, major_label_text_font_size="9px", ticker=FixedTicker(ticks=[-1, 0, 1])), "right")
                f.axis.visible = False
                f.grid.visible = False
                f.title.text_font_size = "11px"
                src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
                f.image("image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=cmap)
                self._kernel_figs[(a, L)] = f
                self._kernel_sources[(a, L)] = src

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> pn.viewable.Viewable:
        c = self.controller

        def number(name: str, kind: type, label: str, **kw: Any):
            return self._widget(name, kind, label, owner=c, width=125, **kw)

        controls = pn.Column(
            pn.pane.Markdown(f"**Live run** (teacher task, SGD, {html.escape(c.device)})", margin=(5, 10, 0, 10)),
            pn.Row(number("live_N", pn.widgets.IntInput, "N (key/query dim)"), number("live_H", pn.widgets.IntInput, "H (heads)")),
            pn.Row(number("live_L", pn.widgets.IntInput, "L (blocks)"), number("live_steps", pn.widgets.IntInput, "steps")),
            number("live_eta0", pn.widgets.FloatInput, "η0", step=0.1),
            self._widget("live_alpha_A", pn.widgets.RadioButtonGroup, "αA", owner=c),
            self._widget("live_alpha_L", pn.widgets.RadioButtonGroup, "αL", owner=c),
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
            css_classes=["pocoviz-lim-explain"], sizing_mode="stretch_width", styles={"font-size": "12px"}, min_width=200,
        )  # fmt: skip
        pane = lambda f: pn.pane.Bokeh(f)  # noqa: E731
        kernels = pn.Column(
            pn.pane.Markdown("**Initial feature kernels** (24 samples, cosine)", margin=(0, 10)),
            pn.Row(*[pane(self._kernel_figs[key]) for key in ((1.0, 2), (1.0, 32))]),
            pn.Row(*[pane(self._kernel_figs[key]) for key in ((0.5, 2), (0.5, 32))]),
        )
        live = pn.Row(controls, pane(self._f_live), explain, sizing_mode="stretch_width")
        figs = {name: pane(f) for name, f in self._figs.items()}
        sweeps = pn.Column(
            pn.Row(figs["headvar"], figs["lr"], figs["spread"]),
            pn.Row(figs["dwk"], figs["hist"], kernels),
            pn.Row(figs["loss-n"], figs["loss-h"], figs["loss-l"]),
        )
        return pn.Column(self._alert, live, self._summary, sweeps, sizing_mode="stretch_width", css_classes=["pocoviz-limits"])

"""Sequence memory tab: recall playback and capacity of dense associative sequence memories
(Chaudhry, Zavatone-Veth, Krotov & Pehlevan, *Long Sequence Hopfield Memory*, NeurIPS 2023; spec
``seq_hopfield.md`` §4).

- Playback: a model (SeqNet, polynomial or exponential DenseNet, pseudoinverse rule, MixedNet)
  recalls a stored sequence from its first pattern; the stored target, the current state and their
  difference as images; the overlap of the state with every stored pattern over time as a heatmap
  that grows as it plays; the bit errors per step. Presets reproduce the paper's Fig. 1 and 4A.
- Capacity: P_T and P_S against N for d = 1, 2, 3 and exponential: theory lines, simulation markers
  (success rate ≥ 1 − c on a grid around the theory; c adjustable without re-simulating).
- Correlated patterns: exact transitions of the plain rule against the pseudoinverse rule, on biased
  random patterns (vs ε) or on the bundled digits (vs P).
- MixedNet timing: dwell per pattern against τ, for d = 1, 2, 10.

State, jobs, playback position and URL state live in
:class:`pocoviz.controllers.seqmem.SeqMemController`; this module draws its snapshots. Playback is
a server-side periodic callback that calls the controller's ``advance``, so the browser sends
nothing per step. The playback bar sits above the figures (in the first screen at 1280×800) and the
analysis figures wrap instead of widening the page.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d, Span
from bokeh.plotting import figure

from pocoviz.controllers.seqmem import CAP_COLORS, SeqMemController, SeqMemSnapshot

from .base import TabView
from .theme import REGION_PALETTE

IMG = 150
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
#: the numeric settings typed into boxes: (parameter, label, width, step)
BOXES = (("degree", "d (degree)", 250, 1), ("P", "P (sequence length)", 250, 1), ("bias", "ε (bias, biased patterns)", 250, 0.05),
         ("tau", "τ (MixedNet)", 120, 1), ("lam", "λ (MixedNet)", 120, 0.1), ("flip", "cue flips", 120, 1), ("seed", "seed", 120, 1))  # fmt: skip


class SeqMemView(TabView):
    """The Sequence memory tab (see module docstring)."""

    css_prefix = "pocoviz-sm"

    def __init__(self, data_dir: str | None = None, controller: SeqMemController | None = None, **params: Any):
        super().__init__(**params)
        self.controller = controller if controller is not None else SeqMemController()
        self._play_cb = None
        self._build_plots()
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-sm-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._notice = pn.pane.HTML("", css_classes=["pocoviz-sm-notice"], width=260, styles={"font-size": "12px", "color": "#b35900", "font-weight": "600"})
        self._readout = pn.pane.HTML("", css_classes=["pocoviz-sm-readout"], sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(value=0, max=100, width=240, visible=False, css_classes=["pocoviz-sm-progress"])
        self._play_button = pn.widgets.Button(label="▶ Play", width=80, css_classes=["pocoviz-sm-play"])
        self._play_button.on_click(lambda e: self.controller.toggle_play())
        self._step_button = pn.widgets.Button(label="Step ›", width=70, css_classes=["pocoviz-sm-step"])
        self._step_button.on_click(lambda e: self.controller.advance(1))
        self._reset_button = pn.widgets.Button(label="⟲ Reset", width=80, css_classes=["pocoviz-sm-reset"])
        self._reset_button.on_click(lambda e: self.controller.reset())
        self.controller.param.watch(lambda event: self._request_render(), "version")
        self.controller.param.watch(lambda event: self._on_loop(self._sync_playback), ["playing", "speed"])
        self._render()

    # ------------------------------------------------------------------ playback
    def _sync_playback(self) -> None:
        """The periodic callback runs while the controller plays, at its speed."""
        ctrl = self.controller
        self._play_button.label = "⏸ Pause" if ctrl.playing else "▶ Play"
        if ctrl.playing and self._play_cb is None:
            if pn.state.curdoc is None or self._doc is None:
                return  # not served (tests drive advance() themselves)
            self._play_cb = pn.state.add_periodic_callback(lambda: self._on_loop(lambda: ctrl.advance(1)), period=int(1000 / ctrl.speed))
        elif not ctrl.playing and self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        elif self._play_cb is not None:
            self._play_cb.period = int(1000 / ctrl.speed)

    def close(self, timeout: float = 60.0) -> None:
        self.controller.playing = False
        if self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        super().close(timeout)

    # ------------------------------------------------------------------ rendering
    def _render(self) -> None:
        self._render_pending = False
        snap = self.controller.snapshot()
        self._notice.object = html.escape(snap.notice)
        self._status_pane.object = html.escape(snap.status)
        self._progress.visible = snap.progress is not None
        self._progress.value = int(round(100 * (snap.progress or 0.0)))
        if snap.rollout is not None and self._changed("rollout", snap.rollout):
            self._draw_rollout(snap)
        if snap.frame is not None:
            self._draw_frame(snap)
        if self._changed("capacity", (id(snap.capacity), snap.c)):
            self._draw_capacity(snap)
        if snap.corr and self._changed("corr", snap.corr):
            self._draw_corr(snap)
        if snap.timing and self._changed("timing", snap.timing):
            self._draw_timing(snap)

    def _draw_rollout(self, snap: SeqMemSnapshot) -> None:
        r, info = snap.rollout, snap.info
        T, P = len(r.errors), info["P"]
        self._heat_fig.x_range.start, self._heat_fig.x_range.end = -0.5, T - 0.5
        self._heat_fig.y_range.start, self._heat_fig.y_range.end = 0.5, P + 0.5
        self._err_fig.x_range.start, self._err_fig.x_range.end = -0.5, T - 0.5
        self._err_fig.y_range.start, self._err_fig.y_range.end = -0.5, max(2.0, float(r.errors.max()) * 1.1)
        self._heat_fig.title.text = f"overlap m^μ(t) = ξ^μ·S(t)/N with each of the {P} stored patterns"
        rows, cols = snap.shape
        for f in self._img_figs:
            f.x_range.start, f.x_range.end, f.y_range.start, f.y_range.end = 0, cols, 0, rows

    def _draw_frame(self, snap: SeqMemSnapshot) -> None:
        fr, info = snap.frame, snap.info
        rows, cols = snap.shape
        for src, img in zip(self._img_sources, fr.images):
            src.data = {"image": [img], "x": [0], "y": [0], "dw": [cols], "dh": [rows]}
        self._heat_source.data = {"image": [fr.heat], "x": [-0.5], "y": [0.5], "dw": [fr.heat.shape[1]], "dh": [fr.heat.shape[0]], "what": ["overlaps"]}
        self._err_source.data = {"t": np.arange(fr.t + 1), "errors": fr.errors}
        self._cursor.location = fr.t
        label = "" if fr.label is None else f" (digit {fr.label})"
        first = fr.first_error
        self._readout.object = (
            f"<b>{html.escape(info['model'])}</b>, N = {info['N']}, P = {info['P']}"
            + (f", rank O = {info['rank']}" if "rank" in info else "")
            + f" &nbsp;|&nbsp; step <b>{fr.t}</b> / {fr.last}: target ξ<sup>{fr.target + 1}</sup>{label}, "
            f"<b>{fr.bit_errors}</b> bit errors, nearest stored pattern ξ<sup>{fr.nearest + 1}</sup> (m = {fr.nearest_overlap:.2f}) &nbsp;|&nbsp; "
            + (
                "<span style='color:#1a7f37;font-weight:600'>recall perfect so far</span>"
                if first is None or first > fr.t
                else f"<span style='color:#b35900;font-weight:600'>first error at step {first}</span>"
            )
        )

    def _draw_capacity(self, snap: SeqMemSnapshot) -> None:
        for src, which in ((self._cap_t_source, "P_T"), (self._cap_s_source, "P_S")):
            src.data = dict(snap.capacity_points[which])
        self._cap_fig.title.text = f"capacity vs N (markers: success ≥ {1 - snap.c:.2f})"

    def _draw_corr(self, snap: SeqMemSnapshot) -> None:
        res = snap.corr
        xs, ys, colors, labels, dashes = [], [], [], [], []
        for i, ((kind, d), rate) in enumerate(res["rates"].items()):
            xs.append(res["x"])
            ys.append(rate)
            colors.append(REGION_PALETTE[i % len(REGION_PALETTE)] if kind == "plain" else ["#000000", "#555555", "#999999"][i % 3])
            labels.append(f"{kind} {'exp' if d == 'exp' else f'd = {d}'}")
            dashes.append("solid" if kind == "plain" else "dashed")
        self._corr_source.data = {"xs": xs, "ys": ys, "color": colors, "label": labels, "dash": dashes}
        biased = res["family"] == "biased"
        self._corr_fig.xaxis.axis_label = "bias ε (N = 100, P = 50)" if biased else "sequence length P (digits, N = 64)"
        lo, hi = float(np.min(res["x"])), float(np.max(res["x"]))
        pad = 0.03 * (hi - lo)
        self._corr_fig.x_range.start, self._corr_fig.x_range.end = lo - pad, hi + pad
        self._corr_fig.title.text = "exact transitions: plain vs pseudoinverse" + (" (biased)" if biased else " (digits)")

    def _draw_timing(self, snap: SeqMemSnapshot) -> None:
        out = snap.timing
        self._timing_source.data = {
            "xs": [out["tau"]] * 3, "ys": [out[1], out[2], out[10]], "color": ["#999999", "#E69F00", "#0072B2"],
            "label": ["d = 1 (TAN)", "d = 2", "d = 10"],
        }  # fmt: skip

    # ------------------------------------------------------------------ figures and layout
    def _build_plots(self) -> None:
        from pocoviz.seqmem import capacity_theory

        cmap = LinearColorMapper(palette=["#ffffff", "#1f1f1f"], low=-1, high=1)
        emap = LinearColorMapper(palette=["#ffffff", "#d62728"], low=0, high=1)
        self._img_figs, self._img_sources = [], []
        for title, mapper, cls in (("stored target", cmap, "target"), ("current state", cmap, "state"), ("difference", emap, "diff")):
            f = figure(width=IMG, height=IMG + 25, title=title, toolbar_location=None, x_range=(0, 8), y_range=(0, 8), css_classes=[f"pocoviz-sm-{cls}"])
            f.axis.visible = False
            f.grid.visible = False
            src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
            f.image("image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=mapper)
            self._img_figs.append(f)
            self._img_sources.append(src)
        heat_map = LinearColorMapper(palette="RdBu11", low=-1, high=1, nan_color="#f4f4f4")
        self._heat_fig = figure(
            height=250, title="overlaps", x_axis_label="step t", y_axis_label="stored pattern μ", tools=TOOLS, sizing_mode="stretch_width",
            x_range=(0, 1), y_range=(0, 1), css_classes=["pocoviz-sm-heat"],
        )  # fmt: skip
        self._heat_fig.yaxis.ticker.desired_num_ticks = 6  # up to 400 patterns: labels never collide
        self._heat_fig.title.text_font_size = "12px"
        self._heat_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": [], "what": []})
        self._heat_fig.image("image", x="x", y="y", dw="dw", dh="dh", source=self._heat_source, color_mapper=heat_map)
        self._cursor = Span(location=0, dimension="height", line_color="#000000", line_width=1, line_alpha=0.5)
        self._heat_fig.add_layout(self._cursor)
        self._err_fig = figure(
            height=150, title="bit errors vs the target", x_axis_label="step t", y_axis_label="errors", tools=TOOLS, sizing_mode="stretch_width",
            x_range=(0, 1), y_range=(0, 1), css_classes=["pocoviz-sm-errors"],
        )  # fmt: skip
        self._err_fig.title.text_font_size = "12px"
        self._err_source = ColumnDataSource({"t": [], "errors": []})
        self._err_fig.step("t", "errors", source=self._err_source, color="#d62728", line_width=2, mode="center")
        # capacity: theory lines always there, so the log axis is never empty
        self._cap_fig = figure(
            width=600, height=400, title="capacity vs N", x_axis_label="N (neurons)", y_axis_label="patterns P", y_axis_type="log",
            tools=TOOLS, css_classes=["pocoviz-sm-capacity"], x_range=Range1d(0, 105),
        )  # fmt: skip
        for d, Ns in ((1, np.arange(10, 101)), (2, np.arange(10, 101)), (3, np.arange(10, 41)), ("exp", np.arange(6, 21))):
            th = capacity_theory("dense", Ns, d)
            name = "exp" if d == "exp" else f"d = {d}"
            self._cap_fig.line(Ns, th["P_T"], color=CAP_COLORS[d], line_width=2, legend_label=f"{name}: P_T")
            self._cap_fig.line(Ns, th["P_S"], color=CAP_COLORS[d], line_width=2, line_dash="dashed", legend_label=f"{name}: P_S")
        empty = {"N": [], "P": [], "color": [], "degree": []}
        self._cap_t_source = ColumnDataSource(dict(empty))
        self._cap_s_source = ColumnDataSource(dict(empty))
        self._cap_fig.scatter("N", "P", source=self._cap_t_source, color="color", size=7, legend_label="simulated P_T")
        self._cap_fig.scatter("N", "P", source=self._cap_s_source, color="color", size=8, marker="triangle", fill_alpha=0.3, legend_label="simulated P_S")
        # correlated patterns
        self._corr_fig = figure(
            width=440, height=380, title="exact transitions", x_axis_label="", y_axis_label="fraction of exact transitions",
            tools=TOOLS, x_range=Range1d(0, 1), y_range=Range1d(-0.03, 1.05), css_classes=["pocoviz-sm-correlated"],
        )  # fmt: skip
        self._corr_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": [], "dash": []})
        self._corr_fig.multi_line("xs", "ys", source=self._corr_source, color="color", line_dash="dash", line_width=2, legend_field="label")
        # MixedNet timing
        self._timing_fig = figure(
            width=440, height=380, title="MixedNet dwell vs τ (N 100, P 20, λ 2.5)", x_axis_label="τ (steps per pattern)",
            y_axis_label="mean dwell (steps)", tools=TOOLS, x_range=Range1d(0.5, 8.5), y_range=Range1d(0, 9), css_classes=["pocoviz-sm-timing"],
        )  # fmt: skip
        self._timing_fig.line([1, 8], [1, 8], color="#bbbbbb", line_dash="dotted", legend_label="dwell = τ")
        self._timing_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._timing_fig.multi_line("xs", "ys", source=self._timing_source, color="color", line_width=2.5, legend_field="label")
        for f, ncols in ((self._cap_fig, 4), (self._corr_fig, 3), (self._timing_fig, 2)):
            f.title.text_font_size = "12px"
            legend = f.legend[0]
            legend.label_text_font_size = "10px"
            legend.ncols = ncols
            legend.padding, legend.spacing, legend.margin = 2, 0, 2
            legend.glyph_width = 18
            f.add_layout(legend, "below")  # outside: the data stay visible

    def _box(self, name: str, label: str, width: int, step: float) -> pn.widgets.Widget:
        """A number box for the controller's setting ``name``, its bounds in the label. The box has
        no bounds of its own (a browser input with bounds dropped 5000 silently): the controller
        clamps, says so in the notice, and the box shows the value used."""
        ctrl = self.controller
        kind = pn.widgets.IntInput if isinstance(ctrl.param[name], param.Integer) else pn.widgets.FloatInput
        w = kind(label=f"{label} [{ctrl.bounds_text(name)}]", value=getattr(ctrl, name), width=width, step=step, css_classes=[f"pocoviz-sm-{name}"])

        def from_widget(event: Any) -> None:
            if event.new is None or event.new == getattr(ctrl, name):
                return  # the controller's own value coming back (keeps its notice)
            used = ctrl.set_setting(name, event.new)
            if used != event.new:
                self._on_loop(lambda: setattr(w, "value", used))

        def to_widget(event: Any) -> None:
            if w.value != event.new:  # a preset or a link set it (on the session's loop)
                w.value = event.new

        w.param.watch(from_widget, "value")
        ctrl.param.watch(to_widget, name)
        return w

    def _build_layout(self) -> pn.viewable.Viewable:
        ctrl = self.controller
        boxes = {name: self._box(name, label, width, step) for name, label, width, step in BOXES}
        controls = pn.Column(
            self._widget("preset", pn.widgets.Select, "Preset (the paper's figures)", owner=ctrl),
            self._widget("model", pn.widgets.Select, "Model", owner=ctrl),
            self._widget("patterns", pn.widgets.Select, "Patterns", owner=ctrl),
            boxes["degree"],
            self._widget("N", pn.widgets.Select, "N (neurons)", owner=ctrl),
            boxes["P"],
            boxes["bias"],
            pn.Row(boxes["tau"], boxes["lam"]),
            pn.Row(boxes["flip"], boxes["seed"]),
            self._notice,
            pn.pane.Markdown("**Capacity**", margin=(5, 10, 0, 10)),
            self._widget("c", pn.widgets.FloatSlider, "tolerance c (success ≥ 1 − c)", owner=ctrl, step=0.05),
            self._widget("correlated", pn.widgets.RadioButtonGroup, "Correlated patterns", owner=ctrl),
            self._progress,
            self._status_pane,
            width=280,
        )
        playback = pn.Row(
            self._play_button, self._step_button, self._reset_button,
            self._widget("t", pn.widgets.IntSlider, "step", owner=ctrl, width=220),
            self._widget("speed", pn.widgets.IntSlider, "speed (steps/s)", owner=ctrl, width=160),
            css_classes=["pocoviz-sm-playback"],
        )  # fmt: skip
        explain = pn.pane.Markdown(
            "Synchronous recall from ξ¹; the state should step through ξ¹ → ξ² → … (τ steps each for MixedNet). "
            "Polynomial DenseNets store ~N^d/(2(2d−1)!! log N) transitions, the exponential one ~β^(N−1)/(2 log N) with "
            "β = e²/cosh 2 ≈ 1.964 (Chaudhry, Zavatone-Veth, Krotov & Pehlevan, *Long Sequence Hopfield Memory*, NeurIPS 2023). "
            "Capacity markers: largest P whose success rate over 8 random sequences is ≥ 1 − c.",
            css_classes=["pocoviz-sm-explain"], width=310, styles={"font-size": "12px"},
        )  # fmt: skip
        images = pn.Row(*[pn.pane.Bokeh(f, width=IMG + 10, height=IMG + 35) for f in self._img_figs])
        bokeh = lambda f: pn.pane.Bokeh(f, width=f.width + 10, height=f.height + 10)  # noqa: E731
        plots = pn.Column(
            self._readout,
            playback,
            images,
            pn.pane.Bokeh(self._heat_fig, sizing_mode="stretch_width", height=260),
            pn.pane.Bokeh(self._err_fig, sizing_mode="stretch_width", height=160),
            # fixed rows that fit 1280 px beside the sidebar (a FlexBox here drew these figures squashed)
            pn.Row(bokeh(self._cap_fig), explain),
            pn.Row(bokeh(self._corr_fig), bokeh(self._timing_fig)),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-seqmem"])

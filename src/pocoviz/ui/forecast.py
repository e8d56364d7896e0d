"""Forecast tab: widgets and figures that render :class:`pocoviz.controllers.forecast.ForecastController`.

The controller owns the state, the background forecasts, the metrics and the link; this module
binds widgets to its parameters and draws its :meth:`~ForecastController.snapshot` on the
session's event loop whenever the snapshot changes (``controller.version``) or the cursor moves.
Playback is a server-side clock (a periodic callback stepping the cursor): the browser sends
nothing per frame, so a slow client drops frames instead of slowing the recording down.
"""

from __future__ import annotations

import html
import io
import os
import time
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)
import numpy as np
import panel as pn
import param
from bokeh.core.properties import value as bk_value
from bokeh.models import (
    BoxAnnotation,
    ColumnDataSource,
    CustomJSHover,
    FixedTicker,
    HoverTool,
    Legend,
    LegendItem,
    Range1d,
    SaveTool,
    Span,
)
from bokeh.plotting import figure
from holoviews.operation.datashader import rasterize
from panel.io.callbacks import PeriodicCallback

from pocoviz.controllers.forecast import (
    COPY_LAST_COLOR,
    MAX_MODELS,
    MODEL_COLORS,
    ForecastController,
    ForecastSnapshot,
)

from .base import TabView, quiet_spinner

hv.Store.set_current_backend("bokeh")

__all__ = ["MODEL_COLORS", "ForecastView"]

RASTER_HEIGHT = 300
TRACES_HEIGHT = 470
#: while playing, the readout, the raster's cursor mark and the link's ``t`` follow a few times a
#: second, not every frame (each is one more message and a repaint of the raster)
CLOCK_EVERY_S = 0.25
CONTROLS_WIDTH = 300


def _html_table(header: tuple[str, ...], rows: list[list[str]], css: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: the raster's hover: unit id, label and region of the row under the pointer (rows are sorted by
#: region, so the row number itself means nothing to a user)
_ROW_HOVER_JS = """
const r = Math.round(value);
if (!(r >= 0 && r < ids.length)) return "–";
if (format === "id") return String(ids[r]);
if (format === "label") return names[r];
return regions[r];
"""


class ForecastView(TabView):
    """The Forecast tab (see module docstring)."""

    css_prefix = "pocoviz-f"
    #: the cursor goes into the link with the readout (a few times a second while playing), not every frame
    url_write_skip = ("cursor",)

    _clim = param.Tuple(default=(-3.0, 3.0), precedence=-1)
    _raster_title = param.String(default="", precedence=-1)
    _raster_xlabel = param.String(default="time (s)", precedence=-1)

    def __init__(self, data_dir: str | None = None, **params: Any):
        self.controller = ForecastController(data_dir)
        super().__init__(**params)
        self._pending = False
        self._playing = False
        self._play_cb: PeriodicCallback | None = None
        self._last_clock = 0.0
        self._play_since, self._played = 0.0, 0
        self._applied: dict[str, Any] = {}
        self._raster_marks: dict[str, BoxAnnotation] = {}
        self._hover_rows: dict[str, list] = {"ids": [], "names": [], "regions": []}
        self._build_plots()
        self._build_widgets()
        self.controller.param.watch(lambda *events: self.request_render(), ["version", "cursor"])
        self.render()

    # ================================================================= rendering
    def request_render(self) -> None:
        """Render the controller's snapshot on the session's event loop (requests coalesce)."""
        if self._pending:
            return
        self._pending = True
        self._on_loop(self._render_tick)

    def _render_tick(self) -> None:
        self._pending = False
        doc = self._doc
        if doc is not None:
            doc.hold("combine")  # one websocket message per frame
        try:
            self.render()
        finally:
            if doc is not None:
                doc.unhold()

    def render(self, snap: ForecastSnapshot | None = None) -> ForecastSnapshot:
        """Show ``snap`` (default: the controller's snapshot now); returns it."""
        snap = snap or self.controller.snapshot()
        self._once("layout", snap.layout, lambda: self._apply_layout(snap))
        self._once("lines", snap.lines, lambda: setattr(self.frame_source, "data", snap.lines))  # only what changed travels
        self._once("legend", snap.legend, lambda: self._apply_legend(snap))
        now = time.monotonic()
        if not self._playing or now - self._last_clock >= CLOCK_EVERY_S:
            self._last_clock = now
            self.clock.object = snap.clock
            self._place_marks(snap)
            self._write_url()
        self._once("raster", snap.raster.key if snap.raster else None, lambda: self._apply_raster(snap))
        self._once("metrics", snap.metrics, lambda: self._apply_metrics(snap))
        self._once("models", (snap.models, snap.curves), lambda: self._apply_models(snap))
        self._once("texts", (snap.selection, snap.needs_adaptation, snap.error, snap.notice, snap.busy, snap.export_label),
                   lambda: self._apply_texts(snap))  # fmt: skip
        lo, hi = snap.cursor_bounds
        if (self.player.start, self.player.end) != (lo, hi) and hi > lo:
            self.player.param.update(start=lo, end=hi)
        return snap

    def _apply_texts(self, snap: ForecastSnapshot) -> None:
        self.selection_info.object = html.escape(snap.selection)
        self.adapt_button.visible = snap.needs_adaptation
        self.alert.object = html.escape(snap.error)
        self.alert.visible = bool(snap.error)
        self.notice.object = html.escape(snap.notice)
        self.notice.visible = bool(snap.notice)
        self.spinner.value = self.spinner.visible = snap.busy
        self.netcdf_download.label = snap.export_label

    def _once(self, name: str, key: Any, apply) -> None:
        """Run ``apply`` when ``key`` differs from what was last applied under ``name``."""
        if name in self._applied and self._applied[name] == key:
            return
        self._applied[name] = key
        apply()

    def _apply_layout(self, snap: ForecastSnapshot) -> None:
        lay = snap.layout
        self._x_range.start, self._x_range.end = lay.x_range
        self._y_range.start, self._y_range.end = lay.y_range
        self._horizon_box.left, self._horizon_box.right = lay.horizon
        fig = self.traces_figure
        fig.yaxis.ticker = FixedTicker(ticks=list(lay.offsets))
        fig.yaxis.major_label_overrides = {o: n for o, n in zip(lay.offsets, lay.names)}
        fig.title.text = lay.title

    def _apply_legend(self, snap: ForecastSnapshot) -> None:
        entries = snap.legend[2:]  # after the two recorded layers
        for i, item in enumerate(self._model_items):
            entry = entries[i] if i < len(entries) else None
            item.visible = entry is not None
            if entry is not None:
                item.label = bk_value(entry.label)
                self._model_renderers[i].glyph.line_color = entry.color

    def _place_marks(self, snap: ForecastSnapshot) -> None:
        if snap.raster is None:
            return
        time_s = snap.raster.frame_times
        t = snap.cursor
        for box in self._raster_marks.values():
            box.left = float(time_s[t])
            box.right = float(time_s[min(snap.T - 1, t + snap.P - 1)])

    def _apply_raster(self, snap: ForecastSnapshot) -> None:
        r = snap.raster
        if r is None:
            return
        self._hover_rows = {"ids": list(r.row_ids), "names": list(r.row_names), "regions": list(r.row_regions)}
        self._raster_range.event(x_range=None, y_range=None)
        if r.window is not None:  # a lazily opened recording: the viewport's window of its pyramid
            self._raster_pipe.send(("window", r.window, r.key))
        else:
            rows = np.arange(len(r.row_ids), dtype=float) if r.rows is None else np.asarray(r.rows, dtype=float)
            self._raster_pipe.send((r.time, rows, r.image))
        with param.parameterized.batch_call_watchers(self):
            self._clim = r.clim
            self._raster_title = r.title
            self._raster_xlabel = r.time_label
        self._place_marks(snap)

    def _apply_metrics(self, snap: ForecastSnapshot) -> None:
        m = snap.metrics
        rows = [[f"<span style='color:{c}'>■</span> {html.escape(r[0])}", *map(html.escape, r[1:])] for r, c in zip(m.rows, m.colors)]
        self.metrics_pane.object = (
            f"<b>Running metrics</b> {html.escape(m.caption[len('Running metrics') :])}" + _html_table(m.header, rows, "pocoviz-table")
            if rows
            else "<i>no models chosen</i>"
        )
        self.step_figure.title.text = m.per_step_title
        self.step_figure.yaxis.axis_label = m.per_step_axis
        top = 0.0
        for i, (renderer, item) in enumerate(zip(self._step_renderers, self._step_items)):
            line = m.per_step[i] if i < len(m.per_step) else None
            item.visible = renderer.visible = line is not None
            if line is None:
                renderer.data_source.data = {"x": [], "y": []}
                continue
            renderer.data_source.data = {"x": line["x"], "y": line["y"]}
            renderer.glyph.line_color = line["color"]
            renderer.glyph.line_dash = line["dash"]
            item.label = bk_value(line["model"])
            top = max([top, *[y for y in line["y"] if np.isfinite(y)]])
        self._step_x.start, self._step_x.end = 0.5, snap.P + 0.5
        self._step_y.start, self._step_y.end = 0.0, (1.08 * top) or 1.0
        if m.region_rows:
            self.regions_pane.object = "<b>Score per region</b>" + _html_table(
                tuple(map(html.escape, m.region_header)), [list(map(html.escape, r)) for r in m.region_rows], "pocoviz-table"
            )
        else:
            self.regions_pane.object = ""

    def _apply_models(self, snap: ForecastSnapshot) -> None:
        rows = []
        for s in snap.models:
            if s.state == "computing" and s.progress is not None:
                pct = 100 * s.progress
                state = f"<progress max='100' value='{pct:.0f}'></progress> computing {pct:.0f}%"
            elif s.state == "adapting":
                pct = 100 * (s.progress or 0)
                state = f"<progress max='100' value='{pct:.0f}'></progress> adapting, {pct:.0f}% of the steps"
            else:
                state = html.escape(s.state.replace("-", " "))
            rows.append(f"<div><span style='color:{s.color}'>■</span> <b>{html.escape(s.label)}</b>: {state}"
                        + (f"<br><small>{html.escape(s.message)}</small>" if s.message else "") + "</div>")  # fmt: skip
        self.status_pane.object = "".join(rows)
        curves = snap.curves
        self.curve_pane.visible = self.curve_figure.visible = bool(curves)
        if curves:
            self.curve_source.data = {"xs": [c["x"] for c in curves], "ys": [c["y"] for c in curves],
                                      "color": [c["color"] for c in curves], "model": [c["model"] for c in curves]}  # fmt: skip
            xs = [x for c in curves for x in c["x"]] or [0, 1]
            ys = [y for c in curves for y in c["y"] if np.isfinite(y)] or [0, 1]
            pad = 0.05 * ((max(ys) - min(ys)) or 1.0)
            self._curve_x.start, self._curve_x.end = min(xs), max(max(xs), min(xs) + 1)
            self._curve_y.start, self._curve_y.end = min(ys) - pad, max(ys) + pad

    # ================================================================= figures
    def _build_plots(self) -> None:
        # -- traces: raw Bokeh, one data source updated in place each frame; time runs relative to
        # the cursor, so the axes, the cursor line and the horizon band never move
        self.frame_source = ColumnDataSource(
            {"xs": [], "ys": [], "layer": [], "color": [], "dash": [], "width": [], "unit": []}, name="pocoviz-frame", tags=["pocoviz-frame"]
        )
        self._x_range = Range1d(-1, 1)
        self._y_range = Range1d(-1, 1)
        self.save_tool = SaveTool(filename="pocoviz_forecast")
        fig = figure(
            height=TRACES_HEIGHT, sizing_mode="stretch_width", x_range=self._x_range, y_range=self._y_range,
            tools=["pan", "wheel_zoom", "box_zoom", "reset", self.save_tool], toolbar_location="above",
            title="select units to show traces", x_axis_label="time from the cursor (s)", output_backend="canvas",
        )  # fmt: skip
        self._horizon_box = BoxAnnotation(left=0, right=1, fill_color="#999999", fill_alpha=0.10, line_alpha=0)
        fig.add_layout(self._horizon_box)
        fig.add_layout(Span(location=0, dimension="height", line_color="#555555", line_dash="dotted", line_width=1.2))
        fig.multi_line("xs", "ys", source=self.frame_source, line_color="color", line_dash="dash", line_width="width", line_alpha=0.9)
        # legend entries drawn from renderers with each layer's style (one point far outside the
        # fixed x-range gives each a legend sample without drawing anything)
        away = ([-1e9], [0.0])
        context = fig.line(*away, line_color="#222222", line_width=1.6)
        horizon = fig.line(*away, line_color="#555555", line_width=1.4, line_dash="dashed")
        self._model_renderers = [fig.line(*away, line_color=MODEL_COLORS[i], line_width=2.4) for i in range(MAX_MODELS)]
        self._model_items = [LegendItem(label=bk_value(""), renderers=[r], visible=False) for r in self._model_renderers]
        legend = Legend(items=[LegendItem(label=bk_value("recorded (context)"), renderers=[context]),
                               LegendItem(label=bk_value("recorded (horizon)"), renderers=[horizon]), *self._model_items],
                        location="top_left", label_text_font_size="9pt")  # fmt: skip
        fig.add_layout(legend, "right")
        fig.yaxis.ticker = FixedTicker(ticks=[])
        fig.ygrid.grid_line_alpha = 0.3
        fig.css_classes = ["pocoviz-forecast-traces"]
        self.traces_figure = fig
        self.traces_legend = legend
        self._traces_pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width", height=TRACES_HEIGHT)

        # -- per-step error (MSE or MAE): one line per model and copy-last, each with a legend entry
        self._step_x, self._step_y = Range1d(0.5, 1.5), Range1d(0, 1)
        sfig = figure(height=230, width=330, title="MSE per step ahead", x_axis_label="step ahead", y_axis_label="MSE",
                      x_range=self._step_x, y_range=self._step_y, tools="hover,save", toolbar_location=None)  # fmt: skip
        self._step_renderers = []
        for i in range(MAX_MODELS + 1):
            color = MODEL_COLORS[i] if i < MAX_MODELS else COPY_LAST_COLOR
            src = ColumnDataSource({"x": [], "y": []}, name=f"pocoviz-step-{i}")
            self._step_renderers.append(sfig.line("x", "y", source=src, line_color=color, line_width=2, visible=False))
        self._step_items = [LegendItem(label=bk_value(""), renderers=[r], visible=False) for r in self._step_renderers]
        sfig.add_layout(Legend(items=self._step_items, location="top_left", label_text_font_size="8pt", background_fill_alpha=0.6,
                               padding=2, spacing=0, css_classes=["pocoviz-step-legend"]))  # fmt: skip
        sfig.hover.tooltips = [("step", "@x"), ("error", "@y{0.000}")]
        sfig.css_classes = ["pocoviz-step-mse"]
        self.step_figure = sfig
        self._step_pane = pn.pane.Bokeh(sfig, width=340, height=240)

        # -- adaptation learning curve
        self._curve_x, self._curve_y = Range1d(0, 1), Range1d(0, 1)
        self.curve_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "model": []}, name="pocoviz-adapt-curve")
        cfig = figure(height=200, width=330, title="adaptation: validation score", x_axis_label="step", tools="hover",
                      toolbar_location=None, x_range=self._curve_x, y_range=self._curve_y)  # fmt: skip
        cfig.multi_line("xs", "ys", source=self.curve_source, line_color="color", line_width=2)
        cfig.hover.tooltips = [("model", "@model")]
        cfig.visible = False  # the pane's visibility alone left an empty plot drawn in the browser
        cfig.css_classes = ["pocoviz-adapt-curve"]
        self.curve_figure = cfig
        self.curve_pane = pn.pane.Bokeh(cfig, width=340, height=210, visible=False)

        # -- raster: Datashader, built once, fed by a Pipe; cursor and horizon drawn by a hook
        self._raster_pipe = hv.streams.Pipe(data=None)
        self._raster_range = hv.streams.RangeXY()
        image = hv.DynamicMap(self._image, streams=[self._raster_pipe, self._raster_range])
        raster = rasterize(image, precompute=True, streams=[self._raster_range]).opts(
            cmap="RdBu_r", colorbar=True, responsive=True, height=RASTER_HEIGHT, invert_yaxis=True, tools=["tap"],
            ylabel="unit (sorted by region)", xlabel="time (s)", toolbar="above", framewise=True, padding=0,
            hooks=[self._raster_hook],
        )  # fmt: skip
        raster = raster.apply.opts(clim=self.param._clim, title=self.param._raster_title, xlabel=self.param._raster_xlabel)
        self._tap = hv.streams.Tap(source=raster, x=None, y=None)
        self._tap.add_subscriber(lambda x=None, y=None: self.controller.tap_row(y))
        self.raster_pane = pn.pane.HoloViews(raster, sizing_mode="stretch_width", height=RASTER_HEIGHT, linked_axes=False,
                                              css_classes=["pocoviz-forecast-raster"])  # fmt: skip

        self.metrics_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-metrics"])
        self.regions_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-region-scores"])
        self.status_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-model-status"])
        self.selection_info = pn.pane.Markdown("", css_classes=["pocoviz-selection"], margin=(0, 10))
        self.clock = pn.pane.HTML("", css_classes=["pocoviz-clock"], margin=(4, 10))
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["pocoviz-forecast-error"])
        self.notice = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width",
                                    css_classes=["pocoviz-forecast-notice"])  # fmt: skip
        self.spinner = quiet_spinner(value=False, visible=False, size=20, margin=(8, 10), css_classes=["pocoviz-forecast-busy"])

    def _image(self, data: tuple | None, x_range: tuple | None = None, y_range: tuple | None = None) -> hv.Image:
        kdims, vdims = [hv.Dimension("time_s", label="time (s)"), hv.Dimension("row", label="unit")], [hv.Dimension("activity")]
        if data is not None and len(data) == 3 and isinstance(data[0], str) and data[0] == "window":
            # only the pyramid level and window under the viewport are read (Datashader then fits it to the pixels)
            values, bounds = data[1](x_range, y_range)
            # hv.Image's first array row is its top (largest y); the y axis is inverted on screen
            return hv.Image(np.flipud(values), bounds=bounds, kdims=kdims, vdims=vdims)
        memo = getattr(self, "_image_memo", None)
        if memo is not None and memo[0] is data:  # a pan of an in-memory raster: the same image (Datashader re-fits it)
            return memo[1]
        image = hv.Image(data if data is not None else (np.arange(2.0), np.arange(2.0), np.zeros((2, 2), np.float32)), kdims=kdims, vdims=vdims)
        self._image_memo = (data, image)
        return image

    def _raster_hook(self, plot: Any, element: Any) -> None:
        fig = plot.state
        rows = self._hover_rows
        hover = next((t for t in fig.tools if isinstance(t, HoverTool)), None)
        if hover is None:
            hover = HoverTool()
            fig.add_tools(hover)
        if getattr(hover, "tags", None) != [len(rows["ids"]), id(rows)]:
            fmt = CustomJSHover(args=dict(rows), code=_ROW_HOVER_JS)
            hover.tooltips = [("unit", "$y{id}"), ("label", "$y{label}"), ("region", "$y{region}"), ("time", "$x{0.00} s"),
                              ("activity", "@image{0.00}")]  # fmt: skip
            hover.formatters = {"$y": fmt}
            hover.tags = [len(rows["ids"]), id(rows)]
        if fig.id in self._raster_marks:
            return
        # one annotation (two numbers per update): its left edge is the cursor, the band the horizon
        box = BoxAnnotation(left=0, right=0, fill_color="#ffd54f", fill_alpha=0.35, line_color="black", line_width=1.5, line_alpha=0.9)
        fig.add_layout(box)
        self._raster_marks[fig.id] = box

    # ================================================================= widgets
    def _build_widgets(self) -> None:
        ctl = self.controller
        self.player = pn.widgets.IntSlider.from_param(ctl.param.cursor, width=270, css_classes=["pocoviz-scrub"], label="Cursor (frame)")
        self.play_button = pn.widgets.Toggle(label="▶ Play", width=90, css_classes=["pocoviz-play"])
        self.play_button.param.watch(lambda e: self.set_playing(e.new), "value")
        self._back_button = pn.widgets.Button(label="◀ 1", width=60, css_classes=["pocoviz-step-back"])
        self._back_button.on_click(lambda e: ctl.step(-1))
        self._fwd_button = pn.widgets.Button(label="1 ▶", width=60, css_classes=["pocoviz-step-forward"])
        self._fwd_button.on_click(lambda e: ctl.step(1))
        ctl.param.watch(self._on_fps, "fps")
        self.adapt_button = pn.widgets.Button(label="Adapt to this recording", color="warning", visible=False, width=250,
                                              css_classes=["pocoviz-adapt"])  # fmt: skip
        self.adapt_button.on_click(lambda e: ctl.adapt())
        self._png_button = pn.widgets.Button(label="Save figure (PNG)", width=270, css_classes=["pocoviz-png"])
        self._png_button.js_on_click(args={"tool": self.save_tool}, code="tool.do.emit(undefined)")
        self.netcdf_download = pn.widgets.FileDownload(callback=self._export_netcdf, filename="pocoviz_forecasts.nc", embed=False,
                                                       label="Forecasts (netCDF)", width=270, css_classes=["pocoviz-netcdf"])  # fmt: skip

    def _export_netcdf(self) -> io.BytesIO:
        """The export (compressed, at most MAX_EXPORT_BYTES) as bytes; an empty file and the reason
        on screen when there is nothing to export."""
        ctl = self.controller
        if ctl.recording is not None:
            self.netcdf_download.filename = "pocoviz_forecasts_" + "".join(c if c.isalnum() else "_" for c in ctl.recording.name) + ".nc"
        path = ctl.export_file()
        if path is None:
            return io.BytesIO(b"")
        try:
            with open(path, "rb") as f:
                return io.BytesIO(f.read())
        finally:
            os.unlink(path)

    # ================================================================= playback
    def set_playing(self, playing: bool) -> None:
        """Start or stop the playback clock (a background periodic callback: it does not make the
        page's busy indicator spin)."""
        self._playing = self.controller.playing = playing
        self.play_button.label = "⏸ Pause" if playing else "▶ Play"
        if self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        if playing:
            self._play_since, self._played = time.monotonic(), 0
            self._play_cb = PeriodicCallback(callback=self._tick, period=int(round(1000 / self.controller.fps)),
                                             background=True)  # fmt: skip
            self._play_cb.start()
        else:
            self.request_render()  # the readout and the link catch up with the last frame

    def _tick(self) -> None:
        # periodic callbacks run in Panel's thread pool: the step (and the slider it moves) on the loop
        self._on_loop(self._step_if_playing)

    def _step_if_playing(self) -> None:
        """Move the cursor to where the recording should be now: a server that falls behind skips
        frames rather than slowing the recording down."""
        if not self._playing:  # a tick already under way when playback stopped moves nothing
            return
        now = time.monotonic()
        due = int((now - self._play_since) * self.controller.fps) - self._played
        if due >= 1:
            due = min(due, max(1, self.controller.fps // 2))  # after a long stall, catch up at most half a second
            self._played += due
            self.controller.step(due)
        if due < 0 or now - self._play_since > 60:  # speed changed, or restart the reckoning now and then
            self._play_since, self._played = now, 0

    def _on_fps(self, event: Any) -> None:
        self._play_since, self._played = time.monotonic(), 0
        if self._play_cb is not None:
            self._play_cb.period = int(round(1000 / event.new))

    def close(self, timeout: float = 60.0) -> None:
        """Stop the playback clock and the controller's jobs (the browser session ended)."""
        if self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        super().close(timeout)

    # ================================================================= layout
    def _build_layout(self) -> pn.viewable.Viewable:
        ctl = self.controller
        models = pn.widgets.MultiChoice.from_param(ctl.param.models, label="Models (up to 4)", options=ctl.model_choices,
                                                   max_items=MAX_MODELS, width=250, css_classes=["pocoviz-f-models"])  # fmt: skip
        w = lambda name, kind, label, **kw: self._widget(name, kind, label, owner=ctl, **kw)  # noqa: E731
        controls = pn.Column(
            w("source", pn.widgets.Select, "Recording (corpus / file)"),
            w("session", pn.widgets.Select, "Session"),
            models,
            self.adapt_button,
            pn.pane.Markdown("**Playback**", margin=(10, 10, 0, 10)),
            self.player,
            pn.Row(self._back_button, self.play_button, self._fwd_button, margin=(0, 5)),
            w("fps", pn.widgets.IntSlider, "Speed (frames/s)"),
            self.clock,
            pn.pane.Markdown("**Traces by**", margin=(10, 10, 0, 10)),
            w("select_by", pn.widgets.RadioButtonGroup, "Traces by", width=270),
            w("region", pn.widgets.Select, "Region"),
            w("labels", pn.widgets.MultiChoice, "Neuron labels"),
            w("unit_ids", pn.widgets.TextInput, "Unit ids (or click the raster)"),
            w("n_traces", pn.widgets.IntSlider, "Traces"),
            self.selection_info,
            w("metrics_over", pn.widgets.Select, "Metrics over"),
            pn.pane.Markdown("**Export**", margin=(10, 10, 0, 10)),
            self._png_button,
            w("export_scope", pn.widgets.Select, "Forecasts of", width=270),
            self.netcdf_download,
            width=CONTROLS_WIDTH,
            css_classes=["pocoviz-forecast-controls"],
        )
        metrics = pn.Column(self.metrics_pane, self.status_pane, self.regions_pane, sizing_mode="stretch_width")
        # the MSE / MAE switch sits over the top right corner of the plot it drives
        step_metric = w("step_metric", pn.widgets.RadioButtonGroup, "Error per step ahead", width=110, align="end", button_type="primary",
                        button_style="outline", description=None, margin=(5, 10, 0, 10))  # fmt: skip
        plots = pn.Column(
            pn.Row(self.spinner, self.notice, sizing_mode="stretch_width"),
            self.alert,
            self._traces_pane,
            self.raster_pane,
            pn.Row(metrics, pn.Column(step_metric, self._step_pane, self.curve_pane), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-forecast"])

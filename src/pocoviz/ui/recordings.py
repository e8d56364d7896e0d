"""Recordings tab: pick a corpus and session; population raster sorted by region, unit traces,
unit positions coloured by region, session metadata. The state, the selection and the snapshot of
what is shown live in :class:`pocoviz.controllers.recordings.RecordingsController`; this module
draws snapshots."""

from __future__ import annotations

import html
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend and its options)
import numpy as np
import panel as pn
import param
from holoviews.operation.datashader import datashade, dynspread

from pocoviz.controllers.recordings import (  # noqa: F401  (re-exported: the Forecast tab and the warm-up use them)
    PREPARED_CACHE,
    PreparedSession,
    RecordingsController,
    RecordingsSnapshot,
    duplicate_note,
    label_options,
    parse_unit_ids,
    prepare_session,
    raster_window,
    toggle_tapped_unit,
    unit_name,
    units_of_region,
    units_with_ids,
    units_with_labels,
)

from .base import TabView
from .theme import UNKNOWN_COLOR, region_colors

hv.Store.set_current_backend("bokeh")  # builds hv.opts.<Element> for the bokeh backend

RASTER_HEIGHT = 430

#: Bokeh reports a wheel zoom's new ranges when its interactive (level-of-detail) mode ends, which
#: any plot of the page ends at its next paint after ``lod_interval`` ms and re-checks ``lod_timeout``
#: ms later (300 / 500 ms by default): with the defaults, a paint of the traces or bands (the server
#: moving their axes) during a zoom held the raster's new ranges back ~0.9 s. End it at once.
_NO_LOD_WAIT = {"plot.lod_interval": 0, "plot.lod_timeout": 100}
BAND_WIDTH = 235
MAP_WIDTH, MAP_HEIGHT = 460, 420
# an invisible path: HoloViews cannot map colours on an empty Path
_NO_TRACE = [{"time": np.array([np.nan]), "offset": np.array([np.nan]), "unit": "", "region": "", "color": "#ffffff"}]
_NO_POINTS = {d: [] for d in ["pos_a", "pos_b", "unit", "region", "color"]}


class RecordingsView(TabView):
    """The Recordings tab: widgets bound to a :class:`RecordingsController`, figures fed from its
    snapshots (see module docstring)."""

    css_prefix = "pocoviz"

    # what the figures show, set from snapshots (HoloViews options follow these parameters)
    _cmap = param.String(default="RdBu_r", precedence=-1)
    _clim = param.Tuple(default=(-3.0, 3.0), precedence=-1)
    _raster_title = param.String(default="", precedence=-1)
    _trace_ticks = param.List(default=None, allow_None=True, precedence=-1)
    _traces_title = param.String(default="", precedence=-1)
    _map_title = param.String(default="unit positions", precedence=-1)
    _time_label = param.String(default="time (s)", precedence=-1)
    _xlim = param.Tuple(default=(np.nan, np.nan), precedence=-1)
    _ylim = param.Tuple(default=(np.nan, np.nan), precedence=-1)

    def __init__(self, data_dir: str | None = None, **params: Any):
        self.controller = RecordingsController(data_dir=data_dir)
        super().__init__(**params)
        self.data_dir = data_dir
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        # Panel links the axes of panes with the same dimensions (raster, bands and traces) into
        # one Bokeh range: a pan then redrew the traces (63k points at 71k units) before the raster
        # could paint, and HoloViews' range stream read the raster's rows from another plot's range
        # (a whole-brain recording opened after the demo reported the demo's 1500 rows). The
        # bands and traces follow the raster through _set_ranges instead.
        unlinked = dict(linked_axes=False)
        self._bands_pane = pn.pane.HoloViews(None, width=BAND_WIDTH, height=RASTER_HEIGHT, css_classes=["pocoviz-bands"], **unlinked)
        self._raster_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=RASTER_HEIGHT, css_classes=["pocoviz-raster"], **unlinked)
        self._traces_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=420, css_classes=["pocoviz-traces"], **unlinked)
        self._map_pane = pn.pane.HoloViews(None, width=MAP_WIDTH, height=MAP_HEIGHT, css_classes=["pocoviz-map"])
        self._meta_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-meta"])
        self._selection_info = pn.pane.Markdown("", css_classes=["pocoviz-selection"], margin=(0, 10))
        self._notice = pn.pane.Markdown("", css_classes=["pocoviz-notice"], margin=(0, 10), styles={"color": "#8a5300"}, visible=False)
        # the time window as two numbers (also set by zooming the raster)
        self._window_inputs = (
            pn.widgets.FloatInput(label="Window from", value=0.0, width=120, css_classes=["pocoviz-window-start"]),
            pn.widgets.FloatInput(label="to", value=0.0, width=120, css_classes=["pocoviz-window-end"]),
        )
        for box in self._window_inputs:
            box.param.watch(self._on_window_widget, "value")
        self._syncing = False
        self._shown_session: tuple | None = None
        self._colors: dict[str, str] = {}
        self._render_pending = False
        self._build_plots()
        self.controller.param.watch(lambda event: self._schedule_render(), "version")
        self.render(self.controller.snapshot())

    # ------------------------------------------------------------------ controller -> figures
    def _schedule_render(self) -> None:
        """Render the newest snapshot once on the session's event loop (several changes in a row
        draw once)."""
        if self._render_pending:
            return
        self._render_pending = True

        def run() -> None:
            self._render_pending = False
            self.render(self.controller.snapshot())

        self._on_loop(run)

    def render(self, snap: RecordingsSnapshot) -> None:
        """Draw ``snap``: the raster, bands and metadata only when the session changed."""
        self._alert.object = f"**Cannot open this recording.** {html.escape(snap.error)}" if snap.error else ""
        self._alert.visible = bool(snap.error)
        self._notice.object = html.escape(snap.notice)
        self._notice.visible = bool(snap.notice)
        prep = snap.prepared
        if prep is None:
            return
        if snap.session_key != self._shown_session:
            self._shown_session = snap.session_key
            self._colors = region_colors(prep.regions)
            self._send_session(snap)
        self._selection_info.object = html.escape(snap.selection)
        self._send_window(snap)
        self._send_traces(snap)
        self._send_map(snap)

    def _send_session(self, snap: RecordingsSnapshot) -> None:
        prep = snap.prepared
        self._ylim = (-0.5, len(prep.order) - 0.5)  # the bands below are drawn over all rows
        self._raster_range.event(x_range=None, y_range=None)
        self._raster_pipe.send((prep, snap.reduce))
        self._bands_pipe.send(
            {
                "boundaries": [b.start - 0.5 for b in prep.bands[1:]],
                "rects": [(0.0, b.start - 0.5, 0.12, b.stop - 0.5, b.region, self._colors[b.region]) for b in prep.bands],
                "labels": [(0.16, row, text) for row, text in snap.band_labels],
            }
        )
        with param.parameterized.batch_call_watchers(self):
            self._cmap, self._clim, self._time_label = prep.cmap, prep.clim, prep.time_label
            self._raster_title = snap.raster_title
        self._meta_pane.object = "<table>" + "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in snap.metadata
        ) + "</table>"  # fmt: skip
        lo, hi = snap.extent
        self._syncing = True
        self._window_inputs[0].label = f"Window from ({'s' if prep.time_label.startswith('time') else 'frame'})"
        for box in self._window_inputs:
            box.param.update(start=lo, end=hi, step=max(1e-3, round((hi - lo) / 100, 3)))
        self._syncing = False

    def _send_window(self, snap: RecordingsSnapshot) -> None:
        self._syncing = True  # the boxes follow the snapshot; only a user's edit sets the window
        try:
            for box, value in zip(self._window_inputs, snap.window):
                if box.value != value:
                    box.value = value
        finally:
            self._syncing = False
        if snap.reduce != self._raster_pipe.data[1]:
            self._raster_pipe.send((snap.prepared, snap.reduce))
            self._set_ranges(self._raster_pane, x=tuple(self._xlim), y=tuple(self._ylim))  # the same viewport
        n = len(snap.prepared.order)
        rows = snap.rows if snap.rows is not None else (-0.5, n - 0.5)
        moved = {}
        if snap.window != tuple(self._xlim):
            self._xlim = snap.window
            self._after_raster(lambda: self._set_ranges(self._traces_pane, x=tuple(self._xlim)))
            current = self._raster_range.x_range
            if current is None or not np.allclose(current, snap.window, atol=1e-3 * max(1.0, snap.extent[1])):
                moved["x_range"] = snap.window
        self._set_ranges(self._bands_pane, y=rows)
        if rows != tuple(self._ylim):
            self._ylim = rows
            current = self._raster_range.y_range
            if current is None or not np.allclose(sorted(current), rows, atol=1e-3 * n):
                moved["y_range"] = rows
        if moved:  # a window or rows set from the controller (boxes, find, a link), not by a pan
            # the figure's ranges too, after its new image: HoloViews set them to the overlay's
            # extent, which the band lines make the whole recording
            self._raster_range.event(**moved)
            self._set_ranges(self._raster_pane, x=moved.get("x_range"), y=moved.get("y_range"))

    #: the traces' time axis follows a pan this long after the raster's new window was sent, so that
    #: the browser paints the raster first (redrawing 8 traces of 7,879 frames took it ~0.5 s here)
    TRACES_FOLLOW_MS = 300

    def _after_raster(self, fn) -> None:
        """Run ``fn`` on the session's loop after TRACES_FOLLOW_MS (at once when not served)."""
        doc = self._doc
        if doc is None or doc.session_context is None:
            fn()
        else:
            doc.add_timeout_callback(fn, self.TRACES_FOLLOW_MS)

    @staticmethod
    def _set_ranges(pane: pn.pane.HoloViews, x: tuple | None = None, y: tuple | None = None) -> None:
        """Set the shown figure's axis ranges on its Bokeh models: a pan of the raster moves the
        traces' time axis and the bands' rows without drawing them again (HoloViews re-rendered the
        traces, 0.1-0.4 s a pan, when their ``xlim`` option followed the window). The figures'
        callbacks read ``_xlim``/``_ylim`` when they do draw again."""
        for plot, _ in list(getattr(pane, "_plots", {}).values()):
            for axis, value in (("x_range", x), ("y_range", y)):
                rng = plot.handles.get(axis) if value is not None else None
                if rng is None:
                    continue
                lo, hi = sorted(float(v) for v in value)
                flipped = rng.start is not None and rng.end is not None and rng.start > rng.end
                rng.update(start=hi, end=lo) if flipped else rng.update(start=lo, end=hi)

    def _send_traces(self, snap: RecordingsSnapshot) -> None:
        if not self._changed("traces", snap.traces):
            return  # a pan or zoom of the raster does not resend the same traces
        paths = [{**t, "color": self._colors.get(t["region"], UNKNOWN_COLOR)} for t in snap.traces]
        with param.parameterized.batch_call_watchers(self):
            self._trace_ticks = list(snap.trace_ticks) or None
            self._traces_title = snap.traces_title
        self._traces_pipe.send(paths)

    def _send_map(self, snap: RecordingsSnapshot) -> None:
        if not self._changed("map", snap.map):
            return  # the controller keeps the same map while the units, projection and session are
        m = snap.map
        if snap.map_kind == "none":
            self._map_pane.object = hv.Text(0.5, 0.5, "this recording has no unit positions").opts(
                width=MAP_WIDTH, height=MAP_HEIGHT, xaxis=None, yaxis=None, toolbar=None, title="unit positions"
            )
            self._clear_map()
            return
        units = m["selected"]
        if snap.map_kind == "density":  # too many glyphs for the browser: Datashader draws them
            import datashader

            a, b = m["axes"]
            dims = [hv.Dimension("pos_a", label=f"{a} ({m['unit_label']})"), hv.Dimension("pos_b", label=f"{b} ({m['unit_label']})")]
            points = hv.Points({"pos_a": m["pos_a"], "pos_b": m["pos_b"], "region": m["region"]}, dims, ["region"])
            shaded = dynspread(datashade(points, aggregator=datashader.count_cat("region"), color_key=self._colors))
            sel = hv.Points({"pos_a": m["pos_a"][units], "pos_b": m["pos_b"][units]}, dims).opts(
                marker="circle", size=12, fill_alpha=0, line_color="black", line_width=2
            )
            # no legend: one entry per region (60 in a whole brain) covered the map; the region
            # bands beside the raster name the colours
            overlay = hv.opts.Overlay(width=MAP_WIDTH, height=MAP_HEIGHT, title=snap.map_title, show_legend=False, backend_opts=_NO_LOD_WAIT)
            self._map_pane.object = (shaded * sel).opts(overlay)
            self._clear_map()
            return
        n = len(m["pos_a"])
        colors = np.array([self._colors.get(r, UNKNOWN_COLOR) for r in m["region"]])
        self._map_title = snap.map_title
        points = {"pos_a": m["pos_a"], "pos_b": m["pos_b"], "unit": m["unit"], "region": m["region"], "color": colors}
        self._map_pipe.send(
            {
                "axes": m["axes"],
                "unit_label": m["unit_label"],
                "size": 7 if n < 300 else (4 if n < 3000 else 2),
                "points": points,
                "selected": {k: np.asarray(v)[units] for k, v in points.items()},
            }
        )
        # A map that was swapped out (no positions, or Datashader) comes back as a new DynamicMap,
        # built from the pipe that now holds this recording: re-showing the old one made the
        # browser redraw its last plot, another recording's units, and ignore the new data.
        if self._map_pane.object is not self._map_dmap:
            self._map_pane.object = self._new_map_dmap()

    def _clear_map(self) -> None:
        """Empty the position map's stream while it is not shown (no positions, or Datashader),
        so that it holds no other recording's units when it is shown again."""
        if self._map_pipe.data is not None:
            self._map_pipe.send(None)

    # ------------------------------------------------------------------ browser -> controller
    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        self.controller.tap_row(y)

    def _on_range(self, x_range: tuple | None = None, y_range: tuple | None = None) -> None:
        """A zoom or pan of the raster becomes the controller's time window (and so the link's)
        and its rows."""
        prep = self.controller.prepared
        if prep is None:
            return
        with param.parameterized.batch_call_watchers(self.controller):
            if x_range is not None and all(np.isfinite(x_range)):
                if not np.allclose(x_range, self._xlim, atol=1e-3 * max(1.0, self.controller.extent()[1])):
                    self.controller.set_window(*x_range)
            if y_range is not None and all(np.isfinite(y_range)):
                if not np.allclose(sorted(y_range), self._ylim, atol=1e-3 * len(prep.order)):
                    self.controller.set_rows(*y_range)

    def _on_window_widget(self, event) -> None:
        if self._syncing:
            return
        window = tuple(box.value for box in self._window_inputs)
        if None not in window and window != tuple(self._xlim) and window[1] > window[0]:
            self.controller.set_window(*window)

    # ------------------------------------------------------------------ figures
    # Each plot is a DynamicMap fed by a Pipe and built once: changing the session or the selection
    # sends new data into the existing Bokeh figures instead of rebuilding them (≈ 1 s per figure
    # in the browser otherwise).
    def _build_plots(self) -> None:
        self._raster_pipe = hv.streams.Pipe(data=None)
        self._bands_pipe = hv.streams.Pipe(data=None)
        self._traces_pipe = hv.streams.Pipe(data=None)
        self._map_pipe = hv.streams.Pipe(data=None)

        # our own range stream: a new session resets the zoom before its data arrive, a zoom
        # becomes the time window and rows, and each viewport draws the window of cells it needs
        # (pocoviz.recordings.rasterwindow: a pyramid level of a whole-brain store, read under the
        # viewport only)
        self._raster_range = hv.streams.RangeXY()
        raster = hv.DynamicMap(self._window_image, streams=[self._raster_pipe, self._raster_range]).opts(
            colorbar=True,
            responsive=True,
            height=RASTER_HEIGHT,
            invert_yaxis=True,
            tools=["hover", "tap"],
            ylabel="unit (sorted by region)",
            yaxis=None,
            toolbar="right",
            framewise=True,
            padding=0,
            # Bokeh reports a wheel zoom's ranges when its level-of-detail mode ends, 500 ms after
            # the last wheel event by default: most of a zoom's re-render time
            backend_opts=_NO_LOD_WAIT,
            hooks=[self._bound_ranges],
        )
        raster = raster.apply.opts(cmap=self.param._cmap, clim=self.param._clim, title=self.param._raster_title, xlabel=self.param._time_label)
        self._tap = hv.streams.Tap(source=raster, x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._raster_range.add_subscriber(self._on_range)
        lines = hv.DynamicMap(self._band_lines, streams=[self._bands_pipe])
        self._raster_pane.object = (raster * lines).opts(hv.opts.Overlay(responsive=True, height=RASTER_HEIGHT, backend_opts=_NO_LOD_WAIT))

        bands = hv.DynamicMap(self._bands, streams=[self._bands_pipe]).opts(
            hv.opts.Overlay(
                width=BAND_WIDTH,
                height=RASTER_HEIGHT,
                xaxis=None,
                yaxis=None,
                invert_yaxis=True,
                xlim=(0, 1),
                toolbar=None,
                show_frame=False,
                title="regions",
                framewise=True,
                backend_opts=_NO_LOD_WAIT,
            )
        )
        self._bands_pane.object = bands
        traces = hv.DynamicMap(self._traces, streams=[self._traces_pipe]).opts(
            responsive=True,
            height=420,
            ylabel="",
            toolbar="right",
            framewise=True,
            padding=(0, 0.03),
            line_width=1.2,
            color=hv.dim("color"),
            tools=["hover"],
            backend_opts=_NO_LOD_WAIT,
        )
        self._traces_pane.object = traces.apply.opts(yticks=self.param._trace_ticks, title=self.param._traces_title, xlabel=self.param._time_label)
        self._map_pane.object = self._new_map_dmap()

    def _new_map_dmap(self) -> hv.DynamicMap:
        self._map_dmap = hv.DynamicMap(self._map, streams=[self._map_pipe]).apply.opts(title=self.param._map_title)
        return self._map_dmap

    def _bound_ranges(self, plot: Any, element: Any) -> None:
        """Keep pans and zooms inside the recording (Bokeh's range bounds): a zoom out past its
        edges asked for cells that do not exist, and the image that came back reset the axes
        (framewise), a second round trip (1.7 s of a 2-s zoom at 71k units)."""
        prep = self.controller.prepared
        if prep is None:
            return
        n_time, n_unit = prep.raster.shape
        rate = float(prep.ds.attrs["sampling_rate_hz"])
        bounds = {"x_range": (-0.5 / rate, (n_time - 0.5) / rate), "y_range": (-0.5, n_unit - 0.5)}
        for name, value in bounds.items():
            rng = getattr(plot.state, name, None)
            if rng is not None and rng.bounds != value:
                rng.bounds = value

    @staticmethod
    def _window_image(data: tuple | None, x_range: tuple | None = None, y_range: tuple | None = None) -> hv.Image:
        """The raster's cells under the viewport (``data``: the session and the reduction)."""
        kdims, vdims = ["time", "row"], [hv.Dimension("activity")]
        if data is None:
            return hv.Image(np.zeros((2, 2), np.float32), bounds=(0, 0, 1, 1), kdims=kdims, vdims=vdims)
        prep, reduce = data
        ok = lambda r: r is not None and all(np.isfinite(r)) and r[1] != r[0]  # noqa: E731
        win, (x0, y0, x1, y1) = raster_window(prep, x_range if ok(x_range) else None, y_range if ok(y_range) else None, reduce)
        # hv.Image's first array row is its top (largest y); the y axis is inverted on screen
        return hv.Image(np.flipud(win.values), bounds=(x0, y0, x1, y1), kdims=kdims, vdims=vdims)

    @staticmethod
    def _band_lines(data: dict | None) -> hv.HLines:
        # apply_ranges=False: the lines span every row, and the raster's ranges follow its window
        return hv.HLines(list(data["boundaries"]) if data else [], kdims=["row"]).opts(color="black", line_width=1, alpha=0.6, apply_ranges=False)

    def _bands(self, data: dict | None) -> hv.Overlay:
        rects = data["rects"] if data else []
        labels = data["labels"] if data else []
        r = hv.Rectangles(rects, kdims=["band_x", "row", "band_x2", "row2"], vdims=["region", "color"]).opts(
            color=hv.dim("color"), line_color="white", line_width=1, tools=["hover"]
        )
        t = hv.Labels(labels, kdims=["band_x", "row"], vdims=["text"]).opts(text_align="left", text_font_size="8pt", text_color="#222")
        ylim = tuple(self._ylim) if data and all(np.isfinite(self._ylim)) else (None, None)
        return (r * t).opts(hv.opts.Overlay(ylim=ylim))

    def _traces(self, data: list | None) -> hv.Contours:
        # Contours, not Path: a Path with a per-path colour column is split into one glyph per segment
        xlim = tuple(self._xlim) if data and all(np.isfinite(self._xlim)) else (None, None)
        return hv.Contours(data or _NO_TRACE, kdims=["time", "offset"], vdims=["unit", "region", "color"]).opts(xlim=xlim)

    @staticmethod
    def _map(data: dict | None) -> hv.Overlay:
        a, b, unit = (data["axes"] + (data["unit_label"],)) if data else ("x", "y", "µm")
        dims = [hv.Dimension("pos_a", label=f"{a} ({unit})"), hv.Dimension("pos_b", label=f"{b} ({unit})")]
        vdims = ["unit", "region", "color"]
        base = hv.Points(data["points"] if data else _NO_POINTS, dims, vdims)
        sel = hv.Points(data["selected"] if data else _NO_POINTS, dims, vdims)
        size = data["size"] if data else 4
        return (
            base.opts(color=hv.dim("color"), size=size, tools=["hover"], line_alpha=0, framewise=True)
            * sel.opts(marker="circle", size=12, fill_alpha=0, line_color="black", line_width=2, tools=["hover"], framewise=True)
        ).opts(hv.opts.Overlay(width=MAP_WIDTH, height=MAP_HEIGHT, framewise=True, toolbar="right", backend_opts=_NO_LOD_WAIT))

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> pn.viewable.Viewable:
        c = self.controller
        controls = pn.Column(
            self._widget("source", pn.widgets.Select, "Corpus / file", owner=c),
            self._widget("session", pn.widgets.Select, "Session", owner=c),
            pn.pane.Markdown("**Traces by**", margin=(10, 10, 0, 10)),
            self._widget("select_by", pn.widgets.RadioButtonGroup, "Traces by", owner=c),
            self._widget("region", pn.widgets.Select, "Region", owner=c),
            self._widget("labels", pn.widgets.MultiChoice, "Neuron labels", owner=c),
            self._widget("unit_ids", pn.widgets.TextInput, "Unit ids (or click the raster)", owner=c),
            self._widget("n_traces", pn.widgets.IntSlider, "Traces per region", owner=c),
            self._widget("projection", pn.widgets.Select, "Position map", owner=c),
            pn.pane.Markdown("**Raster cells show**", margin=(10, 10, 0, 10)),
            self._widget("reduce", pn.widgets.RadioButtonGroup, "Raster cells show", owner=c),
            self._widget("find", pn.widgets.TextInput, "Find units (id, region or label)", owner=c, placeholder="e.g. 12-15, tectum, AVAL"),
            pn.Row(*self._window_inputs, margin=0),
            self._selection_info,
            self._notice,
            width=280,
        )
        plots = pn.Column(
            self._alert,
            pn.Row(self._bands_pane, self._raster_pane, sizing_mode="stretch_width"),
            pn.Row(self._traces_pane, self._map_pane, sizing_mode="stretch_width"),
            pn.Card(self._meta_pane, title="Session metadata", sizing_mode="stretch_width", collapsed=False),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width")

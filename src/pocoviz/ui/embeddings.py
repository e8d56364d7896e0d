"""Embeddings tab: a 2-D layout (UMAP, torch UMAP or PCA) of a POCO checkpoint's unit embeddings,
coloured by region, session, species, neuron label or per-unit forecast score, with its legend or
colour bar; a box/lasso selection highlights those units on the position map (one coordinate frame
at a time) and shows their traces, and a selection on the map highlights them in the layout. "Is it
real?": the region distance matrix (spec ``poco.md`` §6) and the region silhouette against shuffled
labels.

The state, the background jobs (layouts, separation, scores, with their progress) and the URL state
live in :class:`pocoviz.controllers.embeddings.EmbeddingsController`; this module keeps widgets and
figures and draws the controller's snapshots on the session's event loop.
"""

from __future__ import annotations

import html
import os
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)
import numpy as np
import panel as pn
from bokeh.palettes import Viridis256

from pocoviz.controllers.embeddings import (  # noqa: F401  (re-exported)
    ALL,
    EMBEDDING_KINDS,
    MAX_TRACES,
    N_SHUFFLES,
    EmbeddingsController,
    EmbeddingsSnapshot,
    duplicate_summary,
    embedding_models,
    label_names,
    on_gpu,
    reducer_options,
    shipped_layouts_dir,
)

from .base import TabView
from .theme import REGION_PALETTE, UNKNOWN_COLOR, region_colors

hv.Store.set_current_backend("bokeh")

#: above this many units the layout and the map are drawn by Datashader (a box selects there);
#: ``POCOVIZ_DATASHADE_ABOVE`` overrides (a browser without WebGL may want it lower)
DATASHADE_ABOVE = int(os.environ.get("POCOVIZ_DATASHADE_ABOVE", "").strip() or 20_000)
#: selected units drawn as glyphs on a Datashader image (all of them count as selected)
MARKS_MAX = 5_000
SIZE = 430
#: legend entries listed (the palette has this many colours; more categories repeat them)
LEGEND_MAX = len(REGION_PALETTE)
#: what hovers show (the columns that only carry colours or positions are left out)
SCATTER_TOOLTIPS = [("unit", "@unit"), ("label", "@label"), ("region", "@region"), ("session", "@session"), ("score", "@score")]
MAP_TOOLTIPS = [("unit", "@unit"), ("label", "@label"), ("region", "@region"), ("session", "@session")]
_SCATTER_COLS = ["color", "alpha", "unit", "label", "region", "session", "score"]
_MARK_COLS = ["color"]
_LAYOUT_NAMES = {"umap": "UMAP", "umap-torch": "torch UMAP", "pca": "PCA", "": ""}


def category_palette(categories: list[str], color_by: str) -> dict[str, str]:
    """A colour per category (in the controller's legend order; unknown grey)."""
    if color_by == "region":
        return region_colors(categories)
    known = [c for c in categories if c != ""]
    colors = {c: REGION_PALETTE[i % len(REGION_PALETTE)] for i, c in enumerate(known)}
    colors[""] = UNKNOWN_COLOR
    return colors


def score_colors(scores: np.ndarray, lim: tuple[float, float] | None) -> np.ndarray:
    """Viridis colours of scores on the scale ``lim``; grey where there is no score."""
    out = np.full(len(scores), UNKNOWN_COLOR, dtype=object)
    ok = np.isfinite(scores)
    if lim is None or not ok.any():
        return out.astype(str)
    lo, hi = lim
    idx = np.clip(np.round((scores[ok] - lo) / max(hi - lo, 1e-9) * 255), 0, 255).astype(int)
    out[ok] = np.asarray(Viridis256)[idx]
    return out.astype(str)


def unit_colors(snap: EmbeddingsSnapshot) -> np.ndarray:
    """The colour of every unit of the snapshot's table."""
    if snap.color_by == "score":
        return score_colors(snap.scores, snap.score_range)
    colors = category_palette([c for c, _ in snap.legend], snap.color_by)
    return np.array([colors.get(g, UNKNOWN_COLOR) for g in snap.groups], dtype=str)


def legend_html(snap: EmbeddingsSnapshot) -> str:
    """The legend of categorical colours, or the colour bar of scores (beside the plots, never over
    the data)."""
    if snap.table is None:
        return ""
    if snap.color_by == "score":
        n = len(snap.scores)
        stops = ", ".join(Viridis256[i] for i in range(0, 256, 32)) + f", {Viridis256[255]}"
        if snap.score_range is None:
            scale = "<div class='pocoviz-e-cbar-labels'><span>computing …</span></div>"
        else:
            lo, hi = snap.score_range
            scale = (f"<div class='pocoviz-e-cbar-labels' style='display:flex;justify-content:space-between'><span>≤ {lo:.2f}</span>"
                     f"<span>{(lo + hi) / 2:.2f}</span><span>≥ {hi:.2f}</span></div>")  # fmt: skip
        return (
            "<div class='pocoviz-e-colorbar'><b>per-unit forecast score</b> (1 − MSE / MSE of copy-last, test split)"
            f"<div style='height:12px;margin-top:4px;background:linear-gradient(to right, {stops})'></div>{scale}"
            f"<div style='color:#555'><span style='color:{UNKNOWN_COLOR}'>■</span> no score yet: {n - snap.scores_done} of {n} units</div></div>"
        )
    colors = category_palette([c for c, _ in snap.legend], snap.color_by)
    rows = []
    for name, count in snap.legend[:LEGEND_MAX]:
        shown = html.escape(name) if name else "(none)"
        rows.append(f"<div style='white-space:nowrap;overflow:hidden;text-overflow:ellipsis' title='{shown}'>"
                    f"<span style='color:{colors.get(name, UNKNOWN_COLOR)}'>●</span> {shown} <span style='color:#777'>{count}</span></div>")  # fmt: skip
    # two columns when the names fit in them, one (no names cut) otherwise
    columns = "1fr 1fr" if max((len(n) for n, _ in snap.legend[:LEGEND_MAX]), default=0) <= 14 else "1fr"
    more = len(snap.legend) - LEGEND_MAX
    tail = f"<div style='color:#555'>+ {more} more {snap.color_by}s (colours repeat)</div>" if more > 0 else ""
    return (f"<div class='pocoviz-e-legend-items'><b>colour: {snap.color_by}</b>"
            f"<div style='display:grid;grid-template-columns:{columns};column-gap:8px'>{''.join(rows)}</div>{tail}</div>")  # fmt: skip


def _hex_rgb(colors: np.ndarray) -> np.ndarray:
    """(n, 3) float32 RGB of '#rrggbb' strings (each distinct colour parsed once)."""
    names, inverse = np.unique(colors, return_inverse=True)
    table = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] if len(c) == 7 and c[0] == "#" else [128, 128, 128] for c in names], np.float32)
    return table.reshape(-1, 3)[inverse]


def shade_points(data: dict | None, kdims: tuple[str, str], x_range: tuple | None, y_range: tuple | None, width: int, height: int) -> hv.RGB:
    """Datashader's image of ``data`` (``x``, ``y``, ``color`` per point; ``title``) over the
    ranges (the points' extent when None), each pixel in the colours of its points, spread by a
    pixel so that single points stay visible."""
    import datashader
    import datashader.transfer_functions as tf
    import pandas as pd

    title = (data or {}).get("title", "")
    if not data or len(data["x"]) == 0:
        return hv.RGB(np.zeros((2, 2, 4), dtype=np.uint8), bounds=(0, 0, 1, 1), kdims=list(kdims), vdims=list("RGBA")).opts(title=title)
    x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)

    def extent(v: np.ndarray) -> tuple[float, float]:
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
        pad = 0.04 * (hi - lo) or 1.0
        return lo - pad, hi + pad

    xr_ = tuple(x_range) if x_range and np.isfinite(x_range).all() and x_range[1] > x_range[0] else extent(x)
    yr_ = tuple(y_range) if y_range and np.isfinite(y_range).all() and y_range[1] > y_range[0] else extent(y)
    # each pixel: the mean colour of its points, opacity rising with their count (one pass over the
    # points and the pixels, whatever the number of colours: score colouring has 256)
    rgb = _hex_rgb(np.asarray(data["color"]).astype(str))
    frame = pd.DataFrame({"x": x, "y": y, "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]})
    canvas = datashader.Canvas(plot_width=width, plot_height=height, x_range=xr_, y_range=yr_)
    agg = canvas.points(frame, "x", "y", datashader.summary(n=datashader.count(), r=datashader.sum("r"), g=datashader.sum("g"), b=datashader.sum("b")))
    n = agg["n"].values.astype(np.float32)
    seen = n > 0
    per = np.where(seen, n, 1.0)
    alpha = np.where(seen, 120 + 135 * np.log1p(n) / np.log1p(max(float(n.max()), 1.0)), 0)
    channels = [np.nan_to_num(agg[c].values / per) for c in "rgb"] + [alpha]
    packed = np.zeros(n.shape, dtype=np.uint32)
    for shift, channel in zip((0, 8, 16, 24), channels):
        packed |= np.clip(np.round(channel), 0, 255).astype(np.uint32) << np.uint32(shift)
    img = tf.spread(tf.Image(packed, coords=agg["n"].coords, dims=agg["n"].dims), px=1)
    rgba = np.ascontiguousarray(img.data).view(np.uint8).reshape(*img.shape, 4)[::-1]  # rows from the top
    return hv.RGB(rgba, bounds=(xr_[0], yr_[0], xr_[1], yr_[1]), kdims=list(kdims), vdims=list("RGBA")).opts(title=title)


class EmbeddingsView(TabView):
    """The Embeddings tab: widgets bound to an :class:`EmbeddingsController`, figures fed from its
    snapshots (see module docstring)."""

    css_prefix = "pocoviz-e"

    def __init__(self, data_dir: str | None = None, **params: Any):
        self.controller = EmbeddingsController(data_dir=data_dir)
        super().__init__(**params)
        self.data_dir = data_dir
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.notice = pn.pane.Alert("", alert_type="info", visible=False, sizing_mode="stretch_width")
        self.info = pn.pane.HTML("", css_classes=["pocoviz-emb-info"], sizing_mode="stretch_width")
        self.separation = pn.pane.HTML("", css_classes=["pocoviz-separation"], sizing_mode="stretch_width")
        self.selection_info = pn.pane.Markdown("", css_classes=["pocoviz-emb-selection"], width=260)
        self.legend = pn.pane.HTML("", css_classes=["pocoviz-e-legend"], width=260, styles={"font-size": "12px"})
        self.scatter_caption = pn.pane.HTML("", css_classes=["pocoviz-e-scatter-caption"], width=SIZE, styles={"font-size": "12px", "color": "#555"})
        self.map_caption = pn.pane.HTML("", css_classes=["pocoviz-e-map-caption"], width=SIZE, styles={"font-size": "12px", "color": "#555"})
        self.map_note = pn.pane.HTML("", css_classes=["pocoviz-e-map-note"], width=SIZE, styles={"font-size": "12px", "color": "#555"})
        self.progress = pn.indicators.Progress(value=-1, max=100, width=250, visible=False, css_classes=["pocoviz-e-progress"])
        self.status = pn.pane.HTML("", css_classes=["pocoviz-e-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self.map_select = pn.widgets.Select.from_param(self.controller.param.map_dataset, label="Position map", options={"follows the selection": ""},
                                                       width=250, css_classes=["pocoviz-e-map_dataset"], visible=False)  # fmt: skip
        self._drawn: dict[str, Any] = {}
        self._render_pending = False
        self._poll = None
        self._build_plots()
        self.controller.param.watch(lambda event: self._schedule_render(), "version")
        self.controller.param.watch(lambda event: self._on_loop(self._busy_changed), "busy")
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
            snap = self.controller.snapshot()
            self.render(snap)
            if self.controller.version != snap.version:  # changed while drawing (unserved, jobs' threads draw too)
                self.refresh()

        self._on_loop(run)

    def refresh(self) -> None:
        """Draw the controller's current snapshot, every part (tests and notebooks, after waiting for jobs)."""
        self._drawn.clear()
        self.render(self.controller.snapshot())

    def _busy_changed(self) -> None:
        if self._poll is not None:
            if self.controller.busy and not self._poll.running:
                self._poll.start()
            elif not self.controller.busy and self._poll.running:
                self._poll.stop()
        self.render_progress(self.controller.snapshot())

    def render_progress(self, snap: EmbeddingsSnapshot) -> None:
        """The progress bar (of the job that reports a fraction, else indeterminate) and one line per running job."""
        lines = [html.escape(msg) + (f" ({100 * p:.0f}%)" if p is not None else "") for p, msg in snap.progress.values()]
        fractions = [p for p, _ in snap.progress.values() if p is not None]
        self.progress.visible = bool(snap.progress)
        self.progress.value = int(round(100 * min(fractions))) if fractions else -1
        self.progress.active = bool(snap.progress) and not fractions
        notes = [html.escape(snap.status)] if snap.status else []
        self.status.object = "<br>".join(lines + notes)

    def render(self, snap: EmbeddingsSnapshot) -> None:
        """Draw ``snap``: each figure only when its part of the snapshot changed."""
        rev = snap.revision
        self.render_progress(snap)
        self.alert.object, self.alert.visible = html.escape(snap.error), bool(snap.error)
        self.notice.object, self.notice.visible = html.escape(snap.notice), bool(snap.notice)
        if self._drawn.get("sessions") != rev.get("sessions"):
            self._drawn["sessions"] = rev.get("sessions")
            self.sessions_pane.object = self._session_plot(snap.sessions)
        emb = snap.table
        if emb is not None:
            n_region = int((emb["region"].values != "").sum())
            scope = "all sessions" if snap.session == ALL else html.escape(snap.session)
            self.info.object = (f"<b>{emb.sizes['unit']}</b> unit embeddings ({emb.sizes['dim']}-d) of "
                                f"{html.escape(str(snap.model))}, {scope}; {n_region} with a region")  # fmt: skip
        else:
            self.info.object = ""
        key = (rev.get("table"), rev.get("layout"), rev.get("colour"), rev.get("selection"), rev.get("map"))
        if self._drawn.get("figures") != key:
            self._drawn["figures"] = key
            colors = unit_colors(snap) if emb is not None else np.zeros(0, str)
            self.legend.object = legend_html(snap)
            self._draw_scatter(snap, colors)
            self._draw_map(snap, colors)
            self._draw_traces(snap, colors)
            self.selection_info.object = snap.selection_text
            self.map_note.object = html.escape(snap.map_note)
            self.map_note.visible = bool(snap.map_note)
            frames = {"follows the selection": "", **{f: f for f in snap.map_datasets}}
            self.map_select.options = frames
            self.map_select.visible = len(snap.map_datasets) > 1
        sep_key = (rev.get("table"), rev.get("separation"))
        if self._drawn.get("separation") != sep_key:
            self._drawn["separation"] = sep_key
            self._draw_separation(snap)

    # ------------------------------------------------------------------ the figures
    def _draw_scatter(self, snap: EmbeddingsSnapshot, colors: np.ndarray) -> None:
        emb, xy = snap.table, snap.xy
        name = _LAYOUT_NAMES.get(snap.layout, snap.layout)
        if snap.layout and snap.layout != self.controller.reducer:
            name += f" (shown while {_LAYOUT_NAMES.get(self.controller.reducer)} is computed)"
        self.scatter_caption.object = f"{html.escape(name)} layout of {len(xy)} units" if emb is not None and xy is not None else ""
        if emb is None or xy is None:
            self.scatter_pipe.send(None)
            self.marks_pipe.send(None)
            return
        if len(xy) > DATASHADE_ABOVE:
            # too many glyphs for the browser: Datashader draws them; a box drawn on the image selects
            if self.scatter_pane.object is not self.scatter_shaded:
                self.scatter_pane.object = self.scatter_shaded
            sel = np.asarray(snap.selected, dtype=np.int64)[:MARKS_MAX]
            title = f"unit embeddings · {name} ({len(xy)} units, Datashader)"
            self.scatter_shade_pipe.send({"x": xy[:, 0], "y": xy[:, 1], "color": colors, "title": title})
            self.shaded_marks_pipe.send({"emb_x": xy[sel, 0], "emb_y": xy[sel, 1], "color": colors[sel]})
            return
        if self.scatter_pane.object is not self.scatter_figure:
            self.scatter_pane.object = self.scatter_figure
        sel = np.asarray(snap.selected, dtype=np.int64)
        alpha = np.ones(len(xy))
        if len(sel):
            alpha[:] = 0.25  # the rest fades; the selected units are drawn again on top, in their colours
        scores = np.where(np.isfinite(snap.scores), np.char.mod("%.3f", np.nan_to_num(snap.scores)), "–")
        self.scatter_pipe.send({
            "emb_x": xy[:, 0], "emb_y": xy[:, 1], "color": colors, "alpha": alpha, "unit": emb["unit_index"].values,
            "label": label_names(emb), "region": emb["region"].values.astype(str), "session": emb["session"].values.astype(str),
            "score": scores,
        })  # fmt: skip
        self.marks_pipe.send({"emb_x": xy[sel, 0], "emb_y": xy[sel, 1], "color": colors[sel]})

    def _draw_map(self, snap: EmbeddingsSnapshot, colors: np.ndarray) -> None:
        emb = snap.table
        rows = snap.map_rows
        if emb is None or not len(rows):
            self.map_caption.object = "no unit positions"
            self.map_pipe.send(None)
            self.map_marks_pipe.send(None)
            return
        sessions = ", ".join(s.split("/")[-1] for s in snap.map_sessions)
        self.map_caption.object = html.escape(f"{snap.map_dataset}: {sessions}" if snap.session == ALL else snap.session)
        if len(rows) > DATASHADE_ABOVE:
            if self.map_pane.object is not self.map_shaded:
                self.map_pane.object = self.map_shaded
            x, y = emb["x"].values[rows], emb["y"].values[rows]
            self.map_shade_pipe.send({"x": x, "y": y, "color": colors[rows], "title": f"positions ({len(rows)} units, Datashader)"})
            on_map = np.flatnonzero(np.isin(rows, np.asarray(snap.selected, dtype=np.int64)))[:MARKS_MAX]
            self.map_shaded_marks_pipe.send({"pos_x": x[on_map], "pos_y": y[on_map], "color": colors[rows][on_map]})
            return
        if self.map_pane.object is not self.map_figure:
            self.map_pane.object = self.map_figure
        self.map_pipe.send({
            "pos_x": emb["x"].values[rows], "pos_y": emb["y"].values[rows], "color": colors[rows],
            "alpha": np.full(len(rows), 0.25 if snap.selected else 1.0), "region": emb["region"].values[rows].astype(str),
            "label": label_names(emb, rows), "unit": emb["unit_index"].values[rows], "session": emb["session"].values[rows].astype(str),
        })  # fmt: skip
        on_map = np.intersect1d(np.asarray(snap.selected, dtype=np.int64), rows)
        self.map_marks_pipe.send({"pos_x": emb["x"].values[on_map], "pos_y": emb["y"].values[on_map], "color": colors[on_map]})

    def _draw_traces(self, snap: EmbeddingsSnapshot, colors: np.ndarray) -> None:
        paths = [{"time": tr.time, "offset": tr.activity - 4.0 * k, "unit": tr.name, "color": colors[tr.row]} for k, tr in enumerate(snap.traces)]
        self.traces_pipe.send(paths)

    def _draw_separation(self, snap: EmbeddingsSnapshot) -> None:
        sep = snap.separation
        # the figures stay, their data change (a replaced figure races the browser's size reports)
        self.heat_pipe.send(None if sep is None else sep["matrix"])
        self.null_pipe.send(sep)
        if snap.table is None:
            self.separation.object = ""
        elif snap.separation_state == "computing":
            self.separation.object = "<i>computing the region silhouette against shuffled labels …</i>"
        elif sep is None:
            self.separation.object = "<i>fewer than two regions among these units: no separation test</i>"
        else:
            verdict = "above chance" if sep["score"] > sep["null_p95"] else "not above chance"
            self.separation.object = (
                f"<b>Is it real?</b> Region silhouette <b>{sep['score']:.4f}</b> against {len(sep['null'])} label shuffles: "
                f"null mean {sep['null_mean']:.4f}, 95th percentile {sep['null_p95']:.4f}, p = {sep['p_value']:.3f} "
                f"(z = {sep['z']:.1f}; {sep['n']} units"
                + (f", scored on a random {sep['n_used']} of them stratified by region" if sep.get("n_used", sep["n"]) < sep["n"] else "")
                + f", {len(sep['labels'])} regions"
                + (f"; within each of {len(sep['groups'])} sessions, averaged" if "groups" in sep else "")
                + f") — <b>{verdict}</b>."
            )

    def _build_plots(self) -> None:
        self.scatter_pipe = hv.streams.Pipe(data=None)
        self.marks_pipe = hv.streams.Pipe(data=None)
        self.map_pipe = hv.streams.Pipe(data=None)
        self.map_marks_pipe = hv.streams.Pipe(data=None)
        self.traces_pipe = hv.streams.Pipe(data=None)

        def points(data: dict | None, kdims: list[str], vdims: list[str]) -> hv.Points:
            # empty: colours as strings still (HoloViews would map an empty float column through a colour scale)
            data = data or {k: np.zeros(0, dtype=str if k == "color" else float) for k in [*kdims, *vdims]}
            # one label for every frame: a new label would make HoloViews add a glyph the browser never gets
            return hv.Points({k: data[k] for k in [*kdims, *vdims]}, kdims, vdims)

        scatter = hv.DynamicMap(lambda data: points(data, ["emb_x", "emb_y"], _SCATTER_COLS), streams=[self.scatter_pipe]).opts(
            color="color", alpha="alpha", size=5, line_alpha=0, tools=["box_select", "lasso_select", "hover", "tap"], active_tools=["box_select"],
            hover_tooltips=SCATTER_TOOLTIPS, nonselection_alpha=0.25, width=SIZE, height=SIZE, framewise=True, xaxis=None, yaxis=None,
            title="unit embeddings",
        )  # fmt: skip
        self.scatter_selection = hv.streams.Selection1D(source=scatter)
        self.scatter_selection.add_subscriber(lambda index: index is not None and self.controller.select(list(index)))
        # the selection: the units again, on top, in their own colours with a thin outline (colours stay visible)
        marks = hv.DynamicMap(lambda data: points(data, ["emb_x", "emb_y"], _MARK_COLS), streams=[self.marks_pipe]).opts(
            color="color", size=7, line_color="#222222", line_width=0.6, fill_alpha=1.0
        )
        self.scatter_figure = scatter * marks
        self.scatter_pane = pn.pane.HoloViews(self.scatter_figure, css_classes=["pocoviz-emb-scatter"], linked_axes=False)

        map_cols = ["color", "alpha", "region", "label", "unit", "session"]
        map_points = hv.DynamicMap(lambda data: points(data, ["pos_x", "pos_y"], map_cols), streams=[self.map_pipe]).opts(
            color="color", alpha="alpha", size=5, line_alpha=0, tools=["box_select", "lasso_select", "hover"], active_tools=["box_select"],
            hover_tooltips=MAP_TOOLTIPS, nonselection_alpha=0.25, width=SIZE, height=SIZE, framewise=True, xlabel="x (µm)", ylabel="y (µm)",
            title="positions (select here too)",
        )  # fmt: skip
        self.map_selection = hv.streams.Selection1D(source=map_points)
        self.map_selection.add_subscriber(lambda index: index is not None and self.controller.select_on_map(list(index)))
        map_marks = hv.DynamicMap(lambda data: points(data, ["pos_x", "pos_y"], _MARK_COLS), streams=[self.map_marks_pipe]).opts(
            color="color", size=7, line_color="#222222", line_width=0.6, fill_alpha=1.0
        )
        self.map_figure = map_points * map_marks
        self.map_pane = pn.pane.HoloViews(self.map_figure, css_classes=["pocoviz-emb-map"], linked_axes=False)

        # many units: Datashader images that stay (their data change), the selection as glyphs on top,
        # and a box drawn on the image selects (the image has no glyphs to pick: the controller resolves it)
        self.scatter_shade_pipe, self.shaded_marks_pipe = hv.streams.Pipe(data=None), hv.streams.Pipe(data=None)
        self.map_shade_pipe, self.map_shaded_marks_pipe = hv.streams.Pipe(data=None), hv.streams.Pipe(data=None)
        self.scatter_shaded = self._shaded_figure(self.scatter_shade_pipe, self.shaded_marks_pipe, ("emb_x", "emb_y"),
                                                  self.controller.select_in_box, axes=False)  # fmt: skip
        self.map_shaded = self._shaded_figure(self.map_shade_pipe, self.map_shaded_marks_pipe, ("pos_x", "pos_y"),
                                              self.controller.select_on_map_box, axes=True)  # fmt: skip

        self.traces_pane = pn.pane.HoloViews(
            hv.DynamicMap(self._traces, streams=[self.traces_pipe]).opts(
                responsive=True, height=280, framewise=True, color=hv.dim("color"), line_width=1.1, tools=["hover"],
                hover_tooltips=[("unit", "@unit")], title="traces of the selected units", yaxis=None, xlabel="time (s)",
            ),
            sizing_mode="stretch_width", height=290, css_classes=["pocoviz-emb-traces"], linked_axes=False,
        )  # fmt: skip
        self.heat_pipe = hv.streams.Pipe(data=None)
        self.null_pipe = hv.streams.Pipe(data=None)
        heat = hv.DynamicMap(self._heatmap, streams=[self.heat_pipe]).opts(
            cmap="viridis", colorbar=True, tools=["hover"], xrotation=90, width=460, height=440, fontsize={"ticks": "7pt"}, framewise=True,
            title="region distances (row-normalised)", xlabel="", ylabel="",
        )  # fmt: skip
        self.heat_pane = pn.pane.HoloViews(heat, width=460, height=440, css_classes=["pocoviz-emb-heat"], linked_axes=False)
        null = hv.DynamicMap(self._null, streams=[self.null_pipe]).opts(
            hv.opts.Histogram(framewise=True), hv.opts.Spikes(framewise=True),
            hv.opts.Overlay(width=400, height=300, framewise=True, show_legend=False, title="label-shuffle null (grey), observed (red)"),
        )
        self.null_pane = pn.pane.HoloViews(null, width=400, height=300, css_classes=["pocoviz-emb-null"], linked_axes=False)
        self.sessions_pane = pn.pane.HoloViews(None, width=400, height=320, css_classes=["pocoviz-emb-sessions"], linked_axes=False)

    @staticmethod
    def _shaded_figure(pipe: hv.streams.Pipe, marks_pipe: hv.streams.Pipe, kdims: tuple[str, str], on_box, *, axes: bool) -> hv.DynamicMap:
        """A Datashader image of the points ``pipe`` sends (``x``, ``y``, ``color``, ``title``),
        re-aggregated at each zoom, with the glyphs ``marks_pipe`` sends on top; a box drawn on it
        calls ``on_box(left, bottom, right, top)``."""
        ranges = hv.streams.RangeXY()
        last: dict[str, Any] = {"data": None}

        def image(data: dict | None, x_range: tuple | None, y_range: tuple | None) -> hv.RGB:
            if data is not last["data"]:  # new points: their own extent (the ranges are those of the old ones)
                last["data"] = data
                x_range = y_range = None
            return shade_points(data, kdims, x_range, y_range, SIZE, SIZE)

        shaded = hv.DynamicMap(image, streams=[pipe, ranges]).opts(
            tools=["box_select"], active_tools=["box_select", "wheel_zoom"], width=SIZE, height=SIZE, framewise=True,
            **({"xlabel": "x (µm)", "ylabel": "y (µm)"} if axes else {"xaxis": None, "yaxis": None}),
        )  # fmt: skip
        bounds = hv.streams.BoundsXY(source=shaded)
        bounds.add_subscriber(lambda bounds: bounds is not None and on_box(*bounds))

        def marks(data: dict | None) -> hv.Points:
            data = data or {kdims[0]: np.zeros(0), kdims[1]: np.zeros(0), "color": np.zeros(0, dtype=str)}
            return hv.Points(data, list(kdims), ["color"])

        marked = hv.DynamicMap(marks, streams=[marks_pipe]).opts(color="color", size=6, line_color="#222222", line_width=0.6, fill_alpha=1.0)
        return shaded * marked

    @staticmethod
    def _session_plot(data: dict | None) -> hv.Element | None:
        """Session vectors (session embedding + mean unit embedding, spec §6), PCA, by dataset."""
        if data is None:
            return None
        xy, datasets = data["xy"], data["dataset"]
        colors = category_palette(sorted(set(datasets.tolist())), "dataset")
        pts = hv.Points(
            {"sess_x": xy[:, 0], "sess_y": xy[:, 1], "session": data["session"], "dataset": datasets,
             "color": [colors[d] for d in datasets], "units": data["units"]},
            ["sess_x", "sess_y"], ["session", "dataset", "color", "units"],
        )  # fmt: skip
        names = np.array([str(v).split("/")[-1] for v in data["session"]])
        wx, wy = (float(np.ptp(xy[:, 0])) or 1.0), (float(np.ptp(xy[:, 1])) or 1.0)
        # a label goes left of its point when another point sits just right of it (labels never overlap points)
        crowded = np.array([any(0 < xy[j, 0] - xy[i, 0] < 0.25 * wx and abs(xy[j, 1] - xy[i, 1]) < 0.06 * wy for j in range(len(xy)))
                            for i in range(len(xy))], dtype=bool)  # fmt: skip
        labels = hv.Overlay([
            hv.Labels({"sess_x": xy[m, 0], "sess_y": xy[m, 1], "text": names[m]}, ["sess_x", "sess_y"], "text").opts(
                text_font_size="8pt", xoffset=side * 0.04 * wx, text_align=align, text_color="#333333")
            for m, side, align in ((~crowded, 1, "left"), (crowded, -1, "right"))
        ])  # fmt: skip
        tips = [("session", "@session"), ("dataset", "@dataset"), ("units", "@units")]
        return (pts.opts(color="color", size=12, tools=["hover"], hover_tooltips=tips) * labels).opts(
            hv.opts.Overlay(width=400, height=320, title="session vectors (PCA)", xaxis=None, yaxis=None, padding=(0.35, 0.2))
        )

    @staticmethod
    def _traces(data: list | None) -> hv.Contours:
        empty = [{"time": np.array([np.nan]), "offset": np.array([np.nan]), "unit": "", "color": "#ffffff"}]
        return hv.Contours(data or empty, kdims=["time", "offset"], vdims=["unit", "color"])

    @staticmethod
    def _heatmap(data: Any) -> hv.HeatMap:
        if data is None:
            return hv.HeatMap([("", "", np.nan)], ["region_to", "region"], "distance")
        rows = [(str(b), str(a), float(data.sel(region=a, region_to=b))) for a in data.region.values for b in data.region_to.values]
        return hv.HeatMap(rows, ["region_to", "region"], "distance")

    @staticmethod
    def _null(data: dict | None) -> hv.Overlay:
        """The silhouettes of the label shuffles (grey), the observed one (red) and the shuffles' 95th
        percentile (dashed)."""
        sep = data
        if sep is None:
            freq, edges, score, p95 = np.zeros(1), np.array([0.0, 0.1]), 0.05, 0.05
        else:
            freq, edges = np.histogram(sep["null"], bins=30)
            score, p95 = sep["score"], sep["null_p95"]
        top = max(float(freq.max()), 1.0)
        hist = hv.Histogram((edges, freq), kdims=["silhouette"], vdims=["shuffles"]).opts(color="#bbbbbb", line_alpha=0)
        obs = hv.Spikes(([score], [top]), kdims=["silhouette"], vdims=["shuffles"]).opts(color="#D55E00", line_width=3 if sep else 0)
        dashed = hv.Spikes(([p95], [top]), kdims=["silhouette"], vdims=["shuffles"]).opts(color="black", line_dash="dashed", line_width=1.5 if sep else 0)
        return hist * obs * dashed

    # ------------------------------------------------------------------ layout
    def _on_served(self, doc: Any) -> None:
        super()._on_served(doc)
        # periodic callbacks run in Panel's thread pool (--num-threads): draw on the session's loop
        self._poll = pn.state.add_periodic_callback(
            lambda: self._on_loop(lambda: self.render_progress(self.controller.snapshot())), period=300, start=False
        )
        if self.controller.busy:
            self._poll.start()

    def close(self, timeout: float = 120.0) -> None:
        """Stop the progress poll; cancel and join the controller's jobs."""
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        super().close(timeout)

    def _build_layout(self) -> pn.viewable.Viewable:
        c = self.controller
        controls = pn.Column(
            pn.widgets.Select.from_param(c.param.model, label="Checkpoint", options=c.choices, width=250, css_classes=["pocoviz-e-model"]),
            self._widget("session", pn.widgets.Select, "Sessions", owner=c),
            self._widget("reducer", pn.widgets.RadioButtonGroup, "Layout", owner=c),
            self._widget("color_by", pn.widgets.Select, "Colour by", owner=c),
            self.legend,
            self.map_select,
            self.progress,
            self.status,
            self.selection_info,
            width=280,
        )
        plots = pn.Column(
            self.alert,
            self.notice,
            self.info,
            pn.Row(pn.Column(self.scatter_caption, self.scatter_pane), pn.Column(self.map_caption, self.map_pane, self.map_note)),
            self.traces_pane,
            self.separation,
            pn.Row(self.heat_pane, pn.Column(self.null_pane, self.sessions_pane)),
            sizing_mode="stretch_width",
        )
        self.render(self.controller.snapshot())
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-embeddings"])

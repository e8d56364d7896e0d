"""Recordings tab: pick a corpus and session; population raster sorted by region, unit traces,
unit positions coloured by region, session metadata."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend and its options)
import numpy as np
import panel as pn
import param
import xarray as xr
from holoviews.operation.datashader import datashade, dynspread, rasterize

from pocoviz.recordings import RecordingError, duplicate_labels, sort_units_by_region, summarize
from pocoviz.recordings.raster import RegionBand

from .base import TabView
from pocoviz.controllers.cache import LRUCache
from pocoviz.controllers.sources import DEMO_KEY, SOURCE_CACHE, list_sources
from .theme import UNKNOWN_COLOR, region_colors

hv.Store.set_current_backend("bokeh")  # builds hv.opts.<Element> for the bokeh backend

RASTER_HEIGHT = 430
BAND_WIDTH = 235
DATASHADE_POINTS_ABOVE = 20_000
# an invisible path: HoloViews cannot map colours on an empty Path
_NO_TRACE = [{"time": np.array([np.nan]), "offset": np.array([np.nan]), "unit": "", "region": "", "color": "#ffffff"}]


@dataclass
class PreparedSession:
    """Everything the views need for one session, computed once."""

    name: str  # "species/session"
    ds: xr.Dataset
    order: np.ndarray  # display row -> positional unit index
    rank: np.ndarray  # positional unit index -> display row
    bands: list[RegionBand]
    colors: dict[str, str]
    time: np.ndarray  # seconds from the first frame (nominal, regular: frame / rate)
    clim: tuple[float, float]
    cmap: str
    regions: np.ndarray  # per positional unit, "(no region)" for ""
    names: np.ndarray  # per positional unit, "AVAL", "#12", or "URADL (dup #12)" for a duplicated label
    time_label: str  # "time (s)", or "frame" when the file gave no sampling rate
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # label -> positional units, labels on >1 unit


#: sessions sorted and coloured for display, shared by every browser session
PREPARED_CACHE: LRUCache[PreparedSession] = LRUCache(8, name="prepared sessions")


def prepare_session(key: tuple, ds: xr.Dataset, name: str = "") -> PreparedSession:
    """Sort units and pick colours once per session (cached by ``key``)."""
    cached = PREPARED_CACHE.get(key)
    if cached is not None:
        return cached
    order, bands = sort_units_by_region(ds, within="pc1")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    regions = np.asarray(ds["region"].values).astype(str)
    regions = np.where(regions == "", "(no region)", regions)
    labels = np.asarray(ds["label"].values).astype(str)
    ids = np.asarray(ds["unit"].values)
    duplicates = duplicate_labels(labels)
    names = np.array([unit_name(lab, uid, lab in duplicates) for lab, uid in zip(labels, ids)])
    act = ds["activity"].values
    sample = act[:: max(1, act.shape[0] // 400), :: max(1, act.shape[1] // 2000)]
    units = ds["activity"].attrs.get("units")
    if units == "z-score":
        hi = float(np.nanpercentile(np.abs(sample), 99)) or 1.0
        clim, cmap = (-hi, hi), "RdBu_r"
    else:
        lo, hi = (float(v) for v in np.nanpercentile(sample, [1, 99]))
        clim, cmap = (lo, hi if hi > lo else lo + 1), "viridis"
    rate = float(ds.attrs["sampling_rate_hz"])
    prepared = PreparedSession(
        name=name or f"{ds.attrs.get('species')}/{ds.attrs.get('session')}",
        ds=ds,
        order=order,
        rank=rank,
        bands=bands,
        colors=region_colors(regions),
        time=np.arange(ds.sizes["time"]) / rate,
        clim=clim,
        cmap=cmap,
        regions=regions,
        names=names,
        time_label="frame (no sampling rate in the file)" if ds.attrs.get("time_is_frame_index") else "time (s)",
        duplicates=duplicates,
    )
    PREPARED_CACHE.put(key, prepared)
    return prepared


def unit_name(label: str, uid: int, duplicated: bool = False) -> str:
    """How a unit is named on axes and in hovers: its label, ``#<id>`` without one, and
    ``"URADL (dup #12)"`` when another unit of the recording carries the same label."""
    if not label:
        return f"#{uid}"
    return f"{label} (dup #{uid})" if duplicated else label


def label_options(ds: xr.Dataset) -> dict[str, str]:
    """Choices of a neuron-label picker, ``{shown: label}`` sorted by label; a label that several
    units carry is shown as ``"URADL (2 units: duplicated label)"`` (picking it selects all of them)."""
    labels = np.asarray(ds["label"].values).astype(str)
    dups = duplicate_labels(labels)
    out = {}
    for lab in sorted({v for v in labels if v}):
        out[f"{lab} ({len(dups[lab])} units: duplicated label)" if lab in dups else lab] = lab
    return out


def duplicate_note(prep: PreparedSession, units: list[int]) -> str:
    """A sentence naming the duplicated labels among ``units`` ("" when there are none)."""
    ids = np.asarray(prep.ds["unit"].values)
    shown = set(units)
    parts = [
        f"{lab} is carried by {len(idx)} units ({', '.join(f'#{int(ids[i])}' for i in idx)})"
        for lab, idx in prep.duplicates.items()
        if shown.intersection(idx)
    ]
    return ("duplicated label: " + "; ".join(parts)) if parts else ""


def parse_unit_ids(text: str) -> list[int]:
    """``"0-3, 7"`` -> ``[0, 1, 2, 3, 7]``; raises ValueError with the bad token."""
    out: list[int] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", token)
        if not m:
            raise ValueError(f"not a unit id or range: {token!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or b - a > 10_000:
            raise ValueError(f"bad range: {token!r}")
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))


def units_of_region(prep: PreparedSession, region: str | None, n: int) -> list[int]:
    """Up to ``n`` units of ``region``, evenly spread over its rows of the sorted raster."""
    band = next((b for b in prep.bands if b.region == region), None)
    if band is None:
        return []
    rows = np.unique(np.linspace(band.start, band.stop - 1, min(n, band.stop - band.start)).round().astype(int))
    return [int(prep.order[r]) for r in rows]


def units_with_labels(prep: PreparedSession, labels: list[str], limit: int) -> list[int]:
    """The units carrying any of ``labels``, in the order given, at most ``limit``; a duplicated
    label (several units carry it) selects every one of its units."""
    have = np.asarray(prep.ds["label"].values).astype(str)
    units = [int(i) for lab in dict.fromkeys(labels) for i in np.flatnonzero(have == lab)]
    return list(dict.fromkeys(units))[:limit]


def units_with_ids(prep: PreparedSession, text: str, limit: int) -> list[int]:
    """Positions of the unit ids in ``text`` ("0-3, 7"); ValueError names ids not in the session."""
    ids = parse_unit_ids(text)
    pos = {int(u): i for i, u in enumerate(np.asarray(prep.ds["unit"].values))}
    missing = [u for u in ids if u not in pos]
    if missing:
        raise ValueError(f"no unit with id {missing[:5]} in this session (ids run {min(pos)}–{max(pos)})")
    return [pos[u] for u in ids][:limit]


def toggle_tapped_unit(prep: PreparedSession, y: float | None, text: str, limit: int) -> str | None:
    """The unit-id text after a click on raster row ``y`` (adds or removes that unit); None when
    the click hit no row."""
    if y is None or not np.isfinite(y):
        return None
    row = int(round(y))
    if not 0 <= row < len(prep.order):
        return None
    uid = int(prep.ds["unit"].values[prep.order[row]])
    try:
        current = parse_unit_ids(text)
    except ValueError:
        current = []
    if uid in current:
        current.remove(uid)
    else:
        current.append(uid)
    return ", ".join(map(str, current[-limit:]))


class RecordingsView(TabView):
    """The Recordings tab (see module docstring)."""

    css_prefix = "pocoviz"

    source = param.Selector(default="demo", objects={DEMO_KEY: "demo"}, doc="Corpus or file")
    session = param.Selector(default=None, objects=[], doc="Session (species/session)")
    select_by = param.Selector(default="region", objects=["region", "label", "index"], doc="Choose traces by")
    region = param.Selector(default=None, objects=[])
    labels = param.ListSelector(default=[], objects=[])
    unit_ids = param.String(default="", doc="Unit ids, e.g. 0-3, 17")
    n_traces = param.Integer(default=8, bounds=(1, 40))
    projection = param.Selector(default="x–y", objects=["x–y", "x–z", "y–z"])
    status = param.String(default="")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self.data_dir = data_dir
        self._prepared: PreparedSession | None = None
        self._sessions: dict[str, xr.Dataset] = {}
        self.param.source.objects = list_sources(data_dir)
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._bands_pane = pn.pane.HoloViews(None, width=BAND_WIDTH, height=RASTER_HEIGHT, css_classes=["pocoviz-bands"])
        self._raster_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=RASTER_HEIGHT, css_classes=["pocoviz-raster"])
        self._traces_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=420, css_classes=["pocoviz-traces"])
        self._map_pane = pn.pane.HoloViews(None, width=460, height=420, css_classes=["pocoviz-map"])
        self._meta_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-meta"])
        self._selection_info = pn.pane.Markdown("", css_classes=["pocoviz-selection"], margin=(0, 10))
        self._hold_selection = False
        self._build_plots()
        self._load_source()

    # ----------------------------------------------------------------------------- data
    @param.depends("source", watch=True)
    def _load_source(self) -> None:
        try:
            self._sessions = SOURCE_CACHE.load(self.source, self.data_dir)
        except RecordingError as exc:
            self._show_error(exc)
            return
        except Exception as exc:  # an unexpected reader failure must not kill the app
            self._show_error(RecordingError(f"{type(exc).__name__}: {exc}", path=self.source))
            return
        self._clear_error()
        names = list(self._sessions)
        self.param.session.objects = names
        if self.session in names:
            self._on_session()
        else:
            self.session = names[0]

    @param.depends("session", watch=True)
    def _on_session(self) -> None:
        if self.session not in self._sessions:
            return
        ds = self._sessions[self.session]
        self._prepared = prep = prepare_session((self.source, self.session, id(ds)), ds, self.session)
        regions = [b.region for b in prep.bands]
        options = label_options(ds)
        labelled = list(options.values())
        # the selection widgets change below; draw the selection once, after the new session
        self._hold_selection = True
        with param.parameterized.batch_call_watchers(self):
            self.param.region.objects = regions
            self.param.labels.objects = options
            self.region = regions[0] if regions else None
            self.labels = [lab for lab in self.labels if lab in labelled]
            if self.select_by == "label" and not labelled:
                self.select_by = "region"
            self.param.projection.objects = self._projections(ds)
            if self.projection not in self.param.projection.objects:
                self.projection = self.param.projection.objects[0]
        self._hold_selection = False
        self._send_session(prep)
        self._meta_pane.object = self._metadata_html(prep)
        self._update_selection()

    @staticmethod
    def _projections(ds: xr.Dataset) -> list[str]:
        have = [c for c in ("x", "y", "z") if c in ds.coords]
        options = [f"{a}–{b}" for a, b in (("x", "y"), ("x", "z"), ("y", "z")) if a in have and b in have]
        return options or ["x–y"]

    def _show_error(self, exc: Exception) -> None:
        self._alert.object = f"**Cannot open this recording.** {html.escape(str(exc))}"
        self._alert.visible = True
        self.status = str(exc)

    def _clear_error(self) -> None:
        self._alert.visible = False
        self.status = ""

    # ----------------------------------------------------------------------------- selection
    def selected_units(self) -> list[int]:
        """Positional indices of the units whose traces are shown."""
        prep = self._prepared
        if prep is None:
            return []
        if self.select_by == "region":
            return units_of_region(prep, self.region, self.n_traces)
        if self.select_by == "label":
            return units_with_labels(prep, self.labels, 40)
        return units_with_ids(prep, self.unit_ids, 40)

    @param.depends("select_by", "region", "labels", "unit_ids", "n_traces", "projection", watch=True)
    def _update_selection(self) -> None:
        prep = self._prepared
        if prep is None or self._hold_selection:
            return
        try:
            units = self.selected_units()
        except ValueError as exc:
            self._selection_info.object = f"⚠ {html.escape(str(exc))}"
            return
        note = duplicate_note(prep, units)
        self._selection_info.object = (f"{len(units)} unit(s) shown" if units else "no units selected") + (
            f"; ⚠ {html.escape(note)}" if note else ""
        )
        self._send_selection(prep, units)

    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        prep = self._prepared
        text = None if prep is None else toggle_tapped_unit(prep, y, self.unit_ids if self.select_by == "index" else "", 40)
        if text is None:
            return
        with param.parameterized.batch_call_watchers(self):
            self.select_by = "index"
            self.unit_ids = text

    # ----------------------------------------------------------------------------- plots
    # Each plot is a DynamicMap fed by a Pipe and built once: changing the session or the selection
    # sends new data into the existing Bokeh figures instead of rebuilding them (≈ 1 s per figure
    # in the browser otherwise).
    def _build_plots(self) -> None:
        self._raster_pipe = hv.streams.Pipe(data=None)
        self._bands_pipe = hv.streams.Pipe(data=None)
        self._traces_pipe = hv.streams.Pipe(data=None)
        self._map_pipe = hv.streams.Pipe(data=None)

        image = hv.DynamicMap(self._image, streams=[self._raster_pipe])
        # our own range stream, so that a new session can reset the zoom before its data arrive
        self._raster_range = hv.streams.RangeXY()
        raster = rasterize(image, precompute=True, streams=[self._raster_range]).opts(
            colorbar=True,
            responsive=True,
            height=RASTER_HEIGHT,
            invert_yaxis=True,
            tools=["hover", "tap"],
            ylabel="unit (sorted by region)",
            yaxis=None,
            toolbar="above",
            framewise=True,
            padding=0,
        )
        raster = raster.apply.opts(
            cmap=self.param._cmap, clim=self.param._clim, title=self.param._raster_title, xlabel=self.param._time_label
        )
        self._tap = hv.streams.Tap(source=raster, x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        lines = hv.DynamicMap(self._band_lines, streams=[self._bands_pipe])
        self._raster_pane.object = (raster * lines).opts(hv.opts.Overlay(responsive=True, height=RASTER_HEIGHT))

        self._bands_pane.object = hv.DynamicMap(self._bands, streams=[self._bands_pipe]).opts(
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
            )
        )
        traces = hv.DynamicMap(self._traces, streams=[self._traces_pipe]).opts(
            responsive=True,
            height=420,
            ylabel="",
            toolbar="above",
            framewise=True,
            padding=(0, 0.03),
            line_width=1.2,
            color=hv.dim("color"),
            tools=["hover"],
        )
        self._traces_pane.object = traces.apply.opts(
            yticks=self.param._trace_ticks, title=self.param._traces_title, xlabel=self.param._time_label
        )
        self._map_pane.object = self._new_map_dmap()

    _cmap = param.String(default="RdBu_r", precedence=-1)
    _clim = param.Tuple(default=(-3.0, 3.0), precedence=-1)
    _raster_title = param.String(default="", precedence=-1)
    _trace_ticks = param.List(default=None, allow_None=True, precedence=-1)
    _traces_title = param.String(default="", precedence=-1)
    _map_title = param.String(default="unit positions", precedence=-1)
    _time_label = param.String(default="time (s)", precedence=-1)

    @staticmethod
    def _image(data: tuple | None) -> hv.Image:
        if data is None:
            data = (np.arange(2.0), np.arange(2.0), np.zeros((2, 2), np.float32))
        return hv.Image(data, kdims=["time", "row"], vdims=[hv.Dimension("activity")])

    @staticmethod
    def _band_lines(data: dict | None) -> hv.HLines:
        return hv.HLines(list(data["boundaries"]) if data else [], kdims=["row"]).opts(color="black", line_width=1, alpha=0.6)

    @staticmethod
    def _bands(data: dict | None) -> hv.Overlay:
        rects = data["rects"] if data else []
        labels = data["labels"] if data else []
        r = hv.Rectangles(rects, kdims=["band_x", "row", "band_x2", "row2"], vdims=["region", "color"]).opts(
            color=hv.dim("color"), line_color="white", line_width=1, tools=["hover"]
        )
        t = hv.Labels(labels, kdims=["band_x", "row"], vdims=["text"]).opts(
            text_align="left", text_font_size="8pt", text_color="#222"
        )
        return r * t

    @staticmethod
    def _traces(data: list | None) -> hv.Contours:
        # Contours, not Path: a Path with a per-path colour column is split into one glyph per segment
        return hv.Contours(data or _NO_TRACE, kdims=["time", "offset"], vdims=["unit", "region", "color"])

    @staticmethod
    def _map(data: dict | None) -> hv.Overlay:
        a, b, unit = (data["axes"] + (data["unit_label"],)) if data else ("x", "y", "µm")
        dims = [hv.Dimension("pos_a", label=f"{a} ({unit})"), hv.Dimension("pos_b", label=f"{b} ({unit})")]
        vdims = ["unit", "region", "color"]
        base = hv.Points(data["points"] if data else {d: [] for d in ["pos_a", "pos_b", *vdims]}, dims, vdims)
        sel = hv.Points(data["selected"] if data else {d: [] for d in ["pos_a", "pos_b", *vdims]}, dims, vdims)
        size = data["size"] if data else 4
        return (
            base.opts(color=hv.dim("color"), size=size, tools=["hover"], line_alpha=0, framewise=True)
            * sel.opts(marker="circle", size=12, fill_alpha=0, line_color="black", line_width=2, tools=["hover"], framewise=True)
        ).opts(hv.opts.Overlay(width=460, height=420, framewise=True, toolbar="above"))

    def _send_session(self, prep: PreparedSession) -> None:
        act = prep.ds["activity"].values
        units = prep.ds["activity"].attrs.get("units")
        self._raster_range.event(x_range=None, y_range=None)
        self._raster_pipe.send((prep.time, np.arange(len(prep.order), dtype=float), np.ascontiguousarray(act[:, prep.order].T)))
        n = len(prep.order)
        min_rows = n / 40  # label a band only when it is tall enough to hold text
        self._bands_pipe.send(
            {
                "boundaries": [b.start - 0.5 for b in prep.bands[1:]],
                "rects": [(0.0, b.start - 0.5, 0.12, b.stop - 0.5, b.region, prep.colors[b.region]) for b in prep.bands],
                "labels": [
                    (0.16, b.center, f"{b.region} ({b.stop - b.start})") for b in prep.bands if (b.stop - b.start) >= min_rows
                ],
            }
        )
        with param.parameterized.batch_call_watchers(self):
            self._cmap, self._clim, self._time_label = prep.cmap, prep.clim, prep.time_label
            self._raster_title = f"{prep.name}: {n} units × {len(prep.time)} frames ({units})"

    def _send_selection(self, prep: PreparedSession, units: list[int]) -> None:
        act = prep.ds["activity"].values
        paths, ticks = [], []
        if units:
            block = act[:, units]
            spread = float(np.nanpercentile(block, 99.5) - np.nanpercentile(block, 0.5)) or 1.0
            step = 0.8 * spread
            for k, i in enumerate(units):
                offset = -k * step
                paths.append(
                    {
                        "time": prep.time,
                        "offset": act[:, i] + offset,
                        "unit": prep.names[i],
                        "region": prep.regions[i],
                        "color": prep.colors.get(prep.regions[i], UNKNOWN_COLOR),
                    }
                )
                ticks.append((offset, prep.names[i]))
        with param.parameterized.batch_call_watchers(self):
            self._trace_ticks = ticks or None
            self._traces_title = (
                f"traces ({prep.ds['activity'].attrs.get('units')}), offset per unit" if units else "select units to show traces"
            )
        self._traces_pipe.send(paths)
        self._send_map(prep, units)

    def _send_map(self, prep: PreparedSession, units: list[int]) -> None:
        ds = prep.ds
        a, b = self.projection.split("–")
        n = len(prep.regions)
        if a not in ds.coords or b not in ds.coords:
            self._map_pane.object = hv.Text(0.5, 0.5, "this recording has no unit positions").opts(
                width=460, height=420, xaxis=None, yaxis=None, toolbar=None, title="unit positions"
            )
            self._clear_map()
            return
        pa, pb = np.asarray(ds[a].values, dtype=float), np.asarray(ds[b].values, dtype=float)
        unit_label = str(ds[a].attrs.get("units", "um")).replace("um", "µm")
        colors = np.array([prep.colors.get(r, UNKNOWN_COLOR) for r in prep.regions])
        title = f"unit positions ({a}–{b}), coloured by region"
        if n > DATASHADE_POINTS_ABOVE:  # too many glyphs for the browser: let Datashader draw them
            import datashader

            points = hv.Points({"pos_a": pa, "pos_b": pb, "region": prep.regions}, ["pos_a", "pos_b"], ["region"])
            shaded = dynspread(datashade(points, aggregator=datashader.count_cat("region"), color_key=prep.colors))
            sel = hv.Points({"pos_a": pa[units], "pos_b": pb[units]}, ["pos_a", "pos_b"]).opts(
                marker="circle", size=12, fill_alpha=0, line_color="black", line_width=2
            )
            self._map_pane.object = (shaded * sel).opts(hv.opts.Overlay(width=460, height=420, title=title))
            self._clear_map()
            return
        self._map_title = title
        self._map_pipe.send(
            {
                "axes": (a, b),
                "unit_label": unit_label,
                "size": 7 if n < 300 else (4 if n < 3000 else 2),
                "points": {"pos_a": pa, "pos_b": pb, "unit": prep.names, "region": prep.regions, "color": colors},
                "selected": {
                    "pos_a": pa[units],
                    "pos_b": pb[units],
                    "unit": prep.names[units],
                    "region": prep.regions[units],
                    "color": colors[units],
                },
            }
        )
        # A map that was swapped out (no positions, or Datashader) comes back as a new DynamicMap,
        # built from the pipe that now holds this recording: re-showing the old one made the
        # browser redraw its last plot, another recording's units, and ignore the new data.
        if self._map_pane.object is not self._map_dmap:
            self._map_pane.object = self._new_map_dmap()

    def _new_map_dmap(self) -> hv.DynamicMap:
        self._map_dmap = hv.DynamicMap(self._map, streams=[self._map_pipe]).apply.opts(title=self.param._map_title)
        return self._map_dmap

    def _clear_map(self) -> None:
        """Empty the position map's stream while it is not shown (no positions, or Datashader),
        so that it holds no other recording's units when it is shown again."""
        if self._map_pipe.data is not None:
            self._map_pipe.send(None)

    def _metadata_html(self, prep: PreparedSession) -> str:
        info = summarize(prep.ds)
        rows = [
            ("species", info["species"]),
            ("session", info["session"]),
            ("units × frames", f"{info['n_unit']} × {info['n_time']}"),
            ("sampling rate", f"{info['sampling_rate_hz']:.3g} Hz"),
            ("duration", f"{info['duration_s']:.1f} s"),
            ("activity", info["activity_units"]),
            ("labelled units", info["n_labelled"]),
            ("positions", ", ".join(info["has_positions"]) or "none"),
            ("regions", ", ".join(f"{k} ({v})" for k, v in info["regions"].items())),
            ("source", info["source"]),
            ("citation", info["citation"]),
        ]
        rows += [(k, v) for k, v in info.get("attrs", {}).items() if k not in ("format",)]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"

    # ----------------------------------------------------------------------------- layout
    def _build_layout(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            self._widget("source", pn.widgets.Select, "Corpus / file"),
            self._widget("session", pn.widgets.Select, "Session"),
            pn.pane.Markdown("**Traces by**", margin=(10, 10, 0, 10)),
            self._widget("select_by", pn.widgets.RadioButtonGroup, "Traces by"),
            self._widget("region", pn.widgets.Select, "Region"),
            self._widget("labels", pn.widgets.MultiChoice, "Neuron labels"),
            self._widget("unit_ids", pn.widgets.TextInput, "Unit ids (or click the raster)"),
            self._widget("n_traces", pn.widgets.IntSlider, "Traces per region"),
            self._widget("projection", pn.widgets.Select, "Position map"),
            self._selection_info,
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

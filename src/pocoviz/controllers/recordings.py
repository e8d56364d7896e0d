"""The Recordings tab's controller: which corpus and session are open, which units are shown as
traces (by region, neuron label or unit id), the time window and the position map's projection,
and a snapshot of what the tab shows. No panel, holoviews or bokeh here (``pocoviz.ui.recordings``
draws the snapshots).

Also the per-session display preparation: units sorted by region, their names, colour limits
(:func:`prepare_session`, cached in :data:`PREPARED_CACHE`); choosing units (by region, label, id
or a click on a raster row) is :mod:`pocoviz.controllers.units`, shared with the Forecast tab.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param
import xarray as xr

from pocoviz.recordings import RecordingError, duplicate_labels, is_lazy, sort_units_by_region
from pocoviz.recordings.raster import RegionBand
from pocoviz.recordings.rasterwindow import RasterSource, RasterWindow, has_pyramid
from pocoviz.recordings.schema import POSITION_COORDS, REQUIRED_ATTRS

from .base import Controller
from .cache import LRUCache
from .sources import DEMO_KEY, SOURCE_CACHE, list_sources
from .units import (  # noqa: F401  (re-exported: the unit choosers this tab shares with the Forecast tab)
    duplicate_note,
    label_options,
    parse_unit_ids,
    toggle_tapped_unit,
    unit_name,
    units_of_region,
    units_with_ids,
    units_with_labels,
)
from .urlstate import UrlField, UrlValueError

#: more positioned units than this are drawn as a density image (Datashader), not as glyphs
DATASHADE_POINTS_ABOVE = 20_000
#: at most this many traces (labels and ids can ask for more)
MAX_TRACES = 40
#: at most this many unit names on the traces' axis (more overlap in its 420 px; the hover names each)
MAX_TRACE_LABELS = 20
#: the raster asks for windows of at least this many columns × rows (and gets at most about twice
#: as many along each axis): about half the raster's pixels at 1600 px wide, since a window of
#: 1000 × 430 float32 cells sent to the browser after each pan cost more than the pixels gained
RASTER_COLS, RASTER_ROWS = 500, 256
#: a lazily opened recording whose regions change more often than this along its stored units is
#: drawn with one band (the layout stores units grouped by region; a bare array may not)
MAX_BANDS = 500
#: frames of the sample that sets a lazily opened recording's colour limits
CLIM_SAMPLE_FRAMES = 64
#: a found unit is shown with at least this many raster rows around it
FIND_MIN_ROWS = 40
#: a region band is labelled only when its label is at least this fraction of the raster's rows
#: away from the last labelled one (8 pt labels on a ~380 px raster overlapped at 1/40)
BAND_LABEL_SPACING = 1 / 28


@dataclass
class PreparedSession:
    """Everything the views need for one session, computed once."""

    name: str  # "species/session"
    ds: xr.Dataset
    order: np.ndarray  # display row -> positional unit index
    rank: np.ndarray  # positional unit index -> display row
    bands: list[RegionBand]
    time: np.ndarray  # seconds from the first frame (nominal, regular: frame / rate)
    clim: tuple[float, float]
    cmap: str
    regions: np.ndarray  # per positional unit, "(no region)" for ""
    names: np.ndarray  # per positional unit, "AVAL", "#12", or "URADL (dup #12)" for a duplicated label
    time_label: str  # "time (s)", or "frame" when the file gave no sampling rate
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # label -> positional units, labels on >1 unit
    lazy: bool = False  # activity is Dask-backed (opened from chunked storage, never read whole)
    stored_order: bool = False  # rows in stored order (lazy, or a store with a pyramid), not sorted here
    _raster: RasterSource | None = field(default=None, repr=False)

    @property
    def raster(self) -> RasterSource:
        """Raster windows of this session in display order (built on first use)."""
        if self._raster is None:
            self._raster = RasterSource(self.ds) if self.stored_order else RasterSource(self.ds, order=self.order)
        return self._raster

    def traces_of(self, units: list[int]) -> np.ndarray:
        """Activity (time, len(units)) of positional ``units`` only (a lazy recording reads just
        their chunks)."""
        return self.raster.unit_block(units)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame (frames when there is no sampling rate)."""
        return float(self.time[-1]) if len(self.time) else 0.0


#: sessions sorted for display, shared by every browser session
PREPARED_CACHE: LRUCache[PreparedSession] = LRUCache(8, name="prepared sessions")


def prepare_session(key: tuple, ds: xr.Dataset, name: str = "") -> PreparedSession:
    """Sort units and pick colour limits once per session (cached by ``key``)."""
    cached = PREPARED_CACHE.get(key)
    if cached is not None:
        return cached
    lazy = is_lazy(ds)
    stored = lazy or has_pyramid(ds)
    if stored:  # stored order (grouped by region in the layout): the store's pyramid draws the raster
        order, bands = np.arange(ds.sizes["unit"]), stored_bands(ds)
    else:
        order, bands = sort_units_by_region(ds, within="pc1")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    regions = np.asarray(ds["region"].values).astype(str)
    regions = np.where(regions == "", "(no region)", regions)
    labels = np.asarray(ds["label"].values).astype(str)
    ids = np.asarray(ds["unit"].values)
    duplicates = duplicate_labels(labels)
    names = np.array([unit_name(lab, uid, lab in duplicates) for lab, uid in zip(labels, ids)])
    if lazy:  # frames from the middle, every unit: one row of chunks
        step = int(ds["activity"].data.chunksize[0])
        mid = (ds.sizes["time"] // 2 // step) * step
        sample = np.asarray(ds["activity"].isel(time=slice(mid, mid + min(step, CLIM_SAMPLE_FRAMES))).values)
    else:
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
        time=np.arange(ds.sizes["time"]) / rate,
        clim=clim,
        cmap=cmap,
        regions=regions,
        names=names,
        time_label="frame (no sampling rate in the file)" if ds.attrs.get("time_is_frame_index") else "time (s)",
        duplicates=duplicates,
        lazy=lazy,
        stored_order=stored,
    )
    PREPARED_CACHE.put(key, prepared)
    return prepared


def load_sessions(key: str, data_dir: Any) -> dict[str, xr.Dataset]:
    """Sessions of a source (:data:`SOURCE_CACHE`: chunked stores too large for memory stay
    Dask-backed); raises RecordingError."""
    return SOURCE_CACHE.load(key, data_dir)


def stored_bands(ds: xr.Dataset) -> list[RegionBand]:
    """Region bands of the units in stored order (runs of one region); one band when there are
    more than MAX_BANDS runs (a recording not stored grouped by region)."""
    regions = np.asarray(ds["region"].values).astype(str)
    regions = np.where(regions == "", "(no region)", regions)
    if not len(regions):
        return []
    starts = np.concatenate([[0], np.flatnonzero(regions[1:] != regions[:-1]) + 1])
    if len(starts) > MAX_BANDS:
        return [RegionBand("(stored order, regions mixed)", 0, len(regions))]
    stops = np.append(starts[1:], len(regions))
    return [RegionBand(str(regions[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def raster_window(
    prep: PreparedSession, x_range: tuple | None, y_range: tuple | None, reduce: str = "mean", max_cols: int = RASTER_COLS, max_rows: int = RASTER_ROWS
) -> tuple[RasterWindow, tuple[float, float, float, float]]:
    """The raster's cells for the viewport ``x_range`` (the time axis: seconds, or frames) ×
    ``y_range`` (display rows; None: the whole recording), and their bounds in those coordinates
    (frame f is drawn centred on its time, row r centred on r)."""  # fmt: skip
    n_time, n_unit = prep.raster.shape
    rate = float(prep.ds.attrs["sampling_rate_hz"])  # frames per unit of the time axis (prep.time)
    t0, t1 = (0.0, n_time) if x_range is None else (x_range[0] * rate + 0.5, x_range[1] * rate + 0.5)
    u0, u1 = (0.0, n_unit) if y_range is None else (min(y_range) + 0.5, max(y_range) + 0.5)
    win = prep.raster.window(t0, t1, u0, u1, max_cols=max_cols, max_rows=max_rows, reduce=reduce)
    f0, r0, f1, r1 = win.bounds
    return win, ((f0 - 0.5) / rate, r0 - 0.5, (f1 - 0.5) / rate, r1 - 0.5)


def projections(ds: xr.Dataset) -> list[str]:
    """The position-map projections a recording offers (``["x–y"]`` when it has no positions)."""
    have = [c for c in ("x", "y", "z") if c in ds.coords]
    options = [f"{a}–{b}" for a, b in (("x", "y"), ("x", "z"), ("y", "z")) if a in have and b in have]
    return options or ["x–y"]


def metadata_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    """The session's metadata as (name, value) rows (from the coordinates and attributes only:
    the activity is not read)."""
    regions, counts = np.unique(np.asarray(ds["region"].values).astype(str), return_counts=True)
    labels = np.asarray(ds["label"].values).astype(str)
    t = ds["time"].values
    rate = float(ds.attrs.get("sampling_rate_hz"))
    rows = [
        ("species", ds.attrs.get("species")),
        ("session", ds.attrs.get("session")),
        ("units × frames", f"{ds.sizes['unit']} × {ds.sizes['time']}"),
        ("sampling rate", f"{rate:.3g} Hz"),
        ("duration", f"{float(t[-1] - t[0]) if len(t) else 0.0:.1f} s"),
        ("activity", ds["activity"].attrs.get("units")),
        ("labelled units", int((labels != "").sum())),
        ("positions", ", ".join(c for c in POSITION_COORDS if c in ds.coords) or "none"),
        ("regions", ", ".join(f"{'(none)' if r == '' else r} ({c})" for r, c in zip(regions, counts))),
        ("source", ds.attrs.get("source")),
        ("citation", ds.attrs.get("citation")),
    ]
    if is_lazy(ds):
        rows.append(("storage", f"chunked, opened lazily (chunks {ds['activity'].data.chunksize})"))
    rows += [(k, v) for k, v in ds.attrs.items() if k not in REQUIRED_ATTRS and k != "format" and isinstance(v, (str, int, float))]
    return [(str(k), str(v)) for k, v in rows]


def band_labels(prep: PreparedSession) -> tuple[tuple[float, str], ...]:
    """(row, "region (units)") of the region bands whose labels do not overlap: a band is labelled
    when it is tall enough and far enough below the last labelled one (see BAND_LABEL_SPACING)."""
    gap = len(prep.order) * BAND_LABEL_SPACING
    out: list[tuple[float, str]] = []
    for b in prep.bands:
        if b.stop - b.start >= gap and (not out or b.center - out[-1][0] >= gap):
            out.append((float(b.center), f"{b.region} ({b.stop - b.start})"))
    return tuple(out)


@dataclass(frozen=True)
class RecordingsSnapshot:
    """What the Recordings tab shows (see :meth:`RecordingsController.snapshot`)."""

    source: str
    session: str | None
    error: str  # why the chosen source could not be opened ("" when it could)
    prepared: PreparedSession | None  # the session shown (the last good one after an error)
    session_key: tuple | None  # changes exactly when another session is shown
    raster_title: str
    window: tuple[float, float]  # time window shown (seconds, or frames without a sampling rate)
    extent: tuple[float, float]  # the whole recording
    units: tuple[int, ...]  # positional indices of the units drawn as traces, top to bottom
    selection: str  # "8 unit(s) shown" (+ duplicated labels), or why none are
    traces: tuple[dict[str, Any], ...]  # per unit: time, offset (activity shifted), unit (name), region
    trace_ticks: tuple[tuple[float, str], ...]  # (offset, unit name) of every trace, or every k-th of many
    band_labels: tuple[tuple[float, str], ...]  # (row, "region (units)") of the bands with room for a label
    traces_title: str
    map_kind: str  # "points", "density" (too many for glyphs) or "none" (no positions)
    map: dict[str, Any] | None  # axes, unit_label, pos_a, pos_b, unit, region of every unit
    map_title: str
    metadata: tuple[tuple[str, str], ...]
    notice: str
    reduce: str  # "mean" or "peak": how a raster cell reduces its frames × units
    rows: tuple[float, float] | None  # raster rows shown (None: all)


def _clamp_window(ctrl: RecordingsController, value: Any) -> tuple[float, float] | None:
    lo, hi = ctrl.extent()
    a, b = sorted(float(v) for v in value)
    a, b = max(lo, a), min(hi, b)
    if not b > a:
        raise UrlValueError(f"rec_t={value!r} is outside the recording (0–{hi:g})")
    return None if (a, b) == (lo, hi) else (round(a, 3), round(b, 3))


class RecordingsController(Controller):
    """State of the Recordings tab (see module docstring). Data come from the demo corpus and files
    under ``data_dir`` only (:mod:`pocoviz.controllers.sources`)."""

    url_fields = (
        UrlField("source", "rec_src"),
        UrlField("session", "rec_session"),
        UrlField("region", "rec_region"),
        UrlField("labels", "rec_labels"),
        UrlField("unit_ids", "rec_units"),
        UrlField("n_traces", "rec_n"),
        UrlField("select_by", "rec_by"),
        UrlField("projection", "rec_proj"),
        UrlField("window", "rec_t", clamp=_clamp_window),
        UrlField("reduce", "rec_reduce"),
    )

    source = param.Selector(default="demo", objects={DEMO_KEY: "demo"}, doc="Corpus or file")
    session = param.Selector(default=None, objects=[], doc="Session (species/session)")
    select_by = param.Selector(default="region", objects=["region", "label", "index"], doc="Choose traces by")
    region = param.Selector(default=None, objects=[])
    labels = param.ListSelector(default=[], objects=[])
    unit_ids = param.String(default="", doc="Unit ids, e.g. 0-3, 17")
    n_traces = param.Integer(default=8, bounds=(1, MAX_TRACES))
    projection = param.Selector(default="x–y", objects=["x–y", "x–z", "y–z"])
    window = param.Range(default=None, allow_None=True, doc="Time window shown (None: the whole recording)")
    error = param.String(default="", doc="Why the chosen source could not be opened")
    reduce = param.Selector(default="mean", objects=["mean", "peak"], doc="A raster cell of many frames × units shows their mean or peak")
    find = param.String(default="", doc="Find units by id (0-3, 17), region or label; they are selected and the raster zooms to them")
    rows = param.Range(default=None, allow_None=True, precedence=-1, doc="Raster rows shown (None: all)")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self.data_dir = data_dir
        self._sessions: dict[str, xr.Dataset] = {}
        self._prepared: PreparedSession | None = None
        self._snapshot: tuple[int, RecordingsSnapshot] | None = None
        self._session_key: tuple | None = None
        self._parts: dict[str, tuple] = {}  # snapshot parts kept while their inputs are unchanged
        self._hold = False
        self.param.source.objects = list_sources(data_dir)
        self._load_source()
        # a link's message stays until the user changes a setting (a link applies its values first)
        self.param.watch(lambda *events: self.param.update(notice="") if self.notice else None, list(self.url.params))

    # ------------------------------------------------------------------ public actions
    @property
    def prepared(self) -> PreparedSession | None:
        """The session on screen (sorted units, names, colour limits)."""
        return self._prepared

    def extent(self) -> tuple[float, float]:
        """The time axis of the open session (0, last frame's time)."""
        return (0.0, self._prepared.duration) if self._prepared is not None else (0.0, 0.0)

    def set_window(self, start: float | None, end: float | None) -> None:
        """Show ``start``–``end`` (clamped to the recording; the whole recording when they cover it
        or are None)."""
        if start is None or end is None:
            self.window = None
            return
        try:
            self.window = _clamp_window(self, (start, end))
        except UrlValueError:
            pass

    def set_rows(self, start: float | None, end: float | None) -> None:
        """Show raster rows ``start``–``end`` (None, or covering every row: all of them)."""
        prep = self._prepared
        if prep is None or start is None or end is None:
            self.rows = None
            return
        n = len(prep.order)
        a, b = max(-0.5, min(start, end)), min(n - 0.5, max(start, end))
        self.rows = None if (a <= -0.5 and b >= n - 0.5) or not b > a else (round(a, 1), round(b, 1))

    @param.depends("find", watch=True)
    def _on_find(self) -> None:
        """Select the units that ``find`` names (ids, a region, labels) and zoom the raster's rows
        to them; the notice says when nothing matched."""
        prep, text = self._prepared, self.find.strip()
        if prep is None or not text:
            return
        regions = {b.region.lower(): b for b in prep.bands}
        options = label_options(prep.ds)
        labels = {lab.lower(): lab for lab in options.values()}
        wanted = [w for w in re.split(r"[,\s]+", text) if w]
        with param.parameterized.batch_call_watchers(self):
            if re.fullmatch(r"[\d,\s\-]+", text):
                self.select_by, self.unit_ids = "index", text
            elif text.lower() in regions:
                self.select_by, self.region = "region", regions[text.lower()].region
            elif wanted and all(w.lower() in labels for w in wanted):
                self.select_by, self.labels = "label", [labels[w.lower()] for w in wanted]
            else:
                self.notice = f"Find: no unit id, region or label matches {text[:60]!r}"
                return
        if self.select_by == "region":
            band = regions[text.lower()]
            rows = [band.start, band.stop - 1]
        else:
            try:
                rows = [int(prep.rank[u]) for u in self.selected_units()]
            except ValueError as exc:
                self.notice = f"Find: {exc}"
                return
        if rows:
            lo, hi = min(rows), max(rows)
            pad = max(0.0, (FIND_MIN_ROWS - (hi - lo)) / 2)
            self.set_rows(lo - pad - 0.5, hi + pad + 0.5)

    def tap_row(self, y: float | None) -> None:
        """A click on raster row ``y`` adds that unit to (or removes it from) the traces by id."""
        prep = self._prepared
        text = None if prep is None else toggle_tapped_unit(prep, y, self.unit_ids if self.select_by == "index" else "", MAX_TRACES)
        if text is None:
            return
        with param.parameterized.batch_call_watchers(self):
            self.select_by = "index"
            self.unit_ids = text

    def selected_units(self) -> list[int]:
        """Positional indices of the units whose traces are shown; ValueError for bad unit ids."""
        prep = self._prepared
        if prep is None:
            return []
        if self.select_by == "region":
            return units_of_region(prep, self.region, self.n_traces)
        if self.select_by == "label":
            return units_with_labels(prep, self.labels, MAX_TRACES)
        return units_with_ids(prep, self.unit_ids, MAX_TRACES)

    # ------------------------------------------------------------------ loading
    @param.depends("source", watch=True)
    def _load_source(self) -> None:
        try:
            sessions = load_sessions(self.source, self.data_dir)
        except RecordingError as exc:
            self.error = str(exc)
            self.changed()
            return
        except Exception as exc:  # an unexpected reader failure must not kill the app
            self.error = str(RecordingError(f"{type(exc).__name__}: {exc}", path=self.source))
            self.changed()
            return
        self._sessions = sessions
        self.error = ""
        names = list(sessions)
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
        prep = prepare_session((self.source, self.session, id(ds)), ds, self.session)
        self._prepared = prep
        self._session_key = (self.source, self.session, id(ds))
        regions = [b.region for b in prep.bands]
        options = label_options(ds)
        labelled = list(options.values())
        self._hold = True  # the selection changes below; one snapshot after the new session
        try:
            with param.parameterized.batch_call_watchers(self):
                self.param.region.objects = regions
                self.param.labels.objects = options
                self.region = regions[0] if regions else None
                self.labels = [lab for lab in self.labels if lab in labelled]
                if self.select_by == "label" and not labelled:
                    self.select_by = "region"
                self.param.projection.objects = projections(ds)
                if self.projection not in self.param.projection.objects:
                    self.projection = self.param.projection.objects[0]
                self.window = None  # another recording's window means nothing here
                self.rows = None
        finally:
            self._hold = False
        self.changed()

    @param.depends("select_by", "region", "labels", "unit_ids", "n_traces", "projection", "window", "notice", "reduce", "rows", watch=True)
    def _on_selection(self) -> None:
        if not self._hold:
            self.changed()

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> RecordingsSnapshot:
        """What the tab shows now (computed once per change; widget events run in a thread pool,
        so a snapshot is kept only under the version it was computed for)."""
        version = self.version
        cached = self._snapshot
        if cached is not None and cached[0] == version:
            return cached[1]
        snap = self._make_snapshot()
        self._snapshot = (version, snap)
        return snap

    def _make_snapshot(self) -> RecordingsSnapshot:
        prep = self._prepared
        empty = dict(units=(), selection="", traces=(), trace_ticks=(), band_labels=(), traces_title="", map_kind="none", map=None, map_title="unit positions")
        if prep is None:
            return RecordingsSnapshot(
                source=self.source, session=self.session, error=self.error, prepared=None, session_key=None, raster_title="",
                window=(0.0, 0.0), extent=(0.0, 0.0), metadata=(), notice=self.notice, reduce=self.reduce, rows=None, **empty,
            )  # fmt: skip
        ds = prep.ds
        units_kind = ds["activity"].attrs.get("units")
        extent = self.extent()
        window = tuple(self.window) if self.window is not None else extent
        try:
            units = self.selected_units()
            note = duplicate_note(prep, units)
            selection = (f"{len(units)} unit(s) shown" if units else "no units selected") + (f"; ⚠ {note}" if note else "")
        except ValueError as exc:
            units, selection = [], f"⚠ {exc}"
        traces, ticks = self._traces(prep, units)
        map_kind, map_data, map_title = self._map_cached(prep, units)
        return RecordingsSnapshot(
            source=self.source,
            session=self.session,
            error=self.error,
            prepared=prep,
            session_key=self._session_key,
            raster_title=f"{prep.name}: {len(prep.order)} units × {len(prep.time)} frames ({units_kind})",
            window=(float(window[0]), float(window[1])),
            extent=extent,
            units=tuple(units),
            selection=selection,
            traces=tuple(traces),
            trace_ticks=tuple(ticks),
            band_labels=band_labels(prep),
            traces_title=f"traces ({units_kind}), offset per unit" if units else "select units to show traces",
            map_kind=map_kind,
            map=map_data,
            map_title=map_title,
            metadata=self._metadata(ds),
            notice=self.notice,
            reduce=self.reduce,
            rows=tuple(self.rows) if self.rows is not None else None,
        )

    def _traces(self, prep: PreparedSession, units: list[int]) -> tuple[tuple, tuple]:
        """The traces and their axis labels, computed again only when the units change (a pan of
        the raster makes a new snapshot; a lazy recording would read the units' chunks again)."""
        key = ("traces", self._session_key, tuple(units))
        cached = self._parts.get("traces")
        if cached is not None and cached[0] == key:
            return cached[1]
        traces, ticks = [], []
        if units:
            block = prep.traces_of(units)  # only these units' activity (a lazy recording reads their chunks)
            spread = float(np.nanpercentile(block, 99.5) - np.nanpercentile(block, 0.5)) or 1.0
            step = 0.8 * spread
            for k, i in enumerate(units):
                offset = -k * step
                traces.append({"time": prep.time, "offset": block[:, k] + offset, "unit": str(prep.names[i]), "region": str(prep.regions[i])})
                ticks.append((offset, str(prep.names[i])))
        every = -(-len(ticks) // MAX_TRACE_LABELS) if ticks else 1
        out = (tuple(traces), tuple(ticks[::every]))
        self._parts["traces"] = (key, out)
        return out

    def _metadata(self, ds: xr.Dataset) -> tuple[tuple[str, str], ...]:
        cached = self._parts.get("metadata")
        if cached is None or cached[0] != self._session_key:
            cached = self._parts["metadata"] = (self._session_key, tuple(metadata_rows(ds)))
        return cached[1]

    def _map_cached(self, prep: PreparedSession, units: list[int]) -> tuple[str, dict[str, Any] | None, str]:
        key = ("map", self._session_key, self.projection, tuple(units))
        cached = self._parts.get("map")
        if cached is not None and cached[0] == key:
            return cached[1]
        out = self._map(prep, units)
        self._parts["map"] = (key, out)
        return out

    def _map(self, prep: PreparedSession, units: list[int]) -> tuple[str, dict[str, Any] | None, str]:
        ds = prep.ds
        a, b = self.projection.split("–")
        if a not in ds.coords or b not in ds.coords:
            return "none", None, "unit positions"
        pa, pb = np.asarray(ds[a].values, dtype=float), np.asarray(ds[b].values, dtype=float)
        data = {
            "axes": (a, b),
            "unit_label": str(ds[a].attrs.get("units", "um")).replace("um", "µm"),
            "pos_a": pa,
            "pos_b": pb,
            "unit": prep.names,
            "region": prep.regions,
            "selected": np.asarray(units, dtype=int),
        }
        kind = "density" if len(pa) > DATASHADE_POINTS_ABOVE else "points"
        return kind, data, f"unit positions ({a}–{b}) by region"

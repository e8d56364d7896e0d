"""The Recordings tab's controller: which corpus and session are open, which units are shown as
traces (by region, neuron label or unit id), the time window and the position map's projection,
and a snapshot of what the tab shows. No panel, holoviews or bokeh here (``pocoviz.ui.recordings``
draws the snapshots).

Also the per-session display preparation: units sorted by region, their names, colour limits
(:func:`prepare_session`, cached in :data:`PREPARED_CACHE`); choosing units (by region, label, id
or a click on a raster row) is :mod:`pocoviz.controllers.units`, shared with the Forecast tab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param
import xarray as xr

from pocoviz.recordings import RecordingError, duplicate_labels, sort_units_by_region, summarize
from pocoviz.recordings.raster import RegionBand

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


def projections(ds: xr.Dataset) -> list[str]:
    """The position-map projections a recording offers (``["x–y"]`` when it has no positions)."""
    have = [c for c in ("x", "y", "z") if c in ds.coords]
    options = [f"{a}–{b}" for a, b in (("x", "y"), ("x", "z"), ("y", "z")) if a in have and b in have]
    return options or ["x–y"]


def metadata_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    """The session's metadata as (name, value) rows."""
    info = summarize(ds)
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

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self.data_dir = data_dir
        self._sessions: dict[str, xr.Dataset] = {}
        self._prepared: PreparedSession | None = None
        self._snapshot: tuple[int, RecordingsSnapshot] | None = None
        self._session_key: tuple | None = None
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
            sessions = SOURCE_CACHE.load(self.source, self.data_dir)
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
        finally:
            self._hold = False
        self.changed()

    @param.depends("select_by", "region", "labels", "unit_ids", "n_traces", "projection", "window", "notice", watch=True)
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
                window=(0.0, 0.0), extent=(0.0, 0.0), metadata=(), notice=self.notice, **empty,
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
        traces, ticks = [], []
        if units:
            act = ds["activity"].values
            block = act[:, units]
            spread = float(np.nanpercentile(block, 99.5) - np.nanpercentile(block, 0.5)) or 1.0
            step = 0.8 * spread
            for k, i in enumerate(units):
                offset = -k * step
                traces.append({"time": prep.time, "offset": act[:, i] + offset, "unit": str(prep.names[i]), "region": str(prep.regions[i])})
                ticks.append((offset, str(prep.names[i])))
        every = -(-len(ticks) // MAX_TRACE_LABELS) if ticks else 1
        ticks = ticks[::every]
        map_kind, map_data, map_title = self._map(prep, units)
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
            metadata=tuple(metadata_rows(ds)),
            notice=self.notice,
        )

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

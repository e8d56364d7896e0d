"""The Forecast tab's controller: play a recording forward and watch each model's forecast land on
the recorded traces (no panel, holoviews or bokeh here; :mod:`pocoviz.ui.forecast` renders
:meth:`ForecastController.snapshot`).

At the cursor t the traces show, for each selected unit, the last C frames (truth), the next P
frames (truth) and every model's forecast of those frames; C and P come from the chosen models
(the longest context and horizon among them). Forecasts for the whole recording are computed in
the background (:class:`~pocoviz.forecast.playback.RecordingForecast`, cached per process) so that
playback only slices arrays, and running metrics cover the windows whose horizon has played.

The playhead never waits for a whole-population pass: ahead of the cursor the background job
first forecasts the units on screen (:func:`pocoviz.forecast.unit_subset.forecast_units`: for POCO
the population encoder runs over every unit and the per-unit decoder only for the units shown), and the full pass, which the
metrics need, trails behind.

A lazily opened recording (Dask-backed ``activity``, e.g. a whole-brain Zarr store) is never read
whole: its frames come as slabs of all units (:class:`~pocoviz.forecast.diskcache.ChunkedActivity`,
z-scored with statistics from one chunked pass, kept in the cache folder), its forecasts go into
the on-disk cache shared by every session and server process
(:class:`~pocoviz.forecast.diskcache.DiskForecast`), and its raster is a window of the store's
pyramid (:class:`~pocoviz.recordings.rasterwindow.RasterSource`). Recordings in memory keep the
in-RAM :class:`~pocoviz.forecast.playback.RecordingForecast`.

Forecasts that ``pocoviz forecast`` wrote into a store under the data directory
(:mod:`pocoviz.forecast.batch`) are read from there, read-only, instead of computed, when the store
holds the chosen model (same checksum) on the same recording file and session, complete.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param
import xarray as xr

from pocoviz.forecast.unit_subset import forecast_units, forecasts_units_apart
from pocoviz.recordings import CONTEXT_LENGTH, PREDICTION_LENGTH, RecordingError, is_lazy, resolve_in_data_dir
from pocoviz.recordings.preprocess import split_indices, zscore
from pocoviz.recordings.raster import RegionBand

from .base import Controller
from .cache import LRUCache
from .jobs import Job
from .models import ADAPTED_CACHE, FORECAST_CACHE, LOADED_MODELS, forecast_stores, list_models, model_path
from .recordings import PreparedSession, duplicate_labels, load_sessions, prepare_session, unit_name
from .sources import DEMO_FILE, DEMO_KEY, assets_dir, list_sources
from .units import (
    duplicate_note,
    label_options,
    parse_unit_ids,
    toggle_tapped_unit,
    units_of_region,
    units_with_ids,
    units_with_labels,
)
from .urlstate import UrlField, UrlValueError

#: distinct, colour-blind-safe model colours (Okabe–Ito), in the order models are chosen
MODEL_COLORS = ["#D55E00", "#0072B2", "#009E73", "#CC79A7"]
COPY_LAST_COLOR = "#999999"
CONTEXT_COLOR, HORIZON_COLOR = "#222222", "#555555"
MAX_MODELS = 4
MAX_TRACES = 12
DEFAULT_MODELS = ("poco_demo", "mlp_demo", "nlinear_demo")
#: unit-windows per background batch of the full pass at most
CHUNK_UNIT_WINDOWS = 24_576
#: a full-pass batch aims at about this many seconds, so that the playhead's forecasts come first
FULL_BATCH_S = 0.25
#: forecasts of the units on screen are kept this many seconds of playback ahead of the cursor
LOOKAHEAD_S = 2.0
#: windows per batch of the on-screen pass
SCREEN_BATCH = 8
#: unit-windows per batch of the on-screen pass at most (POCO's encoder reads every unit: one
#: window a batch at whole-brain size, so the first cursor's lines come after one window)
SCREEN_UNIT_WINDOWS = 65_536
#: metrics are recomputed at most this often while playback moves the cursor or forecasts arrive
#: (at once when the models, the recording, the metric settings or a paused cursor change)
METRICS_EVERY_S = 0.4
ADAPT_STEPS = 200
SPLIT_CHOICES = {"all played windows": "all", "test-split windows only": "test"}
#: the error the per-step plot shows: squared (the score's) or absolute (ZAPBench's, POCO spec §4.3)
STEP_METRICS = {"MSE": "mean squared error", "MAE": "mean absolute error"}
EXPORT_SCOPES = {"units on screen": "shown", "all units": "all"}
#: an export larger than this is refused (it travels base64-encoded through the websocket)
MAX_EXPORT_BYTES = 64 * 2**20
#: cells of the raster overview of a lazily opened recording (frames × rows at most about twice these)
LAZY_RASTER_CELLS = (1600, 800)
#: cells (frames × rows) of the window read for the viewport of a lazily opened recording's raster
VIEWPORT_CELLS = (800, 400)


@dataclass
class Recording:
    """The recording being played: the z-scored activity models see, and the session as every tab
    prepares it for display (:func:`pocoviz.controllers.recordings.prepare_session`: units sorted by
    region, names, duplicated labels; shared with the Recordings tab)."""

    source: str
    name: str
    prep: PreparedSession
    activity: np.ndarray | None  # (T, U) float32 z-scored; None for a lazily opened recording
    key: tuple
    ids: np.ndarray  # unit ids
    labels: np.ndarray  # per unit, "" if none
    src: Any = None  # frames as the models see them: ArrayActivity, or ChunkedActivity when lazy
    identity: dict | None = None  # the file's identity (the disk cache's key); lazy recordings only

    @property
    def lazy(self) -> bool:
        return self.activity is None

    def frames(self, t0: int, t1: int, units: list[int] | np.ndarray) -> np.ndarray:
        """Frames ``t0..t1-1`` of ``units`` (z-scored), (t1 - t0, k) float32."""
        return self.src.columns(t0, t1, units)

    ds = property(lambda self: self.prep.ds)
    order = property(lambda self: self.prep.order)  # display row -> positional unit
    rank = property(lambda self: self.prep.rank)  # positional unit -> display row
    bands = property(lambda self: self.prep.bands)  # region bands of the sorted raster
    regions = property(lambda self: self.prep.regions)  # per unit, "(no region)" for ""
    names = property(lambda self: self.prep.names)  # per unit, "AVAL", "#12", "URADL (dup #12)"
    time = property(lambda self: self.prep.time)  # seconds from the first frame
    duplicates = property(lambda self: self.prep.duplicates)

    @property
    def T(self) -> int:
        return int(self.src.T)

    @property
    def U(self) -> int:
        return int(self.src.U)

    @property
    def dt(self) -> float:
        return float(self.time[1] - self.time[0]) if self.T > 1 else 1.0


#: recordings prepared for playback, shared by every browser session
RECORDINGS: LRUCache[Recording] = LRUCache(6, name="forecast recordings")


def recording_path(ds: xr.Dataset, source: str = "", data_dir: str | os.PathLike | None = None) -> str | None:
    """The file or store a recording was read from: ``encoding["source"]``, else the source key
    resolved in the data directory; None when unknown."""
    for value in (ds.encoding.get("source"), ds["activity"].encoding.get("source")):
        if value and os.path.exists(str(value)):
            return str(value)
    if source and source != DEMO_KEY and source != "demo" and data_dir is not None:
        try:
            return str(resolve_in_data_dir(source, data_dir))
        except Exception:
            return None
    return None


def prepare_recording(source: str, name: str, ds: xr.Dataset, data_dir: str | os.PathLike | None = None) -> Recording:
    """The session prepared for display and its z-scored activity (unless it is z-scored already),
    once per dataset. A lazily opened recording reads only metadata and a sample here."""

    def create() -> Recording:
        key = (source, name, id(ds))
        labels = np.asarray(ds["label"].values).astype(str)
        ids = np.asarray(ds["unit"].values)
        if is_lazy(ds):
            return _prepare_lazy(key, source, name, ds, labels, ids, data_dir)
        from pocoviz.forecast.diskcache import ArrayActivity

        prep = prepare_session(key, ds, name)
        act = np.asarray(ds["activity"].transpose("time", "unit").values, dtype=np.float32)
        if ds["activity"].attrs.get("units") != "z-score":
            act = zscore(act).astype(np.float32)
        act = np.ascontiguousarray(act)
        return Recording(source, name, prep, act, key, ids, labels, src=ArrayActivity(act))

    return RECORDINGS.get_or_create((source, name, id(ds)), create)


def _prepare_lazy(key: tuple, source: str, name: str, ds: xr.Dataset, labels: np.ndarray, ids: np.ndarray, data_dir: Any) -> Recording:
    """A lazily opened recording: units in stored order (the whole-brain layout keeps them grouped
    by region, and its pyramid is in that order), a region band per run of equal regions, colour
    limits from the raster overview; frames are read as slabs through the cache folder's statistics."""
    from pocoviz.forecast.diskcache import ChunkedActivity, _key, cache_root, path_identity

    U, T = int(ds.sizes["unit"]), int(ds.sizes["time"])
    regions_raw = np.asarray(ds["region"].values).astype(str) if "region" in ds.coords else np.full(U, "")
    regions = np.where(regions_raw == "", "(no region)", regions_raw)
    bands, start = [], 0
    for i in range(1, U + 1):
        if i == U or regions[i] != regions[start]:
            bands.append(RegionBand(str(regions[start]), start, i))
            start = i
    order = np.arange(U)
    duplicates = duplicate_labels(labels)
    names = np.array([unit_name(lab, uid, lab in duplicates) for lab, uid in zip(labels, ids)])
    rate = float(ds.attrs.get("sampling_rate_hz", 1.0) or 1.0)
    prep = PreparedSession(
        name=name, ds=ds, order=order, rank=order.copy(), bands=bands, time=np.arange(T) / rate, clim=(-3.0, 3.0), cmap="RdBu_r",
        regions=regions, names=names, duplicates=duplicates,
        time_label="frame (no sampling rate in the file)" if ds.attrs.get("time_is_frame_index") else "time (s)",
    )  # fmt: skip
    path = recording_path(ds, source, data_dir)
    identity = path_identity(path, name) if path else {"in_memory": id(ds), "pid": os.getpid(), "session": name}
    act = ds["activity"].transpose("time", "unit")
    try:
        stats = cache_root(data_dir) / "stats" / f"{_key(identity)}.npz"
    except ValueError:
        stats = None
    rows = int(act.chunks[0][0]) if act.chunks else 256
    direct = _direct_array(ds, path)
    src = ChunkedActivity(act.data if direct is None else direct, zscored=act.attrs.get("units") == "z-score", stats_path=stats, rows=rows)
    return Recording(source, name, prep, None, key, ids, labels, src=src, identity=identity)


def viewport_window(source: Any, dt: float, x_range: tuple | None, y_range: tuple | None,
                    max_cols: int = VIEWPORT_CELLS[0], max_rows: int = VIEWPORT_CELLS[1]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The raster's cells under a viewport (``x_range`` in seconds, ``y_range`` in display rows;
    None: the whole recording) from a :class:`~pocoviz.recordings.rasterwindow.RasterSource`, and
    their bounds (frame f centred on f·dt, row r centred on r)."""  # fmt: skip
    n_time, n_unit = source.shape

    def ok(r: tuple | None) -> bool:
        return r is not None and all(v is not None and np.isfinite(v) for v in r) and r[1] != r[0]

    t0, t1 = (0.0, n_time) if not ok(x_range) else (min(x_range) / dt + 0.5, max(x_range) / dt + 0.5)
    u0, u1 = (0.0, n_unit) if not ok(y_range) else (min(y_range) + 0.5, max(y_range) + 0.5)
    win = source.window(t0, t1, u0, u1, max_cols=max_cols, max_rows=max_rows, reduce="mean")
    f0, r0, f1, r1 = win.bounds
    return np.asarray(win.values, dtype=np.float32), ((f0 - 0.5) * dt, r0 - 0.5, (f1 - 0.5) * dt, r1 - 0.5)


def _direct_array(ds: xr.Dataset, path: str | None) -> Any:
    """The store's ``activity`` Zarr array itself when it is stored as (time, unit) with no
    encoding to undo (a slab read skips Dask's graph: about 0.15 s less per context at whole-brain
    size); else None. The batch forecast reads stores the same way."""
    if path is None:
        return None
    from pocoviz.forecast.batch import _direct_array as direct_array

    return direct_array(ds, path)


def _stored_forecast(model: Any, rec: Recording, label: str, data_dir: Any) -> Any:
    """The complete forecasts of ``model`` on ``rec`` that ``pocoviz forecast`` wrote into a store
    under the data directory (:func:`pocoviz.forecast.batch.find_stored_forecast`: same model
    checksum, same recording file and session), opened read-only; None when no store fits."""
    stores = forecast_stores(data_dir)
    if not stores:
        return None
    from pocoviz.forecast.batch import find_stored_forecast
    from pocoviz.forecast.diskcache import path_identity

    try:
        identity = rec.identity
        if identity is None:
            path = recording_path(rec.ds, rec.source, data_dir)
            identity = path_identity(path, rec.name) if path else None
        return find_stored_forecast(model, rec.src, rec.name, identity, stores, regions=list(rec.regions), name=label)
    except Exception:  # an unreadable store is no reason to fail: the forecasts are computed instead
        return None


#: set (by ``pocoviz serve --num-procs N``, N > 1) to keep every recording's forecasts in the disk
#: cache, where the server's processes share them (see :mod:`pocoviz.ui.serve`)
SHARED_FORECASTS_ENV = "POCOVIZ_SHARED_FORECASTS"


def shared_forecasts() -> bool:
    """Whether forecasts of recordings in memory go to the disk cache too (several server processes)."""
    return os.environ.get(SHARED_FORECASTS_ENV, "").strip() not in ("", "0")


def _make_forecast(model: Any, rec: Recording, label: str, data_dir: Any) -> Any:
    """The forecasts of ``model`` on ``rec``: read from a ``pocoviz forecast`` store in the data
    directory when one holds them, else in the disk cache (shared by every session and server
    process) for a lazily opened recording, or for any recording read from a file when several
    server processes share the cache (:func:`shared_forecasts`), else in RAM."""
    stored = _stored_forecast(model, rec, label, data_dir)
    if stored is not None:
        return stored
    identity = rec.identity
    if identity is None and shared_forecasts():
        from pocoviz.forecast.diskcache import path_identity

        path = recording_path(rec.ds, rec.source, data_dir) or (str(assets_dir() / DEMO_FILE) if rec.source in ("demo", DEMO_KEY) else None)
        identity = path_identity(path, rec.name) if path and os.path.exists(path) else None
    if rec.lazy or identity is not None:
        from pocoviz.forecast.diskcache import DiskForecast, cache_root

        return DiskForecast(model, rec.src, rec.name, identity=identity, regions=list(rec.regions), name=label, root=cache_root(data_dir))
    from pocoviz.forecast.playback import RecordingForecast

    return RecordingForecast(model, rec.activity, rec.name, regions=list(rec.regions), name=label)


# ==================================================================================== runs
@dataclass
class ModelRun:
    """One chosen model on the current recording (written by the background jobs)."""

    key: str
    label: str
    color: str
    C: int = CONTEXT_LENGTH
    P: int = PREDICTION_LENGTH
    state: str = "loading"  # loading | needs-adaptation | adapting | computing | ready | error
    message: str = ""
    model: Any = None
    forecast: Any = None  # RecordingForecast
    adapted: bool = False
    curve: list[dict] = field(default_factory=list)
    adapt_step: int = 0
    #: forecasts of single units ahead of the playhead: (cursor, unit) -> (P,) float32
    screen: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    seconds_per_window: float = 0.0
    rec_key: tuple | None = None  # the recording this run forecasts

    def has(self, t: int, units: list[int]) -> bool:
        fc = self.forecast
        if fc is None or not 0 <= t < fc.T:
            return False
        return bool(fc.done[t]) or all((t, u) in self.screen for u in units)

    def lines(self, t: int, units: list[int]) -> np.ndarray | None:
        """(P, k) forecasts of ``units`` at cursor ``t``, or None while not computed."""
        fc = self.forecast
        if fc is None or not 0 <= t < fc.T:
            return None
        if fc.done[t]:
            got = fc.lines(t, units)
            if got is not None:
                return got
        got = [self.screen.get((t, u)) for u in units]
        if any(g is None for g in got):
            return None
        return np.stack(got, axis=1) if got else np.zeros((self.P, 0), np.float32)


# ==================================================================================== snapshot
@dataclass(frozen=True)
class LegendEntry:
    label: str
    color: str
    dash: str = "solid"
    width: float = 2.4


@dataclass(frozen=True)
class ModelStatus:
    key: str
    label: str
    color: str
    state: str
    message: str
    progress: float | None  # fraction of the full pass (or of the adaptation steps)
    adapted: bool


@dataclass(frozen=True)
class TracesLayout:
    """The traces plot's frame: which units, where each sits, the axes."""

    units: tuple[int, ...]
    names: tuple[str, ...]
    offsets: tuple[float, ...]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    horizon: tuple[float, float]  # the shaded forecast band (seconds from the cursor)
    past_x: tuple[float, ...]
    future_x: tuple[float, ...]
    title: str


@dataclass(frozen=True)
class MetricsView:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # model, score, MSE, MAE, windows, computed (plain text)
    colors: tuple[str, ...]  # each row's model colour
    caption: str
    per_step: tuple[dict, ...]  # {"model", "color", "dash", "x", "y"}; copy-last last
    per_step_title: str
    per_step_axis: str
    region_header: tuple[str, ...]
    region_rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class RasterView:
    key: tuple
    time: np.ndarray  # each image column's time (s)
    image: np.ndarray  # (rows, columns): (U, T) rows sorted by region, or a pyramid window's cells
    clim: tuple[float, float]
    title: str
    row_ids: tuple[int, ...]  # per display row (unit)
    row_names: tuple[str, ...]
    row_regions: tuple[str, ...]
    time_label: str
    rows: np.ndarray | None = None  # each image row's centre in display rows (default 0, 1, ...)
    frame_time: np.ndarray | None = None  # each frame's time (s), when columns are not frames
    #: a lazily opened recording: ``window(x_range, y_range) -> (cells, (x0, y0, x1, y1))`` reads
    #: the pyramid level and window the viewport needs (seconds × display rows; None: everything)
    window: Any = None

    @property
    def frame_times(self) -> np.ndarray:
        return self.time if self.frame_time is None else self.frame_time


@dataclass(frozen=True)
class ForecastSnapshot:
    """What the Forecast tab should show now."""

    recording: str | None
    T: int
    U: int
    C: int
    P: int
    cursor: int
    cursor_bounds: tuple[int, int]
    clock: str
    layout: TracesLayout
    lines: dict[str, list]  # columns xs, ys, layer, color, dash, width, unit
    legend: tuple[LegendEntry, ...]
    models: tuple[ModelStatus, ...]
    metrics: MetricsView
    curves: tuple[dict, ...]  # adaptation: {"model", "color", "x", "y"}
    raster: RasterView | None
    selection: str
    needs_adaptation: bool
    error: str
    notice: str
    busy: bool
    export_label: str


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


# ==================================================================================== controller
def _clamp_cursor(ctl: ForecastController, value: int) -> int:
    lo, hi = ctl.cursor_bounds()
    if not lo <= value <= hi:
        ctl._url_notes.append(f"t={value} is outside this recording's frames {lo}–{hi}; using {min(hi, max(lo, value))}")
    return int(min(hi, max(lo, value)))


def _clamp_units(ctl: ForecastController, value: str) -> str:
    rec = ctl.recording
    if rec is None or not value.strip():
        return value
    try:
        units_with_ids(rec, value, MAX_TRACES)
    except ValueError as exc:
        raise UrlValueError(f"units={value[:40]!r}: {exc}") from None
    return value


def _clamp_models(ctl: ForecastController, value: list) -> list:
    if len(value) > MAX_MODELS:
        ctl._url_notes.append(f"models: at most {MAX_MODELS}; kept the first {MAX_MODELS}")
    return list(value)[:MAX_MODELS]


class ForecastController(Controller):
    """State, background forecasts, metrics and URL state of the Forecast tab (module docstring)."""

    url_fields = (
        UrlField("source", "recording"),
        UrlField("session", "session"),
        UrlField("models", "models", _clamp_models),
        UrlField("select_by", "units_by"),
        UrlField("region", "region"),
        UrlField("labels", "labels"),
        UrlField("unit_ids", "units", _clamp_units),
        UrlField("n_traces", "traces"),
        UrlField("fps", "speed"),
        UrlField("metrics_over", "metrics"),
        UrlField("step_metric", "per_step"),
        UrlField("cursor", "t", _clamp_cursor),
    )

    source = param.Selector(default="demo", objects={DEMO_KEY: "demo"}, doc="Corpus or file")
    session = param.Selector(default=None, objects=[], doc="Session (species/session)")
    models = param.ListSelector(default=[], objects=[], doc="Models (up to four)")
    cursor = param.Integer(default=CONTEXT_LENGTH, bounds=(0, None), doc="Frame of the first forecast step")
    fps = param.Integer(default=10, bounds=(1, 30), doc="Playback speed (frames/s)")
    select_by = param.Selector(default="region", objects=["region", "label", "best", "worst", "units"])
    region = param.Selector(default=None, objects=[])
    labels = param.ListSelector(default=[], objects=[])
    unit_ids = param.String(default="", doc="Unit ids, e.g. 0-3, 17 (or click the raster)")
    n_traces = param.Integer(default=8, bounds=(1, MAX_TRACES))
    metrics_over = param.Selector(default="all", objects=SPLIT_CHOICES)
    step_metric = param.Selector(default="MSE", objects=list(STEP_METRICS), doc="Error per step ahead: MSE or MAE")
    adapt_steps = param.Integer(default=ADAPT_STEPS, bounds=(1, 5000), doc="Fine-tuning steps of “Adapt”")
    export_scope = param.Selector(default="shown", objects=EXPORT_SCOPES, doc="What the netCDF export holds")
    error = param.String(default="", doc="The last error (a file that cannot be read, a refused checkpoint)")
    playing = param.Boolean(default=False, precedence=-1, doc="Playback runs (the metrics then follow a few times a second)")

    def __init__(self, data_dir: str | os.PathLike | None = None, **params: Any):
        self.data_dir = None if data_dir is None else str(data_dir)
        self.recording: Recording | None = None
        self.runs: list[ModelRun] = []
        self._sessions: dict[str, xr.Dataset] = {}
        self._colors: dict[str, str] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._url_notes: list[str] = []
        self._metrics_cache: tuple[tuple, float, MetricsView] | None = None
        self._last_changed = 0.0
        self._units_cache: tuple | None = None
        self._errors: dict[str, str] = {}
        self._layout_cache: tuple | None = None
        super().__init__(**params)
        self.param.source.objects = list_sources(self.data_dir)
        self.model_choices = list_models(self.data_dir)
        self.param.models.objects = list(self.model_choices.values())
        self.model_names = {v: k for k, v in self.model_choices.items()}
        self.param.watch(self._on_source, "source")
        self.param.watch(self._on_session, "session")
        self.param.watch(self._on_models, "models")
        self.param.watch(lambda *events: self._set_error("export", ""), "export_scope")
        self.param.watch(lambda *events: self.changed(), ["select_by", "region", "labels", "unit_ids", "n_traces", "metrics_over",
                                                    "step_metric", "export_scope", "error", "notice", "busy"])  # fmt: skip
        if not self.models:
            self.models = [m for m in DEFAULT_MODELS if m in self.param.models.objects][:MAX_MODELS]
        self.load_source()

    # ------------------------------------------------------------------ URL state
    def apply_url(self, query: dict[str, Any]) -> list[str]:
        """Apply a link's settings in order (source, session, models, units, cursor); a bad value
        is ignored or clamped with a message (:attr:`notice`), never an error."""
        self._url_notes = []
        messages = self.url.apply(self, query)
        messages += self._url_notes
        self._url_notes = []
        if messages:
            self.notice = "Link settings: " + "; ".join(messages)
        return messages

    # ------------------------------------------------------------------ recording
    def _on_source(self, event: Any = None) -> None:
        self.load_source()

    def load_source(self) -> None:
        """Open the chosen corpus or file (cached per process); on failure the error is shown and
        the recording being played stays."""
        try:
            sessions = load_sessions(self.source, self.data_dir)  # chunked stores open lazily
        except RecordingError as exc:
            self._set_error("source", f"Cannot open this recording. {exc}")
            return
        except Exception as exc:  # an unexpected reader failure must not end the session
            self._set_error("source", f"Cannot open this recording. {type(exc).__name__}: {exc}")
            return
        self._set_error("source", "")
        self._sessions = sessions
        names = list(sessions)
        self.param.session.objects = names
        if self.session in names:
            self._on_session()
        else:
            self.session = names[0]

    def _on_session(self, event: Any = None) -> None:
        if self.session not in self._sessions:
            return
        try:
            rec = prepare_recording(self.source, self.session, self._sessions[self.session], self.data_dir)
        except Exception as exc:
            self._set_error("source", f"Cannot prepare {self.session}: {exc}")
            return
        self.recording = rec
        options = label_options(rec.ds)  # a duplicated label is shown as such; picking it selects every unit carrying it
        regions = [b.region for b in rec.bands]
        with param.parameterized.batch_call_watchers(self):
            self.param.region.objects = regions
            self.param.labels.objects = options
            if self.region not in regions:
                self.region = regions[0] if regions else None
            self.labels = [lab for lab in self.labels if lab in options.values()]
            if self.select_by == "label" and not options:
                self.select_by = "region"
        self._metrics_cache = None
        if rec.lazy and not rec.src.stats_ready():  # one pass over the recording, off the event loop
            self.jobs.start("stats", lambda job, rec=rec: self._stats_job(job, rec), on_done=self._failed)
        self._start_runs()

    def _stats_job(self, job: Job, rec: Recording) -> None:
        """The z-scoring statistics of a lazily opened recording (kept in the cache folder)."""
        from pocoviz.backend import configure_threads

        configure_threads()
        rec.src.stats(check=job.check)
        self._layout_cache = None
        self.changed()

    def window(self) -> tuple[int, int]:
        """(C, P): the longest context and horizon among the chosen models (from their cards)."""
        Cs, Ps = [CONTEXT_LENGTH], [PREDICTION_LENGTH]
        if self.models:
            Cs, Ps = [], []
            for key in self.models:
                C, P = self._model_window(key)
                Cs.append(C)
                Ps.append(P)
        return max(Cs), max(Ps)

    def _model_window(self, key: str) -> tuple[int, int]:
        if key not in self._windows:
            run = next((r for r in self.runs if r.key == key and r.model is not None), None)
            if run is not None:
                self._windows[key] = (int(run.model.context), int(run.model.horizon))
            else:
                try:
                    from pocoviz.forecast.checkpoint import model_card

                    config = model_card(model_path(key, self.data_dir))["config"]
                    self._windows[key] = (int(config.get("context", CONTEXT_LENGTH)), int(config.get("horizon", PREDICTION_LENGTH)))
                except Exception:  # the run reports the broken checkpoint
                    self._windows[key] = (CONTEXT_LENGTH, PREDICTION_LENGTH)
        return self._windows[key]

    def cursor_bounds(self) -> tuple[int, int]:
        """The playable cursors: a full context before, a full horizon after."""
        C, P = self.window()
        T = self.recording.T if self.recording is not None else C + P
        return C, max(C, T - P)

    def _fit_cursor(self) -> None:
        lo, hi = self.cursor_bounds()
        value = int(min(hi, max(lo, self.cursor)))
        self.param.cursor.bounds = (lo, hi)
        if value != self.cursor:
            self.cursor = value

    def step(self, frames: int = 1) -> None:
        """Move the cursor by ``frames``, wrapping around the playable range."""
        lo, hi = self.cursor_bounds()
        if hi <= lo:
            return
        self.cursor = lo + (self.cursor + frames - lo) % (hi - lo + 1)

    # ------------------------------------------------------------------ models and jobs
    def _on_models(self, event: Any = None) -> None:
        if len(self.models) > MAX_MODELS:
            self.models = self.models[:MAX_MODELS]
            return
        self._start_runs()

    def _start_runs(self) -> None:
        rec = self.recording
        if rec is None:
            return
        # a colour belongs to its model: a model that stays selected keeps its colour, a new one
        # takes the first colour no selected model holds (removing a model recolours nothing)
        for key in list(self._colors):
            if key not in self.models:
                del self._colors[key]
        for key in self.models:
            if key not in self._colors:
                taken = set(self._colors.values())
                self._colors[key] = next((c for c in MODEL_COLORS if c not in taken), MODEL_COLORS[0])
        old = {(r.key, r.rec_key): r for r in self.runs}
        runs = []
        for key in self.models:
            run = old.get((key, rec.key))
            if run is None:
                C, P = self._model_window(key)
                run = ModelRun(key=key, label=self.model_names.get(key, key), color=self._colors[key], C=C, P=P, rec_key=rec.key)
            run.color = self._colors[key]
            runs.append(run)
        self.runs = runs
        self._model_errors()  # a refused model that is no longer chosen takes its message along
        self._fit_cursor()
        self._metrics_cache = None
        if any(r.state in ("loading", "computing") for r in runs):
            self.jobs.start("forecast", lambda job, rec=rec, runs=list(runs): self._forecast_job(job, rec, runs))
        self.changed()

    def _prepare(self, run: ModelRun, rec: Recording) -> None:

        try:
            adapted = ADAPTED_CACHE.get((run.key, rec.key))
            model = adapted if adapted is not None else LOADED_MODELS.get(run.key, self.data_dir)
            run.model, run.adapted = model, adapted is not None
            run.C, run.P = int(model.context), int(model.horizon)
            self._windows[run.key] = (run.C, run.P)
            if not model.session_free and rec.name not in {s.name for s in model.sessions}:
                run.state = "needs-adaptation"
                run.message = (f"{run.label} ({model.kind}) has not seen {rec.name}: it needs unit embeddings for this "
                               "recording. Use “Adapt to this recording”.")  # fmt: skip
                return

            run.forecast = FORECAST_CACHE.get_or_create((run.key, run.adapted, rec.key), lambda: _make_forecast(model, rec, run.label, self.data_dir))
            run.state = "ready" if run.forecast.fraction_done >= 1 else "computing"
            run.message = ""
            if getattr(run.forecast, "read_only", False):
                store = run.forecast.root
                where = store.name if self.data_dir is None else os.path.relpath(store, self.data_dir)
                run.message = f"precomputed: read from {where} (pocoviz forecast)"
        except Exception as exc:  # a bad checkpoint must not end the session
            run.state, run.message = "error", f"{run.label}: {exc}"

    def _forecast_job(self, job: Job, rec: Recording, runs: list[ModelRun]) -> None:
        """Prepare the runs, then forecast: the units on screen ahead of the cursor first, the
        whole population (for the metrics) behind them."""
        from pocoviz.backend import configure_threads

        configure_threads()  # one torch thread on 2 cores: the other stays with the web server
        if rec.lazy:
            rec.src.stats(check=job.check)  # the z-scoring statistics first (at once when kept on disk)
        for run in runs:
            if run.state == "loading":
                job.check()
                self._prepare(run, rec)
                if run.state == "error":
                    self._model_errors()
                self.changed()
        while True:
            job.check()
            if self.recording is not rec:
                return
            if not self._forecast_step(rec, runs):
                self.changed()
                return

    def _forecast_step(self, rec: Recording, runs: list[ModelRun]) -> bool:  # noqa: C901
        """One batch of background forecasting; False when there is nothing left to do."""
        t = int(self.cursor)
        units = self._units_or_empty()
        active = [r for r in runs if r.forecast is not None and r.state == "computing"]
        if not active:
            return False
        # 1. the units on screen, LOOKAHEAD_S of playback ahead of the cursor
        ahead = max(SCREEN_BATCH, int(LOOKAHEAD_S * self.fps))
        if rec.lazy and not self.playing:
            ahead = 2  # paused on a large recording: the cursor and the next frame; then the whole pass
        lo, hi = self.cursor_bounds()
        span = max(1, hi - lo + 1)
        upcoming = [lo + (t + k - lo) % span for k in range(min(ahead, span))]  # playback wraps around
        best, best_gap = None, None
        for run in active:
            fc = run.forecast
            gaps = [k for k, c in enumerate(upcoming) if c < fc.T and fc.valid[c] and not run.has(c, units)] if units else []
            if gaps and (best_gap is None or gaps[0] < best_gap):
                best, best_gap, best_missing = run, gaps[0], [upcoming[k] for k in gaps]
        if best is not None:
            if rec.lazy or (forecasts_units_apart(best.model) and len(units) * 4 <= rec.U):
                try:
                    self._screen_batch(best, best_missing[: max(1, min(SCREEN_BATCH, SCREEN_UNIT_WINDOWS // rec.U))], units)
                except Exception as exc:
                    best.state, best.message = "error", f"{best.label}: forecasting failed: {exc}"
                    self._model_errors()
            else:  # whole windows cost the same here, and they count for the metrics too
                try:
                    best.forecast.compute(cursors=np.asarray(best_missing[:SCREEN_BATCH]))
                except Exception as exc:
                    best.state, best.message = "error", f"{best.label}: forecasting failed: {exc}"
                    self._model_errors()
            if best_gap <= 1:
                self.changed()
            else:
                self._changed_throttled()
            return True
        # 2. the whole population, nearest the cursor first, for the model furthest behind
        best, best_margin = None, None
        for run in active:
            fc = run.forecast
            cursors = fc.cursors
            missing = cursors[~fc.done[cursors]]
            if len(missing) == 0:
                run.state = "ready"
                self.changed()
                continue
            after = missing[missing >= t - 1]
            margin = int(after[0]) - t if len(after) else fc.T
            if best_margin is None or margin < best_margin:
                best, best_margin = run, margin
        if best is None:
            return False
        fc = best.forecast
        n = max(1, CHUNK_UNIT_WINDOWS // max(1, fc.U))
        if best.seconds_per_window > 0:
            n = max(1, min(n, int(FULL_BATCH_S / best.seconds_per_window)))
        t0 = time.perf_counter()
        try:
            # a large window gives way (between unit slices) when the cursor or the units move
            done = fc.advance(t, n, preempt=lambda: self._screen_waits(active, t, units))
        except Exception as exc:
            best.state, best.message = "error", f"{best.label}: forecasting failed: {exc}"
            self._model_errors()
            return True
        if done:
            per = (time.perf_counter() - t0) / done
            best.seconds_per_window = per if best.seconds_per_window == 0 else 0.7 * best.seconds_per_window + 0.3 * per
        if fc.fraction_done >= 1:
            best.state = "ready"
            self.changed()
        else:
            self._changed_throttled()
        if self.playing:
            # while playing, the whole pass takes at most half of this thread's time: the other
            # half of a core stays with the server drawing frames (and, on one machine, the browser)
            time.sleep(min(FULL_BATCH_S, time.perf_counter() - t0))
        return True

    def _screen_waits(self, runs: list[ModelRun], t: int, units: list[int]) -> bool:
        """Whether the cursor or the units moved since ``t``/``units`` and a model lacks the lines there."""
        now, shown = int(self.cursor), self._units_or_empty()
        if now == t and shown == units:
            return False
        return bool(shown) and any(r.forecast.valid[now] and not r.has(now, shown) for r in runs if r.forecast is not None and 0 <= now < r.forecast.T)

    def _screen_batch(self, run: ModelRun, cursors: list[int], units: list[int]) -> None:
        import torch

        from pocoviz.forecast.metrics import autocast_context

        fc = run.forecast
        model = run.model
        ctx = fc.context(cursors)  # one slab of every unit
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                x = torch.from_numpy(ctx).to(fc.device)
                with autocast_context(fc.device):
                    y = forecast_units(model, x, fc.session_index, units)
                y = y.float().to(torch.float16).float().cpu().numpy()  # the precision of the cached forecasts
        finally:
            model.train(was_training)
        for i, c in enumerate(cursors):
            for j, u in enumerate(units):
                run.screen[(c, u)] = y[i, :, j]
        if len(run.screen) > 20_000:  # what the whole pass has since computed is kept there
            run.screen = {k: v for k, v in run.screen.items() if not fc.done[k[0]]}

    def _changed_throttled(self, every: float = 0.2) -> None:
        now = time.monotonic()
        if now - self._last_changed >= every:
            self._last_changed = now
            self.changed()

    def changed(self) -> None:
        self._last_changed = time.monotonic()
        super().changed()

    def _set_error(self, kind: str, message: str) -> None:
        """The error shown is every kind's latest message: a recording that cannot be read
        ("source"), refused or failed models ("models"), a refused export ("export"); each kind is
        cleared by its own next success."""
        self._errors[kind] = message
        self.error = " ".join(m for m in self._errors.values() if m)

    def _model_errors(self) -> None:
        self._set_error("models", " ".join(r.message for r in self.runs if r.state == "error"))

    def adapt(self) -> None:
        """Fine-tune the unit embeddings of every chosen model that has not seen this recording."""
        rec = self.recording
        if rec is None:
            return
        todo = [r for r in self.runs if r.state == "needs-adaptation"]
        if rec.lazy and todo:
            for run in todo:
                run.message = (f"{run.label}: adapting in the app needs the recording in memory, and {rec.name} is opened lazily "
                               f"({rec.U} units × {rec.T} frames): fine-tune with `pocoviz finetune` and choose the result.")  # fmt: skip
            self.changed()
            return
        for run in todo:
            run.state, run.message, run.curve = "adapting", f"adapting {run.label} to {rec.name} …", []
        if todo:
            self.jobs.start("adapt", lambda job: self._adapt_job(job, rec, todo, int(self.adapt_steps)))
        self.changed()

    def _adapt_job(self, job: Job, rec: Recording, runs: list[ModelRun], steps: int) -> None:
        from pocoviz.backend import configure_threads
        from pocoviz.forecast import ForecastCorpus, TrainConfig, finetune
        from pocoviz.forecast.playback import RecordingForecast

        configure_threads()
        for run in runs:
            try:
                base = LOADED_MODELS.get(run.key, self.data_dir)
                ds = rec.ds.copy()
                ds["activity"] = (("time", "unit"), rec.activity, {"units": "z-score"})
                corpus = ForecastCorpus({rec.name: ds}, strides={"train": 1, "val": 4, "test": 4})
                cfg = TrainConfig(steps=steps, eval_every=max(1, min(20, steps // 5)), batch_size=32, max_units=64, progress=False)

                def on_eval(entry: dict, run=run) -> bool:
                    run.curve = [*run.curve, {k: float(v) for k, v in entry.items()}]
                    run.adapt_step = int(entry["step"])
                    job.report(run.adapt_step / max(1, steps))
                    self._changed_throttled()
                    return True

                init = "labels" if any(s.labels for s in base.sessions) and corpus.sessions[0].labels else "random"
                adapted, result = finetune(base, corpus, "embedding", cfg, device="cpu", callback=on_eval, init=init)
                adapted.eval()
                ADAPTED_CACHE.put((run.key, rec.key), adapted)
                run.model, run.adapted = adapted, True
                name = run.label + " (adapted)"
                run.forecast = FORECAST_CACHE.get_or_create(
                    (run.key, True, rec.key),
                    lambda model=adapted, name=name: RecordingForecast(model, rec.activity, rec.name, regions=list(rec.regions), name=name),
                )
                best = next((h for h in result.history if h["step"] == result.best_step), result.history[-1])
                run.message = (
                    f"adapted {run.label} to {rec.name}: embeddings only, {result.steps_done} steps, "
                    f"validation score {_fmt(result.history[0]['val_score'])} (zero-shot) → {_fmt(best['val_score'])} "
                    f"(best, step {result.best_step}); new units initialised: {init}"
                    + (f" ({result.info.get('label_matched_units', 0)} matched by label)" if init == "labels" else "")
                )
                run.state = "ready" if run.forecast.fraction_done >= 1 else "computing"
            except Exception as exc:
                if job.cancelled:
                    raise
                run.state, run.message = "error", f"{run.label}: adaptation failed: {exc}"
                self._model_errors()
            self.changed()
        if self.recording is rec and any(r.state == "computing" for r in self.runs):
            self.jobs.start("forecast", lambda j, runs=list(self.runs): self._forecast_job(j, rec, runs))

    # ------------------------------------------------------------------ units
    def selected_units(self) -> list[int]:
        """Positional indices of the units whose traces are shown (ValueError for unknown ids)."""
        rec = self.recording
        if rec is None:
            return []
        scored = self.select_by in ("best", "worst")
        key = (rec.key, self.select_by, self.region, tuple(self.labels), self.unit_ids, self.n_traces,
               tuple((r.key, id(r.forecast), r.forecast.fraction_done if r.forecast is not None else 0) for r in self.runs) if scored else ())  # fmt: skip
        cached = self._units_cache
        if cached is not None and cached[0] == key:
            return list(cached[1])
        units = self._select_units(rec)
        self._units_cache = (key, tuple(units))
        return units

    def _select_units(self, rec: Recording) -> list[int]:
        n = self.n_traces
        if self.select_by == "region":
            return units_of_region(rec, self.region, n)
        if self.select_by == "label":
            return units_with_labels(rec, self.labels, MAX_TRACES)
        if self.select_by in ("best", "worst"):
            run = next((r for r in self.runs if r.forecast is not None), None)
            if run is None:
                return []
            scores = run.forecast.unit_scores()
            ok = np.flatnonzero(np.isfinite(scores))
            if len(ok) == 0:
                return []
            ranked = ok[np.argsort(scores[ok])]
            pick = ranked[::-1][:n] if self.select_by == "best" else ranked[:n]
            return [int(i) for i in pick]
        return units_with_ids(rec, self.unit_ids, MAX_TRACES)

    def _units_or_empty(self) -> list[int]:
        try:
            return self.selected_units()
        except ValueError:
            return []

    def tap_row(self, y: float | None) -> None:
        """A click on raster row ``y`` adds (or removes) that unit to the traces."""
        rec = self.recording
        text = None if rec is None else toggle_tapped_unit(rec, y, self.unit_ids if self.select_by == "units" else "", MAX_TRACES)
        if text is None:
            return
        with param.parameterized.batch_call_watchers(self):
            self.select_by = "units"
            self.unit_ids = text

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> ForecastSnapshot:
        """What the tab should show now (cheap: metrics are cached, see :data:`METRICS_EVERY_S`)."""
        rec = self.recording
        C, P = self.window()
        runs = list(self.runs)
        try:
            units = self.selected_units()
            selection_error = ""
        except ValueError as exc:
            units, selection_error = [], str(exc)
        if rec is None:
            layout = TracesLayout((), (), (), (-C - 1.0, P + 1.0), (-1.0, 1.0), (0.0, P - 1.0), (), (), "no recording")
            return ForecastSnapshot(
                None, 0, 0, C, P, int(self.cursor), (C, C), "", layout, _empty_lines(), self._legend(runs), self._statuses(runs),
                self._metrics(None, runs), (), None, selection_error, False, self.error, self.notice, self.busy, "",
            )  # fmt: skip
        lo, hi = self.cursor_bounds()
        t = int(min(hi, max(lo, self.cursor)))
        layout = self._layout(rec, units, C, P)
        if selection_error:
            selection = f"⚠ {selection_error}"
        else:
            note = duplicate_note(rec, units) if rec.duplicates else ""
            shown = f"{len(units)} unit(s) shown" if units else "no units selected"
            selection = f"{shown}; {note}" if note else shown
        curves = tuple({"model": r.label, "color": r.color, "x": [h["step"] for h in r.curve], "y": [h["val_score"] for h in r.curve]}
                       for r in runs if r.curve)  # fmt: skip
        return ForecastSnapshot(
            recording=rec.name, T=rec.T, U=rec.U, C=C, P=P, cursor=t, cursor_bounds=(lo, hi),
            clock=f"frame <b>{t}</b> / {rec.T - 1} · t = {rec.time[t]:.2f} s · {self._split_of(rec, t)}",
            layout=layout, lines=self._lines(rec, runs, units, layout, t, C, P), legend=self._legend(runs),
            models=self._statuses(runs), metrics=self._metrics(rec, runs), curves=curves, raster=self.raster(),
            selection=selection, needs_adaptation=any(r.state == "needs-adaptation" for r in runs), error=self.error,
            notice=self.notice, busy=self.busy, export_label=self.export_label(),
        )  # fmt: skip

    @staticmethod
    def _split_of(rec: Recording, t: int) -> str:
        for name, ranges in split_indices(rec.T).items():
            if any(a <= t < b for a, b in ranges):
                return f"{name} split"
        return ""

    def _layout(self, rec: Recording, units: list[int], C: int, P: int) -> TracesLayout:
        if rec.lazy and not rec.src.stats_ready():
            units = []  # no frames before the z-scoring statistics (computed in the background)
        key = (rec.key, tuple(units), C, P)
        if self._layout_cache is None or self._layout_cache[0] != key:
            self._layout_cache = (key, self._make_layout(rec, units, C, P))
        return self._layout_cache[1]

    def _make_layout(self, rec: Recording, units: list[int], C: int, P: int) -> TracesLayout:
        dt = rec.dt
        past_x = tuple(np.round(np.arange(-C, 0) * dt, 4).tolist())
        future_x = tuple(np.round(np.arange(-1, P) * dt, 4).tolist())
        if units:
            block = rec.activity[:, units] if not rec.lazy else rec.frames(0, min(rec.T, 1024), units)
            lo, hi = (float(v) for v in np.nanpercentile(block, [0.1, 99.9]))
            spread = float(np.nanpercentile(block, 99.5) - np.nanpercentile(block, 0.5)) or 1.0
        else:
            lo, hi, spread = -0.5, 0.5, 1.0
        step = 0.75 * spread
        offsets = tuple(-k * step for k in range(len(units)))
        pad = 0.05 * spread
        if units:
            title = f"{rec.name}: {len(units)} unit(s), z-scored; solid = last {C} frames, dashed = next {P} recorded, colours = forecasts"
        elif rec.lazy and not rec.src.stats_ready():
            title = f"{rec.name}: computing each unit's mean and SD for z-scoring (one pass over {rec.U} units × {rec.T} frames) …"
        else:
            title = "select units to show traces"
        return TracesLayout(
            units=tuple(units), names=tuple(str(rec.names[u]) for u in units), offsets=offsets,
            x_range=(-(C + 0.5) * dt, (P + 1.5) * dt), y_range=((offsets[-1] if offsets else 0) + lo - pad, hi + pad),
            horizon=(0.0, (P - 1) * dt), past_x=past_x, future_x=future_x, title=title,
        )  # fmt: skip

    def _lines(self, rec: Recording, runs: list[ModelRun], units: list[int], layout: TracesLayout, t: int, C: int, P: int) -> dict[str, list]:
        rows = _empty_lines()
        units = list(layout.units)  # none while a lazy recording's statistics are being computed
        n = len(units)
        if not n:
            return rows
        off = np.asarray(layout.offsets, dtype=np.float32)
        cols = np.asarray(units, dtype=np.int64)
        frames = rec.frames(t - C, t + P, cols)  # rows t-C .. t+P-1
        past_x, fut_x = list(layout.past_x), list(layout.future_x)

        def add(layer: str, xs: list, block: np.ndarray, color: str, dash: str, width: float) -> None:
            # plain lists, rounded: sent inline as JSON (numpy arrays would each travel as a buffer)
            rows["xs"] += [xs] * n
            rows["ys"] += np.round(block + off, 4).T.tolist()
            rows["layer"] += [layer] * n
            rows["color"] += [color] * n
            rows["dash"] += [dash] * n
            rows["width"] += [width] * n
            rows["unit"] += [int(u) for u in units]

        add("context", past_x, frames[:C], CONTEXT_COLOR, "solid", 1.6)
        add("horizon", fut_x, frames[C - 1 : C + P], HORIZON_COLOR, "dashed", 1.4)
        last = frames[C - 1][None, :]
        for i, run in enumerate(runs[:MAX_MODELS]):
            got = run.lines(t, units)
            if got is not None:
                k = got.shape[0]
                add(f"model-{i}", fut_x[: k + 1], np.vstack([last, got]), run.color, "solid", 2.4)
        return rows

    @staticmethod
    def _legend(runs: list[ModelRun]) -> tuple[LegendEntry, ...]:
        out = [LegendEntry("recorded (context)", CONTEXT_COLOR, "solid", 1.6), LegendEntry("recorded (horizon)", HORIZON_COLOR, "dashed", 1.4)]
        out += [LegendEntry(r.label + (" (adapted)" if r.adapted else ""), r.color) for r in runs]
        return tuple(out)

    def _statuses(self, runs: list[ModelRun]) -> tuple[ModelStatus, ...]:
        out = []
        for r in runs:
            if r.state == "adapting":
                progress = r.adapt_step / max(1, self.adapt_steps)
            elif r.forecast is not None:
                progress = float(r.forecast.fraction_done)
            else:
                progress = None
            out.append(ModelStatus(r.key, r.label, r.color, r.state, r.message, progress, r.adapted))
        return tuple(out)

    def _metrics(self, rec: Recording | None, runs: list[ModelRun]) -> MetricsView:
        t = int(self.cursor)
        split = None if self.metrics_over == "all" else self.metrics_over
        identity = (None if rec is None else rec.key, tuple((r.key, id(r.forecast), r.state) for r in runs), split, self.step_metric)
        progress = tuple(0 if r.forecast is None else r.forecast.n_valid * r.forecast.fraction_done for r in runs)
        now = time.monotonic()
        cached = self._metrics_cache
        if cached is not None:
            key, when, view = cached
            if key == (identity, t, progress):
                return view
            if key[0] == identity and (self.playing or key[1] == t) and now - when < METRICS_EVERY_S:
                return view  # only the cursor (while playing) or the progress moved: a few times per second is enough
        view = self._compute_metrics(rec, runs, t, split)
        self._metrics_cache = ((identity, t, progress), now, view)
        return view

    def _compute_metrics(self, rec: Recording | None, runs: list[ModelRun], t: int, split: str | None) -> MetricsView:
        which = self.step_metric.lower()  # "mse" | "mae"
        what = "test-split windows" if split == "test" else "windows"
        header = ("model", "score", "MSE", "MAE", what, "computed")
        rows, colors, per_step = [], [], []
        region_scores: dict[str, list[str]] = {}
        copy_per_step = None
        ready = [r for r in runs if r.forecast is not None]
        for run in runs:
            fc = run.forecast
            if fc is None:
                rows.append((run.label, "–", "–", "–", "0", run.state.replace("-", " ")))
                colors.append(run.color)
                continue
            m = fc.metrics(upto=t, split=split)
            if copy_per_step is None and m["n_windows"]:
                copy_per_step = m[f"per_step_copy_{which}"]  # copy-last, over the first model's windows
            rows.append((run.label, _fmt(m["score"]), _fmt(m["mse"]), _fmt(m["mae"]), str(m["n_windows"]), f"{100 * fc.fraction_done:.0f}%"))
            colors.append(run.color)
            if m["n_windows"]:
                ys = [float(v) for v in m[f"per_step_{which}"]]
                per_step.append({"model": run.label, "color": run.color, "dash": "solid", "x": list(range(1, len(ys) + 1)), "y": ys})
            for reg, s in (m.get("region_scores") or {}).items():
                region_scores.setdefault(reg, []).append(_fmt(s))
        if copy_per_step is not None:
            ys = [float(v) for v in copy_per_step]
            per_step.append({"model": "copy-last", "color": COPY_LAST_COLOR, "dash": "dashed", "x": list(range(1, len(ys) + 1)), "y": ys})
        caption = (f"Running metrics over the {what} whose horizon has played (frame ≤ {t}); score = 1 − MSE / MSE(copy last frame); "
                   "MAE = mean |forecast − recorded|") if rows else "no models chosen"  # fmt: skip
        region_rows = tuple((reg, *vals) for reg, vals in sorted(region_scores.items())) if ready else ()
        return MetricsView(
            header=header, rows=tuple(rows), colors=tuple(colors), caption=caption, per_step=tuple(per_step),
            per_step_title=f"{self.step_metric} per step ahead", per_step_axis=STEP_METRICS[self.step_metric],
            region_header=("region", *(r.label for r in ready)) if region_rows else (), region_rows=region_rows,
        )  # fmt: skip

    def raster(self) -> RasterView | None:
        """The population raster of the recording (rows sorted by region), built once per recording."""
        rec = self.recording
        if rec is None:
            return None
        cached = getattr(self, "_raster", None)
        if cached is not None and cached.key == rec.key:
            return cached
        if rec.lazy:
            self._raster = self._lazy_raster(rec)
            return self._raster
        act = rec.activity
        hi = float(np.nanpercentile(np.abs(act[:: max(1, rec.T // 400), :: max(1, rec.U // 2000)]), 99)) or 1.0
        view = RasterView(
            key=rec.key, time=rec.time, image=np.ascontiguousarray(act[:, rec.order].T), clim=(-hi, hi),
            title=f"{rec.name}: {rec.U} units × {rec.T} frames (z-score); cursor and forecast horizon marked",
            row_ids=tuple(int(rec.ids[u]) for u in rec.order), row_names=tuple(str(rec.labels[u]) or "–" for u in rec.order),
            row_regions=tuple(str(rec.regions[u]) for u in rec.order),
            time_label=rec.prep.time_label, rows=np.arange(rec.U, dtype=float),
        )  # fmt: skip
        self._raster = view
        return view

    def _lazy_raster(self, rec: Recording) -> RasterView:
        """The raster of a lazily opened recording: one window of its pyramid (stored order, the
        layout's region grouping), at most about :data:`LAZY_RASTER_CELLS` cells; never the array."""
        from pocoviz.recordings.rasterwindow import RasterSource

        cols, rows = LAZY_RASTER_CELLS
        source = RasterSource(rec.ds)
        win = source.window(0, rec.T, 0, rec.U, max_cols=cols, max_rows=rows, reduce="mean")
        img = np.asarray(win.values, dtype=np.float32)
        finite = img[np.isfinite(img)]
        if rec.ds["activity"].attrs.get("units") == "z-score" or not finite.size:
            hi = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
            clim = (-(hi or 1.0), hi or 1.0)
        else:
            lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
            clim = (lo, hi if hi > lo else lo + 1)
        n_rows, n_cols = img.shape
        dt = rec.dt
        return RasterView(
            key=rec.key, time=(win.frame0 + win.frame_step * (np.arange(n_cols) + 0.5) - 0.5) * dt, image=img, clim=clim,
            title=(f"{rec.name}: {rec.U} units × {rec.T} frames ({rec.ds['activity'].attrs.get('units', 'a.u.')}); pyramid level "
                   f"{win.level}, {win.row_step} units × {win.frame_step} frames a cell; cursor and forecast horizon marked"),
            row_ids=tuple(int(i) for i in rec.ids), row_names=tuple(str(lab) or "–" for lab in rec.labels),
            row_regions=tuple(str(r) for r in rec.regions), time_label=rec.prep.time_label,
            rows=win.row0 + win.row_step * (np.arange(n_rows) + 0.5) - 0.5, frame_time=rec.time,
            window=lambda x_range, y_range: viewport_window(source, rec.dt, x_range, y_range),
        )  # fmt: skip

    # ------------------------------------------------------------------ export
    def forecasts_dataset(self, scope: str | None = None) -> xr.Dataset:
        """The chosen models' computed forecasts, one variable per model: of the units on screen
        (``scope="shown"``) or of every unit (``"all"``)."""
        rec = self.recording
        if rec is None:
            raise ValueError("no recording loaded")
        scope = scope or self.export_scope
        units = self._units_or_empty() if scope == "shown" else None
        if scope == "shown" and not units:
            raise ValueError("no units on screen")
        out = None
        for run in self.runs:
            if run.forecast is None or not run.forecast.done.any():
                continue
            if rec.lazy or not hasattr(run.forecast, "to_dataset"):  # on disk (the cache, or a pocoviz forecast store)
                ds = _unit_subset_lazy(run.forecast, rec, units if units is not None else list(range(rec.U)))
            else:
                ds = run.forecast.to_dataset() if units is None else _unit_subset(run.forecast, units)
            var = "forecast_" + "".join(c if c.isalnum() else "_" for c in run.label)
            ds = ds.rename({"forecast": var})
            ds[var].attrs.update(model=run.label, adapted=int(run.adapted))
            out = ds if out is None else xr.merge([out, ds[[var]]], join="outer", compat="override", combine_attrs="drop_conflicts")
        if out is None:
            raise ValueError("no forecasts computed yet")
        out.attrs.update(recording=rec.name, source=str(rec.source), created_by="pocoviz Forecast tab", units_exported=scope)
        return out

    def export_estimate(self, scope: str | None = None) -> int:
        """Bytes an export holds at most (before compression): 16-bit forecasts, 32-bit errors,
        the 16-bit recording once."""
        scope = scope or self.export_scope
        rec = self.recording
        n_units = len(self._units_or_empty()) if scope == "shown" else (rec.U if rec else 0)
        n = 2 * rec.T * n_units if rec is not None else 0
        for run in self.runs:
            fc = run.forecast
            if fc is not None:
                n += int(fc.done.sum()) * n_units * (2 * fc.P + 2 * 4)
        return n

    def export_label(self) -> str:
        """The download button's label: what it holds at most (the export-scope picker says of which units)."""
        return f"Forecasts (netCDF, ≤ {_size(self.export_estimate())})"

    def write_export(self, path: str | os.PathLike, scope: str | None = None) -> int:
        """Write the export to ``path`` (compressed netCDF, forecasts packed as 16-bit integers as
        they are stored); returns its size in bytes. ValueError when there is nothing to export or
        it would be larger than :data:`MAX_EXPORT_BYTES`."""
        scope = scope or self.export_scope
        if self.export_estimate(scope) > 4 * MAX_EXPORT_BYTES:
            raise ValueError(f"{_size(self.export_estimate(scope))} of forecasts is too much for a browser download: export the units on screen")
        ds = self.forecasts_dataset(scope)
        encoding = {}
        for name, var in ds.data_vars.items():
            enc: dict[str, Any] = {"zlib": True, "complevel": 4, "shuffle": True}
            if var.dtype == np.float64:
                enc["dtype"] = "float32"
            if var.dtype.kind == "f" and name.startswith(("forecast_", "activity")):
                # steps of 1e-3 (the float16 forecasts' own precision near 1 z-score), coarser only
                # when values beyond ±32 need the range
                top = float(np.nanmax(np.abs(var.values))) if var.size else 0.0
                scale = max(1e-3, top / 32000.0) if np.isfinite(top) else 1e-3
                enc.update(dtype="int16", scale_factor=scale, _FillValue=np.int16(-32768))
            encoding[name] = enc
        ds.to_netcdf(path, encoding=encoding, engine="netcdf4")
        size = os.path.getsize(path)
        if size > MAX_EXPORT_BYTES:
            os.unlink(path)
            raise ValueError(f"the export would be {_size(size)}, more than a browser download takes here ({_size(MAX_EXPORT_BYTES)}): "
                             "export the units on screen")  # fmt: skip
        return size

    def export_file(self) -> str | None:
        """A temporary file holding the export (the caller sends and removes it); None, with the
        reason in :attr:`error`, when there is nothing to export or it is too large."""
        fd, tmp = tempfile.mkstemp(suffix=".nc", prefix="pocoviz_forecasts_")
        os.close(fd)
        try:
            self.write_export(tmp)
        except (ValueError, OSError) as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            self._set_error("export", f"Nothing exported: {exc}")
            return None
        self._set_error("export", "")
        return tmp


def _unit_subset(fc: Any, units: list[int]) -> xr.Dataset:
    """``fc.to_dataset()`` for ``units`` only, without materialising every unit first."""
    cur = np.flatnonzero(fc.done.copy()).astype(np.int64)
    cols = np.asarray(units, dtype=np.int64)
    ds = xr.Dataset(
        {
            "forecast": (("cursor", "step", "unit"), fc.forecast[cur][:, :, cols].astype(np.float32)),
            "activity": (("time", "unit"), np.asarray(fc.activity[:, cols])),
            "sse": (("cursor", "unit"), fc.sse[cur][:, cols]),
            "copy_sse": (("cursor", "unit"), fc.copy_sse[cur][:, cols]),
        },
        coords={
            "cursor": cur,
            "step": np.arange(1, fc.P + 1, dtype=np.int64),
            "unit": cols,
            "time": np.arange(fc.T, dtype=np.int64),
            "window_split": ("cursor", fc.window_split[cur]),
        },  # fmt: skip
        attrs={
            "model": fc.name,
            "model_kind": fc.model.kind,
            "session": fc.session,
            "context": fc.C,
            "horizon": fc.P,
            "description": "forecast[cursor, step, unit] predicts activity[cursor + step - 1, unit] from frames cursor-context..cursor-1",
        },  # fmt: skip
    )
    if fc.regions is not None:
        ds = ds.assign_coords(region=("unit", fc.regions[cols]))
    return ds


def _unit_subset_lazy(fc: Any, rec: Recording, units: list[int]) -> xr.Dataset:
    """The export of a forecast in the disk cache for ``units``: their forecasts at the computed
    cursors and their recorded frames (read for those units only); errors from the stored float16
    forecasts."""
    cur = np.flatnonzero(fc.done.copy()).astype(np.int64)
    cols = np.asarray(units, dtype=np.int64)
    f = fc.forecast_at(cur, cols)  # (n, P, k)
    act = rec.frames(0, rec.T, cols)
    steps = cur[:, None] + np.arange(fc.P)[None, :]
    target = act[steps]  # (n, P, k)
    last = act[cur - 1][:, None, :]
    ds = xr.Dataset(
        {
            "forecast": (("cursor", "step", "unit"), f),
            "activity": (("time", "unit"), act),
            "sse": (("cursor", "unit"), ((f - target).astype(np.float64) ** 2).sum(1)),
            "copy_sse": (("cursor", "unit"), ((last - target).astype(np.float64) ** 2).sum(1)),
        },
        coords={"cursor": cur, "step": np.arange(1, fc.P + 1, dtype=np.int64), "unit": cols, "time": np.arange(fc.T, dtype=np.int64),
                "window_split": ("cursor", fc.window_split[cur])},  # fmt: skip
        attrs={"model": fc.name, "model_kind": fc.model.kind, "session": fc.session, "context": fc.C, "horizon": fc.P,
               "description": "forecast[cursor, step, unit] predicts activity[cursor + step - 1, unit] from frames cursor-context..cursor-1"},  # fmt: skip
    )
    if fc.regions is not None:
        ds = ds.assign_coords(region=("unit", fc.regions[cols]))
    return ds


def _empty_lines() -> dict[str, list]:
    return {"xs": [], "ys": [], "layer": [], "color": [], "dash": [], "width": [], "unit": []}


__all__ = [
    "ForecastController",
    "ForecastSnapshot",
    "MODEL_COLORS",
    "MAX_MODELS",
    "MAX_TRACES",
    "parse_unit_ids",
    "prepare_recording",
]

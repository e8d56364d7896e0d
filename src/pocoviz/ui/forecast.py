"""Forecast tab: play a recording forward and watch each model's forecast land on the recorded traces.

At the cursor t the traces plot shows, for each selected unit, the last C frames (truth, solid), the
next P frames (truth, dashed) and every model's forecast of those frames; the population raster
marks the cursor and the horizon. Forecasts for the whole recording are computed in batched passes
by a background thread (nearest the cursor first) and cached per process, so playback only slices
arrays. Running metrics (score, MSE, MAE; MSE or MAE per step ahead) cover the windows whose forecast
horizon has been played.

Threads: the worker thread only computes (models, forecasts, adaptations) and writes plain Python
state; everything that touches Bokeh or Panel objects runs on the session's event loop (a periodic
poll and next-tick callbacks), so no document lock is ever needed from the worker.
"""

from __future__ import annotations

import html
import io
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)
import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.core.properties import value as bk_value
from bokeh.models import BoxAnnotation, ColumnDataSource, FixedTicker, Legend, LegendItem, Range1d, SaveTool, Span
from bokeh.plotting import figure
from holoviews.operation.datashader import rasterize

from pocoviz.recordings import RecordingError
from pocoviz.recordings.preprocess import zscore

from .base import TabView
from pocoviz.controllers.models import ADAPTED_CACHE, FORECAST_CACHE, LOADED_MODELS, list_models
from .recordings import (
    PreparedSession,
    duplicate_note,
    label_options,
    prepare_session,
    toggle_tapped_unit,
    units_of_region,
    units_with_ids,
    units_with_labels,
)
from pocoviz.controllers.sources import DEMO_KEY, SOURCE_CACHE, list_sources

hv.Store.set_current_backend("bokeh")

#: distinct, colour-blind-safe model colours (Okabe–Ito), in the order models are chosen
MODEL_COLORS = ["#D55E00", "#0072B2", "#009E73", "#CC79A7"]
MAX_MODELS = 4
MAX_TRACES = 12
DEFAULT_MODELS = ("poco_demo", "mlp_demo", "nlinear_demo")
RASTER_HEIGHT = 300
TRACES_HEIGHT = 470
POLL_MS = 200
METRICS_EVERY_S = 0.5
#: unit-windows per background batch: small enough that the cursor's neighbourhood arrives quickly
CHUNK_UNIT_WINDOWS = 24_576
ADAPT_STEPS = 200
SPLIT_CHOICES = {"all played windows": "all", "test-split windows only": "test"}
#: the error the per-step plot shows: squared (the score's) or absolute (ZAPBench's, POCO spec §4.3)
STEP_METRICS = {"MSE": "mean squared error", "MAE": "mean absolute error"}


@dataclass
class ModelRun:
    """One chosen model on the current recording; written by the worker, read by the view."""

    key: str
    label: str
    color: str
    state: str = "loading"  # loading | needs-adaptation | adapting | computing | ready | error
    message: str = ""
    model: Any = None
    forecast: Any = None  # RecordingForecast
    adapted: bool = False
    curve: list[dict] = field(default_factory=list)
    adapt_step: int = 0
    version: int = 0  # bumps whenever new forecasts arrive

    @property
    def usable(self) -> bool:
        return self.forecast is not None


@dataclass
class Recording:
    """The recording being played: display preparation plus the z-scored activity models see."""

    source: str
    name: str
    prep: PreparedSession
    activity: np.ndarray  # (T, U) float32 z-scored
    key: tuple

    @property
    def T(self) -> int:
        return self.activity.shape[0]

    @property
    def U(self) -> int:
        return self.activity.shape[1]


def _html_table(header: list[str], rows: list[list[str]], css: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


class ForecastView(TabView):
    """The Forecast tab (see module docstring)."""

    css_prefix = "pocoviz-f"

    source = param.Selector(default="demo", objects={DEMO_KEY: "demo"}, doc="Corpus or file")
    session = param.Selector(default=None, objects=[], doc="Session (species/session)")
    models = param.ListSelector(default=[], objects=[], doc="Models (up to four)")
    cursor = param.Integer(default=48, bounds=(0, None), doc="Frame of the first forecast step")
    fps = param.Integer(default=10, bounds=(1, 30), doc="Playback speed (frames/s)")
    select_by = param.Selector(default="region", objects=["region", "label", "best", "worst", "units"])
    region = param.Selector(default=None, objects=[])
    labels = param.ListSelector(default=[], objects=[])
    unit_ids = param.String(default="", doc="Unit ids, e.g. 0-3, 17 (or click the raster)")
    n_traces = param.Integer(default=8, bounds=(1, MAX_TRACES))
    metrics_over = param.Selector(default="all", objects=SPLIT_CHOICES)
    step_metric = param.Selector(default="MSE", objects=list(STEP_METRICS), doc="Error per step ahead: MSE or MAE")
    adapt_steps = param.Integer(default=ADAPT_STEPS, bounds=(1, 5000), precedence=-1, doc="Fine-tuning steps of “Adapt”")
    status = param.String(default="")
    #: incremented each time a frame is drawn (for tests and the frame-rate readout)
    frames_drawn = param.Integer(default=0, precedence=-1)

    def __init__(self, data_dir: str | None = None, *, sync_url: bool = True, **params: Any):
        super().__init__(**params)
        self.data_dir = data_dir
        self._sessions: dict[str, xr.Dataset] = {}
        self._recording: Recording | None = None
        self._runs: list[ModelRun] = []
        self._run_recording: dict[str, tuple] = {}  # model key -> the recording its run belongs to
        self._units: list[int] = []
        self._rel_x: tuple[list, list] = ([], [])
        self._frame_pending = False
        self._poll_pending = False
        #: (cursor, recording) the readout shows: a new recording at the same cursor redraws it too
        self._clock_state: tuple | None = None
        self._model_colors: dict[str, str] = {}
        self._metrics_key: tuple | None = None
        self._play_cb = None
        self._location = None
        self._last_metrics = 0.0
        self._seen_versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._jobs: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._periodic = None
        self._raster_marks: dict[str, BoxAnnotation] = {}
        self.param.source.objects = list_sources(data_dir)
        self._model_choices = list_models(data_dir)
        self.param.models.objects = list(self._model_choices.values())
        self._model_names = {v: k for k, v in self._model_choices.items()}
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["pocoviz-forecast-error"])
        self._build_plots()
        self._build_widgets()
        initial = self._url_state() if sync_url else {}
        if not self.models:
            self.models = [m for m in DEFAULT_MODELS if m in self.param.models.objects][:MAX_MODELS]
        self._apply_initial(initial)
        self._sync_url = sync_url

    def _start_url_sync(self) -> None:
        """Mirror the view's state into the page URL (after the page has loaded: the browser's own
        location would overwrite an earlier query)."""
        loc = pn.state.location
        if loc is not None:
            self._location = loc
            synced = {p: name for p, name in URL_PARAMS.items() if p != "cursor"}  # the cursor: see _update_clock
            loc.sync(self, synced, on_error=lambda bad: self._show_error(f"ignored link settings: {bad}"))
            self._update_clock()

    # ================================================================= URL state
    def _url_state(self) -> dict[str, Any]:
        loc = pn.state.location
        if loc is None:
            return {}
        q = dict(loc.query_params or {})
        out = {}
        for p, name in URL_PARAMS.items():
            if name in q:
                out[p] = q[name]
        return out

    def _apply_initial(self, state: dict[str, Any]) -> None:
        """Apply link settings in dependency order (source before session before units)."""
        import json

        def parsed(v: Any) -> Any:
            """JSON, or a list of strings as Panel writes it (``['a', 'b']``); never evaluated."""
            if not isinstance(v, str):
                return v
            try:
                return json.loads(v)
            except ValueError:
                text = v.strip()
                if text.startswith("[") and text.endswith("]"):
                    items = [x.strip() for x in text[1:-1].split(",") if x.strip()]
                    if all(len(x) >= 2 and x[0] == x[-1] and x[0] in "'\"" for x in items):
                        return [x[1:-1] for x in items]
                return v

        if state.get("source") in self.param.source.objects.values() and state["source"] != self.source:
            self.source = state["source"]  # loads it
        else:
            self._load_source()
        if state.get("session") in self.param.session.objects:
            self.session = state["session"]
        models = parsed(state.get("models"))
        if isinstance(models, list):
            ok = [m for m in models if m in self.param.models.objects][:MAX_MODELS]
            if ok:
                self.models = ok
        updates = {}
        for p in ("select_by", "region", "unit_ids"):
            if p in state and (p == "unit_ids" or state[p] in self.param[p].objects):
                updates[p] = state[p]
        labels = parsed(state.get("labels"))
        if isinstance(labels, list):
            updates["labels"] = [lab for lab in labels if lab in self.param.labels.objects]
        if "fps" in state:
            try:
                updates["fps"] = int(np.clip(int(state["fps"]), 1, 30))
            except (TypeError, ValueError):
                pass
        if "n_traces" in state:
            try:
                updates["n_traces"] = int(np.clip(int(state["n_traces"]), 1, MAX_TRACES))
            except (TypeError, ValueError):
                pass
        if "cursor" in state:
            try:
                updates["cursor"] = int(state["cursor"])
            except (TypeError, ValueError):
                pass
        if updates:
            self.param.update(**updates)

    # ================================================================= data
    @param.depends("source", watch=True)
    def _load_source(self) -> None:
        try:
            sessions = SOURCE_CACHE.load(self.source, self.data_dir)
        except RecordingError as exc:
            self._show_error(f"Cannot open this recording. {exc}")
            return
        except Exception as exc:  # an unexpected reader failure must not end the session
            self._show_error(f"Cannot open this recording. {type(exc).__name__}: {exc}")
            return
        self._clear_error()
        self._sessions = sessions
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
        try:
            prep = prepare_session((self.source, self.session, id(ds)), ds, self.session)
            act = np.asarray(ds["activity"].transpose("time", "unit").values, dtype=np.float32)
            if ds["activity"].attrs.get("units") != "z-score":
                act = zscore(act).astype(np.float32)
        except Exception as exc:
            self._show_error(f"Cannot prepare {self.session}: {exc}")
            return
        rec = Recording(self.source, self.session, prep, np.ascontiguousarray(act), (self.source, self.session, id(ds)))
        self._recording = rec
        C = 48
        lo, hi = C, max(C, rec.T - 16)
        self.param.cursor.bounds = (lo, hi)
        regions = [b.region for b in prep.bands]
        options = label_options(ds)  # a duplicated label is shown as such; picking it selects every unit carrying it
        labelled = list(options.values())
        with param.parameterized.batch_call_watchers(self):
            self.param.region.objects = regions
            self.param.labels.objects = options
            if self.region not in regions:
                self.region = regions[0] if regions else None
            self.labels = [lab for lab in self.labels if lab in labelled]
            if self.select_by == "label" and not labelled:
                self.select_by = "region"
            self.cursor = int(np.clip(self.cursor, lo, hi))
        self._player.start, self._player.end = lo, hi
        self._send_raster(rec)
        self._start_runs()
        self._update_units()

    # ================================================================= models and the worker
    @param.depends("models", watch=True)
    def _on_models(self) -> None:
        if len(self.models) > MAX_MODELS:
            self.models = self.models[:MAX_MODELS]
            return
        self._start_runs()

    def _start_runs(self) -> None:
        rec = self._recording
        if rec is None:
            return
        old = {r.key: r for r in self._runs}
        # a colour belongs to its model: a model that stays selected keeps its colour, a new one
        # takes the first colour no selected model holds (removing a model recolours nothing)
        for key in list(self._model_colors):
            if key not in self.models:
                del self._model_colors[key]
        for key in self.models:
            if key not in self._model_colors:
                taken = set(self._model_colors.values())
                self._model_colors[key] = next((c for c in MODEL_COLORS if c not in taken), MODEL_COLORS[0])
        runs = []
        for key in self.models:
            label = self._model_names.get(key, key)
            run = old.get(key) if old.get(key) is not None and self._run_recording.get(key) == rec.key else None
            if run is None:
                run = ModelRun(key=key, label=label, color=self._model_colors[key])
                self._run_recording[key] = rec.key
                self._jobs.put(("prepare", run, rec))
            run.color = self._model_colors[key]
            runs.append(run)
        self._runs = runs
        self._ensure_worker()
        self._wake.set()
        self._on_loop(self._refresh_legend)
        self._request_frame()

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="pocoviz-forecast", daemon=True)
            self._worker.start()

    def close(self) -> None:
        """Stop the worker and the poll (the browser session ended)."""
        self._stop.set()
        self._wake.set()
        if self._periodic is not None:
            self._periodic.stop()
        if self._play_cb is not None:
            self._play_cb.stop()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=5.0)  # the batch in flight (< 1 s) finishes; nothing is left running

    def _work(self) -> None:

        from pocoviz.backend import configure_threads

        configure_threads()  # one torch thread on 2 cores: the other stays with the web server
        while not self._stop.is_set():
            try:
                kind, run, rec = self._jobs.get_nowait()
            except queue.Empty:
                kind = None
            if kind == "prepare":
                self._prepare(run, rec)
                continue
            if kind == "adapt":
                self._adapt(run, rec)
                continue
            if not self._compute_some():
                self._wake.wait(0.5)
                self._wake.clear()

    def _prepare(self, run: ModelRun, rec: Recording) -> None:
        from pocoviz.forecast.playback import RecordingForecast

        if run.key not in self.models:
            return
        try:
            adapted = ADAPTED_CACHE.get((run.key, rec.key))
            model = adapted if adapted is not None else LOADED_MODELS.get(run.key, self.data_dir)
            run.model = model
            run.adapted = adapted is not None
            if not model.session_free and rec.name not in {s.name for s in model.sessions}:
                run.state = "needs-adaptation"
                run.message = f"{run.label} ({model.kind}) has not seen {rec.name}: it needs unit embeddings for this recording. Use “Adapt to this recording”."
                return

            def create():
                return RecordingForecast(model, rec.activity, rec.name, regions=list(rec.prep.regions), name=run.label)

            run.forecast = FORECAST_CACHE.get_or_create((run.key, run.adapted, rec.key), create)
            run.state = "ready" if run.forecast.fraction_done >= 1 else "computing"
            run.message = ""
            run.version += 1
        except Exception as exc:  # a bad checkpoint must not end the session
            run.state, run.message = "error", f"{run.label}: {exc}"

    def _compute_some(self) -> bool:
        """Compute one batch of missing cursors for the model whose forecasts run out soonest after
        the playhead (so cheap models are not held up by POCO); False when everything is done."""
        t = int(self.cursor)
        best, best_margin, best_order = None, None, None
        for run in list(self._runs):
            fc = run.forecast
            if fc is None or run.state != "computing":
                continue
            missing = fc.cursors[~fc.done[fc.cursors]]
            if len(missing) == 0:
                run.state = "ready"
                run.version += 1
                continue
            ahead = missing[missing >= t - 1]
            # frames of forecasts ready after the playhead; forecasts behind it matter least
            margin = int(ahead[0]) - t if len(ahead) else fc.T
            if best_margin is None or margin < best_margin:
                best, best_margin, best_order = run, margin, np.concatenate([ahead, missing[missing < t - 1]])
        if best is None:
            return False
        fc = best.forecast
        n = max(4, CHUNK_UNIT_WINDOWS // max(1, fc.U))
        try:
            fc.compute(cursors=best_order[:n], stop=self._stop)
        except Exception as exc:
            best.state, best.message = "error", f"{best.label}: forecasting failed: {exc}"
            return True
        best.version += 1
        return True

    def _adapt(self, run: ModelRun, rec: Recording) -> None:
        from pocoviz.forecast import ForecastCorpus, TrainConfig, finetune
        from pocoviz.forecast.playback import RecordingForecast

        try:
            base = LOADED_MODELS.get(run.key, self.data_dir)
            ds = self._sessions.get(rec.name)
            if ds is None:
                raise ValueError("the recording is no longer loaded")
            ds = ds.copy()
            ds["activity"] = (("time", "unit"), rec.activity, {"units": "z-score"})
            corpus = ForecastCorpus({rec.name: ds}, strides={"train": 1, "val": 4, "test": 4})
            cfg = TrainConfig(steps=self.adapt_steps, eval_every=max(1, min(20, self.adapt_steps // 5)), batch_size=32, max_units=64, progress=False)
            run.curve = []

            def on_eval(entry: dict) -> bool:
                run.curve.append({k: float(v) for k, v in entry.items()})
                run.adapt_step = int(entry["step"])
                run.version += 1
                return not self._stop.is_set()

            probe = base.sessions
            init = "labels" if any(s.labels for s in probe) and corpus.sessions[0].labels else "random"
            adapted, result = finetune(base, corpus, "embedding", cfg, device="cpu", callback=on_eval, init=init)
            adapted.eval()
            ADAPTED_CACHE.put((run.key, rec.key), adapted)
            run.model, run.adapted = adapted, True
            run.forecast = FORECAST_CACHE.get_or_create(
                (run.key, True, rec.key),
                lambda: RecordingForecast(adapted, rec.activity, rec.name, regions=list(rec.prep.regions), name=run.label + " (adapted)"),
            )
            best = next((h for h in result.history if h["step"] == result.best_step), result.history[-1])
            run.message = (
                f"adapted {run.label} to {rec.name}: embeddings only, {result.steps_done} steps, "
                f"validation score {_fmt(result.history[0]['val_score'])} (zero-shot) → {_fmt(best['val_score'])} "
                f"(best, step {result.best_step}); new units initialised: {init}"
                + (f" ({result.info.get('label_matched_units', 0)} matched by label)" if init == "labels" else "")
            )
            run.state = "computing"
            run.version += 1
        except Exception as exc:
            run.state, run.message = "error", f"{run.label}: adaptation failed: {exc}"

    def adapt(self, event: Any = None) -> None:
        """Fine-tune the embeddings of every chosen model that has not seen this recording."""
        rec = self._recording
        if rec is None:
            return
        for run in self._runs:
            if run.state == "needs-adaptation":
                run.state = "adapting"
                run.message = f"adapting {run.label} to {rec.name} …"
                run.curve = []
                self._jobs.put(("adapt", run, rec))
        self._ensure_worker()
        self._wake.set()

    # ================================================================= unit selection
    def selected_units(self) -> list[int]:
        """Positional indices of the units whose traces are shown."""
        rec = self._recording
        if rec is None:
            return []
        prep = rec.prep
        n = self.n_traces
        if self.select_by == "region":
            return units_of_region(prep, self.region, n)
        if self.select_by == "label":
            return units_with_labels(prep, self.labels, MAX_TRACES)
        if self.select_by in ("best", "worst"):
            run = next((r for r in self._runs if r.forecast is not None), None)
            if run is None:
                return []
            scores = run.forecast.unit_scores()
            ok = np.flatnonzero(np.isfinite(scores))
            if len(ok) == 0:
                return []
            ranked = ok[np.argsort(scores[ok])]
            pick = ranked[::-1][:n] if self.select_by == "best" else ranked[:n]
            return [int(i) for i in pick]
        return units_with_ids(prep, self.unit_ids, MAX_TRACES)

    @param.depends("select_by", "region", "labels", "unit_ids", "n_traces", watch=True)
    def _update_units(self) -> None:
        rec = self._recording
        if rec is None:
            return
        try:
            units = self.selected_units()
        except ValueError as exc:
            self._selection_info.object = f"⚠ {html.escape(str(exc))}"
            return
        self._units = units
        note = duplicate_note(rec.prep, units)
        shown = f"{len(units)} unit(s) shown" if units else "no units selected"
        self._selection_info.object = f"{shown}; {html.escape(note)}" if note else shown
        self._on_loop(lambda: self._layout_traces(rec, units))
        self._request_frame()

    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        rec = self._recording
        text = None if rec is None else toggle_tapped_unit(rec.prep, y, self.unit_ids if self.select_by == "units" else "", MAX_TRACES)
        if text is None:
            return
        with param.parameterized.batch_call_watchers(self):
            self.select_by = "units"
            self.unit_ids = text

    # ================================================================= plots
    def _build_plots(self) -> None:
        # -- traces: raw Bokeh, one data source updated in place each frame. Time runs relative to
        # the cursor, so that the axes, the cursor line and the horizon band never move: a frame is
        # one message with a few hundred numbers.
        self._frame_src = ColumnDataSource(
            {"xs": [], "ys": [], "layer": [], "color": [], "dash": [], "width": []}, name="pocoviz-frame", tags=["pocoviz-frame"]
        )
        self._x_range = Range1d(-49, 17)
        self._y_range = Range1d(-1, 1)
        save = SaveTool(filename="pocoviz_forecast")
        fig = figure(
            height=TRACES_HEIGHT, sizing_mode="stretch_width", x_range=self._x_range, y_range=self._y_range,
            tools=["pan", "wheel_zoom", "box_zoom", "reset", save], toolbar_location="above",
            title="select units to show traces", x_axis_label="time from the cursor (s)", output_backend="canvas",
        )  # fmt: skip
        self._horizon_box = BoxAnnotation(left=0, right=15, fill_color="#999999", fill_alpha=0.10, line_alpha=0)
        fig.add_layout(self._horizon_box)
        fig.add_layout(Span(location=0, dimension="height", line_color="#555555", line_dash="dotted", line_width=1.2))
        fig.multi_line("xs", "ys", source=self._frame_src, line_color="color", line_dash="dash", line_width="width", line_alpha=0.9)
        # legend entries drawn from empty renderers with each layer's style
        # (BokehJS leaves an empty renderer's legend sample blank: one point far outside the fixed
        # x-range gives each a sample without drawing anything)
        away = ([-1e9], [0.0])
        context = fig.line(*away, line_color="#222222", line_width=1.6)
        horizon = fig.line(*away, line_color="#555555", line_width=1.4, line_dash="dashed")
        self._model_renderers = [fig.line(*away, line_color=MODEL_COLORS[i], line_width=2.4) for i in range(MAX_MODELS)]
        self._legend_items = [LegendItem(label=bk_value("recorded (context)"), renderers=[context]),
                              LegendItem(label=bk_value("recorded (horizon)"), renderers=[horizon])]  # fmt: skip
        self._model_items = [LegendItem(label=bk_value(""), renderers=[r], visible=False) for r in self._model_renderers]
        legend = Legend(items=self._legend_items + self._model_items, location="top_left")
        legend.label_text_font_size = "9pt"
        fig.add_layout(legend, "right")
        fig.yaxis.ticker = FixedTicker(ticks=[])
        fig.ygrid.grid_line_alpha = 0.3
        self._traces_fig = fig
        self._save_tool = save
        fig.css_classes = ["pocoviz-forecast-traces"]
        self._traces_pane = pn.pane.Bokeh(fig, sizing_mode="stretch_width", height=TRACES_HEIGHT)

        # -- per-step error (MSE or MAE, switched by step_metric)
        steps = ColumnDataSource({"xs": [], "ys": [], "color": [], "model": []}, name="pocoviz-step-mse")
        sfig = figure(height=230, width=330, title="MSE per step ahead", x_axis_label="step ahead",
                      y_axis_label="MSE", tools="hover,save", toolbar_location=None)  # fmt: skip
        sfig.multi_line("xs", "ys", source=steps, line_color="color", line_width=2)
        sfig.hover.tooltips = [("model", "@model")]
        self._step_src = steps
        self._step_fig = sfig
        sfig.css_classes = ["pocoviz-step-mse"]
        self._step_pane = pn.pane.Bokeh(sfig, width=340, height=240)

        # -- adaptation learning curve
        curve = ColumnDataSource({"xs": [], "ys": [], "color": [], "model": []}, name="pocoviz-adapt-curve")
        cfig = figure(height=200, width=330, title="adaptation: validation score", x_axis_label="step", tools="hover", toolbar_location=None)
        cfig.multi_line("xs", "ys", source=curve, line_color="color", line_width=2)
        cfig.hover.tooltips = [("model", "@model")]
        self._curve_src = curve
        self._curve_fig = cfig
        cfig.visible = False  # the pane's visibility alone left an empty plot drawn in the browser
        cfig.css_classes = ["pocoviz-adapt-curve"]
        self._curve_pane = pn.pane.Bokeh(cfig, width=340, height=210, visible=False)

        # -- raster: Datashader, built once, fed by a Pipe; cursor and horizon drawn by a hook
        self._raster_pipe = hv.streams.Pipe(data=None)
        image = hv.DynamicMap(self._image, streams=[self._raster_pipe])
        self._raster_range = hv.streams.RangeXY()
        raster = rasterize(image, precompute=True, streams=[self._raster_range]).opts(
            cmap="RdBu_r", colorbar=True, responsive=True, height=RASTER_HEIGHT, invert_yaxis=True, tools=["hover", "tap"],
            ylabel="unit (sorted by region)", xlabel="time (s)", toolbar="above", framewise=True, padding=0,
            hooks=[self._raster_hook],
        )  # fmt: skip
        raster = raster.apply.opts(clim=self.param._clim, title=self.param._raster_title)
        self._tap = hv.streams.Tap(source=raster, x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._raster_pane = pn.pane.HoloViews(raster, sizing_mode="stretch_width", height=RASTER_HEIGHT, linked_axes=False,
                                              css_classes=["pocoviz-forecast-raster"])  # fmt: skip

        self._metrics_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-metrics"])
        self._regions_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-region-scores"])
        self._status_pane = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["pocoviz-model-status"])
        self._selection_info = pn.pane.Markdown("", css_classes=["pocoviz-selection"], margin=(0, 10))
        self._clock = pn.pane.HTML("", css_classes=["pocoviz-clock"], margin=(4, 10))

    _clim = param.Tuple(default=(-3.0, 3.0), precedence=-1)
    _raster_title = param.String(default="", precedence=-1)

    @staticmethod
    def _image(data: tuple | None) -> hv.Image:
        if data is None:
            data = (np.arange(2.0), np.arange(2.0), np.zeros((2, 2), np.float32))
        return hv.Image(data, kdims=["ftime", "frow"], vdims=[hv.Dimension("activity")])

    def _raster_hook(self, plot: Any, element: Any) -> None:
        fig = plot.state
        if fig.id in self._raster_marks:
            return
        # one annotation (two numbers per frame): its left edge is the cursor, the band the horizon
        box = BoxAnnotation(left=0, right=0, fill_color="#ffd54f", fill_alpha=0.35, line_color="black", line_width=1.5, line_alpha=0.9)
        fig.add_layout(box)
        self._raster_marks[fig.id] = box
        self._place_marks()

    def _send_raster(self, rec: Recording) -> None:
        prep = rec.prep
        act = rec.activity
        self._raster_range.event(x_range=None, y_range=None)
        self._raster_pipe.send((prep.time, np.arange(rec.U, dtype=float), np.ascontiguousarray(act[:, prep.order].T)))
        hi = float(np.nanpercentile(np.abs(act[:: max(1, rec.T // 400), :: max(1, rec.U // 2000)]), 99)) or 1.0
        with param.parameterized.batch_call_watchers(self):
            self._clim = (-hi, hi)
            self._raster_title = f"{rec.name}: {rec.U} units × {rec.T} frames (z-score); cursor and forecast horizon marked"

    def _layout_traces(self, rec: Recording, units: list[int]) -> None:
        act = rec.activity
        dt = float(rec.prep.time[1] - rec.prep.time[0]) if rec.T > 1 else 1.0
        self._rel_x = (np.round(np.arange(-48, 0) * dt, 4).tolist(), np.round(np.arange(-1, 16) * dt, 4).tolist())
        self._x_range.start, self._x_range.end = -48.5 * dt, 17.5 * dt
        self._horizon_box.right = 15 * dt
        if units:
            block = act[:, units]
            lo, hi = (float(v) for v in np.nanpercentile(block, [0.1, 99.9]))
            spread = float(np.nanpercentile(block, 99.5) - np.nanpercentile(block, 0.5)) or 1.0
        else:
            lo, hi, spread = -0.5, 0.5, 1.0
        self._step = 0.75 * spread
        offsets = [-k * self._step for k in range(len(units))]
        self._offsets = np.asarray(offsets, dtype=np.float32)
        fig = self._traces_fig
        fig.yaxis.ticker = FixedTicker(ticks=offsets)
        fig.yaxis.major_label_overrides = {o: str(rec.prep.names[u]) for o, u in zip(offsets, units)}
        pad = 0.05 * spread
        self._y_range.start = (offsets[-1] if offsets else 0) + lo - pad
        self._y_range.end = hi + pad
        fig.title.text = (
            f"{rec.name}: {len(units)} unit(s), z-scored; solid = last 48 frames, dashed = next 16 recorded, colours = forecasts"
            if units
            else "select units to show traces"
        )

    def _request_frame(self) -> None:
        """Draw the current frame on the session's event loop (coalescing requests)."""
        if self._frame_pending:
            return
        self._frame_pending = True
        self._on_loop(self._frame_tick)

    def _frame_tick(self) -> None:
        self._frame_pending = False
        doc = self._doc
        if doc is not None:
            doc.hold("combine")  # one websocket message per frame
        try:
            self._draw_frame()
        finally:
            if doc is not None:
                doc.unhold()

    @param.depends("cursor", watch=True)
    def _on_cursor(self) -> None:
        self._request_frame()

    def _draw_frame(self) -> None:
        rec = self._recording
        if rec is None:
            return
        t = int(np.clip(self.cursor, 48, max(48, rec.T - 16)))
        C, P = 48, 16
        units = [u for u in self._units if u < rec.U]
        off = self._offsets[: len(units)] if len(units) else np.zeros(0, np.float32)
        act = rec.activity
        # plain lists, rounded: sent inline as JSON (numpy arrays would each travel as a separate
        # websocket buffer)
        n = len(units)
        cols = np.asarray(units, dtype=np.int64)
        past_x, fut_x = self._rel_x
        rows: dict[str, list] = {"xs": [], "ys": [], "layer": [], "color": [], "dash": [], "width": []}

        def add(layer: str, xs: list, block: np.ndarray, color: str, dash: str, width: float) -> None:
            rows["xs"] += [xs] * n
            rows["ys"] += np.round(block + off, 4).T.tolist()
            rows["layer"] += [layer] * n
            rows["color"] += [color] * n
            rows["dash"] += [dash] * n
            rows["width"] += [width] * n

        if n:
            add("context", past_x, act[t - C : t, cols], "#222222", "solid", 1.6)
            add("horizon", fut_x, act[t - 1 : t + P, cols], "#555555", "dashed", 1.4)
            last = act[t - 1, cols][None, :]
            for i, run in enumerate(self._runs[:MAX_MODELS]):
                fc = run.forecast
                if fc is not None and fc.done[t]:
                    add(f"model-{i}", fut_x, np.vstack([last, fc.forecast[t][:, cols].astype(np.float32)]), run.color, "solid", 2.4)
        self._frame_src.data = rows
        self.frames_drawn += 1

    def _update_clock(self) -> None:
        """The cursor readout, its mark on the raster and the link's ``t``: a few times per second,
        not every frame (the mark moves less than a pixel per frame on a long recording, and each
        update is one more message and a repaint of the raster)."""
        rec = self._recording
        if rec is None:
            return
        self._place_marks()
        t = int(np.clip(self.cursor, 48, max(48, rec.T - 16)))
        self._clock.object = f"frame <b>{t}</b> / {rec.T - 1} · t = {rec.prep.time[t]:.2f} s · {self._split_of(rec, t)}"
        loc = self._location
        if loc is not None and loc.query_params.get("t") != str(self.cursor):
            loc.update_query(t=str(self.cursor))

    def _place_marks(self) -> None:
        rec = self._recording
        if rec is None:
            return
        t = int(np.clip(self.cursor, 48, max(48, rec.T - 16)))
        time_s = rec.prep.time
        for box in self._raster_marks.values():
            box.left = float(time_s[t])
            box.right = float(time_s[min(rec.T - 1, t + 15)])

    @staticmethod
    def _split_of(rec: Recording, t: int) -> str:
        from pocoviz.recordings.preprocess import split_indices

        for name, ranges in split_indices(rec.T).items():
            if any(lo <= t < hi for lo, hi in ranges):
                return f"{name} split"
        return ""

    def _refresh_legend(self) -> None:
        for i, item in enumerate(self._model_items):
            run = self._runs[i] if i < len(self._runs) else None
            item.visible = run is not None
            if run is not None:
                item.label = bk_value(run.label + (" (adapted)" if run.adapted else ""))
                self._model_renderers[i].glyph.line_color = run.color

    # ================================================================= poll: progress and metrics
    def _poll(self) -> None:
        """Periodic: progress, statuses and metrics (run on the event loop, coalesced)."""
        if self._poll_pending:
            return
        self._poll_pending = True
        self._on_loop(self._poll_now)

    def _poll_now(self) -> None:
        self._poll_pending = False
        state = (self.cursor, self._recording.key if self._recording is not None else None)
        if state != self._clock_state:
            self._clock_state = state
            self._update_clock()
        changed = False
        for run in self._runs:
            v = run.version
            if self._seen_versions.get(run.key) != v:
                self._seen_versions[run.key] = v
                changed = True
        if changed:
            self._refresh_legend()
            self._refresh_status()
            self._refresh_curve()
            self._request_frame()
        # metrics only when what they cover changed: new forecasts, the cursor, the split
        key = (self.cursor, self.metrics_over, self.step_metric, tuple(self._seen_versions.items()))
        now = time.monotonic()
        if key != self._metrics_key and (changed or now - self._last_metrics > METRICS_EVERY_S):
            self._last_metrics, self._metrics_key = now, key
            self._refresh_metrics()

    def _refresh_status(self) -> None:
        rows = []
        for run in self._runs:
            fc = run.forecast
            if run.state == "computing" and fc is not None:
                pct = 100 * fc.fraction_done
                state = f"<progress max='100' value='{pct:.0f}'></progress> computing {pct:.0f}%"
            elif run.state == "adapting":
                state = f"<progress max='{self.adapt_steps}' value='{run.adapt_step}'></progress> adapting, step {run.adapt_step}/{self.adapt_steps}"
            else:
                state = html.escape(run.state.replace("-", " "))
            rows.append(f"<div><span style='color:{run.color}'>■</span> <b>{html.escape(run.label)}</b>: {state}"
                        + (f"<br><small>{html.escape(run.message)}</small>" if run.message else "") + "</div>")  # fmt: skip
        self._status_pane.object = "".join(rows)
        needs = any(r.state == "needs-adaptation" for r in self._runs)
        self._adapt_button.visible = needs
        errors = [r.message for r in self._runs if r.state == "error"]
        if errors:
            self._show_error(" ".join(errors))

    def _refresh_curve(self) -> None:
        runs = [r for r in self._runs if r.curve]
        self._curve_pane.visible = self._curve_fig.visible = bool(runs)
        if runs:
            self._curve_src.data = {
                "xs": [[h["step"] for h in r.curve] for r in runs],
                "ys": [[h["val_score"] for h in r.curve] for r in runs],
                "color": [r.color for r in runs],
                "model": [r.label for r in runs],
            }

    @param.depends("step_metric", watch=True)
    def _on_step_metric(self) -> None:
        self._on_loop(self._refresh_metrics)

    def _refresh_metrics(self) -> None:
        rec = self._recording
        if rec is None:
            return
        t = int(self.cursor)
        split = None if self.metrics_over == "all" else self.metrics_over
        rows, xs, ys, colors, names = [], [], [], [], []
        region_scores: dict[str, list[str]] = {}
        ready = [r for r in self._runs if r.forecast is not None]
        copy_per_step = None
        which = self.step_metric.lower()  # "mse" | "mae"
        for run in ready:
            m = run.forecast.metrics(upto=t, split=split)
            if copy_per_step is None and m["n_windows"]:
                copy_per_step = m[f"per_step_copy_{which}"]  # copy-last, over the first model's windows
            rows.append([f"<span style='color:{run.color}'>■</span> {html.escape(run.label)}", _fmt(m["score"]), _fmt(m["mse"]),
                         _fmt(m["mae"]), str(m["n_windows"]), f"{100 * run.forecast.fraction_done:.0f}%"])  # fmt: skip
            if m["n_windows"]:
                xs.append(list(range(1, len(m[f"per_step_{which}"]) + 1)))
                ys.append([float(v) for v in m[f"per_step_{which}"]])
                colors.append(run.color)
                names.append(run.label)
            for reg, s in (m.get("region_scores") or {}).items():
                region_scores.setdefault(reg, []).append(_fmt(s))
        if copy_per_step is not None:
            xs.append(list(range(1, len(copy_per_step) + 1)))
            ys.append([float(v) for v in copy_per_step])
            colors.append("#999999")
            names.append("copy-last")
        what = "test-split windows" if split == "test" else "windows"
        header = ["model", "score", "MSE", "MAE", what, "computed"]
        self._metrics_pane.object = (
            f"<b>Running metrics</b> over the {what} whose horizon has played (frame ≤ {t}); "
            "score = 1 − MSE / MSE(copy last frame); MAE = mean |forecast − recorded|" + _html_table(header, rows, "pocoviz-table")
            if rows
            else "<i>no forecasts yet</i>"
        )
        self._step_fig.title.text = f"{self.step_metric} per step ahead"
        self._step_fig.yaxis.axis_label = STEP_METRICS[self.step_metric]
        self._step_src.data = {"xs": xs, "ys": ys, "color": colors, "model": names}
        if region_scores and ready:
            head = ["region"] + [html.escape(r.label) for r in ready]
            body = [[html.escape(reg), *vals] for reg, vals in sorted(region_scores.items())]
            self._regions_pane.object = "<b>Score per region</b>" + _html_table(head, body, "pocoviz-table")
        else:
            self._regions_pane.object = ""

    # ================================================================= errors and export
    def _show_error(self, message: str) -> None:
        self._alert.object = html.escape(message)
        self._alert.visible = True
        self.status = message

    def _clear_error(self) -> None:
        self._alert.visible = False
        self.status = ""

    def forecasts_dataset(self) -> xr.Dataset:
        """Every chosen model's computed forecasts for this recording, one variable per model."""
        rec = self._recording
        if rec is None:
            raise ValueError("no recording loaded")
        out = None
        for run in self._runs:
            if run.forecast is None:
                continue
            ds = run.forecast.to_dataset()
            var = "forecast_" + "".join(c if c.isalnum() else "_" for c in run.label)
            ds = ds.rename({"forecast": var})
            ds[var].attrs.update(model=run.label, adapted=int(run.adapted))
            out = ds if out is None else xr.merge([out, ds[[var]]], join="outer", compat="override", combine_attrs="drop_conflicts")
        if out is None:
            raise ValueError("no forecasts computed yet")
        out.attrs.update(recording=rec.name, source=str(rec.source), created_by="pocoviz Forecast tab")
        return out

    def _export_netcdf(self) -> io.BytesIO:
        import os
        import tempfile

        try:
            ds = self.forecasts_dataset()
        except ValueError as exc:
            self._show_error(f"Nothing to export: {exc}")
            return io.BytesIO(b"")
        fd, tmp = tempfile.mkstemp(suffix=".nc")
        os.close(fd)
        try:
            ds.to_netcdf(tmp)
            with open(tmp, "rb") as f:
                return io.BytesIO(f.read())
        finally:
            os.unlink(tmp)

    # ================================================================= layout
    def _build_widgets(self) -> None:
        # Playback is driven by a server-side clock (not a browser timer): the browser sends nothing
        # per frame, so a slow client drops frames instead of slowing the recording down.
        self._player = pn.widgets.IntSlider.from_param(
            self.param.cursor, start=48, end=1000, width=270, css_classes=["pocoviz-scrub"], label="Cursor (frame)"
        )
        self._play_button = pn.widgets.Toggle(label="▶ Play", width=90, css_classes=["pocoviz-play"])
        self._play_button.param.watch(lambda e: self._set_playing(e.new), "value")
        self._back_button = pn.widgets.Button(label="◀ 1", width=60, css_classes=["pocoviz-step-back"])
        self._back_button.on_click(lambda e: self.step(-1))
        self._fwd_button = pn.widgets.Button(label="1 ▶", width=60, css_classes=["pocoviz-step-forward"])
        self._fwd_button.on_click(lambda e: self.step(1))
        self.param.watch(self._on_fps, "fps")
        self._adapt_button = pn.widgets.Button(label="Adapt to this recording", color="warning", visible=False,
                                               width=250, css_classes=["pocoviz-adapt"])  # fmt: skip
        self._adapt_button.on_click(self.adapt)
        self._png_button = pn.widgets.Button(label="Save figure (PNG)", width=170, css_classes=["pocoviz-png"])
        self._png_button.js_on_click(args={"tool": self._save_tool}, code="tool.do.emit(undefined)")
        self._nc_download = pn.widgets.FileDownload(callback=self._export_netcdf, filename="pocoviz_forecasts.nc", embed=False,
                                                    label="Forecasts (netCDF)", width=170, css_classes=["pocoviz-netcdf"])  # fmt: skip

    # ================================================================= playback
    def step(self, frames: int = 1) -> None:
        """Move the cursor by ``frames``, wrapping around the playable range."""
        lo, hi = self.param.cursor.bounds
        if hi is None or hi <= lo:
            return
        self.cursor = lo + (self.cursor + frames - lo) % (hi - lo + 1)

    def _set_playing(self, playing: bool) -> None:
        self._play_button.label = "⏸ Pause" if playing else "▶ Play"
        if self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        if playing:
            self._play_cb = pn.state.add_periodic_callback(lambda: self.step(1), period=int(round(1000 / self.fps)))

    def _on_fps(self, event: Any) -> None:
        if self._play_cb is not None:
            self._play_cb.period = int(round(1000 / event.new))

    def _on_served(self, doc: Any) -> None:
        self._periodic = pn.state.add_periodic_callback(self._poll, period=POLL_MS)
        if self._sync_url:
            pn.state.onload(self._start_url_sync)
        super()._on_served(doc)

    def _build_layout(self) -> pn.viewable.Viewable:
        models = pn.widgets.MultiChoice.from_param(
            self.param.models, label="Models (up to 4)", options=self._model_choices, max_items=MAX_MODELS, width=250,
            css_classes=["pocoviz-f-models"],
        )  # fmt: skip
        controls = pn.Column(
            self._widget("source", pn.widgets.Select, "Recording (corpus / file)"),
            self._widget("session", pn.widgets.Select, "Session"),
            models,
            self._adapt_button,
            pn.pane.Markdown("**Playback**", margin=(10, 10, 0, 10)),
            self._player,
            pn.Row(self._back_button, self._play_button, self._fwd_button, margin=(0, 5)),
            self._widget("fps", pn.widgets.IntSlider, "Speed (frames/s)"),
            self._clock,
            pn.pane.Markdown("**Traces by**", margin=(10, 10, 0, 10)),
            self._widget("select_by", pn.widgets.RadioButtonGroup, "Traces by", width=270),
            self._widget("region", pn.widgets.Select, "Region"),
            self._widget("labels", pn.widgets.MultiChoice, "Neuron labels"),
            self._widget("unit_ids", pn.widgets.TextInput, "Unit ids (or click the raster)"),
            self._widget("n_traces", pn.widgets.IntSlider, "Traces"),
            self._selection_info,
            self._widget("metrics_over", pn.widgets.Select, "Metrics over"),
            pn.Column(self._png_button, self._nc_download, margin=(10, 0)),  # side by side they overflowed the 300 px column
            width=300,
        )
        metrics = pn.Column(self._metrics_pane, self._status_pane, self._regions_pane, sizing_mode="stretch_width")
        # the MSE / MAE switch sits over the top right corner of the plot it drives
        step_metric = self._widget("step_metric", pn.widgets.RadioButtonGroup, "Error per step ahead", width=110, align="end",
                                   button_type="primary", button_style="outline", description=None, margin=(5, 10, 0, 10))  # fmt: skip
        plots = pn.Column(
            self._alert,
            self._traces_pane,
            self._raster_pane,
            pn.Row(metrics, pn.Column(step_metric, self._step_pane, self._curve_pane), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-forecast"])


#: view parameter -> URL query name (a link reproduces recording, models, units and cursor)
URL_PARAMS = {
    "source": "recording",
    "session": "session",
    "models": "models",
    "select_by": "units_by",
    "region": "region",
    "labels": "labels",
    "unit_ids": "units",
    "n_traces": "traces",
    "fps": "speed",
    "cursor": "t",
}

"""Embeddings tab: a 2-D layout (UMAP, torch UMAP or PCA) of a POCO checkpoint's unit embeddings, coloured by
region, session, species or neuron label; a box/lasso selection shows those units on the position
map and their traces, and a selection on the map marks them in the layout. "Is it real?": the
region distance matrix (spec ``poco.md`` §6) and the region silhouette against shuffled labels.

UMAP layouts come from the shipped layouts in ``assets/layouts`` or the user's disk cache; a missing
one is computed in a background thread while the PCA layout is shown. The torch UMAP
(:mod:`pocoviz.embeddings.torch_umap`) runs on the backend's device: where there is a GPU it is
computed for every choice of sessions at once (well under a second); on a CPU only when chosen,
with a progress bar. Worker threads only compute; plots are fed on the session's event loop by a
periodic poll.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)
import numpy as np
import panel as pn
import param
import xarray as xr

from pocoviz.assets import assets_dir

from .base import TabView
from pocoviz.controllers.models import LOADED_MODELS, list_models
from pocoviz.controllers.sources import SOURCE_CACHE
from .theme import REGION_PALETTE, UNKNOWN_COLOR, region_colors

hv.Store.set_current_backend("bokeh")

EMBEDDING_KINDS = ("POCO", "POYO", "UICO")
ALL = "(all sessions)"
MAX_TRACES = 8
#: above this many units the layout is drawn by Datashader (select units on the map then)
DATASHADE_ABOVE = 20_000
N_SHUFFLES = 200
SIZE = 430


def _on_gpu() -> bool:
    from pocoviz.backend import get_device

    try:
        return get_device().type == "cuda"
    except Exception:
        return False


def reducer_options() -> dict[str, str]:
    """``{label: reducer}``; the torch UMAP's label says where it runs."""
    return {"UMAP": "umap", f"torch UMAP ({'GPU' if _on_gpu() else 'CPU'})": "umap-torch", "PCA": "pca"}


def shipped_layouts_dir() -> Path:
    return assets_dir() / "layouts"


def embedding_models(data_dir: str | None) -> dict[str, str]:
    """The checkpoints with unit embeddings (``{display: key}``), read from their cards only."""
    from pocoviz.forecast.checkpoint import model_card

    from pocoviz.controllers.models import model_path

    out = {}
    for label, key in list_models(data_dir).items():
        try:
            card = model_card(model_path(key, data_dir))
        except Exception:  # unreadable cards are reported by the Forecast tab when chosen
            continue
        if card.get("kind") in EMBEDDING_KINDS:
            out[label] = key
    return out


def label_names(emb: xr.Dataset, rows: Any = slice(None)) -> np.ndarray:
    """Per unit (of ``rows``) of a unit-embedding table, its label as hovers and traces show it:
    ``"AVAL"``, ``""`` when unidentified, and ``"URADL (dup #3)"`` (``#`` the unit's index in its
    session) when another unit of its session carries the same label. Colouring by label still
    uses the plain label, so both URADL units get URADL's colour."""
    labels = emb["label"].values[rows].astype(str)
    if "label_duplicate" not in emb.coords:
        return labels
    dup = emb["label_duplicate"].values[rows].astype(bool)
    if not dup.any():
        return labels
    idx = emb["unit_index"].values[rows]
    return np.array([f"{lab} (dup #{int(i)})" if d else lab for lab, d, i in zip(labels, dup, idx)], dtype=str)


def duplicate_summary(emb: xr.Dataset, rows: list[int]) -> str:
    """``"URADL in worm/x (units 3, 9)"`` for the duplicated labels among ``rows`` ("" when none)."""
    if "label_duplicate" not in emb.coords or not rows:
        return ""
    dup = emb["label_duplicate"].values.astype(bool)
    labels, sessions, idx = emb["label"].values.astype(str), emb["session"].values.astype(str), emb["unit_index"].values
    keys = list(dict.fromkeys((sessions[r], labels[r]) for r in rows if dup[r]))
    parts = []
    for sess, lab in keys:
        units = idx[(sessions == sess) & (labels == lab)]
        parts.append(f"{lab} in {sess} (units {', '.join(str(int(u)) for u in units)})")
    return "; ".join(parts)


def _palette(values: np.ndarray) -> dict[str, str]:
    names = sorted({str(v) for v in values} - {""})
    colors = {v: REGION_PALETTE[i % len(REGION_PALETTE)] for i, v in enumerate(names)}
    colors[""] = UNKNOWN_COLOR
    return colors


class EmbeddingsView(TabView):
    """The Embeddings tab (see module docstring)."""

    css_prefix = "pocoviz-e"

    model = param.Selector(default=None, objects=[], doc="POCO checkpoint")
    session = param.Selector(default=ALL, objects=[ALL], doc="One session, or all together")
    reducer = param.Selector(default="umap", objects={"UMAP": "umap", "torch UMAP": "umap-torch", "PCA": "pca"})
    color_by = param.Selector(default="region", objects=["region", "session", "dataset", "label", "score"])
    status = param.String(default="")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self.param.reducer.objects = reducer_options()
        self.data_dir = data_dir
        self._torch_started = False
        self._choices = embedding_models(data_dir)
        self.param.model.objects = list(self._choices.values())
        self._emb: xr.Dataset | None = None
        self._scores = np.zeros(0)
        self._scores_started = False
        self._xy: dict[str, np.ndarray] = {}
        self._selected: list[int] = []
        self._recordings: dict[str, xr.Dataset] = {}
        self._pending: dict[str, Any] = {}  # worker results waiting for the event loop
        self._lock = threading.Lock()
        # one view state at a time: a session switch and a poll that draws must not interleave
        # (the poll runs on worker threads when not served, and watchers run in Panel's pool)
        self._state_lock = threading.RLock()
        self._generation = 0
        self._threads: list[threading.Thread] = []
        doc = pn.state.curdoc
        self._served = bool(doc is not None and doc.session_context is not None)
        self._periodic = None
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self._info = pn.pane.HTML("", css_classes=["pocoviz-emb-info"], sizing_mode="stretch_width")
        self._separation = pn.pane.HTML("", css_classes=["pocoviz-separation"], sizing_mode="stretch_width")
        self._selection_info = pn.pane.Markdown("", css_classes=["pocoviz-emb-selection"])
        self._progress = pn.indicators.Progress(active=False, value=-1, width=200, visible=False)
        self._torch_progress = pn.indicators.Progress(value=0, max=100, width=200, visible=False, css_classes=["pocoviz-e-torch-progress"])
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-e-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._sessions_pane = pn.pane.HoloViews(None, width=380, height=300, css_classes=["pocoviz-emb-sessions"], linked_axes=False)
        self._build_plots()
        if self.param.model.objects:
            self.model = "poco_demo" if "poco_demo" in self.param.model.objects else self.param.model.objects[0]
            self._on_model()
        else:
            self._show_error("No checkpoint with unit embeddings (POCO) was found.")

    # ------------------------------------------------------------------ data
    @param.depends("model", watch=True)
    def _on_model(self) -> None:
        try:
            model = LOADED_MODELS.get(self.model, self.data_dir)
        except Exception as exc:
            self._show_error(f"Cannot load {self.model}: {exc}")
            return
        self._model = model
        try:
            self._recordings = {k: v for k, v in SOURCE_CACHE.load("demo", None).items() if k in {s.name for s in model.sessions}}
        except Exception:
            self._recordings = {}
        names = [s.name for s in model.sessions]
        self._sessions_pane.object = self._session_plot(model)
        self.param.session.objects = [ALL, *names]
        if self.session not in self.param.session.objects:
            self.session = ALL
        else:
            self._on_session()

    @param.depends("session", watch=True)
    def _on_session(self) -> None:
        with self._state_lock:
            self._switch_session()

    def _switch_session(self) -> None:
        from pocoviz.embeddings import unit_embeddings

        model = getattr(self, "_model", None)
        if model is None:
            return
        sessions = None if self.session == ALL else [self.session]
        try:
            emb = unit_embeddings(model, sessions, recordings=self._recordings)
        except Exception as exc:
            self._show_error(f"Cannot read the unit embeddings: {exc}")
            return
        self._clear_error()
        self._emb = emb
        self._selected = []
        self._generation += 1
        gen = self._generation
        self._xy = {}
        self._scores = np.full(emb.sizes["unit"], np.nan)
        self._start(self._pca_job, gen)
        self._start(self._umap_job, gen)
        self._start(self._separation_job, gen)
        self._torch_started = False
        self._torch_progress.visible = False
        if _on_gpu() or self.reducer == "umap-torch":
            self._start_torch()
        self._scores_started = False
        if self.color_by == "score":
            self._start_scores()
        self._info.object = (
            f"<b>{emb.sizes['unit']}</b> unit embeddings ({emb.sizes['dim']}-d) of {html.escape(str(self.model))}, "
            f"{'all sessions' if sessions is None else html.escape(self.session)}; "
            f"{int((emb['region'].values != '').sum())} with a region"
        )
        self._send_all()

    def _start(self, fn, gen: int) -> None:
        # not daemons: each job is bounded (seconds), and a daemon thread killed inside a torch or
        # numba call at interpreter exit aborts the process
        t = threading.Thread(target=fn, args=(gen,), daemon=False, name=f"pocoviz-emb-{fn.__name__}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def close(self, timeout: float = 120.0) -> None:
        """Wait for the background jobs (layouts, separation) and stop the poll."""
        self._generation += 1  # results still on their way are dropped
        if self._periodic is not None:
            self._periodic.stop()
        for t in self._threads:
            t.join(timeout)

    def _put(self, gen: int, key: str, value: Any, **more: Any) -> None:
        """Hand results to the event loop (``more``: further keys, delivered in the same poll)."""
        with self._lock:
            if gen == self._generation:
                self._pending[key] = value
                self._pending.update(more)
        if not self._served:  # tests, notebooks: apply at once (served: the periodic poll does, on the loop)
            self._poll()

    def _pca_job(self, gen: int) -> None:
        from pocoviz.embeddings import compute_layout

        emb = self._emb
        self._put(gen, "pca", compute_layout(emb["embedding"].values, "pca", use_cache=False))

    def _umap_job(self, gen: int) -> None:
        from pocoviz.embeddings import cached_layout, compute_layout

        x = self._emb["embedding"].values
        found = cached_layout(x, "umap", cache_dir=shipped_layouts_dir())
        if found is None:
            found = cached_layout(x, "umap")
        if found is None:
            self._put(gen, "umap-started", True)
            try:
                found = compute_layout(x, "umap")
            except Exception as exc:
                self._put(gen, "error", f"UMAP failed: {exc}")
                return
        self._put(gen, "umap", found)

    @param.depends("reducer", watch=True)
    def _start_torch(self) -> None:
        """The torch UMAP: computed at once on a GPU, on a CPU when first asked for."""
        if self._emb is not None and not self._torch_started and (self.reducer == "umap-torch" or _on_gpu()):
            self._torch_started = True
            self._start(self._torch_job, self._generation)

    def _torch_job(self, gen: int) -> None:
        from pocoviz.backend import get_device
        from pocoviz.embeddings import cached_layout, compute_layout

        x = self._emb["embedding"].values
        found, note = cached_layout(x, "umap-torch"), "torch UMAP read from the layout cache"
        if found is None:
            device = get_device()
            self._put(gen, "torch-progress", 0.0)
            t0 = time.perf_counter()
            try:
                found = compute_layout(x, "umap-torch", device=device, progress=lambda f: self._put(gen, "torch-progress", f))
            except Exception as exc:
                self._put(gen, "error", f"torch UMAP failed: {exc}")
                return
            note = f"torch UMAP of {len(x)} units: {time.perf_counter() - t0:.1f} s on {device}"
        self._put(gen, "umap-torch", found, **{"torch-note": note})

    def _separation_job(self, gen: int) -> None:
        from pocoviz.embeddings import region_distance_matrix, region_separation

        emb = self._emb
        regions = emb["region"].values
        keep = regions != ""
        if len(set(regions[keep])) < 2:
            self._put(gen, "separation", None)
            return
        x = emb["embedding"].values[keep]
        sessions = emb["session"].values[keep]
        # several sessions: regions are compared within each session (spec §6), scores averaged
        groups = sessions if len(set(sessions)) > 1 else None
        try:
            sep = region_separation(x, regions[keep], groups=groups, n_shuffles=N_SHUFFLES, seed=0)
        except ValueError:
            self._put(gen, "separation", None)
            return
        sep["matrix"] = region_distance_matrix(x, regions[keep], groups=groups)
        self._put(gen, "separation", sep)

    @param.depends("color_by", watch=True)
    def _start_scores(self) -> None:
        """Per-unit scores cost a test-split pass of the model: computed when first asked for."""
        if self.color_by == "score" and self._emb is not None and not self._scores_started:
            self._scores_started = True
            self._start(self._score_job, self._generation)

    def _score_job(self, gen: int) -> None:
        """Per-unit forecast score (1 − MSE/MSE copy-last) on the test split, every 4th window."""
        from pocoviz.forecast import ForecastCorpus, evaluate

        emb = self._emb
        names = [n for n in dict.fromkeys(emb["session"].values.tolist()) if n in self._recordings]
        if not names:
            return
        try:
            corpus = ForecastCorpus({n: self._recordings[n] for n in names}, strides={"train": 1, "val": 4, "test": 4})
            rep = evaluate(self._model, corpus, "test", device="cpu")
        except Exception as exc:
            self._put(gen, "error", f"per-unit scores failed: {exc}")
            return
        scores = np.full(emb.sizes["unit"], np.nan)
        sess, idx = emb["session"].values, emb["unit_index"].values
        for name in names:
            rows = np.flatnonzero(sess == name)
            scores[rows] = np.asarray(rep.session(name).per_unit_score)[idx[rows]]
        self._put(gen, "scores", scores)

    def _poll(self) -> None:
        with self._state_lock:
            self._apply_pending()

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        if "error" in pending:
            self._show_error(pending["error"])
        for key in ("pca", "umap", "umap-torch"):
            if key in pending:
                self._xy[key] = pending[key]
        if pending.get("umap-started") and "umap" not in self._xy:
            self._progress.visible = True
            self._progress.active = True
            self.status = "computing the UMAP layout (shown: PCA) …"
        if "umap" in pending:
            self._progress.visible = False
            self._progress.active = False
            self.status = ""
        if "torch-progress" in pending and "umap-torch" not in self._xy:
            self._torch_progress.visible = True
            self._torch_progress.value = int(round(100 * pending["torch-progress"]))
            self.status = f"computing the torch UMAP layout: {self._torch_progress.value}%"
        if "umap-torch" in pending:
            self._torch_progress.visible = False
            self.status = pending.get("torch-note", "")
        if any(k in pending for k in ("pca", "umap", "umap-torch")):
            self._send_scatter()
        if "separation" in pending:
            self._send_separation(pending["separation"])
        if "scores" in pending:
            self._scores = pending["scores"]
            if self.color_by == "score":
                self._send_scatter()

    # ------------------------------------------------------------------ selection
    def _colors(self) -> tuple[np.ndarray, dict[str, str]]:
        emb = self._emb
        if self.color_by == "score":
            from bokeh.palettes import Viridis256

            s = self._scores
            ok = np.isfinite(s)
            lo, hi = (np.percentile(s[ok], [2, 98]) if ok.any() else (0.0, 1.0))
            idx = np.clip(((s - lo) / max(hi - lo, 1e-9) * 255).round(), 0, 255)
            values = np.array([f"{v:.3f}" if np.isfinite(v) else "" for v in s])
            colors = {v: Viridis256[int(i)] for v, i in zip(values, np.where(ok, idx, 0)) if v}
            colors[""] = UNKNOWN_COLOR
            return values, colors
        values = emb[self.color_by].values.astype(str) if self.color_by in emb.coords else np.full(emb.sizes["unit"], "")
        colors = region_colors(values) if self.color_by == "region" else _palette(values)
        return values, colors

    def select(self, units: list[int]) -> None:
        """Select units (rows of the table): marks them on both plots and shows their traces."""
        n = 0 if self._emb is None else self._emb.sizes["unit"]
        self._selected = [int(u) for u in units if 0 <= int(u) < n]
        self._send_selection()

    def _on_scatter_select(self, index: list[int]) -> None:
        if index is not None:
            with self._state_lock:
                self.select(list(index))

    def _on_map_select(self, index: list[int]) -> None:
        with self._state_lock:
            if index is None or self._emb is None:
                return
            rows = self._map_rows
            self.select([int(rows[i]) for i in index if i < len(rows)])

    # ------------------------------------------------------------------ plots
    def _build_plots(self) -> None:
        self._scatter_pipe = hv.streams.Pipe(data=None)
        self._marks_pipe = hv.streams.Pipe(data=None)
        self._map_marks_pipe = hv.streams.Pipe(data=None)
        self._map_pipe = hv.streams.Pipe(data=None)
        self._traces_pipe = hv.streams.Pipe(data=None)
        self._heat_data: xr.DataArray | None = None
        self._map_rows = np.zeros(0, np.int64)
        vdims = ["color", "group", "region", "session", "label", "unit", "score"]
        scatter = hv.DynamicMap(
            lambda data: hv.Points(data if data is not None else {k: [] for k in ["emb_x", "emb_y", *vdims]}, ["emb_x", "emb_y"], vdims),
            streams=[self._scatter_pipe],
        ).opts(
            color="color", size=5, line_alpha=0, tools=["box_select", "lasso_select", "hover", "tap"], active_tools=["box_select"],
            nonselection_alpha=0.25, width=SIZE, height=SIZE, framewise=True, xaxis=None, yaxis=None, title="unit embeddings",
        )  # fmt: skip
        self._scatter_sel = hv.streams.Selection1D(source=scatter)
        self._scatter_sel.add_subscriber(self._on_scatter_select)
        marks = hv.DynamicMap(
            lambda data: hv.Points(data if data is not None else {"emb_x": [], "emb_y": []}, ["emb_x", "emb_y"]), streams=[self._marks_pipe]
        ).opts(marker="circle", size=11, fill_alpha=0, line_color="black", line_width=1.5)
        self._scatter_glyphs = scatter * marks
        self._scatter_pane = pn.pane.HoloViews(self._scatter_glyphs, css_classes=["pocoviz-emb-scatter"], linked_axes=False)

        mdims = ["color", "region", "label", "unit"]
        map_points = hv.DynamicMap(
            lambda data: hv.Points(data if data is not None else {k: [] for k in ["pos_x", "pos_y", *mdims]}, ["pos_x", "pos_y"], mdims),
            streams=[self._map_pipe],
        ).opts(
            color="color", size=5, line_alpha=0, tools=["box_select", "lasso_select", "hover"], active_tools=["box_select"],
            nonselection_alpha=0.25, width=SIZE, height=SIZE, framewise=True, title="positions (select here too)", xlabel="x (µm)", ylabel="y (µm)",
        )  # fmt: skip
        self._map_sel = hv.streams.Selection1D(source=map_points)
        self._map_sel.add_subscriber(self._on_map_select)
        map_marks = hv.DynamicMap(
            lambda data: hv.Points(data if data is not None else {"pos_x": [], "pos_y": []}, ["pos_x", "pos_y"]), streams=[self._map_marks_pipe]
        ).opts(marker="circle", size=11, fill_alpha=0, line_color="black", line_width=1.5)
        self._map_pane = pn.pane.HoloViews(map_points * map_marks, css_classes=["pocoviz-emb-map"], linked_axes=False)

        self._traces_pane = pn.pane.HoloViews(
            hv.DynamicMap(self._traces, streams=[self._traces_pipe]).opts(
                responsive=True, height=280, framewise=True, color=hv.dim("color"), line_width=1.1, tools=["hover"],
                title="traces of the selected units", yaxis=None, xlabel="time (s)",
            ),
            sizing_mode="stretch_width", height=290, css_classes=["pocoviz-emb-traces"], linked_axes=False,
        )  # fmt: skip
        self._heat_pane = pn.pane.HoloViews(
            self._heatmap(None), width=380, height=360, css_classes=["pocoviz-emb-heat"], linked_axes=False
        )
        self._null_pane = pn.pane.HoloViews(
            self._null(None), width=380, height=260, css_classes=["pocoviz-emb-null"], linked_axes=False
        )

    @staticmethod
    def _session_plot(model: Any) -> hv.Element:
        """Session vectors (session embedding + mean unit embedding, spec §6), PCA, by dataset."""
        from pocoviz.embeddings import pca_layout, session_embeddings

        se = session_embeddings(model)
        n = se.sizes["session"]
        xy = pca_layout(se["embedding"].values) if n >= 2 else np.zeros((n, 2))
        datasets = se["dataset"].values.astype(str)
        colors = _palette(datasets)
        pts = hv.Points(
            {"sess_x": xy[:, 0], "sess_y": xy[:, 1], "session": se["session"].values, "dataset": datasets,
             "color": [colors[d] for d in datasets], "units": se["n_units"].values},
            ["sess_x", "sess_y"], ["session", "dataset", "color", "units"],
        )  # fmt: skip
        labels = hv.Labels({"sess_x": xy[:, 0], "sess_y": xy[:, 1], "text": [str(v).split("/")[-1] for v in se["session"].values]},
                           ["sess_x", "sess_y"], "text")  # fmt: skip
        dx = 0.04 * (float(np.ptp(xy[:, 0])) or 1.0)
        labels = labels.opts(text_font_size="8pt", xoffset=dx, text_align="left", text_color="#333333")
        return (pts.opts(color="color", size=12, tools=["hover"]) * labels).opts(
            hv.opts.Overlay(width=380, height=300, title="sessions: session + mean unit embedding (PCA)", xaxis=None, yaxis=None, padding=0.25)
        )

    @staticmethod
    def _traces(data: list | None) -> hv.Contours:
        empty = [{"time": np.array([np.nan]), "offset": np.array([np.nan]), "unit": "", "color": "#ffffff"}]
        return hv.Contours(data or empty, kdims=["time", "offset"], vdims=["unit", "color"])

    @staticmethod
    def _heatmap(data: xr.DataArray | None) -> hv.HeatMap:
        if data is None:
            return hv.HeatMap([], ["region_to", "region"], "distance").opts(title="region distance matrix", width=380, height=360)
        rows = [(str(b), str(a), float(data.sel(region=a, region_to=b))) for a in data.region.values for b in data.region_to.values]
        return hv.HeatMap(rows, ["region_to", "region"], "distance").opts(
            cmap="viridis", colorbar=True, tools=["hover"], xrotation=45, width=380, height=360,
            title="region distances (row-normalised)", xlabel="", ylabel="",
        )  # fmt: skip

    @staticmethod
    def _null(data: dict | None) -> hv.Overlay:
        if data is None:
            return (hv.Histogram(([0.0, 1.0], [0.0])) * hv.VLine(0.0)).opts(hv.opts.Overlay(title="shuffled-label null", width=380, height=260))
        freq, edges = np.histogram(data["null"], bins=30)
        hist = hv.Histogram((edges, freq), kdims=["silhouette"], vdims=["shuffles"]).opts(color="#bbbbbb", line_alpha=0)
        obs = hv.VLine(data["score"]).opts(color="#D55E00", line_width=3)
        p95 = hv.VLine(data["null_p95"]).opts(color="black", line_dash="dashed", line_width=1.5)
        lo = min(edges[0], data["score"]) - 0.01
        hi = max(edges[-1], data["score"]) + 0.01
        return (hist * obs * p95).opts(
            hv.opts.Overlay(title=f"region silhouette vs {len(data['null'])} shuffles", width=380, height=260, xlim=(lo, hi))
        )

    def _send_all(self) -> None:
        self._send_scatter()
        self._send_map()
        self._send_selection()
        self._set_separation_plots(None)
        self._separation.object = "<i>computing the region silhouette against shuffled labels …</i>"

    def _current_xy(self) -> tuple[np.ndarray | None, str]:
        if self.reducer in self._xy:
            return self._xy[self.reducer], self.reducer
        if "pca" in self._xy:
            return self._xy["pca"], "pca"
        return None, ""

    @param.depends("reducer", "color_by", watch=True)
    def _send_scatter(self) -> None:
        with self._state_lock:
            self._draw_scatter()

    def _draw_scatter(self) -> None:
        emb = self._emb
        if emb is None:
            return
        xy, used = self._current_xy()
        if xy is None:
            self._scatter_pipe.send(None)
            return
        values, colors = self._colors()
        if len(values) > DATASHADE_ABOVE:
            # too many glyphs for the browser: Datashader draws them (select on the map instead)
            import datashader
            from holoviews.operation.datashader import datashade, dynspread

            pts = hv.Points({"emb_x": xy[:, 0], "emb_y": xy[:, 1], "group": values}, ["emb_x", "emb_y"], ["group"])
            shaded = dynspread(datashade(pts, aggregator=datashader.count_cat("group"), color_key=colors))
            self._scatter_pane.object = shaded.opts(
                width=SIZE, height=SIZE, xaxis=None, yaxis=None, title=f"unit embeddings ({len(values)} units, Datashader)"
            )
            self._send_map()
            self._send_selection()
            return
        if self._scatter_pane.object is not self._scatter_glyphs:
            self._scatter_pane.object = self._scatter_glyphs
        self._scatter_pipe.send({
            "emb_x": xy[:, 0], "emb_y": xy[:, 1], "color": np.array([colors.get(v, UNKNOWN_COLOR) for v in values]), "group": values,
            "region": emb["region"].values, "session": emb["session"].values, "label": label_names(emb),
            "unit": emb["unit_index"].values, "score": np.round(self._scores, 4),
        })  # fmt: skip
        self._send_map()
        self._send_selection()

    def _map_session(self) -> str | None:
        emb = self._emb
        if self.session != ALL:
            return self.session
        if self._selected:
            return str(emb["session"].values[self._selected[0]])
        return str(emb["session"].values[0]) if emb.sizes["unit"] else None

    def _send_map(self) -> None:
        emb = self._emb
        if emb is None or "x" not in emb.coords:
            self._map_pipe.send(None)
            self._map_rows = np.zeros(0, np.int64)
            return
        name = self._map_session()
        rows = np.flatnonzero((emb["session"].values == name) & np.isfinite(emb["x"].values))
        self._map_rows = rows
        values, colors = self._colors()
        self._map_pipe.send({
            "pos_x": emb["x"].values[rows], "pos_y": emb["y"].values[rows],
            "color": np.array([colors.get(v, UNKNOWN_COLOR) for v in values[rows]]),
            "region": emb["region"].values[rows], "label": label_names(emb, rows), "unit": emb["unit_index"].values[rows],
        })  # fmt: skip

    def _send_selection(self) -> None:
        emb = self._emb
        if emb is None:
            return
        sel = self._selected
        xy, _ = self._current_xy()
        marks: dict[str, Any] = {"emb_x": [], "emb_y": [], "pos_x": [], "pos_y": []}
        if sel and xy is not None:
            marks["emb_x"], marks["emb_y"] = xy[sel, 0], xy[sel, 1]
        if sel and "x" in emb.coords:
            marks["pos_x"], marks["pos_y"] = emb["x"].values[sel], emb["y"].values[sel]
        self._marks_pipe.send({"emb_x": marks["emb_x"], "emb_y": marks["emb_y"]})
        self._map_marks_pipe.send({"pos_x": marks["pos_x"], "pos_y": marks["pos_y"]})
        paths = []
        values, colors = self._colors()
        names = label_names(emb, sel[:MAX_TRACES])  # only the units whose traces are drawn
        for k, row in enumerate(sel[:MAX_TRACES]):
            rec = self._recordings.get(str(emb["session"].values[row]))
            if rec is None:
                continue
            act = np.asarray(rec["activity"].values[:, int(emb["unit_index"].values[row])], dtype=float)
            t = np.arange(len(act)) / float(rec.attrs.get("sampling_rate_hz", 1.0))
            name = str(names[k]) or f"#{int(emb['unit_index'].values[row])}"
            paths.append({"time": t, "offset": act - 4.0 * k, "unit": f"{emb['session'].values[row]} {name}", "color": colors.get(values[row], UNKNOWN_COLOR)})
        self._traces_pipe.send(paths)
        if sel:
            regions = emb["region"].values[sel]
            top = ", ".join(f"{r or '(none)'} {c}" for r, c in zip(*np.unique(regions, return_counts=True)))
            dups = duplicate_summary(emb, sel)
            self._selection_info.object = f"**{len(sel)} selected** ({top}); traces of the first {min(len(sel), MAX_TRACES)}" + (
                f"; ⚠ duplicated label: {dups}" if dups else ""
            )
        else:
            self._selection_info.object = "Select units with the box or lasso tool, in the layout or on the map."

    def _set_separation_plots(self, sep: dict | None) -> None:
        # rare updates whose axes change (categories, ranges): new elements rather than streams
        self._heat_data = None if sep is None else sep["matrix"]
        self._heat_pane.object = self._heatmap(self._heat_data)
        self._null_pane.object = self._null(None if sep is None else {"null": sep["null"], "score": sep["score"], "null_p95": sep["null_p95"]})

    def _send_separation(self, sep: dict | None) -> None:
        if sep is None:
            self._separation.object = "<i>fewer than two regions among these units: no separation test</i>"
            self._set_separation_plots(None)
            return
        self._set_separation_plots(sep)
        verdict = "above chance" if sep["score"] > sep["null_p95"] else "not above chance"
        self._separation.object = (
            f"<b>Is it real?</b> Region silhouette <b>{sep['score']:.4f}</b> against {len(sep['null'])} label shuffles: "
            f"null mean {sep['null_mean']:.4f}, 95th percentile {sep['null_p95']:.4f}, p = {sep['p_value']:.3f} "
            f"(z = {sep['z']:.1f}; {sep['n']} units, {len(sep['labels'])} regions"
            + (f"; within each of {len(sep['groups'])} sessions, averaged" if "groups" in sep else "")
            + f") — <b>{verdict}</b>."
        )
        self.separation = sep

    # ------------------------------------------------------------------ errors and layout
    def _show_error(self, message: str) -> None:
        self._alert.object = html.escape(message)
        self._alert.visible = True
        self.status = message

    @param.depends("status", watch=True)
    def _show_status(self) -> None:
        self._status_pane.object = html.escape(self.status)

    def _clear_error(self) -> None:
        self._alert.visible = False

    def _on_served(self, doc: Any) -> None:
        self._periodic = pn.state.add_periodic_callback(lambda: doc.add_next_tick_callback(self._poll), period=300)
        pn.state.on_session_destroyed(lambda ctx: self._periodic.stop())

    def _build_layout(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, label="Checkpoint", options=self._choices, width=250, css_classes=["pocoviz-e-model"]),
            self._widget("session", pn.widgets.Select, "Sessions"),
            self._widget("reducer", pn.widgets.RadioButtonGroup, "Layout"),
            self._widget("color_by", pn.widgets.Select, "Colour by"),
            self._progress,
            self._torch_progress,
            self._status_pane,
            self._selection_info,
            width=280,
        )
        plots = pn.Column(
            self._alert,
            self._info,
            pn.Row(self._scatter_pane, self._map_pane),
            self._traces_pane,
            self._separation,
            pn.Row(self._heat_pane, self._null_pane),
            self._sessions_pane,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-embeddings"])

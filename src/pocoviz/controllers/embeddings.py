"""The Embeddings tab's controller: which checkpoint and sessions, the 2-D layout (UMAP, torch UMAP
or PCA) of their unit embeddings, the colouring (region, session, dataset, label, per-unit forecast
score), the selected units, the position map's coordinate frame, and the "is it real?" region
separation against shuffled labels (spec ``poco.md`` §6).

Everything that costs more than a few milliseconds runs as a job of :attr:`Controller.jobs`, one
lane per kind of work (``pca``, ``umap``, ``umap-torch``, ``separation``, ``scores``), and reports
its progress through the job. A job computes for the *state* it was started with (one
:class:`_TableState` per checkpoint and choice of sessions) and writes its result there; a job
whose state is no longer shown writes into a state nobody reads, so no generation counters or locks
are needed. :meth:`EmbeddingsController.snapshot` is what the view draws; its ``revision`` says
which parts changed since the view drew them.

No panel, holoviews or bokeh here (``tests/test_layering.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import param
import xarray as xr

from pocoviz.assets import assets_dir
from pocoviz.recordings.rasterwindow import read_units

from .base import Controller
from .cache import LRUCache
from .models import LOADED_MODELS, list_models, model_path
from .sources import find_sessions
from .urlstate import UrlField, UrlValueError

#: checkpoint kinds with a unit-embedding table
EMBEDDING_KINDS = ("POCO", "POYO", "UICO")
ALL = "(all sessions)"
COLOR_BY = ("region", "session", "dataset", "label", "score")
REDUCERS = ("umap", "umap-torch", "pca")
#: traces drawn for the first units of a selection
MAX_TRACES = 8
#: label shuffles of the separation test
N_SHUFFLES = 200
#: a selection whose text is longer than this is kept out of links (the URL codec's limit is 2000)
MAX_SELECTION_CHARS = 1500
#: lanes of the background jobs, and what their progress line says
LANE_TITLES = {
    "pca": "PCA layout",
    "umap": "UMAP layout",
    "umap-torch": "torch UMAP layout",
    "separation": "region separation",
    "scores": "per-unit forecast scores",
}

#: region names drawn grey (as ``pocoviz.ui.theme.UNKNOWN_NAMES``)
UNKNOWN_REGION_NAMES = frozenset({"", "(no region)", "unknown"})

#: per-unit test scores of a (checkpoint, session), shared by every browser session
SCORE_CACHE: LRUCache[np.ndarray] = LRUCache(32, name="per-unit scores")


def on_gpu() -> bool:
    from pocoviz.backend import get_device

    try:
        return get_device().type == "cuda"
    except Exception:
        return False


def reducer_options() -> dict[str, str]:
    """``{label: reducer}``; the torch UMAP's label says where it runs."""
    return {"UMAP": "umap", f"torch UMAP ({'GPU' if on_gpu() else 'CPU'})": "umap-torch", "PCA": "pca"}


def shipped_layouts_dir() -> Path:
    return assets_dir() / "layouts"


def embedding_models(data_dir: str | os.PathLike | None) -> dict[str, str]:
    """The checkpoints with unit embeddings (``{display: key}``), read from their cards only."""
    from pocoviz.forecast.checkpoint import model_card

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


def duplicate_summary(emb: xr.Dataset, rows: Sequence[int]) -> str:
    """``"URADL in worm/x (units 3, 9)"`` for the duplicated labels among ``rows`` ("" when none)."""
    if "label_duplicate" not in emb.coords or not len(rows):
        return ""
    dup = emb["label_duplicate"].values.astype(bool)
    labels, sessions, idx = emb["label"].values.astype(str), emb["session"].values.astype(str), emb["unit_index"].values
    keys = list(dict.fromkeys((sessions[r], labels[r]) for r in rows if dup[r]))
    parts = []
    for sess, lab in keys:
        units = idx[(sessions == sess) & (labels == lab)]
        parts.append(f"{lab} in {sess} (units {', '.join(str(int(u)) for u in units)})")
    return "; ".join(parts)


def encode_rows(rows: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 17]`` → ``"0-3,17"`` (sorted, runs joined)."""
    out: list[str] = []
    vals = sorted(set(int(r) for r in rows))
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if j == i else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(out)


def parse_rows(text: str, n: int | None = None) -> list[int]:
    """The inverse of :func:`encode_rows`; raises UrlValueError on text that is not rows. Rows at
    or above ``n`` are dropped."""
    rows: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UrlValueError(f"emb_sel: {part[:20]!r} is not a unit row or a range of rows") from None
        if a < 0 or b < a or b - a > 1_000_000:
            raise UrlValueError(f"emb_sel: {part[:20]!r} is not a range of rows")
        rows.extend(range(a, b + 1 if n is None else min(b + 1, n)))
    return sorted(set(rows))


def _in_box(xy: np.ndarray, left: float, bottom: float, right: float, top: float) -> np.ndarray:
    """Which points of ``xy`` (n, 2) lie in the box (corners in any order; non-finite bounds select nothing)."""
    bounds = np.array([left, bottom, right, top], dtype=float)
    if len(xy) == 0 or not np.isfinite(bounds).all():
        return np.zeros(len(xy), dtype=bool)
    x0, x1 = sorted((bounds[0], bounds[2]))
    y0, y1 = sorted((bounds[1], bounds[3]))
    return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)


def _clamp_selection(ctrl: EmbeddingsController, text: str) -> str:
    n = 0 if ctrl.table is None else ctrl.table.sizes["unit"]
    rows = parse_rows(text)
    kept = [r for r in rows if r < n]
    if len(kept) < len(rows):
        ctrl._url_messages.append(f"emb_sel: {len(rows) - len(kept)} unit rows beyond the {n} units shown were dropped")
    return encode_rows(kept)


def category_order(values: np.ndarray, color_by: str) -> list[str]:
    """The categories of ``values`` in the order their colours are assigned (sorted, unknown last);
    the view's palettes follow the same order."""
    names = sorted({str(v) for v in values})
    unknown = UNKNOWN_REGION_NAMES if color_by == "region" else {""}
    return [v for v in names if v not in unknown] + [v for v in names if v in unknown]


@dataclass(frozen=True)
class Trace:
    """The activity of one selected unit."""

    row: int
    name: str  # "worm/worm0 AVAL" or "zebrafish/fish0 #17"
    group: str  # its colour category
    time: np.ndarray
    activity: np.ndarray


@dataclass(frozen=True)
class EmbeddingsSnapshot:
    """What the Embeddings tab shows (see :meth:`EmbeddingsController.snapshot`).

    ``revision`` has one counter per part (``table``, ``layout``, ``colour``, ``selection``,
    ``map``, ``separation``, ``sessions``): a view redraws a part when its counter changed.
    """

    model: str | None
    session: str
    table: xr.Dataset | None  # unit embeddings of the shown sessions (unit, dim) with per-unit coords
    error: str
    xy: np.ndarray | None  # (unit, 2) the layout shown, None before the first one is ready
    layout: str  # reducer of ``xy``: the chosen one, or "pca" while it is computed
    layouts_ready: tuple[str, ...]
    color_by: str
    groups: np.ndarray  # (unit,) str colour category per unit ("" unknown; for score: "")
    legend: tuple[tuple[str, int], ...]  # (category, units) in colour order
    scores: np.ndarray  # (unit,) per-unit forecast score, NaN until computed / where none
    score_range: tuple[float, float] | None  # the colour scale of scores (2nd and 98th percentile)
    scores_done: int  # units with a computed score
    selected: tuple[int, ...]
    selection_text: str
    map_datasets: tuple[str, ...]  # coordinate frames (datasets) with unit positions
    map_dataset: str  # the frame the position map shows ("" when none)
    map_rows: np.ndarray  # rows of the table drawn on the map
    map_sessions: tuple[str, ...]
    map_note: str
    traces: tuple[Trace, ...]
    separation: dict | None
    separation_state: str  # "computing", "done", "none" (fewer than two regions), "failed"
    sessions: dict | None  # session vectors: {"xy", "session", "dataset", "units"}
    progress: dict[str, tuple[float | None, str]]  # running lanes: (fraction or None, message)
    status: str
    notice: str
    revision: dict[str, int] = field(default_factory=dict)
    version: int = 0  # the controller's version when the snapshot was taken


class _TableState:
    """Everything computed for one checkpoint and choice of sessions (written by the jobs)."""

    def __init__(self, model: Any, model_key: str, stamp: tuple, emb: xr.Dataset, recordings: dict[str, xr.Dataset]):
        self.model = model
        self.model_key = model_key
        self.stamp = stamp
        self.emb = emb
        self.recordings = recordings
        self.xy: dict[str, np.ndarray] = {}
        self.scores = np.full(emb.sizes["unit"], np.nan)
        self.scores_started = False
        self.torch_started = False
        self.separation: dict | None = None
        self.separation_state = "computing"
        self.notes: dict[str, str] = {}


class EmbeddingsController(Controller):
    """State, jobs and URL state of the Embeddings tab (see module docstring).

    Parameters
    ----------
    data_dir
        The app's data directory (checkpoints under it are offered too).
    """

    url_fields = (
        UrlField("model", "emb_model"),
        UrlField("session", "emb_session"),
        UrlField("reducer", "emb_layout"),
        UrlField("color_by", "emb_color"),
        UrlField("map_dataset", "emb_map"),
        UrlField("selection", "emb_sel", clamp=_clamp_selection),
    )

    model = param.Selector(default=None, objects=[], doc="Checkpoint (key) with unit embeddings")
    session = param.Selector(default=ALL, objects=[ALL], doc="One session, or all together")
    reducer = param.Selector(default="umap", objects=list(REDUCERS), doc="2-D layout")
    color_by = param.Selector(default="region", objects=list(COLOR_BY), doc="What the colours show")
    map_dataset = param.Selector(default="", objects=[""], doc="Coordinate frame of the position map ('' follows the selection)")
    selection = param.String(default="", doc="Selected unit rows as in links ('0-3,17'); '' when none or too long for a link")

    def __init__(self, data_dir: str | os.PathLike | None = None, **params: Any):
        self.data_dir = None if data_dir is None else str(data_dir)
        self.choices = embedding_models(self.data_dir)
        self._state: _TableState | None = None
        self._error = ""
        self._selected: list[int] = []
        self._read_traces: tuple | None = None  # (state, rows, {trace index: activity}) of the last traces read
        self._writing_selection = False
        self._url_messages: list[str] = []
        self._revision = dict.fromkeys(("table", "layout", "colour", "selection", "map", "separation", "sessions"), 0)
        self._sessions: dict | None = None
        super().__init__(**params)
        self.param.reducer.objects = reducer_options()
        self.param.model.objects = dict(self.choices)
        self.param.watch(self._on_model, "model")
        self.param.watch(self._on_session, "session")
        self.param.watch(self._on_reducer, "reducer")
        self.param.watch(self._on_color_by, "color_by")
        self.param.watch(self._on_map_dataset, "map_dataset")
        self.param.watch(self._on_selection_text, "selection")
        if self.choices:
            keys = list(self.choices.values())
            self.model = "poco_demo" if "poco_demo" in keys else keys[0]
        else:
            self._error = "No checkpoint with unit embeddings (POCO) was found."

    # ------------------------------------------------------------------ public reading
    @property
    def table(self) -> xr.Dataset | None:
        """The unit-embedding table of the shown sessions."""
        return None if self._state is None else self._state.emb

    @property
    def loaded_model(self) -> Any:
        return None if self._state is None else self._state.model

    @property
    def recordings(self) -> dict[str, xr.Dataset]:
        """The recordings of the shown sessions (positions, regions and traces come from them)."""
        return {} if self._state is None else dict(self._state.recordings)

    @property
    def selected(self) -> list[int]:
        return list(self._selected)

    def _bump(self, *parts: str) -> None:
        for p in parts:
            self._revision[p] += 1
        self.changed()

    # ------------------------------------------------------------------ checkpoint and sessions
    def _card(self, key: str) -> Path | None:
        path = model_path(key, self.data_dir)
        return Path(str(path) + ".json") if isinstance(path, Path) else None

    def _model_stamp(self, key: str) -> tuple:
        card = self._card(key)
        return (self.data_dir, key, card.stat().st_mtime if card is not None and card.exists() else None)

    def _on_model(self, event: Any = None) -> None:
        key = self.model
        self.jobs.cancel()
        try:
            model = LOADED_MODELS.get(key, self.data_dir)
            stamp = self._model_stamp(key)
        except Exception as exc:
            self._fail(f"Cannot load {key}: {exc}")
            return
        self._model_obj, self._model_key_stamp = model, stamp
        names = [s.name for s in model.sessions]
        self._all_recordings = find_sessions({s.name: s.n_units for s in model.sessions}, self.data_dir, self._trained_on(key))
        self._sessions = self._session_vectors(model)
        self._revision["sessions"] += 1
        self.param.session.objects = [ALL, *names]
        if self.session not in self.param.session.objects:
            self.session = ALL  # the session watcher loads the table
        else:
            self._load_table()

    def _trained_on(self, key: str) -> list[str]:
        """The data a checkpoint under the data directory was trained and fine-tuned on, as its
        card records it (where to look for its sessions' recordings first)."""
        card = self._card(key)
        try:
            training = json.loads(card.read_text())["training"] if card is not None else {}
            data = list(training.get("data") or []) + list((training.get("finetune") or {}).get("data") or [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        return [d for d in data if isinstance(d, str)]

    def _on_session(self, event: Any = None) -> None:
        self._load_table()

    def _fail(self, message: str) -> None:
        self._error = message
        self._state = None
        self._selected = []
        self._bump(*self._revision)

    def _load_table(self) -> None:
        from pocoviz.embeddings import unit_embeddings

        model = getattr(self, "_model_obj", None)
        if model is None:
            return
        names = None if self.session == ALL else [self.session]
        recs = {k: v for k, v in self._all_recordings.items() if names is None or k in names}
        try:
            emb = unit_embeddings(model, names, recordings=recs)
        except Exception as exc:
            self._fail(f"Cannot read the unit embeddings: {exc}")
            return
        self._error = ""
        st = _TableState(model, self.model, self._model_key_stamp, emb, recs)
        self._state = st
        self._selected = []
        self._set_selection_param("")
        frames = self._frames(st)
        self.param.map_dataset.objects = ["", *frames]
        if self.map_dataset not in self.param.map_dataset.objects:
            self.map_dataset = ""
        self.jobs.start("pca", lambda job: self._pca_job(st, job))
        self.jobs.start("umap", lambda job: self._umap_job(st, job))
        self.jobs.start("separation", lambda job: self._separation_job(st, job))
        self.jobs.cancel("umap-torch")
        self.jobs.cancel("scores")
        if on_gpu() or self.reducer == "umap-torch":
            self._start_torch(st)
        if self.color_by == "score":
            self._start_scores(st)
        self._bump(*self._revision)

    @staticmethod
    def _frames(st: _TableState) -> list[str]:
        emb = st.emb
        if "x" not in emb.coords:
            return []
        has = np.isfinite(emb["x"].values) & np.isfinite(emb["y"].values)
        return list(dict.fromkeys(emb["dataset"].values[has].astype(str).tolist()))

    @staticmethod
    def _session_vectors(model: Any) -> dict | None:
        """Session vectors (session embedding + mean unit embedding, spec §6) in 2-D by PCA."""
        from pocoviz.embeddings import pca_layout, session_embeddings

        try:
            se = session_embeddings(model)
        except Exception:
            return None
        n = se.sizes["session"]
        xy = pca_layout(se["embedding"].values) if n >= 2 else np.zeros((n, 2))
        return {"xy": np.asarray(xy, float), "session": se["session"].values.astype(str), "dataset": se["dataset"].values.astype(str),
                "units": se["n_units"].values}  # fmt: skip

    # ------------------------------------------------------------------ layouts
    def _pca_job(self, st: _TableState, job: Any) -> None:
        from pocoviz.embeddings import compute_layout

        job.report(None, "PCA of the unit embeddings")
        st.xy["pca"] = compute_layout(st.emb["embedding"].values, "pca", use_cache=False)
        if st is self._state:
            self._bump("layout", "selection")

    def _umap_job(self, st: _TableState, job: Any) -> None:
        from pocoviz.embeddings import cached_layout, compute_layout

        x = st.emb["embedding"].values
        found = cached_layout(x, "umap", cache_dir=shipped_layouts_dir())
        if found is None:
            found = cached_layout(x, "umap")
        if found is None:
            job.report(None, "computing the UMAP layout (shown meanwhile: PCA) …")
            try:
                found = compute_layout(x, "umap")
            except Exception as exc:
                st.notes["umap"] = f"UMAP failed: {exc}"
                if st is self._state:
                    self._bump("layout")
                return
        st.xy["umap"] = found
        if st is self._state:
            self._bump("layout", "selection")

    def _start_torch(self, st: _TableState) -> None:
        if not st.torch_started:
            st.torch_started = True
            self.jobs.start("umap-torch", lambda job: self._torch_job(st, job))

    def _torch_job(self, st: _TableState, job: Any) -> None:
        from pocoviz.backend import get_device
        from pocoviz.embeddings import cached_layout, compute_layout

        x = st.emb["embedding"].values
        found, note = cached_layout(x, "umap-torch"), "torch UMAP read from the layout cache"
        if found is None:
            device = get_device()
            job.report(0.0, f"computing the torch UMAP layout of {len(x)} units on {device.type.upper()}")
            t0 = time.perf_counter()
            try:
                found = compute_layout(x, "umap-torch", device=device, progress=lambda f: job.report(f))
            except Exception as exc:
                if job.cancelled:
                    st.torch_started = False
                    raise
                st.notes["umap-torch"] = f"torch UMAP failed: {exc}"
                if st is self._state:
                    self._bump("layout")
                return
            note = f"torch UMAP of {len(x)} units: {time.perf_counter() - t0:.1f} s on {device}"
        st.xy["umap-torch"] = found
        st.notes["umap-torch"] = note
        if st is self._state:
            self._bump("layout", "selection")

    def _on_reducer(self, event: Any = None) -> None:
        st = self._state
        if st is not None and self.reducer == "umap-torch":
            self._start_torch(st)
        self._bump("layout", "selection")

    # ------------------------------------------------------------------ separation
    def _separation_job(self, st: _TableState, job: Any) -> None:
        from pocoviz.embeddings import region_distance_matrix, region_separation

        emb = st.emb
        regions = emb["region"].values.astype(str)
        keep = regions != ""
        if len(set(regions[keep])) < 2:
            st.separation, st.separation_state = None, "none"
        else:
            job.report(None, f"region silhouette against {N_SHUFFLES} label shuffles")
            x = emb["embedding"].values[keep]
            sessions = emb["session"].values[keep]
            # several sessions: regions are compared within each session (spec §6), scores averaged
            groups = sessions if len(set(sessions)) > 1 else None
            try:
                sep = region_separation(x, regions[keep], groups=groups, n_shuffles=N_SHUFFLES, seed=0)
                job.check()
                sep["matrix"] = region_distance_matrix(x, regions[keep], groups=groups)
                st.separation, st.separation_state = sep, "done"
            except ValueError:
                st.separation, st.separation_state = None, "none"
        if st is self._state:
            self._bump("separation")

    # ------------------------------------------------------------------ colours and scores
    def _on_color_by(self, event: Any = None) -> None:
        st = self._state
        if st is not None and self.color_by == "score":
            self._start_scores(st)
        self._bump("colour", "selection")

    def _start_scores(self, st: _TableState) -> None:
        """Per-unit scores cost a test-split pass of the model per session: computed when first
        asked for, smallest sessions first, each shown as soon as it is done (and kept for every
        browser session)."""
        if st.scores_started:
            return
        st.scores_started = True
        self._apply_cached_scores(st)
        self.jobs.start("scores", lambda job: self._score_job(st, job))

    def _score_sessions(self, st: _TableState) -> list[str]:
        """Sessions to score: those on the position map first (its colours fill in early), then the
        smallest first (most sessions coloured soonest)."""
        names = [n for n in dict.fromkeys(st.emb["session"].values.astype(str).tolist()) if n in st.recordings]
        shown = set(st.emb["session"].values[self._map_rows()].astype(str).tolist()) if st is self._state else set()
        return sorted(names, key=lambda n: (n not in shown, int(st.recordings[n].sizes["unit"])))

    def _put_scores(self, st: _TableState, name: str, per_unit: np.ndarray) -> None:
        sess, idx = st.emb["session"].values, st.emb["unit_index"].values
        rows = np.flatnonzero(sess == name)
        scores = st.scores.copy()
        scores[rows] = np.asarray(per_unit, dtype=float)[idx[rows]]
        st.scores = scores  # one assignment: a snapshot sees the old or the new array

    def _apply_cached_scores(self, st: _TableState) -> None:
        for name in self._score_sessions(st):
            got = SCORE_CACHE.get((st.stamp, name))
            if got is not None:
                self._put_scores(st, name, got)

    def _score_job(self, st: _TableState, job: Any) -> None:
        """Per-unit forecast score (1 − MSE/MSE copy-last) on the test split, every 4th window."""
        from pocoviz.forecast import ForecastCorpus, evaluate

        names = self._score_sessions(st)
        sizes = {n: int(st.recordings[n].sizes["unit"]) for n in names}
        total, done = max(sum(sizes.values()), 1), 0
        for k, name in enumerate(names):
            got = SCORE_CACHE.get((st.stamp, name))
            if got is None:
                job.report(done / total, f"per-unit forecast scores: {name} ({k + 1} of {len(names)} sessions)")
                try:
                    corpus = ForecastCorpus({name: st.recordings[name]}, strides={"train": 1, "val": 4, "test": 4})
                    rep = evaluate(st.model, corpus, "test", device="cpu")
                except Exception as exc:
                    st.notes["scores"] = f"per-unit scores failed on {name}: {exc}"
                    if st is self._state:
                        self._bump("colour")
                    return
                got = np.asarray(rep.session(name).per_unit_score, dtype=float)
                SCORE_CACHE.put((st.stamp, name), got)
            self._put_scores(st, name, got)
            done += sizes[name]
            job.report(done / total)
            if st is self._state:
                self._bump("colour", "selection")

    def _groups(self, st: _TableState) -> np.ndarray:
        emb = st.emb
        if self.color_by == "score":
            return np.full(emb.sizes["unit"], "", dtype=object).astype(str)
        if self.color_by in emb.coords:
            return emb[self.color_by].values.astype(str)
        return np.full(emb.sizes["unit"], "", dtype=str)

    # ------------------------------------------------------------------ selection
    def select(self, rows: Sequence[int]) -> None:
        """Select units by their rows in :attr:`table` (marks them on the layout and the map, shows
        their traces); rows outside the table are ignored."""
        n = 0 if self._state is None else self._state.emb.sizes["unit"]
        self._selected = sorted({int(r) for r in rows if 0 <= int(r) < n})
        self._set_selection_param(encode_rows(self._selected))
        self._bump("selection", "map")

    def select_on_map(self, indices: Sequence[int]) -> None:
        """Select units by their index among the points of the position map (as drawn in the
        last snapshot's ``map_rows``)."""
        rows = self._map_rows()
        self.select([int(rows[i]) for i in indices if 0 <= int(i) < len(rows)])

    def select_in_box(self, left: float, bottom: float, right: float, top: float) -> None:
        """Select the units whose point in the layout shown lies in the box (a box drawn on a
        Datashader image, which has no glyphs to pick: the selection is resolved here)."""
        st = self._state
        xy = None if st is None else self.snapshot_layout()
        if xy is None:
            return
        self.select(np.flatnonzero(_in_box(xy, left, bottom, right, top)).tolist())

    def select_on_map_box(self, left: float, bottom: float, right: float, top: float) -> None:
        """Select the units of the position map (its coordinate frame) whose position lies in the box."""
        st = self._state
        if st is None:
            return
        rows = self._map_rows()
        xy = np.column_stack([st.emb["x"].values[rows], st.emb["y"].values[rows]])
        self.select(rows[_in_box(xy, left, bottom, right, top)].tolist())

    def snapshot_layout(self) -> np.ndarray | None:
        """The layout shown now (the chosen reducer's, or PCA while it is computed)."""
        st = self._state
        if st is None:
            return None
        xy_all = dict(st.xy)
        return xy_all.get(self.reducer, xy_all.get("pca"))

    def _set_selection_param(self, text: str) -> None:
        self._writing_selection = True
        try:
            self.selection = text if len(text) <= MAX_SELECTION_CHARS else ""
        finally:
            self._writing_selection = False

    def _on_selection_text(self, event: Any) -> None:
        if self._writing_selection:
            return
        try:
            rows = parse_rows(event.new)
        except UrlValueError:
            rows = []
        self.select(rows)

    def apply_url(self, query: dict[str, Any]) -> list[str]:
        self._url_messages = []
        messages = super().apply_url(query)
        if self._url_messages:
            messages = messages + self._url_messages
            self.notice = "Link settings: " + "; ".join(messages)
        return messages

    # ------------------------------------------------------------------ position map
    def _on_map_dataset(self, event: Any = None) -> None:
        self._bump("map", "selection")

    def _map_frame(self) -> str:
        st = self._state
        if st is None:
            return ""
        frames = self._frames(st)
        if not frames:
            return ""
        if self.map_dataset in frames:
            return self.map_dataset
        if self._selected:  # automatic: the frame holding most of the selection
            ds = st.emb["dataset"].values[self._selected].astype(str)
            has = np.isfinite(st.emb["x"].values[self._selected])
            counts = {f: int(((ds == f) & has).sum()) for f in frames}
            best = max(frames, key=lambda f: counts[f])
            if counts[best] > 0:
                return best
        return frames[0]

    def _map_rows(self) -> np.ndarray:
        st = self._state
        frame = self._map_frame()
        if st is None or not frame:
            return np.zeros(0, np.int64)
        emb = st.emb
        ok = (emb["dataset"].values.astype(str) == frame) & np.isfinite(emb["x"].values) & np.isfinite(emb["y"].values)
        return np.flatnonzero(ok)

    def _map_note(self, st: _TableState, frame: str, rows: np.ndarray) -> str:
        frames = self._frames(st)
        if not frames:
            return "These recordings have no unit positions."
        sessions = list(dict.fromkeys(st.emb["session"].values[rows].astype(str).tolist()))
        others = [f for f in frames if f != frame]
        note = f"Positions of {frame} ({', '.join(s.split('/')[-1] for s in sessions)})"
        if len(sessions) > 1:
            note += "; its sessions drawn in one coordinate frame"
        if others:
            note += f". {', '.join(others)} units sit in other coordinate frames: choose one under Position map"
            off = [r for r in self._selected if str(st.emb["dataset"].values[r]) != frame]
            if off:
                note += f" ({len(off)} selected units are there)"
        return note + "."

    # ------------------------------------------------------------------ the snapshot
    def _selection_text(self, st: _TableState) -> str:
        sel = self._selected
        if not sel:
            return "Select units with the box or lasso tool, in the layout or on the map."
        emb = st.emb
        names, counts = np.unique(emb["region"].values[sel].astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        top = ", ".join(f"{names[i] or '(none)'} {counts[i]}" for i in order[:6])
        if len(order) > 6:
            top += f", {len(order) - 6} more regions"
        dups = duplicate_summary(emb, sel)
        text = f"**{len(sel)} selected** ({top}); traces of the first {min(len(sel), MAX_TRACES)}"
        if not self.selection:
            text += " (too many units to keep in the link)"
        if self.color_by == "score" and np.isfinite(st.scores[sel]).any():
            text += f"; mean score {np.nanmean(st.scores[sel]):.3f}"
        return text + (f"; ⚠ duplicated label: {dups}" if dups else "")

    def _traces(self, st: _TableState, groups: np.ndarray) -> tuple[Trace, ...]:
        emb = st.emb
        rows = self._selected[:MAX_TRACES]
        names = label_names(emb, rows)  # only the units whose traces are drawn
        sessions = emb["session"].values[rows].astype(str)
        units = emb["unit_index"].values[rows].astype(int)
        cached = self._read_traces
        columns: dict[int, np.ndarray] = cached[2] if cached is not None and cached[0] is st and cached[1] == tuple(rows) else {}
        if not columns:  # read once per selection (snapshots come at every job's progress)
            for session in dict.fromkeys(sessions.tolist()):  # one read per session (a whole brain's store: only the chunks needed)
                rec = st.recordings.get(session)
                if rec is not None:
                    at = np.flatnonzero(sessions == session)
                    block = read_units(rec, units[at])
                    columns.update({int(k): block[:, j] for j, k in enumerate(at)})
            self._read_traces = (st, tuple(rows), columns)
        out = []
        for k, row in enumerate(rows):
            if k not in columns:
                continue
            rec = st.recordings[sessions[k]]
            act = columns[k].astype(float)
            t = np.arange(len(act)) / float(rec.attrs.get("sampling_rate_hz", 1.0))
            out.append(Trace(row, f"{sessions[k]} {names[k] or f'#{units[k]}'}", str(groups[row]), t, act))
        return tuple(out)

    def _progress(self) -> dict[str, tuple[float | None, str]]:
        out = {}
        for lane, s in self.jobs.status().items():
            out[lane] = (s["progress"], s["message"] or f"{LANE_TITLES.get(lane, lane)} …")
        return out

    def snapshot(self) -> EmbeddingsSnapshot:
        """What the tab should show now (safe to call from any thread)."""
        st = self._state
        common = dict(model=self.model, session=self.session, color_by=self.color_by, progress=self._progress(), notice=self.notice,
                      sessions=self._sessions, revision=dict(self._revision), version=self.version)  # fmt: skip
        if st is None:
            return EmbeddingsSnapshot(
                table=None, error=self._error, xy=None, layout="", layouts_ready=(), groups=np.zeros(0, str), legend=(),
                scores=np.zeros(0), score_range=None, scores_done=0, selected=(), selection_text="", map_datasets=(), map_dataset="",
                map_rows=np.zeros(0, np.int64), map_sessions=(), map_note="", traces=(), separation=None, separation_state="none",
                status=self._error, **common,
            )  # fmt: skip
        emb = st.emb
        xy_all = dict(st.xy)
        layout = self.reducer if self.reducer in xy_all else ("pca" if "pca" in xy_all else "")
        groups = self._groups(st)
        if self.color_by == "score":
            legend: tuple = ()
        else:
            names, counts = np.unique(groups, return_counts=True)
            count = dict(zip(names.tolist(), counts.tolist()))
            legend = tuple((c, int(count[c])) for c in category_order(groups, self.color_by))
        scores = st.scores
        ok = np.isfinite(scores)
        score_range = tuple(float(v) for v in np.percentile(scores[ok], [2, 98])) if ok.any() else None
        frame = self._map_frame()
        rows = self._map_rows()
        notes = [v for k, v in st.notes.items() if k != "umap-torch" or self.reducer == "umap-torch"]
        return EmbeddingsSnapshot(
            table=emb, error=self._error, xy=xy_all.get(layout), layout=layout, layouts_ready=tuple(xy_all), groups=groups,
            legend=legend, scores=scores, score_range=score_range, scores_done=int(ok.sum()), selected=tuple(self._selected),
            selection_text=self._selection_text(st), map_datasets=tuple(self._frames(st)), map_dataset=frame, map_rows=rows,
            map_sessions=tuple(dict.fromkeys(emb["session"].values[rows].astype(str).tolist())),
            map_note=self._map_note(st, frame, rows) if len(self._frames(st)) > 1 or not frame else "",
            traces=self._traces(st, groups), separation=st.separation, separation_state=st.separation_state,
            status="; ".join(notes), **common,
        )  # fmt: skip

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until no job runs (tests, scripts)."""
        return self.jobs.wait_idle(timeout)

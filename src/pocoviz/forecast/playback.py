"""Forecasts at every cursor of one recording by one model, for playing the recording forward.

The app's Forecast tab plays a recording frame by frame and draws, at the playhead, what a model
forecast from the frames before it. :class:`RecordingForecast` holds those forecasts for every
cursor at once, as plain arrays the app slices each frame, and fills them progressively (from
the playhead onwards first) in a background thread through :meth:`RecordingForecast.compute`.
Scores over the windows played so far come from :meth:`RecordingForecast.metrics`, fast enough
to call several times per second.

A cursor ``t`` (a frame index) is the first forecast frame: the context is frames ``t-C..t-1``
and the forecast frames ``t..t+P-1``. The score is POCO's (spec §3): ``1 - SSE / SSE_copy``,
where copy-last repeats frame ``t-1``; over the test windows of a recording it is the per-session
score of :func:`pocoviz.forecast.evaluate`. MSE and MAE (``|ŷ - y|``, spec §4.3), overall and
per step ahead, come from the same windows.

Examples
--------
>>> import numpy as np
>>> from pocoviz.forecast import SessionInfo, build_model
>>> from pocoviz.forecast.playback import RecordingForecast
>>> x = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
>>> model = build_model("NLinear", [SessionInfo("demo/a", 5, "demo")])
>>> rf = RecordingForecast(model, x, "demo/a")
>>> rf.compute(start=150)
237
>>> rf.forecast.shape, rf.fraction_done
((300, 16, 5), 1.0)
>>> m = rf.metrics(upto=200)
>>> m["n_windows"]
137
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..recordings.preprocess import split_indices
from .base import Forecaster, SessionInfo
from .data import MAX_UNIT_WINDOWS
from .metrics import autocast_context

#: cursors per block of the cached sums behind :meth:`RecordingForecast.metrics`
BLOCK = 64
#: windows per batch at most (the unit-window budget usually binds first)
DEFAULT_CHUNK = 256


def _model_device(model: torch.nn.Module) -> torch.device:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def resolve_session(model: Forecaster, session: str, n_units: int) -> int:
    """The model's index of ``session``, registering it with a session-free model.

    Parameters
    ----------
    model
        The forecaster. A ``session_free`` model (copy-last, NLinear, MLP, TexFilter) that does
        not know ``session`` gets it added (:meth:`Forecaster.add_sessions`): this mutates the
        model, as :func:`pocoviz.forecast.metrics.model_session_map` does.
    session
        The session name as the model knows it (``"dataset/session"``).
    n_units
        U, the recording's unit count.

    Raises
    ------
    KeyError
        A model with per-session state (POCO, ...) does not know the session: it must be
        fine-tuned to the recording first.
    ValueError
        The model knows the session with another unit count.
    """
    known = {s.name: i for i, s in enumerate(model.sessions)}
    if session not in known:
        if not model.session_free:
            names = list(known)
            raise KeyError(
                f"the {model.kind} model does not know session {session!r}: fine-tune it to this recording first "
                f"(pocoviz finetune), or pick a session it was trained on "
                f"(known: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})"
            )
        head = session.split("/")[0] if "/" in session else ""
        return model.add_sessions([SessionInfo(session, int(n_units), head or "recordings")])[0]
    i = known[session]
    if model.sessions[i].n_units != n_units:
        raise ValueError(
            f"session {session!r}: the recording has {n_units} units but the {model.kind} model knows it with {model.sessions[i].n_units}"
        )
    return i


class RecordingForecast:
    """Forecasts of one model at every cursor of one recording, filled progressively.

    A cursor ``t`` (a frame index) is the first forecast frame: context = frames ``t-C..t-1``,
    forecast = frames ``t..t+P-1``. Valid cursors: ``C <= t <= T-P`` whose window ``[t-C, t+P)``
    holds no NaN.

    Parameters
    ----------
    model
        Any forecaster (C = ``model.context``, P = ``model.horizon``).
    activity : array or tensor, shape (T, U)
        The z-scored recording, time by unit (copied to float32).
    session
        The session name as the model knows it. A session-free model (copy-last, NLinear, MLP,
        TexFilter) that does not know it gets it registered (this mutates ``model``, as
        :func:`pocoviz.forecast.evaluate` does).
    regions : sequence of str, length U, optional
        Each unit's region ("" if unknown): :meth:`metrics` then adds per-region scores.
    splits
        ``{"train": [(start, stop), ...], ...}`` frame ranges (default:
        :func:`pocoviz.recordings.preprocess.split_indices` of T). A window is in a split when it
        lies wholly inside one of its ranges (:attr:`window_split`).
    device
        Where the model runs (default: where its parameters are; given, the model is moved there).
    name
        A display name (default: ``model.kind``).

    Attributes
    ----------
    T, U, C, P : int
        Frames, units, context and horizon.
    cursors : ndarray of int64, shape (n_valid,)
        The valid cursors, sorted.
    valid : ndarray of bool, shape (T,)
        Whether each cursor is valid.
    forecast : ndarray of float16, shape (T, P, U)
        ``forecast[t, k, u]``: the forecast of frame ``t + k`` of unit ``u`` made at cursor ``t``;
        NaN until computed (and forever for invalid cursors).
    done : ndarray of bool, shape (T,)
        Cursors computed so far.
    sse : ndarray of float64, shape (T, U)
        Squared error summed over the P steps, per cursor and unit (from the float32 forecast,
        before the float16 cast); NaN until computed.
    sse_step : ndarray of float64, shape (T, P)
        Squared error summed over units, per cursor and step.
    sae_step : ndarray of float64, shape (T, P)
        Absolute error summed over units, per cursor and step.
    copy_sse, copy_sse_step, copy_sae_step : ndarray of float64, shapes (T, U), (T, P), (T, P)
        The same for copy-last (frame ``t-1`` for every step), for every valid cursor at once.
    window_split : ndarray of str, shape (T,)
        ``"train"``, ``"val"``, ``"test"`` or ``""`` (invalid, or crossing a split boundary).
    regions : ndarray of str, shape (U,), or None

    Notes
    -----
    One writer thread (:meth:`compute`; concurrent calls queue on a lock) and any number of
    reader threads. A batch writes its rows of :attr:`forecast`, :attr:`sse`,
    :attr:`sse_step` and :attr:`sae_step` first and sets :attr:`done` last, so a reader that checks ``done[t]`` sees
    a complete row.

    Examples
    --------
    >>> import threading
    >>> stop = threading.Event()                                                   # doctest: +SKIP
    >>> threading.Thread(target=rf.compute, kwargs=dict(start=playhead, stop=stop)).start()  # doctest: +SKIP
    >>> rf.forecast[playhead] if rf.done[playhead] else None                        # doctest: +SKIP
    >>> rf.metrics(upto=playhead, split="test")["score"]                            # doctest: +SKIP
    """

    #: unit-windows per batch at most (bounds the memory of per-unit hidden layers)
    unit_window_budget: int = MAX_UNIT_WINDOWS

    def __init__(
        self,
        model: Forecaster,
        activity: np.ndarray | torch.Tensor,
        session: str,
        *,
        regions: Sequence[str] | None = None,
        splits: dict[str, list[tuple[int, int]]] | None = None,
        device: torch.device | str | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(activity, torch.Tensor):
            activity = activity.detach().cpu().numpy()
        a = np.array(activity, dtype=np.float32, order="C", copy=True)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"activity must be (time, unit) with at least one frame and unit, got shape {a.shape}")
        self._rec = torch.from_numpy(a)  # shares memory with a, never written
        a.flags.writeable = False
        self.activity = a
        self.T, self.U = (int(n) for n in a.shape)
        self.C, self.P = int(model.context), int(model.horizon)
        self.model = model
        self.session = str(session)
        self.name = str(name) if name else model.kind
        self.session_index = resolve_session(model, self.session, self.U)
        if device is None:
            self.device = _model_device(model)
        else:
            self.device = torch.device(device)
            model.to(self.device)
        if regions is not None:
            r = np.asarray([("" if x is None else str(x)) for x in regions])
            if r.shape != (self.U,):
                raise ValueError(f"regions must name one region per unit ({self.U}), got {len(r)}")
            self.regions: np.ndarray | None = r.astype(str)
        else:
            self.regions = None

        T, U, C, P = self.T, self.U, self.C, self.P
        # valid cursors: a full, NaN-free window [t - C, t + P)
        bad = np.isnan(a).any(axis=1)
        cum = np.concatenate([[0], np.cumsum(bad)])
        t = np.arange(C, T - P + 1, dtype=np.int64)
        self.cursors: np.ndarray = t[cum[t + P] == cum[t - C]]
        self.valid = np.zeros(T, dtype=bool)
        self.valid[self.cursors] = True

        # split of each window: wholly inside one range [lo, hi) <=> lo + C <= t <= hi - P
        self.splits = {str(k): [(int(lo), int(hi)) for lo, hi in v] for k, v in (splits if splits is not None else split_indices(T)).items()}
        width = max([len(k) for k in self.splits] + [1])
        self.window_split = np.full(T, "", dtype=f"<U{width}")
        self._split_ranges: dict[str, list[tuple[int, int]]] = {}
        for k, ranges in self.splits.items():
            out = []
            for lo, hi in ranges:
                a0, b0 = max(lo + C, 0), min(hi - P + 1, T)
                if b0 > a0:
                    out.append((a0, b0))
                    self.window_split[a0:b0] = k
            self._split_ranges[k] = out
        self.window_split[~self.valid] = ""

        self.forecast = np.full((T, P, U), np.nan, dtype=np.float16)
        self.done = np.zeros(T, dtype=bool)
        self.sse = np.full((T, U), np.nan)
        self.sse_step = np.full((T, P), np.nan)
        self.copy_sse = np.full((T, U), np.nan)
        self.copy_sse_step = np.full((T, P), np.nan)
        self.sae_step = np.full((T, P), np.nan)
        self.copy_sae_step = np.full((T, P), np.nan)
        self._rec = self._rec.to(self.device)
        self._offsets = torch.arange(C + P, device=self.device)
        self._n_done = 0
        self._version = 0
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # metrics cache: sums over done cursors per block of BLOCK cursors, and their prefix sums
        nb = -(-T // BLOCK)
        self._seen = np.zeros(T, dtype=bool)
        self._cache_version = 0
        self._blk = [np.zeros((nb, w)) for w in (U, U, P, P, P, P, 1)]  # in the order of _stats()
        self._cum = [np.zeros((nb + 1, b.shape[1])) for b in self._blk]
        self._ones = np.ones((T, 1))
        if self.regions is not None:
            self._region_names = sorted(set(self.regions.tolist()) - {""})
            lookup = {r: i for i, r in enumerate(self._region_names)}
            self._region_code = np.array([lookup.get(r, len(lookup)) for r in self.regions.tolist()], dtype=np.int64)
        self._copy_last()

    # -- computing ---------------------------------------------------------------------------

    @property
    def n_valid(self) -> int:
        """Number of valid cursors."""
        return len(self.cursors)

    @property
    def fraction_done(self) -> float:
        """Computed valid cursors / valid cursors (1.0 when there is none)."""
        return self._n_done / len(self.cursors) if len(self.cursors) else 1.0

    @property
    def batch_size(self) -> int:
        """Windows per batch: ``DEFAULT_CHUNK`` at most, ``unit_window_budget // U`` at most, 1 at least."""
        return self._batch_size(None)

    def _batch_size(self, chunk: int | None) -> int:
        cap = DEFAULT_CHUNK if chunk is None else int(chunk)
        return max(1, min(cap, self.unit_window_budget // self.U))

    def _windows(self, cursors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (b, C, U) and target (b, P, U) of ``cursors`` on the device."""
        start = torch.as_tensor(cursors - self.C, device=self.device)
        w = self._rec[start[:, None] + self._offsets]
        return w[:, : self.C], w[:, self.C :]

    @torch.inference_mode()
    def _copy_last(self) -> None:
        # the same float32 expression as a forecast's error (contiguous (b, P, U), summed the same
        # way), so that the copy-last model scores exactly 0; targets are views, not gathers
        P, U = self.P, self.U
        if not len(self.cursors):
            return
        targets = self._rec.unfold(0, P, 1).transpose(1, 2)  # (T - P + 1, P, U): frames t..t+P-1
        b = max(1, (1 << 22) // (P * U))
        lo, hi = int(self.cursors[0]), int(self.cursors[-1]) + 1
        for t0 in range(lo, hi, b):
            t1 = min(hi, t0 + b)
            keep = self.valid[t0:t1]
            if not keep.any():
                continue
            last = self._rec[t0 - 1 : t1 - 1, None, :].expand(-1, P, -1)
            diff = (last - targets[t0:t1]).contiguous()
            err, ae = diff**2, diff.abs()
            rows = t0 + np.flatnonzero(keep)
            self.copy_sse[rows] = err.sum(1).cpu().double().numpy()[keep]
            self.copy_sse_step[rows] = err.sum(2).cpu().double().numpy()[keep]
            self.copy_sae_step[rows] = ae.sum(2).cpu().double().numpy()[keep]

    def pending(self, cursors: Sequence[int] | np.ndarray | None = None, *, start: int | None = None) -> np.ndarray:
        """The valid, not yet computed cursors among ``cursors`` (default: all), in the order
        :meth:`compute` takes them: from ``start`` forward, then wrapping to the beginning."""
        if cursors is None:
            cand = self.cursors
        else:
            c = np.unique(np.asarray(cursors, dtype=np.int64).ravel())
            c = c[(c >= 0) & (c < self.T)]
            cand = c[self.valid[c]]
        cand = cand[~self.done[cand]]
        if start is not None and len(cand):
            k = int(np.searchsorted(cand, int(start), side="left"))
            cand = np.concatenate([cand[k:], cand[:k]])
        return cand

    def compute(
        self,
        cursors: Sequence[int] | np.ndarray | None = None,
        *,
        start: int | None = None,
        chunk: int | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Compute the forecasts of the valid cursors not yet done.

        Parameters
        ----------
        cursors
            Only these cursors (invalid and already computed ones are skipped); default: all.
        start
            Take cursors from ``start`` forward first, then wrap to the beginning (the app
            passes the playhead).
        chunk
            Windows per batch at most (default :data:`DEFAULT_CHUNK`); the batch also keeps
            ``batch * U <= unit_window_budget`` (at least one window).
        stop
            Checked before each batch: when set, return early (what was computed stays).
        progress
            Called after each batch with ``(computed valid cursors, valid cursors)``.

        Returns
        -------
        int
            How many cursors this call computed.
        """
        with self._write_lock:
            todo = self.pending(cursors, start=start)
            if not len(todo):
                return 0
            b = self._batch_size(chunk)
            model = self.model
            was_training = model.training
            model.eval()
            n = 0
            try:
                with torch.inference_mode():
                    sess = torch.full((b,), self.session_index, dtype=torch.int64, device=self.device)
                    for i in range(0, len(todo), b):
                        if stop is not None and stop.is_set():
                            break
                        rows = todo[i : i + b]
                        ctx, tgt = self._windows(rows)
                        with autocast_context(self.device):
                            pred = model(ctx, sess[: len(rows)])
                        pred = pred.float()
                        diff = pred - tgt
                        err = diff**2
                        f16 = pred.to(torch.float16).cpu().numpy()
                        s = err.sum(1).cpu().double().numpy()
                        s_step = err.sum(2).cpu().double().numpy()
                        a_step = diff.abs().sum(2).cpu().double().numpy()
                        self.forecast[rows] = f16
                        self.sse[rows] = s
                        self.sse_step[rows] = s_step
                        self.sae_step[rows] = a_step
                        self.done[rows] = True  # last: readers trust done rows
                        self._n_done += len(rows)
                        self._version += 1
                        n += len(rows)
                        if progress is not None:
                            progress(self._n_done, len(self.cursors))
            finally:
                model.train(was_training)
            return n

    def advance(self, t: int, max_windows: int, preempt: Callable[[], bool] | None = None) -> int:
        """About ``max_windows`` windows of the whole pass, nearest after cursor ``t`` first (then
        wrapping to the beginning); returns how many were computed. (``preempt`` is for the disk
        cache's large windows; a batch here is short.)"""
        missing = self.cursors[~self.done[self.cursors]]
        if not len(missing):
            return 0
        order = np.concatenate([missing[missing >= t - 1], missing[missing < t - 1]])
        return self.compute(cursors=order[: max(1, int(max_windows))])

    def lines(self, t: int, units: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """(P, k) float32 forecasts of ``units`` at cursor ``t``, or None while not computed."""
        if not 0 <= t < self.T or not self.done[t]:
            return None
        return self.forecast[t][:, np.asarray(units, dtype=np.int64)].astype(np.float32)

    def context(self, cursors: Sequence[int] | np.ndarray) -> np.ndarray:
        """Contexts (b, C, U) float32 of ``cursors``."""
        return np.stack([self.activity[c - self.C : c] for c in np.asarray(cursors, dtype=np.int64).tolist()])

    # -- scores ------------------------------------------------------------------------------

    def _stats(self) -> list[np.ndarray]:
        return [self.sse, self.copy_sse, self.sse_step, self.copy_sse_step, self.sae_step, self.copy_sae_step, self._ones]

    def _refresh(self) -> None:
        """Bring the block sums up to the cursors done now (caller holds the read lock)."""
        version = self._version
        if version == self._cache_version:
            return
        done = self.done.copy()  # rows done here are complete (done is set after the data)
        changed = np.flatnonzero(done != self._seen)
        if changed.size:
            stats = self._stats()
            for blk in np.unique(changed // BLOCK).tolist():
                lo = blk * BLOCK
                rows = lo + np.flatnonzero(done[lo : lo + BLOCK])
                for k, arr in enumerate(stats):
                    self._blk[k][blk] = arr[rows].sum(0)
            for k, b in enumerate(self._blk):
                np.cumsum(b, axis=0, out=self._cum[k][1:])
            self._seen = done
        self._cache_version = version

    def _direct(self, lo: int, hi: int) -> list[np.ndarray]:
        rows = lo + np.flatnonzero(self._seen[lo:hi])
        return [arr[rows].sum(0) for arr in self._stats()]

    def _range_sums(self, a: int, b: int) -> list[np.ndarray]:
        """Sums of every statistic over the done cursors in ``[a, b)``."""
        ba, bb = -(-a // BLOCK), b // BLOCK
        if ba >= bb:
            return self._direct(a, b)
        head, tail = self._direct(a, ba * BLOCK), self._direct(bb * BLOCK, b)
        return [c[bb] - c[ba] + h + t for c, h, t in zip(self._cum, head, tail, strict=True)]

    def metrics(self, upto: int | None = None, *, split: str | None = None) -> dict[str, Any]:
        """Scores over the computed windows whose whole target has been played.

        Parameters
        ----------
        upto
            The playhead: frames before it have been shown; windows with ``cursor + P <= upto``
            count (None: every computed window).
        split
            Only windows of this split (see :attr:`window_split`).

        Returns
        -------
        dict
            ``n_windows``; ``score`` (``1 - SSE / SSE_copy``, NaN without windows); ``mse``,
            ``copy_mse``; ``per_step_mse``, ``per_step_copy_mse`` (P,); ``mae``, ``copy_mae``
            (element means of ``|ŷ - y|``); ``per_step_mae``, ``per_step_copy_mae`` (P,); ``per_unit_mse``,
            ``per_unit_score`` (U,) (score NaN where copy-last has no error);
            ``region_scores`` ``{region: score}`` when regions were given ("" units skipped).

        Notes
        -----
        Sums over blocks of :data:`BLOCK` cursors are cached and brought up to date with the
        cursors computed since the last call, so a call costs O(U) plus O(BLOCK * U) per split
        range, whatever T.
        """
        T, P = self.T, self.P
        if split is not None and split not in self._split_ranges:
            raise ValueError(f"unknown split {split!r}; the recording has {sorted(self._split_ranges)}")
        hi = T if upto is None else max(0, min(T, int(upto) - P + 1))
        ranges = [(0, T)] if split is None else self._split_ranges[split]
        totals = [np.zeros(b.shape[1]) for b in self._blk]
        with self._read_lock:
            self._refresh()
            for a, b in ranges:
                b = min(b, hi)
                if b > a:
                    totals = [x + y for x, y in zip(totals, self._range_sums(a, b), strict=True)]
        sse_u, copy_u, step, copy_step, abs_step, copy_abs_step, n_arr = totals
        regions = None if self.regions is None else (self._region_names, self._region_code)
        return metrics_from_sums(sse_u, copy_u, step, copy_step, abs_step, copy_abs_step, round(float(n_arr[0])), regions=regions)

    def unit_scores(self) -> np.ndarray:
        """Per-unit score (U,) over every computed window (NaN where copy-last has no error)."""
        return self.metrics()["per_unit_score"]

    # -- export ------------------------------------------------------------------------------

    def to_dataset(self) -> xr.Dataset:
        """The computed forecasts as a dataset that round-trips through netCDF.

        Returns
        -------
        xarray.Dataset
            ``forecast`` (cursor, step, unit) float32 over the computed cursors only;
            ``activity`` (time, unit) float32, the truth; ``sse``, ``copy_sse`` (cursor, unit);
            coords ``cursor`` (frame index of the first forecast frame), ``step`` 1..P,
            ``unit`` 0..U-1, ``time`` (frame index), ``window_split`` (cursor), ``region``
            (unit) when given; attrs ``model``, ``model_kind``, ``session``, ``context``,
            ``horizon``. ``forecast[c, k, u]`` forecasts ``activity[cursor[c] + k - 1, u]``.
        """
        cur = np.flatnonzero(self.done.copy()).astype(np.int64)
        ds = xr.Dataset(
            {
                "forecast": (("cursor", "step", "unit"), self.forecast[cur].astype(np.float32)),
                "activity": (("time", "unit"), np.array(self.activity)),
                "sse": (("cursor", "unit"), self.sse[cur]),
                "copy_sse": (("cursor", "unit"), self.copy_sse[cur]),
            },
            coords={
                "cursor": cur,
                "step": np.arange(1, self.P + 1, dtype=np.int64),
                "unit": np.arange(self.U, dtype=np.int64),
                "time": np.arange(self.T, dtype=np.int64),
                "window_split": ("cursor", self.window_split[cur]),
            },
            attrs={
                "model": self.name,
                "model_kind": self.model.kind,
                "session": self.session,
                "context": self.C,
                "horizon": self.P,
                "description": "forecast[cursor, step, unit] predicts activity[cursor + step - 1, unit] from frames cursor-context..cursor-1",
            },
        )
        if self.regions is not None:
            ds = ds.assign_coords(region=("unit", self.regions))
        return ds

    def __repr__(self) -> str:
        return (
            f"RecordingForecast(model={self.name!r}, session={self.session!r}, T={self.T}, U={self.U}, C={self.C}, P={self.P}, "
            f"valid={len(self.cursors)}, done={self.fraction_done:.0%})"
        )


def metrics_from_sums(
    sse_u: np.ndarray, copy_u: np.ndarray, step: np.ndarray, copy_step: np.ndarray, abs_step: np.ndarray,
    copy_abs_step: np.ndarray, n: int, *, n_unit_windows: int | None = None, regions: tuple[list[str], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The metrics of :meth:`RecordingForecast.metrics` from error sums over ``n`` windows: per unit
    (U,) squared errors of the model and of copy-last, per step (P,) squared and absolute errors of
    both. ``n_unit_windows``: the windows the per-unit sums cover (default ``n``); ``regions``:
    (names, code per unit, -1 or ``len(names)`` for none) adds ``region_scores``."""
    U, P = len(sse_u), len(step)
    n_u = n if n_unit_windows is None else n_unit_windows
    nan = float("nan")
    # totals from the per-unit sums when they cover every window (as the per-unit scores do), else per step
    s, c = (float(sse_u.sum()), float(copy_u.sum())) if n_unit_windows is None else (float(step.sum()), float(copy_step.sum()))
    with np.errstate(divide="ignore", invalid="ignore"):
        out: dict[str, Any] = {
            "n_windows": n,
            "score": 1.0 - s / c if n and c > 0 else nan,
            "mse": s / (n * P * U) if n else nan,
            "copy_mse": c / (n * P * U) if n else nan,
            "per_step_mse": step / (n * U) if n else np.full(P, nan),
            "per_step_copy_mse": copy_step / (n * U) if n else np.full(P, nan),
            "mae": float(abs_step.sum()) / (n * P * U) if n else nan,
            "copy_mae": float(copy_abs_step.sum()) / (n * P * U) if n else nan,
            "per_step_mae": abs_step / (n * U) if n else np.full(P, nan),
            "per_step_copy_mae": copy_abs_step / (n * U) if n else np.full(P, nan),
            "per_unit_mse": sse_u / (n_u * P) if n_u else np.full(U, nan),
            "per_unit_score": np.where(copy_u > 0, 1.0 - sse_u / np.where(copy_u > 0, copy_u, 1.0), nan),
        }
    if n_unit_windows is not None:
        out["n_windows_per_unit"] = n_u
    if regions is not None:
        names, code = regions
        k = len(names)
        rs = np.bincount(code, weights=sse_u, minlength=k + 1)[:k]
        rc = np.bincount(code, weights=copy_u, minlength=k + 1)[:k]
        out["region_scores"] = {r: (1.0 - float(rs[i] / rc[i]) if n_u and rc[i] > 0 else nan) for i, r in enumerate(names)}
    return out

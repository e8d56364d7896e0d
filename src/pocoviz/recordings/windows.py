"""Torch windows over recordings: POCO's training samples (context C = 48, horizon P = 16).

Kept apart from :mod:`pocoviz.recordings.preprocess` so that the data layer (and the app) import
without torch; ``pocoviz.recordings.WindowDataset`` loads this module on first use.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from .io import corpus_sessions
from .preprocess import CONTEXT_LENGTH, PATCH_LENGTH, PREDICTION_LENGTH, SPLIT_FRACTIONS, SPLITS, Split, split_indices
from .preprocess import zscore as zscore_recording
from .schema import RecordingError, is_lazy

#: bytes of activity bands a :class:`BandCache` keeps by default (per process)
DEFAULT_CACHE_BYTES = 256 * 2**20
#: fewest frames in a band: bands are whole multiples of the store's time chunk, at least this long
MIN_BAND_FRAMES = 64


def _as_sessions(data: xr.Dataset | xr.DataTree | Sequence[xr.Dataset]) -> tuple[list[str], list[xr.Dataset]]:
    if isinstance(data, xr.DataTree):
        sessions = corpus_sessions(data)
        if not sessions:
            raise RecordingError("the corpus holds no sessions (no node with an 'activity' variable)", field="activity")
        return list(sessions), list(sessions.values())
    if isinstance(data, xr.Dataset):
        data = [data]
    dss = list(data)
    if not dss:
        raise ValueError("no recordings given")
    names = []
    for i, ds in enumerate(dss):
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"recording {i} is a {type(ds).__name__}, not an xarray.Dataset")
        sp, se = ds.attrs.get("species"), ds.attrs.get("session")
        names.append(f"{sp}/{se}" if sp and se else f"session{i}")
    return names, dss


# --------------------------------------------------------------------------------------------
# chunked (lazy) activity: time bands read on demand through a bounded cache
# --------------------------------------------------------------------------------------------


class BandCache:
    """Least-recently-used cache of activity bands (blocks of whole time chunks), bounded in bytes.

    ``get(key, load)`` returns the cached band or calls ``load()`` (one read) and keeps the result
    while the cached bytes stay within ``cap_bytes``, evicting the least recently used bands first;
    a band larger than the cap is returned without being kept. ``bytes`` never exceeds
    ``cap_bytes`` (``peak_bytes`` records the largest value it took). ``meta`` keeps small
    per-array facts (NaN rows, z-score statistics) so that one pass over a recording serves every
    split. Thread-safe; not shared between processes (each DataLoader worker builds its own).
    """

    def __init__(self, cap_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if int(cap_bytes) < 1:
            raise ValueError(f"cap_bytes must be positive, got {cap_bytes}")
        self.cap_bytes = int(cap_bytes)
        self._bands: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.meta: dict[Hashable, dict[str, Any]] = {}
        self.bytes = 0
        self.peak_bytes = 0
        self.reads = 0
        self.hits = 0
        self.evictions = 0
        self.uncached = 0
        self.bytes_read = 0

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            band = self._bands.get(key)
            if band is not None:
                self._bands.move_to_end(key)
                self.hits += 1
                return band
        band = load()
        n = int(band.nbytes)
        with self._lock:
            self.reads += 1
            self.bytes_read += n
            if key in self._bands:  # another thread read it meanwhile
                return self._bands[key]
            if n > self.cap_bytes:
                self.uncached += 1
                return band
            while self._bands and self.bytes + n > self.cap_bytes:
                _, old = self._bands.popitem(last=False)
                self.bytes -= int(old.nbytes)
                self.evictions += 1
            self._bands[key] = band
            self.bytes += n
            self.peak_bytes = max(self.peak_bytes, self.bytes)
        return band

    def clear(self) -> None:
        with self._lock:
            self._bands.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._bands)

    def stats(self) -> dict[str, int]:
        """Reads, hits, evictions, bytes now, peak bytes and the cap (JSON-able)."""
        return {
            "reads": self.reads, "hits": self.hits, "evictions": self.evictions, "uncached": self.uncached,
            "bands": len(self._bands), "bytes": self.bytes, "peak_bytes": self.peak_bytes, "cap_bytes": self.cap_bytes,
            "bytes_read": self.bytes_read,
        }  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        # a copy in another process starts empty (its own reads, its own cap)
        return {"cap_bytes": self.cap_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cap_bytes"])


def _compute(x: Any, scheduler: str | None) -> np.ndarray:
    if hasattr(x, "__dask_graph__"):
        import dask

        (x,) = dask.compute(x, scheduler=scheduler)
    return np.asarray(x)


class LazyActivity:
    """A recording's (time, unit) activity read by time bands through a :class:`BandCache`.

    A band is ``band_frames`` consecutive frames (a whole multiple of the array's time chunk, at
    least :data:`MIN_BAND_FRAMES`), read in one piece and converted to float32 as
    :class:`WindowDataset` converts an in-memory recording. With ``normalize`` each band is
    z-scored with the statistics :meth:`zscore_stats` computes in two chunked passes, equal to
    those of :func:`pocoviz.recordings.preprocess.zscore` on the loaded array, so the windows
    are those of ``WindowDataset(zscore(ds.load()))``.

    Parameters
    ----------
    data
        A chunked (Dask) array (time, unit), e.g. ``ds["activity"].transpose("time", "unit").data``.
    cache
        Where bands are kept (shared by the splits of a corpus; each process has its own).
    band_frames
        Frames per band (default: from the array's time chunks).
    normalize
        Z-score every unit (statistics over the whole recording, computed in chunks).
    scheduler
        Dask scheduler for reads (None: Dask's default, threads; DataLoader workers use
        ``"synchronous"``).
    source
        The file, for messages.
    """

    def __init__(
        self,
        data: Any,
        cache: BandCache,
        *,
        band_frames: int | None = None,
        normalize: bool = False,
        scheduler: str | None = None,
        source: str = "",
    ) -> None:
        if getattr(data, "ndim", None) != 2:
            raise RecordingError(f"must be 2-D (time, unit), got shape {getattr(data, 'shape', None)}", path=source or None, field="activity")
        self.data = data
        self.cache = cache
        self.shape: tuple[int, int] = (int(data.shape[0]), int(data.shape[1]))
        chunks = getattr(data, "chunks", None)
        native = int(chunks[0][0]) if chunks and chunks[0] else MIN_BAND_FRAMES
        if band_frames is None:
            band_frames = native * max(1, -(-MIN_BAND_FRAMES // max(native, 1)))
        if int(band_frames) < 1:
            raise ValueError(f"band_frames must be positive, got {band_frames}")
        self.band_frames = int(band_frames)
        self.normalize = bool(normalize)
        self.scheduler = scheduler
        self.source = source
        self._key = id(data)
        # keep the array alive while the cache knows it, so that its id is not reused
        self._meta = cache.meta.setdefault(("array", self._key), {"array": data})
        self._stats: tuple[np.ndarray, np.ndarray] | None = None
        if self.normalize:
            self._stats = self.zscore_stats()

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def n_bands(self) -> int:
        return -(-self.shape[0] // self.band_frames)

    @property
    def band_bytes(self) -> int:
        """Bytes of one full band as cached (float32)."""
        return self.band_frames * self.shape[1] * 4

    def rebind(self, cache: BandCache, *, scheduler: str | None = None) -> LazyActivity:
        """The same activity read through another cache (a DataLoader worker's own)."""
        new = object.__new__(LazyActivity)
        new.__dict__.update(self.__dict__)
        new.cache, new.scheduler = cache, scheduler
        new._meta = cache.meta.setdefault(("array", self._key), {"array": self.data})
        return new

    # -- reads ---------------------------------------------------------------------------------

    def _raw(self, lo: int, hi: int) -> np.ndarray:
        a = _compute(self.data[lo:hi], self.scheduler)
        return a if a.dtype.kind == "f" else a.astype(np.float64)

    def _load_band(self, b: int) -> np.ndarray:
        lo = b * self.band_frames
        a = self._raw(lo, min(lo + self.band_frames, self.shape[0]))
        if self._stats is not None:
            m, s = self._stats
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                a = (a - m.astype(a.dtype)) / s.astype(a.dtype)
        return np.ascontiguousarray(a, dtype=np.float32)

    def band(self, b: int) -> np.ndarray:
        """Band ``b`` (frames ``[b F, (b + 1) F)``), float32 (rows, U), through the cache."""
        if not 0 <= b < self.n_bands:
            raise IndexError(f"band {b} out of range for {self.n_bands} bands")
        return self.cache.get((self._key, self.normalize, self.band_frames, b), lambda: self._load_band(b))

    def window(self, start: int, length: int, cols: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Frames ``[start, start + length)``, all units or the columns ``cols``: float32 (length, U | len(cols))."""
        F = self.band_frames
        if start < 0 or start + length > self.shape[0]:
            raise IndexError(f"frames [{start}, {start + length}) outside the recording's {self.shape[0]}")
        b0, b1 = start // F, (start + length - 1) // F
        if out is None:
            out = np.empty((length, self.shape[1] if cols is None else len(cols)), np.float32)
        row = 0
        for b in range(b0, b1 + 1):
            band = self.band(b)
            lo = max(start - b * F, 0)
            hi = min(start + length - b * F, band.shape[0])
            part = band[lo:hi] if cols is None else band[lo:hi][:, cols]
            out[row : row + hi - lo] = part
            row += hi - lo
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Windows at ``starts``: float32 (len(starts), length, U)."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length, self.shape[1]), np.float32)
        for i, t in enumerate(starts.tolist()):
            self.window(t, length, out=out[i])
        return out

    # -- passes over the whole recording (one band at a time, nothing kept) ---------------------

    def _bands_raw(self):
        for lo in range(0, self.shape[0], self.band_frames):
            yield self._raw(lo, min(lo + self.band_frames, self.shape[0]))

    def scan(self) -> dict[str, Any]:
        """One chunked pass: ``nan_rows`` (T,) bool, and per unit the finite ``count`` and the
        NaN-free ``sum`` (float64, summed frame by frame as numpy's reduction over time does).
        Computed once per array and cache."""
        if "nan_rows" not in self._meta:
            T, U = self.shape
            nan_rows = np.zeros(T, dtype=bool)
            total = np.zeros(U, dtype=np.float64)
            count = np.zeros(U, dtype=np.int64)
            t = 0
            for a in self._bands_raw():
                bad = np.isnan(a)
                nan_rows[t : t + len(a)] = bad.any(axis=1)
                if bad.any():
                    a = np.where(bad, 0, a)
                    count += (~bad).sum(axis=0)
                else:
                    count += len(a)
                for r in a:  # row by row: the same order of additions as a.sum(axis=0) on the whole array
                    np.add(total, r, out=total)
                t += len(a)
            self._meta.update(nan_rows=nan_rows, sum=total, count=count)
        return self._meta

    def nan_rows(self) -> np.ndarray:
        """(T,) bool: frames where any unit is NaN (windows containing one are skipped)."""
        return self.scan()["nan_rows"]

    def zscore_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit mean and SD (float64, ``ddof=0``, NaN-aware) from block sums over two chunked
        passes; the values :func:`~pocoviz.recordings.preprocess.zscore` uses (an SD that is 0 or
        not finite is 1), to the last bit."""
        if "zscore" not in self._meta:
            sc = self.scan()
            any_nan = bool(sc["nan_rows"].any())
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = sc["sum"] / sc["count"]
            sq = np.zeros(self.shape[1], dtype=np.float64)
            for a in self._bands_raw():
                if any_nan:  # numpy's nanvar: deviations rounded to the array's dtype, squared in it
                    bad = np.isnan(a)
                    d = np.where(bad, 0, a).astype(a.dtype)
                    for i in range(len(d)):
                        np.subtract(d[i], mean, out=d[i], casting="unsafe")
                    d[bad] = 0
                    np.multiply(d, d, out=d)
                    for r in d:
                        np.add(sq, r, out=sq)
                else:  # numpy's var: deviations in float64
                    for r in a:
                        x = r - mean
                        np.add(sq, x * x, out=sq)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sd = np.sqrt(sq / sc["count"])
            sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
            self._meta["zscore"] = (mean, sd)
        return self._meta["zscore"]

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_meta"] = {}
        return d


class ArrayActivity:
    """An in-memory float32 tensor (T, U) with :class:`LazyActivity`'s window interface."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.array = tensor.numpy()
        self.shape: tuple[int, int] = (int(tensor.shape[0]), int(tensor.shape[1]))

    def window(self, start: int, length: int, cols: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        w = self.array[start : start + length]
        if cols is not None:
            w = w[:, cols]
        if out is None:
            return np.array(w, dtype=np.float32)
        out[...] = w
        return out

    def rebind(self, cache: BandCache, *, scheduler: str | None = None) -> ArrayActivity:
        return self


class WindowDataset(Dataset):
    """Sliding windows ``(context, target)`` over one or many recordings, within one split.

    Windows of ``context + horizon`` frames start every ``stride`` frames inside each split range
    of :func:`split_indices`, so none crosses a patch or split boundary; windows containing any
    NaN are skipped. Each recording is converted once to a float32 tensor (T, U); a sample is a
    view into it. A recording whose ``activity`` is chunked (Dask-backed, e.g. a Zarr store opened
    lazily) is never loaded: one chunked pass finds its NaN frames, and windows are read by time
    bands through a bounded :class:`BandCache` (:meth:`read_windows`); :meth:`recording_tensor`
    refuses it.

    Parameters
    ----------
    data
        One recording, a list of recordings, or a corpus (``xarray.DataTree``; sessions in
        :func:`~pocoviz.recordings.io.corpus_sessions` order).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    context, horizon
        C and P (defaults :data:`CONTEXT_LENGTH` = 48, :data:`PREDICTION_LENGTH` = 16).
    stride
        Frames between window starts (POCO: 1 for training; larger makes evaluation cheaper).
    patch_length, fractions
        Passed to :func:`split_indices`.
    zscore
        Standardise every unit over the whole recording first (:func:`~pocoviz.recordings.preprocess.zscore`;
        a chunked recording gets the same statistics from block sums).
    cache
        The band cache of chunked recordings (default: a new one of :data:`DEFAULT_CACHE_BYTES`).

    Attributes
    ----------
    session_names : list of str
        ``"species/session"`` per session (the corpus path for a DataTree).
    n_units : list of int
        Units per session.
    windows_per_session : list of int
        How many windows each session contributes.

    Notes
    -----
    ``ds[i]`` is a dict: ``context`` float32 (C, U), ``target`` float32 (P, U), ``session`` (int
    index into ``session_names``) and ``start`` (the window's first frame in the recording).
    ``context`` and ``target`` are views; copy before changing them in place. Batch sessions with
    different unit counts with :func:`collate_padded`.

    Examples
    --------
    >>> from pocoviz.recordings.synthetic import make_demo_corpus
    >>> ds = WindowDataset(make_demo_corpus(0, size="tiny"), split="train", stride=4)
    >>> sample = ds[0]
    >>> tuple(sample["context"].shape), tuple(sample["target"].shape), ds.session_names[sample["session"]]
    ((48, 80), (16, 80), 'zebrafish/fish0')
    """

    def __init__(
        self,
        data: xr.Dataset | xr.DataTree | Sequence[xr.Dataset],
        *,
        split: Split = "train",
        context: int = CONTEXT_LENGTH,
        horizon: int = PREDICTION_LENGTH,
        stride: int = 1,
        patch_length: int = PATCH_LENGTH,
        fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
        zscore: bool = False,
        cache: BandCache | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if context < 1 or horizon < 1 or stride < 1:
            raise ValueError(f"context, horizon and stride must be positive, got {context}, {horizon}, {stride}")
        self.split: Split = split
        self.context = int(context)
        self.horizon = int(horizon)
        self.stride = int(stride)
        self.session_names, recordings = _as_sessions(data)
        width = self.context + self.horizon
        self.cache = cache if cache is not None else BandCache()
        self._tensors: list[torch.Tensor | None] = []
        self._sources: list[LazyActivity | ArrayActivity] = []
        sessions: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        self.n_units: list[int] = []
        self.windows_per_session: list[int] = []
        for i, ds in enumerate(recordings):
            if "activity" not in ds.data_vars:
                raise RecordingError("missing", path=ds.attrs.get("source") or None, field="activity")
            if is_lazy(ds):
                src = LazyActivity(ds["activity"].transpose("time", "unit").data, self.cache, normalize=zscore, source=str(ds.attrs.get("source") or ""))
                self._tensors.append(None)
                self._sources.append(src)
                n_time, n_unit = src.shape
                bad = src.nan_rows()
            else:
                if zscore:
                    ds = zscore_recording(ds)
                a = np.asarray(ds["activity"].transpose("time", "unit").values)
                a = np.array(a, dtype=np.float32, order="C", copy=not (a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable))
                self._tensors.append(torch.from_numpy(a))
                self._sources.append(ArrayActivity(self._tensors[-1]))
                n_time, n_unit = a.shape
                bad = np.isnan(a).any(axis=1)
            self.n_units.append(n_unit)
            cum = np.concatenate([[0], np.cumsum(bad)])
            found = []
            for lo, hi in split_indices(n_time, patch_length=patch_length, fractions=fractions)[split]:
                s = np.arange(lo, hi - width + 1, self.stride, dtype=np.int64)
                found.append(s[cum[s + width] == cum[s]])
            st = np.concatenate(found) if found else np.zeros(0, np.int64)
            starts.append(st)
            sessions.append(np.full(len(st), i, dtype=np.int64))
            self.windows_per_session.append(len(st))
        self._session = np.concatenate(sessions)
        self._start = np.concatenate(starts)

    def __len__(self) -> int:
        return len(self._start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self._start)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        s, t = int(self._session[i]), int(self._start[i])
        L = self.context + self.horizon
        tensor = self._tensors[s]
        w = tensor[t : t + L] if tensor is not None else torch.from_numpy(self._sources[s].window(t, L))
        return {"context": w[: self.context], "target": w[self.context :], "session": s, "start": t}

    def is_lazy(self, session: int) -> bool:
        """True when ``session`` is read from chunked storage (not held as a tensor)."""
        return self._tensors[session] is None

    @property
    def lazy(self) -> bool:
        """True when any session is read from chunked storage."""
        return any(t is None for t in self._tensors)

    def source(self, session: int) -> LazyActivity | ArrayActivity:
        """Where ``session``'s windows are read from (:class:`LazyActivity` or :class:`ArrayActivity`)."""
        return self._sources[session]

    def recording_tensor(self, session: int) -> torch.Tensor:
        """The whole recording of ``session`` as the float32 tensor (T, U) windows are cut from.

        Refused for a chunked recording (it is never loaded whole): use :meth:`read_windows`.
        """
        tensor = self._tensors[session]
        if tensor is None:
            raise ValueError(f"session {self.session_names[session]!r} is read from chunked storage and never loaded whole; use read_windows")
        return tensor

    def read_windows(self, session: int, starts: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The windows of ``session`` starting at ``starts``: float32 (len(starts), C + P, U).

        In memory this is one gather from the recording's tensor; a chunked recording is read band
        by band through the cache (same values).
        """
        L = self.context + self.horizon
        tensor = self._tensors[session]
        if tensor is not None:
            st = torch.as_tensor(starts)
            return tensor[st[:, None] + torch.arange(L)]
        return torch.from_numpy(self._sources[session].windows(np.asarray(starts, dtype=np.int64), L))

    def __repr__(self) -> str:
        return (
            f"WindowDataset(split={self.split!r}, sessions={len(self.session_names)}, windows={len(self)}, "
            f"context={self.context}, horizon={self.horizon}, stride={self.stride})"
        )


def collate_padded(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack :class:`WindowDataset` samples, padding unit counts to the largest with zeros.

    Parameters
    ----------
    batch
        Samples from :class:`WindowDataset` (any mix of sessions).

    Returns
    -------
    dict
        ``context`` (B, C, U_max) and ``target`` (B, P, U_max) float32, zero where padded;
        ``unit_mask`` (B, U_max) bool, True for real units; ``session`` (B,) and ``start`` (B,) int64.

    Examples
    --------
    >>> import torch
    >>> a = {"context": torch.ones(4, 2), "target": torch.ones(1, 2), "session": 0, "start": 0}
    >>> b = {"context": torch.ones(4, 3), "target": torch.ones(1, 3), "session": 1, "start": 5}
    >>> collate_padded([a, b])["unit_mask"]
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    if not batch:
        raise ValueError("empty batch")
    B = len(batch)
    C, _ = batch[0]["context"].shape
    P = batch[0]["target"].shape[0]
    u_max = max(int(b["context"].shape[1]) for b in batch)
    context = torch.zeros((B, C, u_max), dtype=torch.float32)
    target = torch.zeros((B, P, u_max), dtype=torch.float32)
    mask = torch.zeros((B, u_max), dtype=torch.bool)
    for i, b in enumerate(batch):
        u = b["context"].shape[1]
        if b["context"].shape[0] != C or b["target"].shape[0] != P:
            raise ValueError("all samples in a batch need the same context and horizon lengths")
        context[i, :, :u] = b["context"]
        target[i, :, :u] = b["target"]
        mask[i, :u] = True
    return {
        "context": context,
        "target": target,
        "unit_mask": mask,
        "session": torch.tensor([int(b["session"]) for b in batch], dtype=torch.int64),
        "start": torch.tensor([int(b["start"]) for b in batch], dtype=torch.int64),
    }

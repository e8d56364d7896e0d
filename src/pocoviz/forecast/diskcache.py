"""Forecasts of a whole recording kept on disk, shared by every browser session and server process.

At whole-brain size (ZAPBench's fish: 71,721 units × 7,879 frames) one model's forecasts at every
cursor are T·P·U float16 numbers, 18 GB: they cannot live in RAM as
:class:`~pocoviz.forecast.playback.RecordingForecast` keeps them. :class:`DiskForecast` has the same
reading interface (``done``, ``valid``, :meth:`~DiskForecast.lines`, :meth:`~DiskForecast.metrics`,
...) and keeps the forecasts in a chunked Zarr array under a cache folder:

- the folder is ``$POCOVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/pocoviz``, else ``~/.cache/pocoviz``
  (:func:`cache_root`), never inside the data directory;
- an entry (``forecasts/<key>/``) is keyed by the recording's identity (resolved path, size,
  modification time, session: :func:`path_identity`) and the model's checksum
  (:func:`model_checksum`), so a changed file or model gets a new entry;
- cursors are computed in blocks of :data:`BLOCK`; a block's forecasts go into the Zarr array
  (each chunk file is written atomically by Zarr), then its marker ``blocks/<b>.npz`` (its error
  sums and a CRC of each chunk written) is written to a temporary name and renamed: a block
  without a readable marker is not done, and a chunk whose CRC differs is treated as missing, so
  partial or corrupt blocks are ignored and computed again;
- a block being computed holds a claim file, so other processes compute other blocks; readers
  pick up blocks finished elsewhere (:meth:`DiskForecast.refresh`);
- the cache's total size is bounded (``$POCOVIZ_CACHE_MAX_BYTES``, default
  :data:`DEFAULT_MAX_BYTES`): the least recently used entries are removed first (:func:`evict`).

Metrics come from sums: per cursor and step (squared and absolute error of the model and of
copy-last, (T, P) each) and per block and unit ((blocks, U)); the score, MSE, MAE and the per-step
errors equal :meth:`RecordingForecast.metrics`; per-unit and per-region scores count the blocks
whose every cursor is included (all of them once the pass is complete).

The recording is read through an *activity source* (:class:`ArrayActivity` for an in-memory
array, :class:`ChunkedActivity` for a Dask-backed one): slabs of all units over a few frames,
z-scored with statistics from one chunked pass (equal to :func:`pocoviz.recordings.preprocess.zscore`'s),
never the whole array at once.

Examples
--------
>>> import numpy as np
>>> from pocoviz.forecast import SessionInfo, build_model
>>> x = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
>>> model = build_model("NLinear", [SessionInfo("demo/a", 5, "demo")])
>>> fc = DiskForecast(model, ArrayActivity(x), "demo/a", identity={"name": "doc"}, root=tmp)  # doctest: +SKIP
>>> fc.compute()                                                                                 # doctest: +SKIP
237
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..recordings.preprocess import split_indices
from .base import Forecaster
from .data import MAX_UNIT_WINDOWS
from .metrics import autocast_context
from .playback import _model_device, metrics_from_sums, resolve_session
from .unit_subset import forecast_in_unit_slices

#: cursors per block (the unit of computing, of atomic writes and of per-unit sums)
BLOCK = 64
#: units per chunk of the stored forecasts: a chunk is (BLOCK, P, UNIT_CHUNK) float16 (2 MB at P = 16)
UNIT_CHUNK = 1024
#: a window of more units than this is computed this many units at a time (POCO: the encoder once,
#: its decoder per slice), so that the units on screen at a new cursor need not wait for a whole
#: window of a whole-brain recording (2.6 s for POCO at 71,721 units on one CPU thread)
UNIT_SLICE = 8192
#: default bound of the cache folder's total size (bytes); ``POCOVIZ_CACHE_MAX_BYTES`` overrides it
DEFAULT_MAX_BYTES = 20 * 10**9
#: a claim on a block older than this (seconds) is stale: its process died or gave up
CLAIM_STALE_S = 600.0
#: entries used less than this many seconds ago are never evicted (another session may read them)
IN_USE_S = 60.0
LAYOUT = "pocoviz-forecast-cache-1"


# ==================================================================================== where and what
def cache_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``$POCOVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/pocoviz``, else
    ``~/.cache/pocoviz``. ValueError when it lies inside ``data_dir`` (the data directory is
    never written to)."""
    env = os.environ.get("POCOVIZ_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "pocoviz"
    root = root.expanduser().resolve()
    if data_dir is not None:
        d = Path(data_dir).expanduser().resolve()
        if root == d or d in root.parents:
            raise ValueError(f"the cache folder {root} lies inside the data directory {d}: set POCOVIZ_CACHE_DIR elsewhere")
    return root


def max_cache_bytes() -> int:
    """The cache's size bound: ``$POCOVIZ_CACHE_MAX_BYTES`` or :data:`DEFAULT_MAX_BYTES`."""
    try:
        return int(float(os.environ.get("POCOVIZ_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES)))
    except ValueError:
        return DEFAULT_MAX_BYTES


def path_identity(path: str | os.PathLike, session: str = "") -> dict[str, Any]:
    """What identifies a recording's file: resolved path, size and modification time (for a
    folder such as a Zarr store: total size and latest time of its files), and the session."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        size, mtime = 0, p.stat().st_mtime_ns
        for folder, _, files in os.walk(p):
            for f in files:
                st = os.stat(os.path.join(folder, f))
                size += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
    else:
        st = p.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return {"path": str(p), "size": int(size), "mtime_ns": int(mtime), "session": str(session)}


def model_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of a model's kind, configuration and weights (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    h.update(str(getattr(model, "kind", type(model).__name__)).encode())
    hp = getattr(model, "hp", None)
    if hp is not None:
        h.update(json.dumps(hp, sort_keys=True, default=str).encode())
    h.update(json.dumps([getattr(s, "name", str(s)) for s in getattr(model, "sessions", [])]).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write_bytes(path, buf.getvalue())


def _folder_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(folder, f)).st_size
            except OSError:
                pass
    return total


def evict(root: str | os.PathLike | None = None, max_bytes: int | None = None, *, keep: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Remove the least recently used forecast entries until the cache holds at most
    ``max_bytes``; entries in ``keep`` and entries used in the last :data:`IN_USE_S` seconds stay.
    Returns the removed entries' folders."""
    base = (Path(root) if root is not None else cache_root()) / "forecasts"
    limit = max_cache_bytes() if max_bytes is None else int(max_bytes)
    if not base.is_dir():
        return []
    keep_set = {Path(k).resolve() for k in keep}
    entries = []
    for e in base.iterdir():
        if not e.is_dir() or e.name.startswith("."):
            continue
        used = e / "used"
        try:
            last = used.stat().st_mtime
        except OSError:
            last = e.stat().st_mtime
        entries.append((last, e, _folder_size(e)))
    total = sum(s for _, _, s in entries) + sum(_folder_size(e) for e in base.iterdir() if e.is_dir() and e.name.startswith("."))
    removed = []
    now = time.time()
    for last, e, size in sorted(entries, key=lambda x: x[0]):
        if total <= limit:
            break
        if e.resolve() in keep_set or now - last < IN_USE_S:
            continue
        trash = base / f".evicted-{uuid.uuid4().hex}"
        try:
            os.replace(e, trash)  # atomic: readers see the whole entry or none
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)
        total -= size
        removed.append(e)
    return removed


class _Preempted(Exception):
    """A window's computation gave way to the units on screen."""


# ==================================================================================== activity sources
class ArrayActivity:
    """An in-memory (T, U) recording, already as the model sees it (z-scored float32)."""

    def __init__(self, activity: np.ndarray):
        a = np.asarray(activity, dtype=np.float32)
        if a.ndim != 2 or min(a.shape) < 1:
            raise ValueError(f"activity must be (time, unit) with at least one frame and unit, got shape {a.shape}")
        self.array = np.ascontiguousarray(a)
        self.T, self.U = (int(n) for n in a.shape)

    def slab(self, t0: int, t1: int) -> np.ndarray:
        """Frames ``t0..t1-1`` of every unit, (t1 - t0, U) float32."""
        return self.array[t0:t1]

    def columns(self, t0: int, t1: int, units: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``t0..t1-1`` of ``units``, (t1 - t0, k) float32."""
        return self.array[t0:t1][:, np.asarray(units, dtype=np.int64)]


def chunked_stats(data: Any, rows: int = 256, check: Callable[[], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit NaN-aware mean and population SD (float64) of a (T, U) array read ``rows``
    frames at a time (any array that slices to numpy, or a Dask array), combined with Chan's
    pairwise update: the numbers of ``np.nanmean``/``np.nanstd`` over the whole array.
    ``check`` is called before each block (it may raise to abandon the pass)."""
    T, U = (int(n) for n in data.shape)
    n = np.zeros(U)
    mean = np.zeros(U)
    m2 = np.zeros(U)
    for t0 in range(0, T, rows):
        if check is not None:
            check()
        x = np.asarray(_compute(data[t0 : min(T, t0 + rows)]), dtype=np.float64)
        ok = np.isfinite(x)
        nb = ok.sum(0).astype(np.float64)
        xb = np.where(ok, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = np.where(nb > 0, xb.sum(0) / np.where(nb > 0, nb, 1), 0.0)
            m2b = np.where(ok, (x - mb) ** 2, 0.0).sum(0)
            tot = n + nb
            delta = mb - mean
            w = np.where(tot > 0, nb / np.where(tot > 0, tot, 1), 0.0)
            mean = mean + delta * w
            m2 = m2 + m2b + delta**2 * n * w
        n = tot
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.where(n > 0, m2 / np.where(n > 0, n, 1), np.nan))
        mean = np.where(n > 0, mean, np.nan)
    return mean, sd


def _compute(x: Any) -> np.ndarray:
    if hasattr(x, "compute") and not isinstance(x, np.ndarray):
        import dask

        with dask.config.set(scheduler="synchronous"):  # one thread: the server keeps the other core
            return np.asarray(x.compute())
    return np.asarray(x)


class ChunkedActivity:
    """A (T, U) recording read as slabs of frames from chunked storage (a Dask array, a Zarr
    array, a memory map), z-scored on the fly unless it is z-scored already.

    A slab that no cached slab holds is read as asked plus ``readahead`` frames (the next cursors'
    contexts during playback come from memory), in one read of the storage; the last
    ``max_slabs`` slabs stay decoded.

    Parameters
    ----------
    data
        The (time, unit) array; slicing it reads only the chunks asked for.
    zscored
        True when ``data`` is z-scored already (``activity.attrs["units"] == "z-score"``).
    stats_path
        Where to keep the z-scoring statistics (an ``.npz``): read when present, else computed in
        one chunked pass (:func:`chunked_stats`) on first use and written there.
    rows
        Frames per block of the statistics' pass (the storage's time chunk: 256 for the layout).
    readahead
        Frames read beyond what a slab asks for.
    max_slabs
        Slabs kept decoded (each about (48 + readahead) × U float32: 23 MB at 71,721 units).
    """

    def __init__(self, data: Any, *, zscored: bool, stats_path: str | os.PathLike | None = None, rows: int = 256,
                 readahead: int = 32, max_slabs: int = 4):  # fmt: skip
        self.data = data
        self.T, self.U = (int(n) for n in data.shape)
        self.zscored = bool(zscored)
        self.stats_path = None if stats_path is None else Path(stats_path)
        self.rows = max(1, int(rows))
        self.readahead = max(0, int(readahead))
        self.max_slabs = max(1, int(max_slabs))
        self._slabs: list[tuple[int, int, np.ndarray]] = []  # most recent last
        self._lock = threading.RLock()
        self._stats: tuple[np.ndarray, np.ndarray] | None = None
        self.reads = 0  # slabs read from storage (for tests and the bench)

    def stats_ready(self) -> bool:
        """Whether frames can be read without the statistics' pass (z-scored data, or statistics
        computed or kept on disk)."""
        return self.zscored or self._stats is not None or (self.stats_path is not None and self.stats_path.is_file())

    def stats(self, check: Callable[[], Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) float32 of each unit as :func:`~pocoviz.recordings.preprocess.zscore` applies
        them (SD 1 where it is 0 or undefined). The first call may read the whole recording once,
        a row block at a time (``check`` is called before each, and may raise to abandon it)."""
        with self._lock:
            if self._stats is None:
                got = None
                if self.stats_path is not None and self.stats_path.is_file():
                    try:
                        with np.load(self.stats_path) as z:
                            m, s = np.asarray(z["mean"]), np.asarray(z["sd"])
                        if m.shape == (self.U,) and s.shape == (self.U,):
                            got = (m, s)
                    except Exception:
                        got = None  # unreadable: compute again
                if got is None:
                    got = chunked_stats(self.data, self.rows, check)
                    if self.stats_path is not None:
                        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
                        _atomic_npz(self.stats_path, mean=got[0], sd=got[1])
                m, s = got
                s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
                self._stats = (m.astype(np.float32), s.astype(np.float32))
            return self._stats

    def _read(self, a: int, b: int, cols: np.ndarray | None = None) -> np.ndarray:
        """Frames ``a..b-1`` (of ``cols``) from storage, z-scored, float32."""
        if cols is None:
            x = self.data[a:b]
        elif hasattr(self.data, "oindex"):  # a Zarr array
            x = self.data.oindex[a:b, cols]
        else:
            x = self.data[a:b][:, cols]
        x = np.array(_compute(x), dtype=np.float32)  # a copy: never scale the source in place
        if not self.zscored:
            m, s = self.stats()
            if cols is not None:
                m, s = m[cols], s[cols]
            x -= m
            x /= s
        return x

    def slab(self, t0: int, t1: int) -> np.ndarray:
        """Frames ``t0..t1-1`` of every unit, (t1 - t0, U) float32, z-scored."""
        t0, t1 = max(0, int(t0)), min(self.T, int(t1))
        if t1 <= t0:
            return np.zeros((0, self.U), np.float32)
        with self._lock:
            for i, (a, b, x) in enumerate(self._slabs):
                if a <= t0 and t1 <= b:
                    self._slabs.append(self._slabs.pop(i))
                    return x[t0 - a : t1 - a]
            b = min(self.T, t1 + self.readahead)
            x = np.ascontiguousarray(self._read(t0, b))
            self.reads += 1
            self._slabs.append((t0, b, x))
            del self._slabs[: -self.max_slabs]
            return x[: t1 - t0]

    def columns(self, t0: int, t1: int, units: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames ``t0..t1-1`` of ``units``, (t1 - t0, k) float32 (from a cached slab, else only
        those units' chunks are read)."""
        cols = np.asarray(units, dtype=np.int64)
        t0, t1 = max(0, int(t0)), min(self.T, int(t1))
        with self._lock:
            for a, b, x in self._slabs:
                if a <= t0 and t1 <= b:
                    return x[t0 - a : t1 - a][:, cols]
        return self._read(t0, t1, cols) if t1 > t0 else np.zeros((0, len(cols)), np.float32)


# ==================================================================================== the forecasts
class DiskForecast:
    """Forecasts of one model at every cursor of one recording, in an on-disk chunked cache.

    A cursor ``t`` is the first forecast frame (context ``t-C..t-1``, forecast ``t..t+P-1``), as
    in :class:`~pocoviz.forecast.playback.RecordingForecast`, whose reading interface this class
    shares: ``T, U, C, P``, ``valid``, ``done``, ``cursors``, ``fraction_done``,
    :meth:`lines`, :meth:`context`, :meth:`metrics`, :meth:`unit_scores`, :meth:`advance`.

    Parameters
    ----------
    model
        Any forecaster.
    activity
        An activity source (:class:`ArrayActivity`, :class:`ChunkedActivity`): ``T``, ``U``,
        ``slab(t0, t1)``.
    session
        The session name as the model knows it (a session-free model gets it registered).
    identity
        What identifies the recording (:func:`path_identity`); with the model's checksum, the
        cache key.
    regions : sequence of str, length U, optional
        Per-unit regions for the per-region scores.
    splits
        ``{"train": [(start, stop), ...], ...}`` (default: ``split_indices(T)``).
    root
        The cache folder (default :func:`cache_root`).
    block, unit_chunk
        Cursors per block and units per stored chunk.
    max_bytes
        The cache's size bound (default :func:`max_cache_bytes`); checked when the entry is
        created and after each block written.
    name
        A display name (default ``model.kind``).
    read_only
        Open an existing entry (e.g. one of a ``pocoviz forecast`` store,
        :mod:`pocoviz.forecast.batch`) without ever writing under ``root``: no entry is created,
        nothing is claimed, touched, evicted or removed, and :meth:`compute` computes nothing.
        ValueError when the entry does not exist or does not fit.
    evict
        Whether to bound ``root``'s size (False for a store that is not a cache: a
        ``pocoviz forecast`` output keeps every entry).

    Notes
    -----
    Valid cursors: ``C <= t <= T-P`` whose window holds no NaN; a block's NaN windows are found
    when it is computed (until then they count as valid and pending). One writer at a time per
    instance (a lock); any number of readers.
    """

    unit_window_budget: int = MAX_UNIT_WINDOWS
    unit_slice: int = UNIT_SLICE

    def __init__(
        self,
        model: Forecaster,
        activity: Any,
        session: str,
        *,
        identity: dict[str, Any],
        regions: Sequence[str] | None = None,
        splits: dict[str, list[tuple[int, int]]] | None = None,
        root: str | os.PathLike | None = None,
        block: int = BLOCK,
        unit_chunk: int = UNIT_CHUNK,
        max_bytes: int | None = None,
        device: torch.device | str | None = None,
        name: str | None = None,
        read_only: bool = False,
        evict: bool = True,
    ) -> None:
        import zarr

        self.model = model
        self.activity = activity
        self.T, self.U = int(activity.T), int(activity.U)
        self.C, self.P = int(model.context), int(model.horizon)
        self.session = str(session)
        self.name = str(name) if name else model.kind
        self.session_index = resolve_session(model, self.session, self.U)
        self.device = _model_device(model) if device is None else torch.device(device)
        if device is not None:
            model.to(self.device)
        self.block = int(block)
        self.unit_chunk = int(min(unit_chunk, self.U))
        self.read_only = bool(read_only)
        self.evicting = bool(evict) and not self.read_only
        self.root = Path(root) if root is not None else cache_root()
        self.max_bytes = max_cache_bytes() if max_bytes is None else int(max_bytes)
        self.identity = dict(identity)
        self.checksum = model_checksum(model)
        self.key = _key(LAYOUT, self.identity, self.checksum, self.session_index, self.T, self.U, self.C, self.P, self.block, self.unit_chunk)
        self.path = self.root / "forecasts" / self.key
        if regions is not None:
            r = np.asarray([("" if x is None else str(x)) for x in regions]).astype(str)
            if r.shape != (self.U,):
                raise ValueError(f"regions must name one region per unit ({self.U}), got {len(r)}")
            self.regions: np.ndarray | None = r
            self._region_names = sorted(set(r.tolist()) - {""})
            lookup = {x: i for i, x in enumerate(self._region_names)}
            self._region_code = np.array([lookup.get(x, len(lookup)) for x in r.tolist()], dtype=np.int64)
        else:
            self.regions = None

        T, C, P = self.T, self.C, self.P
        self.valid = np.zeros(T, dtype=bool)
        self.valid[C : max(C, T - P + 1)] = True
        self.done = np.zeros(T, dtype=bool)
        self.n_blocks = -(-T // self.block)
        self.block_done = np.zeros(self.n_blocks, dtype=bool)
        self.sse_step = np.full((T, P), np.nan)
        self.sae_step = np.full((T, P), np.nan)
        self.copy_sse_step = np.full((T, P), np.nan)
        self.copy_sae_step = np.full((T, P), np.nan)
        self._unit_sse = np.zeros((self.n_blocks, self.U), np.float32)
        self._unit_copy = np.zeros((self.n_blocks, self.U), np.float32)
        self._crc: dict[int, np.ndarray] = {}
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
        self._write_lock = threading.Lock()
        self._read_lock = threading.RLock()
        self._partial: dict[str, Any] | None = None  # the block being computed in this process
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # decoded stored chunks
        self._last_refresh = 0.0
        self._last_touch = 0.0
        self.blocks_written = 0
        self._open(zarr)
        self.refresh(force=True)

    # -- the entry -------------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {"layout": LAYOUT, "identity": self.identity, "model_checksum": self.checksum, "model": self.name,
                "model_kind": self.model.kind, "session": self.session, "session_index": self.session_index,
                "T": self.T, "U": self.U, "C": self.C, "P": self.P, "block": self.block, "unit_chunk": self.unit_chunk}  # fmt: skip

    def _entry_ok(self) -> bool:
        try:
            meta = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        want = self._meta()
        return all(meta.get(k) == want[k] for k in ("layout", "model_checksum", "T", "U", "C", "P", "block", "unit_chunk", "session"))

    def _open(self, zarr: Any) -> None:
        if self.read_only:
            if not self._entry_ok():
                raise ValueError(f"{self.path}: no forecast entry of this model and recording here (meta.json missing or different)")
            self._array = zarr.open_array(str(self.path / "forecast.zarr"), mode="r")
            return
        base = self.path.parent
        base.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self._entry_ok():
            bad = base / f".corrupt-{uuid.uuid4().hex}"
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            shutil.rmtree(bad, ignore_errors=True)
        if not self.path.exists():
            tmp = base / f".new-{uuid.uuid4().hex}"
            tmp.mkdir()
            zarr.create_array(
                store=str(tmp / "forecast.zarr"), shape=(self.T, self.P, self.U), dtype="float16",
                chunks=(self.block, self.P, self.unit_chunk), fill_value=np.nan, compressors=None, zarr_format=3,
            )  # fmt: skip
            (tmp / "blocks").mkdir()
            (tmp / "meta.json").write_text(json.dumps(self._meta(), indent=1))
            (tmp / "used").touch()
            try:
                os.rename(tmp, self.path)  # atomic; another process may have won the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
            if self.evicting:
                evict(self.root, self.max_bytes, keep=[self.path])
        self._array = zarr.open_array(str(self.path / "forecast.zarr"), mode="r+")
        self.touch(force=True)

    def touch(self, force: bool = False) -> None:
        """Mark the entry as used now (the eviction order), at most every 10 s."""
        if self.read_only:
            return
        now = time.time()
        if force or now - self._last_touch > 10:
            self._last_touch = now
            try:
                os.utime(self.path / "used")
            except OSError:
                try:
                    (self.path / "used").touch()
                except OSError:
                    pass

    def _marker(self, b: int) -> Path:
        return self.path / "blocks" / f"{b}.npz"

    def refresh(self, force: bool = False) -> int:
        """Load the markers of blocks finished since the last call (by this or another process);
        returns how many. An unreadable or inconsistent marker is removed (its block is computed
        again)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < 1.0:
            return 0
        self._last_refresh = now
        try:
            names = os.listdir(self.path / "blocks")
        except OSError:
            return 0
        n = 0
        for fname in names:
            if not fname.endswith(".npz") or fname.startswith("."):
                continue
            try:
                b = int(fname[:-4])
            except ValueError:
                continue
            if not 0 <= b < self.n_blocks or self.block_done[b]:
                continue
            try:
                with np.load(self._marker(b)) as z:
                    got = {k: np.asarray(z[k]) for k in z.files}
                self._apply_marker(b, got)
                n += 1
            except Exception:
                if self.read_only:
                    continue
                try:
                    os.unlink(self._marker(b))
                except OSError:
                    pass
        return n

    def _block_range(self, b: int) -> tuple[int, int]:
        return b * self.block, min(self.T, (b + 1) * self.block)

    def _apply_marker(self, b: int, m: dict[str, np.ndarray]) -> None:
        lo, hi = self._block_range(b)
        n, P, U = hi - lo, self.P, self.U
        n_chunks = -(-U // self.unit_chunk)
        shapes = {"valid": (n,), "sse_step": (n, P), "sae_step": (n, P), "copy_sse_step": (n, P), "copy_sae_step": (n, P),
                  "unit_sse": (U,), "unit_copy": (U,), "crc": (n_chunks,)}  # fmt: skip
        for k, shape in shapes.items():
            if k not in m or m[k].shape != shape:
                raise ValueError(f"marker of block {b}: {k} missing or of the wrong shape")
        valid = m["valid"].astype(bool)
        with self._read_lock:
            self.sse_step[lo:hi] = m["sse_step"]
            self.sae_step[lo:hi] = m["sae_step"]
            self.copy_sse_step[lo:hi] = m["copy_sse_step"]
            self.copy_sae_step[lo:hi] = m["copy_sae_step"]
            self._unit_sse[b] = m["unit_sse"]
            self._unit_copy[b] = m["unit_copy"]
            self._crc[b] = m["crc"].astype(np.int64)
            self.valid[lo:hi] = valid
            self.block_done[b] = True
            self.done[lo:hi] = valid  # last: readers trust done rows

    def _drop_block(self, b: int) -> None:
        """Forget a block whose stored forecasts are corrupt: it will be computed again."""
        lo, hi = self._block_range(b)
        with self._read_lock:
            self.done[lo:hi] = False
            self.block_done[b] = False
            self.valid[lo:hi] = (np.arange(lo, hi) >= self.C) & (np.arange(lo, hi) <= self.T - self.P)
            self._unit_sse[b] = 0
            self._unit_copy[b] = 0
            for k in [k for k in self._chunks if k[0] == b]:
                del self._chunks[k]
        if self.read_only:
            return
        try:
            os.unlink(self._marker(b))
        except OSError:
            pass

    # -- state ------------------------------------------------------------------------------------

    @property
    def cursors(self) -> np.ndarray:
        """The valid cursors known now, sorted."""
        return np.flatnonzero(self.valid).astype(np.int64)

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    @property
    def fraction_done(self) -> float:
        n = self.n_valid
        return float(self.done.sum()) / n if n else 1.0

    @property
    def batch_size(self) -> int:
        return max(1, min(256, self.unit_window_budget // self.U))

    def __repr__(self) -> str:
        return f"DiskForecast(model={self.name!r}, session={self.session!r}, T={self.T}, U={self.U}, done={self.fraction_done:.0%}, path={str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------------------

    def context(self, cursors: Sequence[int] | np.ndarray) -> np.ndarray:
        """Contexts (b, C, U) float32 of ``cursors``, read as one slab."""
        c = np.asarray(cursors, dtype=np.int64)
        lo, hi = int(c.min()) - self.C, int(c.max())
        slab = self.activity.slab(lo, hi)
        return np.stack([slab[t - self.C - lo : t - lo] for t in c.tolist()])

    def _chunk(self, b: int, j: int) -> np.ndarray | None:
        key = (b, j)
        with self._read_lock:
            got = self._chunks.get(key)
            if got is not None:
                self._chunks.move_to_end(key)
                return got
        lo, hi = self._block_range(b)
        u0, u1 = j * self.unit_chunk, min(self.U, (j + 1) * self.unit_chunk)
        try:
            x = np.ascontiguousarray(self._array[lo:hi, :, u0:u1])
        except Exception:
            x = None
        crc = self._crc.get(b)
        if x is None or crc is None or zlib.crc32(x.tobytes()) != int(crc[j]):
            self._drop_block(b)
            return None
        with self._read_lock:
            self._chunks[key] = x
            while len(self._chunks) > 32:
                self._chunks.popitem(last=False)
        return x

    def lines(self, t: int, units: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """(P, k) float32 forecasts of ``units`` at cursor ``t``, or None while not computed."""
        if not 0 <= t < self.T or not self.done[t]:
            return None
        cols = np.asarray(units, dtype=np.int64)
        part = self._partial
        b = t // self.block
        if part is not None and part["b"] == b:
            return part["forecast"][t - part["lo"]][:, cols].astype(np.float32)
        out = np.empty((self.P, len(cols)), np.float32)
        lo = b * self.block
        for j in np.unique(cols // self.unit_chunk).tolist():
            x = self._chunk(b, j)
            if x is None:
                return None
            sel = np.flatnonzero(cols // self.unit_chunk == j)
            out[:, sel] = x[t - lo][:, cols[sel] - j * self.unit_chunk]
        self.touch()
        return out

    def forecast_at(self, cursors: Sequence[int] | np.ndarray, units: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n, P, k) float32 forecasts of ``units`` at computed ``cursors`` (NaN where not computed)."""
        cols = np.asarray(units, dtype=np.int64)
        out = np.full((len(cursors), self.P, len(cols)), np.nan, np.float32)
        for i, t in enumerate(np.asarray(cursors, dtype=np.int64).tolist()):
            got = self.lines(t, cols)
            if got is not None:
                out[i] = got
        return out

    # -- computing --------------------------------------------------------------------------------

    def _claim(self, b: int) -> bool:
        path = self.path / "blocks" / f".{b}.claim"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime > CLAIM_STALE_S:
                    os.utime(path)
                    return True
            except OSError:
                return self._claim(b)
            return False
        except OSError:
            return True  # a read-only cache: compute without claiming

    def _release(self, b: int) -> None:
        try:
            os.unlink(self.path / "blocks" / f".{b}.claim")
        except OSError:
            pass

    def _start_block(self, b: int) -> dict[str, Any]:
        lo, hi = self._block_range(b)
        C, P, U = self.C, self.P, self.U
        a, z = max(0, lo - C), min(self.T, hi + P - 1)
        slab = self.activity.slab(a, z)
        bad = np.isnan(slab).any(axis=1)
        cum = np.concatenate([[0], np.cumsum(bad)])
        ts = np.arange(lo, hi)
        valid = (ts >= C) & (ts <= self.T - P)
        ok = np.zeros(hi - lo, dtype=bool)
        ok[valid] = cum[ts[valid] + P - a] == cum[ts[valid] - C - a]
        n = hi - lo
        return {
            "b": b, "lo": lo, "hi": hi, "a": a, "slab": torch.from_numpy(np.ascontiguousarray(slab)), "valid": ok,
            "todo": [int(t) for t in ts[ok]], "forecast": np.full((n, P, U), np.nan, np.float16),
            "sse_step": np.full((n, P), np.nan), "sae_step": np.full((n, P), np.nan),
            "copy_sse_step": np.full((n, P), np.nan), "copy_sae_step": np.full((n, P), np.nan),
            "unit_sse": np.zeros(U), "unit_copy": np.zeros(U),
        }  # fmt: skip

    def _finish_block(self, part: dict[str, Any]) -> None:
        b, lo, hi = part["b"], part["lo"], part["hi"]
        f = part["forecast"]
        self._array[lo:hi] = f
        crc = np.array([zlib.crc32(np.ascontiguousarray(f[:, :, u0 : u0 + self.unit_chunk]).tobytes())
                        for u0 in range(0, self.U, self.unit_chunk)], dtype=np.int64)  # fmt: skip
        marker = {k: part[k] for k in ("valid", "sse_step", "sae_step", "copy_sse_step", "copy_sae_step")}
        marker.update(unit_sse=part["unit_sse"].astype(np.float32), unit_copy=part["unit_copy"].astype(np.float32), crc=crc)
        _atomic_npz(self._marker(b), **marker)
        self._apply_marker(b, marker)
        self.blocks_written += 1
        self._partial = None
        self._release(b)
        self.touch()
        if self.evicting and self.blocks_written % 8 == 1:
            evict(self.root, self.max_bytes, keep=[self.path])

    def _ensure_entry(self) -> None:
        """Open the entry again when it vanished (evicted by another process, or removed by
        hand): everything known of it is forgotten and computed again."""
        if self.read_only or (self.path / "meta.json").is_file():
            return
        import zarr

        with self._read_lock:
            self.done[:] = False
            self.block_done[:] = False
            self.valid[:] = False
            self.valid[self.C : max(self.C, self.T - self.P + 1)] = True
            self._unit_sse[:] = 0
            self._unit_copy[:] = 0
            self._crc.clear()
            self._chunks.clear()
        self._partial = None
        self._open(zarr)

    def _next_block(self, start: int | None) -> int | None:
        """The first block not done (nor claimed elsewhere) from ``start``'s block forward, wrapping."""
        self._ensure_entry()
        self.refresh()
        first = 0 if start is None else min(self.n_blocks - 1, max(0, int(start)) // self.block)
        for k in range(self.n_blocks):
            b = (first + k) % self.n_blocks
            lo, hi = self._block_range(b)
            if self.block_done[b] or not self.valid[lo:hi].any():
                continue
            if self._claim(b):
                if self._marker(b).exists():  # finished elsewhere meanwhile
                    self._release(b)
                    self.refresh(force=True)
                    continue
                return b
        return None

    @torch.inference_mode()
    def _run(self, part: dict[str, Any], rows: list[int], preempt: Callable[[], bool] | None = None) -> None:
        C, P = self.C, self.P
        a = part["a"]
        slab = part["slab"]
        idx = torch.as_tensor(np.asarray(rows) - C - a)[:, None] + torch.arange(C + P)
        w = slab[idx]
        ctx, tgt = w[:, :C].to(self.device), w[:, C:].to(self.device)
        sess = torch.full((len(rows),), self.session_index, dtype=torch.int64, device=self.device)
        with autocast_context(self.device):
            if self.U > self.unit_slice:
                pred = forecast_in_unit_slices(self.model, ctx, self.session_index, self.unit_slice, preempt)
                if pred is None:
                    raise _Preempted
            else:
                pred = self.model(ctx, sess)
        pred = pred.float()
        diff = pred - tgt
        err = diff**2
        last = ctx[:, -1:, :].expand(-1, P, -1)
        cdiff = (last - tgt).contiguous()
        cerr = cdiff**2
        i = np.asarray(rows) - part["lo"]
        part["forecast"][i] = pred.to(torch.float16).cpu().numpy()
        part["sse_step"][i] = err.sum(2).cpu().double().numpy()
        part["sae_step"][i] = diff.abs().sum(2).cpu().double().numpy()
        part["copy_sse_step"][i] = cerr.sum(2).cpu().double().numpy()
        part["copy_sae_step"][i] = cdiff.abs().sum(2).cpu().double().numpy()
        part["unit_sse"] += err.sum(1).cpu().double().numpy().sum(0)
        part["unit_copy"] += cerr.sum(1).cpu().double().numpy().sum(0)

    def compute(
        self,
        cursors: Sequence[int] | np.ndarray | None = None,
        *,
        start: int | None = None,
        chunk: int | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_windows: int | None = None,
        preempt: Callable[[], bool] | None = None,
    ) -> int:
        """Compute blocks not yet done, from ``start``'s block forward (wrapping), until every block
        is done, ``stop`` is set or ``max_windows`` windows were computed (a block left half done is
        continued by the next call). ``cursors``: only the blocks holding these. ``preempt``:
        checked between unit slices of a large window (:data:`UNIT_SLICE`); when it returns True
        the window is dropped and the call returns (the units on screen need the thread). Returns
        the number of windows computed (0 for a read-only entry)."""
        if self.read_only:
            return 0
        want = None
        if cursors is not None:
            want = set((np.unique(np.asarray(cursors, dtype=np.int64)) // self.block).tolist())
        bsz = self.batch_size if chunk is None else max(1, min(int(chunk), self.batch_size))
        n = 0
        with self._write_lock:
            model = self.model
            was_training = model.training
            model.eval()
            try:
                while max_windows is None or n < max_windows:
                    if stop is not None and stop.is_set():
                        break
                    part = self._partial
                    if part is None:
                        b = self._next_block(start) if want is None else self._next_wanted(want)
                        if b is None:
                            break
                        part = self._partial = self._start_block(b)
                    if not part["todo"]:
                        self._finish_block(part)
                        continue
                    take = bsz if max_windows is None else max(1, min(bsz, max_windows - n))
                    rows, part["todo"] = part["todo"][:take], part["todo"][take:]
                    try:
                        self._run(part, rows, preempt)
                    except _Preempted:
                        part["todo"] = rows + part["todo"]
                        break
                    i = np.asarray(rows) - part["lo"]
                    with self._read_lock:
                        for k in ("sse_step", "sae_step", "copy_sse_step", "copy_sae_step"):
                            getattr(self, k)[rows] = part[k][i]
                        self.done[rows] = True  # last: readers trust done rows
                    n += len(rows)
                    if not part["todo"]:
                        self._finish_block(part)
                    if progress is not None:
                        progress(int(self.done.sum()), self.n_valid)
            finally:
                model.train(was_training)
        return n

    def _next_wanted(self, want: set[int]) -> int | None:
        self._ensure_entry()
        self.refresh()
        for b in sorted(want):
            if 0 <= b < self.n_blocks and not self.block_done[b] and self._claim(b):
                if self._marker(b).exists():
                    self._release(b)
                    self.refresh(force=True)
                    continue
                return b
        return None

    def pending_blocks(self) -> list[int]:
        """The blocks not finished (on disk, as far as :meth:`refresh` knows) that hold a valid cursor."""
        self.refresh(force=True)
        return [b for b in range(self.n_blocks) if not self.block_done[b] and self.valid[slice(*self._block_range(b))].any()]

    def compute_blocks(self, blocks: Sequence[int], stop: threading.Event | None = None) -> int:
        """Compute these blocks (those finished, or claimed by another process, are skipped);
        returns the number of windows computed. A batch job's unit of work."""
        want = sorted({int(b) for b in blocks})
        bad = [b for b in want if not 0 <= b < self.n_blocks]
        if bad:
            raise ValueError(f"blocks {bad} out of range: the entry has {self.n_blocks} blocks of {self.block} cursors")
        if not want:
            return 0
        cursors = np.concatenate([np.arange(*self._block_range(b)) for b in want])
        return self.compute(cursors=cursors, stop=stop)

    def advance(self, t: int, max_windows: int, preempt: Callable[[], bool] | None = None) -> int:
        """About ``max_windows`` windows of the whole pass, nearest after cursor ``t`` first."""
        return self.compute(start=max(0, int(t) - 1), max_windows=max_windows, preempt=preempt)

    def close(self) -> None:
        """Give up the block being computed (its claim goes; another process may take it)."""
        part = self._partial
        if part is not None:
            with self._write_lock:
                lo, hi = part["lo"], part["hi"]
                self.done[lo:hi] = False
                self._release(part["b"])
                self._partial = None

    # -- scores -----------------------------------------------------------------------------------

    def metrics(self, upto: int | None = None, *, split: str | None = None) -> dict[str, Any]:
        """Scores over the computed windows whose whole target has been played (the keys and
        meaning of :meth:`RecordingForecast.metrics`); per-unit and per-region scores count the
        blocks finished on disk whose every included cursor is computed."""
        self.refresh()
        T, P = self.T, self.P
        if split is not None and split not in self._split_ranges:
            raise ValueError(f"unknown split {split!r}; the recording has {sorted(self._split_ranges)}")
        hi = T if upto is None else max(0, min(T, int(upto) - P + 1))
        ranges = [(0, T)] if split is None else self._split_ranges[split]
        mask = np.zeros(T, dtype=bool)
        for a, b in ranges:
            mask[a : min(b, hi)] = True
        with self._read_lock:
            sel = np.flatnonzero(mask & self.done)
            step, copy_step = self.sse_step[sel].sum(0), self.copy_sse_step[sel].sum(0)
            abs_step, copy_abs_step = self.sae_step[sel].sum(0), self.copy_sae_step[sel].sum(0)
            # per unit: the blocks finished on disk lying wholly inside the included cursors
            nb = self.n_blocks
            inside = np.zeros(nb, dtype=bool)
            for b in np.flatnonzero(self.block_done).tolist():
                lo, bhi = self._block_range(b)
                v = self.valid[lo:bhi]
                inside[b] = bool(mask[lo:bhi][v].all()) and bool(v.any())
            sse_u = self._unit_sse[inside].sum(0, dtype=np.float64)
            copy_u = self._unit_copy[inside].sum(0, dtype=np.float64)
            n_u = int(self.done[np.repeat(inside, self.block)[:T]].sum())
        regions = None if self.regions is None else (self._region_names, self._region_code)
        return metrics_from_sums(sse_u, copy_u, step, copy_step, abs_step, copy_abs_step, len(sel), n_unit_windows=n_u, regions=regions)

    def unit_scores(self) -> np.ndarray:
        """Per-unit score (U,) over the finished blocks (NaN where copy-last has no error)."""
        return self.metrics()["per_unit_score"]

    def size_bytes(self) -> int:
        """Bytes this entry holds on disk."""
        return _folder_size(self.path)


# ==================================================================================== benchmark
def bench_forecast_scale(
    store: str | os.PathLike,
    *,
    shown: int = 8,
    full_cursors: int = BLOCK,
    new_cursors: int = 5,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    model_kind: str = "POCO",
) -> dict[str, Any]:
    """The Forecast tab's work at a recording's full size, with an untrained model built for it.

    Opens ``store`` lazily, then times (one torch thread): the forecasts of ``shown`` units at
    ``new_cursors`` random new cursors (context slab read + POCO's encoder over every unit and its
    decoder for the shown units), and the whole pass over ``full_cursors`` cursors into the disk
    cache (fresh, under ``cache_dir`` or a temporary folder). Returns a JSON-able dict.
    """
    import resource
    import tempfile

    import xarray as xr

    from ..backend import configure_threads
    from .base import SessionInfo, build_model
    from .unit_subset import forecast_units

    configure_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    import zarr

    ds = xr.open_zarr(str(store), consolidated=None)
    act = zarr.open_group(str(store), mode="r")["activity"]  # (time, unit), as the layout stores it
    T, U = (int(n) for n in act.shape)
    tmp = None
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="pocoviz-bench-cache-")
        cache_dir = tmp
    src = ChunkedActivity(act, zscored=ds["activity"].attrs.get("units") == "z-score",
                          stats_path=Path(cache_dir) / "stats" / f"{_key(path_identity(store))}.npz")  # fmt: skip
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not src.zscored:
        src.stats()
    t_stats = time.perf_counter() - t0
    session = f"{ds.attrs.get('species', 'bench')}/{ds.attrs.get('session', 'bench')}"
    model = build_model(model_kind, [SessionInfo(session, U, "bench")])
    model.eval()
    rng = np.random.default_rng(seed)
    C, P = int(model.context), int(model.horizon)
    units = np.sort(rng.choice(U, size=min(shown, U), replace=False))
    times, reads, models = [], [], []
    for t in rng.integers(C, T - P + 1, size=new_cursors).tolist():
        t1 = time.perf_counter()
        ctx = torch.from_numpy(np.ascontiguousarray(src.slab(t - C, t)))[None]
        t2 = time.perf_counter()
        with torch.inference_mode():
            y = forecast_units(model, ctx, 0, units)
        t3 = time.perf_counter()
        times.append(t3 - t1)
        reads.append(t2 - t1)
        models.append(t3 - t2)
        assert y.shape == (1, P, len(units))
    t1 = time.perf_counter()
    ctx = torch.from_numpy(np.ascontiguousarray(src.slab(t + 1 - C, t + 1)))[None]  # the next frame of playback
    with torch.inference_mode():
        forecast_units(model, ctx, 0, units)
    t_next = time.perf_counter() - t1
    t0 = time.perf_counter()
    fc = DiskForecast(model, src, session, identity={**path_identity(store), "bench": True}, root=cache_dir, name=model_kind)
    t_entry = time.perf_counter() - t0
    start = int(rng.integers(C, max(C + 1, T - P - full_cursors)))
    start = (start // fc.block) * fc.block
    t0 = time.perf_counter()
    n = fc.compute(start=start, max_windows=full_cursors)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = fc.metrics()
    t_metrics = time.perf_counter() - t0
    size = fc.size_bytes()
    out = {
        "store": str(store), "T": T, "U": U, "model": model_kind, "shown_units": len(units), "torch_threads": torch.get_num_threads(),
        "open_s": round(t_open, 3), "zscore_stats_s": round(t_stats, 3),
        "first_forecast_s": {"mean": round(float(np.mean(times)), 3), "max": round(float(np.max(times)), 3), "each": [round(x, 3) for x in times],
                             "context_read_mean": round(float(np.mean(reads)), 3), "model_mean": round(float(np.mean(models)), 3),
                             "next_frame": round(t_next, 3)},
        "cache_entry_s": round(t_entry, 3), "full_pass": {"windows": n, "seconds": round(t_full, 2), "windows_per_s": round(n / t_full, 3) if t_full else None,
        "unit_windows_per_s": round(n * U / t_full) if t_full else None, "blocks_written": fc.blocks_written},
        "metrics_s": round(t_metrics, 4), "score_over_pass": m["score"], "cache_bytes": size,
        "cache_bytes_full_recording_est": int(T * P * U * 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = [
    "ArrayActivity", "BLOCK", "ChunkedActivity", "DEFAULT_MAX_BYTES", "DiskForecast", "bench_forecast_scale", "cache_root",
    "chunked_stats", "evict", "max_cache_bytes", "model_checksum", "path_identity",
]  # fmt: skip

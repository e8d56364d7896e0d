"""Raster windows at screen resolution, for recordings of any size.

A raster view asks for the frames ``t0:t1`` and unit rows ``u0:u1`` that its viewport shows and
for at most about ``max_cols`` × ``max_rows`` cells. :class:`RasterSource` answers from the
coarsest level of the recording's multi-resolution pyramid that still has at least that
resolution (the layout is in ``docs/wholebrain.md``: level k reduces 4^k frames × 4^k units to a
cell, by ``mean`` or by ``peak``, the value of largest magnitude), reads only the chunks of that
level under the window, and reduces further by a whole factor so that the answer has at most
about twice the requested cells along each axis. Recordings without a stored pyramid get the
same levels computed in memory on first use (from the array when it is in memory, or one time
slab after another when it is Dask-backed), so small and whole-brain recordings go through one
path. No panel, holoviews or bokeh here.

Example
-------
>>> import numpy as np
>>> from pocoviz.recordings import make_recording
>>> ds = make_recording(np.arange(24.0).reshape(6, 4), sampling_rate_hz=1.0, species="fish", session="s")
>>> w = RasterSource(ds).window(0, 6, 0, 4, max_cols=3, max_rows=2)
>>> w.values.shape, w.frame_step, w.row_step
((2, 3), 2, 2)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

FACTOR = 4
#: a cell budget: a level is skipped while its window has more cells than this many times the
#: requested ``max_cols * max_rows`` (its chunks would take too long to read)
CELL_BUDGET = 20
#: an in-memory level is computed from a Dask-backed array this many frames at a time
SLAB_FRAMES = 256
#: levels are computed in memory while the larger dimension of the last exceeds this
STOP_AT = 512

Reduce = Literal["mean", "peak"]


@dataclass(frozen=True)
class RasterWindow:
    """Cells of a raster window.

    ``values[r, c]`` covers stored (or display) rows ``row0 + r*row_step`` … ``+ row_step`` and
    frames ``frame0 + c*frame_step`` … ``+ frame_step`` (the last row and column may reach past
    the recording's end: they then cover only what exists)."""

    values: np.ndarray  # (rows, cols) float32
    frame0: int
    frame_step: int
    row0: int
    row_step: int
    level: int  # the pyramid level read (0: the activity itself)
    reduce: str
    shape: tuple[int, int]  # (frames, units) of the whole recording

    @property
    def frame_edges(self) -> np.ndarray:
        """Frame edges of the columns (cols + 1 values, the last clipped to the recording)."""
        e = self.frame0 + self.frame_step * np.arange(self.values.shape[1] + 1)
        return np.minimum(e, self.shape[0])

    @property
    def row_edges(self) -> np.ndarray:
        """Row edges of the rows (rows + 1 values, the last clipped to the recording)."""
        e = self.row0 + self.row_step * np.arange(self.values.shape[0] + 1)
        return np.minimum(e, self.shape[1])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(frame start, row start, frame end, row end) of the cells, unclipped (regular cells)."""
        rows, cols = self.values.shape
        return (self.frame0, self.row0, self.frame0 + cols * self.frame_step, self.row0 + rows * self.row_step)


# ---------------------------------------------------------------------------- block reductions
def _counts(n_cells: int, start: int, block: int, total: int) -> np.ndarray:
    """How many items of an axis of length ``total`` each of ``n_cells`` cells of ``block`` items,
    from cell ``start`` on, covers (the last may be short)."""
    lo = (start + np.arange(n_cells)) * block
    return np.clip(np.minimum(lo + block, total) - lo, 0, None).astype(np.float64)


def reduce_cells(x: np.ndarray, s0: int, s1: int, kind: Reduce, w0: np.ndarray | None = None, w1: np.ndarray | None = None) -> np.ndarray:
    """Reduce ``x`` (2-D) by blocks of ``s0`` × ``s1`` cells (ragged at the ends).

    ``mean``: the mean of the finite cells weighted by ``w0[i] * w1[j]`` (how many items each cell
    holds; all 1 by default), NaN where a block has none; ``peak``: the finite cell of largest
    magnitude, with its sign, NaN where none is finite."""
    x = np.asarray(x, dtype=np.float32)
    n0, n1 = x.shape
    if s0 == 1 and s1 == 1:
        return x.copy()
    finite = np.isfinite(x)
    has_nan = not finite.all()

    def blocks(a: np.ndarray, op: Any) -> np.ndarray:
        """``op`` (an elementwise ufunc) over each block, ragged at the ends: strided slices, units
        then frames (NumPy reduces the short inner axes of a reshaped array several times slower)."""
        r = a[:, 0::s1].astype(np.float64) if op is np.add else a[:, 0::s1].copy()
        for k in range(1, min(s1, n1)):
            part = a[:, k::s1]
            op(r[:, : part.shape[1]], part, out=r[:, : part.shape[1]])
        out = r[0::s0].copy()
        for k in range(1, min(s0, n0)):
            part = r[k::s0]
            op(out[: part.shape[0]], part, out=out[: part.shape[0]])
        return out

    if kind == "peak":  # the block's max and min; the one of larger magnitude wins (max on a tie)
        hi = blocks(np.where(finite, x, -np.inf) if has_nan else x, np.maximum)
        lo = blocks(np.where(finite, x, np.inf) if has_nan else x, np.minimum)
        out = np.where(np.abs(lo) > np.abs(hi), lo, hi)
        return np.where(np.isfinite(out), out, np.nan).astype(np.float32)
    num = np.where(finite, x, 0) if has_nan else x
    if w0 is not None:
        num = num * np.asarray(w0, np.float32)[:, None]
    if w1 is not None:
        num = num * np.asarray(w1, np.float32)[None, :]
    w0 = np.ones(n0) if w0 is None else np.asarray(w0, np.float64)
    w1 = np.ones(n1) if w1 is None else np.asarray(w1, np.float64)
    if has_nan:
        den = blocks(finite * np.asarray(w0, np.float32)[:, None] * np.asarray(w1, np.float32)[None, :], np.add)
    else:  # the block's total weight without reading the block
        den = np.add.reduceat(w0, np.arange(0, n0, s0))[:, None] * np.add.reduceat(w1, np.arange(0, n1, s1))[None, :]
    num = blocks(num, np.add)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).astype(np.float32)


# ---------------------------------------------------------------------------- levels
#: a stored level of at most this many bytes is read whole on first use and kept in memory (the
#: coarse levels a zoomed-out view reads on every pan: 8.8 MB for level 2 of 71,721 × 7,879)
KEEP_LEVEL_BYTES = 32 << 20


#: decoded chunks of stored levels kept per source (a pan reads mostly the chunks it just read)
CHUNK_CACHE_BYTES = 384 << 20


class _ChunkCache:
    """An LRU of decoded Zarr chunks, ``(array id, kind, chunk row, chunk col) -> ndarray``, by bytes."""

    def __init__(self, max_bytes: int = CHUNK_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Any) -> np.ndarray:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
        value = np.asarray(load(), dtype=np.float32)
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = value
                self.bytes += value.nbytes
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
        return value


def _read_chunked(arr: Any, key: tuple, cache: _ChunkCache, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
    """``arr[i0:i1, j0:j1]`` of a Zarr array assembled from whole chunks held in ``cache``."""
    c0, c1 = arr.chunks
    out = np.empty((i1 - i0, j1 - j0), np.float32)
    for ci in range(i0 // c0, -(-i1 // c0)):
        for cj in range(j0 // c1, -(-j1 // c1)):
            a0, b0 = ci * c0, cj * c1
            chunk = cache.get((*key, ci, cj), lambda a0=a0, b0=b0: arr[a0 : a0 + c0, b0 : b0 + c1])
            r0, r1 = max(i0, a0), min(i1, a0 + chunk.shape[0])
            s0, s1 = max(j0, b0), min(j1, b0 + chunk.shape[1])
            out[r0 - i0 : r1 - i0, s0 - j0 : s1 - j0] = chunk[r0 - a0 : r1 - a0, s0 - b0 : s1 - b0]
    return out


class _Level:
    """One level: an array-like of (time cells, unit cells) per reduction, sliced by the window."""

    def __init__(self, arrays: dict[str, Any], shape: tuple[int, int], keep: bool = False, cache: _ChunkCache | None = None, name: str = ""):
        self.arrays = arrays  # kind -> array-like supporting [a:b, c:d] (numpy, zarr, dask)
        self.shape = shape
        self.keep = keep and shape[0] * shape[1] * 4 <= KEEP_LEVEL_BYTES
        self.cache = cache  # Zarr arrays are read by whole chunks through it
        self.name = name

    def read(self, kind: str, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        kind = kind if kind in self.arrays else "mean"
        arr = self.arrays[kind]
        if self.keep and not isinstance(arr, np.ndarray):
            arr = self.arrays[kind] = np.asarray(arr[:, :], dtype=np.float32)
        if self.cache is not None and not isinstance(arr, np.ndarray) and hasattr(arr, "chunks") and hasattr(arr, "metadata"):
            return _read_chunked(arr, (self.name, id(arr)), self.cache, i0, i1, j0, j1)
        block = arr[i0:i1, j0:j1]
        if hasattr(block, "compute"):
            block = block.compute()
        return np.asarray(block, dtype=np.float32)


def store_path_of(ds: xr.Dataset) -> str | None:
    """The Zarr store a lazily opened recording came from (``ds.encoding["source"]``), if any."""
    for value in (ds.encoding.get("source"), ds["activity"].encoding.get("source")):
        if not value:
            continue
        path = Path(str(value))
        if path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists():
            return str(value)
    return None


def read_units(ds: xr.Dataset, units: list[int] | np.ndarray, store: Any = None) -> np.ndarray:
    """The activity (time, len(units)) of stored units ``units`` only. A lazily opened Zarr
    recording is read straight from its store (``store``, default :func:`store_path_of`): only the
    chunks those units lie in, without building a Dask graph over the whole array (3-5x faster for
    a few scattered units of a whole brain); other recordings through xarray."""
    units = np.asarray(units, dtype=int)
    act = ds["activity"]
    if not len(units):
        return np.empty((int(ds.sizes["time"]), 0), np.float32)
    if isinstance(act.data, np.ndarray):
        return np.asarray(act.values[:, units], dtype=np.float32)
    store = store if store is not None else store_path_of(ds)
    arr = None
    if store is not None:
        import zarr

        try:
            arr = zarr.open_group(store, mode="r")["activity"]
        except Exception:  # a bare array or no group: read through xarray
            arr = None
    if arr is None or tuple(arr.shape) != tuple(act.shape):
        return np.asarray(act.isel(unit=units).values, dtype=np.float32)
    uniq, inverse = np.unique(units, return_inverse=True)
    lo, hi = int(uniq[0]), int(uniq[-1]) + 1
    if hi - lo <= 4096:
        block = np.asarray(arr[:, lo:hi], dtype=np.float32)[:, uniq - lo]
    else:
        block = np.asarray(arr.get_orthogonal_selection((slice(None), uniq)), dtype=np.float32)
    return block[:, inverse]


def has_pyramid(ds: xr.Dataset) -> bool:
    """Whether the store the recording came from holds a pyramid (docs/wholebrain.md)."""
    store = store_path_of(ds)
    return store is not None and _open_pyramid(store) is not None


def _open_pyramid(store: Any) -> tuple[Any, Any, int] | None:
    """(the store's root group, its pyramid group, its number of levels), or None without one."""
    import zarr

    try:
        root = zarr.open_group(store, mode="r")
        pyr = root["pyramid"]
    except Exception:  # no group, or no pyramid in it
        return None
    levels = int(pyr.attrs.get("levels", 0))
    return (root, pyr, levels) if levels > 0 else None


class RasterSource:
    """Raster windows of a recording (see module docstring).

    Parameters
    ----------
    ds
        A recording; ``activity`` may be NumPy or Dask-backed (then it is never read whole).
    store
        Its Zarr store (path or zarr store); default :func:`store_path_of`. A store with a
        ``pyramid/`` group is read level by level; without one, levels are computed in memory.
    order
        Display row → stored unit (a permutation); only for in-memory recordings (a lazily opened
        one is shown in stored order, which the layout keeps grouped by region).
    """

    def __init__(self, ds: xr.Dataset, store: Any = None, order: np.ndarray | None = None, cache_size: int = 24):
        act = ds["activity"]
        self.shape: tuple[int, int] = (int(ds.sizes["time"]), int(ds.sizes["unit"]))
        self.lazy = hasattr(act.data, "dask") or not isinstance(act.data, np.ndarray)
        if order is not None and self.lazy:
            raise ValueError("a row order is only for in-memory recordings")
        self._order = None if order is None else np.asarray(order)
        self._ds = ds
        self._lock = threading.RLock()
        self._windows: OrderedDict[tuple, RasterWindow] = OrderedDict()
        self._cache_size = cache_size
        self.reads = 0  # level slices read (for tests and the bench)
        store = store if store is not None else store_path_of(ds)
        if isinstance(store, (str, os.PathLike)) and not Path(store).exists():
            store = None
        self.store = store
        opened = _open_pyramid(store) if store is not None and order is None else None
        if opened is not None:
            root, pyr, n = opened
            self.pyramid = True
            self.chunks = _ChunkCache()
            base = act.values if not self.lazy else (root["activity"] if "activity" in root else act.data)
            self._levels = [_Level({"mean": base, "peak": base}, self.shape, cache=self.chunks, name="0")]
            for k in range(1, n + 1):
                group = pyr[str(k)]
                arrays = {kind: group[kind] for kind in ("mean", "peak") if kind in group}
                self._levels.append(_Level(arrays, tuple(arrays["mean"].shape), keep=True, cache=self.chunks, name=str(k)))
        else:
            self.pyramid = False
            base = act.data if self.lazy else np.asarray(act.values)
            if self._order is not None:
                base = np.ascontiguousarray(base[:, self._order])
            self._levels = [_Level({"mean": base, "peak": base}, self.shape)]
            self._computed_all = False

    @property
    def n_levels(self) -> int:
        """Levels available now (1 + pyramid levels; in-memory levels appear on first use)."""
        return len(self._levels)

    # ------------------------------------------------------------------ in-memory levels
    def _ensure_levels(self) -> None:
        if self.pyramid or self._computed_all:
            return
        with self._lock:
            if self._computed_all:
                return
            while max(self._levels[-1].shape) > STOP_AT:
                self._levels.append(self._next_level(self._levels[-1], len(self._levels)))
            self._computed_all = True

    def _next_level(self, prev: _Level, k: int) -> _Level:
        T, U = self.shape
        shape = (-(-prev.shape[0] // FACTOR), -(-prev.shape[1] // FACTOR))
        b = FACTOR ** (k - 1)  # items per cell of prev
        w1 = _counts(prev.shape[1], 0, b, U)
        if k == 1 and self.lazy:  # from the Dask-backed activity one time slab after another
            out = {kind: np.empty(shape, np.float32) for kind in ("mean", "peak")}
            step = SLAB_FRAMES - SLAB_FRAMES % FACTOR
            for t in range(0, T, step):
                slab = np.asarray(prev.arrays["mean"][t : t + step].compute(), dtype=np.float32)
                for kind in out:
                    out[kind][t // FACTOR : -(-(t + slab.shape[0]) // FACTOR)] = reduce_cells(slab, FACTOR, FACTOR, kind)
            return _Level(out, shape)
        w0 = _counts(prev.shape[0], 0, b, T)
        return _Level(
            {kind: reduce_cells(np.asarray(prev.arrays[kind]), FACTOR, FACTOR, kind, w0, w1) for kind in ("mean", "peak")},
            shape,
        )

    # ------------------------------------------------------------------ windows
    def choose_level(self, f0: int, f1: int, r0: int, r1: int, max_cols: int, max_rows: int) -> int:
        """The coarsest level whose window has at least min(the requested, level 0's) cells along
        both axes, then coarser while the window has more than CELL_BUDGET × requested cells."""
        want_c, want_r = min(max_cols, f1 - f0), min(max_rows, r1 - r0)
        n = self.n_levels if self.pyramid else None
        if n is None:
            if (f1 - f0) * (r1 - r0) > CELL_BUDGET * max_cols * max_rows or (f1 - f0) > 2 * FACTOR * max_cols or (r1 - r0) > 2 * FACTOR * max_rows:
                self._ensure_levels()
            n = self.n_levels

        def cells(k: int) -> tuple[int, int]:
            b = FACTOR**k
            return -(-f1 // b) - f0 // b, -(-r1 // b) - r0 // b

        level = 0
        for k in range(1, n):
            c, r = cells(k)
            if c >= want_c and r >= want_r:
                level = k
        while level + 1 < n and np.prod(cells(level)) > CELL_BUDGET * max_cols * max_rows:
            level += 1
        return level

    def window(self, t0: float, t1: float, u0: float, u1: float, *, max_cols: int = 1000, max_rows: int = 500, reduce: Reduce = "mean") -> RasterWindow:
        """Frames ``t0``–``t1`` and rows ``u0``–``u1`` (clamped to the recording) at no less than
        ``max_cols`` × ``max_rows`` cells where the recording has them, and at most about twice
        that along each axis. ``reduce``: ``mean`` or ``peak`` (see module docstring)."""
        if reduce not in ("mean", "peak"):
            raise ValueError(f"reduce must be 'mean' or 'peak', not {reduce!r}")
        T, U = self.shape
        f0, f1 = int(np.clip(np.floor(t0), 0, T - 1)), int(np.clip(np.ceil(t1), 1, T))
        r0, r1 = int(np.clip(np.floor(u0), 0, U - 1)), int(np.clip(np.ceil(u1), 1, U))
        f1, r1 = max(f1, f0 + 1), max(r1, r0 + 1)
        max_cols, max_rows = max(1, int(max_cols)), max(1, int(max_rows))
        key = (f0, f1, r0, r1, max_cols, max_rows, reduce)
        with self._lock:
            hit = self._windows.get(key)
            if hit is not None:
                self._windows.move_to_end(key)
                return hit
        level = self.choose_level(f0, f1, r0, r1, max_cols, max_rows)
        b = FACTOR**level
        lv = self._levels[level]
        i0, i1 = f0 // b, min(-(-f1 // b), lv.shape[0])
        j0, j1 = r0 // b, min(-(-r1 // b), lv.shape[1])
        s0 = max(1, (i1 - i0) // max_cols)
        s1 = max(1, (j1 - j0) // max_rows)
        i0, j0 = (i0 // s0) * s0, (j0 // s1) * s1  # columns on a fixed grid: a pan does not shift them
        i1 = min(lv.shape[0], i0 + -(-(i1 - i0) // s0) * s0)
        j1 = min(lv.shape[1], j0 + -(-(j1 - j0) // s1) * s1)
        cells = lv.read(reduce, i0, i1, j0, j1)
        self.reads += 1
        w0 = _counts(i1 - i0, i0, b, T) if level else None
        w1 = _counts(j1 - j0, j0, b, U) if level else None
        values = reduce_cells(cells, s0, s1, reduce, w0, w1)
        win = RasterWindow(
            values=np.ascontiguousarray(values.T),
            frame0=i0 * b,
            frame_step=b * s0,
            row0=j0 * b,
            row_step=b * s1,
            level=level,
            reduce=reduce,
            shape=self.shape,
        )
        with self._lock:
            self._windows[key] = win
            while len(self._windows) > self._cache_size:
                self._windows.popitem(last=False)
        return win

    def unit_block(self, units: list[int] | np.ndarray) -> np.ndarray:
        """The activity (time, len(units)) of stored units ``units`` only (reads their chunks)."""
        return read_units(self._ds, units, self.store)

"""The multi-resolution pyramid beside a chunked recording's ``activity`` (docs/wholebrain.md).

``DEST.zarr/pyramid/<k>/{mean,peak}`` for k = 1 … K: level k reduces ``activity`` by 4^k in time
and in (stored) units. ``mean`` is the mean of a block's finite values, ``peak`` the block's value
of largest magnitude with its sign (NaN where a block has no finite value), so that one event
survives every level.

- :func:`reduce_blocks` is the numpy definition of one ×factor step (also usable on small in-memory
  arrays by the raster readers);
- :class:`PyramidWriter` builds every level from slabs of ``activity`` that arrive in time order
  (used while importing or synthesising, so ``activity`` is read once);
- :func:`build_pyramid` streams an existing store's ``activity`` through it within a memory cap;
- :func:`pyramid_info` tells readers which levels a store has (metadata only).

Level k+1 is computed from level k (means weighted by the number of finite values under each cell,
peaks of peaks), within each slab: slabs are whole 4^K-aligned blocks of frames and units, so the
result does not depend on how the store was cut into slabs.

Never imports panel, holoviews or bokeh.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .schema import RecordingError

FACTOR = 4
#: Chunks of ``activity`` and of every pyramid level (clipped to the array's shape).
CHUNKS = (256, 4096)
#: Levels are added while the larger dimension of the last one exceeds this.
MAX_LAST = 512
REDUCTIONS = ("mean", "peak")
#: Default memory cap for streaming work (1 GiB).
DEFAULT_MEMORY_CAP = 2**30
#: Bytes of working memory per ``activity`` cell of a slab while reducing it (slab, masks, temporaries).
BYTES_PER_CELL = 24

Kind = Literal["mean", "peak"]


# -- the definition ---------------------------------------------------------------------------


def n_levels(shape: tuple[int, int], factor: int = FACTOR, max_last: int = MAX_LAST) -> int:
    """How many levels a (time, unit) array gets: levels are added while the larger dimension of the
    last one (level 0 is the array itself) exceeds ``max_last``.

    >>> n_levels((7879, 71721))
    4
    >>> n_levels((300, 500))
    0
    """
    rows, cols = int(shape[0]), int(shape[1])
    k = 0
    while max(rows, cols) > max_last:
        k += 1
        rows, cols = -(-rows // factor), -(-cols // factor)
    return k


def level_shape(shape: tuple[int, int], k: int, factor: int = FACTOR) -> tuple[int, int]:
    """Shape of level ``k``: ``(ceil(T / factor**k), ceil(U / factor**k))``."""
    f = factor**k
    return (-(-int(shape[0]) // f), -(-int(shape[1]) // f))


def _padded_blocks(x: np.ndarray, factor: int, fill: Any) -> np.ndarray:
    """``x`` viewed as (rows, factor, cols, factor) blocks, padded with ``fill`` at ragged edges."""
    t, u = x.shape
    pt, pu = (-t) % factor, (-u) % factor
    if pt or pu:
        x = np.pad(x, ((0, pt), (0, pu)), constant_values=fill)
    return x.reshape((t + pt) // factor, factor, (u + pu) // factor, factor)


def _block_extreme(x: np.ndarray, factor: int, fill: float, op: Any) -> np.ndarray:
    """Blockwise max (``op=np.maximum``) or min: within rows over unit groups first, then over frames."""
    b = _padded_blocks(x, factor, fill)
    rows, _, cols, _ = b.shape
    y = b.reshape(rows * factor, cols, factor)
    acc = y[:, :, 0].copy()
    for i in range(1, factor):
        op(acc, y[:, :, i], out=acc)
    z = acc.reshape(rows, factor, cols)
    out = z[:, 0].copy()
    for i in range(1, factor):
        op(out, z[:, i], out=out)
    return out


def _geometric_counts(shape: tuple[int, int], factor: int) -> np.ndarray:
    """Cells per block of a (T, U) array cut into factor-blocks (smaller at the ragged edges)."""
    t, u = shape
    r = np.minimum(factor, t - np.arange(0, t, factor))
    c = np.minimum(factor, u - np.arange(0, u, factor))
    return np.outer(r, c).astype(np.int64)


def reduce_blocks(
    x: Any,
    factor: int = FACTOR,
    kind: Kind = "mean",
    *,
    counts: Any = None,
    return_counts: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Reduce a 2-D array by ``factor`` in both dimensions, block by block (ragged edges allowed).

    Parameters
    ----------
    x : array, shape (T, U)
        Values; NaN (or any non-finite value) counts as missing.
    factor
        Block side.
    kind
        ``"mean"``: the mean of the block's finite values, each weighted by ``counts`` when given
        (the number of original values it stands for); ``"peak"``: the finite value of largest
        magnitude, with its sign (ties go to the positive value). NaN where a block has no finite value.
    counts : int array, shape (T, U), optional
        Weights of the cells of ``x`` (default: 1 for each finite cell), so that reducing a level's
        means with its counts gives the mean over the original values.
    return_counts
        Also return the summed counts (finite cells only) of each block, int64.

    Returns
    -------
    numpy.ndarray (float32) of shape (ceil(T / factor), ceil(U / factor)), or ``(values, counts)``.

    Examples
    --------
    >>> x = np.array([[1, 2, 3], [4, np.nan, -9]], dtype=np.float32)
    >>> reduce_blocks(x, 2, "mean")
    array([[ 2.3333333, -3.       ]], dtype=float32)
    >>> reduce_blocks(x, 2, "peak")
    array([[ 4., -9.]], dtype=float32)
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"reduce_blocks needs a 2-D array, got shape {x.shape}")
    if kind not in REDUCTIONS:
        raise ValueError(f"kind must be one of {REDUCTIONS}, got {kind!r}")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    if counts is None:
        if all_finite:
            n = _geometric_counts(x.shape, factor)
        else:
            n = _padded_blocks(finite, factor, False).sum(axis=(1, 3), dtype=np.int64)
    else:
        c = np.asarray(counts)
        if c.shape != x.shape:
            raise ValueError(f"counts must have the shape of x {x.shape}, got {c.shape}")
        c = c if all_finite else np.where(finite, c, 0)
        n = _padded_blocks(c.astype(np.int64, copy=False), factor, 0).sum(axis=(1, 3), dtype=np.int64)
    empty = n == 0
    if kind == "mean":
        v = x if all_finite else np.where(finite, x, 0)
        if counts is not None:
            v = v.astype(np.float64) * c
        s = _padded_blocks(v, factor, 0).sum(axis=(1, 3), dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (s / np.maximum(n, 1)).astype(np.float32)
    else:
        hi = x if all_finite else np.where(finite, x, -np.inf)
        mx = _block_extreme(hi, factor, -np.inf, np.maximum)
        del hi
        lo = x if all_finite else np.where(finite, x, np.inf)
        mn = _block_extreme(lo, factor, np.inf, np.minimum)
        del lo
        out = np.where(mx >= -mn, mx, mn).astype(np.float32)
    out[empty] = np.nan
    return (out, n) if return_counts else out


def reference_pyramid(x: Any, levels: int | None = None) -> list[dict[str, np.ndarray]]:
    """The pyramid of an in-memory array by repeated :func:`reduce_blocks` (level 1 first):
    ``[{"mean": …, "peak": …}, …]``. The definition the streamed levels must equal."""
    x = np.asarray(x, dtype=np.float32)
    levels = n_levels(x.shape) if levels is None else int(levels)
    out: list[dict[str, np.ndarray]] = []
    mean, peak, counts = x, x, None
    for _ in range(levels):
        new_mean, new_counts = reduce_blocks(mean, FACTOR, "mean", counts=counts, return_counts=True)
        peak = reduce_blocks(peak, FACTOR, "peak", counts=counts)
        mean, counts = new_mean, new_counts
        out.append({"mean": mean, "peak": peak})
    return out


# -- writing ----------------------------------------------------------------------------------


def _chunks_for(shape: tuple[int, int]) -> tuple[int, int]:
    return (max(1, min(CHUNKS[0], shape[0])), max(1, min(CHUNKS[1], shape[1])))


def default_compressors() -> Any:
    """Blosc(zstd, level 3, byte shuffle): float32 activity compresses well and fast."""
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)


class _RowBuffer:
    """Rows of one level's array waiting for their chunk row to be complete before being written."""

    def __init__(self, arr: Any, n_cols: int):
        self.arr = arr
        self.n_rows = arr.shape[0]
        self.n_cols = n_cols
        self.row0 = 0  # first buffered row
        self.data = np.full((0, n_cols), np.nan, dtype=np.float32)

    def put(self, r0: int, c0: int, values: np.ndarray) -> None:
        r1 = r0 + values.shape[0]
        if r0 < self.row0:
            raise RuntimeError("pyramid slabs must arrive in time order")
        need = r1 - self.row0
        if need > self.data.shape[0]:
            grown = np.full((need, self.n_cols), np.nan, dtype=np.float32)
            grown[: self.data.shape[0]] = self.data
            self.data = grown
        self.data[r0 - self.row0 : r1 - self.row0, c0 : c0 + values.shape[1]] = values

    def complete_to(self, r1: int) -> None:
        """Rows below ``r1`` are final: write every whole chunk row (and the last, ragged one)."""
        step = self.arr.chunks[0]
        end = self.n_rows if r1 >= self.n_rows else (r1 // step) * step
        if end <= self.row0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.arr[self.row0 : end, :] = self.data[: end - self.row0]
        self.data = self.data[end - self.row0 :].copy()
        self.row0 = end


class PyramidWriter:
    """Builds ``pyramid/<k>/{mean,peak}`` in a writable zarr group from slabs of ``activity``.

    Slabs must arrive in time order (all the unit blocks of one time range before the next), start
    at multiples of :attr:`block` frames and units, and span a multiple of :attr:`block` in each
    dimension unless they reach the end. Call :meth:`close` after the last one.

    Parameters
    ----------
    root
        The store's root ``zarr.Group`` (opened for writing); an existing ``pyramid`` group is replaced.
    shape
        ``activity``'s (T, U).
    levels
        Number of levels (default: :func:`n_levels`).
    """

    def __init__(self, root: Any, shape: tuple[int, int], *, levels: int | None = None, compressors: Any = None):
        self.shape = (int(shape[0]), int(shape[1]))
        self.levels = n_levels(self.shape) if levels is None else int(levels)
        self.block = FACTOR**self.levels
        if "pyramid" in root:
            del root["pyramid"]
        self.group = root.create_group("pyramid")
        self.group.attrs.update(
            {"factor": FACTOR, "levels": self.levels, "reductions": list(REDUCTIONS), "shape": list(self.shape), "complete": False}
        )
        comp = default_compressors() if compressors is None else compressors
        self._buffers: list[dict[str, _RowBuffer]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(1, self.levels + 1):
                shp = level_shape(self.shape, k)
                lvl = self.group.create_group(str(k))
                bufs = {}
                for kind in REDUCTIONS:
                    arr = lvl.create_array(
                        kind, shape=shp, chunks=_chunks_for(shp), dtype="float32", fill_value=np.nan, compressors=comp,
                        dimension_names=("time", "unit"),
                    )
                    bufs[kind] = _RowBuffer(arr, shp[1])
                self._buffers.append(bufs)

    def add(self, slab: Any, t0: int, u0: int) -> None:
        """Reduce one slab (``activity[t0:t0+rows, u0:u0+cols]``) into every level."""
        x = np.asarray(slab, dtype=np.float32)
        rows, cols = x.shape
        T, U = self.shape
        b = self.block
        if t0 % b or u0 % b:
            raise ValueError(f"slab start ({t0}, {u0}) is not a multiple of the pyramid block {b}")
        if (rows % b and t0 + rows != T) or (cols % b and u0 + cols != U) or t0 + rows > T or u0 + cols > U:
            raise ValueError(f"slab of shape {x.shape} at ({t0}, {u0}) is not whole {b}-blocks of {self.shape}")
        mean, peak, counts = x, x, None
        for k in range(1, self.levels + 1):
            new_mean, new_counts = reduce_blocks(mean, FACTOR, "mean", counts=counts, return_counts=True)
            peak = reduce_blocks(peak, FACTOR, "peak", counts=counts)
            mean, counts = new_mean, new_counts
            f = FACTOR**k
            bufs = self._buffers[k - 1]
            bufs["mean"].put(t0 // f, u0 // f, mean)
            bufs["peak"].put(t0 // f, u0 // f, peak)
            if u0 + cols == U:  # the last unit block of these frames: their rows are final
                r1 = -(-(t0 + rows) // f)
                bufs["mean"].complete_to(r1)
                bufs["peak"].complete_to(r1)

    def close(self) -> dict[str, Any]:
        """Flush what is left and mark the pyramid complete; returns :func:`pyramid_info`'s dict."""
        for bufs in self._buffers:
            for buf in bufs.values():
                buf.complete_to(buf.n_rows)
        self.group.attrs["complete"] = True
        return _info_from_attrs(dict(self.group.attrs))


def slab_shape(shape: tuple[int, int], memory_cap_bytes: int, *, align: int = 1, bytes_per_cell: int = BYTES_PER_CELL) -> tuple[int, int]:
    """(rows, cols) of the slabs to stream a (T, U) array in within ``memory_cap_bytes``.

    Rows are a multiple of ``lcm(align, 256)`` (whole chunk rows and whole pyramid blocks); all the
    units when they fit, else a multiple of ``lcm(align, 4096)`` (or of ``align`` if even that is
    too much). Raises ValueError when not even one ``align``-block fits.
    """
    T, U = int(shape[0]), int(shape[1])
    cells = max(1, int(memory_cap_bytes) // bytes_per_cell)
    row_step = math.lcm(align, CHUNKS[0])
    if row_step * U <= cells:
        rows = min(T, max(1, cells // U) // row_step * row_step) if T > row_step else T
        return max(rows, min(T, row_step)), U
    for col_step, r_step in ((math.lcm(align, CHUNKS[1]), row_step), (align, row_step), (align, align)):
        if r_step * col_step <= cells:
            cols = min(U, cells // r_step // col_step * col_step)
            return min(T, r_step), cols
    raise ValueError(
        f"a memory cap of {memory_cap_bytes} bytes cannot hold one {align}×{align} pyramid block "
        f"({align * align * bytes_per_cell} bytes)"
    )


def iter_slabs(shape: tuple[int, int], rows: int, cols: int) -> Iterator[tuple[int, int, int, int]]:
    """``(t0, t1, u0, u1)`` in time order, every unit block of a time range before the next."""
    T, U = shape
    for t0 in range(0, T, rows):
        for u0 in range(0, U, cols):
            yield t0, min(t0 + rows, T), u0, min(u0 + cols, U)


def _open_group(store: Any, mode: str) -> Any:
    import zarr

    if isinstance(store, (str, os.PathLike)):
        p = Path(store)
        if not p.is_dir():
            raise RecordingError("not a Zarr store folder", path=p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return zarr.open_group(str(p), mode=mode, use_consolidated=False)
            except Exception as exc:  # zarr raises several kinds for a folder that is not a group
                raise RecordingError(f"cannot be opened as a Zarr group: {type(exc).__name__}: {exc}", path=p) from None
    return store


def build_pyramid(store: Any, *, memory_cap_bytes: int = DEFAULT_MEMORY_CAP, levels: int | None = None) -> dict[str, Any]:
    """Write ``pyramid/`` beside the ``activity`` of a chunked store, streaming within a memory cap.

    Parameters
    ----------
    store
        Path of the ``.zarr`` folder, or its root ``zarr.Group`` opened for writing.
    memory_cap_bytes
        Working memory allowed for the slabs (the pyramid's own row buffers come on top: a chunk row
        of level 1, 256 × U/4 × 8 bytes).
    levels
        Number of levels (default: :func:`n_levels` of ``activity``'s shape).

    Returns
    -------
    dict
        :func:`pyramid_info` of the result.
    """
    import zarr

    root = _open_group(store, "r+")
    where = store if isinstance(store, (str, os.PathLike)) else None
    if "activity" not in root:
        raise RecordingError("no 'activity' array in the store", path=where, field="activity")
    act = root["activity"]
    if act.ndim != 2:
        raise RecordingError(f"must be 2-D (time, unit), got shape {act.shape}", path=where, field="activity")
    shape = (int(act.shape[0]), int(act.shape[1]))
    writer = PyramidWriter(root, shape, levels=levels)
    rows, cols = slab_shape(shape, memory_cap_bytes, align=writer.block)
    for t0, t1, u0, u1 in iter_slabs(shape, rows, cols):
        writer.add(act[t0:t1, u0:u1], t0, u0)
        # the slab is released before the next is read
    info = writer.close()
    if isinstance(store, (str, os.PathLike)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(store))
    return info


# -- reading ----------------------------------------------------------------------------------


def _info_from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    shape = tuple(int(s) for s in attrs["shape"])
    levels = int(attrs["levels"])
    factor = int(attrs.get("factor", FACTOR))
    return {
        "factor": factor,
        "levels": levels,
        "reductions": list(attrs.get("reductions", REDUCTIONS)),
        "shape": list(shape),
        "complete": bool(attrs.get("complete", True)),
        "level_shapes": {k: list(level_shape(shape, k, factor)) for k in range(1, levels + 1)},
    }


def pyramid_info(store: Any) -> dict[str, Any] | None:
    """The pyramid a chunked store holds, from metadata only, or None when it has none (or an
    unfinished one).

    Returns
    -------
    dict or None
        ``{"factor": 4, "levels": K, "reductions": ["mean", "peak"], "shape": [T, U],
        "complete": True, "level_shapes": {k: [rows, cols]}}``; level k's arrays are
        ``<store>/pyramid/<k>/mean`` and ``…/peak``.
    """
    try:
        root = _open_group(store, "r")
    except RecordingError:
        return None
    if "pyramid" not in root:
        return None
    attrs = dict(root["pyramid"].attrs)
    if "levels" not in attrs or "shape" not in attrs or not attrs.get("complete", True):
        return None
    return _info_from_attrs(attrs)


def open_level(store: Any, k: int, kind: Kind = "mean") -> Any:
    """The ``zarr.Array`` of level ``k``'s ``kind`` (level 0 is ``activity`` itself); lazy."""
    root = _open_group(store, "r")
    if k == 0:
        return root["activity"]
    try:
        return root[f"pyramid/{int(k)}/{kind}"]
    except KeyError:
        raise RecordingError(f"no pyramid level {k} ({kind})", path=store if isinstance(store, (str, os.PathLike)) else None,
                             field=f"pyramid/{k}/{kind}") from None

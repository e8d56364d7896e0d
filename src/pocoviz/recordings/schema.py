"""The recording schema: one animal, one session, as an ``xarray.Dataset``.

- ``activity``: dims ``("time", "unit")``, float32; ``activity.attrs["units"]`` says what the values
  are (``"z-score"``, ``"dF/F"``, ``"F"`` or ``"a.u."``).
- coords: ``time`` (seconds, strictly increasing), ``unit`` (int, unique), per unit ``region`` and
  ``label`` (str, ``""`` when unknown), optional ``x``, ``y``, ``z`` (µm).
- attrs: ``species``, ``session``, ``sampling_rate_hz``, ``source``, ``citation``.
- ``activity`` may be Dask-backed (a large recording opened lazily by
  :func:`~pocoviz.recordings.io.open_recording`): :func:`is_lazy` tells, and :func:`validate` and
  :func:`summarize` then read a bounded sample of it (:func:`activity_sample`), never the whole array.
- duplicated labels (two units carrying the same non-empty ``label``, as in a NeuroPAL table that
  names one neuron twice) are kept: :func:`make_recording` and :func:`as_recording` mark them with
  a boolean unit coord ``label_duplicate`` and ``attrs["duplicate_labels"]`` (the labels,
  comma-separated); both are present only when some label repeats.

:func:`validate` checks all of this and raises :class:`RecordingError` naming the file and field.
:func:`make_recording` builds a valid dataset from arrays.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

ACTIVITY_UNITS = ("z-score", "dF/F", "F", "a.u.")
REQUIRED_ATTRS = ("species", "session", "sampling_rate_hz", "source", "citation")
POSITION_COORDS = ("x", "y", "z")
#: Largest array a reader will load, in bytes (``POCOVIZ_MAX_BYTES`` overrides).
DEFAULT_MAX_BYTES = 8 * 2**30
#: ``activity`` larger than this (bytes) opens lazily, Dask-backed (``POCOVIZ_LAZY_BYTES`` overrides).
DEFAULT_LAZY_BYTES = 256 * 2**20
#: The lazy sample: at most this many frames from each sampled time chunk.
SAMPLE_FRAMES_PER_BLOCK = 256
#: The lazy sample is read in pieces of at most this many bytes (a storage chunk when smaller).
SAMPLE_PIECE_BYTES = 4 * 2**20
#: Pieces of the lazy sample read at once.
SAMPLE_THREADS = 1
#: The lazy sample holds at most this many bytes of activity (but always the first time chunk):
#: first, last and middle time chunks, in that order, as many as fit.
SAMPLE_MAX_BYTES = 160 * 2**20


#: Unit coord (bool) marking units whose non-empty label another unit of the recording carries too.
DUPLICATE_COORD = "label_duplicate"
#: Recording attr listing the duplicated labels, comma-separated.
DUPLICATE_ATTR = "duplicate_labels"


class RecordingError(ValueError):
    """A recording (file or dataset) does not fit the schema or cannot be read.

    Attributes
    ----------
    path : str or None
        The file (or folder) concerned, when there is one.
    field : str or None
        The schema field, file member or variable at fault.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.problem = message
        where = []
        if self.path:
            where.append(self.path)
        if field:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where + [message]) if where else message)


def max_bytes() -> int:
    """The size limit for one array (``POCOVIZ_MAX_BYTES`` overrides the 8 GiB default)."""
    env = os.environ.get("POCOVIZ_MAX_BYTES", "").strip()
    return int(env) if env.isdigit() else DEFAULT_MAX_BYTES


def lazy_bytes() -> int:
    """The size above which ``activity`` opens lazily (``POCOVIZ_LAZY_BYTES`` overrides the 256 MiB default)."""
    env = os.environ.get("POCOVIZ_LAZY_BYTES", "").strip()
    return int(env) if env.isdigit() else DEFAULT_LAZY_BYTES


def wants_lazy(nbytes: int, load: bool | None) -> bool:
    """Whether an ``activity`` of ``nbytes`` opens lazily: ``load=True`` never, ``load=False`` always,
    ``load=None`` when it is larger than :func:`lazy_bytes`."""
    if load is None:
        return int(nbytes) > lazy_bytes()
    return not bool(load)


def is_lazy(obj: xr.Dataset | xr.DataArray) -> bool:
    """Whether a recording's ``activity`` (or a DataArray) is Dask-backed, not in memory.

    Examples
    --------
    >>> import numpy as np
    >>> ds = make_recording(np.zeros((10, 3)), sampling_rate_hz=2.0, species="test", session="s0")
    >>> is_lazy(ds), is_lazy(ds.chunk({"time": 5}))
    (False, True)
    """
    da = obj["activity"] if isinstance(obj, xr.Dataset) else obj
    return da.chunks is not None


def check_declared_size(shape: tuple[int, ...], itemsize: int, *, path: Any = None, field: str | None = None) -> None:
    """Refuse to load an array whose declared shape is larger than :func:`max_bytes`."""
    if any(int(s) < 0 for s in shape):
        raise RecordingError(f"negative dimension in declared shape {tuple(shape)}", path=path, field=field)
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * int(itemsize)
    if nbytes > max_bytes():
        raise RecordingError(
            f"declared shape {tuple(int(s) for s in shape)} needs {nbytes / 2**30:.1f} GiB, more than the "
            f"{max_bytes() / 2**30:.1f} GiB limit (set POCOVIZ_MAX_BYTES to raise it)",
            path=path,
            field=field,
        )


def _source_of(ds: xr.Dataset, path: Any) -> str | None:
    if path is not None:
        return str(path)
    src = ds.attrs.get("source")
    return str(src) if src else None


def _is_string_array(values: np.ndarray) -> bool:
    if values.dtype.kind in "US":
        return True
    if values.dtype.kind == "O":
        return all(isinstance(v, str) for v in values.ravel())
    return False


def validate(ds: xr.Dataset, *, path: str | os.PathLike | None = None) -> xr.Dataset:
    """Check that ``ds`` is a recording; return it unchanged.

    Parameters
    ----------
    ds
        The dataset to check.
    path
        The file it came from, named in error messages (defaults to ``ds.attrs["source"]``).

    Raises
    ------
    RecordingError
        The first problem found, naming the file and the field.

    Notes
    -----
    A lazy (Dask-backed) ``activity`` is checked on :func:`activity_sample` only (first, last and
    middle time chunks, at most 256 frames each and 160 MiB in all; read once and remembered): an
    infinite value or a frame that is all NaN there is an error, as in memory; a unit that is all
    NaN is refused only in memory, since a unit all NaN in the sample may have values elsewhere.
    Metadata (coords, attrs) is always checked in full.

    Examples
    --------
    >>> import numpy as np
    >>> from pocoviz.recordings import make_recording, validate
    >>> ds = make_recording(np.zeros((10, 3)), sampling_rate_hz=2.0, species="test", session="s0")
    >>> validate(ds) is ds
    True
    """
    where = _source_of(ds, path)

    def fail(field: str, msg: str) -> RecordingError:
        return RecordingError(msg, path=where, field=field)

    if not isinstance(ds, xr.Dataset):
        raise RecordingError(f"expected an xarray.Dataset, got {type(ds).__name__}", path=where)
    if "activity" not in ds.data_vars:
        raise fail("activity", f"missing; the dataset has variables {sorted(map(str, ds.data_vars)) or 'none'}")
    act = ds["activity"]
    if act.dims != ("time", "unit"):
        raise fail("activity", f"dims must be ('time', 'unit'), got {act.dims}")
    if act.dtype != np.float32:
        raise fail("activity", f"dtype must be float32, got {act.dtype}")
    n_time, n_unit = act.shape
    if n_time < 2:
        raise fail("time", f"needs at least 2 frames, got {n_time}")
    if n_unit < 1:
        raise fail("unit", "has no units")
    units_attr = act.attrs.get("units")
    if units_attr not in ACTIVITY_UNITS:
        raise fail("activity.attrs['units']", f"must be one of {ACTIVITY_UNITS}, got {units_attr!r}")

    # coordinates -------------------------------------------------------------------------
    if "time" not in ds.coords:
        raise fail("time", "coordinate missing")
    t = np.asarray(ds["time"].values)
    if t.dtype.kind not in "fiu":
        raise fail("time", f"must be numeric seconds, got dtype {t.dtype}")
    if not np.all(np.isfinite(t)):
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise fail("time", f"non-finite value at frame {bad}")
    dt = np.diff(t.astype(np.float64))
    if np.any(dt <= 0):
        bad = int(np.flatnonzero(dt <= 0)[0])
        raise fail("time", f"must be strictly increasing; frame {bad + 1} ({t[bad + 1].item()!r}) is not after frame {bad} ({t[bad].item()!r})")
    if "unit" not in ds.coords:
        raise fail("unit", "coordinate missing")
    u = np.asarray(ds["unit"].values)
    if u.dtype.kind not in "iu":
        raise fail("unit", f"must be integer ids, got dtype {u.dtype}")
    sorted_u = u if len(u) < 2 or np.all(np.diff(u) > 0) else np.sort(u, kind="stable")
    if len(sorted_u) > 1 and np.any(sorted_u[1:] == sorted_u[:-1]):  # sort + compare: fast for 71k ids
        vals, counts = np.unique(u, return_counts=True)
        raise fail("unit", f"ids must be unique; {vals[counts > 1][:5].tolist()} repeat")
    for name in ("region", "label"):
        if name not in ds.coords:
            raise fail(name, "coordinate missing (use '' for unknown)")
        c = ds[name]
        if c.dims != ("unit",):
            raise fail(name, f"must have dims ('unit',), got {c.dims}")
        if not _is_string_array(np.asarray(c.values)):
            raise fail(name, f"must hold strings, got dtype {c.dtype}")
    for name in POSITION_COORDS:
        if name in ds.coords:
            c = ds[name]
            if c.dims != ("unit",):
                raise fail(name, f"must have dims ('unit',), got {c.dims}")
            v = np.asarray(c.values)
            if v.dtype.kind not in "fiu":
                raise fail(name, f"must be numeric µm, got dtype {v.dtype}")
            if np.any(np.isinf(v)):
                raise fail(name, "holds infinite values")

    # attributes --------------------------------------------------------------------------
    for name in REQUIRED_ATTRS:
        if name not in ds.attrs:
            raise fail(f"attrs['{name}']", "missing")
    for name in ("species", "session", "source", "citation"):
        if not isinstance(ds.attrs[name], str):
            raise fail(f"attrs['{name}']", f"must be a string, got {type(ds.attrs[name]).__name__}")
    for name in ("species", "session"):
        if not ds.attrs[name].strip():
            raise fail(f"attrs['{name}']", "must not be empty")
    rate = ds.attrs["sampling_rate_hz"]
    try:
        rate_f = float(rate)
    except (TypeError, ValueError):
        raise fail("attrs['sampling_rate_hz']", f"must be a number, got {rate!r}") from None
    if not np.isfinite(rate_f) or rate_f <= 0:
        raise fail("attrs['sampling_rate_hz']", f"must be a positive finite number, got {rate!r}")

    # values ------------------------------------------------------------------------------
    if is_lazy(act):
        _validate_sample(act, u, fail)
        return ds
    a = act.values
    if np.isinf(a).any():
        frame, unit = map(int, np.argwhere(np.isinf(a))[0])
        raise fail("activity", f"infinite value at frame {frame}, unit index {unit}")
    nan = np.isnan(a)
    if nan.any():
        all_nan_units = np.flatnonzero(nan.all(axis=0))
        if len(all_nan_units):
            raise fail(
                "activity",
                f"{len(all_nan_units)} unit(s) are all NaN (unit ids {u[all_nan_units][:5].tolist()}); drop them first",
            )
        all_nan_frames = np.flatnonzero(nan.all(axis=1))
        if len(all_nan_frames):
            raise fail("activity", f"{len(all_nan_frames)} frame(s) are all NaN (first: frame {int(all_nan_frames[0])})")
    return ds


# --- the lazy sample -------------------------------------------------------------------------------

_SAMPLE_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}
_SAMPLE_CACHE_SIZE = 32
_SAMPLE_LOCK = threading.Lock()


def sample_blocks(time_chunks: tuple[int, ...], frame_bytes: int = 0) -> list[tuple[int, int]]:
    """The frame ranges ``[(start, stop), ...]`` the lazy sample reads, given the time chunking.

    The first, last and middle time chunks (fewer when there are fewer), at most
    :data:`SAMPLE_FRAMES_PER_BLOCK` frames from the start of each; when frames are wide
    (``frame_bytes``, the bytes of one frame of every unit), only as many of them, in that order,
    as fit in :data:`SAMPLE_MAX_BYTES`, and always the first.

    Examples
    --------
    >>> sample_blocks((256,) * 30 + (199,))
    [(0, 256), (3840, 4096), (7680, 7879)]
    >>> sample_blocks((256,) * 30 + (199,), frame_bytes=71_721 * 4)  # ZAPBench's width: first and last
    [(0, 256), (7680, 7879)]
    >>> sample_blocks((1000,))
    [(0, 256)]
    """
    starts = np.concatenate([[0], np.cumsum(time_chunks)]).astype(int)
    n = len(time_chunks)
    picks: list[int] = []
    used = 0
    for i in (0, n - 1, n // 2) if n else ():
        if i in picks:
            continue
        block = (int(min(starts[i + 1], starts[i] + SAMPLE_FRAMES_PER_BLOCK)) - int(starts[i])) * int(frame_bytes)
        if picks and used + block > SAMPLE_MAX_BYTES:
            break
        picks.append(i)
        used += block
    return [(int(starts[i]), int(min(starts[i + 1], starts[i] + SAMPLE_FRAMES_PER_BLOCK))) for i in sorted(picks)]


def _piece_edges(size: int, chunks: tuple[int, ...], storage: int | None, max_len: int) -> list[tuple[int, int]]:
    """Cut ``range(size)`` into pieces that never cross a dask chunk, aligned to the storage chunk
    when it is known, each at most ``max_len`` long (but at least one storage chunk)."""
    step = max(1, max_len)
    if storage:
        step = max(int(storage), (step // int(storage)) * int(storage))
    out = []
    start = 0
    for c in chunks:
        stop = start + int(c)
        for a in range(start, stop, step):
            out.append((a, min(stop, a + step)))
        start = stop
    return out


def activity_sample(act: xr.DataArray) -> dict[str, Any]:
    """Statistics of the bounded sample of a lazy ``activity`` that :func:`validate` and
    :func:`summarize` use (read once per Dask array, then remembered).

    The sample is every unit over the frames of :func:`sample_blocks` (first, last and middle time
    chunks, at most 256 frames each and 160 MiB in all), read piece by piece (a storage chunk at a time when the store's chunks are known), so
    that memory stays at a few chunks.

    Parameters
    ----------
    act : DataArray, dims (time, unit), Dask-backed

    Returns
    -------
    dict
        ``blocks`` (the frame ranges), ``n_frames`` (frames read), ``n_time``, ``nan_count``,
        ``first_inf`` (``(frame, unit index)`` or None), ``all_nan_frames`` (frame indices whose
        every unit is NaN), ``sample_all_nan_units`` (unit indices all NaN within the sample).
    """
    data = act.data
    key = (getattr(data, "name", None) or id(data), tuple(act.shape), str(act.dtype))
    with _SAMPLE_LOCK:
        hit = _SAMPLE_CACHE.get(key)
    if hit is not None:
        return hit
    n_time, n_unit = (int(s) for s in act.shape)
    t_chunks, u_chunks = act.chunks
    storage = act.encoding.get("preferred_chunks") or {}
    s_unit = storage.get("unit") if isinstance(storage, dict) else None
    itemsize = max(1, int(np.dtype(act.dtype).itemsize))
    blocks = sample_blocks(tuple(t_chunks), frame_bytes=n_unit * itemsize)
    pieces = [
        (b, t0, t1, u0, u1)
        for b, (t0, t1) in enumerate(blocks)
        for u0, u1 in _piece_edges(n_unit, tuple(u_chunks), s_unit, max(1, SAMPLE_PIECE_BYTES // (max(1, t1 - t0) * itemsize)))
    ]

    def read(piece: tuple[int, int, int, int, int]) -> tuple[Any, ...]:
        b, t0, t1, u0, u1 = piece
        block = np.asarray(data[t0:t1, u0:u1].compute(scheduler="sync"))
        inf = np.isinf(block)
        where = None
        if inf.any():
            f, j = np.argwhere(inf)[0]
            where = (t0 + int(f), u0 + int(j))
        nan = np.isnan(block)
        return b, u0, u1, where, nan.sum(axis=1), nan.all(axis=0)

    nan_per_frame = [np.zeros(t1 - t0, dtype=np.int64) for t0, t1 in blocks]
    unit_all_nan = np.ones(n_unit, dtype=bool)
    first_inf: tuple[int, int] | None = None
    # SAMPLE_THREADS pieces at a time (1: zarr decodes one chunk at a time; 2 halves the wall time
    # on two idle cores but adds ~30 MB of peak RSS at ZAPBench's size)
    with ThreadPoolExecutor(max_workers=SAMPLE_THREADS) as pool:
        for b, u0, u1, where, frame_nans, all_nan in pool.map(read, pieces):
            if first_inf is None and where is not None:
                first_inf = where
            nan_per_frame[b] += frame_nans
            unit_all_nan[u0:u1] &= all_nan
    per_frame = np.concatenate(nan_per_frame) if nan_per_frame else np.zeros(0, dtype=np.int64)
    frames = np.concatenate([np.arange(a, b) for a, b in blocks]) if blocks else np.zeros(0, dtype=int)
    out = {
        "blocks": blocks,
        "n_frames": int(len(frames)),
        "n_time": n_time,
        "nan_count": int(per_frame.sum()),
        "first_inf": first_inf,
        "all_nan_frames": frames[per_frame == n_unit].tolist(),
        "sample_all_nan_units": np.flatnonzero(unit_all_nan).tolist() if len(frames) else [],
    }
    with _SAMPLE_LOCK:
        while len(_SAMPLE_CACHE) >= _SAMPLE_CACHE_SIZE:
            _SAMPLE_CACHE.pop(next(iter(_SAMPLE_CACHE)))
        _SAMPLE_CACHE[key] = out
    return out


def _validate_sample(act: xr.DataArray, u: np.ndarray, fail: Any) -> None:
    sample = activity_sample(act)
    if sample["first_inf"] is not None:
        frame, unit = sample["first_inf"]
        raise fail("activity", f"infinite value at frame {frame}, unit index {unit}")
    frames = sample["all_nan_frames"]
    if frames:
        raise fail(
            "activity",
            f"{len(frames)} frame(s) are all NaN (first: frame {int(frames[0])}; checked on a sample of "
            f"{sample['n_frames']} of {sample['n_time']} frames)",
        )


def _label_strings(labels: Any) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in np.asarray(labels, dtype=object).tolist()]


def duplicate_labels(labels: Any) -> dict[str, list[int]]:
    """Labels carried by more than one unit: ``{label: positional unit indices}`` (``""`` ignored).

    ``labels`` is a sequence of per-unit labels, or a recording (its ``label`` coord).

    Examples
    --------
    >>> duplicate_labels(["AVAL", "URADL", "", "URADL", ""])
    {'URADL': [1, 3]}
    """
    if isinstance(labels, xr.Dataset):
        labels = labels["label"].values if "label" in labels.coords else []
    arr = np.asarray(labels)
    if arr.dtype.kind == "U":  # fast path (71k units): no repeated non-empty label, nothing to list
        named = arr[arr != ""]
        if len(set(named.tolist())) == len(named):
            return {}
    where: dict[str, list[int]] = {}
    for i, lab in enumerate(_label_strings(labels)):
        if lab:
            where.setdefault(lab, []).append(i)
    return {lab: idx for lab, idx in sorted(where.items()) if len(idx) > 1}


def label_duplicate_mask(labels: Any) -> np.ndarray:
    """Per unit, whether its (non-empty) label is carried by another unit too; bool (U,)."""
    if isinstance(labels, xr.Dataset):
        labels = labels["label"].values if "label" in labels.coords else []
    n = len(_label_strings(labels))
    mask = np.zeros(n, dtype=bool)
    for idx in duplicate_labels(labels).values():
        mask[idx] = True
    return mask


def flag_duplicate_labels(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the ``label_duplicate`` coord and ``duplicate_labels`` attr set from its labels
    (both removed when no label repeats). The input is not changed; it is returned as it is when
    there is nothing to flag or remove."""
    dups = duplicate_labels(ds)
    if not dups and DUPLICATE_COORD not in ds.coords and DUPLICATE_ATTR not in ds.attrs:
        return ds
    out = ds.drop_vars(DUPLICATE_COORD) if DUPLICATE_COORD in ds.coords else ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k != DUPLICATE_ATTR}
    if dups:
        out = out.assign_coords({DUPLICATE_COORD: ("unit", label_duplicate_mask(ds))})
        out.attrs[DUPLICATE_ATTR] = ", ".join(dups)
    return out


def make_recording(
    activity: Any,
    *,
    sampling_rate_hz: float,
    species: str,
    session: str,
    time: Any = None,
    unit: Any = None,
    region: Any = None,
    label: Any = None,
    x: Any = None,
    y: Any = None,
    z: Any = None,
    units: str = "dF/F",
    source: str = "",
    citation: str = "",
    unit_coords: Mapping[str, Any] | None = None,
    time_vars: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
) -> xr.Dataset:
    """Build a validated recording from arrays.

    Parameters
    ----------
    activity : array, shape (T, U)
        Activity, time by unit; stored as float32.
    sampling_rate_hz
        Frames per second; ``time`` defaults to ``arange(T) / sampling_rate_hz``.
    time : array, shape (T,), optional
        Frame times in seconds.
    unit, region, label, x, y, z : array, shape (U,), optional
        Per-unit ids (default ``0..U-1``), region and neuron label (default ``""``), positions (µm).
    unit_coords, time_vars
        Extra per-unit coordinates and per-frame variables (e.g. behaviour).
    path
        The file this came from, for error messages.

    Returns
    -------
    xarray.Dataset
        A dataset that passes :func:`validate`.
    """
    where = path if path is not None else (source or None)
    a = np.asarray(activity)
    if a.ndim != 2:
        raise RecordingError(f"must be 2-D (time, unit), got shape {a.shape}", path=where, field="activity")
    if a.dtype.kind not in "fiu":
        raise RecordingError(f"must be numeric, got dtype {a.dtype}", path=where, field="activity")
    a = a.astype(np.float32, copy=False)
    n_time, n_unit = a.shape
    try:
        rate = float(sampling_rate_hz)
    except (TypeError, ValueError):
        raise RecordingError(f"must be a number, got {sampling_rate_hz!r}", path=where, field="sampling_rate_hz") from None
    if time is None:
        if not (np.isfinite(rate) and rate > 0):
            raise RecordingError(f"must be positive, got {sampling_rate_hz!r}", path=where, field="sampling_rate_hz")
        time = np.arange(n_time, dtype=np.float64) / rate
    time = np.asarray(time, dtype=np.float64)

    def per_unit(name: str, values: Any, default: Any) -> np.ndarray:
        if values is None:
            return np.full(n_unit, default) if not callable(default) else default()
        arr = np.asarray(values)
        if arr.shape != (n_unit,):
            raise RecordingError(f"must have one value per unit ({n_unit}), got shape {arr.shape}", path=where, field=name)
        return arr

    def as_str(name: str, values: Any) -> np.ndarray:
        # dtype=object keeps a NaN in a list of strings a float (np.asarray would make it 'nan')
        arr = per_unit(name, None if values is None else np.asarray(values, dtype=object), "")
        return np.array(
            [
                "" if v is None or (isinstance(v, float) and np.isnan(v))
                else (v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v))
                for v in arr
            ],
            dtype=object,
        )

    if time.shape != (n_time,):
        raise RecordingError(f"must have one value per frame ({n_time}), got shape {time.shape}", path=where, field="time")
    coords: dict[str, Any] = {
        "time": ("time", time, {"units": "s"}),
        "unit": ("unit", per_unit("unit", unit, lambda: np.arange(n_unit)).astype(np.int64)),
        "region": ("unit", as_str("region", region).astype(str)),
        "label": ("unit", as_str("label", label).astype(str)),
    }
    for name, vals in (("x", x), ("y", y), ("z", z)):
        if vals is not None:
            coords[name] = ("unit", per_unit(name, vals, np.nan).astype(np.float64), {"units": "um"})
    for name, vals in (unit_coords or {}).items():
        arr = np.asarray(vals)
        if arr.shape[:1] != (n_unit,):
            raise RecordingError(f"must have one value per unit ({n_unit}), got shape {arr.shape}", path=where, field=name)
        coords[name] = (("unit",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim)), arr)
    data_vars: dict[str, Any] = {"activity": (("time", "unit"), a, {"units": units})}
    for name, vals in (time_vars or {}).items():
        arr = np.asarray(vals)
        if arr.shape[:1] != (n_time,):
            raise RecordingError(f"must have one value per frame ({n_time}), got shape {arr.shape}", path=where, field=name)
        dims = ("time",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim))
        data_vars[name] = (dims, arr)
    all_attrs = {
        "species": str(species),
        "session": str(session),
        "sampling_rate_hz": rate,
        "source": str(source),
        "citation": str(citation),
    }
    all_attrs.update(attrs or {})
    ds = flag_duplicate_labels(xr.Dataset(data_vars, coords=coords, attrs=all_attrs))
    return validate(ds, path=where)


def as_recording(ds: xr.Dataset, *, path: str | os.PathLike | None = None) -> xr.Dataset:
    """Normalise a dataset that is almost a recording (float64 activity, missing ``region``/``label``,
    string-typed attrs) and validate it. Never changes the input object."""
    ds = ds.copy()
    if "activity" in ds.data_vars:
        act = ds["activity"]
        if act.dims == ("unit", "time"):
            ds["activity"] = act.transpose("time", "unit")
        if ds["activity"].dtype.kind in "fiu" and ds["activity"].dtype != np.float32:
            attrs = dict(ds["activity"].attrs)
            ds["activity"] = ds["activity"].astype(np.float32)
            ds["activity"].attrs.update(attrs)
        if "units" not in ds["activity"].attrs:
            ds["activity"].attrs["units"] = "a.u."
        if "unit" in ds.dims:
            n_unit = ds.sizes["unit"]
            if "unit" not in ds.coords:
                ds = ds.assign_coords(unit=np.arange(n_unit))
            for name in ("region", "label"):
                if name not in ds.coords:
                    ds = ds.assign_coords({name: ("unit", np.full(n_unit, "", dtype=object).astype(str))})
                else:
                    vals = np.asarray(ds[name].values)
                    if vals.dtype.kind == "S":
                        ds = ds.assign_coords({name: ("unit", np.char.decode(vals, "utf-8").astype(str))})
    for name in ("source", "citation"):
        ds.attrs.setdefault(name, str(path) if (name == "source" and path) else "")
    validate(ds, path=path)
    return flag_duplicate_labels(ds)


def summarize(ds: xr.Dataset) -> dict[str, Any]:
    """A JSON-able summary of a recording (used by ``pocoviz info`` and the app).

    For a lazy (Dask-backed) ``activity`` nothing beyond :func:`activity_sample` is read:
    ``nan_fraction`` is that of the sample, and two more fields say so: ``activity_checked``
    (e.g. ``"sample of 768 of 7879 frames"``) and ``activity_sample_frames`` (the frame ranges
    ``[[start, stop], ...]``: see :func:`sample_blocks`). In-memory recordings are
    summarised from every value and have neither field.
    """
    regions, counts = np.unique(np.asarray(ds["region"].values).astype(str), return_counts=True)
    labels = np.asarray(ds["label"].values).astype(str)
    t = ds["time"].values
    lazy = is_lazy(ds)
    if lazy:
        sample = activity_sample(ds["activity"])
        nan_fraction = sample["nan_count"] / max(1, sample["n_frames"] * int(ds.sizes["unit"]))
    else:
        nan_fraction = float(np.isnan(ds["activity"].values).mean())
    out: dict[str, Any] = {
        "species": ds.attrs.get("species"),
        "session": ds.attrs.get("session"),
        "n_time": int(ds.sizes["time"]),
        "n_unit": int(ds.sizes["unit"]),
        "sampling_rate_hz": float(ds.attrs.get("sampling_rate_hz")),
        "duration_s": float(t[-1] - t[0]),
        "activity_units": ds["activity"].attrs.get("units"),
        "regions": {("(none)" if r == "" else str(r)): int(c) for r, c in zip(regions, counts)},
        "n_labelled": int((labels != "").sum()),
        "has_positions": [c for c in POSITION_COORDS if c in ds.coords],
        "nan_fraction": float(nan_fraction),
        "source": ds.attrs.get("source"),
        "citation": ds.attrs.get("citation"),
    }
    if lazy:
        out["activity_checked"] = f"sample of {sample['n_frames']} of {sample['n_time']} frames"
        out["activity_sample_frames"] = [[int(a), int(b)] for a, b in sample["blocks"]]
    extra = {k: v for k, v in ds.attrs.items() if k not in REQUIRED_ATTRS and isinstance(v, (str, int, float))}
    if extra:
        out["attrs"] = {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in extra.items()}
    return out


def display_path(path: str | os.PathLike) -> str:
    """The path as users typed it (for messages)."""
    return str(Path(path))

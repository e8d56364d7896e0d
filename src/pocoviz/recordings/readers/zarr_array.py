"""Reader for a bare Zarr array of (time, unit) float32: the layout in which ZAPBench publishes its
traces (a store whose root ``zarr.json`` has ``node_type: "array"``, or a Zarr v2 ``.zarray``).

The array holds only the activity. Without a sidecar it opens with defaults: ``time`` is the frame
index at a placeholder 1 Hz (``attrs["time_is_frame_index"] = 1``, as the other readers do when the
rate is unknown), units ``0..U-1``, no regions, no labels, no positions, species ``"unknown"``,
session the store's name. A JSON **sidecar** gives the rest. It is ``pocoviz.json`` inside the
store folder, or ``<store>.pocoviz.json`` beside the store (e.g. ``traces.zarr.pocoviz.json``);
the first found is used. Its fields, all optional, and no others:

====================  ===========================================================================
``sampling_rate_hz``  frames per second (positive number); time becomes ``arange(T) / rate``
``species``           str
``session``           str
``units``             what the values are: ``"z-score"``, ``"dF/F"``, ``"F"`` or ``"a.u."``
``source``            str (default: the store's path)
``citation``          str
``regions``           list of str, one per unit (``""`` when unknown)
``labels``            list of str, one per unit (neuron identities, ``""`` when none)
``positions``         ``{"x": [...], "y": [...], "z": [...]}`` (any of the three; one finite number
                      per unit, µm), or the path of a ``.npy`` file of shape (U, 2) or (U, 3)
                      (x, y[, z]) relative to the sidecar, read with ``allow_pickle=False`` and
                      refused outside the data directory
``transpose``         ``true`` when the array is stored (unit, time)
====================  ===========================================================================

Anything else (an unknown key, a list of the wrong length, a non-finite number, a wrong type) is a
:class:`~pocoviz.recordings.schema.RecordingError` naming the sidecar file and the key.

Example sidecar::

    {"sampling_rate_hz": 1.0, "species": "zebrafish", "session": "zapbench",
     "units": "dF/F", "regions": ["tectum", "tectum", "..."], "positions": "positions.npy"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import ACTIVITY_UNITS, RecordingError, as_recording, check_declared_size, wants_lazy
from ._common import check_rate, load_npy, time_axis

#: Name of the sidecar inside the store folder; beside the store it is ``<store name>.pocoviz.json``.
SIDECAR_NAME = "pocoviz.json"
SIDECAR_KEYS = (
    "sampling_rate_hz",
    "species",
    "session",
    "units",
    "source",
    "citation",
    "regions",
    "labels",
    "positions",
    "transpose",
)
#: Largest sidecar read, in bytes (71,721 region names and positions fit in a few MB).
MAX_SIDECAR_BYTES = 256 * 2**20


def _root_metadata(path: Path) -> dict[str, Any] | None:
    """The root ``zarr.json`` (v3) or ``.zarray`` (v2) of a folder or zip store, parsed; None if absent."""
    for name in ("zarr.json", ".zarray"):
        raw: bytes | None = None
        if path.is_dir():
            f = path / name
            if f.is_file():
                raw = f.read_bytes()
        else:
            import zipfile

            try:
                with zipfile.ZipFile(path) as zf:
                    if name in zf.namelist():
                        raw = zf.read(name)
            except (zipfile.BadZipFile, OSError):
                return None
        if raw is None:
            continue
        try:
            meta = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(meta, dict):
            return None
        if name == ".zarray":
            meta = {**meta, "node_type": "array"}
        return meta
    return None


def is_bare_array(path: str | os.PathLike) -> bool:
    """Whether a Zarr store (folder or zip) is a single array at its root, not a group."""
    meta = _root_metadata(Path(path))
    return bool(meta) and meta.get("node_type") == "array"


def find_sidecar(path: str | os.PathLike) -> Path | None:
    """The sidecar of a bare-array store: ``<store>/pocoviz.json``, else ``<store>.pocoviz.json``."""
    p = Path(path)
    for cand in (p / SIDECAR_NAME, p.with_name(p.name + ".pocoviz.json")):
        if cand.is_file():
            return cand
    return None


def _finite_numbers(values: Any, n: int, *, where: Path, key: str) -> np.ndarray:
    if not isinstance(values, list):
        raise RecordingError(f"must be a list of {n} numbers, got {type(values).__name__}", path=where, field=key)
    if len(values) != n:
        raise RecordingError(f"must have one value per unit ({n}), got {len(values)}", path=where, field=key)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        bad = next(i for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, float)))
        raise RecordingError(f"must hold numbers; item {bad} is {values[bad]!r}", path=where, field=key)
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise RecordingError(f"must hold finite numbers; item {int(np.flatnonzero(~np.isfinite(arr))[0])} is not", path=where, field=key)
    return arr


def _strings(values: Any, n: int, *, where: Path, key: str) -> np.ndarray:
    if not isinstance(values, list):
        raise RecordingError(f"must be a list of {n} strings, got {type(values).__name__}", path=where, field=key)
    if len(values) != n:
        raise RecordingError(f"must have one value per unit ({n}), got {len(values)}", path=where, field=key)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise RecordingError(f"must hold strings; item {i} is {v!r}", path=where, field=key)
    return np.asarray(values, dtype=str) if values else np.zeros(0, dtype=str)


def _positions(value: Any, n: int, *, where: Path, data_dir: Any) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"x", "y", "z"})
        if unknown:
            raise RecordingError(f"unknown key(s) {unknown}; allowed: x, y, z", path=where, field="positions")
        return {k: _finite_numbers(value[k], n, where=where, key=f"positions.{k}") for k in ("x", "y", "z") if k in value}
    if isinstance(value, str):
        from ..io import resolve_in_data_dir

        rel = Path(value)
        full = rel if rel.is_absolute() else where.parent / rel
        try:
            npy = resolve_in_data_dir(full, data_dir)
        except RecordingError as exc:
            raise RecordingError(f"{value!r} {exc.problem}", path=where, field="positions") from None
        if not npy.is_file():
            raise RecordingError(f"file {value!r} not found (looked for {npy})", path=where, field="positions")
        arr = load_npy(npy, field="positions", ndim=2)
        if arr.dtype.kind not in "fiu" or arr.shape[0] != n or arr.shape[1] not in (2, 3):
            raise RecordingError(
                f"{value!r} must hold numbers of shape ({n}, 2) or ({n}, 3), got {arr.dtype} {arr.shape}",
                path=where,
                field="positions",
            )
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise RecordingError(f"{value!r} holds non-finite values", path=where, field="positions")
        return {k: arr[:, i] for i, k in enumerate("xyz"[: arr.shape[1]])}
    raise RecordingError(
        f"must be {{'x': [...], 'y': [...], 'z': [...]}} or a .npy path, got {type(value).__name__}",
        path=where,
        field="positions",
    )


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a sidecar and check its keys and scalar fields (per-unit fields are checked by
    :func:`check_sidecar`, once the unit count is known).

    Raises
    ------
    RecordingError
        Unreadable JSON, not an object, an unknown key, a scalar of the wrong type; naming the file and key.
    """
    p = Path(path)
    if p.stat().st_size > MAX_SIDECAR_BYTES:
        raise RecordingError(f"is larger than {MAX_SIDECAR_BYTES // 2**20} MiB", path=p)
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordingError(f"is not valid JSON: {exc}", path=p) from None
    if not isinstance(meta, dict):
        raise RecordingError(f"must be a JSON object, got {type(meta).__name__}", path=p)
    unknown = sorted(set(meta) - set(SIDECAR_KEYS))
    if unknown:
        raise RecordingError(f"unknown key; allowed keys: {', '.join(SIDECAR_KEYS)}", path=p, field=unknown[0])
    if "transpose" in meta and not isinstance(meta["transpose"], bool):
        raise RecordingError(f"must be true or false, got {meta['transpose']!r}", path=p, field="transpose")
    if "sampling_rate_hz" in meta:
        v = meta["sampling_rate_hz"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RecordingError(f"must be a number, got {v!r}", path=p, field="sampling_rate_hz")
        check_rate(v, path=p)
    for key in ("species", "session", "source", "citation"):
        if key in meta and not isinstance(meta[key], str):
            raise RecordingError(f"must be a string, got {meta[key]!r}", path=p, field=key)
    for key in ("species", "session"):
        if key in meta and not meta[key].strip():
            raise RecordingError("must not be empty", path=p, field=key)
    if "units" in meta and meta["units"] not in ACTIVITY_UNITS:
        raise RecordingError(f"must be one of {ACTIVITY_UNITS}, got {meta['units']!r}", path=p, field="units")
    return meta


def check_sidecar(meta: dict[str, Any], n_unit: int, *, path: str | os.PathLike, data_dir: Any = None) -> dict[str, Any]:
    """The per-unit fields of a parsed sidecar as arrays: ``{"region", "label", "x", "y", "z"}`` (those given)."""
    p = Path(path)
    out: dict[str, Any] = {}
    if "regions" in meta:
        out["region"] = _strings(meta["regions"], n_unit, where=p, key="regions")
    if "labels" in meta:
        out["label"] = _strings(meta["labels"], n_unit, where=p, key="labels")
    if "positions" in meta:
        out.update(_positions(meta["positions"], n_unit, where=p, data_dir=data_dir))
    return out


def read_zarr_array(
    path: str | os.PathLike,
    *,
    load: bool | None = None,
    sampling_rate_hz: float | None = None,
    species: str | None = None,
    session: str | None = None,
    sidecar: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> xr.Dataset:
    """Read a bare Zarr array (v3 or v2; a folder or a zip) of (time, unit) as a recording.

    Parameters
    ----------
    path
        The store. Its sidecar (see the module docstring) is found beside it unless ``sidecar`` is given.
    load
        As in :func:`~pocoviz.recordings.io.open_recording`: ``None`` loads arrays of at most 256 MiB
        (``POCOVIZ_LAZY_BYTES``) and keeps larger ones lazy (Dask, in the store's chunks); ``True`` /
        ``False`` force it.
    sampling_rate_hz, species, session
        Override the sidecar.
    sidecar
        A sidecar file to use instead of looking for one.
    data_dir
        A ``.npy`` of positions named by the sidecar must lie inside it (when given).

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, U) float32 (converted lazily when stored otherwise), units ``0..U-1``.

    Raises
    ------
    RecordingError
        Not a 2-D numeric array, a malformed sidecar (naming the file and key), a size over the limit
        when loading.

    Examples
    --------
    >>> import numpy as np, zarr, tempfile, os
    >>> store = os.path.join(tempfile.mkdtemp(), "traces.zarr")
    >>> zarr.create_array(store, data=np.zeros((20, 3), np.float32), chunks=(10, 3)).shape
    (20, 3)
    >>> ds = read_zarr_array(store)
    >>> ds.activity.shape, ds.attrs["time_is_frame_index"]
    ((20, 3), 1)
    """
    import zarr

    p = Path(path)
    side = Path(sidecar) if sidecar is not None else find_sidecar(p)
    meta = read_sidecar(side) if side is not None else {}
    from . import xarray_io

    store, close = xarray_io.zarr_target(p)
    keep_open = False
    try:
        try:
            arr = zarr.open_array(store, mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecordingError(f"cannot open the Zarr array: {type(exc).__name__}: {exc}", path=p, field="activity") from None
        if arr.ndim != 2:
            raise RecordingError(f"must be 2-D (time, unit), got shape {arr.shape}", path=p, field="activity")
        if arr.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric, got dtype {arr.dtype}", path=p, field="activity")
        transpose = bool(meta.get("transpose", False))
        n_time, n_unit = (arr.shape[::-1] if transpose else arr.shape)
        per_unit = check_sidecar(meta, int(n_unit), path=side, data_dir=data_dir) if side is not None else {}
        nbytes = int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize
        if wants_lazy(nbytes, load):
            data = _dask_array(arr, p, transpose=transpose)
            keep_open = True
        else:
            check_declared_size(tuple(arr.shape), arr.dtype.itemsize, path=p, field="activity")
            data = np.asarray(arr[...])
        if transpose:
            data = data.T
    finally:
        if not keep_open:
            close()
    if sampling_rate_hz is not None:
        rate: float | None = check_rate(sampling_rate_hz, path=p)
    elif "sampling_rate_hz" in meta:
        rate = float(meta["sampling_rate_hz"])
    else:
        rate = None
    time, rate, t_attrs = time_axis(int(n_time), rate, path=p)
    coords: dict[str, Any] = {
        "time": ("time", time, {"units": "s"}),
        "unit": ("unit", np.arange(n_unit, dtype=np.int64)),
        "region": ("unit", per_unit.get("region", np.full(n_unit, "", dtype=object).astype(str))),
        "label": ("unit", per_unit.get("label", np.full(n_unit, "", dtype=object).astype(str))),
    }
    for k in ("x", "y", "z"):
        if k in per_unit:
            coords[k] = ("unit", per_unit[k], {"units": "um"})
    attrs: dict[str, Any] = {
        "species": species or meta.get("species", "unknown"),
        "session": session or meta.get("session", p.name.split(".")[0] or p.name),
        "sampling_rate_hz": float(rate),
        "source": meta.get("source", str(p)),
        "citation": meta.get("citation", ""),
        **t_attrs,
    }
    enc_chunks = tuple(int(c) for c in arr.chunks)
    act = xr.Variable(("time", "unit"), data, {"units": meta.get("units", "a.u.")})
    act.encoding["preferred_chunks"] = dict(zip(("unit", "time") if transpose else ("time", "unit"), enc_chunks))
    ds = xr.Dataset({"activity": act}, coords=coords, attrs=attrs)
    rec = as_recording(ds, path=p)
    rec.encoding["source"] = str(p)
    if keep_open:
        rec.set_close(close)
    return rec


def _dask_array(arr: Any, path: Path, *, transpose: bool = False) -> Any:
    """The Zarr array as Dask, in whole multiples of its storage chunks (see ``xarray_io.dask_chunks``;
    grown along units, which are the first axis when ``transpose``)."""
    import dask.array as da
    from dask.base import tokenize

    from .xarray_io import MAX_DASK_CHUNKS, dask_chunks

    shape = tuple(int(s) for s in arr.shape)
    storage = tuple(int(c) for c in arr.chunks)
    if transpose:
        chunks = dask_chunks(shape[::-1], storage[::-1], arr.dtype.itemsize)[::-1]  # type: ignore[arg-type]
    else:
        chunks = dask_chunks(shape, storage, arr.dtype.itemsize)  # type: ignore[arg-type]
    n = -(-shape[0] // chunks[0]) * -(-shape[1] // chunks[1])
    if n > MAX_DASK_CHUNKS:
        raise RecordingError(f"declared shape {shape} in chunks {storage} makes {n} Dask chunks, more than {MAX_DASK_CHUNKS}", path=path, field="activity")
    stamp = []
    for f in (path, path / "zarr.json", path / ".zarray"):
        try:
            st = f.stat()
            stamp += [st.st_mtime_ns, st.st_size]
        except OSError:
            pass
    name = f"activity-{tokenize(str(path), stamp, shape, str(arr.dtype), chunks)}"
    return da.from_array(arr, chunks=chunks, name=name, asarray=True)

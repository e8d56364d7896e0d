"""Writing the chunked whole-brain store of docs/wholebrain.md from any source, slab by slab.

:func:`write_chunked` converts a recording (a path in any supported format, or an
``xarray.Dataset`` whose ``activity`` is numpy- or Dask-backed) into ``DEST.zarr`` (Zarr v3):
``activity`` in (256, 4096) chunks with units stored grouped by region (stable sort), the per-unit
and per-frame coordinates, and the pyramid (:mod:`pocoviz.recordings.pyramid`). Only one slab of
``activity`` is in memory at a time, so sources larger than memory convert within the cap. The
store is written into ``DEST.tmp-<pid>`` and renamed into place when complete.

:func:`create_store` / :func:`finish_store` are the two halves other writers (``pocoviz synth``)
share. :func:`parse_size` reads memory caps such as ``"1GB"``.

Never imports panel, holoviews or bokeh.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .pyramid import CHUNKS, DEFAULT_MEMORY_CAP, FACTOR, PyramidWriter, default_compressors, iter_slabs, n_levels, slab_shape
from .schema import POSITION_COORDS, RecordingError, validate

LAYOUT = "chunked-1"
#: Smallest memory cap accepted (one 256 × 4096 slab with its temporaries).
MIN_MEMORY_CAP = 32 * 2**20

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``"1GB"``, ``"512MiB"``, ``"1.5g"``, ``"800M"`` or a plain number of bytes.

    Decimal and binary suffixes both mean powers of 1024 (``"1GB"`` is 1 GiB), as memory caps are
    usually meant. Raises ValueError with the text for anything else.

    >>> parse_size("1GB"), parse_size("512m"), parse_size(4096)
    (1073741824, 536870912, 4096)
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"memory size must be positive, got {text}")
        return int(text)
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a memory size: {text!r} (examples: 1GB, 512MB, 1.5GiB)")
    number, prefix = float(m.group(1)), m.group(2).lower()
    value = int(number * 1024 ** " kmgt".index(prefix or " "))
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return value


# -- the store's two halves --------------------------------------------------------------------


def temp_path(dest: Path) -> Path:
    """Where a store is written before being renamed to ``dest``."""
    return dest.with_name(f"{dest.name}.tmp-{os.getpid()}")


def check_dest(dest: str | os.PathLike, *, overwrite: bool) -> Path:
    """The destination as a Path, refused (RecordingError) when it exists and ``overwrite`` is False,
    when it does not end in ``.zarr``, or when its folder does not exist."""
    d = Path(dest)
    if d.suffix != ".zarr":
        raise RecordingError("the destination must end in .zarr", path=d)
    if (d.exists() or d.is_symlink()) and not overwrite:
        raise RecordingError("exists; pass overwrite=True (--overwrite) to replace it", path=d)
    if not d.parent.is_dir():
        raise RecordingError(f"the folder {d.parent} does not exist", path=d)
    return d


def _string_values(values: Any) -> np.ndarray:
    """Fixed-width unicode (``<U``): what every reader's schema check accepts (numpy's StringDType is not)."""
    return np.array(["" if v is None else str(v) for v in np.asarray(values, dtype=object).ravel()], dtype=str)


def create_store(
    path: Path,
    *,
    n_time: int,
    time: np.ndarray,
    unit_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    activity_attrs: Mapping[str, Any],
    time_vars: Mapping[str, xr.Variable] | None = None,
    extra_coords: Mapping[str, xr.Variable] | None = None,
    compressors: Any = None,
) -> Any:
    """Write everything of a store but ``activity``'s values (coords, attrs, an empty chunked
    ``activity``) to ``path`` and return its root ``zarr.Group`` opened for writing.

    ``unit_coords`` are per-unit arrays in stored order: ``unit`` (int64), ``region`` and ``label``
    (strings), optional ``x``, ``y``, ``z`` (µm). ``time_vars`` are other (small) data variables
    (behaviour), ``extra_coords`` other coordinates, both written as they are.
    """
    import dask.array as da
    import zarr

    n_unit = len(unit_coords["unit"])
    coords: dict[str, Any] = {"time": ("time", np.asarray(time, dtype=np.float64), {"units": "s"})}
    for name, vals in unit_coords.items():
        arr = np.asarray(vals)
        if name in ("region", "label"):
            arr = _string_values(arr)
        elif name == "unit":
            arr = arr.astype(np.int64)
        elif name in POSITION_COORDS:
            arr = arr.astype(np.float32)
        coords[name] = ("unit", arr, {"units": "um"} if name in POSITION_COORDS else {})
    for name, var in (extra_coords or {}).items():
        coords[name] = var
    placeholder = da.zeros((n_time, n_unit), dtype=np.float32, chunks=CHUNKS)
    data_vars: dict[str, Any] = {"activity": (("time", "unit"), placeholder, dict(activity_attrs))}
    for name, var in (time_vars or {}).items():
        data_vars[name] = var
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    enc: dict[str, dict[str, Any]] = {
        "activity": {"chunks": CHUNKS, "compressors": default_compressors() if compressors is None else compressors}
    }
    for name, var in ds.variables.items():  # coords and small variables: one chunk each (the layout)
        if name != "activity" and var.ndim >= 1:
            enc[str(name)] = {"chunks": tuple(int(n) for n in var.shape)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(str(path), mode="w-", compute=False, zarr_format=3, encoding=enc, consolidated=False)
        return zarr.open_group(str(path), mode="r+", use_consolidated=False)


def finish_store(tmp: Path, dest: Path, *, overwrite: bool) -> Path:
    """Consolidate the metadata of the store at ``tmp`` and move it to ``dest`` (replacing an
    existing ``dest`` only when ``overwrite``)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp))
    old = None
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise RecordingError("appeared while writing; the new store is left at " + str(tmp), path=dest)
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    return dest


def remove_partial(tmp: Path) -> None:
    """Remove a half-written store (after an error)."""
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)


# -- import -------------------------------------------------------------------------------------

#: Memory an import keeps for Zarr's chunk I/O besides its slabs: a partly written (256, 4096) float32
#: chunk is read, modified, encoded and written (about four 4 MiB chunk buffers; measured ~13-16 MiB).
CHUNK_IO_RESERVE = 16 * 2**20
#: Smallest memory cap an import accepts: the reserve plus 16 MiB of slabs.
MIN_IMPORT_CAP = 32 * 2**20


def _open_source(src: Any, reader_kwargs: Mapping[str, Any]) -> tuple[xr.Dataset, Path | None]:
    """The source recording, lazily when its format allows (never the whole ``activity`` in memory
    for Zarr and netCDF)."""
    import inspect

    from .io import detect_format, open_recording

    if isinstance(src, xr.Dataset):
        return src, None
    p = Path(src)
    if not p.exists():
        raise RecordingError("does not exist", path=p)
    if "load" in inspect.signature(open_recording).parameters:
        return open_recording(p, load=False, **reader_kwargs), p
    fmt = detect_format(p)
    if fmt in ("netcdf", "zarr") and not reader_kwargs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kw: dict[str, Any] = {"engine": "zarr"} if fmt == "zarr" else {}
                ds = xr.open_dataset(p, chunks=None, decode_timedelta=False, **kw)
        except (OSError, ValueError, KeyError) as exc:
            raise RecordingError(f"cannot be read as {fmt}: {type(exc).__name__}: {exc}", path=p) from None
        if "activity" in ds.data_vars and ds["activity"].ndim == 2:
            # the lazily indexed file: a slab read is a hyperslab read; nothing is loaded before
            return _normalise_lazy(ds, p), p
        ds.close()
    return open_recording(p, **reader_kwargs), p


def _normalise_lazy(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """What :func:`~pocoviz.recordings.schema.as_recording` does, without touching ``activity``'s
    values (checked slab by slab while importing)."""
    if ds["activity"].dims == ("unit", "time"):
        ds = ds.transpose("time", "unit", ...)
    if "units" not in ds["activity"].attrs:
        ds["activity"].attrs["units"] = "a.u."
    if "unit" in ds.dims:
        n_unit = ds.sizes["unit"]
        if "unit" not in ds.coords:
            ds = ds.assign_coords(unit=np.arange(n_unit))
        for name in ("region", "label"):
            if name not in ds.coords:
                ds = ds.assign_coords({name: ("unit", np.full(n_unit, "", dtype=str))})
            else:
                vals = np.asarray(ds[name].values)
                if vals.dtype.kind == "S":
                    ds = ds.assign_coords({name: ("unit", np.char.decode(vals, "utf-8").astype(str))})
    ds.attrs.setdefault("source", str(path))
    ds.attrs.setdefault("citation", "")
    return ds


def _json_attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_attr(v) for v in np.asarray(value, dtype=object).ravel().tolist()]
    return str(value)


def _check_metadata(ds: xr.Dataset, where: Any) -> None:
    """Everything :func:`validate` checks except the activity values (checked slab by slab)."""
    n_unit = ds.sizes["unit"]
    probe = ds.drop_vars([v for v in ds.data_vars if "time" in ds[v].dims and v != "activity"])
    probe = probe.isel(time=slice(0, 2))
    probe["activity"] = (("time", "unit"), np.zeros((probe.sizes["time"], n_unit), dtype=np.float32), dict(ds["activity"].attrs))
    validate(probe, path=where)
    t = np.asarray(ds["time"].values, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise RecordingError(f"non-finite value at frame {int(np.flatnonzero(~np.isfinite(t))[0])}", path=where, field="time")
    dt = np.diff(t)
    if np.any(dt <= 0):
        bad = int(np.flatnonzero(dt <= 0)[0])
        raise RecordingError(f"must be strictly increasing; frame {bad + 1} is not after frame {bad}", path=where, field="time")


def write_chunked(
    ds_or_path: Any,
    dest: str | os.PathLike,
    *,
    memory_cap_bytes: int = DEFAULT_MEMORY_CAP,
    overwrite: bool = False,
    pyramid: bool = True,
    sort_by_region: bool = True,
    attrs: Mapping[str, Any] | None = None,
    reader_kwargs: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Write a recording as the chunked store of docs/wholebrain.md, slab by slab within a memory cap.

    Parameters
    ----------
    ds_or_path
        A recording file/folder in any supported format (Zarr and netCDF are read lazily, slab by
        slab; other formats are read by their reader first), or an ``xarray.Dataset`` whose
        ``activity`` is numpy- or Dask-backed.
    dest
        The ``.zarr`` store to write (Zarr v3), built in ``DEST.tmp-<pid>`` and renamed when complete.
    memory_cap_bytes
        Working memory (at least 32 MiB): 16 MiB are kept for Zarr's chunk I/O, the rest for slabs
        of ``activity`` (about 24 bytes per value in flight: read, reorder, pyramid).
    overwrite
        Replace an existing ``dest`` (otherwise refused).
    pyramid
        Also write the multi-resolution pyramid (built from the same slabs; ``activity`` is read once).
    sort_by_region
        Store units grouped by region (stable sort by region name; ids are kept), as the layout asks.
    attrs
        Recording attrs to set or replace (e.g. ``species``, ``session``).
    reader_kwargs
        Passed to the source's reader (e.g. ``sampling_rate_hz``).
    progress
        Called as ``progress(done_frames, frames)`` after each time slab.

    Returns
    -------
    dict
        ``path``, ``units``, ``frames``, ``species``, ``session``, ``seconds``, ``pyramid_levels``,
        ``slab`` (rows, cols), ``sorted_by_region``, ``dropped`` (variables not carried over).

    Raises
    ------
    RecordingError
        Naming the file and the field: an unreadable source, a bad recording (an infinite value, a
        unit or frame with no finite value), an existing ``dest``, a cap too small.
    """
    import contextlib
    import time as _time

    import dask

    started = _time.perf_counter()
    cap = int(memory_cap_bytes)
    if cap < MIN_IMPORT_CAP:
        raise RecordingError(f"memory cap of {cap} bytes is below the minimum {MIN_IMPORT_CAP} (32 MiB)", field="memory_cap")
    d = check_dest(dest, overwrite=overwrite)
    if not isinstance(ds_or_path, xr.Dataset) and Path(ds_or_path).resolve() == d.resolve():
        raise RecordingError("the destination is the source", path=d)
    ds, src_path = _open_source(ds_or_path, reader_kwargs or {})
    where = src_path if src_path is not None else (ds.attrs.get("source") or None)
    if "activity" not in ds.data_vars:
        raise RecordingError("missing", path=where, field="activity")
    if ds["activity"].dims == ("unit", "time"):
        ds = ds.transpose("time", "unit", ...)
    if ds["activity"].dims != ("time", "unit"):
        raise RecordingError(f"dims must be ('time', 'unit'), got {ds['activity'].dims}", path=where, field="activity")
    if ds["activity"].dtype.kind not in "fiu":
        raise RecordingError(f"must be numeric, got dtype {ds['activity'].dtype}", path=where, field="activity")
    new_attrs = {**ds.attrs, **(attrs or {})}
    ds = ds.assign_attrs(new_attrs)
    _check_metadata(ds, where)
    T, U = int(ds.sizes["time"]), int(ds.sizes["unit"])

    region = np.asarray(ds["region"].values).astype(str)
    order = np.argsort(region, kind="stable") if sort_by_region else np.arange(U)
    permuted = not np.array_equal(order, np.arange(U))

    # what is carried over: unit coords (reordered), time-only variables, scalar variables
    unit_coords: dict[str, np.ndarray] = {}
    extra_coords: dict[str, xr.Variable] = {}
    for name, var in ds.coords.items():
        if name in ("time",) or "unit" not in var.dims:
            if name != "time" and var.dims == ("time",):
                extra_coords[name] = xr.Variable(var.dims, np.asarray(var.values), dict(var.attrs))
            continue
        vals = np.asarray(var.values)
        axis = var.dims.index("unit")
        vals = np.take(vals, order, axis=axis)
        if var.dims == ("unit",) and name in ("unit", "region", "label", *POSITION_COORDS):
            unit_coords[name] = vals
        else:
            extra_coords[name] = xr.Variable(var.dims, vals, dict(var.attrs))
    time_vars: dict[str, xr.Variable] = {}
    dropped: list[str] = []
    for name, var in ds.data_vars.items():
        if name == "activity":
            continue
        if "unit" in var.dims and "time" in var.dims:
            dropped.append(str(name))  # a second (time, unit) array: not part of the layout
            continue
        vals = np.asarray(var.values)
        if "unit" in var.dims:
            vals = np.take(vals, order, axis=var.dims.index("unit"))
        time_vars[str(name)] = xr.Variable(var.dims, vals, dict(var.attrs))

    store_attrs = {k: _json_attr(v) for k, v in new_attrs.items() if k != "format"}
    if "format" in new_attrs:
        store_attrs["imported_from_format"] = str(new_attrs["format"])
    store_attrs["pocoviz_layout"] = LAYOUT
    if sort_by_region:
        store_attrs["unit_order"] = "region"
    else:
        store_attrs.pop("unit_order", None)
    act_attrs = {k: _json_attr(v) for k, v in ds["activity"].attrs.items() if not k.startswith("_")}

    levels = n_levels((T, U)) if pyramid else 0
    budget = cap - CHUNK_IO_RESERVE
    rows, cols = slab_shape((T, U), budget, align=FACTOR**levels)
    tmp = temp_path(d)
    remove_partial(tmp)
    stack = contextlib.ExitStack()
    try:
        root = create_store(
            tmp, n_time=T, time=np.asarray(ds["time"].values), unit_coords=unit_coords, attrs=store_attrs,
            activity_attrs=act_attrs, time_vars=time_vars, extra_coords=extra_coords,
        )
        out = root["activity"]
        writer = PyramidWriter(root, (T, U), levels=levels) if pyramid else None
        act = ds["activity"]
        unit_seen = np.zeros(U, dtype=bool)
        frame_seen = np.zeros(T, dtype=bool)
        # reordered slabs are gathered from whole rows read a few at a time (never fancy indexing
        # on the file: that reads whole storage chunks per column in h5py and Dask)
        piece_rows = max(1, (budget // 4) // (U * 8))
        # Dask's threads would hold several source chunks (and their thread arenas) at once
        stack.enter_context(dask.config.set(scheduler="synchronous"))
        for t0, t1, u0, u1 in iter_slabs((T, U), rows, cols):
            idx = order[u0:u1]
            if not permuted:
                block = np.asarray(act[t0:t1, u0:u1].values).astype(np.float32, copy=False)
            else:
                block = np.empty((t1 - t0, u1 - u0), dtype=np.float32)
                for r0 in range(t0, t1, piece_rows):
                    r1 = min(t1, r0 + piece_rows)
                    block[r0 - t0 : r1 - t0] = np.asarray(act[r0:r1].values)[:, idx]
            finite = np.isfinite(block)
            if not finite.all():
                inf = np.isinf(block)
                if inf.any():
                    fr, un = map(int, np.argwhere(inf)[0])
                    raise RecordingError(f"infinite value at frame {t0 + fr}, unit index {int(idx[un])}", path=where, field="activity")
            unit_seen[u0:u1] |= finite.any(axis=0)
            frame_seen[t0:t1] |= finite.any(axis=1)
            del finite
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[t0:t1, u0:u1] = block
            if writer is not None:
                writer.add(block, t0, u0)
            del block
            if progress is not None and u1 == U:
                progress(t1, T)
        if not unit_seen.all():
            bad = np.flatnonzero(~unit_seen)
            ids = np.asarray(unit_coords["unit"])[bad][:5].tolist()
            raise RecordingError(f"{len(bad)} unit(s) are all NaN (unit ids {ids}); drop them first", path=where, field="activity")
        if not frame_seen.all():
            bad = np.flatnonzero(~frame_seen)
            raise RecordingError(f"{len(bad)} frame(s) are all NaN (first: frame {int(bad[0])})", path=where, field="activity")
        if writer is not None:
            writer.close()
        finish_store(tmp, d, overwrite=overwrite)
    except BaseException:
        remove_partial(tmp)
        raise
    finally:
        stack.close()
        close = getattr(ds, "close", None)
        if src_path is not None and close is not None:
            close()
    return {
        "path": str(d), "units": U, "frames": T, "species": str(store_attrs.get("species")),
        "session": str(store_attrs.get("session")), "seconds": round(_time.perf_counter() - started, 2),
        "pyramid_levels": levels, "slab": [rows, cols], "sorted_by_region": bool(sort_by_region), "dropped": dropped,
    }

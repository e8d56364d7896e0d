"""Readers for files xarray writes itself: netCDF (3 and 4/HDF5) and Zarr (folders or zip stores),
as one recording (:func:`read_netcdf`, :func:`read_zarr`), every session of a file
(:func:`open_sessions`) or as a whole tree (:func:`open_tree`).

Small recordings are loaded into memory and the file is closed before returning (every variable's
declared size is checked first). A recording whose ``activity`` is larger than
:func:`~pocoviz.recordings.schema.lazy_bytes` (256 MiB; ``POCOVIZ_LAZY_BYTES``), or any when
``load=False``, opens lazily: ``activity`` is a Dask array whose chunks are whole multiples of the
file's own storage chunks (about :data:`DASK_CHUNK_BYTES` each), every other variable (the
coordinates ``time``, ``unit``, ``region``, ``label``, ``x``/``y``/``z``, per-frame variables) is
loaded, and the file stays open until the dataset is closed (``ds.close()``) or collected.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..schema import RecordingError, as_recording, check_declared_size, lazy_bytes, wants_lazy

NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02")
ZIP_MAGIC = b"PK\x03\x04"
#: Target size of one Dask chunk of a lazy ``activity`` (a few storage chunks).
DASK_CHUNK_BYTES = 16 * 2**20
#: A lazy ``activity`` may have at most this many Dask chunks (a forged shape cannot make a huge graph).
MAX_DASK_CHUNKS = 200_000


#: Per-unit variables that are coordinates of a recording even when a store keeps them as data variables.
UNIT_COORDS = ("region", "label", "x", "y", "z")


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence xarray's advice about unconsolidated Zarr metadata (stores opened here are read-only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata", category=RuntimeWarning)
        yield


def _promote_unit_coords(ds: xr.Dataset) -> xr.Dataset:
    names = [n for n in UNIT_COORDS if n in ds.data_vars and ds[n].dims == ("unit",)]
    return ds.set_coords(names) if names else ds


def _netcdf_engine(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head in NETCDF3_MAGIC:
        return "scipy"
    if head == b"CDF\x05":  # CDF-5 (64-bit data): only the netCDF-C library reads it
        return "netcdf4"
    return "h5netcdf"


def _check_sizes(ds: xr.Dataset, *, path: Any, skip: tuple[str, ...] = ()) -> None:
    for name, var in ds.variables.items():
        if name not in skip:
            check_declared_size(tuple(var.shape), var.dtype.itemsize, path=path, field=str(name))


def zarr_target(path: Path) -> tuple[Any, Any]:
    """What xarray opens for a Zarr store and how to close it: ``(the folder path, no-op)``, or
    ``(a read-only ZipStore, its close)`` for a zipped store. Tests replace this to count reads."""
    if path.is_dir():
        return str(path), lambda: None
    import zarr

    store = zarr.storage.ZipStore(str(path), mode="r")
    return store, store.close


def _target(fmt: str, path: Path) -> tuple[Any, Any]:
    if fmt == "zarr":
        return zarr_target(path)
    return str(path), lambda: None


def _open_kwargs(fmt: Literal["netcdf", "zarr"], path: Path) -> dict[str, Any]:
    if fmt == "netcdf":
        return {"engine": _netcdf_engine(path), "decode_timedelta": False, "cache": False}
    return {"engine": "zarr", "decode_timedelta": False, "cache": False}


def _group_names(fmt: Literal["netcdf", "zarr"], target: Any, path: Path) -> dict[str, bool]:
    """``{group path: has an 'activity' variable}`` for every group of the file (lazy; nothing loaded)."""
    kwargs = _open_kwargs(fmt, path)
    if kwargs["engine"] == "scipy":  # netCDF3 has no groups
        return {}
    kwargs.pop("cache")
    with _quiet():
        groups = xr.open_groups(target, **kwargs)
    try:
        return {name: "activity" in ds.data_vars for name, ds in groups.items()}
    finally:
        for ds in groups.values():
            ds.close()


def dask_chunks(
    shape: tuple[int, int], storage: tuple[int, int] | None, itemsize: int, *, target: int | None = None
) -> tuple[int, int]:
    """Dask chunks ``(time, unit)`` for a lazy ``activity``: whole multiples of the storage chunks.

    Units are grown first (a window usually takes every unit), then time, while a chunk stays
    within ``target`` bytes (default :data:`DASK_CHUNK_BYTES`); a storage chunk already larger than ``target`` is used as it is.
    Without storage chunks (a contiguous netCDF variable) a chunk is whole rows of all units.

    Examples
    --------
    >>> dask_chunks((7879, 71721), (256, 4096), 4)
    (256, 16384)
    >>> dask_chunks((2000, 3000), (256, 512), 4)
    (1280, 3000)
    >>> dask_chunks((7879, 71721), None, 4)
    (58, 71721)
    """
    target = DASK_CHUNK_BYTES if target is None else int(target)
    n_time, n_unit = (max(1, int(s)) for s in shape)
    itemsize = max(1, int(itemsize))
    if not storage:
        rows = max(1, target // (n_unit * itemsize))
        return min(n_time, rows), n_unit
    st, su = (max(1, min(int(c), n)) for c, n in zip(storage, (n_time, n_unit)))
    cu = min(n_unit, su * max(1, target // (st * su * itemsize)))
    if cu < n_unit:
        return st, cu
    return min(n_time, st * max(1, target // (st * cu * itemsize))), cu


def _storage_chunks(var: xr.Variable) -> tuple[int, int] | None:
    pref = var.encoding.get("preferred_chunks")
    if isinstance(pref, dict) and all(d in pref for d in var.dims):
        return tuple(int(pref[d]) for d in var.dims)  # type: ignore[return-value]
    for key in ("chunks", "chunksizes"):
        c = var.encoding.get(key)
        if c is not None and len(c) == var.ndim:
            return tuple(int(x) for x in c)  # type: ignore[return-value]
    return None


def _stamp(path: Path) -> tuple[Any, ...]:
    """What identifies the file's current content for a Dask name: path, mtimes of the file or store
    and of the activity metadata."""
    out: list[Any] = [str(path)]
    for p in (path, path / "activity" / "zarr.json", path / "activity" / ".zarray"):
        try:
            st = p.stat()
            out += [st.st_mtime_ns, st.st_size]
        except OSError:
            pass
    return tuple(out)


def lazy_activity(var: xr.Variable, *, path: Path, group: Any, where: Any) -> xr.Variable:
    """A Dask-backed copy of a lazily opened ``activity`` variable (storage chunks grown by :func:`dask_chunks`)."""
    from dask.base import tokenize

    storage = _storage_chunks(var)
    shape = tuple(int(s) for s in var.shape)
    if len(shape) != 2:
        return var.chunk()  # the schema check names the wrong dims
    if var.dims == ("unit", "time"):  # transposed by as_recording later: grow along units all the same
        rev = dask_chunks(shape[::-1], storage[::-1] if storage else None, var.dtype.itemsize)  # type: ignore[arg-type]
        chunks = rev[::-1]
    else:
        chunks = dask_chunks(shape, storage, var.dtype.itemsize)  # type: ignore[arg-type]
    n_chunks = -(-shape[0] // chunks[0]) * -(-shape[1] // chunks[1])
    if n_chunks > MAX_DASK_CHUNKS:
        raise RecordingError(
            f"declared shape {shape} in chunks {storage} makes {n_chunks} Dask chunks, more than {MAX_DASK_CHUNKS}",
            path=where,
            field="activity",
        )
    name = f"activity-{tokenize(_stamp(path), str(group), shape, str(var.dtype), chunks)}"
    out = var.chunk(dict(zip(var.dims, chunks)), from_array_kwargs={"name": name})
    out.encoding = dict(var.encoding)
    if storage is not None:
        out.encoding["preferred_chunks"] = dict(zip(var.dims, storage))
    return out


def _lazy_dataset(ds: xr.Dataset, *, path: Path, group: Any, where: Any) -> xr.Dataset:
    """``ds`` (opened lazily) with a Dask ``activity`` and every other variable loaded (or Dask when
    it is larger than the lazy threshold)."""
    _check_sizes(ds, path=where, skip=("activity",))
    variables: dict[Any, xr.Variable] = {}
    for name, var in ds.variables.items():
        if name == "activity":
            variables[name] = lazy_activity(var, path=path, group=group, where=where)
        elif isinstance(var, xr.IndexVariable):
            variables[name] = var
        elif var.size * var.dtype.itemsize <= lazy_bytes():
            variables[name] = var.copy(deep=False).load()
        else:
            variables[name] = var.chunk()
    out = xr.Dataset(
        {k: variables[k] for k in ds.data_vars},
        coords={k: variables[k] for k in ds.coords},
        attrs=dict(ds.attrs),
    )
    out.encoding = dict(ds.encoding)
    return out


def _activity_nbytes(ds: xr.Dataset) -> int:
    var = ds.variables["activity"]
    return int(np.prod(var.shape, dtype=np.int64)) * int(var.dtype.itemsize)


def _open_group(fmt: Literal["netcdf", "zarr"], target: Any, p: Path, group: str | None) -> tuple[xr.Dataset, str | None]:
    """Open (lazily, nothing loaded) the group holding the session: ``group``, else the root, else
    the only group with ``activity``."""
    kwargs = _open_kwargs(fmt, p)
    if group is None:
        with _quiet():
            root = xr.open_dataset(target, **kwargs)
        if "activity" in root.data_vars:
            return root, None
        root.close()
        groups = _group_names(fmt, target, p)
        sessions = [g for g, ok in groups.items() if ok and g != "/"]
        if len(sessions) > 1:
            listed = ", ".join(sessions[:10]) + (" ..." if len(sessions) > 10 else "")
            raise RecordingError(
                f"holds {len(sessions)} sessions ({listed}); pass group= to pick one, or open it with open_corpus",
                path=p,
                field="group",
            )
        if not sessions:
            with _quiet():
                return xr.open_dataset(target, **kwargs), None  # the schema check names the missing activity
        group = sessions[0]
    try:
        with _quiet():
            return xr.open_dataset(target, group=group, **kwargs), group
    except (OSError, KeyError, ValueError) as exc:
        groups = _group_names(fmt, target, p)
        known = sorted(groups) or "none"
        raise RecordingError(
            f"group {group!r} cannot be opened ({type(exc).__name__}); groups in the file: {known}",
            path=p,
            field="group",
        ) from None


def _read(
    fmt: Literal["netcdf", "zarr"], path: str | os.PathLike, group: str | None, load: bool | None, mark_group: bool = True
) -> xr.Dataset:
    p = Path(path)
    target, close_target = _target(fmt, p)
    keep_open = False
    try:
        opened, group = _open_group(fmt, target, p, group)
        ds = _promote_unit_coords(opened)
        where = f"{p}:{group}" if group not in (None, "/") else str(p)
        try:
            lazy = "activity" in ds.data_vars and wants_lazy(_activity_nbytes(ds), load)
            if lazy:
                out = _lazy_dataset(ds, path=p, group=group, where=where)
                keep_open = True
            else:
                _check_sizes(ds, path=where)
                out = ds.load()
        finally:
            if not keep_open:
                opened.close()
    finally:
        if not keep_open:
            close_target()
    if mark_group and group not in (None, "/"):
        out.attrs.setdefault("group", str(group))
    rec = as_recording(out, path=where)
    rec.encoding["source"] = str(p)
    if keep_open:

        def close(ds: xr.Dataset = opened, close_target: Any = close_target) -> None:
            ds.close()
            close_target()

        rec.set_close(close)
    return rec


def read_netcdf(path: str | os.PathLike, *, group: str | None = None, load: bool | None = None) -> xr.Dataset:
    """Read one recording from a netCDF file (netCDF4/HDF5 via h5netcdf, netCDF3 via scipy).

    Parameters
    ----------
    path
        A file written by :func:`~pocoviz.recordings.io.save_recording`, by xarray, or any netCDF
        with an ``activity`` variable of dims ``(time, unit)`` (``(unit, time)`` is transposed;
        float64 is stored as float32; missing ``region``/``label`` become ``""``).
    group
        The group holding the session (e.g. ``"/zebrafish/f1"``). By default the root, or the only
        group holding ``activity`` when the root has none.
    load
        ``None`` (default): in memory when ``activity`` is at most
        :func:`~pocoviz.recordings.schema.lazy_bytes`, else lazy; ``True``: always in memory;
        ``False``: always lazy (Dask-backed ``activity``, the file kept open).

    Returns
    -------
    xarray.Dataset
        Validated (a lazy one on a sample of ``activity``); ``encoding["source"]`` is the file.

    Raises
    ------
    RecordingError
        Several sessions and no ``group=`` (the message lists them), a group that does not exist, a
        declared size over the limit, anything that does not fit the schema.

    Examples
    --------
    >>> ds = read_netcdf("corpus.nc", group="/zebrafish/f1")  # doctest: +SKIP
    """
    return _read("netcdf", path, group, load)


def read_zarr(path: str | os.PathLike, *, group: str | None = None, load: bool | None = None) -> xr.Dataset:
    """Read one recording from a Zarr store (v2 or v3; a folder, or a zip of one); see :func:`read_netcdf`.

    Other groups of the store (e.g. the ``pyramid/`` of docs/wholebrain.md) are neither read nor checked.
    """
    return _read("zarr", path, group, load)


def open_sessions(
    path: str | os.PathLike, fmt: Literal["netcdf", "zarr"], *, load: bool | None = None
) -> dict[str, xr.Dataset]:
    """Every session (group with an ``activity`` variable) of a netCDF or Zarr file, each read like
    :func:`read_netcdf` (in memory or lazy by its own size and ``load``).

    Groups without ``activity`` (a pyramid, other data) are skipped without reading their arrays.

    Returns
    -------
    dict
        ``{group path ("/" for the root): recording}``, in file order.
    """
    p = Path(path)
    if fmt not in ("netcdf", "zarr"):
        raise RecordingError(f"open_sessions reads netCDF or Zarr, not {fmt}", path=p, field="format")
    target, close_target = _target(fmt, p)
    try:
        if _open_kwargs(fmt, p)["engine"] == "scipy":
            groups = {"/": True}
        else:
            groups = _group_names(fmt, target, p)
    finally:
        close_target()
    return {g: _read(fmt, p, None if g == "/" else g, load, mark_group=False) for g, ok in groups.items() if ok}


def open_tree(path: str | os.PathLike, fmt: Literal["netcdf", "zarr"]) -> xr.DataTree:
    """Open a whole netCDF or Zarr file as an ``xarray.DataTree``, loaded into memory, file closed.

    For small files; :func:`open_sessions` (used by :func:`~pocoviz.recordings.io.open_corpus`)
    opens large ones lazily and skips groups that are not sessions.

    Parameters
    ----------
    path
        The file or store.
    fmt
        ``"netcdf"`` or ``"zarr"`` (as :func:`~pocoviz.recordings.io.detect_format` names them).

    Raises
    ------
    RecordingError
        A variable whose declared size is over the limit (named by group and variable).
    """
    p = Path(path)
    if fmt not in ("netcdf", "zarr"):
        raise RecordingError(f"open_tree reads netCDF or Zarr, not {fmt}", path=p, field="format")
    kwargs = _open_kwargs(fmt, p)
    target, close_target = _target(fmt, p)
    try:
        if kwargs["engine"] == "scipy":  # netCDF3: a single root dataset
            with xr.open_dataset(target, **kwargs) as ds:
                _check_sizes(ds, path=p)
                return xr.DataTree(dataset=ds.load())
        kwargs.pop("cache")
        with _quiet():
            tree = xr.open_datatree(target, **kwargs)
        try:
            for node in tree.subtree:
                _check_sizes(node.to_dataset(), path=f"{p}:{node.path}")
            loaded = tree.load()
        finally:
            tree.close()
    finally:
        close_target()
    return loaded

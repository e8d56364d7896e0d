"""Readers for files xarray writes itself: netCDF (3 and 4/HDF5) and Zarr (folders or zip stores),
as one recording (:func:`read_netcdf`, :func:`read_zarr`) or as a whole tree (:func:`open_tree`).

Every variable's declared size is checked before anything is loaded; files are closed before
returning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from ..schema import RecordingError, as_recording, check_declared_size

NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02")
ZIP_MAGIC = b"PK\x03\x04"


def _netcdf_engine(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head in NETCDF3_MAGIC:
        return "scipy"
    if head == b"CDF\x05":  # CDF-5 (64-bit data): only the netCDF-C library reads it
        return "netcdf4"
    return "h5netcdf"


def _check_sizes(ds: xr.Dataset, *, path: Any) -> None:
    for name, var in ds.variables.items():
        check_declared_size(tuple(var.shape), var.dtype.itemsize, path=path, field=str(name))


@contextmanager
def _zarr_store(path: Path) -> Iterator[Any]:
    """The zarr store to open: the folder itself, or a read-only ZipStore for a zipped store."""
    if path.is_dir():
        yield str(path)
        return
    import zarr

    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        yield store
    finally:
        store.close()


def _open_kwargs(fmt: Literal["netcdf", "zarr"], path: Path) -> dict[str, Any]:
    if fmt == "netcdf":
        return {"engine": _netcdf_engine(path), "decode_timedelta": False}
    return {"engine": "zarr", "decode_timedelta": False}


def _group_names(fmt: Literal["netcdf", "zarr"], target: Any, path: Path) -> dict[str, bool]:
    """``{group path: has an 'activity' variable}`` for every group of the file (lazy; nothing loaded)."""
    kwargs = _open_kwargs(fmt, path)
    if kwargs["engine"] == "scipy":  # netCDF3 has no groups
        return {}
    groups = xr.open_groups(target, **kwargs)
    try:
        return {name: "activity" in ds.data_vars for name, ds in groups.items()}
    finally:
        for ds in groups.values():
            ds.close()


def _read(fmt: Literal["netcdf", "zarr"], path: str | os.PathLike, group: str | None) -> xr.Dataset:
    p = Path(path)
    kwargs = _open_kwargs(fmt, p)
    opener: Callable[[], Any] = (lambda: _zarr_store(p)) if fmt == "zarr" else (lambda: _plain(p))
    with opener() as target:
        if group is None:
            with xr.open_dataset(target, **kwargs) as root:
                has_activity = "activity" in root.data_vars
            if not has_activity:
                groups = _group_names(fmt, target, p)
                sessions = [g for g, ok in groups.items() if ok and g != "/"]
                if len(sessions) == 1:
                    group = sessions[0]
                elif len(sessions) > 1:
                    listed = ", ".join(sessions[:10]) + (" ..." if len(sessions) > 10 else "")
                    raise RecordingError(
                        f"holds {len(sessions)} sessions ({listed}); "
                        "pass group= to pick one, or open it with open_corpus",
                        path=p,
                        field="group",
                    )
        where = f"{p}:{group}" if group not in (None, "/") else str(p)
        try:
            ds = xr.open_dataset(target, group=group, **kwargs)
        except (OSError, KeyError, ValueError) as exc:
            if group is None:
                raise
            groups = _group_names(fmt, target, p)
            known = sorted(groups) or "none"
            raise RecordingError(
                f"group {group!r} cannot be opened ({type(exc).__name__}); groups in the file: {known}",
                path=p,
                field="group",
            ) from None
        with ds:
            _check_sizes(ds, path=where)
            ds = ds.load()
    if group not in (None, "/"):
        ds.attrs.setdefault("group", str(group))
    return as_recording(ds, path=where)


@contextmanager
def _plain(path: Path) -> Iterator[str]:
    yield str(path)


def read_netcdf(path: str | os.PathLike, *, group: str | None = None) -> xr.Dataset:
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

    Returns
    -------
    xarray.Dataset
        Loaded into memory (the file is closed) and validated.

    Raises
    ------
    RecordingError
        Several sessions and no ``group=`` (the message lists them), a group that does not exist, a
        declared size over the limit, anything that does not fit the schema.

    Examples
    --------
    >>> ds = read_netcdf("corpus.nc", group="/zebrafish/f1")  # doctest: +SKIP
    """
    return _read("netcdf", path, group)


def read_zarr(path: str | os.PathLike, *, group: str | None = None) -> xr.Dataset:
    """Read one recording from a Zarr store (folder, or a zip of one); see :func:`read_netcdf`."""
    return _read("zarr", path, group)


def open_tree(path: str | os.PathLike, fmt: Literal["netcdf", "zarr"]) -> xr.DataTree:
    """Open a whole netCDF or Zarr file as an ``xarray.DataTree``, loaded into memory, file closed.

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
    opener: Callable[[], Any] = (lambda: _zarr_store(p)) if fmt == "zarr" else (lambda: _plain(p))
    with opener() as target:
        if kwargs["engine"] == "scipy":  # netCDF3: a single root dataset
            with xr.open_dataset(target, **kwargs) as ds:
                _check_sizes(ds, path=p)
                return xr.DataTree(dataset=ds.load())
        tree = xr.open_datatree(target, **kwargs)
        try:
            for node in tree.subtree:
                _check_sizes(node.to_dataset(), path=f"{p}:{node.path}")
            loaded = tree.load()
        finally:
            tree.close()
    return loaded

"""Opening recordings and corpora: format detection by content, the data-directory guard.

Public entry points: :func:`open_recording`, :func:`open_corpus`, :func:`detect_format`,
:func:`resolve_in_data_dir`, :func:`save_recording`, :func:`save_corpus`.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from .schema import RecordingError, validate

Format = Literal[
    "flavell-hdf5", "matlab", "matlab-v73", "nwb", "suite2p", "npy", "npz", "netcdf", "zarr", "zarr-array"
]
#: Formats that can open lazily (Dask-backed ``activity``); every other reader loads into memory.
LAZY_FORMATS = ("netcdf", "zarr", "zarr-array")

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAT5_PREFIX = b"MATLAB 5.0 MAT-file"
MAT73_PREFIX = b"MATLAB 7.3 MAT-file"
ENV_DATA_DIR = "POCOVIZ_DATA_DIR"

#: File suffixes the app lists in a data directory.
RECORDING_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5", ".nwb", ".mat", ".npy", ".npz", ".zarr")


def resolve_in_data_dir(path: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    """Resolve ``path`` (relative to ``data_dir`` when relative) and refuse anything outside it.

    Symbolic links and ``..`` are resolved first, so neither can escape the directory.

    Raises
    ------
    RecordingError
        ``path`` resolves outside ``data_dir``, or ``data_dir`` does not exist.
    """
    p = Path(path)
    if data_dir is None:
        return p.resolve()
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise RecordingError("data directory does not exist or is not a folder", path=data_dir, field="data_dir")
    full = (root / p).resolve() if not p.is_absolute() else p.resolve()
    try:
        full.relative_to(root)
    except ValueError:
        raise RecordingError(
            f"is outside the data directory {root}; only files under it can be opened", path=path, field="path"
        ) from None
    return full


def _hdf5_top_level(path: Path) -> tuple[set[str], dict[str, Any], bool]:
    """Top-level member names and attributes of an HDF5 file, and whether it looks like netCDF4."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys, attrs = set(f.keys()), {k: f.attrs[k] for k in f.attrs.keys()}
            return keys, attrs, _looks_like_netcdf4(f)
    except (OSError, RuntimeError) as exc:
        raise RecordingError(f"HDF5 file cannot be read (truncated or corrupt?): {exc}", path=path) from None


def _looks_like_netcdf4(f: Any) -> bool:
    """netCDF4 files carry ``_NCProperties`` (netCDF-C >= 4.4.1, h5netcdf) or HDF5 dimension scales."""
    import h5py

    if "_NCProperties" in f.attrs:
        return True
    seen = 0

    def has_dimension_scales(group: Any) -> bool:
        nonlocal seen
        for item in group.values():
            seen += 1
            if seen > 200:
                return False
            if isinstance(item, h5py.Dataset) and ("DIMENSION_LIST" in item.attrs or "_Netcdf4Dimid" in item.attrs):
                return True
            if isinstance(item, h5py.Group) and has_dimension_scales(item):
                return True
        return False

    return has_dimension_scales(f)


def detect_format(path: str | os.PathLike) -> Format:
    """Name the format of ``path`` from its content (magic bytes and internal layout), not its extension.

    Raises
    ------
    RecordingError
        Missing, empty, or of no supported format.
    """
    p = Path(path)
    if not p.exists():
        raise RecordingError("no such file or folder", path=p)
    if p.is_dir():
        if any((p / m).exists() for m in (".zgroup", ".zattrs", "zarr.json", ".zarray")):
            from .readers.zarr_array import is_bare_array

            return "zarr-array" if is_bare_array(p) else "zarr"
        from .readers.suite2p import find_plane_dir

        if find_plane_dir(p) is not None:
            return "suite2p"
        raise RecordingError("folder is neither a Zarr store nor a suite2p output folder (no F.npy found)", path=p)
    size = p.stat().st_size
    if size == 0:
        raise RecordingError("file is empty", path=p)
    with open(p, "rb") as fh:
        head = fh.read(1024)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise RecordingError(f"zip archive is damaged: {exc}", path=p) from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith(("zarr.json", ".zgroup", ".zattrs", ".zarray")) for n in names):
            from .readers.zarr_array import is_bare_array

            return "zarr-array" if is_bare_array(p) else "zarr"
        raise RecordingError(f"zip archive is not a NumPy .npz (members: {names[:5]})", path=p)
    if head.startswith(NETCDF3_MAGIC):
        return "netcdf"
    if head.startswith(MAT5_PREFIX) or (head[:116].startswith(b"MATLAB") and b"MAT-file" in head[:116] and not head.startswith(MAT73_PREFIX)):
        return "matlab"
    if head.startswith(HDF5_MAGIC) or head[512:520] == HDF5_MAGIC:
        if head.startswith(MAT73_PREFIX):
            return "matlab-v73"
        keys, attrs, netcdf4 = _hdf5_top_level(p)
        if "nwb_version" in attrs or (keys >= {"acquisition", "general", "specifications"}):
            return "nwb"
        if "gcamp" in keys:  # the reader names a missing timing/ member
            return "flavell-hdf5"
        if netcdf4:
            return "netcdf"
        raise RecordingError(
            "HDF5 file of unknown layout: not netCDF4, NWB, Flavell-lab (gcamp/) or MATLAB v7.3; "
            f"top-level members: {sorted(keys)[:10] or 'none'}",
            path=p,
        )
    text_hint = ""
    try:
        head.decode("utf-8")
        text_hint = " (it looks like a text file)"
    except UnicodeDecodeError:
        pass
    raise RecordingError(
        f"unknown format{text_hint}; supported: netCDF, Zarr, NWB, Flavell-lab HDF5, MATLAB, NumPy .npy/.npz, "
        "suite2p folders",
        path=p,
    )


def _reader(fmt: Format):
    from .readers import flavell, matlab, npy, nwb, suite2p, xarray_io, zarr_array

    return {
        "flavell-hdf5": flavell.read_flavell_hdf5,
        "matlab": matlab.read_matlab,
        "matlab-v73": matlab.read_matlab,
        "nwb": nwb.read_nwb,
        "suite2p": suite2p.read_suite2p,
        "npy": npy.read_numpy,
        "npz": npy.read_numpy,
        "netcdf": xarray_io.read_netcdf,
        "zarr": xarray_io.read_zarr,
        "zarr-array": zarr_array.read_zarr_array,
    }[fmt]


def open_recording(
    path: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    format: Format | None = None,
    load: bool | None = None,
    **reader_kwargs: Any,
) -> xr.Dataset:
    """Open one recording from any supported format as a validated ``xarray.Dataset``.

    Parameters
    ----------
    path
        A file or folder: netCDF/Zarr written by pocoviz or xarray, a bare Zarr array of
        (time, unit) (ZAPBench's layout; see :mod:`pocoviz.recordings.readers.zarr_array`), NWB
        (ophys), Flavell-lab HDF5 (with its ``*-labels.csv`` beside it), MATLAB (Triplett layout),
        NumPy ``.npy``/``.npz``, or a suite2p output folder. The format is found from the content.
    data_dir
        When given, ``path`` must resolve inside this folder (relative paths are taken from it).
    format
        Skip detection and use this reader.
    load
        For netCDF and Zarr (stores, zip stores, bare arrays): ``None`` (default) loads ``activity``
        into memory when it is at most 256 MiB (``POCOVIZ_LAZY_BYTES`` overrides) and opens it lazily
        otherwise; ``True`` always loads; ``False`` always opens lazily. Lazy means a Dask-backed
        ``activity`` in the store's own chunks (a few storage chunks per Dask chunk), the coordinates
        loaded, the file kept open, and validation on a sample of ``activity`` (first, last and
        middle time chunks, at most 160 MiB; see :func:`~pocoviz.recordings.schema.validate`),
        never the whole array.
        The other formats are always read into memory (their files are small), whatever ``load`` says.
    **reader_kwargs
        Passed to the reader (e.g. ``sampling_rate_hz``, ``species``, ``session``, ``group``,
        ``load_positions`` for suite2p).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``; see :mod:`pocoviz.recordings.schema`. ``ds.encoding["source"]`` is the
        file or store it was opened from (not an attribute, so :func:`save_recording` does not write
        it); :func:`~pocoviz.recordings.schema.is_lazy` tells whether ``activity`` is Dask-backed.

    Raises
    ------
    RecordingError
        Naming the file and the field for anything that cannot be read or does not fit.

    Examples
    --------
    >>> from pocoviz.recordings import open_recording
    >>> ds = open_recording("../shared/data/celegans_flavell_dag2023/2022-07-26-31-data.h5")  # doctest: +SKIP
    >>> ds.activity.dims  # doctest: +SKIP
    ('time', 'unit')
    """
    p = resolve_in_data_dir(path, data_dir)
    fmt = format or detect_format(p)
    if fmt in LAZY_FORMATS:
        reader_kwargs["load"] = load
    if fmt == "zarr-array":
        reader_kwargs.setdefault("data_dir", data_dir)
    try:
        ds = _reader(fmt)(p, **reader_kwargs)
    except RecordingError:
        raise
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise RecordingError(f"option not understood by the {fmt} reader: {exc}", path=p) from None
        raise RecordingError(f"cannot be read as {fmt}: {exc}", path=p) from None
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"cannot be read as {fmt}: {type(exc).__name__}: {exc}", path=p) from None
    ds.attrs.setdefault("format", fmt)
    ds.encoding["source"] = str(p)
    return validate(ds, path=p)


def _leaf_datasets(tree: xr.DataTree) -> Iterable[tuple[str, xr.DataTree]]:
    for node in tree.subtree:
        if "activity" in node.data_vars:
            yield node.path, node


def open_corpus(
    path: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    load: bool | None = None,
) -> xr.DataTree:
    """Open a corpus (many sessions) as an ``xarray.DataTree`` with one node per species/session.

    ``path`` is a netCDF or Zarr file written by :func:`save_corpus` (groups
    ``/<species>/<session>``), a single recording of any format, or a folder of recordings (each
    opened with :func:`open_recording` and placed under ``/<species>/<session>``). Every session is
    validated. ``load`` is as in :func:`open_recording`, decided per session; groups without
    ``activity`` (e.g. a store's ``pyramid/``) are not sessions and are not read.

    Raises
    ------
    RecordingError
        The file holds no sessions, or one session does not fit the schema (named by group).
    """
    p = resolve_in_data_dir(path, data_dir)
    if p.is_dir() and detect_format_or_none(p) is None:
        sessions: dict[str, xr.Dataset] = {}
        for child in sorted(p.iterdir()):
            if child.name.startswith("."):
                continue
            if detect_format_or_none(child) is None:
                continue
            ds = open_recording(child, data_dir=data_dir, load=load)
            key = f"/{_safe_name(ds.attrs['species'])}/{_safe_name(ds.attrs['session'])}"
            while key in sessions:
                key += "_"
            sessions[key] = ds
        if not sessions:
            raise RecordingError("folder holds no readable recordings", path=p)
        return xr.DataTree.from_dict(sessions)
    fmt = detect_format(p)
    if fmt not in ("netcdf", "zarr"):
        ds = open_recording(p, format=fmt, data_dir=data_dir, load=load)
        key = f"/{_safe_name(ds.attrs['species'])}/{_safe_name(ds.attrs['session'])}"
        return xr.DataTree.from_dict({key: ds})
    from .readers.xarray_io import open_sessions

    try:
        sessions = open_sessions(p, fmt, load=load)
    except RecordingError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"cannot be read as {fmt}: {type(exc).__name__}: {exc}", path=p) from None
    out: dict[str, xr.Dataset] = {}
    for node_path, ds in sessions.items():
        if node_path == "/":  # a single recording file: place it under /<species>/<session> like the rest
            node_path = f"/{_safe_name(ds.attrs['species'])}/{_safe_name(ds.attrs['session'])}"
        out[node_path] = ds
    if not out:
        raise RecordingError("holds no sessions (no group with an 'activity' variable)", path=p, field="activity")
    return xr.DataTree.from_dict(out)


def detect_format_or_none(path: Path) -> Format | None:
    try:
        return detect_format(path)
    except RecordingError:
        return None


def _safe_name(name: str) -> str:
    """A DataTree node name: letters, digits, '-' and '_' ("C. elegans" -> "C_elegans")."""
    s = re.sub(r"[^0-9A-Za-z_-]+", "_", str(name).strip()).strip("_")
    return s or "unnamed"


def session_key(name: str) -> str:
    """A session name as a corpus names its node: each ``/``-separated part made safe
    (:func:`_safe_name`), so that ``"C. elegans/worm 1"`` and ``"C_elegans/worm_1"`` match."""
    return "/".join(_safe_name(part) for part in str(name).split("/") if part.strip())


def corpus_sessions(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """``{"species/session": dataset}`` for every session node of a corpus, in order."""
    return {node_path.strip("/"): node.to_dataset() for node_path, node in _leaf_datasets(tree)}


def _encoding_for(ds: xr.Dataset, compress: bool, quantize: float | None) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    if not compress:
        return enc
    for name, var in ds.data_vars.items():
        if var.dtype.kind == "f":
            e: dict[str, Any] = {"zlib": True, "complevel": 4, "shuffle": True}
            if name == "activity" and quantize:
                e.update({"dtype": "int16", "scale_factor": np.float32(quantize), "_FillValue": np.int16(-32768)})
            enc[name] = e
    return enc


def save_recording(ds: xr.Dataset, path: str | os.PathLike, *, compress: bool = True, quantize: float | None = None) -> Path:
    """Write a recording to netCDF (atomically: a temporary file renamed into place).

    ``quantize`` stores activity as int16 steps of that size (lossy; halves the file)."""
    validate(ds)
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        _clean_for_netcdf(ds).to_netcdf(tmp, engine="h5netcdf", encoding=_encoding_for(ds, compress, quantize))
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def save_corpus(tree: xr.DataTree, path: str | os.PathLike, *, compress: bool = True, quantize: float | None = None) -> Path:
    """Write a corpus to netCDF (one group per session), atomically."""
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    enc = {}
    clean: dict[str, xr.Dataset] = {}
    for node_path, node in _leaf_datasets(tree):
        ds = node.to_dataset()
        validate(ds, path=node_path)
        clean[node_path] = _clean_for_netcdf(ds)
        enc[node_path] = _encoding_for(ds, compress, quantize)
    try:
        xr.DataTree.from_dict(clean).to_netcdf(tmp, engine="h5netcdf", encoding=enc)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _clean_for_netcdf(ds: xr.Dataset) -> xr.Dataset:
    """Make string coords fixed-width unicode and drop attrs netCDF cannot store."""
    ds = ds.copy()
    for name in list(ds.coords) + list(ds.data_vars):
        v = ds[name]
        if v.dtype.kind == "O":
            ds[name] = v.astype(str)
    ds.attrs = {k: (v if isinstance(v, (str, int, float, np.number, np.ndarray, list, tuple)) else str(v)) for k, v in ds.attrs.items()}
    ds.attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in ds.attrs.items()}
    return ds

"""Helpers shared by the format readers: safe ``.npy`` loading, the frame-index time rule,
sampling-rate checks and a percentile-baseline dF/F.

Nothing here writes to disk, and nothing here unpickles.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import IO, Any

import numpy as np
from numpy.lib import format as npformat

from ..schema import RecordingError, check_declared_size

#: Note stored in ``attrs["time_note"]`` when the frame rate is unknown.
FRAME_INDEX_NOTE = (
    "the frame rate is not in the file: time is the frame index and sampling_rate_hz is a placeholder "
    "(1.0); pass sampling_rate_hz= to get seconds"
)


def check_rate(rate: Any, *, path: Any, field: str = "sampling_rate_hz") -> float:
    """Return ``rate`` as a positive finite float or raise :class:`RecordingError` naming ``field``."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise RecordingError(f"must be a number, got {rate!r}", path=path, field=field) from None
    if not np.isfinite(r) or r <= 0:
        raise RecordingError(
            f"must be a positive finite number of frames per second, got {rate!r}", path=path, field=field
        )
    return r


def time_axis(n_time: int, sampling_rate_hz: float | None, *, path: Any) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Frame times for a recording whose file holds no clock.

    Parameters
    ----------
    n_time
        Number of frames T.
    sampling_rate_hz
        Frames per second, or ``None`` when unknown.

    Returns
    -------
    time : ndarray, shape (T,)
        ``arange(T) / rate`` seconds, or the frame index ``arange(T)`` when the rate is unknown.
    rate : float
        The rate (1.0 when unknown).
    attrs : dict
        ``{"time_is_frame_index": 1, "time_note": ...}`` when the rate is unknown, else ``{}``.
    """
    if sampling_rate_hz is None:
        return np.arange(n_time, dtype=np.float64), 1.0, {"time_is_frame_index": 1, "time_note": FRAME_INDEX_NOTE}
    rate = check_rate(sampling_rate_hz, path=path)
    return np.arange(n_time, dtype=np.float64) / rate, rate, {}


def rate_from_times(t: np.ndarray, *, path: Any, field: str) -> float:
    """``1 / median(diff(t))``, checked to be positive and finite.

    Parameters
    ----------
    t : ndarray, shape (T,)
        Frame times in seconds, T >= 2.
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        raise RecordingError(f"needs at least 2 frame times, got shape {t.shape}", path=path, field=field)
    step = float(np.nanmedian(np.diff(t)))
    if not np.isfinite(step) or step <= 0:
        raise RecordingError(
            f"median time step is {step!r}; times must be strictly increasing seconds", path=path, field=field
        )
    return 1.0 / step


def _private_header_reader() -> Any:
    reader = getattr(npformat, "_read_array_header", None)
    if reader is None:  # numpy >= 2 keeps it in the implementation module
        from numpy.lib import _format_impl

        reader = _format_impl._read_array_header
    return reader


def _read_npy_header(fh: IO[bytes], *, path: Any, field: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        elif version == (3, 0):  # utf-8 field names; same layout as 2.0, no public reader
            shape, fortran, dtype = _private_header_reader()(fh, version)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise RecordingError(f"not a readable .npy array header: {exc}", path=path, field=field) from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def npy_header(path: str | os.PathLike, *, field: str | None = None) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read the header of a ``.npy`` file without loading its data.

    Returns
    -------
    shape, dtype, data_offset
        The declared shape and dtype, and the byte offset where the data starts.
    """
    fld = field or os.path.basename(str(path))
    with open(path, "rb") as fh:
        shape, _, dtype = _read_npy_header(fh, path=path, field=fld)
        return shape, dtype, fh.tell()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled numpy arrays and scalars need; anything else (the
    callables an attacker would use to run code) is refused."""

    ALLOWED = {
        (mod, name)
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays, scalars, dicts and lists are read")


def load_object_npy(path: str | os.PathLike, *, field: str | None = None) -> np.ndarray:
    """Load an object-dtype ``.npy`` (e.g. suite2p's ``stat.npy``, an array of dicts) without
    ``allow_pickle``: the pickle stream after the header is read by an unpickler that builds only
    numpy arrays, numpy scalars and Python containers and refuses every other global."""
    fld = field or os.path.basename(str(path))
    with open(path, "rb") as fh:
        _shape, _, dtype = _read_npy_header(fh, path=path, field=fld)
        if not dtype.hasobject:
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            out = _NumpyOnlyUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
            raise RecordingError(f"cannot read the object array: {exc}", path=path, field=fld) from None
    if not isinstance(out, np.ndarray):
        raise RecordingError(f"holds a {type(out).__name__}, not an array", path=path, field=fld)
    return out


def load_npy(
    path: str | os.PathLike, *, field: str | None = None, ndim: int | tuple[int, ...] | None = None
) -> np.ndarray:
    """Load a ``.npy`` file safely: header first, then ``np.load(allow_pickle=False)``.

    The declared shape is checked against :func:`~pocoviz.recordings.schema.check_declared_size`
    and against the file size before any data is read, so a forged header cannot make us allocate.

    Parameters
    ----------
    path
        The ``.npy`` file.
    field
        Name used in error messages (defaults to the file name).
    ndim
        Required number of dimensions (or a tuple of allowed ones).

    Raises
    ------
    RecordingError
        Object dtype (would need pickle), size over the limit, truncated data, wrong ndim.
    """
    fld = field or os.path.basename(str(path))
    shape, dtype, offset = npy_header(path, field=fld)
    _check_header(shape, dtype, path=path, field=fld, ndim=ndim)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = os.path.getsize(path) - offset
    if have < need:
        raise RecordingError(
            f"truncated: header declares shape {shape} {dtype} ({need} bytes) but only {have} bytes follow",
            path=path,
            field=fld,
        )
    return np.load(path, allow_pickle=False)


def _check_header(
    shape: tuple[int, ...], dtype: np.dtype, *, path: Any, field: str, ndim: int | tuple[int, ...] | None
) -> None:
    if dtype.hasobject:
        raise RecordingError(
            f"holds Python objects (dtype {dtype}); loading it would need pickle, which pocoviz never does "
            "for this file. Save a numeric array instead",
            path=path,
            field=field,
        )
    check_declared_size(shape, dtype.itemsize, path=path, field=field)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise RecordingError(f"must be {want}, got shape {shape}", path=path, field=field)


def npz_members(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Declared shape and dtype of each ``.npy`` member of an ``.npz`` (no data read).

    Returns
    -------
    dict
        ``{member name without .npy: (shape, dtype)}``.
    """
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                with zf.open(info) as fh:
                    shape, _, dtype = _read_npy_header(fh, path=path, field=name)
                    offset = fh.tell()
                need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if not dtype.hasobject and info.file_size - offset < need:
                    raise RecordingError(
                        f"truncated member: header declares shape {shape} {dtype} ({need} bytes) but the member holds "
                        f"{info.file_size - offset}",
                        path=path,
                        field=name,
                    )
                out[name] = (shape, dtype)
    except zipfile.BadZipFile as exc:
        raise RecordingError(f"zip archive is damaged: {exc}", path=path) from None
    return out


def load_npz_member(
    npz: Any,
    name: str,
    header: tuple[tuple[int, ...], np.dtype],
    *,
    path: Any,
    ndim: int | tuple[int, ...] | None = None,
) -> np.ndarray:
    """Load one member of an open ``np.load(..., allow_pickle=False)`` archive after checking its header."""
    _check_header(header[0], header[1], path=path, field=name, ndim=ndim)
    return np.asarray(npz[name])


def percentile_dff(f: np.ndarray, *, percentile: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """dF/F against a per-unit percentile baseline.

    Parameters
    ----------
    f : ndarray, shape (T, U)
        Fluorescence (neuropil-corrected), time by unit.
    percentile
        Baseline percentile F0 over time, per unit.

    Returns
    -------
    dff : ndarray, shape (T, U), float64
        ``(f - F0) / F0``; units whose baseline is not positive are NaN.
    f0 : ndarray, shape (U,)
        The baselines.
    """
    f = np.asarray(f, dtype=np.float64)
    f0 = np.nanpercentile(f, percentile, axis=0)
    ok = np.isfinite(f0) & (f0 > 0)
    denom = np.where(ok, f0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dff = (f - f0) / denom
    return dff, f0


def as_str_array(values: Any) -> np.ndarray:
    """Decode bytes and return a 1-D array of ``str`` (``""`` for None/NaN)."""
    arr = np.atleast_1d(np.asarray(values))
    out = []
    for v in arr.ravel():
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if v is None or (isinstance(v, float) and np.isnan(v)):
            v = ""
        out.append(str(v))
    return np.array(out, dtype=str) if out else np.array([], dtype=str)

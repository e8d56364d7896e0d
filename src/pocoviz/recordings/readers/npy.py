"""Reader for NumPy files: a ``.npy`` holding a (time, unit) array, or an ``.npz`` with an
``activity`` member and optional metadata members. Never unpickles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import RecordingError, make_recording
from ._common import (
    as_str_array,
    check_rate,
    load_npy,
    load_npz_member,
    npz_members,
    rate_from_times,
    time_axis,
)

NPY_MAGIC = b"\x93NUMPY"
#: Optional per-unit members of an ``.npz``.
UNIT_MEMBERS = ("unit", "region", "label", "x", "y", "z")
#: Optional scalar (0-d) members of an ``.npz``.
SCALAR_MEMBERS = ("sampling_rate_hz", "species", "session", "units", "citation")


def _scalar(value: np.ndarray, name: str, *, path: Path) -> Any:
    if value.size != 1:
        raise RecordingError(f"must be a scalar (0-d array), got shape {value.shape}", path=path, field=name)
    v = value.reshape(()).item()
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v


def read_numpy(
    path: str | os.PathLike,
    *,
    sampling_rate_hz: float | None = None,
    species: str | None = None,
    session: str | None = None,
) -> xr.Dataset:
    """Read a ``.npy`` or ``.npz`` recording (told apart by content, not suffix).

    Parameters
    ----------
    path
        ``.npy``: one 2-D numeric array, (time, unit). ``.npz``: member ``activity`` (time, unit)
        (required) and optional members ``time`` (T,) seconds, ``unit``, ``region``, ``label``,
        ``x``, ``y``, ``z`` (U,), and 0-d ``sampling_rate_hz``, ``species``, ``session``,
        ``units``, ``citation``. Strings must be stored as NumPy unicode (``dtype='U'``), not objects.
    sampling_rate_hz
        Frames per second; overrides the file's ``sampling_rate_hz``. If neither is given, it is
        derived from ``time`` when present, else ``time`` is the frame index with
        ``attrs["time_is_frame_index"] = 1`` and a placeholder rate of 1.0.
    species, session
        Override the file's members; defaults ``"unknown"`` and the file name without suffix.

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, U) float32; units from the ``units`` member, else ``"a.u."``.

    Raises
    ------
    RecordingError
        Header declaring an object dtype (would need pickle) or a size over the limit, truncated data,
        an array that is not 2-D, a missing ``activity`` member, members with the wrong length.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "rec.npz")
    >>> np.savez(f, activity=np.random.rand(50, 4), sampling_rate_hz=np.array(10.0))
    >>> read_numpy(f).activity.shape
    (50, 4)
    """
    p = Path(path)
    with open(p, "rb") as fh:
        is_npy = fh.read(len(NPY_MAGIC)) == NPY_MAGIC
    if is_npy:
        activity = load_npy(p, field="activity", ndim=2)
        if activity.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric, got dtype {activity.dtype}", path=p, field="activity")
        time, rate, attrs = time_axis(activity.shape[0], sampling_rate_hz, path=p)
        return make_recording(
            activity,
            sampling_rate_hz=rate,
            time=time,
            species=species or "unknown",
            session=session or p.stem,
            units="a.u.",
            source=str(p),
            attrs=attrs,
            path=p,
        )
    return _read_npz(p, sampling_rate_hz=sampling_rate_hz, species=species, session=session)


def _read_npz(p: Path, *, sampling_rate_hz: float | None, species: str | None, session: str | None) -> xr.Dataset:
    headers = npz_members(p)
    if "activity" not in headers:
        raise RecordingError(
            f"member missing; the archive holds {sorted(headers) or 'no arrays'}", path=p, field="activity"
        )
    with np.load(p, allow_pickle=False) as npz:
        activity = load_npz_member(npz, "activity", headers["activity"], path=p, ndim=2)
        if activity.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric, got dtype {activity.dtype}", path=p, field="activity")
        n_time = activity.shape[0]
        per_unit = {n: load_npz_member(npz, n, headers[n], path=p, ndim=1) for n in UNIT_MEMBERS if n in headers}
        scalars = {
            n: _scalar(load_npz_member(npz, n, headers[n], path=p), n, path=p) for n in SCALAR_MEMBERS if n in headers
        }
        time = load_npz_member(npz, "time", headers["time"], path=p, ndim=1) if "time" in headers else None
    attrs: dict[str, Any] = {}
    if sampling_rate_hz is not None:
        rate = check_rate(sampling_rate_hz, path=p)
    elif "sampling_rate_hz" in scalars:
        rate = check_rate(scalars["sampling_rate_hz"], path=p, field="sampling_rate_hz")
    elif time is not None:
        if time.shape != (n_time,):
            raise RecordingError(
                f"must have one value per frame ({n_time}), got shape {time.shape}", path=p, field="time"
            )
        rate = rate_from_times(time, path=p, field="time")
    else:
        rate = None
    if time is None:
        time, rate, t_attrs = time_axis(n_time, rate, path=p)
        attrs.update(t_attrs)
    for name in ("region", "label"):
        if name in per_unit:
            if per_unit[name].dtype.kind not in "US":
                raise RecordingError(f"must hold strings, got dtype {per_unit[name].dtype}", path=p, field=name)
            per_unit[name] = as_str_array(per_unit[name])
    if "unit" in per_unit and per_unit["unit"].dtype.kind not in "iu":
        raise RecordingError(f"must hold integer ids, got dtype {per_unit['unit'].dtype}", path=p, field="unit")
    units = str(scalars.get("units", "a.u."))
    return make_recording(
        activity,
        sampling_rate_hz=float(rate),
        time=time,
        species=species or str(scalars.get("species", "unknown")),
        session=session or str(scalars.get("session", p.stem)),
        units=units,
        source=str(p),
        citation=str(scalars.get("citation", "")),
        attrs=attrs,
        path=p,
        **per_unit,
    )

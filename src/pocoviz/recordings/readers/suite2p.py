"""Reader for suite2p output folders (``suite2p/plane0``): ``F.npy``, ``Fneu.npy``, ``iscell.npy``
and, only on request, ``stat.npy``.

``ops.npy`` and ``stat.npy`` are pickles. ``ops.npy`` is never loaded (so the frame rate it holds is
not used: pass ``sampling_rate_hz``); ``stat.npy`` is loaded only with ``load_positions=True``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import RecordingError, make_recording
from ._common import load_npy, load_object_npy, npy_header, percentile_dff, time_axis

#: Baseline percentile for dF/F.
BASELINE_PERCENTILE = 8.0


def find_plane_dir(path: str | os.PathLike) -> Path | None:
    """The folder holding ``F.npy``: ``path`` itself, ``path/plane0`` or ``path/suite2p/plane0``.

    Returns
    -------
    Path or None
        ``None`` when none of the three holds an ``F.npy``.
    """
    p = Path(path)
    for cand in (p, p / "plane0", p / "suite2p" / "plane0"):
        if (cand / "F.npy").is_file():
            return cand
    return None


def _session_name(given: Path, plane: Path) -> str:
    for part in [given, *given.parents]:
        if part.name and not re.fullmatch(r"plane\d+|suite2p", part.name):
            return part.name
    return plane.name or "suite2p"


def read_suite2p(
    path: str | os.PathLike,
    *,
    sampling_rate_hz: float | None = None,
    load_positions: bool = False,
    cells_only: bool = True,
    neuropil_coefficient: float = 0.7,
    species: str = "unknown",
    session: str | None = None,
) -> xr.Dataset:
    """Read a suite2p plane folder as a dF/F recording.

    Parameters
    ----------
    path
        The experiment folder, its ``suite2p`` folder or the ``plane0`` folder.
    sampling_rate_hz
        Frames per second (``ops.npy`` holds it but is a pickle and is never read). Without it
        ``time`` is the frame index, ``attrs["sampling_rate_hz"]`` is 1.0 and
        ``attrs["time_is_frame_index"]`` is 1.
    load_positions
        Read ``stat.npy`` (a pickle, so only when you trust the folder) for ``x``, ``y`` = the ROI
        medians ``stat[i]["med"]`` (y, x) in pixels.
    cells_only
        Keep only ROIs with ``iscell[:, 0] > 0.5`` (all ROIs when ``iscell.npy`` is absent).
    neuropil_coefficient
        ``F_corr = F - coefficient * Fneu`` (when ``Fneu.npy`` exists).
    species, session
        Stored in attrs; ``session`` defaults to the experiment folder's name.

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, U) float32 = ``(F_corr - F0) / F0`` with F0 the 8th percentile of each ROI
        over time; ``unit`` = the ROI index in ``F.npy`` (so ``stat[unit]`` is that ROI); unit coord
        ``cell_probability`` (``iscell[:, 1]``) when present. ROIs whose baseline F0 is not positive
        cannot be normalised: they are dropped, listed in ``attrs["dropped_units"]``, with a warning.

    Raises
    ------
    RecordingError
        No ``F.npy``; ``F.npy`` not 2-D; ``Fneu.npy``, ``iscell.npy`` or ``stat.npy`` not matching
        the ROIs of ``F.npy``; no ROI left.

    Examples
    --------
    >>> ds = read_suite2p("exp1/suite2p/plane0", sampling_rate_hz=30.0)  # doctest: +SKIP
    """
    given = Path(path)
    plane = find_plane_dir(given)
    if plane is None:
        raise RecordingError("no F.npy in the folder, its plane0 or suite2p/plane0", path=given, field="F.npy")
    f_path = plane / "F.npy"
    F = load_npy(f_path, field="F.npy", ndim=2).astype(np.float64)
    n_roi, n_time = F.shape
    attrs: dict[str, Any] = {"suite2p_plane": str(plane)}

    fneu_path = plane / "Fneu.npy"
    if fneu_path.is_file():
        fneu = load_npy(fneu_path, field="Fneu.npy", ndim=2)
        if fneu.shape != F.shape:
            raise RecordingError(f"shape {fneu.shape} does not match F.npy {F.shape}", path=fneu_path, field="Fneu.npy")
        F = F - float(neuropil_coefficient) * fneu.astype(np.float64)
        attrs["neuropil_coefficient"] = float(neuropil_coefficient)
    else:
        attrs["neuropil_coefficient"] = 0.0
        attrs["neuropil_note"] = "no Fneu.npy: no neuropil subtraction"

    keep = np.ones(n_roi, dtype=bool)
    prob = None
    iscell_path = plane / "iscell.npy"
    if iscell_path.is_file():
        iscell = load_npy(iscell_path, field="iscell.npy", ndim=(1, 2))
        if iscell.shape[0] != n_roi:
            raise RecordingError(
                f"has {iscell.shape[0]} rows but F.npy has {n_roi} ROIs", path=iscell_path, field="iscell.npy"
            )
        iscell = iscell.reshape(n_roi, -1).astype(np.float64)
        if iscell.shape[1] >= 2:
            prob = iscell[:, 1]
        if cells_only:
            keep = iscell[:, 0] > 0.5
    elif cells_only:
        attrs["iscell_note"] = "no iscell.npy: every ROI kept"
    attrs["cells_only"] = int(bool(cells_only))

    x = y = None
    if load_positions:
        stat_path = plane / "stat.npy"
        if not stat_path.is_file():
            raise RecordingError("load_positions=True but stat.npy is missing", path=stat_path, field="stat.npy")
        shape, _dtype, _ = npy_header(stat_path, field="stat.npy")
        if shape[:1] != (n_roi,):
            raise RecordingError(f"declares shape {shape} but F.npy has {n_roi} ROIs", path=stat_path, field="stat.npy")
        # stat.npy is an object array of dicts, i.e. a pickle: read by an unpickler that builds
        # only numpy arrays, scalars and containers (never allow_pickle)
        stat = load_object_npy(stat_path, field="stat.npy")
        med = np.full((n_roi, 2), np.nan)
        for i, roi in enumerate(stat):
            try:
                med[i] = np.asarray(roi["med"], dtype=np.float64)[:2]
            except (KeyError, TypeError, IndexError, ValueError):
                raise RecordingError(
                    f"ROI {i} has no usable 'med' (y, x) entry", path=stat_path, field="stat.npy"
                ) from None
        y, x = med[:, 0], med[:, 1]
        attrs["position_units"] = "pixel (stat.npy med)"

    dff, f0 = percentile_dff(F.T, percentile=BASELINE_PERCENTILE)  # (T, n_roi)
    bad = ~(np.isfinite(f0) & (f0 > 0))
    if np.any(bad & keep):
        dropped = np.flatnonzero(bad & keep)
        warnings.warn(
            f"{plane}: {len(dropped)} ROI(s) have a non-positive F0 baseline and were dropped: {dropped[:10].tolist()}",
            stacklevel=2,
        )
        attrs["dropped_units"] = ",".join(map(str, dropped))
        keep = keep & ~bad
    if not keep.any():
        raise RecordingError(
            "no ROI left (none classified as a cell, or none with a positive baseline)",
            path=iscell_path,
            field="iscell.npy",
        )
    idx = np.flatnonzero(keep)
    time, rate, t_attrs = time_axis(n_time, sampling_rate_hz, path=plane)
    attrs.update(t_attrs)
    attrs["baseline"] = f"F0 = {BASELINE_PERCENTILE:g}th percentile over time per ROI; activity = (F_corr - F0) / F0"
    ds = make_recording(
        dff[:, idx],
        sampling_rate_hz=rate,
        time=time,
        species=species,
        session=session or _session_name(given, plane),
        unit=idx,
        x=None if x is None else x[idx],
        y=None if y is None else y[idx],
        units="dF/F",
        source=str(plane),
        citation="",
        unit_coords={"cell_probability": prob[idx]} if prob is not None else None,
        attrs=attrs,
        path=plane,
    )
    for c in ("x", "y"):
        if c in ds.coords:
            ds[c].attrs["units"] = "pixel"
    return ds

"""Reader for Neurodata Without Borders (NWB 2) optical-physiology files: one ``RoiResponseSeries``
(from a ``DfOverF`` or ``Fluorescence`` interface of a processing module, or from acquisition), with
ROI positions from its ``PlaneSegmentation`` and the brain region from its imaging plane.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import RecordingError, check_declared_size, make_recording
from ._common import check_rate, rate_from_times

#: Activity units by the type of the interface that holds the series.
UNITS_BY_PARENT = {"DfOverF": "dF/F", "Fluorescence": "F"}
#: Metres per unit of length, for ``grid_spacing_unit`` / ``origin_coords_unit``.
_TO_UM = {
    "meters": 1e6, "meter": 1e6, "m": 1e6,
    "millimeters": 1e3, "millimeter": 1e3, "mm": 1e3,
    "micrometers": 1.0, "micrometer": 1.0, "microns": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0,
    "nanometers": 1e-3, "nm": 1e-3,
}  # fmt: skip


def _all_series(nwbfile: Any) -> list[tuple[str, Any]]:
    """``[(path, RoiResponseSeries)]`` in file order: processing modules first, then acquisition."""
    from pynwb.ophys import RoiResponseSeries

    found: list[tuple[str, Any]] = []

    def visit(prefix: str, obj: Any) -> None:
        if isinstance(obj, RoiResponseSeries):
            found.append((f"{prefix}/{obj.name}", obj))
            return
        series = getattr(obj, "roi_response_series", None)
        if isinstance(series, dict):
            for s in series.values():
                visit(f"{prefix}/{obj.name}", s)

    for mod_name, module in nwbfile.processing.items():
        for iface in module.data_interfaces.values():
            visit(f"processing/{mod_name}", iface)
    for obj in nwbfile.acquisition.values():
        visit("acquisition", obj)
    return found


def _pick(found: list[tuple[str, Any]], series: str | None, *, path: Path, nwbfile: Any) -> tuple[str, Any]:
    if not found:
        where = [f"processing/{m}/{i}" for m, mod in nwbfile.processing.items() for i in mod.data_interfaces]
        where += [f"acquisition/{a}" for a in nwbfile.acquisition]
        raise RecordingError(
            f"no RoiResponseSeries in processing modules or acquisition (found: {where or 'nothing'})",
            path=path,
            field="RoiResponseSeries",
        )
    if series is not None:
        hits = [(p, s) for p, s in found if series in (s.name, p, p.split("/", 1)[1], "/".join(p.split("/")[-2:]))]
        if not hits:
            raise RecordingError(
                f"no RoiResponseSeries named {series!r}; the file has {[p for p, _ in found]}",
                path=path,
                field="series",
            )
        return hits[0]
    for p, s in found:
        if type(s.parent).__name__ == "DfOverF":
            return p, s
    return found[0]


def _mask_centroids(table: Any, rows: np.ndarray, *, path: Path) -> tuple[np.ndarray | None, list[str]]:
    """Weighted centroids (rows, 2 or 3) in pixels, in the order of ``rows``, and the axis names."""
    cols = set(table.colnames)
    for name, axes in (("voxel_mask", ["x", "y", "z"]), ("pixel_mask", ["x", "y"])):
        if name not in cols:
            continue
        index = table[name]  # a VectorIndex over a compound dataset
        ends = np.asarray(index.data[:], dtype=np.int64)
        target = index.target.data
        dset = getattr(target, "dataset", target)
        shape = getattr(dset, "shape", (len(dset),))
        check_declared_size(tuple(shape), getattr(getattr(dset, "dtype", None), "itemsize", 16), path=path, field=name)
        flat = np.asarray(dset[:]) if hasattr(dset, "shape") else np.asarray(list(dset))
        if flat.dtype.names:
            names = list(flat.dtype.names)
            pos = (
                np.stack([flat[a].astype(np.float64) for a in axes], axis=1) if all(a in names for a in axes) else None
            )
            if pos is None:
                pos = np.stack([flat[names[i]].astype(np.float64) for i in range(len(axes))], axis=1)
            weight = flat[names[len(axes)]].astype(np.float64) if len(names) > len(axes) else np.ones(len(flat))
        else:
            flat = flat.astype(np.float64).reshape(len(flat), -1)
            pos, weight = (
                flat[:, : len(axes)],
                (flat[:, len(axes)] if flat.shape[1] > len(axes) else np.ones(len(flat))),
            )
        starts = np.concatenate([[0], ends[:-1]])
        out = np.full((len(rows), len(axes)), np.nan)
        for k, r in enumerate(rows):
            sl = slice(starts[r], ends[r])
            w, xy = weight[sl], pos[sl]
            if len(xy) == 0:
                continue
            if not np.isfinite(w).all() or w.sum() <= 0:
                w = np.ones(len(xy))
            out[k] = (xy * w[:, None]).sum(axis=0) / w.sum()
        return out, axes
    if "image_mask" in cols:
        dset = table["image_mask"].data
        shape = tuple(dset.shape)
        check_declared_size(shape, dset.dtype.itemsize, path=path, field="image_mask")
        axes = ["x", "y", "z"][: len(shape) - 1]
        out = np.full((len(rows), len(axes)), np.nan)
        for k, r in enumerate(rows):
            m = np.abs(np.asarray(dset[int(r)], dtype=np.float64))
            m[~np.isfinite(m)] = 0
            if m.sum() <= 0:
                continue
            grids = np.indices(m.shape)
            out[k] = [(g * m).sum() / m.sum() for g in grids]
        return out, axes
    return None, []


def read_nwb(path: str | os.PathLike, *, series: str | None = None) -> xr.Dataset:
    """Read one ``RoiResponseSeries`` of an NWB file as a recording.

    Parameters
    ----------
    path
        The ``.nwb`` file (HDF5).
    series
        Name (``"dff"``) or path (``"processing/ophys/DfOverF/dff"``, ``"DfOverF/dff"``) of the series
        to read. Default: the first series inside a ``DfOverF`` interface, else the first one found
        (processing modules before acquisition).

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, U) float32 (``data * conversion + offset``); ``time`` seconds from the first
        frame (from ``timestamps``, or ``starting_time + arange(T) / rate``), its value relative to the
        session start kept in ``attrs["time_offset_s"]``; ``unit`` = the ids of the ROI table rows;
        ``x``, ``y`` (``z`` for voxel masks) = weighted centroid of each ROI's pixel/voxel/image mask,
        scaled to µm by the imaging plane's ``grid_spacing`` (plus ``origin_coords``) when present,
        else in pixels (``attrs["position_units"]`` says which); ``region`` = the imaging plane's
        ``location``. Units ``"dF/F"`` for ``DfOverF``, ``"F"`` for ``Fluorescence``, else ``"a.u."``.

    Raises
    ------
    RecordingError
        Unreadable file, no (or no such) series, a data shape that does not match the ROIs, no time base.

    Examples
    --------
    >>> ds = read_nwb("sub-01_ses-01_ophys.nwb", series="DfOverF/dff")  # doctest: +SKIP
    >>> ds.activity.attrs["units"]  # doctest: +SKIP
    'dF/F'
    """
    from pynwb import NWBHDF5IO

    p = Path(path)
    io = None
    with warnings.catch_warnings():
        # pynwb/hdmf warn about cached namespace versions and similar; none of it concerns the reader
        warnings.filterwarnings("ignore", category=UserWarning)
        try:
            io = NWBHDF5IO(str(p), "r", load_namespaces=True)
            nwbfile = io.read()
            return _read_open(p, nwbfile, series)
        except RecordingError:
            raise
        except Exception as exc:  # pynwb/hdmf raise many types for bad files
            raise RecordingError(f"NWB file cannot be read: {type(exc).__name__}: {exc}", path=p) from None
        finally:
            if io is not None:
                io.close()


def _read_open(p: Path, nwbfile: Any, series: str | None) -> xr.Dataset:
    name, rrs = _pick(_all_series(nwbfile), series, path=p, nwbfile=nwbfile)
    field = name
    data = rrs.data
    shape = tuple(getattr(data, "shape", np.shape(data)))
    if len(shape) not in (1, 2):
        raise RecordingError(f"data must be (time, roi), got shape {shape}", path=p, field=field)
    check_declared_size(shape, np.dtype(getattr(data, "dtype", np.float64)).itemsize, path=p, field=field)
    values = np.asarray(data[()], dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    values = values * float(rrs.conversion or 1.0) + float(getattr(rrs, "offset", 0.0) or 0.0)
    n_time, n_roi = values.shape

    rois = rrs.rois
    rows = np.asarray(rois.data[()], dtype=np.int64).ravel()
    table = rois.table
    if len(rows) != n_roi:
        raise RecordingError(
            f"data has {n_roi} ROI columns but rois selects {len(rows)} rows", path=p, field=f"{field}/rois"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= len(table)):
        raise RecordingError(f"rois point outside the {len(table)} rows of {table.name}", path=p, field=f"{field}/rois")
    ids = np.asarray(table.id.data[()], dtype=np.int64)[rows]

    attrs: dict[str, Any] = {"nwb_series": name, "nwb_identifier": str(nwbfile.identifier)}
    if rrs.timestamps is not None:
        stamps = np.asarray(rrs.timestamps[()], dtype=np.float64)
        if stamps.shape != (n_time,):
            raise RecordingError(
                f"timestamps shape {stamps.shape} does not match {n_time} frames", path=p, field=f"{field}/timestamps"
            )
        rate = float(rrs.rate) if rrs.rate else rate_from_times(stamps, path=p, field=f"{field}/timestamps")
    elif rrs.rate is not None:
        rate = check_rate(rrs.rate, path=p, field=f"{field}/rate")
        stamps = float(rrs.starting_time or 0.0) + np.arange(n_time) / rate
    else:
        raise RecordingError("has neither timestamps nor a rate", path=p, field=field)
    attrs["time_offset_s"] = float(stamps[0])

    positions: dict[str, np.ndarray] = {}
    plane = getattr(table, "imaging_plane", None)
    centroids, axes = _mask_centroids(table, rows, path=p) if hasattr(table, "colnames") else (None, [])
    if centroids is not None:
        scale = None
        spacing = getattr(plane, "grid_spacing", None) if plane is not None else None
        if spacing is not None:
            spacing = np.asarray(spacing[()], dtype=np.float64).ravel()
            factor = _TO_UM.get(str(getattr(plane, "grid_spacing_unit", "meters")).strip().lower())
            if factor is not None and len(spacing) >= len(axes):
                scale = spacing[: len(axes)] * factor
        if scale is not None:
            um = centroids * scale
            origin = getattr(plane, "origin_coords", None)
            if origin is not None:
                origin = np.asarray(origin[()], dtype=np.float64).ravel()
                ofactor = _TO_UM.get(str(getattr(plane, "origin_coords_unit", "meters")).strip().lower())
                if ofactor is not None and len(origin) >= len(axes):
                    um = um + origin[: len(axes)] * ofactor
            positions = {a: um[:, i] for i, a in enumerate(axes)}
            attrs["position_units"] = "um (mask centroid x grid_spacing)"
        else:
            positions = {a: centroids[:, i] for i, a in enumerate(axes)}
            attrs["position_units"] = "pixel (mask centroid; the imaging plane has no usable grid_spacing)"

    location = str(getattr(plane, "location", "") or "") if plane is not None else ""
    subject = getattr(nwbfile, "subject", None)
    species = str(getattr(subject, "species", "") or "") if subject is not None else ""
    pubs = getattr(nwbfile, "related_publications", None)
    citation = (
        "; ".join(map(str, np.atleast_1d(pubs[()] if hasattr(pubs, "shape") else pubs))) if pubs is not None else ""
    )
    ds = make_recording(
        values,
        sampling_rate_hz=rate,
        time=stamps - stamps[0],
        species=species or "unknown",
        session=str(nwbfile.session_id or nwbfile.identifier),
        unit=ids,
        region=np.full(n_roi, location, dtype=object),
        units=UNITS_BY_PARENT.get(type(rrs.parent).__name__, "a.u."),
        source=str(p),
        citation=citation,
        attrs=attrs,
        path=p,
        **positions,
    )
    if attrs.get("position_units", "").startswith("pixel"):
        for a in positions:
            ds[a].attrs["units"] = "pixel"
    return ds

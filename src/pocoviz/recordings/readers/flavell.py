"""Reader for Flavell-lab whole-brain C. elegans HDF5 files (``<uid>-data.h5``) and their NeuroPAL
label table (``<uid>-labels.csv``).

Layout (as h5py shows it; the files are written by Julia, so h5py already gives time x unit):

- ``gcamp/trace_array`` (T, N) float64: z-scored GCaMP traces (also ``trace_array_original``,
  ``traces_array_F_F20``).
- ``timing/timestamp_confocal`` (T,): absolute seconds of each confocal frame.
- ``behavior/*``: behaviour series, most (T,), some (T, k).

Reference: Dag, Nwabudike, Kang et al., Cell 2023, doi:10.1016/j.cell.2023.04.023.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import RecordingError, check_declared_size, make_recording
from ._common import as_str_array

CITATION = "Dag, Nwabudike, Kang et al., Cell 2023, doi:10.1016/j.cell.2023.04.023 (Flavell lab)"
SPECIES = "C. elegans"
TIMESTAMPS = "timing/timestamp_confocal"
#: Activity units for each trace array the files carry.
TRACE_UNITS = {"trace_array": "z-score", "trace_array_original": "a.u.", "traces_array_F_F20": "a.u."}
#: Columns the labels CSV must have; ``neuron_class``, ``label_confidence`` and ``neuropal_roi`` are optional.
REQUIRED_LABEL_COLUMNS = ("trace_index", "neuropal_label", "ganglion")
#: Names a behaviour series may not take (they are schema names); such series get a ``behavior_`` prefix.
_RESERVED = {"activity", "time", "unit", "region", "label", "x", "y", "z", "neuron_class", "label_confidence"}


def uid_of(path: str | os.PathLike) -> str:
    """The recording id: ``2022-07-26-31`` for ``.../2022-07-26-31-data.h5``."""
    stem = Path(path).name
    for suffix in (".h5", ".hdf5"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem[: -len("-data")] if stem.endswith("-data") else stem


def find_labels_csv(path: str | os.PathLike) -> Path | None:
    """The ``<uid>-labels.csv`` beside ``<uid>-data.h5``, or ``None``."""
    p = Path(path)
    cand = p.with_name(f"{uid_of(p)}-labels.csv")
    return cand if cand.is_file() else None


def read_labels_csv(csv_path: str | os.PathLike, n_units: int) -> dict[str, np.ndarray]:
    """Per-unit NeuroPAL labels from a labels CSV.

    Parameters
    ----------
    csv_path
        Columns ``trace_index`` (0-based column of ``trace_array``), ``neuropal_label``,
        ``ganglion`` and optionally ``neuron_class``, ``label_confidence``.
    n_units
        N, the number of traces.

    Returns
    -------
    dict of ndarray, each shape (N,)
        ``label``, ``region`` (ganglion), ``neuron_class`` (str, ``""`` where unlabelled) and
        ``label_confidence`` (float64, NaN where unlabelled).

    Raises
    ------
    RecordingError
        Missing column, non-integer or out-of-range ``trace_index``, a trace labelled twice, a
        non-numeric ``label_confidence``; the message names the CSV and the column.
    """
    label = np.full(n_units, "", dtype=object)
    region = np.full(n_units, "", dtype=object)
    neuron_class = np.full(n_units, "", dtype=object)
    confidence = np.full(n_units, np.nan)
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            for col in REQUIRED_LABEL_COLUMNS:
                if col not in columns:
                    raise RecordingError(
                        f"labels CSV has no column '{col}' (columns: {columns})", path=csv_path, field=col
                    )
            seen: dict[int, int] = {}
            for row_no, raw in enumerate(reader, start=2):  # line 1 is the header
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                text = row["trace_index"]
                try:
                    idx = int(float(text))
                    if float(text) != idx:
                        raise ValueError
                except ValueError:
                    raise RecordingError(
                        f"line {row_no}: {text!r} is not an integer", path=csv_path, field="trace_index"
                    ) from None
                if not 0 <= idx < n_units:
                    raise RecordingError(
                        f"line {row_no}: {idx} is out of range; the HDF5 file has {n_units} traces (0..{n_units - 1})",
                        path=csv_path,
                        field="trace_index",
                    )
                if idx in seen:
                    raise RecordingError(
                        f"line {row_no}: trace {idx} is already labelled on line {seen[idx]}",
                        path=csv_path,
                        field="trace_index",
                    )
                seen[idx] = row_no
                label[idx] = row["neuropal_label"]
                region[idx] = row["ganglion"]
                neuron_class[idx] = row.get("neuron_class", "")
                conf = row.get("label_confidence", "")
                if conf:
                    try:
                        confidence[idx] = float(conf)
                    except ValueError:
                        raise RecordingError(
                            f"line {row_no}: {conf!r} is not a number", path=csv_path, field="label_confidence"
                        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecordingError(f"labels CSV cannot be read: {exc}", path=csv_path) from None
    return {
        "label": as_str_array(label),
        "region": as_str_array(region),
        "neuron_class": as_str_array(neuron_class),
        "label_confidence": confidence,
    }


def read_flavell_hdf5(
    path: str | os.PathLike,
    *,
    labels_csv: str | os.PathLike | None = None,
    trace: str = "trace_array",
    session: str | None = None,
) -> xr.Dataset:
    """Read a Flavell-lab ``<uid>-data.h5`` as a recording.

    Parameters
    ----------
    path
        The HDF5 file.
    labels_csv
        NeuroPAL labels; by default ``<uid>-labels.csv`` beside the file, when present (else
        every ``label``/``region`` is ``""``).
    trace
        Which array of the ``gcamp`` group: ``"trace_array"`` (z-scored, default),
        ``"trace_array_original"`` or ``"traces_array_F_F20"`` (both stored with units ``"a.u."``).
    session
        Session name; defaults to the uid (``2022-07-26-31``).

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, N) float32; ``time`` (T,) seconds from the first confocal frame (the
        absolute start is ``attrs["time_offset_s"]``); unit coords ``label`` (NeuroPAL name),
        ``region`` (ganglion; ``"unknown"`` kept as the CSV gives it), ``neuron_class`` and
        ``label_confidence`` (NaN where unlabelled). Every 1-D numeric ``behavior/*`` series of
        length T (velocity, head_angle, pumping, angular_velocity, reversal_vec, ...) becomes a
        variable on ``time`` with its own name (``behavior_<name>`` if the name is taken);
        multi-column series (``body_angle`` ...) are left out and listed in
        ``attrs["behavior_skipped"]``.

    Raises
    ------
    RecordingError
        Unreadable HDF5, a missing member (``gcamp/<trace>``, ``timing/timestamp_confocal``), shapes
        that disagree, a bad labels CSV; the message names the file and the member or column.

    Examples
    --------
    >>> ds = read_flavell_hdf5("celegans_flavell_dag2023/2022-07-26-31-data.h5")  # doctest: +SKIP
    >>> ds.activity.sel(unit=ds.unit[ds.label == "AVAL"]).shape  # doctest: +SKIP
    (800, 1)
    """
    import h5py

    p = Path(path)
    field = f"gcamp/{trace}"
    try:
        fh = h5py.File(p, "r")
    except (OSError, RuntimeError) as exc:
        raise RecordingError(f"HDF5 file cannot be read (truncated or corrupt?): {exc}", path=p) from None
    with fh:
        if field not in fh or not isinstance(fh[field], h5py.Dataset):
            have = sorted(fh["gcamp"].keys()) if isinstance(fh.get("gcamp"), h5py.Group) else []
            raise RecordingError(f"member missing (the gcamp group holds {have or 'nothing'})", path=p, field=field)
        dset = fh[field]
        if dset.ndim != 2:
            raise RecordingError(f"must be 2-D (time, unit), got shape {dset.shape}", path=p, field=field)
        if dset.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric, got dtype {dset.dtype}", path=p, field=field)
        check_declared_size(dset.shape, dset.dtype.itemsize, path=p, field=field)
        n_time, n_unit = dset.shape

        if TIMESTAMPS not in fh or not isinstance(fh[TIMESTAMPS], h5py.Dataset):
            raise RecordingError(
                "member missing: the confocal frame times are needed for the time axis", path=p, field=TIMESTAMPS
            )
        tset = fh[TIMESTAMPS]
        if tset.shape != (n_time,):
            raise RecordingError(
                f"shape {tset.shape} does not match the {n_time} frames of {field}", path=p, field=TIMESTAMPS
            )
        if tset.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric seconds, got dtype {tset.dtype}", path=p, field=TIMESTAMPS)
        stamps = np.asarray(tset[()], dtype=np.float64)
        activity = np.asarray(dset[()])

        behaviour: dict[str, np.ndarray] = {}
        members: dict[str, str] = {}
        skipped: list[str] = []
        group = fh.get("behavior")
        if isinstance(group, h5py.Group):
            for name, item in group.items():
                if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiub":
                    continue
                if item.shape != (n_time,):
                    if item.ndim >= 1 and item.shape[0] == n_time:
                        skipped.append(name)
                    continue
                key = f"behavior_{name}" if name in _RESERVED else name
                values = np.asarray(item[()])
                behaviour[key] = values
                members[key] = f"behavior/{name}"
    if not np.all(np.isfinite(stamps)):
        bad = int(np.flatnonzero(~np.isfinite(stamps))[0])
        raise RecordingError(f"non-finite time stamp at frame {bad}", path=p, field=TIMESTAMPS)
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0])
        raise RecordingError(
            f"time stamps must be strictly increasing; frame {bad + 1} is not after frame {bad}",
            path=p,
            field=TIMESTAMPS,
        )
    rate = 1.0 / float(np.median(steps))

    csv_path: Path | None = Path(labels_csv) if labels_csv is not None else find_labels_csv(p)
    if csv_path is not None:
        if not csv_path.is_file():
            raise RecordingError("labels CSV not found", path=csv_path, field="labels_csv")
        labels = read_labels_csv(csv_path, n_unit)
    else:
        labels = {
            "label": np.full(n_unit, "", dtype=str),
            "region": np.full(n_unit, "", dtype=str),
            "neuron_class": np.full(n_unit, "", dtype=str),
            "label_confidence": np.full(n_unit, np.nan),
        }
    attrs: dict[str, Any] = {
        "time_offset_s": float(stamps[0]),
        "trace": trace,
        "labels_csv": str(csv_path) if csv_path is not None else "",
        "n_labelled": int((labels["label"] != "").sum()),
    }
    if skipped:
        attrs["behavior_skipped"] = ", ".join(sorted(skipped))
    ds = make_recording(
        activity,
        sampling_rate_hz=rate,
        time=stamps - stamps[0],
        species=SPECIES,
        session=session or uid_of(p),
        label=labels["label"],
        region=labels["region"],
        units=TRACE_UNITS.get(trace, "a.u."),
        source=str(p),
        citation=CITATION,
        unit_coords={"neuron_class": labels["neuron_class"], "label_confidence": labels["label_confidence"]},
        time_vars=behaviour,
        attrs=attrs,
        path=p,
    )
    for name, member in members.items():
        ds[name].attrs["source_member"] = member
    return ds

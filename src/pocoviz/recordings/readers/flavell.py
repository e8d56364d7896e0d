"""Reader for Flavell-lab whole-brain C. elegans HDF5 files (``<uid>-data.h5``) and their NeuroPAL
label table (``<uid>-labels.csv``).

Layout (as h5py shows it; the files are written by Julia, so h5py already gives time x unit):

- ``gcamp/trace_array`` (T, N) float64: z-scored GCaMP traces (also ``trace_array_original``,
  ``traces_array_F_F20``).
- ``timing/timestamp_confocal`` (S,): absolute seconds of each confocal frame; S >= T. In most
  files S == T; some of the lab's files hold more confocal frames than were traced (e.g. 1600 time
  stamps for 1137 traced frames).
- ``gcamp/idx_splits`` (optional): which confocal frames the traces cover, 1-based, as Julia wrote
  it (h5py shows Julia arrays transposed). Two layouts occur: inclusive ``[start, stop]`` ranges,
  shape (2, R) (or (R, 2)), e.g. ``[[1], [800]]``, whose lengths add up to T; or one index per
  traced frame (T values, strictly increasing). See :func:`traced_frames`.
- ``behavior/*``: behaviour series, most (T,), some (T, k).

Reference: Dag, Nwabudike, Kang et al., Cell 2023, doi:10.1016/j.cell.2023.04.023.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..schema import RecordingError, check_declared_size, make_recording
from ._common import as_str_array

CITATION = "Dag, Nwabudike, Kang et al., Cell 2023, doi:10.1016/j.cell.2023.04.023 (Flavell lab)"
SPECIES = "C. elegans"
TIMESTAMPS = "timing/timestamp_confocal"
#: Which confocal frames (1-based, as Julia wrote them) the traces cover.
IDX_SPLITS = "gcamp/idx_splits"
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
        Missing column, non-integer or out-of-range ``trace_index``, a trace labelled twice (one
        label on two traces is no error: both keep it, see :func:`read_flavell_hdf5`), a
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


TimeSource = Literal["all", "idx_splits", "first_T"]


@dataclass(frozen=True)
class TracedFrames:
    """Which confocal time stamps belong to the traced frames.

    Attributes
    ----------
    index : ndarray of int64, shape (T,)
        0-based positions in ``timing/timestamp_confocal`` of traced frames 0..T-1.
    source
        ``"all"`` (as many stamps as frames: used one to one), ``"idx_splits"`` (chosen by
        ``gcamp/idx_splits``) or ``"first_T"`` (more stamps than frames and no ``idx_splits``:
        the first T).
    layout
        How ``idx_splits`` was read: ``"ranges"`` ([start, stop] pairs), ``"frame indices"`` (one
        index per traced frame), ``"frame index pairs"`` ((trace frame, time stamp) pairs), or
        ``""`` when it was not used.
    note
        Why a present ``idx_splits`` was not used (``source == "all"`` only), else ``""``.
    """

    index: np.ndarray
    source: TimeSource
    layout: str = ""
    note: str = ""

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The selected stamps as inclusive 1-based ``(start, stop)`` runs."""
        return index_ranges(self.index)


def index_ranges(index: np.ndarray) -> list[tuple[int, int]]:
    """0-based increasing positions as inclusive 1-based runs: ``[0, 1, 2, 5] -> [(1, 3), (6, 6)]``."""
    idx = np.asarray(index, dtype=np.int64)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]]
    return [(int(a) + 1, int(b) + 1) for a, b in zip(starts, stops)]


def format_ranges(ranges: list[tuple[int, int]], limit: int = 20) -> str:
    """``[(1, 800), (1001, 1600)] -> "1-800, 1001-1600"`` (at most ``limit`` runs, then a count)."""
    parts = [f"{a}-{b}" if b != a else f"{a}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... ({len(ranges) - limit} more)")
    return ", ".join(parts)


def _range_frames(starts: np.ndarray, stops: np.ndarray, n_stamps: int, n_time: int) -> tuple[np.ndarray | None, str]:
    """Traced-frame positions from inclusive 1-based ranges, or ``(None, why not)``."""
    for k, (a, b) in enumerate(zip(starts.tolist(), stops.tolist())):
        if a > b:
            return None, f"range {k + 1} starts after it stops ({a}-{b})"
        if a < 1 or b > n_stamps:
            return None, f"range {k + 1} ({a}-{b}) is outside the {n_stamps} time stamps (1..{n_stamps})"
        if k and a <= stops[k - 1]:
            return None, f"range {k + 1} ({a}-{b}) does not come after range {k} ({starts[k - 1]}-{stops[k - 1]})"
    total = int((stops - starts + 1).sum())
    if total != n_time:
        shown = format_ranges([(int(a), int(b)) for a, b in zip(starts, stops)], limit=5)
        return None, f"ranges {shown} cover {total} frames, not {n_time}"
    return np.concatenate([np.arange(a - 1, b, dtype=np.int64) for a, b in zip(starts.tolist(), stops.tolist())]), ""


def _index_frames(idx: np.ndarray, n_stamps: int, n_time: int) -> tuple[np.ndarray | None, str]:
    """Traced-frame positions from one 1-based index per frame, or ``(None, why not)``."""
    if idx.size != n_time:
        return None, f"{idx.size} frame indices for {n_time} frames"
    if idx.min() < 1 or idx.max() > n_stamps:
        bad = int(np.flatnonzero((idx < 1) | (idx > n_stamps))[0])
        return None, f"frame index {int(idx[bad])} (frame {bad}) is outside the {n_stamps} time stamps (1..{n_stamps})"
    steps = np.diff(idx)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0])
        return None, f"frame indices must be strictly increasing; frame {bad + 1} ({int(idx[bad + 1])}) is not after frame {bad} ({int(idx[bad])})"
    return idx.astype(np.int64) - 1, ""


def _read_idx_splits(values: np.ndarray, n_stamps: int, n_time: int, *, path: Any) -> tuple[np.ndarray, str]:
    """Interpret ``gcamp/idx_splits``; returns (0-based positions, layout) or raises naming the field.

    Tried in turn, the first consistent reading wins (two readings that are both consistent select
    the same frames, so the order only shapes the error message):

    - one index per traced frame: a 1-D array (or one row/column) of T strictly increasing indices
      in 1..S;
    - ranges: a (2, R) array of [start; stop] rows (how h5py shows Julia's R x 2), or (R, 2), or a
      2-vector; inclusive, 1-based, in order, not overlapping, within 1..S, lengths adding up to T;
    - index pairs: a (2, T) or (T, 2) array whose one row is the trace frame number 1..T and whose
      other row is strictly increasing indices in 1..S.
    """
    a = np.asarray(values)
    if a.dtype.kind not in "fiu" or a.size == 0 or a.ndim > 2:
        raise RecordingError(f"must be a non-empty 1-D or 2-D integer array, got {a.dtype} of shape {a.shape}", path=path, field=IDX_SPLITS)
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or not np.all(a == np.round(a))):
        raise RecordingError("must hold whole numbers (1-based frame indices)", path=path, field=IDX_SPLITS)
    if np.abs(a.astype(np.float64)).max() > 2**53:
        raise RecordingError(f"holds {a.max()!r}: not a frame index", path=path, field=IDX_SPLITS)
    a = a.astype(np.int64)
    tried: list[str] = []
    flat = a.reshape(-1) if sum(d > 1 for d in a.shape) <= 1 else None
    if flat is not None and flat.size == n_time:
        index, why = _index_frames(flat, n_stamps, n_time)
        if index is not None:
            return index, "frame indices"
        tried.append(f"as frame indices: {why}")
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    if a.ndim == 2 and a.shape[0] == 2:
        pairs.append((a[0], a[1]))
    if (a.ndim == 2 and a.shape[1] == 2 and a.shape[0] != 2) or a.shape == (2, 2):
        pairs.append((a[:, 0], a[:, 1]))
    if a.ndim == 1 and a.size == 2:
        pairs.append((a[:1], a[1:]))
    for starts, stops in pairs:
        index, why = _range_frames(starts, stops, n_stamps, n_time)
        if index is not None:
            return index, "ranges"
        tried.append(f"as [start, stop] ranges: {why}")
    if a.ndim == 2 and n_time > 1 and n_time in a.shape and 2 in a.shape:
        rows = a if a.shape[0] == 2 else a.T
        own = np.arange(1, n_time + 1)
        for k in (0, 1):
            if np.array_equal(rows[k], own):
                index, why = _index_frames(rows[1 - k], n_stamps, n_time)
                if index is not None:
                    return index, "frame index pairs"
                tried.append(f"as (trace frame, time stamp) pairs: {why}")
    if not tried:
        tried.append(f"shape {a.shape} is neither {n_time} frame indices nor [start, stop] ranges")
    raise RecordingError(
        f"does not say which of the {n_stamps} time stamps belong to the {n_time} traced frames ({'; '.join(tried)})",
        path=path,
        field=IDX_SPLITS,
    )


def traced_frames(
    n_stamps: int, n_time: int, idx_splits: np.ndarray | None, *, path: Any = None, trace_field: str = "gcamp/trace_array"
) -> TracedFrames:
    """Which of the file's ``n_stamps`` confocal time stamps belong to the ``n_time`` traced frames.

    - S == T: every stamp, one to one (``source="all"``); an ``idx_splits`` that disagrees is
      ignored and the reason kept in ``note`` (the stamps and the traces already agree);
    - S > T with ``idx_splits``: the frames it names (``source="idx_splits"``); an
      ``idx_splits`` that is out of range or does not account for T frames is refused;
    - S > T without ``idx_splits``: the first T stamps (``source="first_T"``).

    Raises
    ------
    RecordingError
        Fewer stamps than frames (field ``timing/timestamp_confocal``); an unusable ``idx_splits``
        when it is needed (field ``gcamp/idx_splits``).
    """
    if n_stamps < n_time:
        raise RecordingError(
            f"holds {n_stamps} time stamps for the {n_time} frames of {trace_field}: too few", path=path, field=TIMESTAMPS
        )
    if n_stamps == n_time:
        note = ""
        if idx_splits is not None:
            try:
                _read_idx_splits(idx_splits, n_stamps, n_time, path=path)
            except RecordingError as exc:
                note = f"{IDX_SPLITS} ignored (as many time stamps as frames): {exc.problem}"
        return TracedFrames(np.arange(n_time, dtype=np.int64), "all", "", note)
    if idx_splits is None:
        return TracedFrames(np.arange(n_time, dtype=np.int64), "first_T")
    index, layout = _read_idx_splits(idx_splits, n_stamps, n_time, path=path)
    return TracedFrames(index, "idx_splits", layout)


def _stamp_of(frames: TracedFrames, frame: int) -> str:
    """``" (time stamp 1201 of timing/timestamp_confocal)"``: the 1-based stamp of traced frame
    ``frame``, for messages, when stamps were selected (``""`` when they map one to one)."""
    return "" if frames.source == "all" else f" (time stamp {int(frames.index[frame]) + 1} of {TIMESTAMPS})"


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
        ``activity`` (T, N) float32; ``time`` (T,) seconds from the first traced confocal frame
        (the absolute start is ``attrs["time_offset_s"]``). Where the file holds more confocal
        time stamps than traced frames, the traced frames' stamps are taken from
        ``gcamp/idx_splits`` (else the first T; see :func:`traced_frames`), and attrs say what was
        done: ``time_source`` (``"all"``, ``"idx_splits"`` or ``"first_T"``), ``n_timestamps``
        (S), ``timestamp_ranges`` (the 1-based stamps used, ``"1-800"``), ``idx_splits_layout``
        (``"ranges"`` or ``"frame indices"``, when used). Unit coords ``label`` (NeuroPAL name),
        ``region`` (ganglion; ``"unknown"`` kept as the CSV gives it), ``neuron_class`` and
        ``label_confidence`` (NaN where unlabelled). A label the CSV gives to several traces (the
        lab's 2022-07-27-38 names URADL twice) stays on each of them; they are flagged by the
        unit coord ``label_duplicate`` and ``attrs["duplicate_labels"]``. Without a labels CSV
        (strains without NeuroPAL) every label is ``""``. Every 1-D numeric ``behavior/*`` series of
        length T (velocity, head_angle, pumping, angular_velocity, reversal_vec, ...) becomes a
        variable on ``time`` with its own name (``behavior_<name>`` if the name is taken);
        multi-column series (``body_angle`` ...) are left out and listed in
        ``attrs["behavior_skipped"]``; a series with one value per confocal stamp (S) keeps the
        traced frames' values (listed in ``attrs["behavior_per_timestamp"]``).

    Raises
    ------
    RecordingError
        Unreadable HDF5, a missing member (``gcamp/<trace>``, ``timing/timestamp_confocal``), shapes
        that disagree, fewer time stamps than frames, a ``gcamp/idx_splits`` that is out of range
        or inconsistent with the traces, non-finite or non-increasing times of the traced frames, a
        bad labels CSV; the message names the file and the member or column.

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
        if tset.ndim != 1:
            raise RecordingError(f"must be 1-D (one time per frame), got shape {tset.shape}", path=p, field=TIMESTAMPS)
        if tset.dtype.kind not in "fiu":
            raise RecordingError(f"must be numeric seconds, got dtype {tset.dtype}", path=p, field=TIMESTAMPS)
        n_stamps = int(tset.shape[0])
        split_set = fh.get(IDX_SPLITS)
        if split_set is not None and not isinstance(split_set, h5py.Dataset):
            raise RecordingError("must be an array, not a group", path=p, field=IDX_SPLITS)
        if split_set is not None:
            check_declared_size(split_set.shape, split_set.dtype.itemsize, path=p, field=IDX_SPLITS)
        frames = traced_frames(
            n_stamps, n_time, None if split_set is None else np.asarray(split_set[()]), path=p, trace_field=field
        )
        all_stamps = np.asarray(tset[()], dtype=np.float64)
        stamps = all_stamps[frames.index]
        activity = np.asarray(dset[()])

        behaviour: dict[str, np.ndarray] = {}
        members: dict[str, str] = {}
        skipped: list[str] = []
        per_stamp: list[str] = []
        group = fh.get("behavior")
        if isinstance(group, h5py.Group):
            for name, item in group.items():
                if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiub":
                    continue
                if item.shape == (n_stamps,) and n_stamps != n_time:
                    per_stamp.append(name)  # one value per confocal frame: keep the traced ones
                elif item.shape != (n_time,):
                    if item.ndim >= 1 and item.shape[0] in (n_time, n_stamps):
                        skipped.append(name)
                    continue
                key = f"behavior_{name}" if name in _RESERVED else name
                values = np.asarray(item[()])
                behaviour[key] = values[frames.index] if name in per_stamp else values
                members[key] = f"behavior/{name}"
    if not np.all(np.isfinite(stamps)):
        bad = int(np.flatnonzero(~np.isfinite(stamps))[0])
        raise RecordingError(f"non-finite time stamp at frame {bad}{_stamp_of(frames, bad)}", path=p, field=TIMESTAMPS)
    steps = np.diff(stamps)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0])
        raise RecordingError(
            f"time stamps must be strictly increasing; frame {bad + 1}{_stamp_of(frames, bad + 1)} is not after frame {bad}",
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
        "time_source": frames.source,
        "n_timestamps": n_stamps,
        "timestamp_ranges": format_ranges(frames.ranges),
    }
    if frames.layout:
        attrs["idx_splits_layout"] = frames.layout
    if frames.note:
        attrs["idx_splits_note"] = frames.note
    if skipped:
        attrs["behavior_skipped"] = ", ".join(sorted(skipped))
    if per_stamp:
        attrs["behavior_per_timestamp"] = ", ".join(sorted(per_stamp))
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

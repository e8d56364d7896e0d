"""Malformed inputs: each gives a RecordingError naming the file and the field, and nothing is written.

Every case builds its input in its own folder, which is then made read-only (0o555); the folder (and,
for cases that read ../shared/data, that folder too) is snapshotted before and after (names, sizes,
mtimes), because tests may run as root, for whom read-only folders are still writable.
"""

from __future__ import annotations

import os
import pickle
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.io
import xarray as xr

from pocoviz.recordings.io import open_recording, save_corpus, save_recording
from pocoviz.recordings.schema import RecordingError, make_recording

FLAVELL_UID = "2022-07-26-31"
#: A builder writes its input under the case folder and returns
#: (call that must raise, the file the message must name, extra folders to watch).
Built = tuple[Callable[[], Any], Path, list[Path]]


#: Returns ../shared/data through the ``shared_data`` fixture (which skips when it is absent).
Shared = Callable[[], Path]


def _flavell_dir(shared: Shared) -> Path:
    return shared() / "celegans_flavell_dag2023"


def _npz(path: Path, **members: Any) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **members)
    return path


def _good(n_time: int = 20, n_unit: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_time, n_unit))


# --- builders ---------------------------------------------------------------------------------------


def truncated_hdf5(tmp: Path, shared: Shared) -> Built:
    src = _flavell_dir(shared) / f"{FLAVELL_UID}-data.h5"
    dest = tmp / f"{FLAVELL_UID}-data.h5"
    dest.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return (lambda: open_recording(dest)), dest, []


def activity_3d(tmp: Path, shared: Shared) -> Built:
    f = _npz(tmp / "cube.npz", activity=np.zeros((4, 5, 6)))
    return (lambda: open_recording(f)), f, []


def activity_dims_misnamed(tmp: Path, shared: Shared) -> Built:
    f = tmp / "frames.nc"
    xr.Dataset({"activity": (("frame", "cell"), _good())}, attrs={"species": "x", "session": "y"}).to_netcdf(
        f, engine="h5netcdf"
    )
    return (lambda: open_recording(f)), f, []


def activity_stored_unit_by_time(tmp: Path, shared: Shared) -> Built:
    # 3 units x 20 frames stored as if it were (time, unit): the 20 frame times expose it
    f = _npz(tmp / "transposed.npz", activity=_good().T, time=np.arange(20) * 0.1)
    return (lambda: open_recording(f)), f, []


def all_nan_unit(tmp: Path, shared: Shared) -> Built:
    a = _good()
    a[:, 1] = np.nan
    f = _npz(tmp / "nan.npz", activity=a, sampling_rate_hz=np.array(5.0))
    return (lambda: open_recording(f)), f, []


def non_monotonic_time(tmp: Path, shared: Shared) -> Built:
    t = np.arange(20) * 0.1
    t[7] = 0.2
    f = _npz(tmp / "time.npz", activity=_good(), time=t)
    return (lambda: open_recording(f)), f, []


def missing_activity_npz(tmp: Path, shared: Shared) -> Built:
    f = _npz(tmp / "meta.npz", traces=_good(), time=np.arange(20.0))
    return (lambda: open_recording(f)), f, []


def missing_activity_netcdf(tmp: Path, shared: Shared) -> Built:
    f = tmp / "noact.nc"
    xr.Dataset({"traces": (("time", "unit"), _good())}).to_netcdf(f, engine="h5netcdf")
    return (lambda: open_recording(f)), f, []


def text_named_nc(tmp: Path, shared: Shared) -> Built:
    f = tmp / "recording.nc"
    f.write_text("time,unit,activity\n0,0,1.5\n")
    return (lambda: open_recording(f)), f, []


def empty_file(tmp: Path, shared: Shared) -> Built:
    f = tmp / "empty.h5"
    f.touch()
    return (lambda: open_recording(f)), f, []


def huge_declared_shape(tmp: Path, shared: Shared) -> Built:
    f = tmp / "huge.npy"
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**6)})
        fh.write(b"\0" * 64)
    return (lambda: open_recording(f)), f, []


def truncated_npy(tmp: Path, shared: Shared) -> Built:
    f = tmp / "short.npy"
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (100, 10)})
        fh.write(b"\0" * 80)
    return (lambda: open_recording(f)), f, []


def unknown_binary(tmp: Path, shared: Shared) -> Built:
    f = tmp / "blob.nwb"
    f.write_bytes(bytes(range(256)) * 8)
    return (lambda: open_recording(f)), f, []


def hdf5_unknown_layout(tmp: Path, shared: Shared) -> Built:
    f = tmp / "other.h5"
    with h5py.File(f, "w") as h:
        h["images/stack"] = np.zeros((2, 3, 3))
    return (lambda: open_recording(f)), f, []


def zip_not_npz(tmp: Path, shared: Shared) -> Built:
    f = tmp / "bundle.npz"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return (lambda: open_recording(f)), f, []


def _data_dir_with_outside_file(tmp: Path) -> tuple[Path, Path]:
    data = tmp / "data"
    data.mkdir()
    save_recording(make_recording(_good(), sampling_rate_hz=1.0, species="s", session="in"), data / "inside.nc")
    outside = save_recording(
        make_recording(_good(), sampling_rate_hz=1.0, species="s", session="out"), tmp / "secret.nc"
    )
    return data, outside


def outside_dotdot(tmp: Path, shared: Shared) -> Built:
    data, outside = _data_dir_with_outside_file(tmp)
    return (lambda: open_recording("../secret.nc", data_dir=data)), outside, []


def outside_absolute(tmp: Path, shared: Shared) -> Built:
    data, outside = _data_dir_with_outside_file(tmp)
    return (lambda: open_recording(outside, data_dir=data)), outside, []


def outside_symlink(tmp: Path, shared: Shared) -> Built:
    data, outside = _data_dir_with_outside_file(tmp)
    (data / "link.nc").symlink_to(outside)
    return (lambda: open_recording("link.nc", data_dir=data)), data / "link.nc", []


def object_dtype_npy(tmp: Path, shared: Shared) -> Built:
    f = tmp / "objects.npy"
    np.save(f, np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    return (lambda: open_recording(f)), f, []


def _labels(
    tmp: Path,
    rows: list[str],
    header: str = "trace_index,neuropal_label,neuron_class,ganglion,label_confidence,neuropal_roi",
) -> Path:
    f = tmp / "labels.csv"
    f.write_text("\n".join([header, *rows]) + "\n")
    return f


def labels_out_of_range(tmp: Path, shared: Shared) -> Built:
    h5 = _flavell_dir(shared) / f"{FLAVELL_UID}-data.h5"
    csv = _labels(tmp, ["10,AVAR,AVA,Lateral Ganglion,5.0,24", "146,AVAL,AVA,Lateral Ganglion,5.0,141"])
    return (lambda: open_recording(h5, labels_csv=csv)), csv, [h5.parent]


def labels_missing_column(tmp: Path, shared: Shared) -> Built:
    h5 = _flavell_dir(shared) / f"{FLAVELL_UID}-data.h5"
    csv = _labels(
        tmp, ["10,AVAR,AVA,5.0,24"], header="trace_index,neuropal_label,neuron_class,label_confidence,neuropal_roi"
    )
    return (lambda: open_recording(h5, labels_csv=csv)), csv, [h5.parent]


def flavell_unknown_trace(tmp: Path, shared: Shared) -> Built:
    h5 = _flavell_dir(shared) / f"{FLAVELL_UID}-data.h5"
    return (lambda: open_recording(h5, trace="trace_array_denoised")), h5, [h5.parent]


def inf_value(tmp: Path, shared: Shared) -> Built:
    a = _good()
    a[4, 2] = np.inf
    f = _npz(tmp / "inf.npz", activity=a)
    return (lambda: open_recording(f)), f, []


def duplicate_unit_ids(tmp: Path, shared: Shared) -> Built:
    f = _npz(tmp / "dup.npz", activity=_good(), unit=np.array([4, 4, 5]))
    return (lambda: open_recording(f)), f, []


def negative_rate(tmp: Path, shared: Shared) -> Built:
    f = tmp / "rec.npy"
    np.save(f, _good())
    return (lambda: open_recording(f, sampling_rate_hz=-30.0)), f, []


def zero_rate_in_file(tmp: Path, shared: Shared) -> Built:
    f = _npz(tmp / "rate.npz", activity=_good(), sampling_rate_hz=np.array(0.0))
    return (lambda: open_recording(f)), f, []


def suite2p_iscell_mismatch(tmp: Path, shared: Shared) -> Built:
    plane = tmp / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", np.random.default_rng(1).uniform(100, 200, size=(4, 50)))
    np.save(plane / "Fneu.npy", np.ones((4, 50)))
    np.save(plane / "iscell.npy", np.ones((5, 2)))
    return (lambda: open_recording(tmp)), plane / "iscell.npy", []


def suite2p_stat_is_a_pickle_file(tmp: Path, shared: Shared) -> Built:
    # load_positions=True on a stat.npy that is a bare pickle (not .npy): refused, not unpickled
    plane = tmp / "plane0"
    plane.mkdir()
    np.save(plane / "F.npy", np.random.default_rng(1).uniform(100, 200, size=(3, 50)))
    (plane / "stat.npy").write_bytes(pickle.dumps([{"med": (1, 2)}] * 3))
    return (lambda: open_recording(tmp, load_positions=True)), plane / "stat.npy", []


def mat_without_activity(tmp: Path, shared: Shared) -> Built:
    f = tmp / "meta.mat"
    scipy.io.savemat(f, {"notes": "no traces here", "stimulus": np.arange(5.0)})
    return (lambda: open_recording(f)), f, []


def mat_activity_3d(tmp: Path, shared: Shared) -> Built:
    f = tmp / "cube.mat"
    scipy.io.savemat(f, {"activity": np.zeros((3, 4, 5))})
    return (lambda: open_recording(f)), f, []


def mat_assembly_out_of_range(tmp: Path, shared: Shared) -> Built:
    f = tmp / "fish.mat"
    cells = np.empty(2, dtype=object)
    cells[:] = [np.array([1, 2]), np.array([3, 9])]
    scipy.io.savemat(f, {"activity_matrix": _good().T, "detected_assemblies": cells})
    return (lambda: open_recording(f)), f, []


def flavell_missing_timestamps(tmp: Path, shared: Shared) -> Built:
    f = tmp / "2023-01-01-01-data.h5"
    with h5py.File(f, "w") as h:
        h["gcamp/trace_array"] = _good(30, 4)
        h["timing/timestamp_nir"] = np.arange(300.0)
    return (lambda: open_recording(f)), f, []


def _lab_file(tmp: Path, n_time: int, stamps: np.ndarray, idx_splits: Any = None) -> Path:
    """A Flavell-lab layout file with ``n_time`` traced frames of 4 traces and ``stamps``."""
    f = tmp / "2023-01-01-02-data.h5"
    with h5py.File(f, "w") as h:
        h["gcamp/trace_array"] = _good(n_time, 4)
        h["timing/timestamp_confocal"] = stamps
        if idx_splits is not None:
            h["gcamp/idx_splits"] = np.asarray(idx_splits)
    return f


def flavell_fewer_stamps_than_frames(tmp: Path, shared: Shared) -> Built:
    f = _lab_file(tmp, 30, np.arange(20) * 0.6)
    return (lambda: open_recording(f)), f, []


def flavell_idx_splits_out_of_range(tmp: Path, shared: Shared) -> Built:
    f = _lab_file(tmp, 30, np.arange(40) * 0.6, [[11], [41]])
    return (lambda: open_recording(f)), f, []


def flavell_idx_splits_wrong_length(tmp: Path, shared: Shared) -> Built:
    f = _lab_file(tmp, 30, np.arange(40) * 0.6, [[1], [29]])
    return (lambda: open_recording(f)), f, []


def flavell_idx_splits_overlapping(tmp: Path, shared: Shared) -> Built:
    f = _lab_file(tmp, 30, np.arange(40) * 0.6, [[1, 10], [15, 25]])
    return (lambda: open_recording(f)), f, []


def flavell_idx_splits_indices_repeat(tmp: Path, shared: Shared) -> Built:
    idx = np.arange(1, 31)
    idx[12] = idx[11]
    f = _lab_file(tmp, 30, np.arange(40) * 0.6, idx)
    return (lambda: open_recording(f)), f, []


def flavell_idx_splits_fractional(tmp: Path, shared: Shared) -> Built:
    f = _lab_file(tmp, 30, np.arange(40) * 0.6, [[1.0], [30.5]])
    return (lambda: open_recording(f)), f, []


def flavell_selected_stamps_not_increasing(tmp: Path, shared: Shared) -> Built:
    t = np.arange(40) * 0.6
    t[15] = t[14]  # stamp 16 is traced frame 5 of the range 11-40
    f = _lab_file(tmp, 30, t, [[11], [40]])
    return (lambda: open_recording(f)), f, []


def flavell_selected_stamp_nan(tmp: Path, shared: Shared) -> Built:
    t = np.arange(40) * 0.6
    t[20] = np.nan
    f = _lab_file(tmp, 30, t, [[11], [40]])
    return (lambda: open_recording(f)), f, []


def netcdf_several_sessions(tmp: Path, shared: Shared) -> Built:
    def rec(s: str) -> xr.Dataset:
        return make_recording(_good(), sampling_rate_hz=1.0, species="fish", session=s)

    f = save_corpus(xr.DataTree.from_dict({"/fish/a": rec("a"), "/fish/b": rec("b")}), tmp / "corpus.nc")
    return (lambda: open_recording(f)), f, []


CASES = [
    pytest.param(truncated_hdf5, r"HDF5 file cannot be read \(truncated or corrupt\?\)", None, id="truncated-hdf5"),
    pytest.param(activity_3d, r"must be 2-D, got shape \(4, 5, 6\)", "activity", id="activity-3d"),
    pytest.param(
        activity_dims_misnamed,
        r"dims must be \('time', 'unit'\), got \('frame', 'cell'\)",
        "activity",
        id="activity-dims-misnamed",
    ),
    pytest.param(activity_stored_unit_by_time, r"one value per frame \(3\)", "time", id="activity-unit-by-time"),
    pytest.param(all_nan_unit, r"1 unit\(s\) are all NaN \(unit ids \[1\]\)", "activity", id="all-nan-unit"),
    pytest.param(
        non_monotonic_time,
        r"must be strictly increasing; frame 7 \(0\.2\) is not after frame 6",
        "time",
        id="non-monotonic-time",
    ),
    pytest.param(
        missing_activity_npz,
        r"member missing; the archive holds \['time', 'traces'\]",
        "activity",
        id="missing-activity-npz",
    ),
    pytest.param(missing_activity_netcdf, r"field 'activity': missing", "activity", id="missing-activity-netcdf"),
    pytest.param(text_named_nc, r"unknown format \(it looks like a text file\)", None, id="text-file-named-nc"),
    pytest.param(empty_file, r"file is empty", None, id="empty-file"),
    pytest.param(
        huge_declared_shape,
        r"declared shape \(1000000000, 1000000\) needs 3725290\.3 GiB",
        "activity",
        id="huge-declared-shape",
    ),
    pytest.param(truncated_npy, r"truncated: header declares shape \(100, 10\)", "activity", id="truncated-npy"),
    pytest.param(unknown_binary, r"unknown format; supported", None, id="unknown-binary"),
    pytest.param(hdf5_unknown_layout, r"HDF5 file of unknown layout.*\['images'\]", None, id="hdf5-unknown-layout"),
    pytest.param(zip_not_npz, r"zip archive is not a NumPy \.npz", None, id="zip-not-npz"),
    pytest.param(outside_dotdot, r"outside the data directory", "path", id="outside-data-dir-dotdot"),
    pytest.param(outside_absolute, r"outside the data directory", "path", id="outside-data-dir-absolute"),
    pytest.param(outside_symlink, r"outside the data directory", "path", id="outside-data-dir-symlink"),
    pytest.param(object_dtype_npy, r"holds Python objects.*would need pickle", "activity", id="object-dtype-npy"),
    pytest.param(
        labels_out_of_range,
        r"line 3: 146 is out of range; the HDF5 file has 146 traces",
        "trace_index",
        id="labels-csv-out-of-range",
    ),
    pytest.param(
        labels_missing_column, r"labels CSV has no column 'ganglion'", "ganglion", id="labels-csv-missing-column"
    ),
    pytest.param(
        flavell_unknown_trace,
        r"member missing \(the gcamp group holds \[.*'trace_array'",
        "gcamp/trace_array_denoised",
        id="flavell-unknown-trace",
    ),
    pytest.param(inf_value, r"infinite value at frame 4, unit index 2", "activity", id="inf-value"),
    pytest.param(duplicate_unit_ids, r"ids must be unique; \[4\] repeat", "unit", id="duplicate-unit-ids"),
    pytest.param(
        negative_rate, r"must be a positive finite number.*-30\.0", "sampling_rate_hz", id="negative-sampling-rate"
    ),
    pytest.param(
        zero_rate_in_file, r"must be a positive finite number.*0\.0", "sampling_rate_hz", id="zero-sampling-rate"
    ),
    pytest.param(
        suite2p_iscell_mismatch, r"has 5 rows but F\.npy has 4 ROIs", "iscell.npy", id="suite2p-iscell-mismatch"
    ),
    pytest.param(
        suite2p_stat_is_a_pickle_file, r"not a readable \.npy array header", "stat.npy", id="suite2p-stat-bare-pickle"
    ),
    pytest.param(
        mat_without_activity,
        r"no activity variable.*the file holds notes char.*stimulus double",
        "activity",
        id="mat-without-activity",
    ),
    pytest.param(
        mat_activity_3d,
        r"must be a 2-D numeric matrix, got double of shape \(3, 4, 5\)",
        "activity",
        id="mat-activity-3d",
    ),
    pytest.param(
        mat_assembly_out_of_range,
        r"assembly 2 has indices outside 1\.\.3",
        "detected_assemblies",
        id="mat-assembly-out-of-range",
    ),
    pytest.param(
        flavell_missing_timestamps,
        r"member missing: the confocal frame times",
        "timing/timestamp_confocal",
        id="flavell-missing-timestamps",
    ),
    pytest.param(
        flavell_fewer_stamps_than_frames,
        r"holds 20 time stamps for the 30 frames of gcamp/trace_array: too few",
        "timing/timestamp_confocal",
        id="flavell-fewer-stamps-than-frames",
    ),
    pytest.param(
        flavell_idx_splits_out_of_range,
        r"does not say which of the 40 time stamps.*range 1 \(11-41\) is outside the 40 time stamps",
        "gcamp/idx_splits",
        id="flavell-idx-splits-out-of-range",
    ),
    pytest.param(
        flavell_idx_splits_wrong_length,
        r"ranges 1-29 cover 29 frames, not 30",
        "gcamp/idx_splits",
        id="flavell-idx-splits-wrong-length",
    ),
    pytest.param(
        flavell_idx_splits_overlapping,
        r"range 2 \(10-25\) does not come after range 1 \(1-15\)",
        "gcamp/idx_splits",
        id="flavell-idx-splits-overlapping",
    ),
    pytest.param(
        flavell_idx_splits_indices_repeat,
        r"frame indices must be strictly increasing; frame 12 \(12\) is not after frame 11 \(12\)",
        "gcamp/idx_splits",
        id="flavell-idx-splits-indices-repeat",
    ),
    pytest.param(
        flavell_idx_splits_fractional, r"must hold whole numbers", "gcamp/idx_splits", id="flavell-idx-splits-fractional"
    ),
    pytest.param(
        flavell_selected_stamps_not_increasing,
        r"strictly increasing; frame 5 \(time stamp 16 of timing/timestamp_confocal\) is not after frame 4",
        "timing/timestamp_confocal",
        id="flavell-selected-stamps-not-increasing",
    ),
    pytest.param(
        flavell_selected_stamp_nan,
        r"non-finite time stamp at frame 10 \(time stamp 21 of",
        "timing/timestamp_confocal",
        id="flavell-selected-stamp-nan",
    ),
    pytest.param(
        netcdf_several_sessions,
        r"holds 2 sessions \(/fish/a, /fish/b\); pass group=",
        "group",
        id="netcdf-several-sessions",
    ),
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (not following links): relative path -> (size, mtime_ns)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _set_read_only(folder: Path, read_only: bool) -> None:
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            os.chmod(Path(root) / d, 0o555 if read_only else 0o755)
    os.chmod(folder, 0o555 if read_only else 0o755)


@pytest.mark.parametrize(("build", "match", "field"), CASES)
def test_malformed_input_is_refused_by_name_and_nothing_is_written(request, tmp_path, build, match, field):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    call, named, extra = build(case_dir, lambda: request.getfixturevalue("shared_data"))
    for folder in extra:  # shared data must already be read-only
        assert not stat.S_IMODE(folder.stat().st_mode) & 0o222, f"{folder} is writable"
    watched = [tmp_path, *extra]
    before = {str(w): _snapshot(w) for w in watched}
    _set_read_only(case_dir, True)
    try:
        with pytest.raises(RecordingError, match=match) as info:
            call()
    finally:
        _set_read_only(case_dir, False)
    err = info.value
    assert err.path is not None and named.name in err.path, (err.path, named)
    assert named.name in str(err)
    assert err.field == field
    if field is not None:
        assert f"field '{field}'" in str(err)
    assert {str(w): _snapshot(w) for w in watched} == before


def test_huge_declared_shape_fails_before_reading_data(tmp_path, monkeypatch):
    """The forged header is refused from the header alone: np.load is never reached."""
    _, f, _ = huge_declared_shape(tmp_path, lambda: tmp_path)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called on a forged header")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(RecordingError, match="declared shape"):
        open_recording(f)


def test_size_limit_follows_environment(tmp_path, monkeypatch):
    f = tmp_path / "rec.npy"
    np.save(f, np.zeros((100, 10), dtype=np.float32))  # 4000 bytes
    monkeypatch.setenv("POCOVIZ_MAX_BYTES", "3999")
    with pytest.raises(RecordingError, match="declared shape \\(100, 10\\) needs"):
        open_recording(f)
    monkeypatch.setenv("POCOVIZ_MAX_BYTES", "4000")
    assert open_recording(f).sizes == {"time": 100, "unit": 10}


def test_case_table_is_large_enough():
    assert len(CASES) >= 14
    assert len({c.id for c in CASES}) == len(CASES)

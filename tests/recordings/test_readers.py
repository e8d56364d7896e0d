"""Format readers: the real recordings in ../shared/data, and round trips through every format."""

from __future__ import annotations

import csv
import datetime
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import xarray as xr

from pocoviz.recordings.io import (
    detect_format,
    open_corpus,
    open_recording,
    save_corpus,
    save_recording,
)
from pocoviz.recordings.readers.suite2p import find_plane_dir, read_suite2p
from pocoviz.recordings.schema import RecordingError, make_recording, validate
from tests.realdata import FLAVELL_WORMS, flavell_file

#: Writing string coords to Zarr v3 warns that the dtype has no v3 spec yet (reading is unaffected).
zarr_write_warnings = pytest.mark.filterwarnings(
    "ignore::zarr.errors.UnstableSpecificationWarning", "ignore:Consolidated metadata:UserWarning"
)

GANGLIA = {
    "",
    "unknown",
    "Anterior Ganglion",
    "Dorsal Ganglion",
    "Lateral Ganglion",
    "Ventral Ganglion",
    "Anterior Pharyngeal Bulb",
}


def _labels_table(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def _small_recording(n_time: int = 60, n_unit: int = 5, seed: int = 0, **kw) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    defaults = dict(
        sampling_rate_hz=4.0,
        species="test fish",
        session=f"s{seed}",
        region=np.array(["tectum", "tectum", "", "pallium", "pallium"][:n_unit]),
        label=np.array(["a", "", "c", "", "e"][:n_unit]),
        x=np.arange(n_unit, dtype=float),
        units="dF/F",
        source="test",
    )
    defaults.update(kw)
    return make_recording(rng.normal(size=(n_time, n_unit)), **defaults)


# --- real data: Flavell-lab C. elegans --------------------------------------------------------------


@pytest.mark.parametrize(("uid", "n_unit", "n_labelled"), [(u, *v) for u, v in FLAVELL_WORMS.items()])
def test_flavell_opens_with_neuropal_labels(shared_data, uid, n_unit, n_labelled):
    path = flavell_file(uid)
    ds = open_recording(path)
    assert validate(ds) is ds
    assert ds.activity.dims == ("time", "unit") and ds.activity.dtype == np.float32
    assert ds.sizes == {"time": 800, "unit": n_unit}
    assert ds.attrs["species"] == "C. elegans" and ds.attrs["session"] == uid
    assert ds.attrs["format"] == "flavell-hdf5"
    assert "doi:10.1016/j.cell.2023.04.023" in ds.attrs["citation"]
    assert ds.activity.attrs["units"] == "z-score"
    labels = ds.label.values.astype(str)
    assert (labels != "").sum() == n_labelled
    assert {"AVAL", "AVAR"} <= set(labels)
    assert set(ds.region.values.astype(str)) <= GANGLIA
    assert (ds.region.values[labels == ""] == "").all()
    # every row of the CSV lands on its 0-based trace
    for row in _labels_table(path.with_name(f"{uid}-labels.csv")):
        i = int(row["trace_index"])
        assert labels[i] == row["neuropal_label"]
        assert ds.region.values[i] == row["ganglion"]
        assert ds.neuron_class.values[i] == row["neuron_class"]
        assert ds.label_confidence.values[i] == float(row["label_confidence"])
    assert np.isnan(ds.label_confidence.values[labels == ""]).all()
    # values and clock straight from the file
    with h5py.File(path, "r") as f:
        traces = f["gcamp/trace_array"][()]
        stamps = f["timing/timestamp_confocal"][()]
        velocity = f["behavior/velocity"][()]
    np.testing.assert_array_equal(ds.activity.values, traces.astype(np.float32))
    np.testing.assert_allclose(ds.time.values, stamps - stamps[0])
    assert ds.time.values[0] == 0.0 and ds.attrs["time_offset_s"] == stamps[0]
    assert ds.attrs["sampling_rate_hz"] == pytest.approx(1 / 0.6, rel=1e-3)
    np.testing.assert_array_equal(ds.velocity.values, velocity)
    assert {"head_angle", "pumping", "angular_velocity", "reversal_vec"} <= set(ds.data_vars)
    assert all(ds[v].dims == ("time",) for v in ds.data_vars if v != "activity")


def test_flavell_smb_ganglion_kept_as_unknown(shared_data):
    ds = open_recording(flavell_file("2022-07-27-45"))
    smb = ds.region.values[np.char.startswith(ds.label.values.astype(str), "SMB")]
    assert len(smb) >= 2 and set(smb) == {"unknown"}


def test_flavell_label_mapping_is_right(flavell_files):
    """Left/right AVA are strongly coupled; a wrong trace_index mapping would break this."""
    for path in flavell_files:
        ds = open_recording(path)
        ava = [ds.activity.values[:, int(np.flatnonzero(ds.label.values == name)[0])] for name in ("AVAL", "AVAR")]
        r = np.corrcoef(ava[0], ava[1])[0, 1]
        corr = np.corrcoef(ds.activity.values.T)
        median_abs = np.median(np.abs(corr[np.triu_indices_from(corr, k=1)]))
        assert r > 0.9 > 0.5 > median_abs, (path.name, r, median_abs)


def test_flavell_without_labels_and_other_trace(shared_data, tmp_path):
    src = shared_data / "celegans_flavell_dag2023" / "2022-07-26-31-data.h5"
    copy = tmp_path / "2022-07-26-31-data.h5"  # no labels CSV beside it
    shutil.copyfile(src, copy)
    ds = open_recording(copy, trace="trace_array_original", session="worm-1")
    assert ds.attrs["session"] == "worm-1" and ds.attrs["labels_csv"] == ""
    assert (ds.label.values == "").all() and ds.activity.attrs["units"] == "a.u."
    with h5py.File(src, "r") as f:
        np.testing.assert_array_equal(ds.activity.values, f["gcamp/trace_array_original"][()].astype(np.float32))
    explicit = open_recording(copy, labels_csv=src.with_name("2022-07-26-31-labels.csv"))
    assert (explicit.label.values != "").sum() == 100


# --- Flavell-lab files as they come: more confocal time stamps than traced frames ------------------

#: 1600 confocal frames, 0.6 s apart, with jitter; the time stamps of a lab file with more frames
#: imaged than traced
_STAMPS = 1_228_334.0 + 0.6 * np.arange(1600) + np.random.default_rng(5).uniform(0, 0.05, 1600)


def _lab_h5(path: Path, n_time: int, stamps: np.ndarray, idx_splits=None, n_unit: int = 4, behaviour=None) -> Path:
    """A small file in the lab's layout (as h5py shows it): traces (T, N), S time stamps, and
    optionally ``gcamp/idx_splits`` and behaviour series."""
    with h5py.File(path, "w") as f:
        f["gcamp/trace_array"] = np.random.default_rng(0).normal(size=(n_time, n_unit))
        f["timing/timestamp_confocal"] = stamps
        if idx_splits is not None:
            f["gcamp/idx_splits"] = np.asarray(idx_splits)
        for name, values in (behaviour or {}).items():
            f[f"behavior/{name}"] = values
    return path


_PICKED = np.sort(np.random.default_rng(2).choice(1600, size=1137, replace=False))  # 0-based
_TWO_RANGES = np.r_[0:400, 1000:1600]


@pytest.mark.parametrize(
    ("n_time", "idx_splits", "want_index", "source", "layout", "ranges"),
    [
        # one range as (start, stop): the file where idx_splits is [[1], [799]]
        (799, [[1], [799]], np.arange(799), "idx_splits", "ranges", "1-799"),
        (799, np.array([[1.0], [799.0]]), np.arange(799), "idx_splits", "ranges", "1-799"),  # stored as floats
        (799, [1, 799], np.arange(799), "idx_splits", "ranges", "1-799"),  # a bare (start, stop) vector
        # several ranges, both orientations: (2, R) as h5py shows Julia's R x 2, and (R, 2)
        (1000, [[1, 1001], [400, 1600]], _TWO_RANGES, "idx_splits", "ranges", "1-400, 1001-1600"),
        (1000, [[1, 400], [1001, 1600]], _TWO_RANGES, "idx_splits", "ranges", "1-400, 1001-1600"),
        # one index per traced frame: 1-D, (1, T), and the (2, T) file whose every column is one frame
        (1137, _PICKED + 1, _PICKED, "idx_splits", "frame indices", None),
        (1137, (_PICKED + 1)[None, :], _PICKED, "idx_splits", "frame indices", None),
        (1137, np.stack([_PICKED + 1, _PICKED + 1]), _PICKED, "idx_splits", "ranges", None),
        (1137, np.stack([np.arange(1, 1138), _PICKED + 1]), _PICKED, "idx_splits", "frame index pairs", None),
        (1137, np.stack([np.arange(1, 1138), _PICKED + 1]).T, _PICKED, "idx_splits", "frame index pairs", None),
        # no idx_splits: the first T stamps
        (1137, None, np.arange(1137), "first_T", None, "1-1137"),
    ],
    ids=["range", "range-float", "range-vector", "ranges-2xR", "ranges-Rx2", "indices", "indices-1xT",
         "2xT-one-frame-ranges", "2xT-pairs", "Tx2-pairs", "no-idx-splits"],  # fmt: skip
)
def test_flavell_more_time_stamps_than_frames(tmp_path, n_time, idx_splits, want_index, source, layout, ranges):
    velocity = np.sin(np.arange(1600) / 10.0)
    path = _lab_h5(tmp_path / "2023-02-02-01-data.h5", n_time, _STAMPS, idx_splits, behaviour={"velocity": velocity, "pumping": np.ones(n_time)})
    ds = open_recording(path)
    assert validate(ds) is ds and ds.sizes == {"time": n_time, "unit": 4}
    want = _STAMPS[want_index]
    np.testing.assert_allclose(ds.time.values, want - want[0])
    assert ds.attrs["time_offset_s"] == want[0]
    assert ds.attrs["time_source"] == source and ds.attrs["n_timestamps"] == 1600
    assert ds.attrs.get("idx_splits_layout") == layout
    if ranges is not None:
        assert ds.attrs["timestamp_ranges"] == ranges
    # a behaviour series with one value per confocal frame keeps the traced frames' values
    np.testing.assert_array_equal(ds.velocity.values, velocity[want_index])
    assert ds.attrs["behavior_per_timestamp"] == "velocity" and (ds.pumping.values == 1).all()
    # a stamp outside the traced frames may be anything: it is not used
    assert ds.attrs["sampling_rate_hz"] == pytest.approx(1 / 0.6, rel=0.05)


def test_flavell_as_many_stamps_as_frames_uses_all_of_them(tmp_path):
    stamps = _STAMPS[:800]
    ds = open_recording(_lab_h5(tmp_path / "a-data.h5", 800, stamps, [[1], [800]]))
    assert ds.attrs["time_source"] == "all" and ds.attrs["timestamp_ranges"] == "1-800" and "idx_splits_note" not in ds.attrs
    np.testing.assert_allclose(ds.time.values, stamps - stamps[0])
    # an idx_splits that disagrees is not needed (stamps and traces agree one to one): noted, not fatal
    odd = open_recording(_lab_h5(tmp_path / "b-data.h5", 800, stamps, [[1], [799]]))
    assert odd.attrs["time_source"] == "all" and "cover 799 frames, not 800" in odd.attrs["idx_splits_note"]
    np.testing.assert_allclose(odd.time.values, stamps - stamps[0])


def test_flavell_unused_stamps_may_be_missing(tmp_path):
    stamps = _STAMPS.copy()
    stamps[900:] = np.nan  # never traced
    ds = open_recording(_lab_h5(tmp_path / "a-data.h5", 800, stamps, [[1], [800]]))
    assert ds.attrs["time_source"] == "idx_splits" and np.isfinite(ds.time.values).all()


def _rewrite(src: Path, folder: Path, **members) -> Path:
    """A copy of a real file (and its labels CSV) in ``folder``, with some members replaced
    (``gcamp__idx_splits`` for ``gcamp/idx_splits``; ``None`` deletes one)."""
    folder.mkdir()
    dest = folder / src.name
    shutil.copyfile(src, dest)
    labels = src.with_name(src.name.replace("-data.h5", "-labels.csv"))
    if labels.is_file():
        shutil.copyfile(labels, folder / labels.name)
    with h5py.File(dest, "r+") as f:
        for name, value in members.items():
            name = name.replace("__", "/")
            if name in f:
                del f[name]
            if value is not None:
                f[name] = value
    return dest


def test_real_flavell_file_rewritten_in_both_layouts(flavell_files, tmp_path):
    """A real worm, rewritten as the lab's other files come: (a) twice the stamps, the traced
    frames named by one (start, stop) range; (b) the last frame untraced, idx_splits [[1], [799]];
    (c, d) the traced frames interleaved with untraced ones, named frame by frame (2 x T, and
    1-D); (e) more stamps and no idx_splits."""
    src = flavell_files[0]
    with h5py.File(src, "r") as f:
        traces = f["gcamp/trace_array"][()]
        stamps = f["timing/timestamp_confocal"][()]
        velocity = f["behavior/velocity"][()]
    original = open_recording(src)
    assert original.attrs["time_source"] == "all" and original.attrs["n_timestamps"] == 800
    assert original.attrs["timestamp_ranges"] == "1-800"
    n = len(stamps)
    more = np.r_[stamps, stamps[-1] + 0.6 * np.arange(1, n + 1)]
    a = open_recording(_rewrite(src, tmp_path / "a", timing__timestamp_confocal=more, gcamp__idx_splits=np.array([[1], [n]])))
    np.testing.assert_allclose(a.time.values, original.time.values)
    assert a.attrs["time_source"] == "idx_splits" and a.attrs["idx_splits_layout"] == "ranges"
    assert a.attrs["n_timestamps"] == 2 * n and a.attrs["timestamp_ranges"] == f"1-{n}"
    np.testing.assert_array_equal(a.activity.values, original.activity.values)
    np.testing.assert_array_equal(a.label.values, original.label.values)

    b = open_recording(_rewrite(src, tmp_path / "b", gcamp__trace_array=traces[: n - 1], gcamp__idx_splits=np.array([[1], [n - 1]])))
    assert b.sizes["time"] == n - 1 and b.attrs["time_source"] == "idx_splits" and b.attrs["n_timestamps"] == n
    np.testing.assert_allclose(b.time.values, original.time.values[: n - 1])
    np.testing.assert_array_equal(b.velocity.values, velocity[: n - 1])  # one per stamp: the traced ones kept
    assert "velocity" in b.attrs["behavior_per_timestamp"].split(", ")

    interleaved = np.empty(2 * n)
    interleaved[0::2], interleaved[1::2] = stamps, stamps + 0.3  # an untraced frame after each traced one
    idx = np.arange(1, 2 * n, 2)  # 1-based stamps of the traced frames
    c = open_recording(_rewrite(src, tmp_path / "c", timing__timestamp_confocal=interleaved, gcamp__idx_splits=np.stack([idx, idx])))
    np.testing.assert_allclose(c.time.values, original.time.values)
    assert c.attrs["time_source"] == "idx_splits" and c.attrs["timestamp_ranges"].startswith("1, 3, 5, ")
    np.testing.assert_array_equal(c.velocity.values, velocity)  # one per traced frame: kept as it is
    d = open_recording(_rewrite(src, tmp_path / "d", timing__timestamp_confocal=interleaved, gcamp__idx_splits=idx))
    np.testing.assert_allclose(d.time.values, original.time.values)
    assert d.attrs["idx_splits_layout"] == "frame indices"
    # no idx_splits and more stamps: the first T
    e = open_recording(_rewrite(src, tmp_path / "e", timing__timestamp_confocal=more, gcamp__idx_splits=None))
    assert e.attrs["time_source"] == "first_T"
    np.testing.assert_allclose(e.time.values, original.time.values)


def test_flavell_duplicated_label_is_kept_and_flagged(flavell_files, tmp_path):
    """Two traces labelled URADL (as in 2022-07-27-38's labels v1): both keep the label, both are
    flagged, and the file opens without a warning."""
    src = flavell_files[0]
    rows = _labels_table(src.with_name(src.name.replace("-data.h5", "-labels.csv")))
    with h5py.File(src, "r") as f:
        n_unit = f["gcamp/trace_array"].shape[1]
    free = sorted(set(range(n_unit)) - {int(r["trace_index"]) for r in rows})
    first = next(r for r in rows if r["neuropal_label"] not in ("", "URADL"))
    twin = {**first, "trace_index": str(free[0]), "label_confidence": "3.0"}
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([*rows, twin])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_recording(src, labels_csv=csv_path)
    name = first["neuropal_label"]
    carriers = np.flatnonzero(ds.label.values == name).tolist()
    assert carriers == sorted([int(first["trace_index"]), free[0]])
    assert ds.label_duplicate.values[carriers].all() and ds.label_duplicate.values.sum() == 2
    assert ds.attrs["duplicate_labels"] == name
    assert ds.label_confidence.values[free[0]] == 3.0
    # the file as the lab ships it has no duplicate: no flag at all
    plain = open_recording(src)
    assert "label_duplicate" not in plain.coords and "duplicate_labels" not in plain.attrs


def test_flavell_2022_07_27_38_has_urad_twice(shared_data):
    ds = open_recording(flavell_file("2022-07-27-38"))
    assert (ds.label.values == "URADL").sum() == 2 and ds.label_duplicate.values[ds.label.values == "URADL"].all()
    assert "URADL" in ds.attrs["duplicate_labels"].split(", ")


def test_flavell_lab_file_without_labels_csv_has_empty_labels(tmp_path):
    """The lab's other strain has no NeuroPAL identification, hence no labels CSV."""
    ds = open_recording(_lab_h5(tmp_path / "2023-03-03-03-data.h5", 50, _STAMPS[:50]))
    assert (ds.label.values == "").all() and (ds.region.values == "").all()
    assert ds.attrs["labels_csv"] == "" and ds.attrs["n_labelled"] == 0 and np.isnan(ds.label_confidence.values).all()
    assert "label_duplicate" not in ds.coords


# --- real data: Triplett zebrafish tectum -----------------------------------------------------------


def test_triplett_opens_with_positions_and_assemblies(triplett_file):
    ds = open_recording(triplett_file)
    assert validate(ds) is ds
    assert ds.sizes["time"] == 4245 and ds.sizes["unit"] == 114
    assert ds.attrs["format"] == "matlab" and ds.attrs["species"] == "zebrafish"
    assert ds.attrs["session"] == "zf_20151104-f1"
    assert "10.6084/m9.figshare.6943265.v1" in ds.attrs["citation"] and ds.activity.attrs["units"] == "dF/F"
    assert set(ds.region.values) == {"tectum"}
    mat = scipy.io.loadmat(triplett_file, squeeze_me=True)
    np.testing.assert_array_equal(ds.activity.values, mat["activity_matrix"].T.astype(np.float32))
    np.testing.assert_array_equal(ds.x.values, mat["cell_coordinates"][:, 0])
    np.testing.assert_array_equal(ds.y.values, mat["cell_coordinates"][:, 1])
    # frame rate unknown: time is the frame index
    assert ds.attrs["time_is_frame_index"] == 1 and ds.attrs["sampling_rate_hz"] == 1.0
    np.testing.assert_array_equal(ds.time.values, np.arange(4245))
    # assemblies: 5, 1-based in the file, a unit may be in several
    assert ds.sizes["assembly"] == 5 and ds.assembly.values.tolist() == [1, 2, 3, 4, 5]
    sizes = ds.in_assembly.sum("unit").values.tolist()
    assert sizes == [len(np.atleast_1d(a)) for a in mat["detected_assemblies"]] == [26, 16, 31, 13, 13]
    assert ds.in_assembly.values[0].tolist() == [True, True, False, False, False]  # unit 1 of the file
    assert ds.assemblies.values[0] == "1,2" and ds.assemblies.values[3] == ""


def test_triplett_with_sampling_rate(triplett_file):
    ds = open_recording(triplett_file, sampling_rate_hz=2.0, session="fish1", species="Danio rerio")
    assert ds.attrs["sampling_rate_hz"] == 2.0 and "time_is_frame_index" not in ds.attrs
    assert ds.time.values[-1] == pytest.approx(4244 / 2.0)
    assert (ds.attrs["session"], ds.attrs["species"]) == ("fish1", "Danio rerio")


# --- MATLAB: generic and v7.3 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored_shape", "transposed"),
    [((6, 80), True), ((80, 6), False), ((7, 7), False)],
    ids=["unit-by-time", "time-by-unit", "square"],
)
def test_matlab_generic_orientation_rule(tmp_path, stored_shape, transposed):
    data = np.random.default_rng(1).normal(size=stored_shape)
    path = tmp_path / "rec.mat"
    scipy.io.savemat(path, {"traces": data, "notes": "hello"})
    ds = open_recording(path, sampling_rate_hz=10.0, species="mouse")
    expected = data.T if transposed else data
    np.testing.assert_allclose(ds.activity.values, expected.astype(np.float32))
    assert ds.attrs["mat_variable"] == "traces" and ds.activity.attrs["units"] == "a.u."
    assert ds.attrs["citation"] == "" and (ds.region.values == "").all()


def test_matlab_variable_option_picks_among_several(tmp_path):
    path = tmp_path / "rec.mat"
    scipy.io.savemat(path, {"dff": np.ones((50, 3)), "raw": np.arange(100.0).reshape(50, 2)})
    assert open_recording(path).attrs["mat_variable"] == "dff"
    assert open_recording(path).activity.attrs["units"] == "dF/F"
    ds = open_recording(path, variable="raw")
    np.testing.assert_array_equal(ds.activity.values[:, 1], np.arange(1.0, 100.0, 2))
    with pytest.raises(RecordingError, match="variable not found.*dff"):
        open_recording(path, variable="nope")


def _write_mat73(path: Path, arrays: dict[str, np.ndarray], cells: dict[str, list[np.ndarray]]) -> None:
    """A minimal MATLAB v7.3 file: HDF5 with a 512-byte MATLAB header block, arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=np.asarray(arr).T).attrs["MATLAB_class"] = np.bytes_("double")
        refs = f.create_group("#refs#")
        for name, items in cells.items():
            ref_list = []
            for k, item in enumerate(items):
                d = refs.create_dataset(f"{name}{k}", data=np.asarray(item, dtype=np.float64)[None, :].T)
                ref_list.append(d.ref)
            ds = f.create_dataset(name, data=np.array(ref_list, dtype=h5py.ref_dtype)[None, :].T)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:
        fh.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(
                128
            )
        )


def test_matlab_v73_triplett_layout(tmp_path):
    rng = np.random.default_rng(2)
    act = rng.normal(size=(4, 30))  # units x time, as in MATLAB
    coords = rng.uniform(0, 100, size=(4, 2))
    path = tmp_path / "fish.mat"
    _write_mat73(path, {"activity_matrix": act, "cell_coordinates": coords}, {"detected_assemblies": [[1, 2], [2, 4]]})
    assert detect_format(path) == "matlab-v73"
    ds = open_recording(path)
    assert ds.attrs["mat_version"] == "7.3"
    np.testing.assert_allclose(ds.activity.values, act.T.astype(np.float32))
    np.testing.assert_allclose(ds.x.values, coords[:, 0])
    assert ds.in_assembly.values.tolist() == [[True, False], [True, True], [False, False], [False, True]]


# --- NWB --------------------------------------------------------------------------------------------


def _write_nwb(
    path: Path, data: np.ndarray, masks: list[list[tuple[int, int, float]]], *, with_raw: bool = True
) -> None:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.ophys import (
        DfOverF,
        Fluorescence,
        ImageSegmentation,
        OpticalChannel,
        RoiResponseSeries,
    )

    nwb = NWBFile(
        session_description="test",
        identifier="ident-1",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        session_id="mouse1-day3",
        subject=Subject(subject_id="m1", species="Mus musculus"),
    )
    device = nwb.create_device(name="scope")
    channel = OpticalChannel(name="green", description="d", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane0",
        optical_channel=channel,
        imaging_rate=30.0,
        description="d",
        device=device,
        excitation_lambda=920.0,
        indicator="GCaMP6s",
        location="V1",
        grid_spacing=[2.0e-6, 3.0e-6],
        grid_spacing_unit="meters",
    )
    module = nwb.create_processing_module(name="ophys", description="optical physiology")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(name="cells", description="d", imaging_plane=plane)
    for mask in masks:
        table.add_roi(pixel_mask=mask)
    table.id.data[:] = [100 + i for i in range(len(masks))]
    region = table.create_roi_table_region(region=list(range(len(masks))), description="all")
    if with_raw:  # a Fluorescence series first, so that the DfOverF preference is tested
        raw = RoiResponseSeries(name="raw", data=data * 10 + 100, rois=region, unit="a.u.", rate=30.0)
        module.add(Fluorescence(roi_response_series=raw))
    dff = RoiResponseSeries(name="dff", data=data, rois=region, unit="n/a", rate=30.0, starting_time=5.0)
    module.add(DfOverF(roi_response_series=dff))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


@pytest.mark.filterwarnings("ignore:The linked table:UserWarning")  # hdmf, while the file is built
def test_nwb_round_trip(tmp_path):
    data = np.random.default_rng(3).normal(size=(90, 3))
    masks = [[(0, 0, 1.0), (2, 4, 1.0)], [(10, 10, 1.0), (10, 12, 3.0)], [(5, 7, 2.0)]]
    path = tmp_path / "session.nwb"
    _write_nwb(path, data, masks)
    assert detect_format(path) == "nwb"
    ds = open_recording(path)
    assert ds.attrs["nwb_series"] == "processing/ophys/DfOverF/dff" and ds.activity.attrs["units"] == "dF/F"
    np.testing.assert_allclose(ds.activity.values, data.astype(np.float32))
    assert ds.unit.values.tolist() == [100, 101, 102]
    assert set(ds.region.values) == {"V1"}
    assert (ds.attrs["species"], ds.attrs["session"]) == ("Mus musculus", "mouse1-day3")
    assert ds.attrs["sampling_rate_hz"] == 30.0 and ds.attrs["time_offset_s"] == 5.0
    np.testing.assert_allclose(ds.time.values, np.arange(90) / 30.0)
    # weighted centroids in pixels x grid spacing (2 µm in x, 3 µm in y)
    np.testing.assert_allclose(ds.x.values, [1 * 2.0, 10 * 2.0, 5 * 2.0])
    np.testing.assert_allclose(ds.y.values, [2 * 3.0, (10 + 12 * 3) / 4 * 3.0, 7 * 3.0])
    assert "um" in ds.attrs["position_units"]
    raw = open_recording(path, series="raw")
    assert raw.activity.attrs["units"] == "F"
    np.testing.assert_allclose(raw.activity.values, (data * 10 + 100).astype(np.float32), rtol=1e-6)
    with pytest.raises(RecordingError, match="no RoiResponseSeries named 'nope'.*dff"):
        open_recording(path, series="nope")


@pytest.mark.filterwarnings("ignore:The linked table:UserWarning")
def test_nwb_image_masks_timestamps_and_no_grid_spacing(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import ImageSegmentation, OpticalChannel, RoiResponseSeries

    nwb = NWBFile(
        session_description="t",
        identifier="no-session-id",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwb.create_device(name="scope")
    channel = OpticalChannel(name="green", description="d", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane0", optical_channel=channel, imaging_rate=10.0, description="d", device=device,
        excitation_lambda=920.0, indicator="GCaMP6s", location="tectum",
    )  # fmt: skip
    module = nwb.create_processing_module(name="ophys", description="o")
    segmentation = ImageSegmentation()
    module.add(segmentation)
    table = segmentation.create_plane_segmentation(name="cells", description="d", imaging_plane=plane)
    for cx, cy in [(2, 3), (6, 1)]:
        mask = np.zeros((8, 5))
        mask[cx - 1 : cx + 2, cy] = 1.0  # a vertical bar centred on (cx, cy); axes are (x, y)
        table.add_roi(image_mask=mask)
    stamps = 100.0 + np.cumsum(np.full(40, 0.1))
    data = np.random.default_rng(9).normal(size=(40, 2))
    rrs = RoiResponseSeries(
        name="traces",
        data=data,
        rois=table.create_roi_table_region(region=[0, 1], description="d"),
        unit="a.u.",
        timestamps=stamps,
    )
    nwb.add_acquisition(rrs)
    with NWBHDF5IO(str(tmp_path / "a.nwb"), "w") as io:
        io.write(nwb)
    ds = open_recording(tmp_path / "a.nwb")
    assert ds.attrs["nwb_series"] == "acquisition/traces" and ds.activity.attrs["units"] == "a.u."
    assert ds.attrs["session"] == "no-session-id" and ds.attrs["species"] == "unknown"
    assert ds.x.values.tolist() == [2.0, 6.0] and ds.y.values.tolist() == [3.0, 1.0]
    assert ds.attrs["position_units"].startswith("pixel") and ds.x.attrs["units"] == "pixel"
    np.testing.assert_allclose(ds.time.values, stamps - stamps[0])
    assert ds.attrs["time_offset_s"] == pytest.approx(100.1) and ds.attrs["sampling_rate_hz"] == pytest.approx(10.0)
    assert set(ds.region.values) == {"tectum"}


# --- suite2p ----------------------------------------------------------------------------------------


@pytest.fixture()
def suite2p_dir(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    n_roi, n_time = 5, 200
    F = rng.uniform(200, 400, size=(n_roi, n_time)).astype(np.float32)
    Fneu = rng.uniform(50, 100, size=(n_roi, n_time)).astype(np.float32)
    iscell = np.array([[1, 0.9], [0, 0.2], [1, 0.8], [1, 0.7], [0, 0.1]], dtype=np.float64)
    stat = np.array([{"med": [10 * i + 1, 20 * i + 2], "npix": 12} for i in range(n_roi)], dtype=object)
    plane = tmp_path / "exp7" / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", F)
    np.save(plane / "Fneu.npy", Fneu)
    np.save(plane / "iscell.npy", iscell)
    np.save(plane / "stat.npy", stat, allow_pickle=True)
    with open(plane / "ops.npy", "wb") as fh:  # a pickle that must never be loaded
        pickle.dump({"fs": 30.0}, fh)
    return tmp_path / "exp7", {"F": F, "Fneu": Fneu, "iscell": iscell}


def test_find_plane_dir(suite2p_dir, tmp_path):
    root, _ = suite2p_dir
    plane = root / "suite2p" / "plane0"
    assert find_plane_dir(root) == find_plane_dir(root / "suite2p") == find_plane_dir(plane) == plane
    assert find_plane_dir(tmp_path / "nowhere") is None


def test_suite2p_default_reads_cells_as_dff_without_unpickling(suite2p_dir, monkeypatch):
    root, arrays = suite2p_dir
    real_load = np.load

    def guarded_load(*args, **kwargs):
        assert not kwargs.get("allow_pickle"), f"np.load with allow_pickle=True: {args}"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", guarded_load)
    assert detect_format(root) == "suite2p"
    ds = open_recording(root, sampling_rate_hz=30.0)
    assert ds.unit.values.tolist() == [0, 2, 3]  # iscell[:, 0] > 0.5
    assert "x" not in ds.coords and ds.attrs["session"] == "exp7" and ds.activity.attrs["units"] == "dF/F"
    np.testing.assert_allclose(ds.cell_probability.values, [0.9, 0.8, 0.7])
    # reference: F - 0.7 Fneu, baseline = 8th percentile per ROI
    corrected = arrays["F"].astype(np.float64) - 0.7 * arrays["Fneu"].astype(np.float64)
    f0 = np.percentile(corrected, 8, axis=1, keepdims=True)
    expected = ((corrected - f0) / f0).T[:, [0, 2, 3]]
    np.testing.assert_allclose(ds.activity.values, expected, rtol=1e-5, atol=1e-6)
    assert ds.attrs["sampling_rate_hz"] == 30.0 and ds.time.values[1] == pytest.approx(1 / 30)


def test_suite2p_never_reads_stat_by_default(suite2p_dir):
    root, _ = suite2p_dir
    (root / "suite2p" / "plane0" / "stat.npy").write_bytes(b"not a numpy file at all")
    ds = read_suite2p(root, cells_only=False)
    assert ds.sizes["unit"] == 5 and ds.attrs["time_is_frame_index"] == 1
    with pytest.raises(RecordingError, match="stat.npy"):
        read_suite2p(root, load_positions=True)


def test_suite2p_load_positions_reads_med(suite2p_dir):
    root, _ = suite2p_dir
    ds = open_recording(root / "suite2p", load_positions=True, neuropil_coefficient=0.0)
    # stat[i]["med"] is (y, x) = (10 i + 1, 20 i + 2)
    assert ds.x.values.tolist() == [2.0, 42.0, 62.0] and ds.y.values.tolist() == [1.0, 21.0, 31.0]
    assert ds.attrs["neuropil_coefficient"] == 0.0


# --- NumPy ------------------------------------------------------------------------------------------


def test_npy_round_trip(tmp_path):
    data = np.random.default_rng(5).normal(size=(40, 3)).astype(np.float32)
    path = tmp_path / "traces.npy"
    np.save(path, data)
    ds = open_recording(path, sampling_rate_hz=20.0, species="fly")
    np.testing.assert_array_equal(ds.activity.values, data)
    assert ds.attrs["format"] == "npy" and ds.attrs["session"] == "traces" and ds.attrs["species"] == "fly"
    assert ds.time.values[-1] == pytest.approx(39 / 20)
    assert open_recording(path).attrs["time_is_frame_index"] == 1


def test_npz_round_trip_with_metadata(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.normal(size=(30, 4))
    time = np.cumsum(rng.uniform(0.09, 0.11, size=30))
    path = tmp_path / "rec.npz"
    np.savez(
        path,
        activity=data,
        time=time,
        unit=np.array([7, 3, 9, 1]),
        region=np.array(["V1", "V1", "LM", ""]),
        label=np.array(["", "", "n1", ""]),
        x=np.arange(4.0),
        y=np.ones(4),
        z=np.zeros(4),
        species=np.array("Mus musculus"),
        session=np.array("m3"),
        units=np.array("dF/F"),
    )
    ds = open_recording(path)
    assert ds.attrs["format"] == "npz"
    np.testing.assert_allclose(ds.activity.values, data.astype(np.float32))
    np.testing.assert_allclose(ds.time.values, time)
    assert ds.attrs["sampling_rate_hz"] == pytest.approx(1 / np.median(np.diff(time)))
    assert ds.unit.values.tolist() == [7, 3, 9, 1] and ds.region.values.tolist() == ["V1", "V1", "LM", ""]
    assert ds.label.values.tolist() == ["", "", "n1", ""] and ds.z.values.tolist() == [0.0] * 4
    assert (ds.attrs["species"], ds.attrs["session"], ds.activity.attrs["units"]) == ("Mus musculus", "m3", "dF/F")
    assert open_recording(path, species="rat").attrs["species"] == "rat"


# --- netCDF, Zarr, corpora --------------------------------------------------------------------------


def test_netcdf_round_trip_via_save_recording(tmp_path, triplett_file):
    ds = open_recording(triplett_file, sampling_rate_hz=4.0)
    path = save_recording(ds, tmp_path / "fish.nc")
    back = open_recording(path)
    assert back.attrs["format"] == "matlab"  # the original format is kept; netCDF was detected
    assert detect_format(path) == "netcdf"
    xr.testing.assert_identical(back.activity, ds.activity)
    for name in ("x", "y", "region", "label", "in_assembly", "assemblies"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs["citation"] == ds.attrs["citation"]
    quantized = open_recording(save_recording(ds, tmp_path / "q.nc", quantize=0.001))
    np.testing.assert_allclose(quantized.activity.values, ds.activity.values, atol=0.0006)


def test_netcdf_written_by_plain_xarray_is_normalised(tmp_path):
    act = np.random.default_rng(7).normal(size=(5, 25))  # float64, stored (unit, time)
    raw = xr.Dataset(
        {"activity": (("unit", "time"), act)},
        coords={"time": np.arange(25) * 0.5, "unit": np.arange(5)},
        attrs={"species": "zebrafish", "session": "f2", "sampling_rate_hz": 2.0},
    )
    raw.to_netcdf(tmp_path / "plain.nc", engine="netcdf4")
    raw.to_netcdf(tmp_path / "classic.nc", engine="scipy")  # netCDF3
    for name in ("plain.nc", "classic.nc"):
        ds = open_recording(tmp_path / name)
        assert ds.activity.dims == ("time", "unit") and ds.activity.dtype == np.float32
        np.testing.assert_allclose(ds.activity.values, act.T.astype(np.float32))
        assert (ds.region.values == "").all() and ds.activity.attrs["units"] == "a.u."


@zarr_write_warnings
@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # zipfile, while zarr writes
def test_zipped_zarr_store(tmp_path):
    import zarr

    ds = _small_recording(seed=2)
    store = zarr.storage.ZipStore(tmp_path / "rec.zip", mode="w")
    ds.to_zarr(store, mode="w")
    store.close()
    assert detect_format(tmp_path / "rec.zip") == "zarr"
    xr.testing.assert_identical(open_recording(tmp_path / "rec.zip").activity, ds.activity)


@zarr_write_warnings
def test_zarr_round_trip(tmp_path):
    ds = _small_recording()
    ds.to_zarr(tmp_path / "rec.zarr", mode="w")
    back = open_recording(tmp_path / "rec.zarr")
    assert back.attrs["format"] == "zarr"
    xr.testing.assert_identical(back.activity, ds.activity)
    assert back.region.values.tolist() == ds.region.values.tolist()


def test_netcdf_group_option(tmp_path):
    tree = xr.DataTree.from_dict({"/fish/s0": _small_recording(seed=0), "/fish/s1": _small_recording(seed=1)})
    path = save_corpus(tree, tmp_path / "two.nc")
    ds = open_recording(path, group="/fish/s1")
    xr.testing.assert_allclose(ds.activity, _small_recording(seed=1).activity)
    single = save_corpus(xr.DataTree.from_dict({"/fish/s0": _small_recording(seed=0)}), tmp_path / "one.nc")
    assert open_recording(single).attrs["session"] == "s0"  # the only session group is used
    with pytest.raises(RecordingError, match="group 'missing' cannot be opened"):
        open_recording(path, group="missing")


@zarr_write_warnings
def test_corpus_round_trip(tmp_path, flavell_files, triplett_file):
    sessions = {
        "/C_elegans/2022-07-26-31": open_recording(flavell_files[0]),
        "/zebrafish/zf_20151104-f1": open_recording(triplett_file),
        "/test/s3": _small_recording(seed=3),
    }
    path = save_corpus(xr.DataTree.from_dict(sessions), tmp_path / "corpus.nc")
    tree = open_corpus(path)
    leaves = {n.path: n.to_dataset() for n in tree.subtree if "activity" in n.data_vars}
    assert set(leaves) == set(sessions)
    for key, ds in sessions.items():
        xr.testing.assert_identical(leaves[key].activity, ds.activity)
        assert leaves[key].label.values.tolist() == ds.label.values.tolist()
    zarr_path = tmp_path / "corpus.zarr"
    xr.DataTree.from_dict({k: v for k, v in sessions.items() if k.startswith("/test")}).to_zarr(zarr_path, mode="w")
    assert [n.path for n in open_corpus(zarr_path).subtree if "activity" in n.data_vars] == ["/test/s3"]


def test_open_corpus_on_a_folder_of_recordings(tmp_path, flavell_files):
    folder = tmp_path / "recs"
    folder.mkdir()
    for f in flavell_files:
        shutil.copyfile(f, folder / f.name)
        shutil.copyfile(
            f.with_name(f.name.replace("-data.h5", "-labels.csv")), folder / f.name.replace("-data.h5", "-labels.csv")
        )
    np.save(folder / "extra.npy", np.random.default_rng(8).normal(size=(20, 2)))
    (folder / "notes.txt").write_text("not a recording")
    tree = open_corpus(folder)
    paths = sorted(n.path for n in tree.subtree if "activity" in n.data_vars)
    uids = [f.name.removesuffix("-data.h5") for f in flavell_files]
    assert paths == [f"/C_elegans/{u}" for u in uids] + ["/unknown/extra"]
    for u in uids:
        assert (tree[f"/C_elegans/{u}"].label.values != "").sum() == FLAVELL_WORMS[u][1]


# --- detection by content ---------------------------------------------------------------------------


def test_content_dispatch_ignores_suffix(tmp_path, flavell_files):
    nc = save_recording(_small_recording(), tmp_path / "rec.nc")
    renamed = tmp_path / "rec.dat"
    os.rename(nc, renamed)
    assert detect_format(renamed) == "netcdf"
    assert open_recording(renamed).sizes == {"time": 60, "unit": 5}
    binary = tmp_path / "worm.bin"
    shutil.copyfile(flavell_files[0], binary)
    assert detect_format(binary) == "flavell-hdf5"
    assert open_recording(binary).sizes == {"time": 800, "unit": 146}
    npz_as_mat = tmp_path / "rec.mat"
    with open(npz_as_mat, "wb") as fh:  # np.savez would append .npz to a name
        np.savez(fh, activity=np.ones((10, 2)) + np.arange(10)[:, None])
    assert detect_format(npz_as_mat) == "npz"


def test_open_recording_inside_data_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    save_recording(_small_recording(), tmp_path / "sub" / "rec.nc")
    ds = open_recording("sub/rec.nc", data_dir=tmp_path)
    assert ds.sizes["unit"] == 5
    assert open_recording(tmp_path / "sub" / "rec.nc", data_dir=tmp_path).sizes["unit"] == 5


def test_open_corpus_on_a_single_recording_file_names_the_session(tmp_path):
    """A netCDF holding one recording at its root becomes /<species>/<session>, never an empty name."""
    from pocoviz.recordings import corpus_sessions, make_recording, save_recording

    ds = make_recording(np.zeros((10, 3)), sampling_rate_hz=2.0, species="test fish", session="s1")
    save_recording(ds, tmp_path / "one.nc")
    assert list(corpus_sessions(open_corpus(tmp_path / "one.nc"))) == ["test_fish/s1"]


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pocoviz-pwned",))


def test_suite2p_stat_is_read_without_running_code(tmp_path, suite2p_dir, monkeypatch):
    """stat.npy is a pickle inside a .npy: numpy arrays, scalars and dicts are read, any other
    global (here os.system) is refused with the file and field named, and nothing runs."""
    from pocoviz.recordings.readers._common import load_object_npy

    good = np.array([{"med": np.array([3, 4]), "ypix": np.arange(5), "npix": np.float64(12.5), "radius": np.int64(3)}], dtype=object)
    np.save(tmp_path / "good.npy", good, allow_pickle=True)
    out = load_object_npy(tmp_path / "good.npy")
    assert out[0]["npix"] == 12.5 and list(out[0]["med"]) == [3, 4]
    monkeypatch.chdir(tmp_path)
    root, _ = suite2p_dir
    np.save(root / "suite2p" / "plane0" / "stat.npy", np.array([_Evil()] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match="refused to load") as err:
        read_suite2p(root, load_positions=True)
    assert err.value.field == "stat.npy" and "stat.npy" in str(err.value)
    assert not (tmp_path / "pocoviz-pwned").exists()

"""The recording schema: validate, make_recording, as_recording, summarize, check_declared_size."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xarray as xr

from pocoviz.recordings.schema import (
    RecordingError,
    as_recording,
    check_declared_size,
    make_recording,
    summarize,
    validate,
)


def good(n_time: int = 12, n_unit: int = 4) -> xr.Dataset:
    act = np.arange(n_time * n_unit, dtype=np.float64).reshape(n_time, n_unit) / 10
    return make_recording(
        act,
        sampling_rate_hz=4.0,
        species="zebrafish",
        session="f1",
        region=["tectum", "tectum", "", "pallium"][:n_unit],
        label=["", "a", "", "b"][:n_unit],
        x=np.arange(n_unit) * 1.5,
        units="dF/F",
        source="mem",
    )


def _set(ds: xr.Dataset, **coords: Any) -> xr.Dataset:
    return ds.assign_coords(coords)


def _activity(values: Callable[[np.ndarray], None]) -> Callable[[xr.Dataset], xr.Dataset]:
    def mutate(ds: xr.Dataset) -> xr.Dataset:
        a = ds.activity.values.copy()
        values(a)
        return ds.copy(data={**{k: v.values for k, v in ds.data_vars.items()}, "activity": a})

    return mutate


def _attr(name: str, value: Any = None, *, drop: bool = False) -> Callable[[xr.Dataset], xr.Dataset]:
    def mutate(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.copy()
        if drop:
            del ds.attrs[name]
        else:
            ds.attrs[name] = value
        return ds

    return mutate


def _nan_unit(a: np.ndarray) -> None:
    a[:, 2] = np.nan


def _nan_frame(a: np.ndarray) -> None:
    a[5, :] = np.nan


def _inf(a: np.ndarray) -> None:
    a[3, 1] = -np.inf


VALIDATE_CASES = [
    pytest.param(lambda ds: ds.activity, "expected an xarray.Dataset, got DataArray", None, id="not-a-dataset"),
    pytest.param(
        lambda ds: ds.drop_vars("activity"), r"missing; the dataset has variables none", "activity", id="no-activity"
    ),
    pytest.param(
        lambda ds: ds.transpose("unit", "time"),
        r"dims must be \('time', 'unit'\), got \('unit', 'time'\)",
        "activity",
        id="unit-by-time",
    ),
    pytest.param(
        lambda ds: ds.assign(activity=ds.activity.astype(np.float64)),
        "dtype must be float32, got float64",
        "activity",
        id="float64",
    ),
    pytest.param(lambda ds: ds.isel(time=[0]), "needs at least 2 frames, got 1", "time", id="one-frame"),
    pytest.param(lambda ds: ds.isel(unit=[]), "has no units", "unit", id="no-units"),
    pytest.param(
        lambda ds: ds.assign(activity=ds.activity.assign_attrs(units="volts")),
        r"must be one of .*got 'volts'",
        "activity.attrs['units']",
        id="bad-units",
    ),
    pytest.param(
        lambda ds: _set(ds, time=np.r_[ds.time.values[:-1], np.nan]),
        "non-finite value at frame 11",
        "time",
        id="nan-time",
    ),
    pytest.param(
        lambda ds: _set(ds, time=ds.time.values[::-1].copy()),
        "must be strictly increasing; frame 1 ",
        "time",
        id="decreasing-time",
    ),
    pytest.param(
        lambda ds: _set(ds, time=np.zeros(12)),
        r"frame 1 \(0\.0\) is not after frame 0 \(0\.0\)",
        "time",
        id="repeated-time",
    ),
    pytest.param(
        lambda ds: _set(ds, time=np.array([str(i) for i in range(12)])),
        "must be numeric seconds",
        "time",
        id="string-time",
    ),
    pytest.param(
        lambda ds: _set(ds, unit=np.arange(4) + 0.5), "must be integer ids, got dtype float64", "unit", id="float-unit"
    ),
    pytest.param(
        lambda ds: _set(ds, unit=[3, 1, 3, 1]), r"ids must be unique; \[1, 3\] repeat", "unit", id="duplicate-unit"
    ),
    pytest.param(
        lambda ds: ds.drop_vars("region"), r"coordinate missing \(use '' for unknown\)", "region", id="no-region"
    ),
    pytest.param(
        lambda ds: _set(ds, label=("unit", np.arange(4))),
        "must hold strings, got dtype int64",
        "label",
        id="numeric-label",
    ),
    pytest.param(lambda ds: _set(ds, x=("unit", [0.0, np.inf, 1, 2])), "holds infinite values", "x", id="inf-position"),
    pytest.param(
        lambda ds: _set(ds, y=("unit", ["a", "b", "c", "d"])), "must be numeric µm", "y", id="string-position"
    ),
    pytest.param(_attr("species", drop=True), "missing", "attrs['species']", id="no-species"),
    pytest.param(_attr("session", "  "), "must not be empty", "attrs['session']", id="blank-session"),
    pytest.param(_attr("citation", 3), "must be a string, got int", "attrs['citation']", id="numeric-citation"),
    pytest.param(
        _attr("sampling_rate_hz", "fast"), "must be a number, got 'fast'", "attrs['sampling_rate_hz']", id="rate-text"
    ),
    pytest.param(
        _attr("sampling_rate_hz", 0.0),
        "must be a positive finite number, got 0.0",
        "attrs['sampling_rate_hz']",
        id="rate-zero",
    ),
    pytest.param(
        _attr("sampling_rate_hz", -2),
        "must be a positive finite number, got -2",
        "attrs['sampling_rate_hz']",
        id="rate-negative",
    ),
    pytest.param(_activity(_inf), "infinite value at frame 3, unit index 1", "activity", id="inf-activity"),
    pytest.param(
        _activity(_nan_unit),
        r"1 unit\(s\) are all NaN \(unit ids \[2\]\); drop them first",
        "activity",
        id="all-nan-unit",
    ),
    pytest.param(_activity(_nan_frame), r"1 frame\(s\) are all NaN \(first: frame 5\)", "activity", id="all-nan-frame"),
]


@pytest.mark.parametrize(("mutate", "match", "field"), VALIDATE_CASES)
def test_validate_refuses(mutate, match, field):
    bad = mutate(good())
    with pytest.raises(RecordingError, match=match) as info:
        validate(bad, path="rec.nc")
    assert info.value.field == field
    assert info.value.path == "rec.nc" and str(info.value).startswith("rec.nc: ")


def test_validate_names_source_attr_when_no_path():
    ds = good().drop_vars("region")
    with pytest.raises(RecordingError, match=r"^mem: field 'region'"):
        validate(ds)


def _partial_nan(a: np.ndarray) -> None:
    a[2, 1] = np.nan
    a[7, 0] = np.nan


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda ds: ds, id="as-built"),
        pytest.param(_activity(_partial_nan), id="partial-nan"),
        pytest.param(lambda ds: _set(ds, unit=np.array([10, 2, 7, 3], dtype=np.uint16)), id="unsigned-unit-ids"),
        pytest.param(
            lambda ds: _set(ds, time=np.array([0, 1, 5, 6, 8, 9, 10, 11, 12, 13, 14, 20])), id="irregular-integer-time"
        ),
        pytest.param(lambda ds: _set(ds, z=("unit", [np.nan, 1, 2, 3])), id="nan-position"),
        pytest.param(
            lambda ds: _set(ds, region=("unit", np.array(["a", "b", "c", "d"], dtype=object))), id="object-strings"
        ),
        pytest.param(_attr("sampling_rate_hz", "2.5"), id="rate-as-numeric-string"),
    ],
)
def test_validate_accepts(mutate):
    ds = mutate(good())
    assert validate(ds) is ds


# --- make_recording ---------------------------------------------------------------------------------


def test_make_recording_defaults():
    ds = make_recording(np.ones((5, 3), dtype=np.float64), sampling_rate_hz=2.0, species="s", session="t")
    assert ds.activity.dtype == np.float32 and ds.activity.dims == ("time", "unit")
    assert ds.time.values.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and ds.time.attrs["units"] == "s"
    assert ds.unit.values.tolist() == [0, 1, 2] and ds.unit.dtype == np.int64
    assert ds.region.values.tolist() == ["", "", ""] and ds.label.values.tolist() == ["", "", ""]
    assert ds.activity.attrs["units"] == "dF/F"
    assert ds.attrs == {"species": "s", "session": "t", "sampling_rate_hz": 2.0, "source": "", "citation": ""}
    assert not any(c in ds.coords for c in ("x", "y", "z"))


def test_make_recording_full():
    ds = make_recording(
        np.zeros((4, 2), dtype=np.int16) + np.arange(4)[:, None],
        sampling_rate_hz=10.0,
        time=[0.0, 0.1, 0.25, 0.3],
        species="mouse",
        session="m1",
        unit=[5, 9],
        region=np.array([b"V1", None], dtype=object),
        label=[np.nan, "n2"],
        x=[1, 2],
        y=[3.5, 4],
        z=[0, 0],
        units="z-score",
        source="f.mat",
        citation="doi",
        unit_coords={"depth": [10.0, 20.0], "weights": np.ones((2, 3))},
        time_vars={"speed": np.arange(4.0)},
        attrs={"extra": "yes"},
    )
    assert ds.activity.values[:, 0].tolist() == [0, 1, 2, 3] and ds.activity.dtype == np.float32
    assert ds.time.values.tolist() == [0.0, 0.1, 0.25, 0.3]
    assert ds.unit.values.tolist() == [5, 9]
    assert ds.region.values.tolist() == ["V1", ""] and ds.label.values.tolist() == ["", "n2"]
    assert ds.x.dtype == np.float64 and ds.x.attrs["units"] == "um" and ds.y.values.tolist() == [3.5, 4.0]
    assert ds.depth.dims == ("unit",) and ds.weights.dims == ("unit", "weights_dim1")
    assert ds.speed.dims == ("time",) and ds.speed.values.tolist() == [0, 1, 2, 3]
    assert ds.attrs["extra"] == "yes" and ds.attrs["citation"] == "doi" and ds.attrs["source"] == "f.mat"


MAKE_CASES = [
    pytest.param(dict(activity=np.ones(5)), r"must be 2-D \(time, unit\), got shape \(5,\)", "activity", id="1-d"),
    pytest.param(
        dict(activity=np.array([["a", "b"], ["c", "d"]])), "must be numeric, got dtype <U1", "activity", id="strings"
    ),
    pytest.param(dict(sampling_rate_hz=0), "must be positive, got 0", "sampling_rate_hz", id="zero-rate"),
    pytest.param(dict(sampling_rate_hz="x"), "must be a number, got 'x'", "sampling_rate_hz", id="text-rate"),
    pytest.param(dict(time=np.arange(4.0)), r"one value per frame \(6\), got shape \(4,\)", "time", id="short-time"),
    pytest.param(dict(region=["a"]), r"one value per unit \(3\), got shape \(1,\)", "region", id="short-region"),
    pytest.param(dict(x=[1, 2, 3, 4]), r"one value per unit \(3\), got shape \(4,\)", "x", id="long-x"),
    pytest.param(dict(unit_coords={"depth": [1.0]}), r"one value per unit \(3\)", "depth", id="short-unit-coord"),
    pytest.param(dict(time_vars={"speed": np.ones(2)}), r"one value per frame \(6\)", "speed", id="short-time-var"),
    pytest.param(dict(units="mV"), "must be one of", "activity.attrs['units']", id="bad-units"),
    pytest.param(dict(unit=[1, 1, 2]), r"ids must be unique; \[1\] repeat", "unit", id="duplicate-units"),
    pytest.param(dict(species=""), "must not be empty", "attrs['species']", id="empty-species"),
]


@pytest.mark.parametrize(("override", "match", "field"), MAKE_CASES)
def test_make_recording_refuses(override, match, field):
    kwargs: dict[str, Any] = dict(
        activity=np.ones((6, 3)), sampling_rate_hz=3.0, species="s", session="t", path="in.npz"
    )
    kwargs.update(override)
    with pytest.raises(RecordingError, match=match) as info:
        make_recording(kwargs.pop("activity"), **kwargs)
    assert info.value.field == field and info.value.path == "in.npz"


# --- as_recording -----------------------------------------------------------------------------------


def test_as_recording_normalises_without_touching_input():
    act = np.random.default_rng(0).normal(size=(3, 10))
    raw = xr.Dataset(
        {"activity": (("unit", "time"), act)},
        coords={"time": np.arange(10) * 0.5, "label": ("unit", np.array([b"a", b"", b"c"]))},
        attrs={"species": "fish", "session": "s", "sampling_rate_hz": 2.0},
    )
    ds = as_recording(raw, path="plain.nc")
    assert ds.activity.dims == ("time", "unit") and ds.activity.dtype == np.float32
    np.testing.assert_allclose(ds.activity.values, act.T.astype(np.float32))
    assert ds.activity.attrs["units"] == "a.u."
    assert ds.unit.values.tolist() == [0, 1, 2]
    assert ds.region.values.tolist() == ["", "", ""] and ds.label.values.tolist() == ["a", "", "c"]
    assert ds.attrs["source"] == "plain.nc" and ds.attrs["citation"] == ""
    # the input is unchanged
    assert raw.activity.dims == ("unit", "time") and raw.activity.dtype == np.float64
    assert "source" not in raw.attrs and "region" not in raw.coords


@pytest.mark.parametrize(
    ("raw", "match", "field"),
    [
        pytest.param(
            xr.Dataset({"traces": (("time", "unit"), np.ones((3, 2)))}), "missing", "activity", id="no-activity"
        ),
        pytest.param(
            xr.Dataset(
                {"activity": (("t", "n"), np.ones((3, 2)))},
                attrs={"species": "s", "session": "s", "sampling_rate_hz": 1},
            ),
            r"dims must be \('time', 'unit'\)",
            "activity",
            id="foreign-dims",
        ),
        pytest.param(
            xr.Dataset(
                {"activity": (("time", "unit"), np.ones((3, 2)))},
                coords={"time": [0.0, 1, 2]},
                attrs={"session": "s", "sampling_rate_hz": 1},
            ),
            "missing",
            "attrs['species']",
            id="no-species",
        ),
    ],
)
def test_as_recording_refuses(raw, match, field):
    with pytest.raises(RecordingError, match=match) as info:
        as_recording(raw, path="x.nc")
    assert info.value.field == field and info.value.path == "x.nc"


# --- summarize, check_declared_size -----------------------------------------------------------------


def test_summarize():
    ds = _activity(_partial_nan)(good()).assign_attrs(time_offset_s=12.5, format="npz", nested={"a": 1})
    out = summarize(ds)
    assert out == {
        "species": "zebrafish",
        "session": "f1",
        "n_time": 12,
        "n_unit": 4,
        "sampling_rate_hz": 4.0,
        "duration_s": 2.75,
        "activity_units": "dF/F",
        "regions": {"(none)": 1, "pallium": 1, "tectum": 2},
        "n_labelled": 2,
        "has_positions": ["x"],
        "nan_fraction": pytest.approx(2 / 48),
        "source": "mem",
        "citation": "",
        "attrs": {"time_offset_s": 12.5, "format": "npz"},
    }
    json.dumps(out)


@pytest.mark.parametrize(
    ("shape", "itemsize", "limit", "match"),
    [
        pytest.param((10, 10), 8, "799", r"declared shape \(10, 10\) needs", id="just-over"),
        pytest.param((3, -1), 4, "100", r"negative dimension in declared shape \(3, -1\)", id="negative"),
        pytest.param(
            (10**9, 10**6), 4, None, r"needs 3725290\.3 GiB, more than the 8\.0 GiB limit", id="huge-default-limit"
        ),
    ],
)
def test_check_declared_size_refuses(monkeypatch, shape, itemsize, limit, match):
    if limit is None:
        monkeypatch.delenv("POCOVIZ_MAX_BYTES", raising=False)
    else:
        monkeypatch.setenv("POCOVIZ_MAX_BYTES", limit)
    with pytest.raises(RecordingError, match=match) as info:
        check_declared_size(shape, itemsize, path="a.npy", field="F.npy")
    assert info.value.field == "F.npy" and info.value.path == "a.npy"


def test_check_declared_size_accepts_at_limit(monkeypatch):
    monkeypatch.setenv("POCOVIZ_MAX_BYTES", "800")
    assert check_declared_size((10, 10), 8, path="a.npy") is None
    assert check_declared_size((0, 10**12), 8, path="a.npy") is None


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        (["AVAL", "URADL", "", "URADL", ""], {"URADL": [1, 3]}),
        (["a", "b", "a", "b", "a"], {"a": [0, 2, 4], "b": [1, 3]}),
        (["", "", "x"], {}),  # unlabelled units are never duplicates
        ([None, np.nan, "x"], {}),
    ],
)
def test_duplicate_labels(labels, want):
    from pocoviz.recordings import duplicate_labels, label_duplicate_mask

    assert duplicate_labels(labels) == want
    mask = label_duplicate_mask(labels)
    assert mask.dtype == bool and mask.tolist() == [any(i in v for v in want.values()) for i in range(len(labels))]


def test_duplicated_labels_are_kept_and_flagged(tmp_path):
    """Two units with one label (a NeuroPAL table naming URADL twice) are no error: both keep the
    label, the ``label_duplicate`` coord marks them, ``attrs["duplicate_labels"]`` lists the label,
    and both survive a round trip; a recording without duplicates gets neither."""
    import warnings

    from pocoviz.recordings import open_recording, save_recording

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = make_recording(np.zeros((5, 4)), sampling_rate_hz=1.0, species="worm", session="w", label=["URADL", "AVAL", "URADL", ""])
        back = open_recording(save_recording(ds, tmp_path / "w.nc"))
    for rec in (ds, back):
        assert rec.label.values.tolist() == ["URADL", "AVAL", "URADL", ""]
        assert rec.label_duplicate.values.tolist() == [True, False, True, False]
        assert rec.attrs["duplicate_labels"] == "URADL"
    assert summarize(ds)["attrs"]["duplicate_labels"] == "URADL"  # shown with the session metadata
    plain = good()
    assert "label_duplicate" not in plain.coords and "duplicate_labels" not in plain.attrs
    # as_recording recomputes the flags from the labels (stale flags are dropped)
    fixed = as_recording(ds.assign_coords(label=("unit", np.array(["URADL", "AVAL", "URADR", ""]))))
    assert "label_duplicate" not in fixed.coords and "duplicate_labels" not in fixed.attrs
    assert "label_duplicate" in ds.coords  # the input is untouched

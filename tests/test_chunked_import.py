"""Chunked import (write_chunked, `pocoviz import SRC DEST.zarr`): slab by slab within a memory
cap, units grouped by region with their ids, atomic, refusals with clear errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import xarray as xr

from pocoviz.cli import main
from pocoviz.recordings import RecordingError, make_recording, save_recording, validate
from pocoviz.recordings.chunked import MIN_IMPORT_CAP, parse_size, write_chunked
from pocoviz.recordings.pyramid import open_level, pyramid_info, reference_pyramid


def _recording(n_time, n_unit, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_time, n_unit)).astype(np.float32)
    a[rng.random(a.shape) < 0.001] = np.nan
    region = rng.choice(["tectum", "cerebellum", "", "hindbrain"], n_unit)
    ds = make_recording(
        a, sampling_rate_hz=2.5, species="zebrafish", session="fish1", region=region,
        unit=np.arange(n_unit)[::-1] * 7 + 3, x=rng.random(n_unit) * 400, label=np.where(np.arange(n_unit) == 5, "Mauthner", ""),
        time_vars={"swim": rng.random(n_time)}, source="test.nc",
    )
    return ds


@pytest.fixture(scope="module")
def big_nc(tmp_path_factory):
    """A netCDF recording larger than the memory cap used below (3000 x 3001 float32: 36 MB)."""
    ds = _recording(3000, 3001)
    path = tmp_path_factory.mktemp("src") / "fish1.nc"
    save_recording(ds, path, compress=False)
    return ds, path


def test_import_larger_than_the_cap_stays_within_it_and_keeps_every_value(big_nc, tmp_path):
    ds, src = big_nc
    cap = MIN_IMPORT_CAP  # 32 MiB, below the 36 MB of activity
    assert ds["activity"].nbytes > cap
    dest = tmp_path / "fish1.zarr"
    tracemalloc.start()
    try:
        info = write_chunked(src, dest, memory_cap_bytes=cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"import of {ds['activity'].nbytes / 2**20:.1f} MiB within a {cap / 2**20:.0f} MiB cap: numpy peak {peak / 2**20:.1f} MiB, slab {info['slab']}")
    assert peak <= cap
    assert info["slab"][0] * info["slab"][1] * 4 < ds["activity"].nbytes
    order = np.argsort(ds["region"].values.astype(str), kind="stable")
    out = xr.open_zarr(dest)
    np.testing.assert_array_equal(out["activity"].values, ds["activity"].values[:, order])
    np.testing.assert_array_equal(out["unit"].values, ds["unit"].values[order])
    np.testing.assert_array_equal(out["region"].values.astype(str), ds["region"].values.astype(str)[order])
    np.testing.assert_allclose(out["x"].values, ds["x"].values[order], rtol=1e-6)
    assert out["label"].values[np.flatnonzero(ds["unit"].values[order] == ds["unit"].values[5])[0]] == "Mauthner"
    np.testing.assert_array_equal(out["swim"].values, ds["swim"].values)
    np.testing.assert_array_equal(out["time"].values, ds["time"].values)
    assert out.attrs["pocoviz_layout"] == "chunked-1" and out.attrs["unit_order"] == "region"
    assert out.attrs["species"] == "zebrafish" and out.attrs["sampling_rate_hz"] == 2.5
    assert out["activity"].encoding["chunks"] == (256, 4096)
    validate(out.load())
    ref = reference_pyramid(ds["activity"].values[:, order])
    assert pyramid_info(dest)["levels"] == len(ref) == 2
    for k, level in enumerate(ref, start=1):
        for kind in ("mean", "peak"):
            np.testing.assert_array_equal(open_level(dest, k, kind)[:], level[kind])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_in_memory_dataset_unsorted_and_no_pyramid(tmp_path):
    ds = _recording(300, 50)
    dest = tmp_path / "a.zarr"
    info = write_chunked(ds, dest, sort_by_region=False, pyramid=False, attrs={"session": "renamed"})
    out = xr.open_zarr(dest)
    np.testing.assert_array_equal(out["activity"].values, ds["activity"].values)
    np.testing.assert_array_equal(out["unit"].values, ds["unit"].values)
    assert "unit_order" not in out.attrs and out.attrs["session"] == "renamed" and info["session"] == "renamed"
    assert pyramid_info(dest) is None and info["pyramid_levels"] == 0


def test_refuses_to_overwrite_and_replaces_when_asked(tmp_path):
    dest = tmp_path / "a.zarr"
    write_chunked(_recording(100, 20, seed=1), dest, pyramid=False)
    with pytest.raises(RecordingError, match="exists") as err:
        write_chunked(_recording(100, 20, seed=2), dest)
    assert err.value.path == str(dest)
    write_chunked(_recording(100, 20, seed=2), dest, overwrite=True)
    got = xr.open_zarr(dest)["activity"].values
    want = _recording(100, 20, seed=2)
    order = np.argsort(want["region"].values.astype(str), kind="stable")
    np.testing.assert_array_equal(got, want["activity"].values[:, order])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_bad_input_names_file_and_field_and_leaves_nothing(tmp_path):
    ds = _recording(600, 30)
    bad = ds.copy(deep=True)
    bad["activity"].values[400, 7] = np.inf
    nc = tmp_path / "bad.nc"
    save_recording(ds, nc)  # valid file: write_chunked reads values slab by slab
    with pytest.raises(RecordingError) as err:
        write_chunked(bad, tmp_path / "bad.zarr")
    assert err.value.field == "activity" and "frame 400" in str(err.value)
    all_nan = ds.copy(deep=True)
    all_nan["activity"].values[:, 3] = np.nan
    with pytest.raises(RecordingError, match="all NaN") as err:
        write_chunked(all_nan, tmp_path / "nan.zarr")
    assert err.value.field == "activity"
    with pytest.raises(RecordingError, match="must end in .zarr"):
        write_chunked(nc, tmp_path / "x.nc")
    with pytest.raises(RecordingError, match="does not exist"):
        write_chunked(tmp_path / "missing.nc", tmp_path / "m.zarr")
    with pytest.raises(RecordingError, match="below the minimum") as err:
        write_chunked(nc, tmp_path / "c.zarr", memory_cap_bytes=2**20)
    assert err.value.field == "memory_cap"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nc"]


def test_parse_size():
    assert parse_size("1GB") == 2**30
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("512MB") == parse_size("512m") == 512 * 2**20
    assert parse_size(" 64 KiB ") == 64 * 2**10
    assert parse_size("1000") == 1000
    for bad in ("", "lots", "1XB", "-1GB", "0", "GB", "1 G B"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_cli_import_to_zarr_refusal_and_memory_cap(tmp_path, capsys):
    src = tmp_path / "a.nc"
    save_recording(_recording(400, 40), src)
    dest = tmp_path / "b.zarr"
    assert main(["import", str(src), str(dest), "--memory-cap", "64MB"]) == 0
    out = capsys.readouterr().out
    assert "40 units × 400 frames" in out and "chunked" in out
    assert xr.open_zarr(dest).sizes == {"time": 400, "unit": 40}
    assert main(["import", str(src), str(dest)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["import", str(src), str(dest), "--overwrite", "--no-pyramid", "--session", "s9"]) == 0
    assert xr.open_zarr(dest).attrs["session"] == "s9"
    for bad in ("lots", "-5GB", "1XB"):
        with pytest.raises(SystemExit) as exc:
            main(["import", str(src), str(tmp_path / "c.zarr"), f"--memory-cap={bad}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--memory-cap" in err and ("not a memory size" in err or "must be positive" in err)
    assert main(["import", str(src), str(tmp_path / "c.zarr"), "--memory-cap", "1MB"]) == 2
    assert "below the minimum" in capsys.readouterr().err
    assert main(["import", str(src), str(tmp_path / "c.txt")]) == 2
    assert ".nc (one file) or .zarr" in capsys.readouterr().err
    assert not (tmp_path / "c.zarr").exists()

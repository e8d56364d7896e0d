"""`pocoviz synth`: a region-structured whole-brain recording, deterministic for a seed whatever the
memory cap, with regions, positions, ids and the pyramid of the layout."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from pocoviz.cli import main
from pocoviz.recordings import RecordingError, validate
from pocoviz.recordings.chunked import MIN_MEMORY_CAP
from pocoviz.recordings.pyramid import n_levels, open_level, pyramid_info, reference_pyramid
from pocoviz.recordings.wholebrain import SEMI_AXES, bench_synth, region_table, write_wholebrain

U, T = 5000, 600  # two chunk columns, three chunk rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    small = write_wholebrain(d / "small_cap.zarr", units=U, frames=T, seed=3, memory_cap_bytes=MIN_MEMORY_CAP)
    large = write_wholebrain(d / "large_cap.zarr", units=U, frames=T, seed=3, memory_cap_bytes=2**30)
    other = write_wholebrain(d / "seed4.zarr", units=U, frames=T, seed=4, pyramid=False)
    return d, small, large, other


def _arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {name: g[name][:] for name in ("activity", "unit", "region", "label", "x", "y", "z", "time")}


def test_same_seed_same_values_whatever_the_memory_cap(stores):
    d, small, large, other = stores
    a, b = _arrays(d / "small_cap.zarr"), _arrays(d / "large_cap.zarr")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for k in range(1, small["pyramid_levels"] + 1):
        for kind in ("mean", "peak"):
            np.testing.assert_array_equal(open_level(d / "small_cap.zarr", k, kind)[:], open_level(d / "large_cap.zarr", k, kind)[:])
    c = _arrays(d / "seed4.zarr")
    assert not np.allclose(a["activity"], c["activity"])
    assert other["pyramid_levels"] == 0 and pyramid_info(d / "seed4.zarr") is None


def test_regions_positions_ids_labels_and_schema(stores):
    d, *_ = stores
    ds = xr.open_zarr(d / "small_cap.zarr").load()
    validate(ds)
    assert ds.sizes == {"time": T, "unit": U}
    assert ds.attrs["source"] == ds.attrs["citation"] == "synthetic, pocoviz synth, seed 3"
    assert ds.attrs["pocoviz_layout"] == "chunked-1" and ds.attrs["unit_order"] == "region"
    np.testing.assert_allclose(np.diff(ds["time"].values), 1.0)
    declared = sorted(r["name"] for r in region_table())
    region = ds["region"].values.astype(str)
    assert len(declared) == 60 and sorted(set(region)) == declared
    # stored grouped by region (stable sort by name): each region is one contiguous band
    assert list(region) == sorted(region)
    # ids: a permutation of 0..U-1, increasing within each region
    assert sorted(ds["unit"].values.tolist()) == list(range(U))
    for name in declared[:5]:
        ids = ds["unit"].values[region == name]
        assert np.all(np.diff(ids) > 0)
    pos = np.stack([ds[c].values for c in ("x", "y", "z")], axis=1)
    assert np.all(((pos - SEMI_AXES) / SEMI_AXES) ** 2 @ np.ones(3) <= 1.0 + 1e-4)
    centres = {r["name"]: r["centre"] for r in region_table()}
    for name in ("optic_tectum_L", "cerebellum_R", "habenula_L"):
        np.testing.assert_allclose(pos[region == name].mean(axis=0), centres[name], atol=25.0)
    labels = ds["label"].values.astype(str)
    assert sorted(labels[labels != ""]) == ["Mauthner_L", "Mauthner_R", "MiD2cm_L", "MiD2cm_R", "MiD3cm_L", "MiD3cm_R"]
    assert region[labels == "Mauthner_L"][0] == "rhombomere_4_L"
    act = ds["activity"].values
    assert np.isfinite(act).all() and act.dtype == np.float32
    assert 0.05 < act.std() < 5.0


def test_units_of_a_region_are_more_alike_than_units_of_different_regions(stores):
    d, *_ = stores
    ds = xr.open_zarr(d / "small_cap.zarr")
    act = ds["activity"].values[:, ::10]
    region = ds["region"].values.astype(str)[::10]
    c = np.corrcoef(act.T)
    same = region[:, None] == region[None, :]
    np.fill_diagonal(same, False)
    off = ~same
    np.fill_diagonal(off, False)
    within, across = c[same].mean(), c[off].mean()
    print(f"mean correlation within regions {within:.3f}, across {across:.3f}")
    assert within > across + 0.15


def test_pyramid_equals_the_reference(stores):
    d, small, *_ = stores
    act = zarr.open_group(str(d / "small_cap.zarr"), mode="r")["activity"][:]
    ref = reference_pyramid(act)
    assert small["pyramid_levels"] == len(ref) == n_levels((T, U)) == 2
    for k, level in enumerate(ref, start=1):
        for kind in ("mean", "peak"):
            np.testing.assert_array_equal(open_level(d / "small_cap.zarr", k, kind)[:], level[kind])


def test_refusals(tmp_path):
    with pytest.raises(RecordingError, match="below the minimum"):
        write_wholebrain(tmp_path / "a.zarr", units=10, frames=10, memory_cap_bytes=2**20)
    with pytest.raises(RecordingError, match="must end in .zarr"):
        write_wholebrain(tmp_path / "a.nc", units=10, frames=10)
    with pytest.raises(RecordingError, match="at least 1 unit and 2 frames"):
        write_wholebrain(tmp_path / "a.zarr", units=0, frames=10)
    write_wholebrain(tmp_path / "a.zarr", units=10, frames=10)
    with pytest.raises(RecordingError, match="exists"):
        write_wholebrain(tmp_path / "a.zarr", units=10, frames=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_cli_synth(tmp_path, capsys):
    dest = tmp_path / "wb.zarr"
    assert main(["synth", str(dest), "--units", "300", "--frames", "50", "--seed", "2", "--rate", "2", "--quiet"]) == 0
    assert "300 units × 50 frames (seed 2)" in capsys.readouterr().out
    ds = xr.open_zarr(dest)
    assert ds.attrs["sampling_rate_hz"] == 2.0 and ds.sizes == {"time": 50, "unit": 300}
    assert main(["synth", str(dest), "--units", "300", "--frames", "50", "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x.nc"), "--units", "3", "--frames", "5"]) == 2
    with pytest.raises(SystemExit):
        main(["synth", str(dest), "--memory-cap", "huge"])


def test_bench_synth_reports_time_memory_and_size(tmp_path):
    rep = bench_synth(tmp_path / "b.zarr", units=500, frames=40, seed=1)
    assert rep["returncode"] == 0, rep.get("error")
    assert rep["bytes_on_disk"] > 0 and rep["peak_rss_mb"] > 10 and rep["seconds"] > 0
    assert rep["activity_bytes"] == 500 * 40 * 4

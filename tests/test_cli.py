"""The ``pocoviz`` command, run in-process: import, info, make-assets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.cli import main
from pocoviz.recordings import detect_format, make_recording, open_recording, save_recording

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "demo_corpus.nc"


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_recording(a, b):
    np.testing.assert_array_equal(a["activity"].values, b["activity"].values)
    np.testing.assert_array_equal(a["label"].values.astype(str), b["label"].values.astype(str))
    np.testing.assert_array_equal(a["region"].values.astype(str), b["region"].values.astype(str))
    np.testing.assert_array_equal(a["unit"].values, b["unit"].values)
    np.testing.assert_allclose(a["time"].values, b["time"].values)
    assert a.attrs["species"] == b.attrs["species"] and a.attrs["session"] == b.attrs["session"]
    assert a.attrs["sampling_rate_hz"] == pytest.approx(b.attrs["sampling_rate_hz"])


@pytest.fixture(scope="module")
def small_src(tmp_path_factory) -> Path:
    """A small recording outside the tests' tmp_path (runs without the real recordings)."""
    path = tmp_path_factory.mktemp("src") / "small.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    return path


# -------------------------------------------------------------------------------------- import


def test_import_flavell_round_trips(flavell_files, tmp_path, capsys):
    src = flavell_files[0]
    dest = tmp_path / "worm.nc"
    assert main(["import", str(src), str(dest)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    orig, back = open_recording(src), open_recording(dest)
    assert out.strip() == f"wrote {dest}: {orig.sizes['unit']} units × {orig.sizes['time']} frames (C. elegans, {src.name[:-8]})"
    assert detect_format(dest) == "netcdf"
    _assert_same_recording(orig, back)
    assert (back["label"].values.astype(str) != "").sum() == (orig["label"].values.astype(str) != "").sum() > 0
    assert len(np.unique(back["region"].values)) > 2
    # the behaviour traces travel with the activity
    for name in ("velocity", "head_angle"):
        np.testing.assert_array_equal(orig[name].values, back[name].values)


def test_import_triplett_round_trips(triplett_file, tmp_path, capsys):
    dest = tmp_path / "fish.nc"
    assert main(["import", str(triplett_file), str(dest)]) == 0
    assert "114 units × 4245 frames (zebrafish, zf_20151104-f1)" in capsys.readouterr().out
    orig, back = open_recording(triplett_file), open_recording(dest)
    _assert_same_recording(orig, back)
    assert set(back["region"].values.astype(str)) == {"tectum"}
    np.testing.assert_allclose(np.diff(back["time"].values), 1.0)  # no rate in the file: frame index


def test_import_sampling_rate_gives_seconds(triplett_file, tmp_path):
    dest = tmp_path / "fish4hz.nc"
    assert main(["import", str(triplett_file), str(dest), "--sampling-rate", "4"]) == 0
    ds = open_recording(dest)
    assert ds.attrs["sampling_rate_hz"] == 4.0
    np.testing.assert_allclose(np.diff(ds["time"].values), 0.25)
    assert ds["time"].values[0] == 0.0
    assert ds["time"].values[-1] == pytest.approx((ds.sizes["time"] - 1) * 0.25)
    np.testing.assert_array_equal(ds["activity"].values, open_recording(triplett_file)["activity"].values)


def test_import_species_and_session_options(triplett_file, tmp_path, capsys):
    dest = tmp_path / "renamed.nc"
    assert main(["import", str(triplett_file), str(dest), "--species", "danio", "--session", "f1"]) == 0
    assert "(danio, f1)" in capsys.readouterr().out
    ds = open_recording(dest)
    assert (ds.attrs["species"], ds.attrs["session"]) == ("danio", "f1")


def test_import_refuses_to_overwrite_without_flag(small_src, tmp_path, capsys):
    dest = tmp_path / "fish.nc"
    dest.write_bytes(b"precious")
    assert main(["import", str(small_src), str(dest)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pocoviz: error: ") and "--overwrite" in err and str(dest) in err
    assert dest.read_bytes() == b"precious"
    assert _tree(tmp_path) == {"fish.nc": b"precious"}
    # with the flag it is replaced by the recording
    assert main(["import", str(small_src), str(dest), "--overwrite"]) == 0
    np.testing.assert_array_equal(open_recording(dest)["activity"].values, np.load(small_src))
    assert sorted(_tree(tmp_path)) == ["fish.nc"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["fish.h5", "fish.txt", "fish", "fish.nc.bak"])
def test_import_refuses_dest_not_ending_in_nc_or_zarr(small_src, tmp_path, capsys, name):
    assert main(["import", str(small_src), str(tmp_path / name)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "must end in .nc" in err and name in err
    assert _tree(tmp_path) == {}


def test_import_refuses_a_missing_destination_folder(small_src, tmp_path, capsys):
    dest = tmp_path / "no" / "such" / "fish.nc"
    assert main(["import", str(small_src), str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pocoviz: error: ") and "does not exist" in err and str(dest.parent) in err
    assert _tree(tmp_path) == {} and not (tmp_path / "no").exists()


def test_import_refuses_dest_equal_to_source(tmp_path, capsys):
    src = tmp_path / "rec.nc"
    save_recording(make_recording(np.ones((5, 2)), sampling_rate_hz=1, species="s", session="a"), src)
    before = src.read_bytes()
    assert main(["import", str(src), str(src), "--overwrite"]) == 2
    assert "is the source" in capsys.readouterr().err
    assert src.read_bytes() == before


def _write_text(p: Path) -> None:
    p.write_text("time,unit,value\n0,1,0.5\n")


def _write_random_h5(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _write_truncated_hdf5(p: Path) -> None:
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 8)


def _write_3d_npy(p: Path) -> None:
    np.save(p, np.zeros((2, 3, 4)))


@pytest.mark.parametrize(
    ("name", "write", "says"),
    [
        ("notes.txt", _write_text, "unknown format"),
        ("recording.csv", _write_text, "unknown format"),
        ("garbage.h5", _write_random_h5, "unknown format"),
        ("truncated.h5", _write_truncated_hdf5, "HDF5"),
        ("cube.npy", _write_3d_npy, "2-D"),
    ],
)
def test_import_malformed_source_fails_cleanly(tmp_path, capsys, name, write, says):
    src = tmp_path / name
    write(src)
    before = _tree(tmp_path)
    dest = tmp_path / "out.nc"
    assert main(["import", str(src), str(dest)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("pocoviz: error: ") and str(src) in err and says in err
    assert err.count("\n") == 1  # one line, no traceback
    assert _tree(tmp_path) == before  # nothing written, no temporary file left


def test_import_missing_source(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope.h5"), str(tmp_path / "out.nc")]) == 2
    assert "nope.h5" in capsys.readouterr().err
    assert _tree(tmp_path) == {}


# ---------------------------------------------------------------------------------------- info

DEMO_SESSIONS = {
    "zebrafish/fish0": 1500,
    "zebrafish/fish1": 1300,
    "mouse/mouse0": 650,
    "mouse/mouse1": 560,
    "mouse/mouse2": 600,
    "worm/worm0": 112,
    "worm/worm1": 120,
    "worm/worm2": 118,
    "worm/worm3": 110,
}


def test_info_prints_every_session(capsys):
    assert main(["info", str(SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"{SHIPPED}: 9 session(s)"
    for name, n_unit in DEMO_SESSIONS.items():
        assert any(line.startswith(f"  {name}: {n_unit} units × ") for line in lines), name
    assert "  zebrafish/fish0: 1500 units × 1500 frames @ 2 Hz (750 s, z-score), 0 labelled, positions: x,y,z" in lines
    assert sum(line.startswith("    regions: ") for line in lines) == 9
    assert "optic tectum (302)" in out and "V1 (257)" in out and "(none) (35)" in out


def test_info_takes_demo_as_train_and_evaluate_do(capsys):
    assert main(["info", "demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo: 9 session(s)") and "  zebrafish/fish0: 1500 units × 1500 frames @ 2 Hz (750 s" in out


def test_info_does_not_print_a_placeholder_rate_as_a_rate(tmp_path, capsys):
    """A NumPy file has no frame rate: the reader puts 1 Hz as a placeholder and time = frame index."""
    np.save(tmp_path / "norate.npy", np.zeros((50, 3), np.float32))
    assert main(["info", str(tmp_path / "norate.npy")]) == 0
    out = capsys.readouterr().out
    assert "50 frames (frame rate unknown: time is the frame index" in out and "Hz" not in out


def test_info_json(capsys):
    assert main(["info", "--json", str(SHIPPED)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(SHIPPED)
    sessions = report["sessions"]
    assert len(sessions) == 9
    assert list(sessions) == list(DEMO_SESSIONS)
    assert {s["species"] for s in sessions.values()} == {"zebrafish", "mouse", "worm"}
    species = [s["species"] for s in sessions.values()]
    assert (species.count("zebrafish"), species.count("mouse"), species.count("worm")) == (2, 3, 4)
    for name, s in sessions.items():
        assert s["n_unit"] == DEMO_SESSIONS[name]
        assert f"{s['species']}/{s['session']}" == name
        assert sum(s["regions"].values()) == s["n_unit"]
        assert s["nan_fraction"] == 0.0 and s["activity_units"] == "z-score"
    assert sessions["mouse/mouse0"]["sampling_rate_hz"] == 5.0
    assert set(sessions["mouse/mouse0"]["regions"]) == {"M2", "PPC", "RSP", "V1"}
    assert all(sessions[f"worm/worm{i}"]["n_labelled"] > 0 for i in range(4))


def test_info_on_a_recording_file(triplett_file, capsys):
    assert main(["info", "--json", str(triplett_file)]) == 0
    sessions = json.loads(capsys.readouterr().out)["sessions"]
    assert list(sessions) == ["zebrafish/zf_20151104-f1"]
    assert sessions["zebrafish/zf_20151104-f1"]["n_unit"] == 114


def test_info_missing_file(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.nc")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "none.nc" in err


# --------------------------------------------------------------------------------- make-assets


def _same_attrs(a: dict, b: dict) -> bool:
    """Attribute dicts equal, NaN equal to NaN (a ``_FillValue``), arrays by value."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, str) or isinstance(y, str):
            if x != y:
                return False
        elif not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=np.asarray(x).dtype.kind == "f"):
            return False
    return True


def _assert_same_corpus(written: Path, shipped: Path) -> None:
    """The two corpus files hold the same values, node by node, as stored (no decoding of the quantized ints).

    Exact: the node tree, every variable's name, dims, dtype and attributes (``scale_factor``,
    ``_FillValue`` and ``units`` included), every node's attributes, strings and integers.

    Quantized activity (int16 counts of 1e-3): each stored count within 1 of the shipped one, and at
    most 0.1 % of them off by 1. The generator's float32 values differ between CPUs (and BLAS/vector
    math kernels) by a few ulps (~5e-7 at |z| = 4); a count changes only when such a value sits within
    those ulps of a rounding boundary, a chance of ~8 ulp / 1e-3 < 0.5 %; seen: 78 (old generator)
    and 517 (now) of 8.6 M values between an AMD EPYC and an Intel Xeon. A real change of the
    generator moves most values by many counts.

    Float64 coordinates (time, positions): rtol 1e-12. They come from float64 NumPy (random draws
    through exp/log/sqrt/trig), whose SIMD and libm versions differ between CPUs by at most a few
    ulps (2e-16 each); 1e-12 keeps 1000x margin and still sees any real change.
    """
    a = xr.open_datatree(written, engine="h5netcdf", mask_and_scale=False)
    b = xr.open_datatree(shipped, engine="h5netcdf", mask_and_scale=False)
    try:
        assert sorted(a.groups) == sorted(b.groups)
        for path in b.groups:
            na, nb = a[path], b[path]
            where = path or "/"
            assert _same_attrs(na.attrs, nb.attrs), f"{where}: attrs {na.attrs} != {nb.attrs}"
            da, db = na.to_dataset(), nb.to_dataset()
            assert sorted(da.variables) == sorted(db.variables), where
            assert sorted(da.coords) == sorted(db.coords), where
            for v in db.variables:
                x, y = da[v], db[v]
                at = f"{where}:{v}"
                assert x.dims == y.dims and x.shape == y.shape and x.dtype == y.dtype, at
                assert _same_attrs(x.attrs, y.attrs), f"{at}: attrs {x.attrs} != {y.attrs}"
                xv, yv = x.values, y.values
                if "scale_factor" in y.attrs:  # quantized floats, stored as integers
                    assert y.dtype.kind == "i", at
                    diff = np.abs(xv.astype(np.int64) - yv.astype(np.int64))
                    off = int(np.count_nonzero(diff))
                    assert diff.max(initial=0) <= 1, f"{at}: a stored count differs by {diff.max()}"
                    assert off <= 1e-3 * diff.size, f"{at}: {off} of {diff.size} counts differ"
                elif y.dtype.kind == "f":
                    np.testing.assert_allclose(xv, yv, rtol=1e-12, atol=0, equal_nan=True, err_msg=at)
                else:  # strings, integers, booleans
                    np.testing.assert_array_equal(xv, yv, err_msg=at)
    finally:
        a.close()
        b.close()


def test_make_assets_reproduces_the_shipped_corpus(tmp_path, capsys):
    """Regenerates assets/demo_corpus.nc value by value (see :func:`_assert_same_corpus`; the bytes
    differ between CPUs), whatever torch's thread count (3 here stands in for a bigger machine: with
    more than two threads the generator's reductions used to change a few quantized values)."""
    out_dir = tmp_path / "a" / "b"  # created, parents too
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main(["make-assets", "--out", str(out_dir), "--corpus-only"]) == 0
        assert torch.get_num_threads() == 3  # put back
    finally:
        torch.set_num_threads(saved)
    written = out_dir / "demo_corpus.nc"
    assert f"wrote {written} (" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["demo_corpus.nc"]  # no temporary file left
    assert written.stat().st_size <= 20 * 2**20
    _assert_same_corpus(written, SHIPPED)

"""Lazy, chunked opening of large recordings: Dask-backed activity for netCDF and Zarr (v2, v3, zip),
a bounded sample for validate/summarize (counted through a store wrapper), the bare-array reader
and its sidecar, the load=/POCOVIZ_LAZY_BYTES thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pocoviz.cli import main
from pocoviz.recordings import RecordingError, corpus_sessions, detect_format, open_corpus, open_recording, save_recording, summarize
from pocoviz.recordings.readers import xarray_io
from pocoviz.recordings.readers.zarr_array import read_zarr_array
from pocoviz.recordings.schema import activity_sample, is_lazy, sample_blocks, validate

pytestmark = pytest.mark.filterwarnings(
    "ignore::zarr.errors.UnstableSpecificationWarning",
    "ignore:Consolidated metadata:UserWarning",
    "ignore:Duplicate name:UserWarning",
)

T, U = 2000, 3000
STORAGE = (256, 512)
#: Dask chunks for (2000, 3000) in (256, 512) storage chunks: units grown to all 3000, then time x5.
DASK = (1280, 3000)


def _recording(seed: int = 0, shape: tuple[int, int] = (T, U)) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    n_time, n_unit = shape
    act = rng.standard_normal(shape).astype(np.float32)
    act[rng.random(shape) < 0.01] = np.nan
    regions = np.array(["tectum", "pallium", "cerebellum", ""])[rng.integers(0, 4, n_unit)]
    return xr.Dataset(
        {"activity": (("time", "unit"), act, {"units": "dF/F"})},
        coords={
            "time": ("time", np.arange(n_time) / 2.0, {"units": "s"}),
            "unit": ("unit", np.arange(n_unit, dtype=np.int64) + 100),
            "region": ("unit", regions),
            "label": ("unit", np.where(np.arange(n_unit) % 500 == 0, "n" + np.arange(n_unit).astype(str), "")),
            "x": ("unit", rng.uniform(0, 500, n_unit)),
        },
        attrs={"species": "zebrafish", "session": "big", "sampling_rate_hz": 2.0, "source": "test", "citation": ""},
    )


@pytest.fixture(scope="module")
def rec() -> xr.Dataset:
    return _recording()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, rec) -> dict[str, Path]:
    """The same recording as a Zarr v3 store (with a pyramid group), a v2 store, a zipped v3 store
    and a chunked netCDF4 file."""
    root = tmp_path_factory.mktemp("lazy")
    out = {}
    enc = {"activity": {"chunks": STORAGE}}
    out["v3"] = root / "rec3.zarr"
    rec.to_zarr(out["v3"], mode="w", zarr_format=3, encoding=enc, consolidated=False)
    g = zarr.open_group(out["v3"], mode="a")
    pyr = g.create_group("pyramid")
    pyr.attrs.update({"factor": 4, "levels": 1, "reductions": ["mean", "peak"], "shape": [T, U]})
    lvl = pyr.create_group("1")
    for name in ("mean", "peak"):
        lvl.create_array(name, data=np.ones((T // 4, U // 4), np.float32), chunks=(256, 512), dimension_names=("time", "unit"))
    out["v2"] = root / "rec2.zarr"
    rec.to_zarr(out["v2"], mode="w", zarr_format=2, encoding=enc, consolidated=True)
    out["zip"] = root / "rec.zarr.zip"
    store = zarr.storage.ZipStore(out["zip"], mode="w")
    rec.to_zarr(store, mode="w", zarr_format=3, encoding=enc, consolidated=False)
    store.close()
    out["nc"] = root / "rec.nc"
    rec.to_netcdf(out["nc"], engine="h5netcdf", encoding={"activity": {"chunksizes": STORAGE}})
    return out


class CountingStore(zarr.storage.WrapperStore):
    """Counts every ``get`` by key."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)


def _chunk_reads(keys: list[str], prefix: str) -> list[tuple[int, int]]:
    """Chunk indices of ``get`` calls under ``prefix`` (metadata files excluded), v2 and v3 key styles."""
    out = []
    for k in keys:
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if rest.rsplit("/", 1)[-1] in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
            continue
        rest = rest[2:] if rest.startswith("c/") else rest
        out.append(tuple(int(i) for i in rest.replace(".", "/").split("/")))
    return out


@pytest.fixture
def counting(monkeypatch):
    """Every Zarr store the readers open goes through one :class:`CountingStore`; the remembered
    samples of earlier opens are forgotten."""
    from pocoviz.recordings import schema

    monkeypatch.setattr(schema, "_SAMPLE_CACHE", {})
    seen: list[CountingStore] = []
    real = xarray_io.zarr_target

    def target(path):
        inner, close = real(path)
        if isinstance(inner, str):
            inner = zarr.storage.LocalStore(inner, read_only=True)
        wrapped = CountingStore(inner)
        seen.append(wrapped)
        return wrapped, close

    monkeypatch.setattr(xarray_io, "zarr_target", target)

    def keys() -> list[str]:
        return [k for s in seen for k in s.keys]

    return keys


def _expected_sample_chunks(n_time: int, n_unit: int, dask_time: int) -> set[tuple[int, int]]:
    chunks = tuple([dask_time] * (n_time // dask_time) + ([n_time % dask_time] if n_time % dask_time else []))
    rows = {a // STORAGE[0] for a, _ in sample_blocks(chunks)}
    return {(r, j) for r in rows for j in range(-(-n_unit // STORAGE[1]))}


# --------------------------------------------------------------------------------- lazy == eager


@pytest.mark.parametrize("kind", ["v3", "v2", "zip", "nc"])
def test_lazy_open_equals_eager(stores, rec, kind):
    lazy = open_recording(stores[kind], load=False)
    eager = open_recording(stores[kind], load=True)
    assert is_lazy(lazy) and not is_lazy(eager)
    assert lazy.activity.dtype == np.float32 and lazy.activity.dims == ("time", "unit")
    assert lazy.activity.data.chunksize == DASK  # a few storage chunks per Dask chunk
    np.testing.assert_array_equal(lazy.activity.values, rec.activity.values)
    np.testing.assert_array_equal(eager.activity.values, rec.activity.values)
    for name in ("time", "unit", "region", "label", "x"):
        assert not is_lazy(lazy[name]), name  # coordinates are always loaded
        np.testing.assert_array_equal(lazy[name].values, eager[name].values)
    assert lazy.attrs == eager.attrs  # nothing about laziness in attrs (save_recording would write it)
    assert lazy.encoding["source"] == eager.encoding["source"] == str(stores[kind])
    lazy.close()


def test_lazy_recording_saves_like_the_eager_one(stores, tmp_path):
    lazy = open_recording(stores["v3"], load=False)
    save_recording(lazy, tmp_path / "from_lazy.nc")
    save_recording(open_recording(stores["v3"], load=True), tmp_path / "from_eager.nc")
    a, b = open_recording(tmp_path / "from_lazy.nc"), open_recording(tmp_path / "from_eager.nc")
    assert a.attrs == b.attrs
    np.testing.assert_array_equal(a.activity.values, b.activity.values)


def test_transposed_netcdf_stays_lazy(tmp_path, rec):
    small = rec.isel(time=slice(0, 600), unit=slice(0, 700))
    small.transpose("unit", "time").astype({"activity": np.float64}).to_netcdf(
        tmp_path / "ut.nc", engine="h5netcdf", encoding={"activity": {"chunksizes": (512, 256)}}
    )
    ds = open_recording(tmp_path / "ut.nc", load=False)
    assert is_lazy(ds) and ds.activity.dims == ("time", "unit") and ds.activity.dtype == np.float32
    np.testing.assert_array_equal(ds.activity.values, small.activity.values)


def test_netcdf3_opens_lazily(tmp_path, rec):
    small = rec.isel(time=slice(0, 300), unit=slice(0, 200))
    small.to_netcdf(tmp_path / "classic.nc", engine="scipy")
    ds = open_recording(tmp_path / "classic.nc", load=False)
    assert is_lazy(ds)
    np.testing.assert_array_equal(ds.activity.values, small.activity.values)


# ------------------------------------------------------------------------------ load= thresholds


@pytest.mark.parametrize(
    ("env", "load", "lazy"),
    [
        (None, None, False),  # 24 MB is under the 256 MiB default: today's in-memory path
        ("1000000", None, True),  # over a 1 MB threshold: lazy
        (str(T * U * 4), None, False),  # the threshold is inclusive
        (str(T * U * 4 - 1), None, True),
        ("1000000", True, False),  # load=True forces memory
        (None, False, True),  # load=False forces lazy
    ],
)
@pytest.mark.parametrize("kind", ["v3", "nc"])
def test_load_threshold(stores, monkeypatch, env, load, lazy, kind):
    if env is None:
        monkeypatch.delenv("POCOVIZ_LAZY_BYTES", raising=False)
    else:
        monkeypatch.setenv("POCOVIZ_LAZY_BYTES", env)
    assert is_lazy(open_recording(stores[kind], load=load)) is lazy
    sessions = corpus_sessions(open_corpus(stores[kind], load=load))
    assert [is_lazy(ds) for ds in sessions.values()] == [lazy]


def test_other_formats_stay_eager(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((50, 3), np.float32))
    assert not is_lazy(open_recording(tmp_path / "a.npy", load=False))


# ----------------------------------------------------------------------- reads: only the sample


@pytest.mark.parametrize("kind", ["v3", "v2"])
def test_open_validate_summarize_read_only_the_sample(stores, counting, kind):
    ds = open_recording(stores[kind], load=False)
    after_open = _chunk_reads(counting(), "activity/")
    validate(ds)
    summary = summarize(ds)
    reads = _chunk_reads(counting(), "activity/")
    expected = _expected_sample_chunks(T, U, DASK[0])
    assert sorted(after_open) == sorted(expected)  # the sample, each chunk once, while opening
    assert reads == after_open  # validate and summarize reuse it: nothing more read
    assert len(expected) == 12 and len(reads) < (-(-T // 256)) * (-(-U // 512))
    assert summary["activity_checked"] == "sample of 512 of 2000 frames"
    assert summary["activity_sample_frames"] == [[0, 256], [1280, 1536]]


def test_sample_nan_fraction_matches_numpy(stores, rec):
    ds = open_recording(stores["v3"], load=False)
    frames = np.r_[0:256, 1280:1536]
    expected = float(np.isnan(rec.activity.values[frames]).mean())
    assert summarize(ds)["nan_fraction"] == pytest.approx(expected)
    assert summarize(open_recording(stores["v3"], load=True))["nan_fraction"] == pytest.approx(
        float(np.isnan(rec.activity.values).mean())
    )


def test_open_corpus_skips_the_pyramid(stores, counting):
    tree = open_corpus(stores["v3"], load=False)
    sessions = corpus_sessions(tree)
    assert list(sessions) == ["zebrafish/big"] and is_lazy(sessions["zebrafish/big"])
    keys = counting()
    assert _chunk_reads(keys, "pyramid/") == []
    assert sorted(_chunk_reads(keys, "activity/")) == sorted(_expected_sample_chunks(T, U, DASK[0]))


def test_netcdf_reads_only_the_sample(stores, monkeypatch):
    from xarray.backends import h5netcdf_

    from pocoviz.recordings import schema

    monkeypatch.setattr(schema, "_SAMPLE_CACHE", {})

    frames: list[range] = []
    real = h5netcdf_.H5NetCDFArrayWrapper._getitem

    def getitem(self, key):
        if self.variable_name == "activity":
            k = key[0]
            frames.append(range(*k.indices(T)) if isinstance(k, slice) else range(int(k), int(k) + 1))
        return real(self, key)

    monkeypatch.setattr(h5netcdf_.H5NetCDFArrayWrapper, "_getitem", getitem)
    ds = open_recording(stores["nc"], load=False)
    summarize(ds)
    read = sorted({f for r in frames for f in r})
    assert read == list(range(0, 256)) + list(range(1280, 1536))


def test_sample_blocks_first_middle_last():
    assert sample_blocks((256,) * 30 + (199,)) == [(0, 256), (3840, 4096), (7680, 7879)]
    assert sample_blocks((100, 100)) == [(0, 100), (100, 200)]
    assert sample_blocks((5000,)) == [(0, 256)]


# -------------------------------------------------------------------------- validate on a sample


def _lazy(act: np.ndarray) -> xr.Dataset:
    ds = _recording(shape=act.shape)
    ds["activity"] = (("time", "unit"), act, {"units": "dF/F"})
    return ds.chunk({"time": 100, "unit": 50})


def test_lazy_validate_finds_inf_and_empty_frames_in_the_sample():
    act = np.zeros((400, 120), np.float32)
    act[210, 7] = np.inf  # in the middle time chunk (200-300)
    with pytest.raises(RecordingError, match="infinite value at frame 210, unit index 7"):
        validate(_lazy(act))
    act = np.zeros((400, 120), np.float32)
    act[305] = np.nan  # the last chunk: a frame that is all NaN
    with pytest.raises(RecordingError, match=r"1 frame\(s\) are all NaN \(first: frame 305; checked on a sample of 300 of 400"):
        validate(_lazy(act))


def test_lazy_validate_does_not_read_beyond_the_sample():
    """An infinite value outside the sample is not seen (documented), and a unit that is NaN
    only in the sample is not an error, as it may have values elsewhere."""
    act = np.zeros((400, 120), np.float32)
    act[150, 3] = np.inf  # chunk 1 is not sampled (chunks 0, 2, 3 are)
    act[:100, 9] = np.nan
    act[200:, 9] = np.nan
    ds = _lazy(act)
    assert validate(ds) is ds
    sample = activity_sample(ds["activity"])
    assert sample["sample_all_nan_units"] == [9] and sample["n_frames"] == 300
    with pytest.raises(RecordingError, match="infinite value at frame 150, unit index 3"):
        validate(ds.load())  # in memory: every value is checked


# --------------------------------------------------------------------------------- bare arrays


def _bare(path: Path, data: np.ndarray, zarr_format: int = 3) -> Path:
    zarr.create_array(str(path), data=data, chunks=(64, 32), zarr_format=zarr_format)
    return path


@pytest.fixture(scope="module")
def traces() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((300, 70)).astype(np.float32)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_bare_array_opens_with_defaults(tmp_path, traces, zarr_format):
    path = _bare(tmp_path / "traces.zarr", traces, zarr_format)
    assert detect_format(path) == "zarr-array"
    ds = open_recording(path)
    np.testing.assert_array_equal(ds.activity.values, traces)
    assert ds.attrs["time_is_frame_index"] == 1 and ds.attrs["sampling_rate_hz"] == 1.0
    np.testing.assert_array_equal(ds.time.values, np.arange(300.0))
    assert ds.attrs["species"] == "unknown" and ds.attrs["session"] == "traces"
    assert set(ds.region.values) == {""} and "x" not in ds.coords and ds.activity.attrs["units"] == "a.u."
    lazy = open_recording(path, load=False)
    assert is_lazy(lazy) and lazy.activity.data.chunksize == (300, 70)
    np.testing.assert_array_equal(lazy.activity.values, traces)


def _sidecar(n: int = 70) -> dict:
    rng = np.random.default_rng(2)
    return {
        "sampling_rate_hz": 4.0,
        "species": "zebrafish",
        "session": "zapbench",
        "units": "dF/F",
        "citation": "ZAPBench",
        "regions": [f"r{i % 5}" for i in range(n)],
        "labels": [""] * n,
        "positions": {"x": rng.uniform(0, 9, n).tolist(), "y": rng.uniform(0, 9, n).tolist(), "z": [1.5] * n},
    }


@pytest.mark.parametrize("where", ["inside", "beside"])
def test_bare_array_with_a_sidecar(tmp_path, traces, where):
    path = _bare(tmp_path / "traces.zarr", traces)
    meta = _sidecar()
    side = path / "pocoviz.json" if where == "inside" else tmp_path / "traces.zarr.pocoviz.json"
    side.write_text(json.dumps(meta))
    ds = open_recording(path)
    assert ds.attrs["sampling_rate_hz"] == 4.0 and "time_is_frame_index" not in ds.attrs
    np.testing.assert_allclose(ds.time.values, np.arange(300) / 4.0)
    assert (ds.attrs["species"], ds.attrs["session"], ds.attrs["citation"]) == ("zebrafish", "zapbench", "ZAPBench")
    assert ds.region.values.tolist() == meta["regions"] and ds.activity.attrs["units"] == "dF/F"
    np.testing.assert_allclose(ds.x.values, meta["positions"]["x"])
    np.testing.assert_allclose(ds.z.values, 1.5)


def test_bare_array_transposed_with_npy_positions(tmp_path, traces):
    path = _bare(tmp_path / "ut.zarr", np.ascontiguousarray(traces.T))
    pos = np.random.default_rng(3).uniform(0, 100, (70, 3))
    np.save(tmp_path / "pos.npy", pos)
    (tmp_path / "ut.zarr.pocoviz.json").write_text(json.dumps({"transpose": True, "positions": "pos.npy"}))
    for load in (True, False):
        ds = open_recording(path, load=load, data_dir=tmp_path)
        assert is_lazy(ds) is (not load)
        np.testing.assert_array_equal(ds.activity.values, traces)
        np.testing.assert_allclose(np.stack([ds.x, ds.y, ds.z], axis=1), pos)


def test_bare_array_counts_reads(tmp_path, counting, monkeypatch):
    data = np.random.default_rng(4).standard_normal((1000, 300)).astype(np.float32)
    path = _bare(tmp_path / "big.zarr", data)
    monkeypatch.setattr(xarray_io, "DASK_CHUNK_BYTES", 64 * 32 * 4 * 2)  # Dask chunks of (64, 64): 16 time chunks
    ds = read_zarr_array(path, load=False)
    assert ds.activity.data.chunksize == (64, 64)
    summarize(ds)
    reads = _chunk_reads(counting(), "c/")
    assert sample_blocks(ds.activity.chunks[0]) == [(0, 64), (512, 576), (960, 1000)]
    assert sorted(reads) == [(r, j) for r in (0, 8, 15) for j in range(10)]  # 3 time rows of 10 chunks, once each
    np.testing.assert_array_equal(ds.activity.values, data)


def _write(tmp_path: Path, meta, raw: str | None = None) -> Path:
    path = _bare(tmp_path / "traces.zarr", np.zeros((20, 4), np.float32))
    (path / "pocoviz.json").write_text(raw if raw is not None else json.dumps(meta))
    return path


BAD_SIDECARS = [
    ({"sampling_rate": 2.0}, "sampling_rate", "unknown key"),
    ({"regions": ["a", "b"]}, "regions", r"one value per unit \(4\), got 2"),
    ({"regions": ["a", "b", 3, "d"]}, "regions", "must hold strings; item 2"),
    ({"labels": "AVAL"}, "labels", "must be a list"),
    ({"positions": {"x": [0, 1, 2, float("nan")]}}, "positions.x", "finite"),
    ({"positions": {"x": [0, 1, 2]}}, "positions.x", r"one value per unit \(4\), got 3"),
    ({"positions": {"x": [0, 1, 2, "3"]}}, "positions.x", "must hold numbers"),
    ({"positions": {"w": [0, 1, 2, 3]}}, "positions", "unknown key"),
    ({"positions": 3}, "positions", "must be"),
    ({"positions": "missing.npy"}, "positions", "not found"),
    ({"sampling_rate_hz": -2}, "sampling_rate_hz", "positive"),
    ({"sampling_rate_hz": "2 Hz"}, "sampling_rate_hz", "must be a number"),
    ({"sampling_rate_hz": True}, "sampling_rate_hz", "must be a number"),
    ({"units": "volts"}, "units", "must be one of"),
    ({"transpose": "yes"}, "transpose", "true or false"),
    ({"species": ""}, "species", "must not be empty"),
    ({"session": 7}, "session", "must be a string"),
]


@pytest.mark.parametrize(("meta", "key", "match"), BAD_SIDECARS, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD_SIDECARS)])
def test_malformed_sidecar(tmp_path, meta, key, match):
    path = _write(tmp_path, meta)
    with pytest.raises(RecordingError, match=match) as info:
        open_recording(path)
    assert info.value.field == key and info.value.path == str(path / "pocoviz.json")


@pytest.mark.parametrize(("raw", "match"), [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_sidecar_not_an_object(tmp_path, raw, match):
    path = _write(tmp_path, None, raw)
    with pytest.raises(RecordingError, match=match) as info:
        open_recording(path)
    assert info.value.path == str(path / "pocoviz.json")


def test_sidecar_npy_positions_checked(tmp_path):
    path = _write(tmp_path, {"positions": "pos.npy"})
    np.save(path / "pos.npy", np.zeros((4, 5)))
    with pytest.raises(RecordingError, match=r"shape \(4, 2\) or \(4, 3\)") as info:
        open_recording(path)
    assert info.value.field == "positions"
    np.save(path / "pos.npy", np.array([[0, 1], [2, np.inf], [0, 0], [1, 1]]))
    with pytest.raises(RecordingError, match="non-finite"):
        open_recording(path)
    np.save(path / "pos.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match="pickle"):
        open_recording(path)


def test_sidecar_npy_outside_the_data_dir_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(tmp_path / "pos.npy", np.zeros((4, 3)))
    path = _bare(data / "traces.zarr", np.zeros((20, 4), np.float32))
    (path / "pocoviz.json").write_text(json.dumps({"positions": "../../pos.npy"}))
    with pytest.raises(RecordingError, match="outside the data directory") as info:
        open_recording("traces.zarr", data_dir=data)
    assert info.value.field == "positions"
    assert open_recording(path).x.shape == (4,)  # without a data directory it is found


# ------------------------------------------------------------------------------------ the CLI


def test_info_says_what_was_checked(stores, capsys, monkeypatch):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", "1000")
    assert main(["info", str(stores["v3"])]) == 0
    out = capsys.readouterr().out
    assert "  zebrafish/big: 3000 units × 2000 frames @ 2 Hz" in out
    assert "    activity checked: sample of 512 of 2000 frames (frames 0-256, 1280-1536;" in out
    assert main(["info", "--json", str(stores["v2"])]) == 0
    s = json.loads(capsys.readouterr().out)["sessions"]["zebrafish/big"]
    assert s["activity_checked"] == "sample of 512 of 2000 frames" and s["n_unit"] == U


def test_open_corpus_on_a_folder_passes_load_and_data_dir(tmp_path, traces, rec):
    folder = tmp_path / "data"
    folder.mkdir()
    _bare(folder / "traces.zarr", traces)
    (folder / "traces.zarr.pocoviz.json").write_text(json.dumps({"species": "zebrafish", "session": "zap", "positions": "meta/pos.npy"}))
    (folder / "meta").mkdir()  # a folder that is not a recording: skipped by open_corpus
    np.save(folder / "meta" / "pos.npy", np.zeros((70, 2)))
    rec.isel(time=slice(0, 100), unit=slice(0, 20)).to_netcdf(folder / "small.nc", engine="h5netcdf")
    sessions = corpus_sessions(open_corpus("data", data_dir=tmp_path, load=False))
    assert sorted(sessions) == ["zebrafish/big", "zebrafish/zap"]
    assert all(is_lazy(ds) for ds in sessions.values())
    assert sessions["zebrafish/zap"].x.shape == (70,)
    assert not any(is_lazy(ds) for ds in corpus_sessions(open_corpus(folder)).values())


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_zipped_bare_array(tmp_path, traces, zarr_format):
    store = zarr.storage.ZipStore(tmp_path / "traces.zip", mode="w")
    zarr.create_array(store, data=traces, chunks=(64, 32), zarr_format=zarr_format)
    store.close()
    (tmp_path / "traces.zip.pocoviz.json").write_text(json.dumps({"sampling_rate_hz": 2.0}))
    assert detect_format(tmp_path / "traces.zip") == "zarr-array"
    for load in (False, True):
        ds = open_recording(tmp_path / "traces.zip", load=load)
        assert is_lazy(ds) is (not load) and ds.attrs["sampling_rate_hz"] == 2.0
        np.testing.assert_array_equal(ds.activity.values, traces)
        ds.close()

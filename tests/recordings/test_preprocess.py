"""dF/F, z-score, POCO's time split and the torch windows, against plain reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from pocoviz.recordings.preprocess import (
    CONTEXT_LENGTH,
    PREDICTION_LENGTH,
    compute_dff,
    split_indices,
    split_recording,
    zscore,
)
from pocoviz.recordings.schema import RecordingError, make_recording, validate
from pocoviz.recordings.synthetic import make_demo_corpus, make_session
from pocoviz.recordings.windows import WindowDataset, collate_padded


def _fluorescence(n_time: int = 400, n_unit: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(50, 500, n_unit)
    drift = np.linspace(1.0, 0.7, n_time)[:, None]  # bleaching
    return (base * drift * (1 + 0.3 * rng.exponential(1.0, (n_time, n_unit)))).astype(np.float64)


def _recording(a: np.ndarray, units: str = "F", **kw) -> xr.Dataset:
    return make_recording(a, sampling_rate_hz=2.0, species="test", session="s0", units=units, source="unit-test", **kw)


# ------------------------------------------------------------------------------------- dF/F


def test_constants():
    assert (CONTEXT_LENGTH, PREDICTION_LENGTH) == (48, 16)


@pytest.mark.parametrize(("baseline", "q"), [("percentile", 8.0), ("percentile", 20.0), ("median", 50.0)])
def test_dff_whole_recording_matches_reference(baseline, q):
    F = _fluorescence()
    f0 = np.percentile(F, q, axis=0)
    expected = (F - f0) / f0
    got = compute_dff(F, baseline=baseline, percentile=q if baseline == "percentile" else 8.0)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _running_reference(F: np.ndarray, q: float, window: int) -> np.ndarray:
    T = F.shape[0]
    f0 = np.empty_like(F)
    for t in range(T):
        lo, hi = max(0, t - window // 2), min(T, t - window // 2 + window)
        f0[t] = np.percentile(F[lo:hi], q, axis=0)
    return (F - f0) / f0


def test_dff_running_window_exact_and_approximate():
    F = _fluorescence()
    ref = _running_reference(F, 8.0, window=60)  # 30 s at 2 Hz
    exact = compute_dff(F, window_s=30.0, sampling_rate_hz=2.0, step=1)
    np.testing.assert_allclose(exact, ref, rtol=1e-12, atol=1e-12)
    fast = compute_dff(F, window_s=30.0, sampling_rate_hz=2.0)  # every 6th frame + interpolation
    assert np.max(np.abs(fast - ref)) < 0.05
    # the running baseline follows bleaching; the whole-recording one does not
    whole = compute_dff(F)
    assert abs(np.median(fast[:50]) - np.median(fast[-50:])) < 0.5 * abs(np.median(whole[:50]) - np.median(whole[-50:]))


def test_dff_dataset_keeps_coords_and_sets_units():
    F = _fluorescence(n_unit=4)
    ds = _recording(F.astype(np.float32), region=["a", "a", "b", "b"], x=[1.0, 2.0, 3.0, 4.0])
    out = compute_dff(ds, window_s=20.0)
    validate(out)
    assert out["activity"].attrs["units"] == "dF/F"
    assert "running 20 s window" in out["activity"].attrs["baseline"]
    assert out["activity"].dtype == np.float32
    assert list(out["region"].values) == ["a", "a", "b", "b"] and out.attrs == ds.attrs
    np.testing.assert_allclose(out["activity"].values, _running_reference(F.astype(np.float32).astype(np.float64), 8.0, 40), atol=0.05)
    assert ds["activity"].attrs["units"] == "F"  # input untouched


def test_dff_ignores_nans_in_the_baseline():
    F = _fluorescence()
    F[10:20, 2] = np.nan
    got = compute_dff(F)
    f0 = np.nanpercentile(F, 8.0, axis=0)
    np.testing.assert_allclose(got, (F - f0) / f0, rtol=1e-12)
    assert np.isnan(got[10:20, 2]).all() and np.isfinite(got[20:, 2]).all()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda F: _recording(F - 400.0), r"field 'activity'.*F0 <= 0 for \d+ unit\(s\) \(unit id\(s\)"),
        (lambda F: F - 400.0, r"F0 <= 0 .*column\(s\)"),
        (lambda F: _recording(F, units="z-score"), r"activity.attrs\['units'\].*raw fluorescence"),
        (lambda F: F, r"sampling rate"),
    ],
)
def test_dff_errors(make, match):
    F = _fluorescence()
    x = make(F)
    kw = {"window_s": 10.0} if match == "sampling rate" else {}
    with pytest.raises(RecordingError, match=match):
        compute_dff(x, **kw)


# ----------------------------------------------------------------------------------- z-score


def test_zscore_matches_reference_and_handles_constant_units():
    rng = np.random.default_rng(1)
    a = rng.normal(3.0, 2.0, (200, 5))
    a[:, 3] = 7.0
    got = zscore(a)
    ref = (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert np.all(got[:, 3] == 0.0) and not np.isnan(got).any()
    assert zscore(a.astype(np.float32)).dtype == np.float32


def test_zscore_is_nan_aware():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, (100, 3))
    a[5:9, 1] = np.nan
    got = zscore(a)
    col = a[:, 1]
    ok = ~np.isnan(col)
    np.testing.assert_allclose(got[ok, 1], (col[ok] - col[ok].mean()) / col[ok].std(), rtol=1e-12)
    assert np.isnan(got[5:9, 1]).all()
    assert np.isfinite(np.delete(got, 1, axis=1)).all()


def test_zscore_dataset():
    a = _fluorescence(n_unit=3).astype(np.float32)
    ds = _recording(a, label=["AVAL", "", "RIS"])
    out = zscore(compute_dff(ds))
    validate(out)
    act = out["activity"]
    assert act.attrs["units"] == "z-score" and act.attrs["zscored_from"] == "dF/F" and act.dtype == np.float32
    np.testing.assert_allclose(act.values.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(act.values.std(0), 1.0, atol=1e-5)
    assert list(out["label"].values) == ["AVAL", "", "RIS"]


# ------------------------------------------------------------------------------------ splits


@pytest.mark.parametrize(
    ("n_time", "expected"),
    [
        (1000, {"train": [(0, 600)], "val": [(600, 800)], "test": [(800, 1000)]}),
        (999, {"train": [(0, 599)], "val": [(599, 799)], "test": [(799, 999)]}),
        (1999, {"train": [(0, 1199)], "val": [(1199, 1599)], "test": [(1599, 1999)]}),
        (2300, {"train": [(0, 600), (1000, 1780)], "val": [(600, 800), (1780, 2040)], "test": [(800, 1000), (2040, 2300)]}),
        (2500, {"train": [(0, 600), (1000, 1900)], "val": [(600, 800), (1900, 2200)], "test": [(800, 1000), (2200, 2500)]}),
        (
            3000,
            {
                "train": [(0, 600), (1000, 1600), (2000, 2600)],
                "val": [(600, 800), (1600, 1800), (2600, 2800)],
                "test": [(800, 1000), (1800, 2000), (2800, 3000)],
            },
        ),
        (10, {"train": [(0, 6)], "val": [(6, 8)], "test": [(8, 10)]}),
        (1, {"train": [], "val": [], "test": [(0, 1)]}),
    ],
)
def test_split_indices_exact(n_time, expected):
    assert split_indices(n_time) == expected


@pytest.mark.parametrize("patch_length", [1000, 300, 64, 1])
@pytest.mark.parametrize("n_time", [1, 2, 63, 299, 300, 301, 999, 1001, 1999, 2000, 2001, 4321])
def test_split_indices_cover_without_overlap(n_time, patch_length):
    spans = split_indices(n_time, patch_length=patch_length)
    all_spans = sorted(s for ranges in spans.values() for s in ranges)
    assert all(a < b for a, b in all_spans)
    assert all_spans[0][0] == 0 and all_spans[-1][1] == n_time
    assert all(b == c for (_, b), (c, _) in zip(all_spans, all_spans[1:]))  # contiguous, no overlap
    n_patches = max(1, n_time // patch_length)
    assert max(len(r) for r in spans.values()) == n_patches
    for name in ("train", "val", "test"):  # each range inside one patch (the last one is longer)
        for a, b in spans[name]:
            assert min(a // patch_length, n_patches - 1) == min((b - 1) // patch_length, n_patches - 1)


def test_split_indices_custom_fractions_and_errors():
    assert split_indices(100, fractions=(0.5, 0.25, 0.25)) == {"train": [(0, 50)], "val": [(50, 75)], "test": [(75, 100)]}
    with pytest.raises(ValueError, match="fractions"):
        split_indices(100, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="n_time"):
        split_indices(0)


def test_split_recording():
    ds = make_session("mouse", n_units=20, n_time=2300, seed=0)
    parts = split_recording(ds)
    assert [p.sizes["time"] for p in parts["test"]] == [200, 260]
    np.testing.assert_array_equal(parts["val"][1]["activity"].values, ds["activity"].values[1780:2040])
    assert parts["train"][1]["time"].values[0] == ds["time"].values[1000]
    assert parts["train"][0].attrs == ds.attrs


# ----------------------------------------------------------------------------------- windows


@pytest.fixture(scope="module")
def tiny() -> xr.DataTree:
    return make_demo_corpus(0, size="tiny")


def _expected_windows(n_time: int, split: str, width: int, stride: int) -> list[int]:
    return [s for a, b in split_indices(n_time)[split] for s in range(a, b - width + 1, stride)]


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("stride", [1, 5])
def test_windows_stay_inside_one_segment(split, stride):
    recs = [make_session("worm", n_units=30, n_time=n, seed=0, session_index=i) for i, n in enumerate((700, 2300))]
    ds = WindowDataset(recs, split=split, stride=stride)
    width = CONTEXT_LENGTH + PREDICTION_LENGTH
    assert ds.windows_per_session == [len(_expected_windows(r.sizes["time"], split, width, stride)) for r in recs]
    assert len(ds) == sum(ds.windows_per_session) > 0
    for i in range(len(ds)):
        item = ds[i]
        s, t = item["session"], item["start"]
        segments = split_indices(recs[s].sizes["time"])[split]
        assert any(a <= t and t + width <= b for a, b in segments), (s, t)
    # every window of the split, none twice
    starts = [(ds[i]["session"], ds[i]["start"]) for i in range(len(ds))]
    assert len(set(starts)) == len(starts)


def test_window_content_and_types():
    rec = make_session("mouse", n_units=25, n_time=1200, seed=2)
    ds = WindowDataset(rec, split="val")
    item = ds[3]
    t = item["start"]
    a = rec["activity"].values
    assert item["context"].dtype == torch.float32 and tuple(item["context"].shape) == (48, 25)
    assert tuple(item["target"].shape) == (16, 25)
    np.testing.assert_array_equal(item["context"].numpy(), a[t : t + 48])
    np.testing.assert_array_equal(item["target"].numpy(), a[t + 48 : t + 64])
    assert t == 720 + 3  # val of a 1200-frame patch starts at int(0.6 * 1200)
    assert ds[-1]["start"] == ds[len(ds) - 1]["start"]
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert ds.session_names == ["mouse/mouse0"] and ds.n_units == [25]


def test_windows_with_nan_are_skipped():
    a = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    a[100, 2] = np.nan
    ds = WindowDataset(_recording(a, units="z-score"), split="train")
    starts = {ds[i]["start"] for i in range(len(ds))}
    assert len(ds) == (600 - 64 + 1) - 64  # the 64 windows that contain frame 100
    assert all(not (s <= 100 < s + 64) for s in starts)
    assert 36 in starts and 37 not in starts and 100 not in starts and 101 in starts
    for i in range(len(ds)):
        assert not torch.isnan(ds[i]["context"]).any()


def test_corpus_windows_and_padded_batches(tiny):
    ds = WindowDataset(tiny, split="train", context=32, horizon=8, stride=3)
    assert ds.session_names[:2] == ["zebrafish/fish0", "zebrafish/fish1"]
    assert set(ds.session_names) == {"zebrafish/fish0", "zebrafish/fish1", "mouse/mouse0", "mouse/mouse1", "worm/worm0", "worm/worm1"}
    assert all(n > 0 for n in ds.windows_per_session)
    picks = [0, len(ds) - 1, ds.windows_per_session[0] + 1]  # fish0, worm1, fish1
    batch = collate_padded([ds[i] for i in picks])
    u = [ds.n_units[ds[i]["session"]] for i in picks]
    assert batch["context"].shape == (3, 32, max(u)) and batch["target"].shape == (3, 8, max(u))
    assert batch["unit_mask"].dtype == torch.bool
    assert batch["unit_mask"].sum(1).tolist() == u
    for row, i in enumerate(picks):
        item = ds[i]
        assert torch.equal(batch["context"][row, :, : u[row]], item["context"])
        assert torch.equal(batch["target"][row, :, : u[row]], item["target"])
        assert torch.all(batch["context"][row, :, u[row] :] == 0) and torch.all(batch["target"][row, :, u[row] :] == 0)
    assert batch["session"].tolist() == [ds[i]["session"] for i in picks]
    assert batch["start"].tolist() == [ds[i]["start"] for i in picks]
    loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate_padded, generator=torch.Generator().manual_seed(0))
    first = next(iter(loader))
    assert first["context"].shape[0] == 16 and first["unit_mask"].shape == first["context"][:, 0].shape


def test_tiny_corpus_has_no_room_for_val_windows_of_64(tiny):
    # 300-frame sessions: val and test are 60 frames, shorter than one 64-frame window
    assert len(WindowDataset(tiny, split="val")) == 0
    assert len(WindowDataset(tiny, split="test", context=32, horizon=8)) > 0


def test_window_dataset_errors():
    rec = make_session("worm", n_units=10, n_time=100)
    with pytest.raises(ValueError, match="split"):
        WindowDataset(rec, split="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        WindowDataset(rec, stride=0)
    with pytest.raises(ValueError, match="no recordings"):
        WindowDataset([])


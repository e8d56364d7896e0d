"""Forecasts at every cursor of a recording (the Forecast tab's playback): the test-split score
equals evaluate()'s, rows equal the model's own forward, copy-last scores exactly 0, progressive
compute from the playhead wraps and stops, NaN frames drop their windows, metrics(upto, split)
equals a plain numpy reference at every stage of a progressive fill (MSE and MAE), and the netCDF
round trip."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.forecast import ForecastCorpus, build_model, evaluate, make_model
from pocoviz.forecast.playback import BLOCK, RecordingForecast
from pocoviz.recordings.schema import make_recording

torch.set_num_threads(1)

C, P = 48, 16
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)
#: one 1300-frame patch: train [0, 780), val [780, 1040), test [1040, 1300)
N_TIME, N_UNITS = 1300, 7
REGIONS = ["A", "B", "A", "", "B", "C", "C"]
NAN_AT = (1100, 3)  # one missing value inside the test range


def sine_activity(n_time: int = N_TIME, n_units: int = N_UNITS, seed: int = 0) -> np.ndarray:
    """sin(2π t / period_u + phase_u), periods 20-40 frames, + 0.1 noise, z-scored; float32 (T, U)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None]
    x = np.sin(2 * np.pi * t / rng.uniform(20, 40, n_units) + rng.uniform(0, 2 * np.pi, n_units))
    x = x + 0.1 * rng.standard_normal((n_time, n_units))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


@pytest.fixture(scope="module")
def activity() -> np.ndarray:
    a = sine_activity()
    a[NAN_AT] = np.nan
    return a


@pytest.fixture(scope="module")
def corpus(activity) -> ForecastCorpus:
    return ForecastCorpus(make_recording(activity, sampling_rate_hz=10.0, species="a", session="s0", region=REGIONS))


def random_poco(corpus: ForecastCorpus):
    """A small POCO whose FiLM head is switched on (at init α = β = 0 and the forecast ignores the
    encoder), so the population encoder shapes every forecast."""
    model = make_model("POCO", corpus, seed=0, **POCO_SMALL)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in (model.film_alpha, model.film_beta):
            lin.weight.copy_(0.3 * torch.randn(lin.weight.shape, generator=gen))
            lin.bias.copy_(0.3 * torch.randn(lin.bias.shape, generator=gen))
    return model.eval()


def make(kind: str, corpus: ForecastCorpus):
    if kind == "POCO":
        return random_poco(corpus)
    return make_model(kind, corpus, seed=0, **({"hidden": 32} if kind == "MLP" else {}))


def valid_cursors(a: np.ndarray) -> np.ndarray:
    """Plain reference: cursors t with C <= t <= T - P and no NaN in frames [t - C, t + P)."""
    T = a.shape[0]
    return np.array([t for t in range(C, T - P + 1) if not np.isnan(a[t - C : t + P]).any()], dtype=np.int64)


def reference_metrics(rf: RecordingForecast, upto: int | None, split: str | None) -> dict:
    """Plain numpy over the selected rows (no caching, no blocks)."""
    sel = rf.done.copy()
    if upto is not None:
        sel &= np.arange(rf.T) + rf.P <= upto
    if split is not None:
        sel &= rf.window_split == split
    n = int(sel.sum())
    sse, copy = rf.sse[sel], rf.copy_sse[sel]
    return {
        "n_windows": n,
        "score": 1 - sse.sum() / copy.sum() if n else np.nan,
        "per_step_mse": rf.sse_step[sel].sum(0) / (n * rf.U) if n else np.full(rf.P, np.nan),
        "per_step_mae": rf.sae_step[sel].sum(0) / (n * rf.U) if n else np.full(rf.P, np.nan),
        "per_step_copy_mae": rf.copy_sae_step[sel].sum(0) / (n * rf.U) if n else np.full(rf.P, np.nan),
        "mae": rf.sae_step[sel].sum() / (n * rf.P * rf.U) if n else np.nan,
        "per_unit_score": 1 - sse.sum(0) / copy.sum(0) if n else np.full(rf.U, np.nan),
    }


# -- agreement with evaluate() and with the model's own forward ----------------------------------


@pytest.mark.parametrize("kind", ["POCO", "MLP", "NLinear"])
def test_test_split_metrics_equal_evaluate(corpus, activity, kind):
    model = make(kind, corpus)
    name = corpus.sessions[0].name
    report = evaluate(model, corpus, "test")
    ref = report.session(name)
    rf = RecordingForecast(model, activity, name, regions=REGIONS)
    assert rf.compute() == rf.n_valid
    m = rf.metrics(split="test")
    # test cursors 1088..1284; the NaN at frame 1100 removes cursors 1085..1148
    assert m["n_windows"] == ref.n_windows == (1284 - 1088 + 1) - (1148 - 1088 + 1)
    assert ref.score < 0.9  # not a trivial forecaster
    assert m["score"] == pytest.approx(ref.score, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(m["per_step_mse"], ref.per_step_mse, rtol=1e-5)
    np.testing.assert_allclose(m["per_unit_score"], ref.per_unit_score, rtol=1e-5, atol=1e-7)
    assert m["mse"] == pytest.approx(ref.mse, rel=1e-5)
    assert m["copy_mse"] == pytest.approx(ref.copy_mse, rel=1e-6)
    assert m["mae"] == pytest.approx(ref.mae, rel=1e-5) and m["copy_mae"] == pytest.approx(ref.copy_mae, rel=1e-6)
    np.testing.assert_allclose(m["per_step_mae"], ref.per_step_mae, rtol=1e-5)
    np.testing.assert_allclose(m["per_step_copy_mae"], ref.per_step_copy_mae, rtol=1e-6)
    expected_regions = ref.region_scores(np.array(REGIONS))
    assert m["region_scores"].keys() == expected_regions.keys() == {"A", "B", "C"}
    for r, v in expected_regions.items():
        assert m["region_scores"][r] == pytest.approx(v, rel=1e-5, abs=1e-7)
    for split in ("train", "val"):  # splits that end inside the recording
        ref = evaluate(model, corpus, split).session(name)
        m = rf.metrics(split=split)
        assert m["n_windows"] == ref.n_windows and m["score"] == pytest.approx(ref.score, rel=1e-5, abs=1e-7)


def test_rows_equal_the_models_own_forward(corpus, activity):
    model = random_poco(corpus)
    rf = RecordingForecast(model, activity, corpus.sessions[0].name)
    picks = np.array([C, 301, 777, 1299 - P + 1])  # first, two inside, last valid cursor
    assert rf.compute(picks) == 4
    ctx = torch.from_numpy(np.stack([activity[t - C : t] for t in picks]))
    with torch.no_grad():
        direct = model(ctx, torch.zeros(4, dtype=torch.int64)).numpy()
    np.testing.assert_allclose(rf.forecast[picks].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    truth = np.stack([activity[t : t + P] for t in picks])
    np.testing.assert_allclose(rf.sse[picks], ((direct - truth) ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(rf.sse_step[picks], ((direct - truth) ** 2).sum(2), rtol=1e-5)
    np.testing.assert_allclose(rf.sae_step[picks], np.abs(direct - truth).sum(2), rtol=1e-5)
    np.testing.assert_allclose(rf.copy_sae_step[picks], np.abs(activity[picks - 1][:, None, :] - truth).sum(2), rtol=1e-5)
    np.testing.assert_allclose(rf.copy_sse[picks], ((activity[picks - 1][:, None, :] - truth) ** 2).sum(1), rtol=1e-5)
    assert rf.done.sum() == 4 and rf.done[picks].all()
    others = np.setdiff1d(np.arange(rf.T), picks)
    assert np.isnan(rf.forecast[others].astype(np.float32)).all() and np.isnan(rf.sse[others]).all()
    assert rf.forecast.dtype == np.float16 and rf.forecast.shape == (N_TIME, P, N_UNITS)


def test_copy_last_scores_exactly_zero(corpus, activity):
    model = build_model("copy-last", corpus.sessions)
    rf = RecordingForecast(model, activity, corpus.sessions[0].name)
    rf.compute(chunk=37)
    for split in (None, "train", "val", "test"):
        m = rf.metrics(split=split)
        assert m["n_windows"] > 0
        assert m["score"] == 0.0
        assert (m["per_unit_score"] == 0.0).all()
        np.testing.assert_array_equal(m["per_step_mse"], m["per_step_copy_mse"])
        np.testing.assert_array_equal(m["per_step_mae"], m["per_step_copy_mae"])
        assert m["mae"] == m["copy_mae"] > 0


@pytest.mark.parametrize(
    ("n_time", "splits"),
    [
        (2300, None),  # two patches: train [0, 600) [1000, 1780), val [600, 800) [1780, 2040), test [800, 1000) [2040, 2300)
        (400, {"fit": [(0, 150), (250, 400)], "holdout": [(150, 250)]}),
    ],
)
def test_window_split_is_the_range_holding_the_whole_window(corpus, n_time, splits):
    from pocoviz.recordings.preprocess import split_indices

    rf = RecordingForecast(make("NLinear", corpus), sine_activity(n_time, 2), "d/split", splits=splits)
    ranges = splits if splits is not None else split_indices(n_time)
    expected = []
    for t in range(n_time):
        inside = [k for k, rs in ranges.items() for lo, hi in rs if C <= t <= n_time - P and lo <= t - C and t + P <= hi]
        expected.append(inside[0] if inside else "")
    assert rf.window_split.tolist() == expected
    rf.compute()
    for k in ranges:
        assert rf.metrics(split=k)["n_windows"] == expected.count(k) > 0


# -- progressive computing -------------------------------------------------------------------------


def test_compute_from_the_playhead_wraps_around(corpus, activity):
    model = make("NLinear", corpus)
    rf = RecordingForecast(model, activity, corpus.sessions[0].name)
    cursors = valid_cursors(activity)
    np.testing.assert_array_equal(rf.cursors, cursors)
    start = 700
    k = int(np.searchsorted(cursors, start))
    seen: list[tuple[int, int, np.ndarray]] = []
    n = rf.compute(start=start, chunk=50, progress=lambda d, v: seen.append((d, v, rf.done.copy())))
    assert n == len(cursors) and rf.fraction_done == 1.0 and rf.done[cursors].all()
    assert [d for d, _, _ in seen] == [min(50 * (i + 1), len(cursors)) for i in range(len(seen))]
    assert all(v == len(cursors) for _, v, _ in seen)
    first = np.flatnonzero(seen[0][2])
    np.testing.assert_array_equal(first, cursors[k : k + 50])  # the playhead first
    wrap = next(done for d, _, done in seen if d > len(cursors) - k)
    assert wrap[cursors[0]] and wrap[cursors[-1]]  # after the end, back to the beginning
    assert rf.compute() == 0  # nothing left


def test_stop_event_stops_between_batches_and_resumes(corpus, activity):
    rf = RecordingForecast(make("MLP", corpus), activity, corpus.sessions[0].name)
    stop = threading.Event()

    def progress(done: int, valid: int) -> None:
        if done >= 60:
            stop.set()

    assert rf.compute(start=200, chunk=30, stop=stop, progress=progress) == 60
    assert rf.done.sum() == 60 and rf.fraction_done == pytest.approx(60 / rf.n_valid)
    assert rf.compute(stop=stop) == 0  # still set: nothing more
    stop.clear()
    assert rf.compute(stop=stop) == rf.n_valid - 60 and rf.fraction_done == 1.0


def test_batches_keep_to_the_unit_window_budget(corpus, activity):
    rf = RecordingForecast(make("NLinear", corpus), activity, corpus.sessions[0].name)
    rf.unit_window_budget = 20  # instance override: 20 // 7 units = 2 windows per batch
    calls: list[int] = []
    rf.compute(cursors=rf.cursors[:9], progress=lambda d, v: calls.append(d))
    assert rf.batch_size == 2 and calls == [2, 4, 6, 8, 9]
    rf.unit_window_budget = 3  # fewer than U: still one window per batch
    assert rf.batch_size == 1


# -- sessions ------------------------------------------------------------------------------------


def test_unknown_session_needs_fine_tuning_for_poco(corpus, activity):
    model = random_poco(corpus)
    with pytest.raises(KeyError, match="fine-tune it to this recording first"):
        RecordingForecast(model, activity, "a/never_seen")
    with pytest.raises(ValueError, match=r"5 units but the POCO model knows it with 7"):
        RecordingForecast(model, activity[:, :5], corpus.sessions[0].name)


def test_session_free_model_registers_a_new_recording(corpus):
    model = make("MLP", corpus)
    a = sine_activity(400, 5, seed=3)
    rf = RecordingForecast(model, a, "b/new")
    assert [s.name for s in model.sessions] == ["a/s0", "b/new"] and model.sessions[1].n_units == 5
    assert rf.session_index == 1 and rf.compute() == 400 - C - P + 1


# -- missing frames, played windows, cached sums ---------------------------------------------------


def test_nan_frames_exclude_exactly_their_windows(corpus):
    a = sine_activity(500, 4, seed=2)
    a[250, 1] = np.nan  # windows [t - C, t + P) holding frame 250: t in [250 - P + 1, 250 + C]
    rf = RecordingForecast(make("NLinear", corpus), a, "c/nan")
    bad = np.arange(250 - P + 1, 250 + C + 1)
    assert len(rf.cursors) == 500 - C - P + 1 - (C + P)
    assert not np.isin(bad, rf.cursors).any() and rf.valid[bad.min() - 1] and rf.valid[bad.max() + 1]
    assert rf.compute() == len(rf.cursors)
    assert not rf.done[bad].any() and np.isnan(rf.forecast[bad].astype(np.float32)).all()
    assert (rf.window_split[bad] == "").all()
    m = rf.metrics()
    assert m["n_windows"] == len(rf.cursors) and np.isfinite(m["score"])


def test_metrics_count_only_played_windows_and_match_a_reference(corpus, activity):
    rf = RecordingForecast(make("MLP", corpus), activity, corpus.sessions[0].name, regions=REGIONS)
    assert rf.metrics()["n_windows"] == 0 and np.isnan(rf.metrics()["score"])
    uptos = [None, 0, C + P - 1, C + P, C + P + 1, BLOCK * 5 + 3, 781, 1040 + C + P, 1100, N_TIME]
    # a progressive fill in scattered pieces: the cache must follow every new batch
    for piece in (rf.cursors[::7], np.arange(600, 900), None):
        rf.compute(piece, chunk=13)
        for upto in uptos:
            for split in (None, "train", "val", "test"):
                got, ref = rf.metrics(upto, split=split), reference_metrics(rf, upto, split)
                assert got["n_windows"] == ref["n_windows"], (upto, split)
                if ref["n_windows"]:
                    assert got["score"] == pytest.approx(ref["score"], rel=1e-9), (upto, split)
                    np.testing.assert_allclose(got["per_step_mse"], ref["per_step_mse"], rtol=1e-9)
                    np.testing.assert_allclose(got["per_step_mae"], ref["per_step_mae"], rtol=1e-9)
                    np.testing.assert_allclose(got["per_step_copy_mae"], ref["per_step_copy_mae"], rtol=1e-9)
                    assert got["mae"] == pytest.approx(ref["mae"], rel=1e-9), (upto, split)
                    np.testing.assert_allclose(got["per_unit_score"], ref["per_unit_score"], rtol=1e-9)
                else:
                    assert np.isnan(got["score"]) and np.isnan(got["per_step_mse"]).all()
                    assert np.isnan(got["mae"]) and np.isnan(got["per_step_mae"]).all()
    full = rf.metrics()
    assert rf.metrics(upto=C + P)["n_windows"] == 1  # only cursor C has played its whole target
    assert full["n_windows"] == rf.n_valid
    np.testing.assert_array_equal(rf.unit_scores(), full["per_unit_score"])
    assert rf.metrics(upto=1040)["n_windows"] == rf.metrics(upto=1040, split="train")["n_windows"] + rf.metrics(upto=1040, split="val")["n_windows"] + (
        ((rf.cursors + P <= 1040) & (rf.window_split[rf.cursors] == "")).sum()
    )
    with pytest.raises(ValueError, match="unknown split"):
        rf.metrics(split="holdout")


def test_readers_see_only_complete_rows_while_a_thread_computes(corpus, activity):
    rf = RecordingForecast(make("MLP", corpus), activity, corpus.sessions[0].name)
    worker = threading.Thread(target=rf.compute, kwargs=dict(start=900, chunk=16))
    worker.start()
    counts = []
    while worker.is_alive() or not counts:
        m = rf.metrics()
        counts.append(m["n_windows"])
        rows = np.flatnonzero(rf.done)
        assert np.isfinite(rf.sse[rows]).all() and np.isfinite(rf.forecast[rows].astype(np.float32)).all()
    worker.join()
    assert counts == sorted(counts) and rf.metrics()["n_windows"] == rf.n_valid


# -- export ---------------------------------------------------------------------------------------


def test_to_dataset_round_trips_through_netcdf(corpus, activity, tmp_path):
    model = make("NLinear", corpus)
    rf = RecordingForecast(model, activity, corpus.sessions[0].name, regions=REGIONS, name="NLinear (demo)")
    rf.compute(np.arange(100, 160))
    ds = rf.to_dataset()
    assert all(v.dtype != object for v in ds.variables.values())
    assert ds["forecast"].dims == ("cursor", "step", "unit") and ds["forecast"].dtype == np.float32
    assert ds.sizes == {"cursor": 60, "step": P, "unit": N_UNITS, "time": N_TIME}
    path = tmp_path / "playback.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        back = back.load()
    np.testing.assert_array_equal(back["cursor"].values, np.arange(100, 160))
    np.testing.assert_array_equal(back["step"].values, np.arange(1, P + 1))
    np.testing.assert_array_equal(back["forecast"].values, rf.forecast[100:160].astype(np.float32))
    np.testing.assert_array_equal(back["activity"].values, activity)
    np.testing.assert_array_equal(back["sse"].values, rf.sse[100:160])
    assert back["region"].values.astype(str).tolist() == REGIONS
    assert set(back["window_split"].values.astype(str).tolist()) == {"train"}
    assert back.attrs["model"] == "NLinear (demo)" and back.attrs["model_kind"] == "NLinear"
    assert back.attrs["session"] == "a/s0" and (back.attrs["context"], back.attrs["horizon"]) == (C, P)
    # forecast[c, k] predicts activity[cursor + k - 1]: the k = 1 step of cursor 130 is frame 130
    t = 130
    err = (back["forecast"].sel(cursor=t).values - activity[t : t + P]) ** 2
    assert err.sum(0) == pytest.approx(rf.sse[t], rel=1e-2)


def test_a_recording_shorter_than_one_window_has_no_cursors(corpus):
    rf = RecordingForecast(make("NLinear", corpus), sine_activity(C + P - 1, 3), "e/short")
    assert rf.n_valid == 0 and rf.fraction_done == 1.0 and rf.compute() == 0
    m = rf.metrics()
    assert m["n_windows"] == 0 and np.isnan(m["score"]) and np.isnan(m["per_unit_score"]).all()
    assert np.isnan(m["mae"]) and np.isnan(m["copy_mae"]) and np.isnan(m["per_step_mae"]).all()
    assert rf.to_dataset().sizes["cursor"] == 0

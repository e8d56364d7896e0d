"""The prediction score (spec §3): copy-last scores exactly 0, a perfect forecaster exactly 1,
and every breakdown (per session, per step, per unit, per region) matches sums computed here
independently with numpy over the split's windows; so does MAE (overall, per step, per unit,
copy-last, per dataset, in the JSON); refusals of unknown sessions.

Most checks use a corpus of quantised random walks (multiples of 1/4, |x| <= 8): every squared
error and every sum over windows is then exact in float32, so the library's sums and the float64
reference below agree to the last bit whatever the summation order, and scores can be compared
with a relative tolerance of 1e-12.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pocoviz.forecast import EvalReport, ForecastCorpus, build_model, evaluate
from pocoviz.forecast.base import Forecaster, SessionInfo
from pocoviz.recordings.schema import make_recording

torch.set_num_threads(1)

C, P = 48, 16
N_TIME = 1300
#: one patch of 1300 frames split 60/20/20 (spec §2.3)
RANGES = {"train": (0, 780), "val": (780, 1040), "test": (1040, 1300)}
UNITS = {"d1/s0": 5, "d1/s1": 7, "d2/s0": 4}
REGIONS = {
    "d1/s0": ["A", "B", "A", "", "B"],
    "d1/s1": ["A", "A", "B", "C", "", "C", "B"],
    "d2/s0": ["X", "X", "Y", ""],
}
NAN_AT = ("d1/s1", 1100, 3)  # one missing value inside the test range of one session


def quantised_walk(rng: np.random.Generator, n_time: int, n_units: int) -> np.ndarray:
    steps = rng.integers(-1, 2, size=(n_time, n_units)) * 0.25
    x = np.zeros((n_time, n_units))
    x[0] = rng.integers(-8, 9, size=n_units) * 0.25
    for t in range(1, n_time):
        x[t] = np.clip(x[t - 1] + steps[t], -8.0, 8.0)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> ForecastCorpus:
    rng = np.random.default_rng(0)
    recs = {}
    for name, u in UNITS.items():
        a = quantised_walk(rng, N_TIME, u)
        if name == NAN_AT[0]:
            a[NAN_AT[1], NAN_AT[2]] = np.nan
        sp, se = name.split("/")
        recs[name] = make_recording(a, sampling_rate_hz=5.0, species=sp, session=se, region=REGIONS[name])
    return ForecastCorpus(recs)


def raw(corpus: ForecastCorpus, name: str) -> np.ndarray:
    return np.asarray(corpus.recordings[name]["activity"].transpose("time", "unit").values, dtype=np.float32)


def reference_windows(corpus: ForecastCorpus, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Context (n, C, U) and target (n, P, U) of every window inside the split's frame range
    that holds no NaN, enumerated here without the library's window code."""
    a = raw(corpus, name)
    lo, hi = RANGES[split]
    ctx, tgt = [], []
    for s in range(lo, hi - (C + P) + 1):
        w = a[s : s + C + P]
        if np.isnan(w).any():
            continue
        ctx.append(w[:C])
        tgt.append(w[C:])
    return np.stack(ctx), np.stack(tgt)


class Oracle(Forecaster):
    """Returns the true future of each context, looked up by (session, context bytes); any
    context it has not been given raises KeyError."""

    kind = "oracle"

    def __init__(self, sessions, table: dict[tuple[int, bytes], np.ndarray]):
        super().__init__(sessions)
        self.table = table
        self.calls = 0

    def forward(self, context, session, unit_mask=None, unit_index=None):
        unit_mask = self.check_input(context, session, unit_mask)
        out = torch.stack([torch.from_numpy(self.table[(int(s), c.contiguous().numpy().tobytes())]) for c, s in zip(context, session)])
        self.calls += context.shape[0]
        return out * unit_mask[:, None, :]


class Zeros(Forecaster):
    kind = "zeros"

    def forward(self, context, session, unit_mask=None, unit_index=None):
        unit_mask = self.check_input(context, session, unit_mask)
        return context.new_zeros((context.shape[0], self.horizon, context.shape[2]))


class Lag(Forecaster):
    """Repeats the second-to-last context frame (a non-trivial forecast that stays on the 1/4 grid)."""

    kind = "lag"

    def forward(self, context, session, unit_mask=None, unit_index=None):
        unit_mask = self.check_input(context, session, unit_mask)
        return context[:, -2:-1, :].expand(-1, self.horizon, -1) * unit_mask[:, None, :]


def reference_sse(corpus, name, split, predict) -> tuple[np.ndarray, np.ndarray, int]:
    ctx, tgt = reference_windows(corpus, name, split)
    ctx, tgt = ctx.astype(np.float64), tgt.astype(np.float64)
    pred = predict(ctx)
    sse = ((pred - tgt) ** 2).sum(0)
    copy = ((ctx[:, -1:, :] - tgt) ** 2).sum(0)
    return sse, copy, len(ctx)


# -- copy-last and the perfect forecaster ----------------------------------------------------------


@pytest.fixture(scope="module")
def demo_corpus() -> ForecastCorpus:
    from pocoviz.recordings.synthetic import make_demo_corpus

    return ForecastCorpus(make_demo_corpus(0, size="small"))


@pytest.mark.parametrize("which", ["demo", "quantised"])
@pytest.mark.parametrize("split", ["test", "val"])
def test_copy_last_scores_exactly_zero(request, which, split):
    corpus = request.getfixturevalue("demo_corpus" if which == "demo" else "corpus")
    model = build_model("copy-last", corpus.sessions)
    rep = evaluate(model, corpus, split)
    assert [s.name for s in rep.sessions] == corpus.names
    for s in rep.sessions:
        assert s.n_windows > 0
        assert s.copy_sse.sum() > 0
        assert s.score == 0.0, s.name
        assert np.array_equal(s.sse, s.copy_sse)
        assert np.array_equal(s.sae, s.copy_sae) and s.mae == s.copy_mae > 0
    assert rep.score == 0.0
    assert rep.model == "copy-last" and rep.split == split


@pytest.mark.parametrize("split", ["test", "val"])
def test_perfect_forecaster_scores_exactly_one(corpus, split):
    table = {}
    n_ref = {}
    for i, name in enumerate(corpus.names):
        ctx, tgt = reference_windows(corpus, name, split)
        n_ref[name] = len(ctx)
        for c, t in zip(ctx, tgt):
            table[(i, np.ascontiguousarray(c).tobytes())] = np.ascontiguousarray(t)
    model = Oracle(corpus.sessions, table)
    rep = evaluate(model, corpus, split, batch_size=50)
    assert model.calls == sum(n_ref.values())
    for s in rep.sessions:
        assert s.n_windows == n_ref[s.name]
        assert s.score == 1.0
        assert s.mse == 0.0
    assert rep.score == 1.0
    # a 260-frame range holds 260 - 64 + 1 = 197 windows; the NaN at frame 1100 (test range
    # 1040..1300) lies in the windows starting at 1040..1100, which are skipped
    assert n_ref["d1/s0"] == 197
    assert n_ref["d1/s1"] == (197 - 61 if split == "test" else 197)


def test_zero_forecast_score_matches_numpy(corpus):
    rep = evaluate(Zeros(corpus.sessions), corpus, "test", batch_size=64)
    scores = []
    for s in rep.sessions:
        sse, copy, n = reference_sse(corpus, s.name, "test", lambda ctx: np.zeros((len(ctx), P, ctx.shape[2])))
        assert s.n_windows == n
        np.testing.assert_array_equal(s.sse, sse)
        np.testing.assert_array_equal(s.copy_sse, copy)
        expected = 1.0 - sse.sum() / copy.sum()
        assert s.score == pytest.approx(expected, rel=1e-12, abs=0)
        assert s.mse == pytest.approx(sse.sum() / (n * P * UNITS[s.name]), rel=1e-12)
        assert s.copy_mse == pytest.approx(copy.sum() / (n * P * UNITS[s.name]), rel=1e-12)
        scores.append(expected)
    assert rep.score == pytest.approx(float(np.mean(scores)), rel=1e-12)
    assert rep.score < 0  # zeros are much worse than copying the last frame of a random walk


# -- breakdowns ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lag_report(corpus):
    return evaluate(Lag(corpus.sessions), corpus, "test")


def lag_prediction(ctx: np.ndarray) -> np.ndarray:
    return np.repeat(ctx[:, -2:-1, :], P, axis=1)


def test_per_step_and_per_unit_breakdowns(corpus, lag_report):
    for s in lag_report.sessions:
        U = UNITS[s.name]
        sse, copy, n = reference_sse(corpus, s.name, "test", lag_prediction)
        assert s.sse.shape == (P, U)
        assert s.per_step_mse.shape == (P,)
        np.testing.assert_allclose(s.per_step_mse, sse.sum(1) / (n * U), rtol=1e-12, atol=0)
        np.testing.assert_allclose(s.per_step_copy_mse, copy.sum(1) / (n * U), rtol=1e-12, atol=0)
        assert float(s.per_step_mse.mean()) == pytest.approx(s.mse, rel=1e-12)
        # copy-last error grows with the horizon on a random walk
        assert s.per_step_copy_mse[-1] > s.per_step_copy_mse[0]
        assert s.per_unit_score.shape == (U,)
        np.testing.assert_allclose(s.per_unit_score, 1.0 - sse.sum(0) / copy.sum(0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.per_unit_mse, sse.sum(0) / (n * P), rtol=1e-12, atol=0)
        assert s.score == pytest.approx(1.0 - sse.sum() / copy.sum(), rel=1e-12)
        assert 0 != s.score < 1
    # the report-level per-step MSE weights every prediction equally
    num = sum(s.sse.sum(1) for s in lag_report.sessions)
    den = sum(s.n_windows * UNITS[s.name] for s in lag_report.sessions)
    np.testing.assert_allclose(lag_report.per_step_mse, num / den, rtol=1e-12)
    assert lag_report.mse == pytest.approx(float(num.sum() / (den * P)), rel=1e-12)


def test_region_scores_match_numpy(corpus, lag_report):
    regions = lag_report.region_scores()
    assert set(regions) == set(UNITS)
    for name, labels in REGIONS.items():
        labels = np.asarray(labels)
        sse, copy, _ = reference_sse(corpus, name, "test", lag_prediction)
        expected = {}
        for r in sorted(set(labels) - {""}):
            m = labels == r
            expected[r] = 1.0 - sse[:, m].sum() / copy[:, m].sum()
        assert set(regions[name]) == set(expected)  # unlabelled units form no region
        for r, v in expected.items():
            assert regions[name][r] == pytest.approx(v, rel=1e-12), (name, r)
    # regions differ from each other (the check above is not comparing one number many times)
    assert len({round(v, 9) for v in regions["d1/s1"].values()}) == 3


def test_dataset_aggregates(corpus, lag_report):
    by_name = {s.name: s for s in lag_report.sessions}
    ds = lag_report.dataset_scores()
    assert ds["d1"] == pytest.approx((by_name["d1/s0"].score + by_name["d1/s1"].score) / 2, rel=1e-12)
    assert ds["d2"] == pytest.approx(by_name["d2/s0"].score, rel=1e-12)
    dm = lag_report.dataset_mse()
    a, b = by_name["d1/s0"], by_name["d1/s1"]
    assert dm["d1"] == pytest.approx((a.sse.sum() + b.sse.sum()) / (P * (a.n_windows * 5 + b.n_windows * 7)), rel=1e-12)
    assert lag_report.score == pytest.approx(np.mean([s.score for s in lag_report.sessions]), rel=1e-12)


def test_report_to_json(lag_report):
    d = lag_report.to_json(per_unit=True)
    text = json.dumps(d)
    back = json.loads(text)
    assert back["score"] == pytest.approx(lag_report.score, rel=1e-15)
    assert back["model"] == "lag" and back["split"] == "test"
    assert len(back["per_step_mse"]) == P
    assert [s["name"] for s in back["sessions"]] == list(UNITS)
    for s, orig in zip(back["sessions"], lag_report.sessions):
        assert s["score"] == pytest.approx(orig.score, rel=1e-15)
        assert s["windows"] == orig.n_windows and s["units"] == UNITS[s["name"]]
        assert len(s["per_step_mse"]) == P
        assert len(s["per_unit_score"]) == UNITS[s["name"]]
        assert set(s["region_scores"]) == set(REGIONS[s["name"]]) - {""}


def test_evaluate_only_named_sessions_and_restores_training_mode(corpus):
    model = build_model("MLP", corpus.sessions, hidden=8).train()
    rep = evaluate(model, corpus, "val", sessions=["d2/s0"])
    assert [s.name for s in rep.sessions] == ["d2/s0"]
    assert model.training


# -- refusals --------------------------------------------------------------------------------------


def test_unknown_session_is_refused(corpus):
    # DLinear has per-session layers: it cannot forecast a recording it was not fine-tuned to
    model = build_model("DLinear", [SessionInfo("d1/s0", 5, "d1")])
    with pytest.raises(KeyError, match=r"d1/s1.*fine-tune"):
        evaluate(model, corpus, "test")
    assert [s.name for s in model.sessions] == ["d1/s0"]


def test_session_free_model_forecasts_unknown_sessions(corpus):
    """Models without per-session state (copy-last, NLinear, MLP, TexFilter) register unknown
    sessions on the fly; the scores are those of a model built for the whole corpus."""
    model = build_model("copy-last", [SessionInfo("d2/s0", 4, "d2")])
    rep = evaluate(model, corpus, "test")
    assert [s.name for s in model.sessions] == ["d2/s0", "d1/s0", "d1/s1"]
    assert [s.name for s in rep.sessions] == list(UNITS)
    assert all(s.score == 0.0 and s.n_windows > 0 for s in rep.sessions)


def test_unit_count_mismatch_is_refused(corpus):
    sessions = [SessionInfo(n, u, n.split("/")[0]) for n, u in UNITS.items()]
    sessions[2] = SessionInfo("d2/s0", 6, "d2")
    model = build_model("copy-last", sessions)
    with pytest.raises(ValueError, match=r"d2/s0.*4 units.*trained on 6"):
        evaluate(model, corpus, "test")


# -- sessions without windows ----------------------------------------------------------------------


def test_session_without_windows_has_no_mse(corpus):
    """A 300-frame session has no validation or test window (60 and 60 frames < 48 + 16): its
    error is undefined. Reporting MSE 0.0 claims a perfect forecast (and makes training select
    the untrained model, see test_train.py::test_training_without_validation_windows_...)."""
    rng = np.random.default_rng(1)
    short = make_recording(quantised_walk(rng, 300, 3), sampling_rate_hz=5.0, species="d3", session="short")
    both = ForecastCorpus({"d1/s0": corpus.recordings["d1/s0"], "d3/short": short})
    rep = evaluate(build_model("copy-last", both.sessions), both, "test")
    long_, empty = rep.sessions
    assert empty.n_windows == 0 and long_.n_windows == 197
    assert math.isnan(empty.score)
    assert rep.score == 0.0  # the mean over sessions skips the undefined score
    assert rep.mse == pytest.approx(long_.mse, rel=1e-12)  # no predictions, no weight
    assert math.isnan(empty.mse), f"a session without windows reports MSE {empty.mse} instead of NaN"
    assert math.isnan(rep.dataset_mse()["d3"]), f"a dataset without windows reports MSE {rep.dataset_mse()['d3']} instead of NaN"
    assert math.isnan(empty.mae) and np.isnan(empty.per_step_mae).all() and np.isnan(empty.per_unit_mae).all()
    assert math.isnan(rep.dataset_mae()["d3"]) and rep.mae == pytest.approx(long_.mae, rel=1e-12)
    np.testing.assert_allclose(rep.per_step_mae, long_.per_step_mae, rtol=1e-12)
    only_empty = EvalReport("copy-last", "test", [empty])
    assert math.isnan(only_empty.mae) and np.isnan(only_empty.per_step_mae).all() and only_empty.per_step_mae.shape == (P,)


# -- MAE (ZAPBench's metric, spec §4.3) ------------------------------------------------------------


@pytest.fixture(scope="module")
def random_forecasts(corpus):
    """An Oracle that answers every test window with a random forecast (multiples of 1/4 in
    [-8, 8], so every absolute error and its sums are exact in float32), and the forecasts and
    targets per session as the numpy reference sees them."""
    rng = np.random.default_rng(7)
    table, ref = {}, {}
    for i, name in enumerate(corpus.names):
        ctx, tgt = reference_windows(corpus, name, "test")
        pred = (rng.integers(-32, 33, size=tgt.shape) * 0.25).astype(np.float32)
        for c, f in zip(ctx, pred):
            table[(i, np.ascontiguousarray(c).tobytes())] = np.ascontiguousarray(f)
        ref[name] = (ctx.astype(np.float64), tgt.astype(np.float64), pred.astype(np.float64))
    return Oracle(corpus.sessions, table), ref


def test_mae_matches_numpy_over_sessions_of_different_sizes(corpus, random_forecasts):
    model, ref = random_forecasts
    rep = evaluate(model, corpus, "test", batch_size=45)  # batches that do not divide the window counts
    # three sessions with 5, 7 and 4 units and 197, 136 and 197 windows: the weighting matters
    assert {s.name: (s.n_windows, s.sae.shape[1]) for s in rep.sessions} == {"d1/s0": (197, 5), "d1/s1": (136, 7), "d2/s0": (197, 4)}
    for s in rep.sessions:
        ctx, tgt, pred = ref[s.name]
        err, copy_err = np.abs(pred - tgt), np.abs(ctx[:, -1:, :] - tgt)
        assert s.sae.shape == (P, tgt.shape[2])
        np.testing.assert_allclose(s.per_step_mae, err.mean(axis=(0, 2)), rtol=1e-12, atol=0)
        np.testing.assert_allclose(s.per_step_copy_mae, copy_err.mean(axis=(0, 2)), rtol=1e-12, atol=0)
        np.testing.assert_allclose(s.per_unit_mae, err.mean(axis=(0, 1)), rtol=1e-12, atol=0)
        assert s.mae == pytest.approx(err.mean(), rel=1e-12)
        assert s.copy_mae == pytest.approx(copy_err.mean(), rel=1e-12)
        assert s.mse == pytest.approx(((pred - tgt) ** 2).mean(), rel=1e-12)  # MSE unchanged by the new sums
        assert s.mae < math.sqrt(s.mse)  # MAE <= RMSE, strictly for errors of unequal size
    # report level: every prediction weighs the same, whatever its session's size
    flat = {name: np.abs(pred - tgt).transpose(1, 0, 2).reshape(P, -1) for name, (_, tgt, pred) in ref.items()}
    flat_copy = {name: np.abs(ctx[:, -1:, :] - tgt).transpose(1, 0, 2).reshape(P, -1) for name, (ctx, tgt, _) in ref.items()}
    every = np.concatenate(list(flat.values()), axis=1)
    np.testing.assert_allclose(rep.per_step_mae, every.mean(axis=1), rtol=1e-12, atol=0)
    np.testing.assert_allclose(rep.per_step_copy_mae, np.concatenate(list(flat_copy.values()), axis=1).mean(axis=1), rtol=1e-12, atol=0)
    assert rep.mae == pytest.approx(every.mean(), rel=1e-12)
    unweighted = np.mean([s.mae for s in rep.sessions])
    assert abs(rep.mae - unweighted) > 1e-4  # the weighting is visible in this corpus
    d1 = np.concatenate([flat["d1/s0"], flat["d1/s1"]], axis=1).mean()
    assert rep.dataset_mae() == pytest.approx({"d1": d1, "d2": flat["d2/s0"].mean()}, rel=1e-12)


def test_mae_in_the_json(corpus, random_forecasts):
    model, ref = random_forecasts
    rep = evaluate(model, corpus, "test")
    back = json.loads(json.dumps(rep.to_json()))
    every = np.concatenate([np.abs(p - t).transpose(1, 0, 2).reshape(P, -1) for _, t, p in ref.values()], axis=1)
    every_copy = np.concatenate([np.abs(c[:, -1:, :] - t).transpose(1, 0, 2).reshape(P, -1) for c, t, _ in ref.values()], axis=1)
    assert back["mae"] == pytest.approx(every.mean(), rel=1e-12)
    assert back["copy_mae"] == pytest.approx(every_copy.mean(), rel=1e-12)
    np.testing.assert_allclose(back["per_step_mae"], every.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(back["per_step_copy_mae"], every_copy.mean(axis=1), rtol=1e-12)
    assert back["dataset_mae"] == pytest.approx(rep.dataset_mae(), rel=1e-15) and set(back["dataset_mae"]) == {"d1", "d2"}
    # the fields that were there before are still there
    assert {"score", "mse", "dataset_scores", "per_step_mse", "per_step_copy_mse"} <= set(back)
    for s in back["sessions"]:
        ctx, tgt, pred = ref[s["name"]]
        assert s["mae"] == pytest.approx(np.abs(pred - tgt).mean(), rel=1e-12)
        assert s["copy_mae"] == pytest.approx(np.abs(ctx[:, -1:, :] - tgt).mean(), rel=1e-12)
        np.testing.assert_allclose(s["per_step_mae"], np.abs(pred - tgt).mean(axis=(0, 2)), rtol=1e-12)
        np.testing.assert_allclose(s["per_step_copy_mae"], np.abs(ctx[:, -1:, :] - tgt).mean(axis=(0, 2)), rtol=1e-12)
        assert {"score", "mse", "copy_mse", "per_step_mse", "region_scores"} <= set(s)

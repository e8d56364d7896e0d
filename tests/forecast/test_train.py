"""Training and fine-tuning (spec §1.7, §5): learning a noisy multi-unit sine end to end, CPU
determinism, resuming from a state file, best-checkpoint selection and early stopping, the three
fine-tuning modes, unit-subsampled batches, and TrainConfig validation."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pytest
import torch

from pocoviz.forecast import ForecastCorpus, SessionInfo, TrainConfig, evaluate, finetune, make_model, train
from pocoviz.recordings.schema import make_recording

torch.set_num_threads(1)

C, P = 48, 16
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)
#: frames 0..720 of a 1200-frame session are training frames (one patch, 60/20/20)
N_TIME = 1200


def sine_recording(species: str, session: str, n_units: int, seed: int, n_time: int = N_TIME):
    """sin(2π t / period_u + phase_u) per unit, periods 20-40 frames, + 0.1 noise, z-scored."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None]
    period = rng.uniform(20, 40, n_units)
    phase = rng.uniform(0, 2 * np.pi, n_units)
    x = np.sin(2 * np.pi * t / period + phase) + 0.1 * rng.standard_normal((n_time, n_units))
    x = (x - x.mean(0)) / x.std(0)
    return make_recording(x.astype(np.float32), sampling_rate_hz=10.0, species=species, session=session)


@pytest.fixture(scope="module")
def sine_corpus() -> ForecastCorpus:
    return ForecastCorpus([sine_recording("a", "s0", 6, 0), sine_recording("b", "s1", 6, 1)])


def mean_dataset_val_mse(model, corpus) -> float:
    v = list(evaluate(model, corpus, "val").dataset_mse().values())
    return sum(v) / len(v)


def no_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def same_floats(a: list[dict], b: list[dict]) -> bool:
    """Histories equal entry by entry (NaN == NaN for the step-0 train loss)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.keys() != y.keys():
            return False
        for k in x:
            if not (x[k] == y[k] or (isinstance(x[k], float) and math.isnan(x[k]) and math.isnan(y[k]))):
                return False
    return True


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- learning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "kw", "steps"), [("POCO", POCO_SMALL, 150), ("MLP", dict(hidden=32), 300)])
def test_learns_a_noisy_multi_unit_sine(sine_corpus, kind, kw, steps):
    t0 = time.perf_counter()
    model = make_model(kind, sine_corpus, seed=0, **kw)
    cfg = TrainConfig(steps=steps, batch_size=32, eval_every=50, lr=1e-3)
    result = train(model, sine_corpus, cfg, device="cpu")
    score = evaluate(model, sine_corpus, "test").score
    elapsed = time.perf_counter() - t0
    print(f"{kind}: {steps} steps, test score {score:.3f}, {elapsed:.2f} s")
    assert score > 0.5
    assert [h["step"] for h in result.history] == list(range(0, steps + 1, 50))
    assert result.steps_done == steps and not result.stopped_early
    assert result.windows == steps * 32 * 2  # one batch per dataset per step
    assert result.history[-1]["val_mse"] < result.history[0]["val_mse"]
    # the kept state is the best validation state
    best = min(result.history, key=lambda h: h["val_mse"])
    assert result.best_step == best["step"] and result.best_val_mse == best["val_mse"]
    assert mean_dataset_val_mse(model, sine_corpus) == pytest.approx(result.best_val_mse, rel=1e-6)
    assert not model.training


# -- determinism and resuming --------------------------------------------------------------------


def run(corpus, seed: int, steps: int = 20, eval_every: int = 10, **kw):
    model = make_model("POCO", corpus, seed=seed, **POCO_SMALL)
    result = train(model, corpus, TrainConfig(steps=steps, batch_size=16, eval_every=eval_every, seed=seed, lr=1e-3), device="cpu", **kw)
    return model, result


def test_training_is_deterministic_on_cpu(sine_corpus):
    # POCO's dropouts (0.2 in the feed-forward blocks, 0.4 on the latents) draw from torch's RNG
    m1, r1 = run(sine_corpus, seed=0)
    m2, r2 = run(sine_corpus, seed=0)
    assert_same_state(m1.state_dict(), m2.state_dict())
    assert same_floats(no_seconds(r1.history), no_seconds(r2.history))
    assert (r1.best_step, r1.best_val_mse, r1.windows) == (r2.best_step, r2.best_val_mse, r2.windows)

    m3, r3 = run(sine_corpus, seed=1)
    diff = [k for k, v in m1.state_dict().items() if not torch.equal(v, m3.state_dict()[k])]
    assert "film_alpha.weight" in diff and "input_proj.weight" in diff
    assert r3.history[-1]["val_mse"] != r1.history[-1]["val_mse"]


def test_resume_after_interruption_is_bit_identical(sine_corpus, tmp_path):
    ref_model, ref = run(sine_corpus, seed=0, steps=60, eval_every=30, state_path=tmp_path / "ref.pt")
    assert (tmp_path / "ref.pt").exists()

    path = tmp_path / "state.pt"
    # interrupted after the evaluation at step 30 (the callback stops the run)
    m1, r1 = run(sine_corpus, seed=0, steps=60, eval_every=30, state_path=path, callback=lambda e: e["step"] < 30)
    assert r1.steps_done == 30 and r1.stopped_early
    # a fresh process: a freshly made model, the same settings and state file
    m2, r2 = run(sine_corpus, seed=0, steps=60, eval_every=30, state_path=path)
    assert r2.steps_done == 60 and not r2.stopped_early
    assert_same_state(m2.state_dict(), ref_model.state_dict())
    assert same_floats(no_seconds(r2.history), no_seconds(ref.history))
    assert [h["step"] for h in r2.history] == [0, 30, 60]
    assert (r2.best_step, r2.best_val_mse, r2.windows) == (ref.best_step, ref.best_val_mse, ref.windows)


def test_resume_with_more_steps_continues_the_run(sine_corpus, tmp_path):
    """Training 30 steps with a state file, then 60 with the same file on a fresh model, equals
    training 60 steps in one go (the step-30 state is the same in both runs)."""
    ref_model, ref = run(sine_corpus, seed=0, steps=60, eval_every=30, state_path=tmp_path / "ref.pt")
    path = tmp_path / "state.pt"
    _, r1 = run(sine_corpus, seed=0, steps=30, eval_every=30, state_path=path)
    assert r1.steps_done == 30 and path.exists()
    m2, r2 = run(sine_corpus, seed=0, steps=60, eval_every=30, state_path=path)
    assert r2.steps_done == 60
    assert_same_state(m2.state_dict(), ref_model.state_dict())
    assert same_floats(no_seconds(r2.history), no_seconds(ref.history))


def test_state_file_from_other_settings_is_refused(sine_corpus, tmp_path):
    path = tmp_path / "state.pt"
    run(sine_corpus, seed=0, steps=10, eval_every=10, state_path=path)
    model = make_model("POCO", sine_corpus, seed=0, **POCO_SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="different settings"):
        train(model, sine_corpus, TrainConfig(steps=10, batch_size=16, eval_every=10, lr=5e-3), device="cpu", state_path=path)
    assert_same_state(model.state_dict(), before)
    other = make_model("MLP", sine_corpus, seed=0, hidden=8)
    with pytest.raises(ValueError, match="different settings"):
        train(other, sine_corpus, TrainConfig(steps=10, batch_size=16, eval_every=10, lr=1e-3), device="cpu", state_path=path)


# -- model selection and early stopping ----------------------------------------------------------


def test_early_stopping_keeps_the_best_state(sine_corpus):
    model = make_model("MLP", sine_corpus, seed=0, hidden=32)
    snapshots = {}

    def keep(entry):
        snapshots[entry["step"]] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(steps=200, batch_size=16, eval_every=10, lr=1.0, patience=1)
    result = train(model, sine_corpus, cfg, device="cpu", callback=keep)
    assert result.stopped_early
    assert result.steps_done < cfg.steps
    steps = [h["step"] for h in result.history]
    assert steps == sorted(snapshots) and steps[-1] == result.steps_done
    # patience 1: the run stops at the first evaluation that does not improve
    vals = [h["val_mse"] for h in result.history]
    assert vals[-1] >= min(vals[:-1])
    assert all(b < a for a, b in zip(vals[:-1], vals[1:-1]))
    best = int(np.argmin(vals))
    assert result.best_step == steps[best] < result.steps_done
    assert result.best_val_mse == vals[best]
    assert_same_state(model.state_dict(), snapshots[result.best_step])
    assert mean_dataset_val_mse(model, sine_corpus) == pytest.approx(result.best_val_mse, rel=1e-6)


# -- fine-tuning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained():
    corpus_a = ForecastCorpus([sine_recording("a", "s0", 6, 0)])
    model = make_model("POCO", corpus_a, seed=0, **POCO_SMALL)
    train(model, corpus_a, TrainConfig(steps=40, batch_size=32, eval_every=20, lr=3e-3), device="cpu")
    assert model.film_alpha.weight.abs().max() > 0
    return model


@pytest.fixture(scope="module")
def corpus_b():
    return ForecastCorpus([sine_recording("a", "s2", 5, 2)])  # a new session of the same dataset


ENCODER = ("input_proj.weight", "latent_emb.weight", "enc_atn.to_q.weight", "enc_ffn.proj_in.weight", "process.0.0.to_kv.weight", "dec_atn.to_q.weight")
HEAD = ("in_proj.0.weight", "film_alpha.weight", "film_beta.weight", "out_proj.weight", "out_proj.bias")
FT_CFG = dict(steps=20, eval_every=10, batch_size=32, lr=3e-3)


@pytest.mark.parametrize("mode", ["embedding", "embedding+mlp", "full"])
def test_finetune_modes(pretrained, corpus_b, mode):
    old = {k: v.clone() for k, v in pretrained.state_dict().items()}
    torch.manual_seed(123)  # the new embedding rows are drawn from torch's RNG
    zero_shot, _ = finetune(pretrained, corpus_b, mode, TrainConfig(**{**FT_CFG, "steps": 0}), device="cpu")
    torch.manual_seed(123)
    model, result = finetune(pretrained, corpus_b, mode, TrainConfig(**FT_CFG), device="cpu")

    # the original model is untouched
    assert [s.name for s in pretrained.sessions] == ["a/s0"]
    assert_same_state(pretrained.state_dict(), old)
    # the returned one knows the new session
    assert model is not pretrained
    assert [s.name for s in model.sessions] == ["a/s0", "a/s2"]
    assert model.session_index("a/s2") == 1
    assert evaluate(model, corpus_b, "test").sessions[0].n_windows > 0
    # step 0 is the zero-shot entry, then every 10 steps
    assert [h["step"] for h in result.history] == [0, 10, 20]
    assert math.isnan(result.history[0]["train_loss"])
    # (float32 rounding differs slightly when most parameters have requires_grad off, as during
    # fine-tuning's own validation, hence not bit-equality)
    assert result.history[0]["val_mse"] == pytest.approx(mean_dataset_val_mse(zero_shot, corpus_b), rel=1e-6)
    assert result.best_step > 0, "fine-tuning did not improve on zero-shot; the checks below need a trained state"

    new = model.state_dict()
    fresh = zero_shot.state_dict()
    assert torch.equal(fresh["unit_emb.weight"][6:], zero_shot.unit_emb.weight[6:])
    # the new session's rows were trained
    assert not torch.equal(new["unit_emb.weight"][6:], fresh["unit_emb.weight"][6:])
    assert not torch.equal(new["session_emb.weight"][1], fresh["session_emb.weight"][1])
    # the same dataset: no new dataset row
    assert new["dataset_emb.weight"].shape == old["dataset_emb.weight"].shape
    changed = {k for k in old if k not in ("unit_emb.weight", "session_emb.weight") and not torch.equal(new[k], old[k])}
    if mode != "full":
        # the pretrained sessions' rows and the dataset row are bit-identical
        assert torch.equal(new["unit_emb.weight"][:6], old["unit_emb.weight"])
        assert torch.equal(new["session_emb.weight"][:1], old["session_emb.weight"])
    if mode == "embedding":
        assert changed == set()
    elif mode == "embedding+mlp":
        assert set(HEAD) <= changed
        assert changed <= {k for k in old if k.startswith(("in_proj.", "film_alpha.", "film_beta.", "out_proj."))}
        assert not changed & set(ENCODER)
    else:
        assert set(HEAD) <= changed and set(ENCODER) <= changed
    # requires_grad flags are restored
    assert all(p.requires_grad for p in model.parameters())


def test_finetune_new_dataset_trains_its_dataset_row(pretrained):
    corpus_c = ForecastCorpus([sine_recording("c", "s0", 4, 3)])
    old = {k: v.clone() for k, v in pretrained.state_dict().items()}
    torch.manual_seed(5)
    zero_shot, _ = finetune(pretrained, corpus_c, "embedding", TrainConfig(**{**FT_CFG, "steps": 0}), device="cpu")
    torch.manual_seed(5)
    model, result = finetune(pretrained, corpus_c, "embedding", TrainConfig(**FT_CFG), device="cpu")
    assert result.best_step > 0
    assert model.datasets == ["a", "c"]
    new = model.state_dict()
    assert new["dataset_emb.weight"].shape[0] == 2
    assert torch.equal(new["dataset_emb.weight"][:1], old["dataset_emb.weight"])
    assert not torch.equal(new["dataset_emb.weight"][1], zero_shot.state_dict()["dataset_emb.weight"][1])


def test_finetune_mlp_embedding_mode_has_nothing_to_train(sine_corpus, corpus_b):
    model = make_model("MLP", sine_corpus, seed=0, hidden=16)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, result = finetune(model, corpus_b, "embedding", TrainConfig(**FT_CFG), device="cpu")
    assert len(result.history) == 1 and result.history[0]["step"] == 0
    assert result.steps_done == 0
    assert_same_state(tuned.state_dict(), old)
    assert tuned.session_index("a/s2") == 2
    assert result.history[0]["val_mse"] == pytest.approx(mean_dataset_val_mse(tuned, corpus_b), rel=1e-12)


def test_finetune_refuses_unknown_mode(pretrained, corpus_b):
    with pytest.raises(ValueError, match="mode must be one of"):
        finetune(pretrained, corpus_b, "heads")


# -- batches -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_corpus():
    rng = np.random.default_rng(4)

    def rec(sp, se, u):
        return make_recording(rng.standard_normal((400, u)).astype(np.float32), sampling_rate_hz=1.0, species=sp, session=se)

    # dataset "m" holds corpus sessions 0 and 2, dataset "n" session 1
    return ForecastCorpus({"m/s0": rec("m", "s0", 9), "n/s0": rec("n", "s0", 4), "m/s1": rec("m", "s1", 3)})


def find_start(a: np.ndarray, ctx: np.ndarray, hi: int) -> int:
    starts = [t for t in range(0, hi - (C + P) + 1) if np.array_equal(a[t : t + C], ctx)]
    assert len(starts) == 1, starts
    return starts[0]


def test_sample_with_max_units(mixed_corpus):
    assert mixed_corpus.datasets == ["m", "n"]
    assert mixed_corpus.dataset_sessions("m") == [0, 2]
    raw = {i: np.asarray(mixed_corpus.recordings[s.name]["activity"].values, dtype=np.float32) for i, s in enumerate(mixed_corpus.sessions)}
    gen = torch.Generator().manual_seed(0)
    b = mixed_corpus.sample("m", 24, gen, max_units=5)
    assert b.context.shape == (24, C, 5) and b.target.shape == (24, P, 5)
    assert b.unit_index is not None and b.unit_index.shape == (24, 5)
    assert set(b.session.tolist()) == {0, 2}
    subsets = set()
    for i in range(24):
        s = int(b.session[i])
        n_units = mixed_corpus.sessions[s].n_units
        n = int(b.unit_mask[i].sum())
        assert n == min(n_units, 5)
        assert b.unit_mask[i, :n].all() and not b.unit_mask[i, n:].any()
        idx = b.unit_index[i, :n].numpy()
        assert (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < n_units
        if n_units <= 5:
            assert idx.tolist() == list(range(n_units))
        else:
            subsets.add(tuple(idx.tolist()))
        t = find_start(raw[s][:, idx], b.context[i, :, :n].numpy(), hi=240)
        np.testing.assert_array_equal(b.target[i, :, :n].numpy(), raw[s][t + C : t + C + P, idx])
        assert (b.context[i, :, n:] == 0).all() and (b.target[i, :, n:] == 0).all()
    assert len(subsets) > 1  # different windows keep different random subsets

    # the other dataset maps to its own corpus session
    bn = mixed_corpus.sample("n", 4, gen, max_units=5)
    assert bn.session.tolist() == [1, 1, 1, 1]
    assert bn.unit_index.tolist() == [[0, 1, 2, 3]] * 4
    # without max_units: every unit, no unit_index
    full = mixed_corpus.sample("m", 8, gen)
    assert full.unit_index is None and full.context.shape[2] == 9
    for i in range(8):
        s = int(full.session[i])
        assert int(full.unit_mask[i].sum()) == mixed_corpus.sessions[s].n_units
        find_start(raw[s], full.context[i, :, : mixed_corpus.sessions[s].n_units].numpy(), hi=240)


def test_sample_is_reproducible_from_the_generator(mixed_corpus):
    a = mixed_corpus.sample("m", 6, torch.Generator().manual_seed(3), max_units=4)
    b = mixed_corpus.sample("m", 6, torch.Generator().manual_seed(3), max_units=4)
    assert torch.equal(a.context, b.context) and torch.equal(a.unit_index, b.unit_index) and torch.equal(a.session, b.session)


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(steps=-1), "steps must be >= 0"),
        (dict(batch_size=0), "batch_size"),
        (dict(eval_every=0), "eval_every"),
        (dict(lr=-1e-3), "lr and weight_decay"),
        (dict(clip=0.0), "clip > 0"),
        (dict(patience=0), "patience must be >= 1"),
        (dict(max_units=0), "max_units must be >= 1"),
    ],
)
def test_train_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_config_json_round_trip():
    cfg = TrainConfig(steps=7, patience=2, max_units=3)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_json({**cfg.to_json(), "momentum": 0.9})


# -- corpora without validation windows ----------------------------------------------------------


def test_training_without_validation_windows_does_not_discard_the_training():
    """300-frame recordings have 117 training windows but no validation window (60 frames <
    48 + 16). Training must either refuse such a corpus or keep what it learned; it must not
    return the untrained weights as "the best validation state"."""
    corpus = ForecastCorpus([sine_recording("a", "s0", 4, 0, n_time=300)])
    assert corpus.n_windows("train") == {"a": 117} and corpus.n_windows("val") == {"a": 0}
    model = make_model("MLP", corpus, seed=0, hidden=16)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = train(model, corpus, TrainConfig(steps=30, eval_every=10, batch_size=8, lr=1e-2), device="cpu")
    except ValueError as e:
        assert "valid" in str(e)  # refused with a message about validation windows: fine
        return
    assert result.history[-1]["train_loss"] < result.history[1]["train_loss"]  # it did learn
    unchanged = all(torch.equal(v, init[k]) for k, v in model.state_dict().items())
    assert not unchanged, (
        f"train() returned the untrained weights: every validation MSE was {[h['val_mse'] for h in result.history]} "
        f"so the step-0 state stayed 'best' (best_step={result.best_step})"
    )


# -- regularisers for short recordings ----------------------------------------------------------


def test_frozen_unit_embeddings_stay_at_init_but_finetuning_trains_new_rows(sine_corpus, corpus_b):
    model = make_model("POCO", sine_corpus, seed=0, unit_embedding_lr=0.0, **POCO_SMALL)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, sine_corpus, TrainConfig(steps=20, batch_size=16, eval_every=10, lr=3e-3), device="cpu")
    after = model.state_dict()
    assert torch.equal(after["unit_emb.weight"], init["unit_emb.weight"])  # lr multiplier 0
    assert not torch.equal(after["session_emb.weight"], init["session_emb.weight"])
    assert not torch.equal(after["enc_atn.to_q.weight"], init["enc_atn.to_q.weight"])
    adapted, _ = finetune(model, corpus_b, "embedding", TrainConfig(steps=10, eval_every=5, batch_size=16, lr=3e-3), device="cpu")
    n_old = model.n_units_total
    fresh = adapted.unit_emb.weight[n_old:]
    assert torch.equal(adapted.unit_emb.weight[:n_old], after["unit_emb.weight"])
    assert fresh.abs().sum() > 0 and fresh.shape[0] == corpus_b.sessions[0].n_units
    # the new rows moved away from their (random) initialisation: fine-tuning ignores the multiplier
    adapted0, _ = finetune(model, corpus_b, "embedding", TrainConfig(steps=0, eval_every=5, batch_size=16), device="cpu")
    assert not torch.equal(adapted0.unit_emb.weight[n_old:], fresh)


def test_token_noise_acts_in_training_only(sine_corpus):
    model = make_model("POCO", sine_corpus, seed=0, token_noise=0.5, **POCO_SMALL)
    train(model, sine_corpus, TrainConfig(steps=5, batch_size=16, eval_every=5, lr=3e-3), device="cpu")
    ctx, _, _ = next(sine_corpus.session_windows("test", 0, batch_size=4))
    sess = torch.zeros(4, dtype=torch.int64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ctx, sess), model(ctx, sess))
        model.train()
        model.hp["ffn_dropout"] = model.hp["latent_dropout"] = 0.0
        for mod in model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        assert not torch.equal(model(ctx, sess), model(ctx, sess))  # noise on the encoder's tokens


def labelled(rec, labels):
    return rec.assign_coords(label=("unit", np.array(labels, dtype=object)))


def test_finetune_label_initialisation(pretrained):
    """init="labels": a new unit whose label the model knows (same dataset) starts from that unit's
    embedding row; unlabelled units, unknown labels and other datasets start fresh."""
    a_labels = ["AVAL", "AVAR", "", "RIML", "SMDD", "AVAL"]  # AVAL twice: the mean of both rows
    model = copy.deepcopy(pretrained)
    model.sessions[0] = SessionInfo("a/s0", 6, "a", labels=tuple(a_labels))
    recs = [labelled(sine_recording("a", "s2", 5, 2), ["RIML", "", "AVAL", "XYZ", "SMDD"]),
            labelled(sine_recording("c", "s9", 2, 4), ["RIML", "AVAR"])]  # fmt: skip
    corpus = ForecastCorpus(recs)
    assert corpus.sessions[0].labels == ("RIML", "", "AVAL", "XYZ", "SMDD")
    cfg = TrainConfig(steps=0, eval_every=5, batch_size=16, seed=3)
    fresh, r0 = finetune(model, corpus, "embedding", cfg, device="cpu")
    init, r1 = finetune(model, corpus, "embedding", cfg, device="cpu", init="labels")
    assert r0.info == {"init": "random", "label_matched_units": 0, "new_units": 7}
    assert r1.info == {"init": "labels", "label_matched_units": 3, "new_units": 7}
    old = model.unit_emb.weight
    w, f = init.unit_emb.weight, fresh.unit_emb.weight
    assert torch.equal(w[:6], old) and torch.equal(f[:6], old)
    assert torch.equal(w[6], old[3])  # RIML
    assert torch.allclose(w[8], (old[0] + old[5]) / 2)  # AVAL: mean of both
    assert torch.equal(w[10], old[4])  # SMDD
    for row in (7, 9, 11, 12):  # unlabelled, unknown label, another dataset's units
        assert torch.equal(w[row], f[row])
    assert r1.history[0]["val_mse"] != r0.history[0]["val_mse"]
    with pytest.raises(ValueError, match="init must be one of"):
        finetune(model, corpus, "embedding", cfg, device="cpu", init="nearest")


def test_label_matches_follow_the_species_not_the_dataset():
    """Labels match across datasets of one species ("worm", the demo corpus's C. elegans, and a
    real "C_elegans" recording whose species attr is "C. elegans"), never across species; a label
    that two units of the new session carry (URADL) matches neither of them; older sessions'
    duplicates are all sources."""
    from pocoviz.forecast import build_model

    old = [
        SessionInfo("worm/w0", 4, "worm", labels=("AVAL", "URADL", "RIML", "AVAL")),  # an older card: no species
        SessionInfo("zebrafish/f0", 2, "zebrafish", labels=("AVAL", "RIML")),
    ]
    model = build_model("NLinear", old)
    first = len(model.sessions)
    model.add_sessions([
        SessionInfo("C_elegans/x", 5, "C_elegans", labels=("RIML", "AVAL", "URADL", "URADL", ""), species="C. elegans"),
        SessionInfo("fly/y", 2, "fly", labels=("AVAL", "RIML"), species="Drosophila melanogaster"),
        SessionInfo("c_elegans_lab2/z", 2, "c_elegans_lab2", labels=("URADL", "AVAL"), species="c elegans"),
    ])  # fmt: skip
    x, z = int(model.unit_offset[2]), int(model.unit_offset[4])
    assert model.label_matches(first) == [(x + 0, [2]), (x + 1, [0, 3]), (z + 0, [1]), (z + 1, [0, 3])]
    assert [s.species_key for s in model.sessions] == ["c elegans", "d rerio", "c elegans", "drosophila melanogaster", "c elegans"]


def test_finetune_leaves_a_duplicated_new_label_fresh(pretrained):
    """init="labels" on a recording that names one neuron twice (two traces labelled AVAL): neither
    trace is initialised from AVAL (one of them is not AVAL); the other known labels are."""
    model = copy.deepcopy(pretrained)
    model.sessions[0] = SessionInfo("a/s0", 6, "a", labels=("AVAL", "AVAR", "", "RIML", "SMDD", ""))
    rec = labelled(sine_recording("a", "s2", 5, 2), ["AVAL", "RIML", "AVAL", "", "SMDD"])
    corpus = ForecastCorpus([rec])
    cfg = TrainConfig(steps=0, eval_every=5, batch_size=16, seed=3)
    fresh, _ = finetune(model, corpus, "embedding", cfg, device="cpu")
    init, res = finetune(model, corpus, "embedding", cfg, device="cpu", init="labels")
    assert res.info["label_matched_units"] == 2
    old, w, f = model.unit_emb.weight, init.unit_emb.weight, fresh.unit_emb.weight
    assert torch.equal(w[7], old[3]) and torch.equal(w[10], old[4])  # RIML, SMDD
    for row in (6, 8, 9):  # AVAL twice, unlabelled
        assert torch.equal(w[row], f[row])


def test_shipped_poco_demo_adapts_a_real_worm_by_label(flavell_files):
    """The shipped demo POCO (trained on the synthetic corpus's dataset "worm") matches the
    NeuroPAL labels of a real Flavell-lab worm (dataset C_elegans): the Forecast tab's "Adapt"
    reported 0 matched by label before labels matched by species."""
    from pocoviz.forecast import load_model
    from pocoviz.recordings import open_recording

    model = load_model("poco_demo", device="cpu")
    demo_labels = {lab for s in model.sessions if s.dataset == "worm" for lab in (s.labels or ()) if lab}
    assert len(demo_labels) > 50  # the demo worms carry real neuron names
    ds = open_recording(flavell_files[0])
    corpus = ForecastCorpus([ds], strides={"train": 1, "val": 16, "test": 16})
    labels = [lab for lab in corpus.sessions[0].labels if lab]
    want = sum(1 for lab in labels if lab in demo_labels and labels.count(lab) == 1)
    assert want > 0
    cfg = TrainConfig(steps=1, eval_every=1, batch_size=4, max_units=32, progress=False)
    adapted, res = finetune(model, corpus, "embedding", cfg, device="cpu", init="labels")
    assert res.info["label_matched_units"] == want
    assert res.info["new_units"] == ds.sizes["unit"]


def test_session_labels_are_validated():
    with pytest.raises(ValueError, match="labels must be 3 strings"):
        SessionInfo("a/s", 3, "a", labels=("x", "y"))
    assert SessionInfo("a/s", 2, "a", labels=("", "")).labels is None  # nothing identified
    assert SessionInfo("a/s", 2, "a", labels=["x", ""]) == SessionInfo("a/s", 2, "a")  # identity ignores labels
    assert SessionInfo.from_json(SessionInfo("a/s", 2, "a", labels=["x", ""]).to_json()).labels == ("x", "")


def test_finetune_initialisation_depends_on_the_seed_only(pretrained, corpus_b):
    """Fresh rows for the new session come from the fine-tuning seed, not from whatever ran
    before, so the zero-shot entry of a learning curve is reproducible."""
    cfg = TrainConfig(steps=0, eval_every=5, batch_size=16, seed=3)
    a, ra = finetune(pretrained, corpus_b, "embedding", cfg, device="cpu")
    torch.randn(100)  # unrelated RNG use in between
    b, rb = finetune(pretrained, corpus_b, "embedding", cfg, device="cpu")
    assert torch.equal(a.unit_emb.weight, b.unit_emb.weight)
    assert ra.history[0]["val_score"] == rb.history[0]["val_score"]
    c, _ = finetune(pretrained, corpus_b, "embedding", TrainConfig(steps=0, eval_every=5, batch_size=16, seed=4), device="cpu")
    assert not torch.equal(a.unit_emb.weight, c.unit_emb.weight)


# -- warm start: POCO's FiLM head from a trained MLP --------------------------------------------


def test_poco_started_from_an_mlp_forecasts_what_the_mlp_does(sine_corpus):
    from pocoviz.forecast import fit

    mlp = make_model("MLP", sine_corpus, seed=0, hidden=32)
    train(mlp, sine_corpus, TrainConfig(steps=10, eval_every=5, seed=0), device="cpu")
    poco = make_model("POCO", sine_corpus, seed=0, **POCO_SMALL)
    ctx = torch.randn(4, C, 6)
    sess = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        before = poco.eval()(ctx, sess)
        poco.start_from_mlp(mlp)
        after, want = poco(ctx, sess), mlp.eval()(ctx, sess)
    assert not torch.allclose(before, want, atol=1e-3)
    torch.testing.assert_close(after, want, atol=1e-5, rtol=1e-5)
    # the head of another width does not fit
    with pytest.raises(ValueError, match="do not fit"):
        make_model("POCO", sine_corpus, seed=0, **{**POCO_SMALL, "hidden": 16}).start_from_mlp(mlp)
    # through fit: step 0 of POCO's run is the MLP's best validation state
    cfg = TrainConfig(steps=20, eval_every=10, seed=1)
    model, run = fit("POCO", sine_corpus, cfg, warm_start="mlp", device="cpu", **POCO_SMALL)
    assert run.info["warm_start"]["kind"] == "MLP"
    assert run.history[0]["val_mse"] == pytest.approx(run.info["warm_start"]["best_val_mse"], rel=1e-5)
    assert run.best_val_mse <= run.history[0]["val_mse"]
    with pytest.raises(ValueError, match="warm_start"):
        fit("POCO", sine_corpus, cfg, warm_start="poco", device="cpu")
    with pytest.raises(ValueError, match="FiLM head"):
        fit("NLinear", sine_corpus, cfg, warm_start="mlp", device="cpu")

"""TSMixer, TexFilter and the multi-session AR Transformer (POCO spec §4.1): shapes, padding
invariance, rebuild from config, growing sessions, learning a noisy sine, the AR training loss."""

from __future__ import annotations

import math

import pytest
import torch

from pocoviz.forecast.base import MODELS, SessionInfo, masked_mse
from pocoviz.forecast.mixers import MultiARTransformer, TexFilter, TSMixer

torch.set_num_threads(1)

C, P = 48, 16
SESSIONS = [SessionInfo("a/s5", 5, "a"), SessionInfo("b/s7", 7, "b")]

SMALL = {
    "TSMixer": (TSMixer, {"n_blocks": 2, "ff_dim": 16, "dropout": 0.1}),
    "TexFilter": (TexFilter, {"embed": 32, "hidden": 64, "dropout": 0.3, "sparsity": 0.01}),
    "MultiAR": (MultiARTransformer, {"hidden": 32, "n_layers": 2, "n_heads": 4, "ff": 64, "dropout": 0.1}),
}
PER_SESSION = ("TSMixer", "MultiAR")


def make(name: str, seed: int = 0, sessions=SESSIONS):
    cls, kw = SMALL[name]
    torch.manual_seed(seed)
    return cls(sessions, **kw)


def padded_batch(seed: int = 1, extra: int = 2, fill: float = 0.0):
    """Two samples of session 0 (5 units) and two of session 1 (7 units), padded to 7 + extra
    columns; padded entries hold ``fill``."""
    g = torch.Generator().manual_seed(seed)
    U = 7 + extra
    x = torch.randn(4, C, U, generator=g)
    session = torch.tensor([0, 1, 0, 1])
    mask = torch.zeros(4, U, dtype=torch.bool)
    mask[[0, 2], :5] = True
    mask[[1, 3], :7] = True
    x = torch.where(mask[:, None, :], x, torch.full_like(x, fill))
    return x, session, mask


def sine_windows(n_per_session: int, seed: int, sessions=SESSIONS, noise: float = 0.1):
    """Noisy sines, one phase per unit, random window starts; returns context, target, session, mask."""
    g = torch.Generator().manual_seed(seed)
    U = max(s.n_units for s in sessions)
    ctx, tgt, sess, masks = [], [], [], []
    t = torch.arange(C + P, dtype=torch.float32)
    for i, s in enumerate(sessions):
        phase = torch.linspace(0, math.pi, s.n_units)
        for _ in range(n_per_session):
            t0 = float(torch.randint(0, 200, (1,), generator=g))
            x = torch.sin(2 * math.pi * (t[:, None] + t0) / 12 + phase[None, :])
            x = x + noise * torch.randn(x.shape, generator=g)
            full = torch.zeros(C + P, U)
            full[:, : s.n_units] = x
            m = torch.zeros(U, dtype=torch.bool)
            m[: s.n_units] = True
            ctx.append(full[:C])
            tgt.append(full[C:])
            sess.append(i)
            masks.append(m)
    return torch.stack(ctx), torch.stack(tgt), torch.tensor(sess), torch.stack(masks)


# -- (a) shapes, registry, config ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_padded_batch_of_two_sessions_gives_B_P_U(name):
    m = make(name)
    x, session, mask = padded_batch()
    y = m(x, session, mask)
    assert y.shape == (4, P, 9)
    assert torch.isfinite(y).all()


def test_kinds_are_registered_and_flags_set():
    assert MODELS["TSMixer"] is TSMixer and MODELS["TexFilter"] is TexFilter and MODELS["MultiAR_Transformer"] is MultiARTransformer
    for cls in (TSMixer, TexFilter, MultiARTransformer):
        assert cls.channel_mixing
    assert not TSMixer.supports_unit_subsets and not MultiARTransformer.supports_unit_subsets
    assert TexFilter.supports_unit_subsets


def test_default_config_follows_the_spec():
    assert TSMixer(SESSIONS).config() == {"context": C, "horizon": P, "n_blocks": 2, "ff_dim": 64, "dropout": 0.1, "revin": True}
    assert TexFilter(SESSIONS).config() == {"context": C, "horizon": P, "embed": 128, "hidden": 512, "dropout": 0.3, "sparsity": 0.01}
    assert MultiARTransformer(SESSIONS).config() == {
        "context": C,
        "horizon": P,
        "hidden": 512,
        "n_layers": 4,
        "n_heads": 8,
        "ff": 1024,
        "dropout": 0.1,
    }


def test_bad_hyper_parameters_are_refused():
    with pytest.raises(ValueError):
        MultiARTransformer(SESSIONS, hidden=30, n_heads=4)
    with pytest.raises(ValueError):
        TSMixer(SESSIONS, dropout=1.0)
    with pytest.raises(ValueError):
        TexFilter(SESSIONS, embed=0)


# -- (b) padding invariance -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("fill", [0.0, 100.0])
def test_padding_never_changes_a_real_unit(name, fill):
    m = make(name).eval()
    x, session, mask = padded_batch(fill=fill)
    with torch.no_grad():
        y = m(x, session, mask)
        for i in range(4):
            n = int(mask[i].sum())
            alone = m(x[i : i + 1, :, :n], session[i : i + 1])
            assert torch.allclose(y[i, :, :n], alone[0], atol=1e-5), (name, i)
            assert (y[i, :, n:] == 0).all()


def test_tsmixer_trains_on_a_single_sample_without_touching_running_stats():
    m = make("TSMixer").train()
    x, session, mask = padded_batch()
    bn = m.nets["0"].blocks[0].time_norm
    before = bn.running_mean.clone()
    y = m(x[:1, :, :5], session[:1])
    assert y.shape == (1, P, 5) and torch.isfinite(y).all()
    assert torch.equal(bn.running_mean, before)
    m(x, session, mask)  # a real batch updates them
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("name", PER_SESSION)
def test_per_session_models_need_every_unit_and_no_unit_index(name):
    m = make(name).eval()
    x, session, mask = padded_batch()
    short = mask.clone()
    short[:, 4:] = False  # session 1 samples now show only 4 of their 7 units
    with pytest.raises(ValueError, match="units"):
        m(x, session, short)
    unit_index = torch.arange(9).expand(4, 9)
    with pytest.raises(ValueError, match="unit subsets"):
        m(x, session, mask, unit_index)


def test_texfilter_accepts_unit_index_and_any_unit_count():
    m = make("TexFilter").eval()
    x, session, mask = padded_batch()
    with torch.no_grad():
        a = m(x, session, mask)
        b = m(x, session, mask, torch.arange(9).expand(4, 9))
    assert torch.equal(a, b)
    assert m(torch.randn(2, C, 1), torch.tensor([0, 0]), torch.tensor([[True], [True]])).shape == (2, P, 1)


# -- (c) rebuild from config --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_rebuild_from_config_and_state_dict_gives_identical_forecasts(name):
    m = make(name, seed=3)
    m.add_sessions([SessionInfo("x/new", 4, "x")])
    m2 = type(m)(m.sessions, **m.config())
    assert list(m2.state_dict()) == list(m.state_dict())
    m2.load_state_dict(m.state_dict())
    m.eval()
    m2.eval()
    x, session, mask = padded_batch()
    with torch.no_grad():
        assert torch.equal(m(x, session, mask), m2(x, session, mask))
        x4 = torch.randn(2, C, 4)
        assert torch.equal(m(x4, torch.tensor([2, 2])), m2(x4, torch.tensor([2, 2])))


# -- (d) growing sessions -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_add_sessions_grows_per_session_parameters_and_forecasts_the_new_session(name):
    m = make(name)
    n_before = sum(p.numel() for p in m.parameters())
    m.eval()
    (idx,) = m.add_sessions([SessionInfo("x/new", 4, "x")])
    assert idx == 2
    new = m.new_session_parameters(idx, 2)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(id(p) in names and rows is None for p, rows in new)
    n_after = sum(p.numel() for p in m.parameters())
    if name in PER_SESSION:
        assert new and n_after > n_before
        assert all(f".{idx}." in names[id(p)] for p, _ in new)
        assert not any(mod.training for mod in m.modules())  # new layers follow the model's eval mode
        assert not (set(map(id, (p for p, _ in new))) & set(map(id, (p for p, _ in m.new_session_parameters(0, 0)[: len(new)]))))
    else:
        assert new == [] and n_after == n_before
    assert set(m.head_parameter_names()) <= set(names.values())
    x = torch.randn(3, C, 4)
    with torch.no_grad():
        y = m(x, torch.full((3,), idx))
    assert y.shape == (3, P, 4) and torch.isfinite(y).all()
    # the new session batches with the old ones (padded to 7)
    xp = torch.zeros(2, C, 7)
    xp[0, :, :4] = x[0]
    xp[1] = torch.randn(C, 7)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, :4] = True
    mask[1] = True
    with torch.no_grad():
        yp = m(xp, torch.tensor([idx, 1]), mask)
    assert torch.allclose(yp[0, :, :4], y[0], atol=1e-5) and (yp[0, :, 4:] == 0).all()


# -- (e) learning --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "steps", "n_per_session"), [("TSMixer", 60, 16), ("TexFilter", 60, 16), ("MultiAR", 30, 12)])
def test_a_few_adam_steps_learn_a_noisy_sine(name, steps, n_per_session):
    """The noise floor is 0.01 against a start near 1: a model that learns gets far below 10 %."""
    m = make(name, seed=5)
    ctx, tgt, sess, mask = sine_windows(n_per_session, seed=7)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def losses() -> tuple[float, float]:
        m.eval()
        with torch.no_grad():
            return float(m.training_loss(ctx, tgt, sess, mask)), float(masked_mse(m(ctx, sess, mask), tgt, mask))

    start, start_forecast = losses()
    for _ in range(steps):
        m.train()
        opt.zero_grad()
        m.training_loss(ctx, tgt, sess, mask).backward()
        opt.step()
    end, end_forecast = losses()
    assert end < 0.1 * start, (name, start, end)
    assert end_forecast < 0.1 * start_forecast, (name, start_forecast, end_forecast)  # the AR rollout too


# -- (f) the AR Transformer's teacher-forced loss -------------------------------------------------


def test_multiar_training_loss_is_finite_and_reaches_the_shared_core():
    m = make("MultiAR")
    ctx, tgt, sess, mask = sine_windows(3, seed=2)
    loss = m.training_loss(ctx, tgt, sess, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    core = [p.grad for p in m.core.parameters()]
    assert all(g is not None for g in core) and any(float(g.abs().sum()) > 0 for g in core)
    assert m.pos.grad is not None and float(m.pos.grad.abs().sum()) > 0
    for key in ("0", "1"):
        assert float(m.inp[key].weight.grad.abs().sum()) > 0 and float(m.out[key].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="unit subsets"):
        m.training_loss(ctx, tgt, sess, mask, torch.arange(7).expand(len(sess), 7))
    with pytest.raises(ValueError, match="target"):
        m.training_loss(ctx, tgt[:, :5], sess, mask)


def test_multiar_loss_is_the_masked_next_step_mse_and_ignores_padding():
    m = make("MultiAR").eval()
    ctx, tgt, sess, mask = sine_windows(2, seed=4)
    with torch.no_grad():
        loss = m.training_loss(ctx, tgt, sess, mask)
        # by hand: per sample on its real units, mean over all real elements
        total, count = 0.0, 0
        for i in range(len(sess)):
            n = int(mask[i].sum())
            seq = torch.cat([ctx[i, :, :n], tgt[i, :, :n]])[None]
            pred = m.next_step(seq[:, :-1], int(sess[i]))
            total += float(((pred - seq[:, 1:]) ** 2).sum())
            count += n * (C + P - 1)
        assert math.isclose(float(loss), total / count, rel_tol=1e-5)
        # garbage in the padded columns changes nothing
        dirty_ctx = torch.where(mask[:, None, :], ctx, torch.full_like(ctx, 50.0))
        dirty_tgt = torch.where(mask[:, None, :], tgt, torch.full_like(tgt, -50.0))
        assert math.isclose(float(m.training_loss(dirty_ctx, dirty_tgt, sess, mask)), float(loss), rel_tol=1e-6)


def test_multiar_rollout_feeds_back_its_own_predictions():
    m = make("MultiAR").eval()
    x = torch.randn(2, C, 5)
    with torch.no_grad():
        y = m(x, torch.tensor([0, 0]))
        seq = torch.cat([x, y[:, :-1]], dim=1)
        steps = m.next_step(seq, 0)[:, C - 1 :]
    assert torch.allclose(steps, y, atol=1e-5)


# -- TSMixer's reversible instance normalisation -------------------------------------------------


@pytest.mark.parametrize("revin", [True, False])
def test_tsmixer_revin_makes_forecasts_follow_each_units_level_and_scale(revin):
    """With RevIN (TSMixer's normalisation, on by default) a unit's forecast moves with an affine
    change of its own context: f(a x + b) = a f(x) + b per unit, a > 0. Without it, it does not."""
    torch.manual_seed(0)
    m = TSMixer(SESSIONS[:1], n_blocks=2, ff_dim=16, revin=revin).eval()
    x = torch.randn(3, C, 5)
    a = torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0])
    b = torch.tensor([-3.0, 0.0, 10.0, 1.0, -0.5])
    with torch.no_grad():
        y = m(x, torch.zeros(3, dtype=torch.long))
        y2 = m(x * a + b, torch.zeros(3, dtype=torch.long))
    same = torch.allclose(y2, y * a + b, atol=1e-3, rtol=1e-4)
    assert same == revin

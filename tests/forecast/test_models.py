"""The forecaster contract across every model kind: output shapes, padding invariance, POCO's
zero-initialised FiLM, parameter counts of the spec, rotary time embeddings, DLinear / NLinear
details, input validation, and growing POCO's embedding tables for new sessions."""

from __future__ import annotations

import math

import pytest
import torch

from pocoviz.forecast import build_model, model_kinds
from pocoviz.forecast.base import SessionInfo
from pocoviz.forecast.poco import EMBEDDING_STD, RotaryTime, rotate
from pocoviz.forecast.simple import DLinear, NLinear, moving_average

torch.set_num_threads(1)

C, P = 48, 16
SESSIONS = [SessionInfo("a/s5", 5, "a"), SessionInfo("b/s7", 7, "b")]
POCO_SMALL = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=16)

#: small hyper-parameters for every registered kind (a new kind must be added here on purpose)
SMALL = {
    "POCO": POCO_SMALL,
    "POYO": POCO_SMALL,
    "UICO": POCO_SMALL,
    "MLP": dict(hidden=32),
    "MLP_L": dict(hidden=32),
    "NLinear": {},
    "DLinear": {},
    "copy-last": {},
    "TSMixer": dict(n_blocks=1, ff_dim=8),
    "TexFilter": dict(embed=16, hidden=32),
    "MultiAR_Transformer": dict(hidden=32, n_layers=1, n_heads=2, ff=32),
}
CHANNEL_INDEPENDENT_OR_MASKED = ("POCO", "POYO", "UICO", "MLP", "NLinear", "DLinear")


def make(kind: str, seed: int = 0, sessions=SESSIONS):
    torch.manual_seed(seed)
    return build_model(kind, sessions, **SMALL[kind])


def train_a_little(model, steps: int = 5, seed: int = 0):
    """A few Adam steps on random padded batches of both sessions, so that every weight (POCO's
    zero-initialised FiLM included) moves away from its initial value; returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    U = max(s.n_units for s in model.sessions)
    model.train()
    for _ in range(steps):
        session = torch.arange(len(model.sessions)).repeat(2)
        counts = torch.tensor([model.sessions[s].n_units for s in session.tolist()])
        mask = torch.arange(U)[None, :] < counts[:, None]
        x = torch.randn(len(session), C, U, generator=g) * mask[:, None, :]
        y = torch.randn(len(session), P, U, generator=g) * mask[:, None, :]
        opt.zero_grad()
        model.training_loss(x, y, session, mask).backward()
        opt.step()
    return model.eval()


def padded_pair(fill: float, seed: int = 7):
    """Sample 0 of session 0 (5 units) and sample 1 of session 1 (7 units), padded to 9 columns
    with ``fill``; also returns the unpadded samples."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, C, 5, generator=g)
    x1 = torch.randn(1, C, 7, generator=g)
    U = 9
    x = torch.full((2, C, U), float(fill))
    x[0, :, :5] = x0[0]
    x[1, :, :7] = x1[0]
    mask = torch.zeros(2, U, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, :7] = True
    return x, torch.tensor([0, 1]), mask, x0, x1


# -- shapes -----------------------------------------------------------------------------------


def test_every_kind_has_small_settings_here():
    assert set(model_kinds()) == set(SMALL), "a model kind was added or removed: give it small test settings in SMALL"


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_padded_two_session_batch_gives_B_P_U(kind):
    model = make(kind).eval()
    x, session, mask, _, _ = padded_pair(fill=0.0)
    with torch.no_grad():
        out = model(x, session, mask)
    assert out.shape == (2, P, 9)
    assert torch.isfinite(out).all()
    # padded columns are exactly zero for every kind
    assert torch.equal(out[0, :, 5:], torch.zeros(P, 4))
    assert torch.equal(out[1, :, 7:], torch.zeros(P, 2))
    # and the real units are forecast (not all zero)
    assert out[0, :, :5].abs().sum() > 0 and out[1, :, :7].abs().sum() > 0


# -- padding ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_models():
    return {kind: train_a_little(make(kind)) for kind in CHANNEL_INDEPENDENT_OR_MASKED}


@pytest.mark.parametrize("fill", [0.0, 1e3])
@pytest.mark.parametrize("kind", CHANNEL_INDEPENDENT_OR_MASKED)
def test_padding_never_changes_a_real_unit(trained_models, kind, fill):
    model = trained_models[kind]
    assert not model.training
    if hasattr(model, "film_alpha"):
        for lin in (model.film_alpha, model.film_beta):
            assert lin.weight.abs().max() > 0 and lin.bias.abs().max() > 0
    x, session, mask, x0, x1 = padded_pair(fill)
    with torch.no_grad():
        batched = model(x, session, mask)
        alone0 = model(x0, torch.tensor([0]))
        alone1 = model(x1, torch.tensor([1]))
    assert alone0.shape == (1, P, 5) and alone1.shape == (1, P, 7)
    torch.testing.assert_close(batched[0, :, :5], alone0[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1, :, :7], alone1[0], atol=1e-5, rtol=0)
    assert torch.equal(batched[0, :, 5:], torch.zeros(P, 4))
    assert torch.equal(batched[1, :, 7:], torch.zeros(P, 2))


def test_poco_unit_index_arange_equals_none(trained_models):
    model = trained_models["POCO"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, C, 7, generator=g)
    session = torch.tensor([1, 1, 1])
    with torch.no_grad():
        plain = model(x, session)
        indexed = model(x, session, None, torch.arange(7).expand(3, 7))
    assert torch.equal(plain, indexed)


def test_poco_unit_index_selects_embedding_rows(trained_models):
    model = trained_models["POCO"]
    session = torch.tensor([1, 1])
    idx = torch.tensor([[0, 2, 5], [1, 3, 6]])
    u = model.unit_embeddings(session, idx)
    off = int(model.unit_offset[1])
    extra = model.session_emb.weight[1] + model.dataset_emb.weight[model.session_dataset[1]]
    torch.testing.assert_close(u, model.unit_emb.weight[off + idx] + extra, atol=0, rtol=0)

    # the same 3 context columns named as different units give different forecasts
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, C, 3, generator=g).expand(2, C, 3).contiguous()
    mask = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        out = model(x, session, mask, idx)
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_poco_is_equivariant_to_permuting_units_with_their_index(trained_models):
    """Attention over unit tokens is a set operation: permuting the columns together with the
    unit_index that names them permutes the forecast the same way."""
    model = trained_models["POCO"]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, C, 7, generator=g)
    session = torch.tensor([1, 1])
    perm = torch.tensor([3, 0, 6, 2, 5, 1, 4])
    with torch.no_grad():
        ref = model(x, session)
        out = model(x[:, :, perm], session, torch.ones(2, 7, dtype=torch.bool), perm.expand(2, 7))
    torch.testing.assert_close(out, ref[:, :, perm], atol=1e-5, rtol=0)


# -- zero-initialised FiLM ----------------------------------------------------------------------


def test_fresh_poco_forecasts_its_output_bias_everywhere():
    model = make("POCO").eval()
    for lin in (model.film_alpha, model.film_beta):
        assert torch.equal(lin.weight, torch.zeros_like(lin.weight))
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, C, 7, generator=g)
    session = torch.tensor([0, 1, 0, 1])
    mask = torch.arange(7)[None, :] < torch.tensor([5, 7, 5, 7])[:, None]
    x = x * mask[:, None, :]
    with torch.no_grad():
        out = model(x, session, mask)
    bias = model.out_proj.bias.detach()
    assert bias.abs().max() > 0  # a random bias: the check below is not about zeros
    expected = bias[None, :, None].expand(4, P, 7) * mask[:, None, :]
    assert torch.equal(out, expected)


def test_fresh_poyo_output_varies_across_units():
    model = make("POYO").eval()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, C, 7, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([1, 1]))
    assert out.std(dim=2).min() > 1e-4


# -- parameter counts (spec §1.6, §1.8) ---------------------------------------------------------


def n_params(model, skip=()):
    return sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] not in skip)


def test_poco_default_parameter_count_matches_the_spec():
    model = build_model("POCO", [SessionInfo("a/s", 3, "a")])
    groups: dict[str, int] = {}
    for n, p in model.named_parameters():
        groups[n.split(".")[0]] = groups.get(n.split(".")[0], 0) + p.numel()
    encoder = sum(groups[k] for k in ("enc_atn", "enc_ffn", "process", "dec_atn", "dec_ffn"))
    head = sum(groups[k] for k in ("in_proj", "film_alpha", "film_beta", "out_proj"))
    assert encoder == 1_185_536
    assert groups["input_proj"] == 2_176
    assert groups["latent_emb"] == 1_024
    assert head == 330_768
    assert n_params(model, skip=("unit_emb", "session_emb", "dataset_emb")) == 1_519_504
    # embedding tables: one row per unit, session and dataset, d = 128
    assert (groups["unit_emb"], groups["session_emb"], groups["dataset_emb"]) == (3 * 128, 128, 128)


def test_mlp_parameter_counts_match_the_spec():
    s = [SessionInfo("a/s", 3, "a")]
    # Linear(48, 1024) + Linear(1024, 16)
    assert n_params(build_model("MLP", s)) == 48 * 1024 + 1024 + 1024 * 16 + 16 == 66_576
    # Linear(48, 2048) + Linear(2048, 2048) + Linear(2048, 16): "4.33 M"
    n = n_params(build_model("MLP_L", s))
    assert n == 48 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 16 + 16 == 4_329_488
    assert round(n / 1e6, 2) == 4.33


# -- rotary time embeddings ----------------------------------------------------------------------


def test_rotate_preserves_norms():
    g = torch.Generator().manual_seed(0)
    rot = RotaryTime(16, t_min=0.1, t_max=100.0)
    x = torch.randn(2, 3, 5, 16, generator=g)
    angles = rot(torch.tensor([0.0, 1.0, 7.0, 33.0, 80.0]))[None]
    assert angles.shape == (1, 5, 16)
    y = rotate(x, angles)
    assert not torch.allclose(x, y)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    # rotating back by -angles restores x
    torch.testing.assert_close(rotate(y, -angles), x, atol=1e-4, rtol=0)


def test_rotated_dot_product_depends_only_on_the_time_difference():
    g = torch.Generator().manual_seed(1)
    rot = RotaryTime(16, t_min=0.1, t_max=100.0)
    q = torch.randn(1, 1, 1, 16, generator=g)
    k = torch.randn(1, 1, 1, 16, generator=g)
    q, k = q / q.norm(), k / k.norm()

    def dot(t1: float, t2: float) -> float:
        qr = rotate(q, rot(torch.tensor([t1]))[None])
        kr = rotate(k, rot(torch.tensor([t2]))[None])
        return float((qr * kr).sum())

    base = dot(5.0, 2.0)
    for shift in (3.0, 11.0):
        assert dot(5.0 + shift, 2.0 + shift) == pytest.approx(base, abs=1e-3)
    # and it does depend on the difference
    assert abs(dot(5.0, 2.0) - dot(5.0, 4.0)) > 1e-2
    assert abs(dot(0.0, 0.0) - float((q * k).sum())) < 1e-6


@pytest.mark.parametrize("dim_head", [8, 16, 64])
def test_rotary_frequencies(dim_head):
    t_min, t_max = 0.1, 100.0
    rot = RotaryTime(dim_head, t_min=t_min, t_max=t_max)
    f = rot.inv_freq
    assert f.shape == (dim_head // 2,)
    q = dim_head // 4
    assert (f[:q] > 0).all()
    assert torch.equal(f[q:], torch.zeros(dim_head // 2 - q))
    periods = (2 * math.pi / f[:q].double()).tolist()
    assert periods[0] == pytest.approx(t_min, rel=1e-6)
    assert all(b > a for a, b in zip(periods, periods[1:]))
    assert periods[-1] < t_max
    if q > 1:
        ratios = [b / a for a, b in zip(periods, periods[1:])]
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-5)  # geometric spacing
    # each rotation pair shares one angle
    a = rot(torch.tensor([0.0, 3.0, 10.0]))
    assert a.shape == (3, dim_head)
    assert torch.equal(a[:, 0::2], a[:, 1::2])


def test_rotary_needs_dim_head_multiple_of_4():
    with pytest.raises(ValueError, match="multiple of 4"):
        RotaryTime(6)


# -- DLinear / NLinear ---------------------------------------------------------------------------


def test_dlinear_default_kernel_and_moving_average():
    model = DLinear(SESSIONS)
    assert model.kernel == 25
    assert len(model.trend) == len(model.seasonal) == 2  # one pair per session
    const = torch.full((2, C, 3), 1.75)
    torch.testing.assert_close(moving_average(const, 25), const, atol=1e-6, rtol=0)
    # a centred average keeps a ramp in the interior and repeats the edges outside it
    ramp = torch.arange(C, dtype=torch.float32)[None, :, None].expand(1, C, 2)
    ma = moving_average(ramp, 5)
    assert ma.shape == ramp.shape
    torch.testing.assert_close(ma[:, 2:-2], ramp[:, 2:-2], atol=1e-5, rtol=0)
    assert ma[0, 0, 0].item() == pytest.approx((0 + 0 + 0 + 1 + 2) / 5)
    with pytest.raises(ValueError, match="odd"):
        DLinear(SESSIONS, kernel=4)


def test_nlinear_shifts_with_a_constant_offset(trained_models):
    model = trained_models["NLinear"]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, C, 5, generator=g)
    s = torch.zeros(3, dtype=torch.int64)
    with torch.no_grad():
        a = model(x, s)
        b = model(x + 4.5, s)
    torch.testing.assert_close(b, a + 4.5, atol=1e-4, rtol=0)
    # not trivially the last value: the linear layer matters
    assert (a - x[:, -1:, :]).abs().max() > 1e-3


def test_nlinear_with_zero_weights_repeats_the_last_value():
    model = NLinear(SESSIONS)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        x = torch.randn(2, C, 5)
        out = model(x, torch.tensor([0, 0]))
    assert torch.equal(out, x[:, -1:, :].expand(2, P, 5))


# -- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["POCO", "MLP", "copy-last", "DLinear"])
def test_check_input_errors(kind):
    model = make(kind).eval()
    x = torch.zeros(2, C, 5)
    s = torch.tensor([0, 0])
    with pytest.raises(ValueError, match=r"context of 48 frames, got 40"):
        model(torch.zeros(2, 40, 5), s)
    with pytest.raises(ValueError, match=r"session index out of range 0\.\.1"):
        model(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"session index out of range"):
        model(x, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"unit_mask must be \(B, U\) = \(2, 5\)"):
        model(x, s, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"without a unit_mask.*U=5.*\[7, 7\]"):
        model(x, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"more units than the session has"):
        model(torch.zeros(1, C, 7), torch.tensor([0]), torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, C, U\)"):
        model(torch.zeros(C, 5), s)


# -- growing sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["a", "new"])
def test_poco_add_sessions_grows_tables_and_keeps_old_forecasts(dataset):
    model = train_a_little(make("POCO"))
    old = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, C, 7, generator=g)
    session = torch.tensor([0, 1])
    mask = torch.arange(7)[None, :] < torch.tensor([5, 7])[:, None]
    x = x * mask[:, None, :]
    with torch.no_grad():
        before = model(x, session, mask)

    n_new = 200
    idx = model.add_sessions([SessionInfo(f"{dataset}/big", n_new, dataset)])
    assert idx == [2]
    assert model.unit_emb.weight.shape == (12 + n_new, 16)
    assert model.unit_emb.num_embeddings == 12 + n_new
    assert model.session_emb.weight.shape == (3, 16)
    n_datasets = 2 if dataset == "a" else 3
    assert model.dataset_emb.weight.shape == (n_datasets, 16)
    assert model.session_units.tolist() == [5, 7, n_new]
    assert model.unit_offset.tolist() == [0, 5, 12]
    assert model.session_dataset.tolist() == [0, 1, 0 if dataset == "a" else 2]

    # old rows untouched, new rows ~ N(0, 0.02)
    assert torch.equal(model.unit_emb.weight[:12], old["unit_emb.weight"])
    assert torch.equal(model.session_emb.weight[:2], old["session_emb.weight"])
    assert torch.equal(model.dataset_emb.weight[:2], old["dataset_emb.weight"])
    new_rows = model.unit_emb.weight[12:].detach()
    assert 0.01 < float(new_rows.std()) < 0.04
    assert abs(float(new_rows.mean())) < 0.005
    assert EMBEDDING_STD == 0.02
    # every other parameter unchanged
    for k, v in model.state_dict().items():
        if k.split(".")[0] not in ("unit_emb", "session_emb", "dataset_emb"):
            assert torch.equal(v, old[k]), k

    with torch.no_grad():
        after = model(x, session, mask)
        new_out = model(torch.randn(1, C, n_new, generator=g), torch.tensor([2]))
    assert torch.equal(before, after)
    assert new_out.shape == (1, P, n_new) and torch.isfinite(new_out).all()

    with pytest.raises(ValueError, match="already known"):
        model.add_sessions([SessionInfo("a/s5", 5, "a")])

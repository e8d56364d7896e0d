"""Forecasts of a few units equal the whole pass's columns (pocoviz.forecast.unit_subset)."""

from __future__ import annotations

import pytest
import torch

from pocoviz.forecast import SessionInfo, build_model, model_kinds
from pocoviz.forecast.unit_subset import forecast_in_unit_slices, forecast_units, forecasts_units_apart

torch.set_num_threads(1)


def test_forecast_units_equals_the_whole_forward_pass():
    """POCO's encoder over every unit and its decoder for a few, per-unit models on the units'
    columns: the same numbers as a whole pass."""
    from pocoviz.controllers.models import LOADED_MODELS

    for key in ("poco_demo", "mlp_demo", "nlinear_demo"):
        model = LOADED_MODELS.get(key, None).eval()
        names = [s.name for s in model.sessions]
        session = names.index("worm/worm0") if "worm/worm0" in names else 0
        n = model.sessions[session].n_units
        g = torch.Generator().manual_seed(0)
        ctx = torch.randn(3, model.context, n, generator=g)
        units = [0, 7, 3, n - 1]
        with torch.inference_mode():
            full = model(ctx, torch.full((3,), session))[:, :, units]
            part = forecast_units(model, ctx, session, units)
        assert part.shape == (3, model.horizon, 4)
        torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", model_kinds())
def test_every_kind_gives_the_whole_pass_columns(kind):
    """Every model kind: a few units' forecasts equal the whole pass's columns, and the kinds that
    skip work (per-unit models; POCO/POYO's decoder) are the ones said to."""
    model = build_model(kind, [SessionInfo(name="a/b", n_units=40, dataset="a"), SessionInfo(name="a/c", n_units=30, dataset="a")]).eval()
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(2, model.context, 30, generator=g)
    with torch.inference_mode():
        full = model(ctx, torch.ones(2, dtype=torch.long))[:, :, [0, 5, 29]]
        part = forecast_units(model, ctx, 1, [0, 5, 29])
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    assert forecasts_units_apart(model) == (kind in {"POCO", "POYO", "MLP", "MLP_L", "NLinear", "copy-last"})


@pytest.mark.parametrize("key", ["poco_demo", "mlp_demo", "nlinear_demo"])
def test_unit_slices_equal_the_whole_forward_pass_and_can_give_way(key):
    """The whole pass in slices of units (POCO: the encoder once, the decoder per slice) equals the
    forward pass; a preemption between slices returns None."""
    from pocoviz.controllers.models import LOADED_MODELS

    model = LOADED_MODELS.get(key, None).eval()
    n = model.sessions[0].n_units
    ctx = torch.randn(2, model.context, n, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(ctx, torch.zeros(2, dtype=torch.int64))
        sliced = forecast_in_unit_slices(model, ctx, 0, max(1, n // 3))
        calls = []
        stopped = forecast_in_unit_slices(model, ctx, 0, max(1, n // 3), preempt=lambda: calls.append(1) or len(calls) > 1)
    assert sliced.shape == full.shape
    torch.testing.assert_close(sliced, full, rtol=1e-5, atol=1e-5)
    assert stopped is None and len(calls) == 2

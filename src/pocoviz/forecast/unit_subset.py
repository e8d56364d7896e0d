"""Forecasts of a few units from the whole population's context, for much less than a whole pass.

Playback needs the forecasts of the units on screen (8 of 1500, say) ahead of the cursor long before
the whole-population pass arrives. Per-unit models forecast those columns alone; POCO (and POYO)
run the population encoder over every unit, since every unit informs the latents, and the per-unit
decoder only for the units asked for. The numbers equal the whole pass's columns (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: models whose forecast of a unit reads only that unit's context (their forward pass on a few
#: units' columns gives exactly those units' forecasts)
PER_UNIT_KINDS = frozenset({"copy-last", "NLinear", "MLP", "MLP_L"})


def forecasts_units_apart(model: Any) -> bool:
    """Whether :func:`forecast_units` forecasts a few units for much less than every unit: a
    per-unit model, or POCO/POYO (a population encoder and a per-unit decoder)."""
    hp = getattr(model, "hp", None)
    return getattr(model, "kind", None) in PER_UNIT_KINDS or bool(hp and hp.get("encoder") and hasattr(model, "dec_atn"))


def forecast_units(model: Any, context: Any, session_index: int, units: list[int] | np.ndarray) -> Any:
    """Forecasts of ``units`` only, from the whole population's context.

    Parameters
    ----------
    model
        Any forecaster. A per-unit model (:data:`PER_UNIT_KINDS`) runs on the units' columns;
        for POCO (and POYO) the population encoder reads every unit of ``context`` and the
        per-unit decoder runs for ``units`` only (about a tenth of a whole pass for 8 of 1500
        units); other models forecast every unit and the columns are taken.
    context : tensor, shape (B, C, U)
    session_index
        The model's index of the recording's session.
    units
        Positional unit indices, k of them.

    Returns
    -------
    tensor, shape (B, P, k)
        The same numbers as ``model(context, session)[:, :, units]``.
    """
    import torch


    cols = torch.as_tensor(np.asarray(units, dtype=np.int64), device=context.device)
    B, C, U = context.shape
    session = torch.full((B,), int(session_index), dtype=torch.int64, device=context.device)
    if getattr(model, "kind", None) in PER_UNIT_KINDS:
        return model(context[:, :, cols], session, unit_mask=torch.ones((B, len(cols)), dtype=torch.bool, device=context.device))
    if not forecasts_units_apart(model) or len(cols) * 4 > U:
        return model(context, session)[:, :, cols]
    return decode_units(model, encode_population(model, context, session_index), context, cols)


def encode_population(model: Any, context: Any, session_index: int) -> dict[str, Any]:
    """POCO's (or POYO's) population encoder over every unit of ``context`` (B, C, U): the latents
    that :func:`decode_units` reads, and every unit's embedding."""
    import torch

    B, C, U = context.shape
    session = torch.full((B,), int(session_index), dtype=torch.int64, device=context.device)
    hp = model.hp
    mask = model.check_input(context, session, None)
    u = model.unit_embeddings(session, torch.arange(U, device=context.device).expand(B, U))
    # the population encoder (POCO.encode up to the latents): every unit's tokens
    K, n_tok = hp["token_length"], model.tokens_per_unit
    tokens = context.transpose(1, 2).reshape(B, U, n_tok, K)
    x = (model.input_proj(tokens) + u[:, :, None, :]).reshape(B, U * n_tok, -1)
    t_lat = model.rotary(model.latent_times)[None]
    lat = model.latent_emb.weight[None].expand(B, -1, -1)
    lat = lat + _attend_by_token_time(model.enc_atn, lat, t_lat, x, model.rotary(model.token_times), mask)
    lat = lat + model.enc_ffn(lat)
    for atn, ffn in model.process:
        lat = lat + model.latent_drop(atn(lat, t_lat))
        lat = lat + model.latent_drop(ffn(lat))
    return {"lat": lat, "t_lat": t_lat, "u": u}


def decode_units(model: Any, state: dict[str, Any], context: Any, units: Any) -> Any:
    """POCO's per-unit decoder for ``units`` (positional indices) from :func:`encode_population`'s
    state; returns (B, P, k), the columns of the whole forward pass."""
    import torch

    from pocoviz.forecast.base import rowwise

    C = context.shape[1]
    cols = torch.as_tensor(units, dtype=torch.int64, device=context.device)
    uk = state["u"][:, cols]
    t_q = model.rotary(torch.full((1,), float(C), device=context.device))[None]
    e = uk + model.dec_atn(uk, t_q, state["lat"], state["t_lat"])
    e = e + rowwise(model.dec_ffn, e)
    if model.hp["head"] == "film":
        y = rowwise(model._film, context[:, :, cols].transpose(1, 2), e)
    else:
        y = model.out_proj(e)
    return y.transpose(1, 2)


def forecast_in_unit_slices(model: Any, context: Any, session_index: int, slice_units: int, preempt: Any = None) -> Any:
    """The whole forward pass (B, P, U) computed ``slice_units`` units at a time (for POCO: the
    encoder once, then its decoder per slice; for a per-unit model: its forward per slice), so
    that ``preempt()`` (checked between slices) can stop it early: then None is returned."""
    import torch

    B, C, U = context.shape
    kind = getattr(model, "kind", None)
    if U <= slice_units or not forecasts_units_apart(model):
        session = torch.full((B,), int(session_index), dtype=torch.int64, device=context.device)
        return model(context, session)
    state = encode_population(model, context, session_index) if kind not in PER_UNIT_KINDS else None
    out = []
    for u0 in range(0, U, slice_units):
        if preempt is not None and preempt():
            return None
        cols = np.arange(u0, min(U, u0 + slice_units))
        out.append(forecast_units(model, context, session_index, cols) if state is None else decode_units(model, state, context, cols))
    return torch.cat(out, dim=2)


def _attend_by_token_time(atn: Any, lat: Any, lat_angles: Any, x: Any, token_angles: Any, unit_mask: Any) -> Any:
    """POCO's encoder cross-attention (``RotaryAttention`` with rotated values) from the latents to
    every unit's tokens, without rotating the tokens' keys and values.

    The tokens have only ``n`` distinct times (3 for a 48-frame context), so the rotations move to
    the few latent queries and per-time sums: with R(a) the rotation by angles a,
    ``(R(a_q) q)·(R(a_j) k_j) = (R(a_q - a_j) q)·k_j`` and ``Σ_j p_j R(a_j) v_j = Σ_τ R(a_τ) Σ_{j at τ} p_j v_j``.
    Same numbers as ``atn(lat, lat_angles, x, angles of every token, key mask)``, without the
    elementwise rotation of U·n keys and values that dominates that call on a large population.

    lat: (B, L, d); lat_angles: (1, L, D); x: (B, U·n, d), unit-major; token_angles: (n, D);
    unit_mask: (B, U) bool. Returns (B, L, d).
    """
    import torch

    from pocoviz.forecast.poco import rotate

    B, L, _ = lat.shape
    H, D = atn.heads, atn.dim_head
    n = token_angles.shape[0]
    q = atn.to_q(atn.norm(lat)).view(B, L, H, D).transpose(1, 2)  # (B, H, L, D)
    k, v = atn.to_kv(atn.norm_context(x)).view(B, x.shape[1], 2, H, D).permute(2, 0, 3, 1, 4)  # (B, H, U·n, D) each
    logits = torch.cat([rotate(q, lat_angles - token_angles[tau]) @ k[:, :, tau::n].transpose(-1, -2) for tau in range(n)], dim=-1)
    logits = logits * D**-0.5  # (B, H, L, n·U), time-major
    if not bool(unit_mask.all()):
        logits = logits.masked_fill(~unit_mask.repeat(1, n)[:, None, None, :], float("-inf"))
    p = logits.softmax(-1)
    U = x.shape[1] // n
    out = sum(rotate(p[..., tau * U : (tau + 1) * U] @ v[:, :, tau::n], token_angles[tau].expand(1, L, D)) for tau in range(n))
    out = rotate(out, -lat_angles)
    return atn.to_out(out.transpose(1, 2).reshape(B, L, H * D))

"""POCO: a population-conditioned univariate forecaster (POCO spec §1), and its ablations.

The population encoder is a Perceiver-IO with rotary time embeddings (POYO): every unit's
48-frame context is cut into 3 tokens of 16 frames, 8 learned latents read all tokens of a
sample through one cross-attention head, one self-attention block mixes the latents, and each
unit's own embedding queries the latents for one conditioning vector ``e_i``. That vector
FiLM-modulates a shared per-unit MLP forecaster whose α/β projections start at zero, so the
untrained model forecasts its output bias.

Sessions with different unit counts share a batch through padding: padded tokens are masked out
of attention with boolean key masks in :func:`torch.nn.functional.scaled_dot_product_attention`,
so padding never changes a real unit's forecast (POCO's own code chains sequences with xformers
block-diagonal masks instead, spec §1.4).

Ablations (spec §1.8): :class:`POYO` replaces the FiLM head by ``Linear(d, P)`` on ``e_i``;
:class:`UICO` drops the encoder and conditions the FiLM on the unit embedding alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Forecaster, SessionInfo, register, rowwise

EMBEDDING_STD = 0.02


# --------------------------------------------------------------------------------------------
# rotary time embedding
# --------------------------------------------------------------------------------------------


class RotaryTime(nn.Module):
    """Rotary embedding of continuous timestamps (spec §1.4).

    ``dim_head`` dimensions form ``dim_head / 2`` rotation pairs; only the first ``dim_head / 4``
    pairs rotate (the rest have frequency 0), with periods spaced geometrically from ``t_min``
    upwards towards ``t_max`` frames.
    """

    def __init__(self, dim_head: int, t_min: float = 0.1, t_max: float = 100.0) -> None:
        super().__init__()
        if dim_head % 4:
            raise ValueError(f"dim_head must be a multiple of 4 for rotary embeddings, got {dim_head}")
        half = dim_head // 2
        inv_freq = torch.zeros(half)
        k = torch.arange(0, half, 2, dtype=torch.float64)
        inv_freq[: dim_head // 4] = (2 * math.pi / (t_min * (t_max / t_min) ** (k / half))).float()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Angles (..., N, dim_head) for timestamps ``t`` (..., N); each pair shares an angle."""
        return (t[..., None].float() * self.inv_freq).repeat_interleave(2, dim=-1)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of the last dim of ``x`` (B, H, N, D) by ``angles`` (B|1, N, D)."""
    a = angles[:, None].to(x.dtype) if angles.ndim == 3 else angles.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * a.cos() + swapped * a.sin()


class RotaryAttention(nn.Module):
    """Pre-norm multi-head attention with rotary q/k (and optionally v) time embeddings.

    Cross-attention when ``context_dim`` is given (its own LayerNorm on the keys), self-attention
    otherwise. With ``rotate_value`` the values are rotated by the key time and the output is
    counter-rotated by the query time, so values carry relative time.
    """

    def __init__(
        self, dim: int, *, context_dim: int | None = None, heads: int = 1, dim_head: int = 64, dropout: float = 0.0, rotate_value: bool = False
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.cross = context_dim is not None
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if self.cross else None
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim if self.cross else dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = dropout
        self.rotate_value = rotate_value

    def forward(
        self,
        x: torch.Tensor,
        x_angles: torch.Tensor,
        context: torch.Tensor | None = None,
        context_angles: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        xn = self.norm(x)
        if self.cross:
            cn = self.norm_context(context)
        else:
            cn, context_angles = xn, x_angles
        B, Nq, _ = x.shape
        q = self.to_q(xn).view(B, Nq, self.heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(cn).view(B, cn.shape[1], 2, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, x_angles), rotate(k, context_angles)
        if self.rotate_value:
            v = rotate(v, context_angles)
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        if self.rotate_value:
            out = rotate(out, -x_angles)
        return self.to_out(out.transpose(1, 2).reshape(B, Nq, self.heads * self.dim_head))


class GEGLUFeedForward(nn.Module):
    """Pre-norm GEGLU block: ``LN -> Linear(d, 8d) -> a * GELU(gate) -> Dropout -> Linear(4d, d)``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.drop = nn.Dropout(dropout)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(self.drop(a * F.gelu(gate)))


# --------------------------------------------------------------------------------------------
# POCO
# --------------------------------------------------------------------------------------------


@register
class POCO(Forecaster):
    """POCO (spec §1): Perceiver-IO population encoder + FiLM-conditioned per-unit MLP.

    Parameters
    ----------
    sessions
        The sessions the model knows (one unit-embedding row per unit per session).
    token_length
        K, frames per token (16; the context must be a multiple).
    dim
        d, the encoder width (128).
    n_latents, depth
        Latents (8) and latent self-attention blocks (1).
    self_heads, cross_heads, dim_head
        16 heads for latent self-attention, 1 for the encoder/decoder cross-attention, 64 each.
    hidden, head_layers
        M (1024) and the number of hidden layers of the FiLM-conditioned MLP (1).
    ffn_dropout, latent_dropout, attn_dropout
        0.2 inside every feed-forward block, 0.4 on the latent self-block residual branches, 0.
    t_max
        Longest rotary period in frames (100); the shortest is ``t_max / 1000``.
    unit_dropout
        Training only: the probability that a unit's tokens are hidden from the encoder (its own
        forecast is still made and scored); 0 in the spec, a regulariser for short recordings.
    embedding_dropout
        Training only: dropout on the unit embedding (the decoder query and the token offset).
    token_noise
        Training only: standard deviation of Gaussian noise added to the encoder's input values
        (not to the MLP's own context), so the encoder cannot key on exact population states.
    unit_embedding_lr
        Learning-rate multiplier of the unit-embedding table (1: as the rest; 0: frozen at init).
    head
        ``"film"`` (POCO) or ``"linear"`` (POYO-only ablation: ``Linear(d, P)`` on ``e_i``).
    encoder
        False drops the population encoder and conditions on the unit embedding (UICO ablation).
    """

    kind = "POCO"

    def __init__(
        self,
        sessions: Sequence[SessionInfo | dict[str, Any]],
        *,
        token_length: int = 16,
        dim: int = 128,
        n_latents: int = 8,
        depth: int = 1,
        self_heads: int = 16,
        cross_heads: int = 1,
        dim_head: int = 64,
        hidden: int = 1024,
        head_layers: int = 1,
        ffn_dropout: float = 0.2,
        latent_dropout: float = 0.4,
        attn_dropout: float = 0.0,
        t_max: float = 100.0,
        unit_dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        token_noise: float = 0.0,
        unit_embedding_lr: float = 1.0,
        head: str = "film",
        encoder: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(sessions, **kw)
        if self.context % token_length:
            raise ValueError(f"context ({self.context}) must be a multiple of token_length ({token_length})")
        if head not in ("film", "linear"):
            raise ValueError(f"head must be 'film' or 'linear', got {head!r}")
        if not encoder and head != "film":
            raise ValueError("without the encoder only the FiLM head has an input")
        if not 0.0 <= unit_dropout < 1.0:
            raise ValueError(f"unit_dropout must be in [0, 1), got {unit_dropout}")
        self.hp = dict(
            token_length=int(token_length), dim=int(dim), n_latents=int(n_latents), depth=int(depth), self_heads=int(self_heads),
            cross_heads=int(cross_heads), dim_head=int(dim_head), hidden=int(hidden), head_layers=int(head_layers),
            ffn_dropout=float(ffn_dropout), latent_dropout=float(latent_dropout), attn_dropout=float(attn_dropout), t_max=float(t_max),
            unit_dropout=float(unit_dropout), embedding_dropout=float(embedding_dropout), token_noise=float(token_noise),
            unit_embedding_lr=float(unit_embedding_lr), head=head, encoder=bool(encoder),
        )  # fmt: skip
        d = self.hp["dim"]
        self.unit_emb = nn.Embedding(self.n_units_total, d)
        self.session_emb = nn.Embedding(len(self.sessions), d)
        self.dataset_emb = nn.Embedding(len(self.datasets), d)
        for e in (self.unit_emb, self.session_emb, self.dataset_emb):
            nn.init.normal_(e.weight, std=EMBEDDING_STD)
        self.register_buffer("session_units", torch.tensor([s.n_units for s in self.sessions], dtype=torch.int64), persistent=False)
        if encoder:
            self.tokens_per_unit = self.context // token_length
            self.input_proj = nn.Linear(token_length, d)
            self.latent_emb = nn.Embedding(n_latents, d)
            nn.init.normal_(self.latent_emb.weight, std=EMBEDDING_STD)
            self.rotary = RotaryTime(dim_head, t_min=t_max / 1000.0, t_max=t_max)
            self.enc_atn = RotaryAttention(d, context_dim=d, heads=cross_heads, dim_head=dim_head, dropout=attn_dropout, rotate_value=True)
            self.enc_ffn = GEGLUFeedForward(d, dropout=ffn_dropout)
            self.process = nn.ModuleList(
                nn.ModuleList(
                    [
                        RotaryAttention(d, heads=self_heads, dim_head=dim_head, dropout=attn_dropout, rotate_value=True),
                        GEGLUFeedForward(d, dropout=ffn_dropout),
                    ]
                )
                for _ in range(depth)
            )
            self.latent_drop = nn.Dropout(latent_dropout)
            self.dec_atn = RotaryAttention(d, context_dim=d, heads=cross_heads, dim_head=dim_head, dropout=attn_dropout, rotate_value=False)
            self.dec_ffn = GEGLUFeedForward(d, dropout=ffn_dropout)
            self.register_buffer("token_times", torch.arange(self.tokens_per_unit, dtype=torch.float32) * token_length, persistent=False)
            self.register_buffer("latent_times", torch.arange(n_latents, dtype=torch.float32) * (self.context / n_latents), persistent=False)
        self.embedding_drop = nn.Dropout(embedding_dropout)
        if head == "film":
            layers: list[nn.Module] = [nn.Linear(self.context, hidden), nn.ReLU()]
            for _ in range(head_layers - 1):
                layers += [nn.Linear(hidden, hidden), nn.ReLU()]
            self.in_proj = nn.Sequential(*layers)
            self.film_alpha = nn.Linear(d, hidden)
            self.film_beta = nn.Linear(d, hidden)
            for lin in (self.film_alpha, self.film_beta):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.out_proj = nn.Linear(hidden, self.horizon)
        else:
            self.out_proj = nn.Linear(d, self.horizon)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **self.hp}

    # -- sessions ------------------------------------------------------------------------------

    @staticmethod
    def _extend(emb: nn.Embedding, rows: int) -> None:
        if rows <= 0:
            return
        new = torch.empty(rows, emb.weight.shape[1], device=emb.weight.device, dtype=emb.weight.dtype)
        nn.init.normal_(new, std=EMBEDDING_STD)
        emb.weight = nn.Parameter(torch.cat([emb.weight.data, new]))
        emb.num_embeddings = emb.weight.shape[0]

    def _grow(self, new_sessions: list[int], n_old_datasets: int) -> None:
        self._extend(self.unit_emb, self.n_units_total - self.unit_emb.num_embeddings)
        self._extend(self.session_emb, len(self.sessions) - self.session_emb.num_embeddings)
        self._extend(self.dataset_emb, len(self.datasets) - n_old_datasets)
        self.session_units = torch.tensor([s.n_units for s in self.sessions], dtype=torch.int64, device=self.unit_emb.weight.device)

    def new_session_parameters(self, first: int, n_old_datasets: int) -> list[tuple[nn.Parameter, slice | None]]:
        out = [(self.unit_emb.weight, slice(int(self.unit_offset[first]), None)), (self.session_emb.weight, slice(first, None))]
        if len(self.datasets) > n_old_datasets:
            out.append((self.dataset_emb.weight, slice(n_old_datasets, None)))
        return out

    @torch.no_grad()
    def init_from_labels(self, first: int) -> int:
        """A new unit whose label is known from older sessions gets the mean of their unit-embedding
        rows (labels are matched within a species, see :meth:`Forecaster.label_matches`; a label that
        several units of the new session carry is skipped); the other new rows keep their fresh values."""
        matches = self.label_matches(first)
        w = self.unit_emb.weight
        for row, old in matches:
            w[row] = w[old].mean(0)
        return len(matches)

    @torch.no_grad()
    def start_from_mlp(self, mlp: Forecaster) -> None:
        """Warm start: take the per-unit forecaster of a trained ``MLP`` as this model's FiLM head.

        ``in_proj`` and ``out_proj`` get the MLP's two layers, and the FiLM starts as the identity
        (α = 1, β = 0, the conditioning weights W_α, W_β stay at zero), so before any training this
        POCO forecasts exactly what the MLP does; training then teaches the population encoder to
        modulate a head that already forecasts well (spec §1.5's head is the MLP baseline's).
        """
        if self.hp["head"] != "film" or self.hp["head_layers"] != 1:
            raise ValueError("a warm start from an MLP needs POCO's one-layer FiLM head")
        layers = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
        want = [(self.hp["hidden"], self.context), (self.horizon, self.hp["hidden"])]
        if [tuple(m.weight.shape) for m in layers] != want:
            raise ValueError(f"the MLP's layers {[tuple(m.weight.shape) for m in layers]} do not fit this POCO's head {want}")
        first, last = layers
        self.in_proj[0].weight.copy_(first.weight)
        self.in_proj[0].bias.copy_(first.bias)
        self.out_proj.weight.copy_(last.weight)
        self.out_proj.bias.copy_(last.bias)
        for lin in (self.film_alpha, self.film_beta):
            lin.weight.zero_()
            lin.bias.zero_()
        self.film_alpha.bias.fill_(1.0)

    def lr_scales(self) -> dict[str, float]:
        return {"unit_emb.weight": self.hp["unit_embedding_lr"]} if self.hp["unit_embedding_lr"] != 1.0 else {}

    def head_parameter_names(self) -> list[str]:
        prefixes = ("in_proj.", "film_alpha.", "film_beta.", "out_proj.")
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    # -- forward -------------------------------------------------------------------------------

    def unit_embeddings(self, session: torch.Tensor, unit_index: torch.Tensor) -> torch.Tensor:
        """u_i = unit_emb + session_emb + dataset_emb, (B, U, d); padded columns get unit 0's row."""
        counts = self.session_units[session][:, None]
        idx = torch.minimum(unit_index, counts - 1).clamp_min(0) + self.unit_offset[session][:, None]
        return self.unit_emb(idx) + (self.session_emb(session) + self.dataset_emb(self.session_dataset[session]))[:, None, :]

    def encode(self, context: torch.Tensor, u: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        """The population encoder: one conditioning vector e_i per unit, (B, U, d)."""
        B, C, U = context.shape
        K, T = self.hp["token_length"], self.tokens_per_unit
        tokens = context.transpose(1, 2).reshape(B, U, T, K)
        if self.training and self.hp["token_noise"] > 0:
            tokens = tokens + self.hp["token_noise"] * torch.randn_like(tokens)
        x = (self.input_proj(tokens) + u[:, :, None, :]).reshape(B, U * T, -1)
        keep = unit_mask
        if self.training and self.hp["unit_dropout"] > 0:
            drop = torch.rand(unit_mask.shape, device=unit_mask.device) < self.hp["unit_dropout"]
            kept = unit_mask & ~drop
            # never hide every unit of a sample
            keep = torch.where(kept.any(1, keepdim=True), kept, unit_mask)
        key_mask = keep.repeat_interleave(T, dim=1)
        t_in = self.rotary(self.token_times.repeat(U))[None]
        t_lat = self.rotary(self.latent_times)[None]
        lat = self.latent_emb.weight[None].expand(B, -1, -1)
        lat = lat + self.enc_atn(lat, t_lat, x, t_in, key_mask)
        lat = lat + self.enc_ffn(lat)
        for atn, ffn in self.process:
            lat = lat + self.latent_drop(atn(lat, t_lat))
            lat = lat + self.latent_drop(ffn(lat))
        t_q = self.rotary(torch.full((1,), float(C), device=context.device))[None]
        e = u + self.dec_atn(u, t_q, lat, t_lat)
        return e + rowwise(self.dec_ffn, e)

    def _film(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Spec §1.5: ``W_2 (ReLU(W_1 x) ⊙ α(e) + β(e)) + b_2`` per unit, x (..., C), e (..., d) -> (..., P)."""
        return self.out_proj(self.in_proj(x) * self.film_alpha(e) + self.film_beta(e))

    def forward(self, context, session, unit_mask=None, unit_index=None):  # noqa: D102
        unit_mask = self.check_input(context, session, unit_mask)
        B, C, U = context.shape
        if unit_index is None:
            unit_index = torch.arange(U, device=context.device).expand(B, U)
        u = self.embedding_drop(self.unit_embeddings(session, unit_index))
        e = self.encode(context, u, unit_mask) if self.hp["encoder"] else u
        if self.hp["head"] == "film":
            y = rowwise(self._film, context.transpose(1, 2), e)
        else:
            y = self.out_proj(e)
        return y.transpose(1, 2) * unit_mask[:, None, :].to(y.dtype)


@register
class POYO(POCO):
    """POYO-only ablation: the POCO encoder with ``Linear(d, P)`` on each unit's vector."""

    kind = "POYO"

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, head: str = "linear", **kw: Any) -> None:
        super().__init__(sessions, head=head, **kw)


@register
class UICO(POCO):
    """Unit-embedding + FiLM ablation: no activity encoder, the FiLM reads the unit embedding."""

    kind = "UICO"

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, encoder: bool = False, **kw: Any) -> None:
        super().__init__(sessions, encoder=encoder, **kw)

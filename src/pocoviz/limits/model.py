"""A transformer in the parameterization of Bordelon, Chaudhry & Pehlevan, *Infinite Limits of
Multi-head Transformer Dynamics* (NeurIPS 2024; spec ``transformer_limits.md`` §1).

Standard form: every weight is N(0, 1) and the scales are explicit multipliers. Residual width
``n = N·H`` (N: key/query dimension per head, H: heads), L blocks of pre-LN (no affine) multi-head
self-attention and a GELU MLP (hidden width n), each branch scaled by ``β0 (L/L0)^−αL``; attention
logits ``q·k / N^αA``; mean-pooled, LayerNormed read-out with a 1/n (mean-field) multiplier; the
output is centred on its initial value and divided by γ0. SGD with the per-tensor learning rates
of spec §1.3 (:func:`param_groups`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LimitsConfig:
    """Sizes and scalings of one model (defaults: spec §4.2)."""

    N: int = 8  # key/query dimension per head
    H: int = 4  # heads
    L: int = 2  # blocks
    alpha_A: float = 1.0  # attention logits / N^αA
    alpha_L: float = 1.0  # residual branches × (L/L0)^−αL
    beta0: float = 4.0
    L0: int = 2
    gamma0: float = 0.5
    eta0: float = 0.5
    D_in: int = 16  # token dimension
    S: int = 16  # tokens
    n_out: int = 1  # outputs (1: regression; 10: digits)

    def __post_init__(self) -> None:
        for name in ("N", "H", "L", "L0", "D_in", "S", "n_out"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("gamma0", "eta0", "beta0"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def n(self) -> int:
        return self.N * self.H

    @property
    def branch(self) -> float:
        return self.beta0 * (self.L / self.L0) ** (-self.alpha_L)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:])


class LimitsTransformer(nn.Module):
    """The model of :class:`LimitsConfig`. ``forward(x)`` gives the raw read-out (B, n_out);
    ``forward(x, return_attention=True)`` also the logits ``A`` of every layer (L, B, H, S, S)."""

    def __init__(self, cfg: LimitsConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(int(seed))
        n, L = cfg.n, cfg.L

        def w(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g))

        self.W_in = w(cfg.D_in, n)
        self.P = w(cfg.S, n)
        self.Q, self.K, self.V, self.O = w(L, n, n), w(L, n, n), w(L, n, n), w(L, n, n)
        self.W1, self.W2 = w(L, n, n), w(L, n, n)
        self.w_out = w(n, cfg.n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled last-layer features ``mean_s LN(h^L_s)`` (B, n) that the read-out sees."""
        return self._trunk(x)[0]

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> Any:
        pooled, attn = self._trunk(x, return_attention)
        out = pooled @ self.w_out / self.cfg.n
        return (out, torch.stack(attn)) if return_attention else out

    def _trunk(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cfg = self.cfg
        n, N, H = cfg.n, cfg.N, cfg.H
        B, S, _ = x.shape
        rn = 1.0 / math.sqrt(n)
        h = x @ self.W_in / math.sqrt(cfg.D_in) + self.P[:S]
        attn = []
        for layer in range(cfg.L):
            z = layer_norm(h)
            q = (z @ self.Q[layer] * rn).view(B, S, H, N)
            k = (z @ self.K[layer] * rn).view(B, S, H, N)
            v = (z @ self.V[layer] * rn).view(B, S, H, N)
            A = torch.einsum("bshd,bthd->bhst", q, k) / N**cfg.alpha_A
            if return_attention:
                attn.append(A)
            o = torch.einsum("bhst,bthd->bshd", A.softmax(-1), v).reshape(B, S, n)
            h = h + cfg.branch * (o @ self.O[layer] * rn)
            z = layer_norm(h)
            h = h + cfg.branch * (F.gelu(z @ self.W1[layer] * rn) @ self.W2[layer] * rn)
        return layer_norm(h).mean(1), attn


class CentredModel(nn.Module):
    """``f(x) = (f_raw(x; θ) − f_raw(x; θ0)) / γ0`` with a frozen copy of the initial model."""

    def __init__(self, cfg: LimitsConfig, seed: int = 0):
        super().__init__()
        self.net = LimitsTransformer(cfg, seed)
        self.init = copy.deepcopy(self.net).requires_grad_(False)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> Any:
        with torch.no_grad():
            f0 = self.init(x)
        if return_attention:
            f, A = self.net(x, return_attention=True)
            return (f - f0) / self.cfg.gamma0, A
        return (self.net(x) - f0) / self.cfg.gamma0


def learning_rates(cfg: LimitsConfig) -> dict[str, float]:
    """Per-tensor SGD learning rates (spec §1.3): ``η = η0 γ0² n`` for read-in, positional
    embedding and read-out; ``η (L/L0)^{2αL−1}`` for the hidden weights, and in addition
    ``N^{2αA−2}`` for W_Q and W_K."""
    eta = cfg.eta0 * cfg.gamma0**2 * cfg.n
    depth = (cfg.L / cfg.L0) ** (2 * cfg.alpha_L - 1)
    qk = eta * depth * cfg.N ** (2 * cfg.alpha_A - 2)
    return {"W_in": eta, "P": eta, "w_out": eta, "Q": qk, "K": qk, "V": eta * depth, "O": eta * depth, "W1": eta * depth, "W2": eta * depth}


def param_groups(model: CentredModel) -> list[dict[str, Any]]:
    lrs = learning_rates(model.cfg)
    return [{"params": [getattr(model.net, name)], "lr": lr, "name": name} for name, lr in lrs.items()]

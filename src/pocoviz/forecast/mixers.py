"""Unit-mixing baselines of POCO spec §4.1: TSMixer, TexFilter and the multi-session AR Transformer.

All three mix information across the units of a session, so they set ``channel_mixing = True``
and implement :meth:`~pocoviz.forecast.base.Forecaster.forward_session`; the base class runs
each session on its real (leading) units only, so padding never reaches a real unit's forecast.

- :class:`TSMixer`: one small mixer network per session (feature mixing is sized by the
  session's unit count).
- :class:`TexFilter`: one network shared by every session; a learned, data-dependent filter in
  the Fourier domain of the unit axis, so any unit count works.
- :class:`MultiARTransformer`: a shared causal Transformer core between per-session input and
  output projections, trained on next-step prediction and rolled out autoregressively.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Forecaster, SessionInfo, register


def _check_width(model: Forecaster, context: torch.Tensor, session: int) -> None:
    """Per-session layers need exactly the session's unit count."""
    n = model.sessions[session].n_units
    if context.shape[-1] != n:
        raise ValueError(
            f"{model.kind}: session {model.sessions[session].name!r} has {n} units, got {context.shape[-1]} real columns; "
            "per-session layers need every unit of the session"
        )


def _new_module_like(model: Forecaster, module: nn.Module) -> nn.Module:
    """Move a freshly built per-session module to the model's device, dtype and train/eval mode."""
    ref = next(model.parameters(), None)
    if ref is not None:
        module = module.to(device=ref.device, dtype=ref.dtype)
    else:
        module = module.to(device=model.unit_offset.device)
    return module.train(model.training)


# -- TSMixer ---------------------------------------------------------------------------------


class _FlatBatchNorm(nn.BatchNorm1d):
    """Batch norm over the flattened (time x unit) features of ``(b, C, U)``.

    With a single sample in training mode the batch statistics are undefined; that call then
    normalises with the running statistics and leaves them unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b = x.shape[0]
        flat = x.reshape(b, -1)
        if self.training and b == 1:
            y = F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        else:
            y = super().forward(flat)
        return y.reshape(x.shape)


class _MixerBlock(nn.Module):
    """One TSMixer block on ``(b, C, U)``: residual time mixing, then residual feature mixing."""

    def __init__(self, context: int, n_units: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.time_norm = _FlatBatchNorm(context * n_units)
        self.time_fc = nn.Linear(context, context)
        self.feat_norm = _FlatBatchNorm(context * n_units)
        self.feat_fc1 = nn.Linear(n_units, ff_dim)
        self.feat_fc2 = nn.Linear(ff_dim, n_units)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.time_norm(x).transpose(1, 2)  # (b, U, C)
        y = self.drop(F.relu(self.time_fc(y))).transpose(1, 2)
        x = x + y
        y = self.feat_norm(x)  # (b, C, U)
        y = self.drop(F.relu(self.feat_fc1(y)))
        y = self.drop(self.feat_fc2(y))
        return x + y


class _RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022), as TSMixer uses it: each unit's
    context is standardised by its own mean and standard deviation over the window, scaled and
    shifted by a learned per-unit affine map, and the forecast is mapped back with the inverse."""

    def __init__(self, n_units: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_units))
        self.bias = nn.Parameter(torch.zeros(n_units))

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mean = x.mean(1, keepdim=True)
        std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + self.eps)
        return (x - mean) / std * self.weight + self.bias, (mean, std)

    def denormalise(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats
        return (y - self.bias) / (self.weight + self.eps * self.eps) * std + mean


class _TSMixerNet(nn.Module):
    """The TSMixer network of one session: (RevIN,) mixer blocks, a Linear(C, P) along time (, RevIN⁻¹)."""

    def __init__(self, context: int, horizon: int, n_units: int, n_blocks: int, ff_dim: int, dropout: float, revin: bool = True) -> None:
        super().__init__()
        self.revin = _RevIN(n_units) if revin else None
        self.blocks = nn.ModuleList(_MixerBlock(context, n_units, ff_dim, dropout) for _ in range(n_blocks))
        self.proj = nn.Linear(context, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.revin is not None:
            x, stats = self.revin.normalise(x)
        for block in self.blocks:
            x = block(x)
        y = self.proj(x.transpose(1, 2)).transpose(1, 2)  # (b, P, U)
        return self.revin.denormalise(y, stats) if self.revin is not None else y


@register
class TSMixer(Forecaster):
    """TSMixer baseline (POCO spec §4.1): one mixer model per session.

    Each block mixes along time (batch norm over the flattened time x unit features,
    Linear(C, C), ReLU, dropout, residual) and then along units (batch norm, Linear(U_s, ff_dim),
    ReLU, dropout, Linear(ff_dim, U_s), dropout, residual); a Linear(C, P) along time makes the
    forecast.

    Parameters
    ----------
    sessions : sequence of SessionInfo or dict
        The sessions the model knows; each gets its own network.
    n_blocks : int
        Mixer blocks per network (spec: 2).
    ff_dim : int
        Hidden width of the feature (unit) mixing MLP (spec: 64).
    dropout : float
        Dropout rate (spec: 0.1).
    context, horizon : int
        Context and forecast lengths in frames.

    Notes
    -----
    Feature mixing is sized by the session's unit count, so a sample must hold every unit of
    its session (``supports_unit_subsets = False``). A single-sample batch in training mode
    normalises with the running statistics.
    """

    kind: ClassVar[str] = "TSMixer"
    channel_mixing: ClassVar[bool] = True
    supports_unit_subsets: ClassVar[bool] = False

    def __init__(
        self,
        sessions: Sequence[SessionInfo | dict[str, Any]],
        *,
        n_blocks: int = 2,
        ff_dim: int = 64,
        dropout: float = 0.1,
        revin: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(sessions, **kw)
        if n_blocks < 0 or ff_dim < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"TSMixer: need n_blocks >= 0, ff_dim >= 1, 0 <= dropout < 1; got {n_blocks}, {ff_dim}, {dropout}")
        self.n_blocks = int(n_blocks)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.revin = bool(revin)
        self.nets = nn.ModuleDict()
        self._grow(list(range(len(self.sessions))), 0)

    def _build(self, s: int) -> _TSMixerNet:
        return _TSMixerNet(self.context, self.horizon, self.sessions[s].n_units, self.n_blocks, self.ff_dim, self.dropout, self.revin)

    def _grow(self, new_sessions: list[int], n_old_datasets: int) -> None:
        for s in new_sessions:
            self.nets[str(s)] = _new_module_like(self, self._build(s))

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(n_blocks=self.n_blocks, ff_dim=self.ff_dim, dropout=self.dropout, revin=self.revin)
        return cfg

    def new_session_parameters(self, first: int, n_old_datasets: int) -> list[tuple[nn.Parameter, slice | None]]:
        """The networks of sessions ``first, first + 1, ...`` as ``(parameter, None)``."""
        return [(p, None) for s in range(first, len(self.sessions)) for p in self.nets[str(s)].parameters()]

    def head_parameter_names(self) -> list[str]:
        return [f"nets.{key}.proj.{name}" for key, net in self.nets.items() for name, _ in net.proj.named_parameters()]

    def forward_session(self, context: torch.Tensor, session: int) -> torch.Tensor:
        """Forecast ``(b, P, U_s)`` from ``(b, C, U_s)`` with the session's own network."""
        _check_width(self, context, session)
        return self.nets[str(session)](context)


# -- TexFilter -------------------------------------------------------------------------------


class _ComplexLinear(nn.Module):
    """A complex linear layer ``z -> z W + b`` with weights stored as real and imaginary parts."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        scale = dim**-0.5
        self.weight = nn.Parameter(scale * torch.randn(2, dim, dim))  # [real, imag]
        self.bias = nn.Parameter(0.02 * torch.randn(2, dim))

    def forward(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wr, wi = self.weight[0], self.weight[1]
        return re @ wr - im @ wi + self.bias[0], re @ wi + im @ wr + self.bias[1]


@register
class TexFilter(Forecaster):
    """TexFilter baseline (POCO spec §4.1, FilterNet): a learned frequency filter across units.

    Each unit's context is normalised by its own mean and standard deviation over time
    (RevIN without affine), embedded by Linear(C, embed) and LayerNorm, and Fourier transformed
    along the unit axis. A two-layer complex MLP of the spectrum (ReLU, then soft-shrinkage
    ``sparsity``) yields a data-dependent filter that multiplies the spectrum; the inverse
    transform is followed by LayerNorm, dropout, a residual MLP(embed -> hidden -> embed) and
    Linear(embed, P), and the forecast is denormalised.

    Parameters
    ----------
    sessions : sequence of SessionInfo or dict
        The sessions the model knows (no per-session parameters).
    embed : int
        Embedding width (spec: 128).
    hidden : int
        Hidden width of the residual MLP (spec: 512).
    dropout : float
        Dropout after the filter (spec: 0.3).
    sparsity : float
        Soft-shrinkage threshold of the filter (spec: 0.01).
    context, horizon : int
        Context and forecast lengths in frames.

    Notes
    -----
    The Fourier transform mixes units, so each session is run on its real units only; any unit
    count works, hence ``supports_unit_subsets = True``.
    """

    kind: ClassVar[str] = "TexFilter"
    session_free: ClassVar[bool] = True
    channel_mixing: ClassVar[bool] = True
    supports_unit_subsets: ClassVar[bool] = True
    eps: ClassVar[float] = 1e-5

    def __init__(
        self,
        sessions: Sequence[SessionInfo | dict[str, Any]],
        *,
        embed: int = 128,
        hidden: int = 512,
        dropout: float = 0.3,
        sparsity: float = 0.01,
        **kw: Any,
    ) -> None:
        super().__init__(sessions, **kw)
        if embed < 1 or hidden < 1 or not 0.0 <= dropout < 1.0 or sparsity < 0:
            raise ValueError(
                f"TexFilter: need embed, hidden >= 1, 0 <= dropout < 1, sparsity >= 0; got {embed}, {hidden}, {dropout}, {sparsity}"
            )
        self.embed_dim = int(embed)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.sparsity = float(sparsity)
        self.embed = nn.Linear(self.context, self.embed_dim)
        self.norm_in = nn.LayerNorm(self.embed_dim)
        self.filter1 = _ComplexLinear(self.embed_dim)
        self.filter2 = _ComplexLinear(self.embed_dim)
        self.norm_out = nn.LayerNorm(self.embed_dim)
        self.drop = nn.Dropout(self.dropout)
        self.mlp = nn.Sequential(nn.Linear(self.embed_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.embed_dim))
        self.head = nn.Linear(self.embed_dim, self.horizon)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(embed=self.embed_dim, hidden=self.hidden, dropout=self.dropout, sparsity=self.sparsity)
        return cfg

    def head_parameter_names(self) -> list[str]:
        return [f"head.{name}" for name, _ in self.head.named_parameters()]

    def forward_session(self, context: torch.Tensor, session: int) -> torch.Tensor:
        """Forecast ``(b, P, U)`` from ``(b, C, U)``; ``session`` is not used (shared weights)."""
        n_units = context.shape[-1]
        mean = context.mean(1, keepdim=True)
        std = torch.sqrt(context.var(1, keepdim=True, unbiased=False) + self.eps)
        x = ((context - mean) / std).transpose(1, 2)  # (b, U, C)
        z = self.norm_in(self.embed(x))  # (b, U, E)
        spec = torch.fft.rfft(z, dim=1, norm="ortho")  # (b, U//2 + 1, E)
        re, im = self.filter1(spec.real, spec.imag)
        re, im = self.filter2(F.relu(re), F.relu(im))
        w = torch.complex(F.softshrink(re, self.sparsity), F.softshrink(im, self.sparsity))
        z = torch.fft.irfft(spec * w, n=n_units, dim=1, norm="ortho")  # (b, U, E)
        z = self.drop(self.norm_out(z))
        z = z + self.mlp(z)
        y = self.head(z).transpose(1, 2)  # (b, P, U)
        return y * std + mean


# -- Multi-session AR Transformer --------------------------------------------------------------


@register
class MultiARTransformer(Forecaster):
    """Multi-session autoregressive Transformer (POCO spec §4.1, "MultiAR_Transformer").

    A per-session Linear(U_s, hidden) embeds each frame, a learned absolute position embedding
    is added, a shared pre-norm causal Transformer encoder processes the sequence, and a
    per-session Linear(hidden, U_s) predicts the next frame. Training uses teacher-forced
    next-step prediction over context + target (:meth:`training_loss`); forecasting rolls the
    model out autoregressively for P steps.

    Parameters
    ----------
    sessions : sequence of SessionInfo or dict
        The sessions the model knows; each gets its own input and output projection.
    hidden : int
        Model width (spec: 512).
    n_layers : int
        Transformer layers (spec: 4).
    n_heads : int
        Attention heads (spec: 8); must divide ``hidden``.
    ff : int
        Feed-forward width (spec: 1024).
    dropout : float
        Dropout rate (spec: 0.1).
    context, horizon : int
        Context and forecast lengths in frames.

    Notes
    -----
    The projections are sized by the session's unit count, so a sample must hold every unit of
    its session (``supports_unit_subsets = False``).
    """

    kind: ClassVar[str] = "MultiAR_Transformer"
    channel_mixing: ClassVar[bool] = True
    supports_unit_subsets: ClassVar[bool] = False

    def __init__(
        self,
        sessions: Sequence[SessionInfo | dict[str, Any]],
        *,
        hidden: int = 512,
        n_layers: int = 4,
        n_heads: int = 8,
        ff: int = 1024,
        dropout: float = 0.1,
        **kw: Any,
    ) -> None:
        super().__init__(sessions, **kw)
        if hidden < 1 or n_layers < 1 or n_heads < 1 or hidden % n_heads or ff < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                "MultiAR_Transformer: need hidden, n_layers, n_heads, ff >= 1, n_heads dividing hidden, 0 <= dropout < 1; "
                f"got {hidden}, {n_layers}, {n_heads}, {ff}, {dropout}"
            )
        self.hidden = int(hidden)
        self.n_layers = int(n_layers)
        self.n_heads = int(n_heads)
        self.ff = int(ff)
        self.dropout = float(dropout)
        self.pos = nn.Parameter(0.02 * torch.randn(self.context + self.horizon, self.hidden))
        layer = nn.TransformerEncoderLayer(self.hidden, self.n_heads, self.ff, self.dropout, batch_first=True, norm_first=True)
        self.core = nn.TransformerEncoder(layer, self.n_layers, norm=nn.LayerNorm(self.hidden), enable_nested_tensor=False)
        self.inp = nn.ModuleDict()
        self.out = nn.ModuleDict()
        self._grow(list(range(len(self.sessions))), 0)

    def _grow(self, new_sessions: list[int], n_old_datasets: int) -> None:
        for s in new_sessions:
            n = self.sessions[s].n_units
            self.inp[str(s)] = _new_module_like(self, nn.Linear(n, self.hidden))
            self.out[str(s)] = _new_module_like(self, nn.Linear(self.hidden, n))

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(hidden=self.hidden, n_layers=self.n_layers, n_heads=self.n_heads, ff=self.ff, dropout=self.dropout)
        return cfg

    def new_session_parameters(self, first: int, n_old_datasets: int) -> list[tuple[nn.Parameter, slice | None]]:
        """The projections of sessions ``first, first + 1, ...`` as ``(parameter, None)``."""
        return [(p, None) for s in range(first, len(self.sessions)) for mods in (self.inp, self.out) for p in mods[str(s)].parameters()]

    def head_parameter_names(self) -> list[str]:
        return [f"out.{key}.{name}" for key, mod in self.out.items() for name, _ in mod.named_parameters()]

    def next_step(self, x: torch.Tensor, session: int) -> torch.Tensor:
        """Causal next-frame prediction: ``(b, L, U_s) -> (b, L, U_s)``, output t predicts frame t + 1."""
        _check_width(self, x, session)
        length = x.shape[1]
        if length > self.pos.shape[0]:
            raise ValueError(f"{self.kind}: sequence of {length} frames exceeds the {self.pos.shape[0]} positions")
        h = self.inp[str(session)](x) + self.pos[:length]
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=1)
        h = self.core(h, mask=mask, is_causal=True)
        return self.out[str(session)](h)

    def forward_session(self, context: torch.Tensor, session: int) -> torch.Tensor:
        """Roll out ``P`` frames autoregressively from ``(b, C, U_s)``; returns ``(b, P, U_s)``."""
        seq = context
        preds = []
        for _ in range(self.horizon):
            nxt = self.next_step(seq, session)[:, -1:, :]
            preds.append(nxt)
            seq = torch.cat([seq, nxt], dim=1)
        return torch.cat(preds, dim=1)

    def training_loss(
        self,
        context: torch.Tensor,
        target: torch.Tensor,
        session: torch.Tensor,
        unit_mask: torch.Tensor,
        unit_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced next-step MSE over ``cat(context, target)`` (positions 1..C+P-1), real units only."""
        if unit_index is not None:
            raise ValueError(f"{self.kind} needs every unit of a session in order; it cannot take unit subsets")
        unit_mask = self.check_input(context, session, unit_mask)
        B, _, U = context.shape
        if target.shape != (B, self.horizon, U):
            raise ValueError(f"target must be (B, P, U) = ({B}, {self.horizon}, {U}), got {tuple(target.shape)}")
        seq = torch.cat([context, target.to(context.dtype)], dim=1)
        total = seq.new_zeros(())
        for s in torch.unique(session).tolist():
            rows = (session == s).nonzero(as_tuple=True)[0]
            n = int(unit_mask[rows].sum(1).max())
            if n == 0:
                continue
            x = seq[rows, :, :n]
            pred = self.next_step(x[:, :-1], s)
            m = unit_mask[rows, None, :n].to(pred.dtype)
            total = total + (((pred.float() - x[:, 1:].float()) ** 2) * m).sum()
        count = unit_mask.sum() * (seq.shape[1] - 1)
        return total / count.clamp_min(1)


__all__ = ["MultiARTransformer", "TSMixer", "TexFilter"]

"""Channel-independent baselines of POCO spec §4.1: copy-last, NLinear, DLinear, MLP, MLP_L.

Each unit is forecast from its own context with weights shared across units (and, for all but
DLinear, across sessions), so padding cannot leak into real units and any subset of a session's
units can be forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import Forecaster, SessionInfo, last_value, register, rowwise


@register
class CopyLast(Forecaster):
    """Repeat the last context frame for every horizon step (the reference of the score, spec §3)."""

    kind = "copy-last"
    session_free = True
    trainable = False

    def forward(self, context, session, unit_mask=None, unit_index=None):  # noqa: D102
        unit_mask = self.check_input(context, session, unit_mask)
        out = last_value(context).expand(-1, self.horizon, -1)
        return out * unit_mask[:, None, :].to(out.dtype)


@register
class NLinear(Forecaster):
    """Subtract the last value, ``Linear(C, P)`` shared over units and sessions, add it back."""

    kind = "NLinear"
    session_free = True

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], **kw: Any) -> None:
        super().__init__(sessions, **kw)
        self.linear = nn.Linear(self.context, self.horizon)

    def forward(self, context, session, unit_mask=None, unit_index=None):  # noqa: D102
        unit_mask = self.check_input(context, session, unit_mask)
        last = last_value(context)
        out = self.linear((context - last).transpose(1, 2)).transpose(1, 2) + last
        return out * unit_mask[:, None, :].to(out.dtype)

    def head_parameter_names(self) -> list[str]:
        return ["linear.weight", "linear.bias"]


def moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred moving average along dim 1 of (B, C, U), edges padded by repetition (DLinear)."""
    pad = (kernel - 1) // 2
    xp = torch.cat([x[:, :1].expand(-1, pad, -1), x, x[:, -1:].expand(-1, pad, -1)], dim=1)
    return xp.unfold(1, kernel, 1).mean(-1)


@register
class DLinear(Forecaster):
    """Moving-average trend + seasonal remainder, each through its own ``Linear(C, P)``; one pair
    per session (spec §4.1: kernel ``C // 4 * 2 + 1``, "one model per session")."""

    kind = "DLinear"

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, kernel: int | None = None, **kw: Any) -> None:
        super().__init__(sessions, **kw)
        self.kernel = int(kernel) if kernel is not None else self.context // 4 * 2 + 1
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {self.kernel}")
        self.trend = nn.ModuleList()
        self.seasonal = nn.ModuleList()
        self._grow(list(range(len(self.sessions))), 0)

    def _grow(self, new_sessions: list[int], n_old_datasets: int) -> None:
        for _ in new_sessions:
            self.trend.append(nn.Linear(self.context, self.horizon))
            self.seasonal.append(nn.Linear(self.context, self.horizon))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "kernel": self.kernel}

    def forward(self, context, session, unit_mask=None, unit_index=None):  # noqa: D102
        unit_mask = self.check_input(context, session, unit_mask)
        trend = moving_average(context, self.kernel)
        seasonal = context - trend
        out = context.new_zeros((context.shape[0], self.horizon, context.shape[2]))
        for s in torch.unique(session).tolist():
            rows = (session == s).nonzero(as_tuple=True)[0]
            t = self.trend[s](trend[rows].transpose(1, 2)) + self.seasonal[s](seasonal[rows].transpose(1, 2))
            out[rows] = t.transpose(1, 2).to(out.dtype)
        return out * unit_mask[:, None, :].to(out.dtype)

    def new_session_parameters(self, first: int, n_old_datasets: int):
        return [(p, None) for s in range(first, len(self.sessions)) for p in (*self.trend[s].parameters(), *self.seasonal[s].parameters())]

    def head_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]


@register
class MLP(Forecaster):
    """``Linear(C, M) -> ReLU -> (Linear(M, M) -> ReLU) x (layers - 1) -> Linear(M, P)`` shared
    across all units and sessions (spec §1.8: MLP is M = 1024, one layer; MLP_L two of 2048)."""

    kind = "MLP"
    session_free = True

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, hidden: int = 1024, layers: int = 1, **kw: Any) -> None:
        super().__init__(sessions, **kw)
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be positive, got {hidden}, {layers}")
        self.hidden, self.layers = int(hidden), int(layers)
        mods: list[nn.Module] = [nn.Linear(self.context, self.hidden), nn.ReLU()]
        for _ in range(self.layers - 1):
            mods += [nn.Linear(self.hidden, self.hidden), nn.ReLU()]
        mods.append(nn.Linear(self.hidden, self.horizon))
        self.net = nn.Sequential(*mods)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden": self.hidden, "layers": self.layers}

    def forward(self, context, session, unit_mask=None, unit_index=None):  # noqa: D102
        unit_mask = self.check_input(context, session, unit_mask)
        out = rowwise(self.net, context.transpose(1, 2)).transpose(1, 2)
        return out * unit_mask[:, None, :].to(out.dtype)

    def head_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]


@register
class MLPLarge(MLP):
    """MLP_L: two hidden layers of 2048 (spec §1.6: 4.33 M parameters)."""

    kind = "MLP_L"

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, hidden: int = 2048, layers: int = 2, **kw: Any) -> None:
        super().__init__(sessions, hidden=hidden, layers=layers, **kw)

"""The forecaster contract every model follows, and the session identity it is built on.

Every model in :mod:`pocoviz.forecast` maps a context ``(B, C, U)`` plus the session of each
sample and a unit mask to a forecast ``(B, P, U)``::

    forecast = model(context, session, unit_mask)

- ``context``: float (B, C, U), z-scored activity, zero where padded;
- ``session``: int64 (B,), an index into ``model.sessions``;
- ``unit_mask``: bool (B, U), True for real units (None: every unit is real).

Samples from sessions with different unit counts are batched by padding to the largest
(:func:`pocoviz.recordings.windows.collate_padded`). A model must never let padding change the
forecast of a real unit: channel-independent models need no care, channel-mixing models either
mask (POCO: key masks in attention) or run each session on its real units only
(:meth:`Forecaster.grouped`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..recordings.preprocess import CONTEXT_LENGTH, PREDICTION_LENGTH
from ..recordings.species import species_key as _species_key

#: Fine-tuning modes (spec §5): the new sessions' embeddings only; embeddings + the FiLM/MLP
#: head; every parameter.
FINETUNE_MODES = ("embedding", "embedding+mlp", "full")
#: How new units' embeddings start: fresh (spec §5), or from same-label units of other sessions.
FINETUNE_INITS = ("random", "labels")
#: The keys of a session entry in a checkpoint card (the first three required).
SESSION_KEYS = ("name", "n_units", "dataset", "labels", "species")


@dataclass(frozen=True)
class SessionInfo:
    """One recording session a model knows: its name, unit count, dataset and species.

    ``name`` is the corpus path ``"dataset/session"``; ``dataset`` groups sessions that share a
    dataset embedding and a batch per training step (POCO trains one batch per dataset).
    ``labels`` (optional) are the units' identities where the recording names them (e.g. C.
    elegans neuron labels, "" for an unidentified unit): they let a model adapted to a new animal
    start each identified neuron from what it learned about that neuron in other animals
    (:meth:`Forecaster.init_from_labels`). ``species`` (optional) is the recording's species as
    it names it ("C. elegans"); labels match across datasets of one species. Without it (cards
    written before sessions recorded their species) the species is read from the dataset name
    (:attr:`species_key`: "worm", the demo corpus's C. elegans, and "C_elegans" are one species).
    Neither ``labels`` nor ``species`` takes part in equality.
    """

    name: str
    n_units: int
    dataset: str
    labels: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    species: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"session name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.n_units, int) or isinstance(self.n_units, bool) or self.n_units < 1:
            raise ValueError(f"session {self.name!r}: n_units must be a positive integer, got {self.n_units!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"session {self.name!r}: dataset must be a non-empty string, got {self.dataset!r}")
        if self.labels is not None:
            labels = tuple(self.labels) if not isinstance(self.labels, str) else None
            if labels is None or len(labels) != self.n_units or not all(isinstance(x, str) for x in labels):
                raise ValueError(f"session {self.name!r}: labels must be {self.n_units} strings (one per unit), got {self.labels!r:.80}")
            object.__setattr__(self, "labels", labels if any(labels) else None)
        if self.species is not None and (not isinstance(self.species, str) or not self.species.strip()):
            raise ValueError(f"session {self.name!r}: species must be a non-empty string or None, got {self.species!r}")

    @property
    def species_key(self) -> str:
        """The normalised species (:func:`pocoviz.recordings.species_key`) of ``species``, else of
        the dataset name."""
        return _species_key(self.species or self.dataset) or self.dataset

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "n_units": self.n_units, "dataset": self.dataset}
        if self.labels is not None:
            d["labels"] = list(self.labels)
        if self.species is not None:
            d["species"] = self.species
        return d

    @classmethod
    def from_json(cls, d: Any) -> SessionInfo:
        if not isinstance(d, dict) or not {"name", "n_units", "dataset"} <= set(d) <= set(SESSION_KEYS):
            raise ValueError(f"a session entry needs the keys name, n_units, dataset (and optionally labels, species); got {d!r:.200}")
        return cls(name=d["name"], n_units=d["n_units"], dataset=d["dataset"], labels=d.get("labels"), species=d.get("species"))


#: rows (unit-windows) per chunk of the per-unit layers when no gradient is needed
INFERENCE_ROWS = 512


def rowwise(fn, *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)`` for per-row functions over (..., features) inputs; without autograd it runs in
    chunks of :data:`INFERENCE_ROWS` rows, so that the 1024-wide hidden activations stay in cache
    (forecasting a whole recording is memory-bound otherwise: ~2x faster on CPU, same values)."""
    n = math.prod(xs[0].shape[:-1])
    if torch.is_grad_enabled() or n <= INFERENCE_ROWS:
        return fn(*xs)
    lead = xs[0].shape[:-1]
    flat = [x.reshape(n, x.shape[-1]) for x in xs]
    out = torch.cat([fn(*(x[i : i + INFERENCE_ROWS] for x in flat)) for i in range(0, n, INFERENCE_ROWS)])
    return out.reshape(*lead, out.shape[-1])


def as_sessions(sessions: Iterable[SessionInfo | dict[str, Any]]) -> list[SessionInfo]:
    out = [s if isinstance(s, SessionInfo) else SessionInfo.from_json(s) for s in sessions]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate session names: {dup}")
    return out


class Forecaster(nn.Module):
    """Base class: a multi-session forecaster ``(B, C, U) -> (B, P, U)``.

    Subclasses set :attr:`kind`, implement :meth:`forward` (or :meth:`forward_session` with
    ``channel_mixing = True`` to be run on each session's real units), and list their
    hyper-parameters in :meth:`config` so that ``type(model)(sessions, **model.config())``
    rebuilds the same architecture.

    Per-session state (embedding rows, per-session layers) grows with :meth:`add_sessions`,
    which fine-tuning uses for recordings the model has not seen.
    """

    kind: ClassVar[str] = "forecaster"
    #: run :meth:`forward_session` per session on the real units only (see :meth:`grouped`)
    channel_mixing: ClassVar[bool] = False
    #: whether the model has anything to learn (copy-last has not)
    trainable: ClassVar[bool] = True
    #: whether a sample may hold a subset of its session's units (``unit_index``); models with
    #: per-session layers over the whole unit vector (TSMixer, the AR Transformer) cannot
    supports_unit_subsets: ClassVar[bool] = True
    #: no per-session state at all: the model forecasts any recording (unknown sessions are
    #: registered on the fly by :func:`pocoviz.forecast.metrics.model_session_map`)
    session_free: ClassVar[bool] = False

    def __init__(self, sessions: Sequence[SessionInfo | dict[str, Any]], *, context: int = CONTEXT_LENGTH, horizon: int = PREDICTION_LENGTH) -> None:
        super().__init__()
        if context < 1 or horizon < 1:
            raise ValueError(f"context and horizon must be positive, got {context}, {horizon}")
        self.context = int(context)
        self.horizon = int(horizon)
        self.sessions: list[SessionInfo] = []
        self.datasets: list[str] = []
        self.register_buffer("unit_offset", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("session_dataset", torch.zeros(0, dtype=torch.int64), persistent=False)
        self._register_sessions(as_sessions(sessions))

    # -- identity ----------------------------------------------------------------------------

    def _register_sessions(self, new: list[SessionInfo]) -> list[int]:
        known = {s.name for s in self.sessions}
        clash = [s.name for s in new if s.name in known]
        if clash:
            raise ValueError(f"sessions already known to the model: {clash}")
        first = len(self.sessions)
        self.sessions.extend(new)
        for s in new:
            if s.dataset not in self.datasets:
                self.datasets.append(s.dataset)
        counts = torch.tensor([s.n_units for s in self.sessions], dtype=torch.int64)
        device = self.unit_offset.device
        self.unit_offset = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)[:-1]]).to(device)
        self.session_dataset = torch.tensor([self.datasets.index(s.dataset) for s in self.sessions], dtype=torch.int64, device=device)
        return list(range(first, len(self.sessions)))

    @property
    def n_units_total(self) -> int:
        return sum(s.n_units for s in self.sessions)

    def session_index(self, name: str) -> int:
        for i, s in enumerate(self.sessions):
            if s.name == name:
                return i
        raise KeyError(f"session {name!r} is not known to this {self.kind} model (known: {[s.name for s in self.sessions]})")

    def add_sessions(self, sessions: Sequence[SessionInfo | dict[str, Any]]) -> list[int]:
        """Add sessions the model has not seen; returns their indices.

        New per-session parameters are freshly initialised (spec §5: new unit and session
        embeddings). Datasets not seen before get new dataset rows too.
        """
        new = as_sessions(sessions)
        n_datasets = len(self.datasets)
        idx = self._register_sessions(new)
        self._grow(idx, n_datasets)
        return idx

    def _grow(self, new_sessions: list[int], n_old_datasets: int) -> None:
        """Allocate per-session parameters for ``new_sessions`` (default: none needed)."""

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides ``sessions``) that rebuild this architecture."""
        return {"context": self.context, "horizon": self.horizon}

    # -- fine-tuning ---------------------------------------------------------------------------

    def new_session_parameters(self, first: int, n_old_datasets: int) -> list[tuple[nn.Parameter, slice | None]]:
        """Parameters holding the state of sessions ``first, first + 1, ...`` (added by
        :meth:`add_sessions`) as ``(parameter, rows)``: ``rows`` restricts a table shared by all
        sessions to the new sessions' rows; None means the whole tensor. Default: none."""
        return []

    def label_matches(self, first: int) -> list[tuple[int, list[int]]]:
        """For the units of sessions ``first, ...``: ``(global row, rows of the same label)`` where
        an older session of the same species has a unit with that label (global rows index the
        concatenated units of all sessions, as :attr:`unit_offset` does).

        Species are compared by :attr:`SessionInfo.species_key`, so that the demo corpus's
        ``worm`` sessions match a real ``C_elegans`` recording; labels match exactly.

        Duplicated labels (one label on several units of one session, e.g. two traces named
        URADL in a NeuroPAL table): in the older sessions every row carrying the label is a
        source (the caller averages them, so one misidentified trace is diluted); in a new
        session a label carried by more than one unit is ambiguous (at most one of them is that
        neuron), so none of those units is matched: they start fresh, like unidentified units.
        """
        rows: dict[tuple[str, str], list[int]] = {}
        for i, s in enumerate(self.sessions[:first]):
            key = s.species_key
            for j, lab in enumerate(s.labels or ()):
                if lab:
                    rows.setdefault((key, lab), []).append(int(self.unit_offset[i]) + j)
        out = []
        for i in range(first, len(self.sessions)):
            s = self.sessions[i]
            key, labels = s.species_key, s.labels or ()
            counts = Counter(lab for lab in labels if lab)
            for j, lab in enumerate(labels):
                if lab and counts[lab] == 1 and (key, lab) in rows:
                    out.append((int(self.unit_offset[i]) + j, rows[(key, lab)]))
        return out

    def init_from_labels(self, first: int) -> int:
        """Start the new sessions' identified units (sessions ``first, ...``) from what the model
        learned about units of the same label in older sessions of the same species
        (:meth:`label_matches`); returns the number of units so initialised (default: 0, no
        per-unit state)."""
        return 0

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name (default: none, every parameter at lr)."""
        return {}

    def head_parameter_names(self) -> list[str]:
        """Names of the forecasting-head parameters (trained in ``embedding+mlp`` fine-tuning)."""
        return []

    # -- forward -----------------------------------------------------------------------------

    def check_input(self, context: torch.Tensor, session: torch.Tensor, unit_mask: torch.Tensor | None) -> torch.Tensor:
        if context.ndim != 3:
            raise ValueError(f"context must be (B, C, U), got shape {tuple(context.shape)}")
        B, C, U = context.shape
        if C != self.context:
            raise ValueError(f"{self.kind} was built for a context of {self.context} frames, got {C}")
        if session.shape != (B,):
            raise ValueError(f"session must be (B,) = ({B},), got {tuple(session.shape)}")
        if len(self.sessions) == 0:
            raise ValueError(f"{self.kind} knows no sessions")
        if B and (int(session.min()) < 0 or int(session.max()) >= len(self.sessions)):
            raise ValueError(f"session index out of range 0..{len(self.sessions) - 1}: {session.tolist()}")
        counts = torch.tensor([s.n_units for s in self.sessions], device=session.device)[session]
        if unit_mask is None:
            if B and bool((counts != U).any()):
                raise ValueError(f"without a unit_mask every sample needs its session's unit count; got U={U}, sessions have {counts.tolist()}")
            unit_mask = torch.ones((B, U), dtype=torch.bool, device=context.device)
        else:
            if unit_mask.shape != (B, U):
                raise ValueError(f"unit_mask must be (B, U) = ({B}, {U}), got {tuple(unit_mask.shape)}")
            n_real = unit_mask.sum(1)
            if B and bool((n_real > counts).any()):
                raise ValueError("unit_mask marks more units than the session has")
        return unit_mask.to(torch.bool)

    def grouped(self, context: torch.Tensor, session: torch.Tensor, unit_mask: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """Run ``fn(context_s, s) -> (b, P, U_s)`` per session on its real (leading) units.

        Padding is trailing (as :func:`collate_padded` makes it); padded outputs are zero.
        """
        B, _, U = context.shape
        out = context.new_zeros((B, self.horizon, U))
        for s in torch.unique(session).tolist():
            rows = (session == s).nonzero(as_tuple=True)[0]
            n = int(unit_mask[rows].sum(1).max())
            if n == 0:
                continue
            out[rows, :, :n] = fn(context[rows, :, :n], s).to(out.dtype)
        return out * unit_mask[:, None, :].to(out.dtype)

    def forward(
        self,
        context: torch.Tensor,
        session: torch.Tensor,
        unit_mask: torch.Tensor | None = None,
        unit_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forecast (B, P, U); ``unit_index`` (B, U) names each column's unit within its session
        (default: column j is unit j). Only models with ``supports_unit_subsets`` accept it."""
        unit_mask = self.check_input(context, session, unit_mask)
        if unit_index is not None and not self.supports_unit_subsets:
            raise ValueError(f"{self.kind} needs every unit of a session in order; it cannot take unit subsets")
        if self.channel_mixing:
            return self.grouped(context, session, unit_mask, self.forward_session)
        raise NotImplementedError

    def forward_session(self, context: torch.Tensor, session: int) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(
        self, context: torch.Tensor, target: torch.Tensor, session: torch.Tensor, unit_mask: torch.Tensor, unit_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error of the forecast over real units (spec §1.7, ``loss_mode='prediction'``)."""
        pred = self(context, session, unit_mask, unit_index) if unit_index is not None else self(context, session, unit_mask)
        return masked_mse(pred, target, unit_mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(pred - target)^2`` over every horizon step and every real unit."""
    m = unit_mask[:, None, :].to(pred.dtype)
    err = (pred.float() - target.float()) ** 2 * m
    return err.sum() / (m.sum() * pred.shape[1]).clamp_min(1)


def last_value(context: torch.Tensor) -> torch.Tensor:
    """The last context frame as (B, 1, U)."""
    return context[:, -1:, :]


#: kind -> class; filled by :func:`register`.
MODELS: dict[str, type[Forecaster]] = {}


def register(cls: type[Forecaster]) -> type[Forecaster]:
    if cls.kind in MODELS and MODELS[cls.kind] is not cls:
        raise ValueError(f"model kind {cls.kind!r} registered twice")
    MODELS[cls.kind] = cls
    return cls


def build_model(kind: str, sessions: Sequence[SessionInfo | dict[str, Any]], **config: Any) -> Forecaster:
    """Build a forecaster by kind (``"POCO"``, ``"MLP"``, ``"NLinear"``, ...)."""
    from . import models  # noqa: F401  (registers every kind)

    if kind not in MODELS:
        raise KeyError(f"unknown model kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind](sessions, **config)

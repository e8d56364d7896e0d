"""Sequence memories (spec ``seq_hopfield.md`` §1), batched in torch on the backend device.

Every model maps a batch of ±1 states ``S`` (..., M, N) to the next states by one synchronous update.
Patterns ``ξ^1 … ξ^P`` are the rows of ``X`` (P, N) (or (B, P, N): B independent sequences),
periodic (ξ^{P+1} = ξ^1).

- :class:`DenseNet`: ``S_i ← sgn(Σ_μ ξ_i^{μ+1} f(m_i^μ))`` with ``m_i^μ`` the overlap over the
  *other* N−1 neurons; ``f(x) = x^d`` (d = 1: the classic SeqNet) or ``exp((N−1)(x−1))``. The
  self-exclusion costs nothing extra: with ``g = ξ^μ·S``, ``a = f((g−1)/(N−1))`` and
  ``b = f((g+1)/(N−1))``, the field is ``Ξ_nextᵀ(a+b)/2 + S ⊙ (Ξ_next ⊙ Ξ)ᵀ(a−b)/2``: O(PN).
  g is an integer in [−N, N], so (a±b)/2 come from a table of 2N+1 values.
- :class:`PseudoinverseNet`: the generalized pseudoinverse rule, ``f(Σ_ν O⁺_{μν} m^ν)`` with the
  full overlaps ``m = ξ·S/N`` and ``O = ΞΞᵀ/N`` (exact recall when the patterns are independent).
- :class:`MixedNet`: symmetric term on the current state plus λ × asymmetric term on the mean of
  the last τ states (variable timing).
- :class:`BipartiteNet`: the two-layer form: hidden units ``h_μ = f(ξ^μ·v/N)``, visible
  ``v ← sgn(Σ_μ M_μ h_μ)``; a gate can silence hidden units (deleting transitions).

A zero field keeps the neuron's previous value in playback (:meth:`step`); the capacity checks
count it as an error (:func:`transitions_ok`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Degree = int | str  # a polynomial degree, or "exp"


def _check_patterns(X: Any) -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.ndim not in (2, 3) or X.shape[-1] < 2 or X.shape[-2] < 1:
        raise ValueError(f"patterns must be (P, N) or (B, P, N) with N >= 2, got shape {tuple(X.shape)}")
    if not bool(((X == 1) | (X == -1)).all()):
        raise ValueError("patterns must be ±1")
    return X.to(torch.float64)


def _check_degree(degree: Degree) -> Degree:
    if degree == "exp":
        return "exp"
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer) or degree < 1:
        raise ValueError(f"degree must be a positive integer or 'exp', got {degree!r}")
    return int(degree)


def separation(x: torch.Tensor, degree: Degree, N: int) -> torch.Tensor:
    """The interaction function: ``x^d``, or ``exp((N−1)(x−1))`` (f(1) = 1)."""
    return torch.exp((N - 1) * (x - 1.0)) if degree == "exp" else x**degree


def _sign_keep(h: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    return torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, previous)).to(previous.dtype)


class SequenceModel:
    """Shared interface: ``fields(S)`` and ``step(S)`` on (..., M, N) batches of states."""

    X: torch.Tensor
    tau: int = 1

    @property
    def N(self) -> int:
        return int(self.X.shape[-1])

    @property
    def P(self) -> int:
        return int(self.X.shape[-2])

    @property
    def X_next(self) -> torch.Tensor:
        return torch.roll(self.X, -1, dims=-2)

    def fields(self, S: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, S: torch.Tensor) -> torch.Tensor:
        """One synchronous update; a zero field keeps the previous value."""
        return _sign_keep(self.fields(S), S)

    def initial_history(self) -> list[torch.Tensor]:
        return [self.X[..., 0, :]]

    def next_state(self, history: list[torch.Tensor]) -> torch.Tensor:
        return self.step(history[-1])

    def describe(self) -> str:
        return type(self).__name__


class DenseNet(SequenceModel):
    """Dense associative sequence memory with self-coupling excluded; ``degree=1`` is SeqNet."""

    def __init__(self, patterns: Any, degree: Degree = 2):
        self.X = _check_patterns(patterns)
        self.degree = _check_degree(degree)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a+b)/2`` and ``(a−b)/2`` for every possible overlap sum ``g = ξ·S`` ∈ {−N, …, N}
        (S and ξ are ±1: g is an integer), so the P×P work is one table look-up, not a power."""
        if getattr(self, "_tab", None) is None or self._tab[0].device != self.X.device:
            N = self.N
            g = torch.arange(-N, N + 1, dtype=torch.float64, device=self.X.device)
            if self.degree == "exp":  # f((g ∓ 1)/(N−1)) = exp(g ∓ 1 − (N−1))
                a, b = torch.exp(g - N), torch.exp(g + 2 - N)
            else:
                a, b = ((g - 1) / (N - 1)) ** self.degree, ((g + 1) / (N - 1)) ** self.degree
            self._tab = ((a + b) / 2, (a - b) / 2)
        return self._tab

    def fields(self, S: torch.Tensor) -> torch.Tensor:
        X, Xn = self.X, self.X_next
        g = S @ X.transpose(-1, -2)  # (..., M, P), integers
        idx = g.round_().to(torch.int64).add_(self.N)
        plus, minus = self._tables()
        return torch.take(plus, idx) @ Xn + S * (torch.take(minus, idx) @ (Xn * X))

    def describe(self) -> str:
        return "SeqNet" if self.degree == 1 else f"DenseNet ({'exponential' if self.degree == 'exp' else f'd = {self.degree}'})"


class PseudoinverseNet(SequenceModel):
    """Generalized pseudoinverse rule (spec §1.3): ``S_i ← sgn(Σ_μ ξ_i^{μ+1} f(Σ_ν O⁺_{μν} m^ν))``
    with full overlaps (self included)."""

    def __init__(self, patterns: Any, degree: Degree = 1):
        self.X = _check_patterns(patterns)
        self.degree = _check_degree(degree)
        O = self.X @ self.X.transpose(-1, -2) / self.N
        self.O_pinv = torch.linalg.pinv(O, hermitian=True)
        self.rank = int(torch.linalg.matrix_rank(O, hermitian=True).min())

    def fields(self, S: torch.Tensor) -> torch.Tensor:
        m = S @ self.X.transpose(-1, -2) / self.N
        return separation(m @ self.O_pinv, self.degree, self.N) @ self.X_next

    def describe(self) -> str:
        return f"pseudoinverse ({'exponential' if self.degree == 'exp' else f'd = {self.degree}'})"


class MixedNet(SequenceModel):
    """Variable timing (spec §1.4): ``S_i ← sgn(Σ_μ [ξ_i^μ f_S(m_i^μ(S)) + λ ξ_i^{μ+1} f_A(m_i^μ(S̄))])``
    with ``S̄`` the mean of the last τ states; overlaps over the other N−1 neurons."""

    def __init__(self, patterns: Any, d_s: Degree = 2, d_a: Degree | None = None, lam: float = 2.5, tau: int = 5):
        self.X = _check_patterns(patterns)
        self.d_s = _check_degree(d_s)
        self.d_a = _check_degree(d_s if d_a is None else d_a)
        if tau < 1:
            raise ValueError(f"tau must be >= 1, got {tau}")
        self.lam, self.tau = float(lam), int(tau)

    def _term(self, state: torch.Tensor, weights: torch.Tensor, degree: Degree) -> torch.Tensor:
        # Σ_μ weights_i^μ f((ξ^μ·state − ξ_i^μ state_i)/(N−1)): per (μ, i), O(PN) per state
        N = self.N
        g = state @ self.X.transpose(-1, -2)  # (..., M, P)
        m = (g[..., :, None] - self.X * state[..., None, :]) / (N - 1)  # (..., M, P, N)
        return (separation(m, degree, N) * weights).sum(-2)

    def fields_from(self, S: torch.Tensor, S_bar: torch.Tensor) -> torch.Tensor:
        return self._term(S, self.X, self.d_s) + self.lam * self._term(S_bar, self.X_next, self.d_a)

    def fields(self, S: torch.Tensor) -> torch.Tensor:
        return self.fields_from(S, S)  # τ = 1 view (S̄ = S)

    def initial_history(self) -> list[torch.Tensor]:
        """τ copies of ξ^P, then ξ^1 (the released code's Fig. 4A set-up)."""
        return [self.X[..., -1, :]] * self.tau + [self.X[..., 0, :]]

    def next_state(self, history: list[torch.Tensor]) -> torch.Tensor:
        S = history[-1]
        S_bar = torch.stack(history[-self.tau :]).mean(0)
        return _sign_keep(self.fields_from(S, S_bar), S)

    def describe(self) -> str:
        return f"MixedNet (d_S = {self.d_s}, d_A = {self.d_a}, λ = {self.lam:g}, τ = {self.tau})"


class BipartiteNet(SequenceModel):
    """Two-layer form (spec §1.5): ``h_μ = f(ξ^μ·v/N)`` (self included), ``v ← sgn(Σ_μ M_μ h_μ)`` with
    ``M_μ = ξ^{μ+1}``, or ``ξ^μ + λ ξ^{μ+1}`` when ``lam`` is given. ``gate`` (P,) multiplies the
    hidden units: a 0 silences memory neuron μ and deletes the transition ξ^μ → ξ^{μ+1}."""

    def __init__(self, patterns: Any, degree: Degree = 2, lam: float | None = None, gate: Any = None):
        self.X = _check_patterns(patterns)
        self.degree = _check_degree(degree)
        self.M = self.X_next if lam is None else self.X + float(lam) * self.X_next
        self.gate = None if gate is None else torch.as_tensor(gate, dtype=torch.float64, device=self.X.device)

    def hidden(self, v: torch.Tensor) -> torch.Tensor:
        h = separation(v @ self.X.transpose(-1, -2) / self.N, self.degree, self.N)
        return h if self.gate is None else h * self.gate

    def fields(self, S: torch.Tensor) -> torch.Tensor:
        return self.hidden(S) @ self.M


def make_model(kind: str, patterns: Any, **kw: Any) -> SequenceModel:
    """``kind``: "seqnet", "dense", "pseudoinverse", "mixed" or "bipartite" (keywords as the classes)."""
    kinds = {"seqnet": lambda X: DenseNet(X, 1), "dense": DenseNet, "pseudoinverse": PseudoinverseNet, "mixed": MixedNet, "bipartite": BipartiteNet}
    if kind not in kinds:
        raise ValueError(f"unknown model {kind!r}; choose from {sorted(kinds)}")
    return kinds[kind](patterns, **kw)


@dataclass
class Recall:
    """A recall rollout from ξ^1: ``states`` (T+1, N), ``overlaps`` (T+1, P) = ξ^μ·S/N, ``target``
    (T+1,) the pattern index expected at each step (⌊t/τ⌋ mod P), ``errors`` (T+1,) bits differing
    from the target, ``nearest`` (T+1,) the index of the largest overlap."""

    states: np.ndarray
    overlaps: np.ndarray
    target: np.ndarray
    errors: np.ndarray
    nearest: np.ndarray
    tau: int

    @property
    def first_error(self) -> int | None:
        """The first step whose state is not the target (None: recall perfect throughout)."""
        bad = np.flatnonzero(self.errors > 0)
        return int(bad[0]) if len(bad) else None

    def visits(self) -> list[tuple[int, int]]:
        """Runs of exact pattern states: ``(pattern index, steps)`` in order (non-pattern states end a run)."""
        exact = np.isclose(self.overlaps.max(1), 1.0)
        runs: list[tuple[int, int]] = []
        for t, idx in enumerate(self.nearest):
            if not exact[t]:
                continue
            if runs and runs[-1][0] == int(idx) and t > 0 and exact[t - 1] and self.nearest[t - 1] == idx:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((int(idx), 1))
        return runs


def recall(model: SequenceModel, steps: int, *, flip: int = 0, seed: int = 0) -> Recall:
    """Run ``steps`` synchronous updates from ξ^1 (with ``flip`` random bits of the cue flipped)."""
    if model.X.ndim != 2:
        raise ValueError("recall runs one sequence: patterns must be (P, N)")
    history = [h.clone() for h in model.initial_history()]
    if flip:
        gen = torch.Generator(device=model.X.device).manual_seed(int(seed))
        idx = torch.randperm(model.N, generator=gen, device=model.X.device)[: int(flip)]
        history[-1][idx] *= -1
    states = [history[-1]]
    for _ in range(int(steps)):
        history.append(model.next_state(history))
        history = history[-(model.tau + 1) :]
        states.append(history[-1])
    S = torch.stack(states)
    overlaps = (S @ model.X.T / model.N).cpu().numpy()
    target = (np.arange(len(states)) // model.tau) % model.P
    X = model.X.cpu().numpy()
    Sn = S.cpu().numpy()
    errors = (Sn != X[target]).sum(1)
    return Recall(Sn, overlaps, target, errors, overlaps.argmax(1), model.tau)


def transitions_ok(X: torch.Tensor, degree: Degree, *, pseudoinverse: bool = False, chunk: int = 2048) -> torch.Tensor:
    """For each sequence b and pattern ν: is the update of ξ^ν exactly ξ^{ν+1} (every bit, a zero
    field counting as an error)? ``X`` (P, N) or (B, P, N) -> bool (P,) or (B, P)."""
    X = _check_patterns(X)
    model = PseudoinverseNet(X, degree) if pseudoinverse else DenseNet(X, degree)
    Xn = model.X_next
    out = []
    for s in range(0, model.P, chunk):
        h = model.fields(X[..., s : s + chunk, :])
        out.append((h * Xn[..., s : s + chunk, :] > 0).all(-1))
    return torch.cat(out, -1)


def double_factorial(n: int) -> int:
    """n!! (1 for n <= 0)."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1

"""Capacity of sequence memories (spec ``seq_hopfield.md`` §2): the leading-order theory
(union bound + Gaussian crosstalk) and simulation estimators.

- :func:`capacity_theory`: ``P_T`` (one transition exact) and ``P_S`` (every transition of the
  sequence exact) for polynomial and exponential DenseNets and MixedNets.
- :func:`success_rates`: for S random sequences of length P, the fraction of exact transitions and
  of sequences with every transition exact. With deterministic dynamics from an exact pattern, a
  sequence is recalled iff all its transitions are exact, so no rollout is needed: all P
  transitions of all S sequences are checked in one batched call.
- :func:`capacity_estimate`: the largest P whose success rate is at least 1 − c, on a geometric grid
  around the theory, interpolated in log P (cheap; the default).
- :func:`capacity_paper_protocol`: the paper's search, start at 2× theory and shrink P by 1% until
  no transition (or sequence) fails (slow; an option).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .models import Degree, _check_degree, double_factorial, transitions_ok
from .patterns import random_patterns

#: β of the exponential DenseNet: the crosstalk variance is β^−(N−1); β = 2/(1 + e^−4) = e²/cosh 2
BETA = 2.0 / (1.0 + math.exp(-4.0))


def _gamma(d_s: int, d_a: int, lam: float) -> float:
    if d_s < d_a:
        return float(double_factorial(2 * d_s - 1))
    if d_s > d_a:
        return lam**2 * double_factorial(2 * d_a - 1)
    d = d_s
    return (lam**2 + 1) * double_factorial(2 * d - 1) + (2 * lam * double_factorial(d - 1) ** 2 if d % 2 == 0 else 0.0)


def capacity_theory(
    kind: str, N: Any, degree: Degree | None = None, *, lam: float = 2.5, d_s: int | None = None, d_a: int | None = None
) -> dict[str, np.ndarray]:
    """Leading-order capacities ``{"P_T", "P_S"}`` (arrays over ``N``), spec §2.2.

    kind ``"dense"``: ``degree`` d gives ``N^d / (2 (2d−1)!! log N)`` and ``/(2 (d+1) (2d−1)!! log N)``
    (d = 1: SeqNet); ``degree="exp"`` gives ``β^{N−1}/(2 log N)`` and ``β^{N−1}/(2 log(β) N)``.
    kind ``"mixed"`` (τ = 1, λ > 1): polynomial ``(λ−1)² N^{d_min}/(2 γ log N)`` and the same over
    ``(d_min + 1)`` (the paper's text; its code divides by d_min), or ``degree="exp"``:
    ``(λ−1)²/(λ²+1)`` × the exponential DenseNet's.
    """
    N = np.asarray(N, dtype=np.float64)
    if (N < 2).any():
        raise ValueError(f"N must be at least 2, got {N}")
    logN = np.log(N)
    if kind == "dense":
        d = _check_degree(degree if degree is not None else 1)
        if d == "exp":
            pt = BETA ** (N - 1) / (2 * logN)
            return {"P_T": pt, "P_S": BETA ** (N - 1) / (2 * math.log(BETA) * N)}
        df = double_factorial(2 * d - 1)
        return {"P_T": N**d / (2 * df * logN), "P_S": N**d / (2 * (d + 1) * df * logN)}
    if kind == "mixed":
        if lam <= 1:
            raise ValueError(f"the MixedNet theory needs λ > 1, got {lam}")
        if degree == "exp":
            dense = capacity_theory("dense", N, "exp")
            k = (lam - 1) ** 2 / (lam**2 + 1)
            return {"P_T": k * dense["P_T"], "P_S": k * dense["P_S"]}
        ds = int(d_s if d_s is not None else (degree or 1))
        da = int(d_a if d_a is not None else ds)
        dmin, g = min(ds, da), _gamma(ds, da, lam)
        pt = (lam - 1) ** 2 * N**dmin / (2 * g * logN)
        return {"P_T": pt, "P_S": pt / (dmin + 1)}
    raise ValueError(f"kind must be 'dense' or 'mixed', got {kind!r}")


def success_rates(
    N: int, P: int, degree: Degree, *, n_seq: int = 8, bias: float = 0.0, seed: int = 0, pseudoinverse: bool = False, device: Any = None
) -> tuple[float, float]:
    """``(transition success, sequence success)`` over ``n_seq`` random sequences of P patterns."""
    ok = []
    for s in range(int(n_seq)):  # one sequence at a time: memory O(P²) not O(S P²)
        X = random_patterns(int(N), int(P), bias=bias, seed=int(seed) * 100_003 + s, device=device)
        ok.append(transitions_ok(X, degree, pseudoinverse=pseudoinverse))
    allok = torch.stack(ok)
    return float(allok.double().mean()), float(allok.all(1).double().mean())


def _crossing(grid: np.ndarray, rate: np.ndarray, level: float) -> float:
    """The largest P with rate >= level: the last grid point of the run that passes from the
    bottom, interpolated in log P towards the first failing point."""
    passing = rate >= level
    if not passing[0]:
        return float(grid[0]) * float(rate[0] >= level)  # below the grid: 0 (unresolved)
    i = int(np.argmin(passing)) if not passing.all() else len(grid)
    if i == len(grid):
        return float(grid[-1])  # above the grid
    lo, hi = rate[i - 1], rate[i]
    frac = (lo - level) / (lo - hi) if lo > hi else 0.0
    return float(np.exp(np.log(grid[i - 1]) + frac * (np.log(grid[i]) - np.log(grid[i - 1]))))


def capacity_estimate(
    N: int,
    degree: Degree,
    *,
    c: float = 0.1,
    n_seq: int = 8,
    factors: Any = None,
    stop_below: float | None = 0.5,
    seed: int = 0,
    device: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Simulated ``P_T(c)`` and ``P_S(c)`` for a DenseNet of N neurons: success rates on the grid
    ``theory P_T × factors`` (default 2^(k/2), k = −7..2), then :func:`_crossing` at 1 − c.

    The grid stops after the first P where both rates are below ``stop_below`` (larger P cost the
    most and cannot move a crossing at any success level above it: with the default 0.5 the
    crossings for every c <= 0.5 stay exact). ``None`` evaluates the whole grid."""
    if not 0 <= c < 1:
        raise ValueError(f"c must be in [0, 1), got {c}")
    theory = capacity_theory("dense", N, degree)
    f = np.asarray(factors if factors is not None else 2.0 ** (np.arange(-7, 3) / 2))
    grid = np.unique(np.maximum(2, np.round(float(theory["P_T"]) * f)).astype(int))
    trans, seq = [], []
    for i, P in enumerate(grid):
        t, s = success_rates(N, int(P), degree, n_seq=n_seq, seed=seed, device=device)
        trans.append(t)
        seq.append(s)
        if progress is not None:
            progress((i + 1) / len(grid))
        if stop_below is not None and t < stop_below and s < stop_below:
            grid = grid[: i + 1]
            break
    trans_a, seq_a = np.array(trans), np.array(seq)
    return {
        "N": int(N), "degree": degree, "c": c, "grid": grid, "trans_ok": trans_a, "seq_ok": seq_a,
        "P_T": _crossing(grid, trans_a, 1 - c), "P_S": _crossing(grid, seq_a, 1 - c),
        "theory_P_T": float(theory["P_T"]), "theory_P_S": float(theory["P_S"]),
    }  # fmt: skip


def capacity_paper_protocol(
    N: int, degree: Degree, which: str = "transition", *, n_seq: int | None = None, seed: int = 0, max_iter: int = 2000, device: Any = None
) -> int:
    """The paper's search (spec §2.4): from P = 2× theory, draw the sequences (1 for
    ``"transition"``, as the released code; 100 for ``"sequence"``) and shrink P by 1% until every
    transition of every sequence is exact. Returns that P. Slow: one draw per step."""
    if which not in ("transition", "sequence"):
        raise ValueError(f"which must be 'transition' or 'sequence', got {which!r}")
    n = int(n_seq if n_seq is not None else (1 if which == "transition" else 100))
    key = "P_T" if which == "transition" else "P_S"
    P = max(2.0, 2.0 * float(capacity_theory("dense", N, degree)[key]))
    for it in range(max_iter):
        _, s = success_rates(N, int(round(P)), degree, n_seq=n, seed=seed + it, device=device)
        if s == 1.0:
            return int(round(P))
        P = max(2.0, P * 0.99) if P * 0.99 >= 2 else 1.0
        if P < 2:
            return 1
    raise RuntimeError(f"no error-free P found in {max_iter} steps")

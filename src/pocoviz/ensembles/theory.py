"""Deterministic-equivalent test risk of random-feature ridge ensembles (spec ``rf_ensembles.md`` §2)
and the scaling exponents of §3.4.

Conventions (spec §1–§2): kernel eigenvalues ``s`` (the spectrum of x), squared target coefficients
``w̄²`` in that eigenbasis (signal power ``Σ s w̄²``), ``P`` samples shared by the ``K`` members,
``N`` random features per member, ridge ``λ`` in the **sum-loss** convention (the loss is
``Σ_μ (y_μ − f(x_μ))² + λ‖v‖²``, so the equations see ``λ/P``), label noise variance ``σ_ε²``.

Everything is computed in float64 on the backend device and broadcasts over ``P``, ``N``, ``K`` and
``ridge`` (NumPy broadcasting rules); ``P = inf`` is the infinite-data limit and ``ridge = 0`` the
ridgeless one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pocoviz.backend import get_device


@dataclass(frozen=True)
class Risk:
    """Test risk of a K-member ensemble: ``total = bias + variance / K`` (arrays of one shape).

    ``bias`` is the risk of the feature-averaged predictor (K → ∞; it still holds the data-sampling
    variance and the noise) and ``variance`` the risk's excess for one member (``E_1 − E_∞``)."""

    bias: np.ndarray
    variance: np.ndarray
    total: np.ndarray
    kappa: np.ndarray


def _t(x: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def power_law_task(alpha: float, r: float, D: int) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian power-law task of spec §1: ``s_k ∝ k^−α`` with ``Σ s = 1``, and
    ``w̄_k² ∝ k^−(1−α+2αr)`` with ``Σ s w̄² = 1`` (mode power ``s_k w̄_k² ∝ k^−(1+2αr)``).

    Returns ``(spectrum, target_sq)``, both (D,) float64, ``spectrum`` decreasing."""
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    if not np.isfinite(r):
        raise ValueError(f"r must be finite, got {r}")
    if int(D) != D or D < 1:
        raise ValueError(f"D must be a positive integer, got {D}")
    k = np.arange(1, int(D) + 1, dtype=np.float64)
    s = k**-alpha
    s /= s.sum()
    w2 = k ** -(1.0 - alpha + 2.0 * alpha * r)
    w2 /= (s * w2).sum()
    return s, w2


def _check_task(spectrum: Any, target_sq: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(spectrum, dtype=np.float64)
    w2 = np.asarray(target_sq, dtype=np.float64)
    if s.ndim != 1 or w2.shape != s.shape:
        raise ValueError(f"spectrum and target_sq must be 1-d of one length, got {s.shape} and {w2.shape}")
    if not (np.isfinite(s).all() and np.isfinite(w2).all()) or (s <= 0).any() or (w2 < 0).any():
        raise ValueError("spectrum must be positive and target_sq non-negative, both finite")
    return s, w2


def _sums(s: torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ κ/(s+κ)`` (so that ``Df1 = D − it``, exact when κ ≪ s) and ``Σ s/(s+κ)²`` (= −dDf1/dκ)."""
    inv = (kappa[..., None] + s).reciprocal_()  # this operand order is 6x faster on the CPU
    s1 = inv.sum(-1)
    s2 = torch.linalg.vector_norm(inv, dim=-1).square()
    return kappa * s1, s1 - kappa * s2  # s/(s+κ)² = 1/(s+κ) − κ/(s+κ)²


def _newton_log(h, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, max_iter: int = 200, tol: float = 1e-10, ftol: float = 1e-10) -> torch.Tensor:
    """``exp`` of the root of ``h(u)`` (increasing; ``h`` returns value and derivative) in the
    bracket ``[a, b]``, by Newton steps from ``u``, bisecting whenever a step leaves the bracket.
    An element is done when its step is below ``tol (1 + |u|)`` or ``|h| <= ftol`` (``h`` is a
    difference of logs here: a relative residual)."""
    for _ in range(max_iter):
        f, df = h(u)
        pos = f > 0
        b = torch.where(pos, u, b)
        a = torch.where(pos, a, u)
        nu = u - f / df
        ok = torch.isfinite(nu) & (nu > a) & (nu < b)
        nu = torch.where(ok, nu, (a + b) / 2)
        done = ((nu - u).abs() <= tol * (1 + u.abs())) | (f.abs() <= ftol)
        u = torch.where(f.abs() <= ftol, u, nu)
        if bool(done.all()):
            break
    return u.exp()


def solve_kappa(spectrum: Any, P: Any, N: Any, ridge: Any, *, device: Any = None) -> np.ndarray:
    """The renormalised ridge κ: ``κ (1 − Df1(κ)/P)(1 − Df1(κ)/N) = λ/P`` on the physical branch
    ``Df1(κ) < min(N, P)`` (spec §2), broadcast over ``P``, ``N``, ``ridge``."""
    dev = get_device(device)
    s = _t(spectrum, dev)
    P_, N_ = torch.broadcast_tensors(_t(P, dev), _t(N, dev))
    return _solve(s, P_, N_, _t(ridge, dev)).cpu().numpy()


def _kappa0(s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """κ0 with ``Df1(κ0) = m`` where ``m < D``, else 0 (Df1 falls from D at κ = 0 to 0 at ∞)."""
    D = s.shape[0]
    capped = m < D
    msafe = torch.where(capped, m, torch.full_like(m, D / 2))

    def h(u: torch.Tensor):  # log m − log Df1(e^u), increasing in u
        c, d2 = _sums(s, u.exp())
        df1 = D - c
        return msafe.log() - df1.log(), u.exp() * d2 / df1

    top = (s.sum() / msafe).log()  # Df1(κ) < Σs/κ: Df1 <= m above this
    bottom = (s.min() * 1e-14 * torch.ones_like(msafe)).log()
    return torch.where(capped, _newton_log(h, bottom, top, top), torch.zeros_like(msafe))


def _solve(s: torch.Tensor, P: torch.Tensor, N: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """κ for ``P, N`` (broadcast together) against ``lam`` (broadcast with them); κ0 is found once
    per (P, N), not per ridge."""
    D = s.shape[0]
    m = torch.minimum(N, P)
    k0 = _kappa0(s, m)
    capped = m < D
    sinv0 = s / (k0[..., None] + s)  # s/(s+κ0), per (P, N) only
    P, N, lam, k0, capped = torch.broadcast_tensors(P, N, lam, k0, capped)
    rhs = lam / P
    ridged = rhs > 0
    log_rhs = torch.where(ridged, rhs, torch.ones_like(rhs)).log()
    cap_p, cap_n = capped & (P <= N), capped & (N <= P)

    # unknown v = log(κ − κ0). The factor that vanishes at κ0, 1 − Df1(κ)/m with Df1(κ0) = m, is
    # computed as (κ − κ0) Σ s/((s+κ0)(s+κ)) / m: no cancellation, and the equation is then close
    # to linear in v however small the ridge
    def h(v: torch.Tensor):  # log[κ (1 − Df1/P)(1 − Df1/N)] − log(λ/P), increasing on the branch
        e = v.exp()
        k = k0 + e
        inv = (k[..., None] + s).reciprocal_()
        s1 = inv.sum(-1)
        c = k * s1  # D − Df1
        d2 = s1 - k * torch.linalg.vector_norm(inv, dim=-1).square()  # Σ s/(s+κ)²
        near = e * (inv * sinv0).sum(-1)  # m − Df1(κ) when capped
        fp = torch.where(cap_p, near, P - D + c) / P
        fn = torch.where(cap_n, near, N - D + c) / N
        return k.log() + fp.log() + fn.log() - log_rhs, e * (1 / k + d2 * (1 / (P * fp) + 1 / (N * fn)))

    hi = (log_rhs.exp() + s.sum() * (1.0 / P + 1.0 / N)).log()  # above the root: κ <= λ/P + Σs (1/P + 1/N)
    lo = torch.full_like(hi, math.log(1e-300))
    kappa = k0 + _newton_log(h, lo, hi, hi)
    return torch.where(ridged, kappa, k0)


def ensemble_risk(spectrum: Any, target_sq: Any, P: Any, N: Any, K: Any, ridge: Any, noise: float = 0.0, *, device: Any = None) -> Risk:
    """Deterministic-equivalent risk of K-member linear random-feature ridge ensembles (spec §2).

    Parameters broadcast together (e.g. ``K[:, None]`` against ``ridge[None, :]``); ``noise`` is
    the label-noise standard deviation σ_ε. ``N`` and ``K`` may be fractional (the theory is
    smooth in both). Returns :class:`Risk` with arrays of the broadcast shape; the risk is ``inf``
    where it diverges (ridgeless at the interpolation threshold ``N = P``).
    """
    s_np, w2_np = _check_task(spectrum, target_sq)
    for name, v in (("P", P), ("N", N), ("K", K)):
        arr = np.asarray(v, dtype=np.float64)
        if np.isnan(arr).any() or (arr <= 0).any():
            raise ValueError(f"{name} must be positive, got {v}")
    lam_np = np.asarray(ridge, dtype=np.float64)
    if (lam_np < 0).any() or not np.isfinite(lam_np).all():
        raise ValueError(f"ridge must be finite and non-negative, got {ridge}")
    dev = get_device(device)
    s, w2 = _t(s_np, dev), _t(w2_np, dev)
    D = s.shape[0]
    P0, N0 = torch.broadcast_tensors(_t(P, dev), _t(N, dev))
    kappa = _solve(s, P0, N0, _t(lam_np, dev))
    P_, N_, K_, kappa = torch.broadcast_tensors(P0, N0, _t(K, dev), kappa)
    # κ = 0 happens ridgeless with min(N, P) >= D: the limit κ -> 0+ is taken at a tiny κ
    kappa = torch.where(kappa > 0, kappa, s.min() * 1e-12)
    # every sum over modes as a matrix-vector product with 1/(s+κ) or its square
    inv = (kappa[..., None] + s).reciprocal_()  # this operand order is 6x faster on the CPU
    inv2 = inv * inv
    ws = w2 * s
    s_inv = inv.sum(-1)
    comp = kappa * s_inv  # Σ κ/(s+κ) = D − Df1
    df1 = D - comp
    df2 = inv2 @ (s * s)
    tf = inv @ ws
    mtfp = inv2 @ ws  # −tf'(κ)
    sig2 = float(noise) ** 2
    n_df1 = (N_ - D) + comp  # N − Df1 without cancellation
    n_df2 = (N_ - D) + kappa * (s_inv + inv2 @ s)  # N − Df2 = N − D + Σ κ/(s+κ) (1 + s/(s+κ))
    rho = n_df1 / n_df2
    den1 = 1 - (df1 - rho * (df1 - df2)) / P_
    den2 = 1 - df2 / P_
    inf = torch.full_like(den1, float("inf"))
    e1 = torch.where(den1 > 1e-12, (rho * kappa**2 * mtfp + (1 - rho) * kappa * tf + sig2) / den1, inf)
    einf = torch.where(den2 > 1e-12, (kappa**2 * mtfp + sig2) / den2, inf)
    var = torch.where(torch.isfinite(e1) & torch.isfinite(einf), (e1 - einf).clamp_min(0.0), inf)
    out = [t.cpu().numpy() for t in (einf, var, einf + var / K_, kappa)]
    return Risk(*out)


def optimal_risk(
    spectrum: Any, target_sq: Any, P: Any, N: Any, K: Any, noise: float = 0.0, *, ridges: Any = None, refine: int = 4, device: Any = None
) -> tuple[Risk, np.ndarray]:
    """Risk at the optimal ridge, per broadcast point of ``P, N, K``: the best of a log grid
    (default: 0 and ``logspace(−8, 4, 49)``), then ``refine`` zooms in log λ (9 points between the
    best point's neighbours, each round 4x finer), a candidate kept only where it lowers the risk.
    Returns ``(risk, ridge*)``."""
    grid = np.asarray(np.concatenate([[0.0], np.logspace(-8, 4, 49)]) if ridges is None else ridges, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError("ridges must be a 1-d grid of at least 2 values")
    grid = np.sort(grid)
    P_, N_, K_ = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (P, N, K)))
    full = ensemble_risk(spectrum, target_sq, P_[..., None], N_[..., None], K_[..., None], grid, noise, device=device)
    tot = np.where(np.isfinite(full.total), full.total, np.inf)
    best = tot.argmin(-1)
    ridge = grid[best]

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, best[..., None], -1)[..., 0]

    value, keep = pick(tot), {f: pick(getattr(full, f)) for f in ("bias", "variance", "total", "kappa")}
    pos = grid[grid > 0]
    if refine > 0 and len(pos) >= 3:
        # zoom in log λ: a grid of 9 between the best positive grid point's neighbours, then 9
        # between the neighbours of the best of those, ...; a candidate is kept where it is better
        logs = np.log(pos)
        j = np.clip(tot[..., grid > 0].argmin(-1), 1, len(pos) - 2)
        lo, hi = logs[j - 1], logs[j + 1]
        t = np.linspace(0.0, 1.0, 9)
        for _ in range(refine):
            u = lo[..., None] + (hi - lo)[..., None] * t  # (..., 9)
            r = ensemble_risk(spectrum, target_sq, P_[..., None], N_[..., None], K_[..., None], np.exp(u), noise, device=device)
            at = np.where(np.isfinite(r.total), r.total, np.inf)
            i = at.argmin(-1)[..., None]
            cand = np.take_along_axis(at, i, -1)[..., 0]
            better = cand < value
            ridge = np.where(better, np.exp(np.take_along_axis(u, i, -1)[..., 0]), ridge)
            value = np.where(better, cand, value)
            keep = {f: np.where(better, np.take_along_axis(getattr(r, f), i, -1)[..., 0], v) for f, v in keep.items()}
            step = (hi - lo) / 8
            centre = np.take_along_axis(u, i, -1)[..., 0]
            lo, hi = centre - step, centre + step
    return Risk(**keep), ridge


def scaling_exponent(ell: Any, alpha: float, r: float) -> np.ndarray:
    """Theory exponent of ``E* ∝ M^{−s(ℓ)}`` for ``N = M^ℓ``, ``K = M^{1−ℓ}`` (spec §3.4):
    ``s(ℓ) = min(2αℓ·min(r,1), (1−ℓ) + 2αℓ·min(r,1/2))``."""
    ell = np.asarray(ell, dtype=np.float64)
    return np.minimum(bias_exponent(ell, alpha, r), variance_exponent(ell, alpha, r))


def bias_exponent(ell: Any, alpha: float, r: float) -> np.ndarray:
    """The bias-limited line ``2αℓ·min(r, 1)``."""
    return 2 * alpha * np.asarray(ell, dtype=np.float64) * min(r, 1.0)


def variance_exponent(ell: Any, alpha: float, r: float) -> np.ndarray:
    """The variance-limited line ``(1 − ℓ) + 2αℓ·min(r, 1/2)``."""
    ell = np.asarray(ell, dtype=np.float64)
    return (1 - ell) + 2 * alpha * ell * min(r, 0.5)


def ell_star(alpha: float, r: float) -> float:
    """The crossover ``ℓ* = 1/(1 + α(2·min(r,1) − 1))`` for easy tasks (r > 1/2); NaN for r ≤ 1/2
    (there the error is bias-limited for every ℓ < 1)."""
    return 1.0 / (1.0 + alpha * (2 * min(r, 1.0) - 1)) if r > 0.5 else float("nan")


def fit_exponent(M: Any, risk: Any) -> np.ndarray:
    """Least-squares slope ``s`` of ``log E = c − s log M`` along the last axis."""
    x = np.log(np.asarray(M, dtype=np.float64))
    y = np.log(np.asarray(risk, dtype=np.float64))
    xc = x - x.mean()
    return -((y - y.mean(-1, keepdims=True)) * xc).sum(-1) / (xc * xc).sum()


def scaling_curves(
    alpha: float, r: float, ells: Any, Ms: Any, *, P: float = 1e5, D: int | None = None, noise: float = 0.0, device: Any = None
) -> dict[str, np.ndarray]:
    """Optimal-ridge risk along ``N = M^ℓ``, ``K = M^{1−ℓ}`` (fractional, spec §4.2), shape
    ``(len(ells), len(Ms))``, with the fitted exponents. ``D`` defaults to ``4 max(M)``."""
    ells = np.asarray(ells, dtype=np.float64)
    Ms = np.asarray(Ms, dtype=np.float64)
    D = int(D if D is not None else 4 * Ms.max())
    s, w2 = power_law_task(alpha, r, D)
    N = Ms[None, :] ** ells[:, None]
    K = Ms[None, :] / N
    risk, ridge = optimal_risk(s, w2, P, N, K, noise, ridges=np.concatenate([[0.0], np.logspace(-6, 3, 19)]), device=device)
    return {"ell": ells, "M": Ms, "risk": risk.total, "ridge": ridge, "fitted": fit_exponent(Ms, risk.total), "D": np.asarray(D)}

"""Random-feature ridge ensembles, simulated exactly (spec ``rf_ensembles.md`` §1 and §5).

Per seed: ``P`` samples ``x = z·√s`` (z standard normal, so x has covariance diag(s)), labels
``y = x·w̄ + σ_ε ε``. Each of the ``K`` members draws its own projection ``F`` (N × D, entries
N(0, 1)); its features are ``g(F x)/√N`` (g = identity, or ReLU), and its readout is the ridge
solution ``v = argmin Σ_μ (y_μ − v·φ(x_μ))² + λ‖v‖²`` (sum-loss convention). All ridges come from
one eigendecomposition per member: of ``ΦᵀΦ`` (N × N) when ``P ≥ N``, else of ``ΦΦᵀ`` (P × P).
The ensemble predicts the plain average of its members.

Risk: for linear features the ensemble is the linear map ``ŵ = (1/K) Σ_k F_kᵀ v_k / √N``, and the
population risk is exactly ``Σ_i s_i (ŵ_i − w̄_i)² + σ_ε²`` (no test set). For ReLU features it is
measured on ``n_test`` fresh points against the noise-free target, plus ``σ_ε²``.

float64 throughout, on the backend device; members of one configuration are batched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from pocoviz.backend import get_device

from .theory import _check_task

Features = Literal["linear", "relu"]


@dataclass
class Simulation:
    """Simulated test risk ``risk[seed, config, ridge]`` of ensembles with ``K[config]`` members of
    ``N[config]`` features each, all trained on the same ``P`` samples per seed."""

    K: np.ndarray
    N: np.ndarray
    ridge: np.ndarray
    risk: np.ndarray
    seeds: list[int]
    P: int
    D: int
    noise: float
    features: str
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """Mean over seeds, (config, ridge)."""
        return self.risk.mean(0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation over seeds (ddof 1; 0 with one seed), (config, ridge)."""
        return self.risk.std(0, ddof=1) if len(self.seeds) > 1 else np.zeros(self.risk.shape[1:])

    @property
    def sem(self) -> np.ndarray:
        """Standard error of the mean over seeds, (config, ridge)."""
        return self.std / math.sqrt(len(self.seeds))

    def optimal(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per configuration, the ridge of the lowest seed-averaged risk: ``(mean, std, ridge)``."""
        best = np.nanargmin(np.where(np.isfinite(self.mean), self.mean, np.inf), axis=1)
        rows = np.arange(len(best))
        return self.mean[rows, best], self.std[rows, best], self.ridge[best]

    def merge(self, other: Simulation) -> Simulation:
        """This simulation with the seeds of ``other`` (same configurations and ridges) added."""
        if not (np.array_equal(self.K, other.K) and np.array_equal(self.N, other.N) and np.array_equal(self.ridge, other.ridge)):
            raise ValueError("can only merge simulations of the same configurations and ridges")
        return Simulation(
            self.K, self.N, self.ridge, np.concatenate([self.risk, other.risk]), self.seeds + other.seeds, self.P, self.D, self.noise,
            self.features, self.seconds + other.seconds, self.meta,
        )  # fmt: skip


def _member_readouts(phi: torch.Tensor, y: torch.Tensor, ridges: torch.Tensor) -> torch.Tensor:
    """Ridge readouts of a batch of members, all ridges at once: ``phi`` (K, P, N), ``y`` (P,)
    -> (K, N, L)."""
    _, P, N = phi.shape
    if P >= N:
        e, U = torch.linalg.eigh(phi.transpose(1, 2) @ phi)  # (K, N), (K, N, N)
        b = torch.einsum("kij,kpi,p->kj", U, phi, y)  # Uᵀ Φᵀ y, (K, N)
        return U @ (b[..., None] / (e.clamp_min(0)[..., None] + ridges))
    e, Q = torch.linalg.eigh(phi @ phi.transpose(1, 2))  # (K, P), (K, P, P)
    c = torch.einsum("kpj,p->kj", Q, y)  # Qᵀ y, (K, P)
    dual = Q @ (c[..., None] / (e.clamp_min(0)[..., None] + ridges))  # (K, P, L)
    return phi.transpose(1, 2) @ dual


def simulate_ensembles(
    spectrum: Any,
    target_sq: Any,
    P: int,
    N: Sequence[int] | np.ndarray,
    K: Sequence[int] | np.ndarray,
    ridges: Any,
    noise: float = 0.0,
    *,
    seeds: int | Sequence[int] = 3,
    features: Features = "linear",
    n_test: int = 4096,
    device: Any = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Simulation | None:
    """Simulated risk of ensembles ``(N[c], K[c])`` at every ridge, per seed (see module docstring).

    ``seeds`` is a count (seeds 0..n−1) or a list of seed values; a seed fixes the data and all
    members' features. ``progress(fraction)`` is called after each (seed, configuration);
    ``should_stop()`` is polled there too, and a stopped simulation returns ``None``.
    """
    s_np, w2_np = _check_task(spectrum, target_sq)
    N_arr = np.atleast_1d(np.asarray(N))
    K_arr = np.atleast_1d(np.asarray(K))
    if N_arr.shape != K_arr.shape or N_arr.ndim != 1:
        raise ValueError(f"N and K must be 1-d of one length, got {N_arr.shape} and {K_arr.shape}")
    for name, arr in (("N", N_arr), ("K", K_arr)):
        if not np.all(np.equal(np.mod(arr, 1), 0)) or (arr < 1).any():
            raise ValueError(f"{name} must be positive integers in a simulation, got {arr.tolist()}")
    if int(P) != P or P < 1:
        raise ValueError(f"P must be a positive integer, got {P}")
    lam_np = np.atleast_1d(np.asarray(ridges, dtype=np.float64))
    if lam_np.ndim != 1 or (lam_np < 0).any() or not np.isfinite(lam_np).all():
        raise ValueError("ridges must be a 1-d array of finite non-negative values")
    if features not in ("linear", "relu"):
        raise ValueError(f"features must be 'linear' or 'relu', got {features!r}")
    seed_list = list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(x) for x in seeds]
    if not seed_list:
        raise ValueError("need at least one seed")
    t0 = time.perf_counter()
    dev = get_device(device)
    f64 = torch.float64
    sqrt_s = torch.as_tensor(np.sqrt(s_np), device=dev, dtype=f64)
    s = sqrt_s.square()
    wbar = torch.as_tensor(np.sqrt(w2_np), device=dev, dtype=f64)
    lam = torch.as_tensor(lam_np, device=dev, dtype=f64)
    D, P = len(s_np), int(P)
    risk = np.full((len(seed_list), len(N_arr), len(lam_np)), np.nan)
    total = len(seed_list) * len(N_arr)
    for i, seed in enumerate(seed_list):
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        X = torch.randn(P, D, generator=gen, device=dev, dtype=f64) * sqrt_s
        y = X @ wbar + float(noise) * torch.randn(P, generator=gen, device=dev, dtype=f64)
        if features == "relu":
            Xt = torch.randn(int(n_test), D, generator=gen, device=dev, dtype=f64) * sqrt_s
            yt = Xt @ wbar
        for c, (n, k) in enumerate(zip(N_arr.tolist(), K_arr.tolist())):
            if should_stop is not None and should_stop():
                return None
            n, k = int(n), int(k)
            F = torch.randn(k, n, D, generator=gen, device=dev, dtype=f64)
            phi = torch.einsum("pd,knd->kpn", X, F) / math.sqrt(n)
            if features == "relu":
                phi = phi.clamp_min(0)
            V = _member_readouts(phi, y, lam)  # (k, n, L)
            if features == "linear":
                w_hat = torch.einsum("knd,knl->dl", F, V) / (k * math.sqrt(n))
                err = (s[:, None] * (w_hat - wbar[:, None]).square()).sum(0)
            else:
                pred = sum((Xt @ F[j].T).clamp_min(0) @ V[j] for j in range(k)) / (k * math.sqrt(n))
                err = (pred - yt[:, None]).square().mean(0)
            risk[i, c] = (err + float(noise) ** 2).cpu().numpy()
            if progress is not None:
                progress((i * len(N_arr) + c + 1) / total)
    return Simulation(
        K=K_arr.astype(np.int64), N=N_arr.astype(np.int64), ridge=lam_np, risk=risk, seeds=seed_list, P=P, D=D, noise=float(noise),
        features=features, seconds=time.perf_counter() - t0, meta={"device": str(dev)},
    )  # fmt: skip

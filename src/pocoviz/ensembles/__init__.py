"""Random-feature ridge ensembles (spec ``rf_ensembles.md``): deterministic-equivalent theory of the
test risk, its scaling exponents, and exact simulations. Torch on the backend device; no UI imports."""

from __future__ import annotations

from .simulate import Simulation, simulate_ensembles
from .theory import (
    Risk,
    bias_exponent,
    ell_star,
    ensemble_risk,
    fit_exponent,
    optimal_risk,
    power_law_task,
    scaling_curves,
    scaling_exponent,
    solve_kappa,
    variance_exponent,
)

__all__ = [
    "Risk", "Simulation", "bias_exponent", "ell_star", "ensemble_risk", "fit_exponent", "optimal_risk", "power_law_task", "scaling_curves",
    "scaling_exponent", "simulate_ensembles", "solve_kappa", "variance_exponent",
]  # fmt: skip

"""Transformers in the parameterization of *Infinite Limits of Multi-head Transformer Dynamics*
(spec ``transformer_limits.md``): the model, tasks, training runs and their statistics, and the
shipped sweeps. Torch; no UI imports."""

from __future__ import annotations

from .model import CentredModel, LimitsConfig, LimitsTransformer, learning_rates, param_groups
from .sweep import SWEEPS, load_sweep, run_sweep, sweep_runs, write_sweeps
from .train import RunResult, digits_task, head_variance, init_statistics, teacher_task, train_run

__all__ = [
    "SWEEPS", "CentredModel", "LimitsConfig", "LimitsTransformer", "RunResult", "digits_task", "head_variance", "init_statistics", "learning_rates",
    "load_sweep", "param_groups", "run_sweep", "sweep_runs", "teacher_task", "train_run", "write_sweeps",
]  # fmt: skip

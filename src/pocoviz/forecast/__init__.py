"""Neural forecasting: POCO, its ablations and baselines, training, evaluation, checkpoints.

Every model maps a context ``(B, C, U)``, the session of each sample and a unit mask to a
forecast ``(B, P, U)`` (C = 48, P = 16 by default); see :mod:`pocoviz.forecast.base`.

>>> from pocoviz.forecast import ForecastCorpus, TrainConfig, make_model, train, evaluate  # doctest: +SKIP
>>> corpus = ForecastCorpus(tree)                                                         # doctest: +SKIP
>>> model = make_model("POCO", corpus, seed=0)                                            # doctest: +SKIP
>>> train(model, corpus, TrainConfig(steps=2000)); evaluate(model, corpus, "test").score  # doctest: +SKIP

Pretrained models ship in ``assets/models``: :func:`available_models`, :func:`load_model`.
"""

from __future__ import annotations

from typing import Any

from .base import (
    FINETUNE_INITS,
    FINETUNE_MODES,
    MODELS,
    Forecaster,
    SessionInfo,
    build_model,
    masked_mse,
)
from .data import Batch, ForecastCorpus
from .metrics import EvalReport, SessionScore, evaluate
from .train import TrainConfig, TrainResult, finetune, fit, make_model, train

_CHECKPOINT = ("CheckpointError", "available_models", "load_model", "model_card", "read_card", "save_model")

__all__ = [
    "FINETUNE_INITS", "FINETUNE_MODES", "MODELS", "Batch", "EvalReport", "ForecastCorpus", "Forecaster", "SessionInfo", "SessionScore",
    "TrainConfig", "TrainResult", "build_model", "evaluate", "finetune", "fit", "make_model", "masked_mse", "model_kinds", "train",
    *_CHECKPOINT,
]  # fmt: skip


def model_kinds() -> list[str]:
    """Every registered model kind (POCO, its ablations and the baselines)."""
    from . import models  # noqa: F401

    return sorted(MODELS)


def __getattr__(name: str) -> Any:
    if name in _CHECKPOINT:
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'pocoviz.forecast' has no attribute {name!r}")

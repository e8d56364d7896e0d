"""Named training recipes and data loading shared by the CLI, ``make-assets`` and the benchmarks.

- :data:`DEMO_RECIPE`: the shipped demo models. POCO's settings (spec §1.7) except fewer steps
  and at most 64 units per training window (unit subsampling), so that ``pocoviz make-assets``
  trains POCO, MLP and NLinear on a 2-core CPU in about half an hour.
- :data:`SHORT_RECORDING`: recordings of a few hundred training frames (e.g. 800-frame worms):
  frequent validation with early stopping, and POCO's unit embeddings frozen at initialisation,
  since learned ones memorise the training windows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..assets import demo_corpus_path
from .data import ForecastCorpus
from .train import TrainConfig

#: data argument naming the shipped demo corpus
DEMO = "demo"

DEMO_RECIPE = TrainConfig(steps=1000, batch_size=64, eval_every=100, max_units=64, patience=4)
DEMO_STRIDES = {"train": 1, "val": 4, "test": 1}
#: models shipped in assets/models by make-assets: name -> (kind, constructor overrides)
#: The shipped POCO learns its unit embeddings 30x faster than the rest (effective lr 9e-3): its
#: best validation checkpoint comes early, when at the common rate the embeddings are still near
#: their initialisation and show no region structure; at 30x they separate regions and the test
#: score is higher (docs/results.md, benchmarks/results/embeddings_*.jsonl).
DEMO_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "poco_demo": ("POCO", {"unit_embedding_lr": 30.0}),
    "mlp_demo": ("MLP", {}),
    "nlinear_demo": ("NLinear", {}),
}

SHORT_RECORDING = TrainConfig(steps=1500, batch_size=64, eval_every=20, patience=8)
#: per-kind constructor overrides for short recordings: unit embeddings frozen at their random
#: initialisation (they still tell units apart): on a few hundred training frames, learned
#: embeddings memorise the training windows and POCO's validation score collapses, which dropout
#: and token noise did not prevent (docs/results.md).
SHORT_RECORDING_MODELS: dict[str, dict[str, Any]] = {
    "POCO": {"unit_embedding_lr": 0.0},
    "POYO": {"unit_embedding_lr": 0.0},
    "UICO": {"unit_embedding_lr": 0.0},
}
#: per-kind warm starts for short recordings (see train.fit)
SHORT_RECORDING_WARM_START: dict[str, str] = {"POCO": "mlp"}
RECIPES = {"default": TrainConfig(), "demo": DEMO_RECIPE, "short": SHORT_RECORDING}
#: ``auto`` picks ``short`` below this many training windows per session: an 800-frame recording
#: has 417, the lab's 1137-frame worms 619 (one patch of 1137 frames), 1400 frames 777; the demo
#: sessions have 840-1070 and keep the default recipe
SHORT_BELOW_WINDOWS = 800


def auto_recipe(corpus: ForecastCorpus) -> str:
    """``"short"`` when sessions average fewer than :data:`SHORT_BELOW_WINDOWS` training windows."""
    n = sum(corpus.n_windows("train").values()) / max(len(corpus.sessions), 1)
    return "short" if n < SHORT_BELOW_WINDOWS else "default"


def recipe(name: str, **overrides: Any) -> TrainConfig:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


def warm_start_for(recipe_name: str, kind: str) -> str:
    """How :func:`~pocoviz.forecast.train.fit` starts a ``kind`` model under a recipe."""
    return SHORT_RECORDING_WARM_START.get(kind, "none") if recipe_name == "short" else "none"


def model_overrides(recipe_name: str, kind: str) -> dict[str, Any]:
    return dict(SHORT_RECORDING_MODELS.get(kind, {})) if recipe_name == "short" else {}


def load_corpus(
    sources: Sequence[str | os.PathLike],
    *,
    data_dir: str | os.PathLike | None = None,
    strides: dict[str, int] | None = None,
    dataset: str | None = None,
) -> ForecastCorpus:
    """A corpus from ``"demo"`` and/or recording paths (files, folders of recordings, corpora).

    ``dataset`` renames the dataset of every non-demo session (e.g. to keep a real zebrafish
    recording apart from the synthetic zebrafish sessions).
    """
    from ..recordings import corpus_sessions, open_corpus

    if not sources:
        raise ValueError("no data given (a recording path, a folder, or 'demo')")
    items: dict[str, Any] = {}
    for src in sources:
        is_demo = str(src) == DEMO
        tree = open_corpus(demo_corpus_path() if is_demo else Path(src), data_dir=None if is_demo else data_dir)
        for name, ds in corpus_sessions(tree).items():
            if dataset and not is_demo:
                name = f"{dataset}/{name.split('/', 1)[-1]}"
            if name in items:
                raise ValueError(f"session {name!r} appears twice in the data")
            items[name] = ds
    return ForecastCorpus(items, strides=dict(strides or {"train": 1, "val": 1, "test": 1}))

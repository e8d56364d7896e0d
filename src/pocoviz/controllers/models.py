"""Forecasting models for the app: which checkpoints can be chosen, loading them once per process,
and the per-recording forecasts, adaptations and their caches (shared by all browser sessions)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pocoviz.recordings import RecordingError, resolve_in_data_dir

from .cache import LRUCache
from .sources import find_in_data_dir

#: prefix of the keys of checkpoints found under the data directory
DATA_PREFIX = "data:"


def list_models(data_dir: str | os.PathLike | None) -> dict[str, str]:
    """``{display name: key}`` of the shipped checkpoints (key = name) and of the checkpoints under
    the data directory (key = ``"data:"`` + path relative to it, without suffix)."""
    from pocoviz.forecast.checkpoint import available_models

    out = {name: name for name in available_models()}

    def is_checkpoint(entry: Path) -> bool:
        return entry.is_file() and entry.suffix == ".json" and entry.with_suffix(".safetensors").is_file()

    for rel in find_in_data_dir(data_dir, is_checkpoint):
        stem = str(Path(rel).with_suffix(""))
        out[f"{stem} (data directory)"] = DATA_PREFIX + stem
    return out


def model_path(key: str, data_dir: str | os.PathLike | None) -> str | Path:
    """What :func:`pocoviz.forecast.load_model` takes for a key of :func:`list_models`."""
    if key.startswith(DATA_PREFIX):
        if data_dir is None:
            raise RecordingError("no data directory is set", path=key[len(DATA_PREFIX) :])
        card = resolve_in_data_dir(key[len(DATA_PREFIX) :] + ".json", data_dir)
        return card.with_suffix("")
    return key


def forecast_stores(data_dir: str | os.PathLike | None) -> list[Path]:
    """The ``pocoviz forecast`` stores (:func:`pocoviz.storeformat.is_forecast_store`) under the
    data directory, searched as :func:`~pocoviz.controllers.sources.find_in_data_dir` does."""
    if data_dir is None:
        return []
    from pocoviz.storeformat import is_forecast_store

    root = Path(data_dir).resolve()
    return [root / rel for rel in find_in_data_dir(root, is_forecast_store)]


class ModelCache:
    """Loaded checkpoints (an :class:`LRUCache` keyed by path and card time). :meth:`get` returns a
    private copy, so that a view may register sessions with it or adapt it without touching other
    sessions' models."""

    def __init__(self, max_items: int = 8):
        self._cache: LRUCache[Any] = LRUCache(max_items, name="models")

    def get(self, key: str, data_dir: str | os.PathLike | None) -> Any:
        from pocoviz.forecast import load_model

        path = model_path(key, data_dir)
        card = Path(str(path) + ".json") if isinstance(path, Path) else None
        stamp = (key, str(path), card.stat().st_mtime if card is not None and card.exists() else None)
        return copy.deepcopy(self._cache.get_or_create(stamp, lambda: load_model(path, device="cpu")))


#: checkpoints loaded by any browser session (not to be confused with the registry of model kinds,
#: :data:`pocoviz.forecast.base.MODELS`)
LOADED_MODELS = ModelCache()
#: per-recording forecasts, keyed by (model key, adapted, recording key): in-RAM
#: :class:`~pocoviz.forecast.playback.RecordingForecast` for recordings in memory, handles on the
#: on-disk cache (:class:`~pocoviz.forecast.diskcache.DiskForecast`, shared with other server
#: processes) for lazily opened ones
FORECAST_CACHE: LRUCache[Any] = LRUCache(8, name="forecasts")
#: models adapted to a recording, keyed by (model key, recording key)
ADAPTED_CACHE: LRUCache[Any] = LRUCache(8, name="adapted models")

"""Forecasting models for the app: which checkpoints can be chosen, loading them once per process,
and the per-recording forecasts, adaptations and their caches (shared by all browser sessions)."""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pocoviz.recordings import RecordingError, resolve_in_data_dir

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


class ModelCache:
    """Loaded checkpoints (LRU, thread-safe). :meth:`get` returns a private copy, so that a view may
    register sessions with it or adapt it without touching other sessions' models."""

    def __init__(self, max_items: int = 8):
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def get(self, key: str, data_dir: str | os.PathLike | None) -> Any:
        from pocoviz.forecast import load_model

        path = model_path(key, data_dir)
        card = Path(str(path) + ".json") if isinstance(path, Path) else None
        stamp = (key, str(path), card.stat().st_mtime if card is not None and card.exists() else None)
        with self._lock:
            model = self._items.get(stamp)
            if model is not None:
                self._items.move_to_end(stamp)
        if model is None:
            model = load_model(path, device="cpu")
            with self._lock:
                self._items[stamp] = model
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
        return copy.deepcopy(model)


class ResultCache:
    """Process-wide LRU of per-recording results (forecasts, adapted models), so that switching back
    to a recording, or a second browser, reuses what was computed."""

    def __init__(self, max_items: int = 8):
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def get(self, key: tuple) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_create(self, key: tuple, create: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = create()
            self.put(key, value)
        return value

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


MODELS = ModelCache()
FORECASTS = ResultCache(max_items=8)
ADAPTED = ResultCache(max_items=8)

"""Where the app's recordings come from: the embedded demo corpus and files under the data directory.

Nothing outside the data directory is listed or opened: every path goes through
:func:`pocoviz.recordings.resolve_in_data_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import xarray as xr

from pocoviz.assets import ASSETS, DEMO_FILE, assets_dir  # noqa: F401  (re-exported)
from pocoviz.recordings import RECORDING_SUFFIXES, RecordingError, corpus_sessions, is_lazy, open_corpus, resolve_in_data_dir, session_key
from pocoviz.recordings.io import ENV_DATA_DIR, detect_format_or_none
from pocoviz.storeformat import is_forecast_store

from .cache import LRUCache

DEMO_KEY = "Demo corpus (synthetic)"
MAX_LISTED = 500
MAX_DEPTH = 3


def data_dir_from_env() -> Path | None:
    value = os.environ.get(ENV_DATA_DIR, "").strip()
    return Path(value) if value else None


def find_in_data_dir(data_dir: str | os.PathLike | None, take: Callable[[Path], bool]) -> list[str]:
    """Paths (relative to ``data_dir``) of the entries ``take`` accepts, searched ``MAX_DEPTH``
    folders deep, at most ``MAX_LISTED``; hidden entries and symlinks that leave the folder are
    skipped, and a folder that ``take`` accepts is not searched further."""
    if data_dir is None or not Path(data_dir).is_dir():
        return []
    root = Path(data_dir).resolve()
    found: list[str] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= MAX_LISTED or entry.name.startswith("."):
                continue
            try:
                resolve_in_data_dir(entry, root)
            except RecordingError:
                continue
            if take(entry):
                found.append(str(entry.relative_to(root)))
            elif entry.is_dir() and depth < MAX_DEPTH:
                walk(entry, depth + 1)

    walk(root, 1)
    return found


def _is_recording(entry: Path) -> bool:
    if entry.is_dir():  # Zarr stores and suite2p folders count as one recording; forecasts are not recordings
        if is_forecast_store(entry):
            return False
        return entry.suffix == ".zarr" or detect_format_or_none(entry) in ("suite2p", "zarr", "zarr-array")
    return entry.suffix.lower() in RECORDING_SUFFIXES


def list_sources(data_dir: str | os.PathLike | None) -> dict[str, str]:
    """``{display name: key}`` of the demo corpus and every recording under ``data_dir``.

    Keys are paths relative to ``data_dir`` (or ``"demo"``); see :func:`find_in_data_dir`.
    """
    out: dict[str, str] = {DEMO_KEY: "demo"}
    for rel in find_in_data_dir(data_dir, _is_recording):
        out[rel] = rel
    return out


class SourceCache:
    """Loaded corpora, shared by all sessions of the server process (an :class:`LRUCache` keyed by
    path and modification time, so that a file changed on disk is read again)."""

    def __init__(self, max_items: int = 6):
        self._cache: LRUCache[dict[str, xr.Dataset]] = LRUCache(max_items, name="sources")

    def load(self, key: str, data_dir: str | os.PathLike | None) -> dict[str, xr.Dataset]:
        """Sessions of a source as ``{"species/session": dataset}``; raises RecordingError."""
        if key == "demo":
            path = assets_dir() / DEMO_FILE
            stamp: tuple = ("demo", str(path), path.stat().st_mtime if path.exists() else None)
        else:
            if data_dir is None:
                raise RecordingError("no data directory is set (start the app with --data-dir)", path=key)
            path = resolve_in_data_dir(key, data_dir)
            stamp = (str(path), path.stat().st_mtime if path.exists() else None)
        return self._cache.get_or_create(stamp, lambda: _load_uncached(key, path, data_dir))


def _load_uncached(key: str, path: Path, data_dir) -> dict[str, xr.Dataset]:
    if key == "demo":
        if path.exists():
            tree = open_corpus(path)
        else:  # a checkout without assets: generate (deterministic, a few seconds)
            from pocoviz.recordings import make_demo_corpus

            tree = make_demo_corpus(seed=0)
    else:
        tree = open_corpus(path, data_dir=data_dir)
    sessions = corpus_sessions(tree)
    for ds in sessions.values():
        if not is_lazy(ds):  # chunked stores too large for memory stay Dask-backed (read by window)
            ds.load()
    return sessions


#: corpora loaded by any browser session of this process
SOURCE_CACHE = SourceCache()


def find_sessions(units: Mapping[str, int], data_dir: str | os.PathLike | None, hints: Iterable[str] = ()) -> dict[str, xr.Dataset]:
    """The recordings of the sessions ``units`` names (``{name: unit count}``, a model's
    "dataset/session" names), as ``{name: dataset}``: looked for in the demo corpus, then in the
    data directory's recordings (``hints`` first: paths such as those a checkpoint was trained on,
    relative to the data directory or inside it), matched by :func:`pocoviz.recordings.session_key`
    and unit count. The search stops when every session is found; sessions found nowhere are left
    out, and files that cannot be read are skipped."""
    wanted = {session_key(name): name for name in units}
    found: dict[str, xr.Dataset] = {}

    def take(source: str) -> None:
        try:
            sessions = SOURCE_CACHE.load(source, data_dir)
        except (RecordingError, OSError, ValueError):
            return
        for key, ds in sessions.items():
            name = wanted.get(session_key(key))
            if name is not None and name not in found and ds.sizes.get("unit") == units[name]:
                found[name] = ds

    take("demo")
    if len(found) == len(wanted) or data_dir is None:
        return found
    listed = [key for key in list_sources(data_dir).values() if key != "demo"]
    root = Path(data_dir).resolve()
    first = []
    for hint in hints:
        path = Path(hint)
        try:
            rel = str(path.resolve().relative_to(root)) if path.is_absolute() else str(path)
        except ValueError:
            continue
        if rel in listed and rel not in first:
            first.append(rel)
    for source in first + [key for key in listed if key not in first]:
        take(source)
        if len(found) == len(wanted):
            break
    return found

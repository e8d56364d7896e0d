"""2-D layouts of embeddings: PCA (instant), UMAP (umap-learn) and UMAP in torch
(:mod:`.torch_umap`, on a GPU where there is one), cached on disk.

umap-learn compiles its numba kernels on first use (over a minute on a 2-core machine) and then
takes seconds per few thousand points; a layout is therefore computed once per (embeddings,
settings) and stored as ``.npy`` under :func:`layout_cache_dir` (never pickled), and the app
ships the layouts of its shipped checkpoints in ``assets/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .separation import _as_tensor, pca_layout

Reducer = Literal["umap", "pca", "umap-torch"]
REDUCERS = ("umap", "pca", "umap-torch")
#: umap-learn settings of the POCO analysis (spec §6: ``umap.UMAP(n_components=2)``, defaults)
UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean"}
#: the torch UMAP's settings (Euclidean only), the same graph and curve as umap-learn's defaults
TORCH_UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1}
_DEFAULTS = {"umap": UMAP_DEFAULTS, "umap-torch": TORCH_UMAP_DEFAULTS, "pca": {}}


def layout_cache_dir() -> Path:
    """``POCOVIZ_CACHE``/layouts, else ``~/.cache/pocoviz/layouts``."""
    root = os.environ.get("POCOVIZ_CACHE", "").strip()
    return (Path(root) if root else Path.home() / ".cache" / "pocoviz") / "layouts"


def layout_key(x: Any, reducer: str, settings: dict[str, Any]) -> str:
    """sha256 of the embeddings' float32 bytes, their shape, the reducer and its settings."""
    arr = np.ascontiguousarray(_as_tensor(x).numpy().astype(np.float32))
    h = hashlib.sha256()
    h.update(json.dumps({"shape": arr.shape, "reducer": reducer, "settings": settings}, sort_keys=True).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


def umap_layout(x: Any, *, seed: int = 0, **settings: Any) -> np.ndarray:
    """umap-learn's 2-D embedding (n, 2) float32; deterministic for a seed (single-threaded)."""
    import umap  # noqa: PLC0415  (heavy: numba compiles on first use)

    arr = _as_tensor(x).numpy().astype(np.float32)
    if len(arr) < 4:
        raise ValueError(f"UMAP needs at least 4 points, got {len(arr)}")
    opts = {**UMAP_DEFAULTS, **settings}
    opts["n_neighbors"] = int(min(opts["n_neighbors"], len(arr) - 1))
    return umap.UMAP(n_components=2, random_state=seed, n_jobs=1, **opts).fit_transform(arr).astype(np.float32)


def _cache_path(x: Any, reducer: str, seed: int, cache_dir: str | os.PathLike | None, settings: dict[str, Any]) -> Path:
    full = {**_DEFAULTS[reducer], **settings, "seed": seed}
    folder = Path(cache_dir) if cache_dir is not None else layout_cache_dir()
    return folder / f"{reducer}-{layout_key(x, reducer, full)}.npy"


def compute_layout(
    x: Any,
    reducer: Reducer = "umap",
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: Any = None,
    progress: Any = None,
    **settings: Any,
) -> np.ndarray:
    """A 2-D layout (n, 2) of ``x`` by ``reducer``, read from / written to the disk cache.
    ``device`` and ``progress(fraction)`` are used by ``"umap-torch"`` (see :func:`torch_umap_layout`)."""
    if reducer not in REDUCERS:
        raise ValueError(f"reducer must be one of {REDUCERS}, got {reducer!r}")
    path = _cache_path(x, reducer, seed, cache_dir, settings)
    if use_cache and path.is_file():
        out = np.load(path, allow_pickle=False)
        if out.shape == (len(_as_tensor(x)), 2):
            return out
    if reducer == "umap":
        out = umap_layout(x, seed=seed, **settings)
    elif reducer == "umap-torch":
        from .torch_umap import torch_umap_layout

        out = torch_umap_layout(x, seed=seed, device=device, progress=progress, **settings)
    else:
        out = pca_layout(x).astype(np.float32)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # a file object: np.save would add ".npy" to a name
                np.save(f, out, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def cached_layout(x: Any, reducer: Reducer = "umap", *, seed: int = 0, cache_dir: str | os.PathLike | None = None, **settings: Any) -> np.ndarray | None:
    """The cached layout if there is one (never computes)."""
    path = _cache_path(x, reducer, seed, cache_dir, settings)
    return np.load(path, allow_pickle=False) if path.is_file() else None


def precompute_layouts(model: Any, cache_dir: str | os.PathLike, reducer: Reducer = "umap", *, seed: int = 0) -> list[Path]:
    """Layouts of every session of ``model`` and of all its sessions together, into ``cache_dir``
    (what the Embeddings tab looks up before computing one). Returns the files."""
    from .units import unit_embeddings

    names = [s.name for s in model.sessions]
    out = []
    for scope in [None, *([[n] for n in names] if len(names) > 1 else [])]:
        x = unit_embeddings(model, scope)["embedding"].values
        compute_layout(x, reducer, seed=seed, cache_dir=cache_dir)
        out.append(_cache_path(x, reducer, seed, cache_dir, {}))
    return out

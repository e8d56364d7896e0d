"""Embedding figures for ``pocoviz bench``: 2-D layout time per reducer and size (first call, which
includes umap-learn's numba compilation when its disk cache is cold, and warm), and the
separation statistics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .layout import compute_layout
from .separation import region_separation


def _clustered(n: int, dim: int = 128, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.normal(0, 0.05, (k, dim))
    return (centers[labels] + rng.normal(0, 0.02, (n, dim))).astype(np.float32), labels.astype(str)


def bench_embeddings(quick: bool = False) -> dict[str, Any]:
    """Layout seconds for POCO-sized embeddings (128-d, 10 clusters), per reducer and size."""
    sizes = (1000, 2000) if quick else (5000, 20000)
    out: dict[str, Any] = {"dim": 128, "sizes": list(sizes)}
    for reducer in ("pca", "umap"):
        for n in sizes:
            x, _ = _clustered(n)
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                compute_layout(x, reducer, use_cache=False)
                times.append(round(time.perf_counter() - t0, 3))
            out[f"{reducer}_{n}"] = {"first_s": times[0], "warm_s": times[1]}
    n = sizes[0]
    x, labels = _clustered(n)
    t0 = time.perf_counter()
    region_separation(x, labels, n_shuffles=100)
    out[f"silhouette_with_100_shuffles_{n}_s"] = round(time.perf_counter() - t0, 3)
    return out

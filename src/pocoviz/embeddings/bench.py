"""Embedding figures for ``pocoviz bench``: 2-D layout time per reducer and size (first call, which
includes umap-learn's numba compilation when its disk cache is cold, and warm), the layouts'
quality side by side on real data (the torch UMAP against umap-learn), and the separation
statistics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .layout import REDUCERS, compute_layout
from .separation import region_separation, silhouette_score
from .torch_umap import neighbor_preservation


def _clustered(n: int, dim: int = 128, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.normal(0, 0.05, (k, dim))
    return (centers[labels] + rng.normal(0, 0.02, (n, dim))).astype(np.float32), labels.astype(str)


def bench_embeddings(quick: bool = False) -> dict[str, Any]:
    """Layout seconds for POCO-sized embeddings (128-d, 10 clusters), per reducer and size."""
    sizes = (1000, 2000) if quick else (5000, 20000)
    out: dict[str, Any] = {"dim": 128, "sizes": list(sizes)}
    from pocoviz.backend import get_device

    out["umap_torch_device"] = str(get_device())
    for reducer in REDUCERS:
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
    out["quality"] = layout_quality(quick)
    return out


def _quality_sets(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    x, y = load_digits(return_X_y=True)
    sets = {"digits": (x.astype(np.float32), y.astype(str), "digit")}
    if not quick:
        from pocoviz.forecast import load_model
        from pocoviz.forecast.recipes import load_corpus

        from .units import unit_embeddings

        emb = unit_embeddings(load_model("poco_demo"), None, recordings=load_corpus(["demo"]).recordings)
        x = emb["embedding"].values.astype(np.float32)
        sets["poco_demo_all"] = (x, emb["session"].values.astype(str), "session")
        mouse = emb["session"].values == "mouse/mouse0"  # the session whose areas separate most (z 31)
        sets["poco_demo_mouse0"] = (x[mouse], emb["region"].values[mouse].astype(str), "region")
    return sets


def layout_quality(quick: bool = False, k: int = 15) -> dict[str, Any]:
    """Per data set and reducer: seconds, the fraction of 15-nearest neighbours the layout keeps
    (:func:`neighbor_preservation`) and the 2-D silhouette by the set's labels: digit; session for
    all the demo POCO's unit embeddings; cortical area for those of mouse0. umap-learn here is warm (compiled by the timings above)."""
    out: dict[str, Any] = {"k": k}
    for name, (x, labels, by) in _quality_sets(quick).items():
        row: dict[str, Any] = {"n": len(x), "dim": x.shape[1], "labels": by, "silhouette_input": round(float(silhouette_score(x, labels)), 4)}
        for reducer in REDUCERS:
            t0 = time.perf_counter()
            xy = compute_layout(x, reducer, use_cache=False)
            row[reducer] = {
                "seconds": round(time.perf_counter() - t0, 3),
                "neighbor_preservation": round(neighbor_preservation(x, xy, k), 4),
                "silhouette_2d": round(float(silhouette_score(xy, labels)), 4),
            }
        out[name] = row
    return out

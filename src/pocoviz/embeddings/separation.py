"""Does embedding space separate brain regions? Silhouette scores against a shuffled-label null, and
the region-by-region distance matrix of POCO's embedding analysis (spec ``poco.md`` §6).

All functions take embeddings ``x`` of shape (n, d) (NumPy or torch) and one label per row, and
run in torch on the CPU in float64. :func:`silhouette_score` uses every row (an n × n distance
matrix); :func:`region_separation` and :func:`region_distance_matrix` take at most ``max_units``
rows per group, a random sample stratified by label when there are more (as scikit-learn's
``silhouette_score(sample_size=...)`` does), so that a whole brain (70,000 units: a 40 GB distance
matrix) costs what 2,000 units do.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(0, 1, (50, 8)), rng.normal(4, 1, (50, 8))])
>>> labels = np.array(["a"] * 50 + ["b"] * 50)
>>> round(silhouette_score(x, labels), 2)
0.55
>>> sep = region_separation(x, labels, n_shuffles=100, seed=0)
>>> sep["score"] > sep["null_p95"]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

Metric = Literal["euclidean", "cosine"]


def _as_tensor(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to("cpu", torch.float64)
    if t.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return t


def _codes(labels: Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray(labels).astype(str)
    if lab.shape != (n,):
        raise ValueError(f"need one label per embedding ({n}), got {lab.shape}")
    names, codes = np.unique(lab, return_inverse=True)
    return names, codes


def pairwise_distances(x: Any, metric: Metric = "euclidean") -> torch.Tensor:
    """Distances between all rows, (n, n) float64: Euclidean, or cosine distance ``1 - cos``."""
    t = _as_tensor(x)
    if metric == "euclidean":
        return torch.cdist(t, t).fill_diagonal_(0.0)
    if metric == "cosine":
        u = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (1.0 - u @ u.T).clamp_min(0.0).fill_diagonal_(0.0)
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def _silhouettes(d: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Mean silhouette for each labelling; ``onehot`` (m, n, k) -> (m,). Rows in singleton
    clusters count 0 (as scikit-learn does)."""
    sums = torch.einsum("ij,mjk->mik", d, onehot)  # (m, n, k): distance sums to each cluster
    counts = onehot.sum(1, keepdim=True)  # (m, 1, k)
    own = (onehot * counts).sum(2)  # (m, n): size of each row's cluster
    a = (sums * onehot).sum(2) / (own - 1).clamp_min(1)
    mean_to = sums / counts.clamp_min(1)
    mean_to = torch.where(onehot.bool() | (counts == 0), torch.full_like(mean_to, float("inf")), mean_to)
    b = mean_to.min(2).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-300)
    s = torch.where(own > 1, s, torch.zeros_like(s))
    return s.mean(1)


def silhouette_score(x: Any, labels: Sequence[Any], metric: Metric = "euclidean") -> float:
    """Mean silhouette ``(b - a) / max(a, b)`` over rows: ``a`` the mean distance to the rest of the
    row's own label, ``b`` the smallest mean distance to another label. In [-1, 1]; about 0 when
    labels are unrelated to the geometry. Needs at least two labels."""
    d = pairwise_distances(x, metric)
    _, codes = _codes(labels, d.shape[0])
    k = codes.max() + 1 if len(codes) else 0
    if k < 2:
        raise ValueError("a silhouette needs at least two labels")
    onehot = torch.nn.functional.one_hot(torch.as_tensor(codes), k).to(d.dtype)[None]
    return float(_silhouettes(d, onehot)[0])


#: rows per group above which the separation test and the distance matrix use a stratified sample
MAX_UNITS = 2000
#: a label keeps at least this many rows in a sample (all of them when it has fewer)
MIN_PER_LABEL = 10


def stratified_sample(codes: np.ndarray, max_units: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all rows when there are at most ``max_units``, otherwise a random sample
    of about ``max_units`` in which each label keeps its share (at least ``MIN_PER_LABEL`` rows,
    or all of a smaller label's)."""
    codes = np.asarray(codes)
    n = len(codes)
    if n <= max_units:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    out = []
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        take = min(len(rows), max(MIN_PER_LABEL, round(max_units * len(rows) / n)))
        out.append(rng.choice(rows, take, replace=False))
    return np.sort(np.concatenate(out))


def _summary(score: float, null_arr: np.ndarray, n: int, names: Sequence[str], metric: str) -> dict[str, Any]:
    n_shuffles = len(null_arr)
    sd = float(null_arr.std(ddof=1)) if n_shuffles > 1 else float("nan")
    return {
        "score": score,
        "null": null_arr,
        "null_mean": float(null_arr.mean()),
        "null_sd": sd,
        "null_p95": float(np.percentile(null_arr, 95)),
        "p_value": float((1 + (null_arr >= score).sum()) / (1 + n_shuffles)),
        "z": (score - float(null_arr.mean())) / sd if sd and sd > 0 else float("nan"),
        "n": n,
        "labels": [str(v) for v in names],
        "metric": metric,
    }


def _separation_one(d: torch.Tensor, codes: np.ndarray, k: int, n_shuffles: int, gen: torch.Generator, batch: int) -> tuple[float, np.ndarray]:
    eye = torch.eye(k, dtype=d.dtype)
    code_t = torch.as_tensor(codes)
    n = len(codes)
    score = float(_silhouettes(d, eye[code_t][None])[0])
    null = []
    for start in range(0, n_shuffles, batch):
        m = min(batch, n_shuffles - start)
        perms = torch.stack([code_t[torch.randperm(n, generator=gen)] for _ in range(m)])
        null.append(_silhouettes(d, eye[perms]))
    return score, torch.cat(null).numpy()


def region_separation(
    x: Any,
    labels: Sequence[Any],
    *,
    groups: Sequence[Any] | None = None,
    n_shuffles: int = 200,
    seed: int = 0,
    metric: Metric = "euclidean",
    batch: int = 16,
    max_units: int = MAX_UNITS,
) -> dict[str, Any]:
    """The silhouette of ``labels`` against a null of shuffled labels (same label counts).

    With ``groups`` (e.g. the session of each unit) the silhouette is computed within each group
    that has at least two labels, labels are shuffled within groups, and score and null are the
    means over groups (spec §6 compares regions within sessions). A group of more than
    ``max_units`` rows is scored on a random sample of them, stratified by label
    (:func:`stratified_sample`, seeded by ``seed``); the null is drawn on the same sample.

    Returns ``score``; ``null`` (n_shuffles,); ``null_mean``, ``null_sd``, ``null_p95``; ``p_value``
    = (1 + #null ≥ score) / (1 + n_shuffles); ``z`` = (score − null mean) / null sd; ``n`` (all
    rows), ``n_used`` (the rows scored), ``labels`` (the distinct labels) and, with groups,
    ``groups`` (those used).
    """
    if n_shuffles < 1:
        raise ValueError("n_shuffles must be ≥ 1")
    t = _as_tensor(x)
    n = t.shape[0]
    names, codes = _codes(labels, n)
    gen = torch.Generator().manual_seed(int(seed))
    if groups is None:
        if len(names) < 2:
            raise ValueError("a silhouette needs at least two labels")
        rows = stratified_sample(codes, max_units, seed)
        present, local = np.unique(codes[rows], return_inverse=True)
        score, null = _separation_one(pairwise_distances(t[torch.as_tensor(rows)], metric), local, len(present), n_shuffles, gen, batch)
        out = _summary(score, null, n, names, metric)
        out["n_used"] = len(rows)
        return out
    gnames, gcodes = _codes(groups, n)
    scores, nulls, used, n_used = [], [], [], 0
    for g, gname in enumerate(gnames):
        rows = np.flatnonzero(gcodes == g)
        rows = rows[stratified_sample(codes[rows], max_units, seed)]
        present, local = np.unique(codes[rows], return_inverse=True)
        if len(present) < 2:
            continue
        score, null = _separation_one(pairwise_distances(t[torch.as_tensor(rows)], metric), local, len(present), n_shuffles, gen, batch)
        scores.append(score)
        nulls.append(null)
        used.append(str(gname))
        n_used += len(rows)
    if not scores:
        raise ValueError("no group holds two labels: no silhouette")
    out = _summary(float(np.mean(scores)), np.mean(nulls, axis=0), n, names, metric)
    out["n_used"] = n_used
    out["groups"] = used
    out["group_scores"] = dict(zip(used, (float(v) for v in scores)))
    return out


def region_distance_matrix(
    x: Any,
    labels: Sequence[Any],
    *,
    groups: Sequence[Any] | None = None,
    metric: Metric = "euclidean",
    normalise: bool = True,
    max_units: int = MAX_UNITS,
    seed: int = 0,
) -> xr.DataArray:
    """Mean pairwise distance between the embeddings of every pair of labels (spec §6).

    Within a label, self-pairs are excluded. With ``groups`` only pairs within the same group
    (session) count: distances are summed over groups and divided by the number of such pairs.
    A group of more than ``max_units`` rows contributes a random sample of them, stratified by
    label (:func:`stratified_sample`): each label's mean distances are then estimated from its
    sampled rows. With ``normalise`` each row is min-max scaled to [0, 1], as the POCO analysis
    does before averaging over seeds; a region closer to itself than to the others then has 0 on
    the diagonal. Returns a DataArray (``region``, ``region_to``).
    """
    t = _as_tensor(x)
    names, codes = _codes(labels, t.shape[0])
    k = len(names)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(codes), k).to(t.dtype)
    gcodes = np.zeros(len(codes), np.int64) if groups is None else _codes(groups, len(codes))[1]
    sums = torch.zeros((k, k), dtype=t.dtype)
    pairs = torch.zeros((k, k), dtype=t.dtype)
    for g in np.unique(gcodes):
        rows = np.flatnonzero(gcodes == g)
        idx = torch.as_tensor(rows[stratified_sample(codes[rows], max_units, seed)])
        oh = onehot[idx]
        sums += oh.T @ pairwise_distances(t[idx], metric) @ oh
        counts = oh.sum(0)
        pairs += counts[:, None] * counts[None, :] - torch.diag(counts)  # self-pairs excluded on the diagonal
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (sums / pairs).numpy()
    m[pairs.numpy() <= 0] = np.nan
    if normalise:
        lo = np.nanmin(m, axis=1, keepdims=True)
        hi = np.nanmax(m, axis=1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        m = (m - lo) / span
    return xr.DataArray(
        m, dims=("region", "region_to"), coords={"region": names.astype(str), "region_to": names.astype(str)},
        attrs={"metric": metric, "normalised": int(normalise), "within_groups": int(groups is not None),
               "description": "mean pairwise distance between units of two regions"},
    )  # fmt: skip


def pca_layout(x: Any, n_components: int = 2) -> np.ndarray:
    """Principal-component scores (n, n_components) of the centred rows, signs fixed so that each
    component's largest-magnitude loading is positive (deterministic across runs)."""
    t = _as_tensor(x)
    t = t - t.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(t, full_matrices=False)
    comps = vh[:n_components]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    return (t @ comps.T).numpy()

"""The torch UMAP (pocoviz.embeddings.torch_umap): each stage against its definition, and the
layout against umap-learn's quality on real data (sklearn's bundled digits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pocoviz.embeddings import compute_layout, neighbor_preservation, pca_layout, silhouette_score, torch_umap_layout
from pocoviz.embeddings.torch_umap import curve_params, fuzzy_graph, knn, smooth_knn


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def test_knn_is_exact_and_excludes_the_point_itself():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(300, 7)).astype(np.float32))
    dist, idx = knn(x, 10, max_block=300 * 37)  # several blocks, the last one partial
    d = torch.cdist(x.double(), x.double()).fill_diagonal_(float("inf"))
    ref_d, ref_i = d.topk(10, largest=False)
    assert torch.equal(idx, ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d.numpy(), rtol=1e-5)
    assert not (idx == torch.arange(300)[:, None]).any()
    with pytest.raises(ValueError, match="k must be in"):
        knn(x[:5], 5)


def test_smooth_knn_solves_the_bandwidth_equation():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(500, 5)).astype(np.float32))
    dist, _ = knn(x, 14)
    rho, sigma = smooth_knn(dist, 15)
    assert torch.equal(rho, dist[:, 0])  # no duplicate points: rho is the nearest distance
    psum = torch.exp(-(dist - rho[:, None]).clamp_min(0) / sigma[:, None]).sum(1)
    np.testing.assert_allclose(psum.numpy(), math.log2(15), rtol=1e-4)


def test_fuzzy_graph_is_the_symmetric_fuzzy_union():
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.normal(size=(200, 4)).astype(np.float32))
    dist, idx = knn(x, 9)
    head, tail, w = fuzzy_graph(dist, idx, 10)
    n = len(x)
    dense = torch.zeros(n, n, dtype=w.dtype)
    dense[head, tail] = w
    assert torch.equal(dense, dense.T) and (w > 0).all() and (w <= 1).all()
    # the directed weights, recomputed densely, and their fuzzy union
    rho, sigma = smooth_knn(dist, 10)
    p = torch.zeros(n, n, dtype=w.dtype)
    p[torch.arange(n).repeat_interleave(9), idx.reshape(-1)] = torch.exp(-(dist - rho[:, None]).clamp_min(0) / sigma[:, None]).reshape(-1)
    torch.testing.assert_close(dense, p + p.T - p * p.T)
    nearest = dense[torch.arange(n), idx[:, 0]]
    torch.testing.assert_close(nearest, torch.ones_like(nearest))  # each point's nearest neighbour has weight 1


def test_curve_parameters_equal_umap_learn():
    from umap.umap_ import find_ab_params

    for min_dist, spread in ((0.1, 1.0), (0.5, 1.0), (0.0, 2.0)):
        np.testing.assert_allclose(curve_params(min_dist, spread), find_ab_params(spread, min_dist), rtol=1e-4)


def test_layout_keeps_neighbourhoods_like_umap_learn(digits):
    """Fraction of 15-nearest neighbours kept, digits (1797 x 64): umap-learn 0.535 (pocoviz bench),
    PCA 0.151; this implementation 0.540. Digit classes separate far more than in the input."""
    x, y = digits
    xy = torch_umap_layout(x, seed=0)
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    kept = neighbor_preservation(x, xy)
    assert kept > 0.5 and kept > 3 * neighbor_preservation(x, pca_layout(x))
    assert float(silhouette_score(xy, y)) > 0.5 > 0.3 > float(silhouette_score(x, y))


def test_layout_is_deterministic_on_the_cpu_and_reports_progress():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (150, 10)), rng.normal(8, 1, (150, 10))]).astype(np.float32)
    seen = []
    a = torch_umap_layout(x, seed=4, device="cpu", n_epochs=60, progress=seen.append)
    np.testing.assert_array_equal(a, torch_umap_layout(x, seed=4, device="cpu", n_epochs=60))
    assert not np.array_equal(a, torch_umap_layout(x, seed=5, device="cpu", n_epochs=60))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3
    # the two clusters stay apart: every point is nearer its own cluster's centre
    lab = np.repeat([0, 1], 150)
    centres = np.stack([a[lab == k].mean(0) for k in (0, 1)])
    assert (np.linalg.norm(a[:, None] - centres[None], axis=2).argmin(1) == lab).all()


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 4 points"):
        torch_umap_layout(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"must be \(n, d\)"):
        torch_umap_layout(np.zeros(10))
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        torch_umap_layout(x)
    with pytest.raises(ValueError, match="n_neighbors must be at least 2"):
        torch_umap_layout(np.ones((10, 3)), n_neighbors=1)


def test_duplicate_points_get_a_finite_layout():
    x = np.repeat(np.random.default_rng(0).normal(size=(30, 5)), 3, axis=0).astype(np.float32)
    xy = torch_umap_layout(x, n_epochs=50)
    assert np.isfinite(xy).all() and len(np.unique(xy.round(4), axis=0)) > 30


def test_compute_layout_caches_the_torch_layout(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    a = compute_layout(x, "umap-torch", cache_dir=tmp_path, n_epochs=40, device="cpu")
    assert [p.name.startswith("umap-torch-") for p in tmp_path.glob("*.npy")] == [True]
    np.testing.assert_array_equal(compute_layout(x, "umap-torch", cache_dir=tmp_path, n_epochs=40), a)
    assert len(list(tmp_path.glob("*.npy"))) == 1  # same key: read back, not recomputed
    compute_layout(x, "umap-torch", cache_dir=tmp_path, n_epochs=41)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # other settings, other key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (GPU checks run on a lent GPU machine)")
def test_layout_on_the_gpu_keeps_neighbourhoods_as_on_the_cpu(digits):
    x, _ = digits
    gpu = torch_umap_layout(x, seed=0, device="cuda")
    cpu = torch_umap_layout(x, seed=0, device="cpu")
    assert abs(neighbor_preservation(x, gpu) - neighbor_preservation(x, cpu)) < 0.03

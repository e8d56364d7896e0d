"""Region separation in embedding space: silhouette against plain reference code, shuffled null,
distance matrix, PCA."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.embeddings import pca_layout, region_distance_matrix, region_separation, silhouette_score


def reference_silhouette(x: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> float:
    """scikit-learn's definition, written out with loops."""
    n = len(x)
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - u @ u.T
    else:
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    s = np.zeros(n)
    for i in range(n):
        own = labels == labels[i]
        if own.sum() <= 1:
            continue
        a = d[i, own & (np.arange(n) != i)].mean()
        b = min(d[i, labels == other].mean() for other in set(labels) - {labels[i]})
        s[i] = (b - a) / max(a, b)
    return float(s.mean())


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_matches_the_definition(metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 5)) + np.repeat(rng.normal(0, 1.5, (4, 5)), 15, axis=0)
    labels = np.repeat(list("abcd"), 15)
    labels[0] = "z"  # a singleton cluster counts 0
    assert silhouette_score(x, labels, metric) == pytest.approx(reference_silhouette(x, labels, metric), abs=1e-12)


def test_separated_regions_beat_the_null_and_unrelated_labels_do_not():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (5, 16))
    labels = np.repeat([f"r{i}" for i in range(5)], 40)
    x = centers[np.repeat(np.arange(5), 40)] + rng.normal(0, 1.5, (200, 16))
    sep = region_separation(x, labels, n_shuffles=200, seed=1)
    assert sep["score"] > sep["null_p95"] and sep["p_value"] == pytest.approx(1 / 201)
    assert sep["null"].shape == (200,) and abs(sep["null_mean"]) < 0.05
    # the null is the silhouette of shuffled labels: reproduce one draw
    assert sep["score"] == pytest.approx(silhouette_score(x, labels), abs=1e-12)
    noise = region_separation(rng.normal(size=(200, 16)), labels, n_shuffles=200, seed=1)
    assert noise["p_value"] > 0.05 and noise["score"] < noise["null_p95"] + 0.01
    again = region_separation(x, labels, n_shuffles=200, seed=1)
    np.testing.assert_array_equal(again["null"], sep["null"])


def test_region_distance_matrix():
    x = np.array([[0.0, 0], [0, 1], [10, 0], [10, 2], [10, 4]])
    labels = ["a", "a", "b", "b", "b"]
    raw = region_distance_matrix(x, labels, normalise=False)
    assert list(raw.region.values) == ["a", "b"]
    assert raw.sel(region="a", region_to="a") == pytest.approx(1.0)  # one pair, self-pairs excluded
    assert raw.sel(region="b", region_to="b") == pytest.approx((2 + 4 + 2) / 3)
    ab = np.mean([np.hypot(p[0] - q[0], p[1] - q[1]) for p in x[:2] for q in x[2:]])
    assert raw.sel(region="a", region_to="b") == pytest.approx(ab) == raw.sel(region="b", region_to="a")
    norm = region_distance_matrix(x, labels)
    np.testing.assert_allclose(norm.values, [[0, 1], [1, 0]])  # each region closest to itself


def test_pca_layout_is_the_leading_subspace_with_fixed_signs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1])
    y = pca_layout(x)
    assert y.shape == (100, 2)
    assert np.var(y[:, 0]) == pytest.approx(np.linalg.svd(x - x.mean(0), compute_uv=False)[0] ** 2 / 100, rel=1e-9)
    perm = rng.permutation(100)
    np.testing.assert_allclose(pca_layout(x[perm]), y[perm], atol=1e-9)  # signs do not depend on row order
    with pytest.raises(ValueError, match="NaN"):
        pca_layout(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="one label per embedding"):
        silhouette_score(x, ["a", "b"])


# -- unit embeddings and layouts ------------------------------------------------------------------


def tiny_poco():
    import torch

    from pocoviz.forecast import SessionInfo, build_model

    torch.manual_seed(0)
    sessions = [SessionInfo("worm/a", 4, "worm", labels=("AVAL", "", "RIML", "AVAR")), SessionInfo("fish/b", 3, "fish")]
    return build_model("POCO", sessions, dim=8, hidden=8, self_heads=1, dim_head=8)


def test_unit_embeddings_are_the_raw_rows_with_unit_coordinates():
    import xarray as xr

    from pocoviz.embeddings import unit_embeddings
    from pocoviz.recordings import make_recording

    model = tiny_poco()
    rec = make_recording(np.zeros((10, 3), np.float32), sampling_rate_hz=1.0, species="fish", session="b",
                         region=["tectum", "tectum", "hb"], x=[1.0, 2.0, 3.0], y=[0.0, 0.0, 1.0])  # fmt: skip
    emb = unit_embeddings(model, recordings={"fish/b": rec})
    assert emb.sizes == {"unit": 7, "dim": 8}
    np.testing.assert_array_equal(emb["embedding"].values, model.unit_emb.weight.detach().numpy())
    assert emb["session"].values.tolist() == ["worm/a"] * 4 + ["fish/b"] * 3
    assert emb["unit_index"].values.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert emb["label"].values.tolist() == ["AVAL", "", "RIML", "AVAR", "", "", ""]
    assert emb["region"].values.tolist() == ["", "", "", "", "tectum", "tectum", "hb"]
    assert np.isnan(emb["x"].values[:4]).all() and emb["x"].values[4:].tolist() == [1.0, 2.0, 3.0]
    one = unit_embeddings(model, ["fish/b"])
    np.testing.assert_array_equal(one["embedding"].values, model.unit_emb.weight.detach().numpy()[4:])
    assert isinstance(one, xr.Dataset) and "x" not in one.coords
    with pytest.raises(KeyError, match="not known"):
        unit_embeddings(model, ["fish/zz"])
    with pytest.raises(ValueError, match="has 3 units, the model 4"):
        unit_embeddings(model, ["worm/a"], recordings={"worm/a": rec})
    from pocoviz.forecast import SessionInfo, build_model

    with pytest.raises(TypeError, match="no unit embeddings"):
        unit_embeddings(build_model("MLP", [SessionInfo("a/b", 2, "a")]))


def test_layouts_are_cached_on_disk_without_pickles(tmp_path):
    from pocoviz.embeddings import cached_layout, compute_layout

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 6)), rng.normal(6, 1, (40, 6))])
    assert cached_layout(x, "pca", cache_dir=tmp_path) is None
    p = compute_layout(x, "pca", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith("pca-")
    np.testing.assert_array_equal(np.load(files[0], allow_pickle=False), p)
    np.testing.assert_array_equal(cached_layout(x, "pca", cache_dir=tmp_path), p)
    u = compute_layout(x, "umap", cache_dir=tmp_path, seed=0)
    assert u.shape == (80, 2) and np.isfinite(u).all()
    # UMAP keeps the two clusters apart: every point is nearer its own cluster's centre
    a, b = u[:40].mean(0), u[40:].mean(0)
    near_a = np.linalg.norm(u - a, axis=1) < np.linalg.norm(u - b, axis=1)
    assert near_a[:40].all() and not near_a[40:].any()
    np.testing.assert_array_equal(compute_layout(x, "umap", cache_dir=tmp_path, seed=0), u)  # from the cache
    assert len(list(tmp_path.glob("umap-*.npy"))) == 1
    assert cached_layout(x + 1e-3, "umap", cache_dir=tmp_path) is None  # other data, other key
    with pytest.raises(ValueError, match="reducer must be one of"):
        compute_layout(x, "tsne", cache_dir=tmp_path)


def test_separation_and_distances_within_sessions():
    """Spec §6 compares regions within a session: with groups, pairs across sessions never count,
    labels are shuffled within a session, and the score is the mean of the sessions' scores."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 4, 20, axis=0)
    b = rng.normal(size=(45, 4)) + 50  # another session far away: pooled, its regions would look alike
    x = np.concatenate([a, b])
    labels = np.array(list(np.repeat(["r0", "r1", "r2"], 20)) + list(np.repeat(["r0", "r1", "r2"], 15)))
    groups = np.array(["s1"] * 60 + ["s2"] * 45)
    sep = region_separation(x, labels, groups=groups, n_shuffles=100, seed=0)
    s1, s2 = silhouette_score(a, labels[:60]), silhouette_score(b, labels[60:])
    assert sep["score"] == pytest.approx((s1 + s2) / 2, abs=1e-12)
    assert sep["group_scores"] == pytest.approx({"s1": s1, "s2": s2})
    assert sep["score"] > sep["null_p95"] and sep["groups"] == ["s1", "s2"]
    within = region_distance_matrix(x, labels, groups=groups, normalise=False)
    d = lambda p, q: np.mean([np.linalg.norm(u - v) for u in p for v in q])  # noqa: E731
    want = (d(a[:20], a[20:40]) * 400 + d(b[:15], b[15:30]) * 225) / 625
    assert within.sel(region="r0", region_to="r1") == pytest.approx(want)
    with pytest.raises(ValueError, match="no group holds two labels"):
        region_separation(x, np.array(["r0"] * 105), groups=groups)


def test_session_embeddings_add_the_mean_unit_embedding():
    from pocoviz.embeddings import session_embeddings

    model = tiny_poco()
    se = session_embeddings(model)
    assert se["session"].values.tolist() == ["worm/a", "fish/b"] and se["dataset"].values.tolist() == ["worm", "fish"]
    u = model.unit_emb.weight.detach().numpy()
    s = model.session_emb.weight.detach().numpy()
    np.testing.assert_allclose(se["embedding"].values[0], s[0] + u[:4].mean(0), rtol=1e-6)
    np.testing.assert_allclose(se["embedding"].values[1], s[1] + u[4:].mean(0), rtol=1e-6)


def test_stratified_sample_keeps_every_label_and_its_share():
    from pocoviz.embeddings.separation import MIN_PER_LABEL, stratified_sample

    codes = np.repeat([0, 1, 2], [9000, 990, 10])
    rows = stratified_sample(codes, 1000, seed=3)
    counts = np.bincount(codes[rows], minlength=3)
    assert np.all(np.diff(rows) > 0) and len(set(rows)) == len(rows)
    assert counts[0] == 900 and counts[1] == 99 and counts[2] == MIN_PER_LABEL  # shares kept; a rare label keeps all of its 10
    np.testing.assert_array_equal(stratified_sample(codes, 10_000), np.arange(10_000))  # small enough: every row
    np.testing.assert_array_equal(stratified_sample(codes, 1000, seed=3), rows)  # seeded


def test_sampled_separation_estimates_the_full_silhouette_without_an_n_by_n_matrix():
    """A whole brain's table (tens of thousands of units) is scored on a stratified sample: the
    estimate is close to the silhouette over every unit, and the null is drawn on the sample."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.5, (4, 16))
    labels = np.repeat(["a", "b", "c", "d"], [1500, 1000, 700, 300])
    x = centres[np.searchsorted(["a", "b", "c", "d"], labels)] + rng.normal(size=(3500, 16))
    full = silhouette_score(x, labels)
    sep = region_separation(x, labels, n_shuffles=50, seed=0, max_units=600)
    assert sep["n"] == 3500 and 590 <= sep["n_used"] <= 610
    assert sep["score"] == pytest.approx(full, abs=0.03) and sep["score"] > sep["null_p95"]
    everything = region_separation(x, labels, n_shuffles=50, seed=0, max_units=10_000)
    assert everything["n_used"] == 3500 and everything["score"] == pytest.approx(full, abs=1e-12)
    matrix = region_distance_matrix(x, labels, normalise=False, max_units=600).values
    exact = region_distance_matrix(x, labels, normalise=False, max_units=10_000).values
    np.testing.assert_allclose(matrix, exact, rtol=0.03)
    grouped = region_separation(x, labels, groups=np.arange(3500) % 2, n_shuffles=20, seed=0, max_units=400)
    assert 780 <= grouped["n_used"] <= 820 and grouped["groups"] == ["0", "1"]

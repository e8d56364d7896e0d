"""The synthetic corpus: presets, determinism, schema, structure that makes it forecastable."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pocoviz.recordings.io import save_corpus
from pocoviz.recordings.schema import validate
from pocoviz.recordings.synthetic import (
    CORPUS_SIZES,
    SPECIES_PRESETS,
    _dynamics_violation,
    make_demo_corpus,
    make_session,
)


@pytest.fixture(scope="module")
def tiny() -> xr.DataTree:
    return make_demo_corpus(0, size="tiny")


@pytest.fixture(scope="module")
def fish() -> xr.Dataset:
    return make_session("zebrafish", n_units=300, n_time=800, seed=0)


def _sessions(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    return {node.path: node.to_dataset() for node in tree.subtree if "activity" in node.data_vars}


# ----------------------------------------------------------------------------------- presets


def test_zebrafish_preset_is_a_whole_larval_brain(fish):
    p = SPECIES_PRESETS["zebrafish"]
    assert len(p.regions) >= 8
    for name in ("telencephalon", "habenula", "pretectum", "optic tectum", "thalamus", "tegmentum", "cerebellum", "hindbrain", "raphe"):
        assert name in p.region_names
    assert p.sampling_rate_hz == 2.0
    assert p.n_units_range[0] <= 1_000 and p.n_units_range[1] >= 100_000
    assert set(np.unique(fish["region"].values)) <= set(p.region_names)
    assert len(np.unique(fish["region"].values)) == len(p.regions)
    for axis, size in zip("xyz", p.brain_size_um):
        v = fish[axis].values
        assert v.min() > -30 and v.max() < size + 30, axis  # inside the larval-brain box (+ session jitter)
    assert fish["x"].values.std() > 40 and fish["z"].values.std() > 20  # really 3-D


def test_mouse_preset_has_four_cortical_areas_in_2d():
    p = SPECIES_PRESETS["mouse"]
    assert set(p.region_names) == {"PPC", "RSP", "V1", "M2"}
    ds = make_session("mouse", n_units=120, n_time=100, seed=1)
    assert set(np.unique(ds["region"].values)) == {"PPC", "RSP", "V1", "M2"}
    assert "x" in ds.coords and "y" in ds.coords and "z" not in ds.coords
    assert ds.attrs["sampling_rate_hz"] == p.sampling_rate_hz == 5.0
    # V1 lies posterior and lateral of M2 (dorsal-cortex map, y anterior-positive)
    y = ds["y"].to_series().groupby(ds["region"].to_series()).mean()
    x = ds["x"].to_series().groupby(ds["region"].to_series()).mean()
    assert y["V1"] < y["PPC"] < y["M2"] and x["V1"] > x["RSP"]


def test_worm_preset_names_real_head_neurons_with_ganglia():
    p = SPECIES_PRESETS["worm"]
    names = [n.name for n in p.neurons]
    assert 110 <= len(names) <= 140 and len(set(names)) == len(names)
    for name in ("AVAL", "AVAR", "AVBL", "AVBR", "RIML", "RIMR", "AIBL", "AIBR", "ASHL", "ASHR", "SMDVL", "RMEL", "RMER", "RMED", "RMEV"):
        assert name in names
    ganglia = {n.ganglion for n in p.neurons}
    assert ganglia == {
        "Anterior Pharyngeal Bulb",
        "Anterior Ganglion",
        "Dorsal Ganglion",
        "Lateral Ganglion",
        "Ventral Ganglion",
        "Retrovesicular Ganglion",
    }
    assert ganglia == set(p.region_names)
    by_name = {n.name: n for n in p.neurons}
    assert by_name["AVAL"].ganglion == "Lateral Ganglion" and by_name["AIYL"].ganglion == "Ventral Ganglion"
    # left/right pairs mirror each other across the midline (z, left positive)
    assert by_name["AVAL"].position[2] > 0 > by_name["AVAR"].position[2]
    assert by_name["AVAL"].position[0] == by_name["AVAR"].position[0]
    assert p.sampling_rate_hz == 1.7


def test_worm_session_labels_some_neurons_like_neuropal():
    p = SPECIES_PRESETS["worm"]
    ds = make_session("worm", n_time=100, seed=0, session_index=2)
    table = {n.name: n.ganglion for n in p.neurons}
    labels = ds["label"].values.astype(str)
    regions = ds["region"].values.astype(str)
    assert 0.8 * len(table) <= len(labels) <= len(table)
    unlabelled = labels == ""
    assert 0.2 <= unlabelled.mean() <= 0.45
    assert np.all(regions[unlabelled] == "")
    for lab, reg in zip(labels[~unlabelled], regions[~unlabelled]):
        assert table[lab] == reg
    assert len(set(labels[~unlabelled])) == (~unlabelled).sum()  # each neuron at most once
    assert np.all(np.diff(ds["x"].values) >= 0)  # ordered anterior to posterior


def test_worm_units_beyond_the_table_are_unidentified():
    ds = make_session("worm", n_units=150, n_time=60, seed=0)
    labels = ds["label"].values.astype(str)
    assert ds.sizes["unit"] == 150
    assert (labels != "").sum() <= len(SPECIES_PRESETS["worm"].neurons)
    assert np.all(ds["region"].values.astype(str)[labels == ""] == "")


def test_worm_forward_and_reversal_neurons_are_anticorrelated():
    """Reversal (AVA, AVD, AVE, AIB, RIM, AIZ) vs forward (AVB, RIB, RID, AIY) classes, as in Kato 2015."""
    ds = make_session("worm", n_units=128, n_time=600, seed=0)
    by_class = {n.name: n.neuron_class for n in SPECIES_PRESETS["worm"].neurons}
    classes = np.array([by_class.get(lab, "") for lab in ds["label"].values.astype(str)])
    act = ds["activity"].values
    reversal = act[:, np.isin(classes, ["AVA", "AVD", "AVE", "AIB", "RIM", "AIZ"])]
    forward = act[:, np.isin(classes, ["AVB", "RIB", "RID", "AIY"])]
    assert reversal.shape[1] >= 4 and forward.shape[1] >= 2
    assert np.corrcoef(reversal.mean(1), forward.mean(1))[0, 1] < -0.3
    # bilateral pairs (both members identified) are strongly correlated
    labels = list(ds["label"].values.astype(str))
    pairs = [(labels.index(a), labels.index(a[:-1] + "R")) for a in labels if a.endswith("L") and a[:-1] + "R" in labels]
    assert len(pairs) >= 10
    assert np.median([np.corrcoef(act[:, i], act[:, j])[0, 1] for i, j in pairs]) > 0.5


# ------------------------------------------------------------------------------ determinism


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    a = make_session("zebrafish", n_units=150, n_time=120, seed=7, session_index=1)
    b = make_session("zebrafish", n_units=150, n_time=120, seed=7, session_index=1)
    assert a["activity"].values.tobytes() == b["activity"].values.tobytes()
    xr.testing.assert_identical(a, b)
    c = make_session("zebrafish", n_units=150, n_time=120, seed=8, session_index=1)
    d = make_session("zebrafish", n_units=150, n_time=120, seed=7, session_index=2)
    for other in (c, d):
        assert not np.array_equal(a["activity"].values, other["activity"].values)
        assert not np.array_equal(a["x"].values, other["x"].values)
    assert a.attrs["source"] == "pocoviz synthetic generator v1 (seed=7, session_index=1)"


def test_corpus_is_deterministic(tiny):
    again = make_demo_corpus(0, size="tiny")
    for path, ds in _sessions(tiny).items():
        assert ds["activity"].values.tobytes() == again[path].to_dataset()["activity"].values.tobytes()
    other = make_demo_corpus(1, size="tiny")
    assert not np.array_equal(tiny["worm/worm0"]["activity"].values, other["worm/worm0"]["activity"].values)


# ----------------------------------------------------------------------------- schema, corpus


def test_tiny_corpus_structure_and_schema(tiny):
    sessions = _sessions(tiny)
    assert sorted(tiny.children) == ["mouse", "worm", "zebrafish"]
    expected = {f"/{sp}/{SPECIES_PRESETS[sp].session_prefix}{i}" for sp, s in CORPUS_SIZES["tiny"].items() for i in range(len(s))}
    assert set(sessions) == expected
    for sp in ("zebrafish", "mouse", "worm"):
        assert len(tiny[sp].children) >= 2
    for path, ds in sessions.items():
        validate(ds)
        species, session = path.strip("/").split("/")
        assert ds.attrs["species"] == species and ds.attrs["session"] == session
        assert ds.sizes["unit"] < 100 and ds.sizes["time"] <= 300
        assert ds.attrs["synthetic"] == 1
        assert "Duan" in ds.attrs["citation"] and "CURBD" in ds.attrs["citation"] and "Synthetic" in ds.attrs["citation"]
        assert ds.attrs["source"].startswith("pocoviz synthetic generator v1 (seed=0")
        assert ds["activity"].attrs["units"] == "z-score"
        np.testing.assert_allclose(ds["time"].values[1] - ds["time"].values[0], 1 / ds.attrs["sampling_rate_hz"])


def test_zscore_output_is_standardized(fish):
    a = fish["activity"].values.astype(np.float64)
    np.testing.assert_allclose(a.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(a.std(axis=0), 1.0, atol=1e-3)


@pytest.mark.parametrize(
    ("output", "check"),
    [
        ("F", lambda a: np.median(a) > 50 and (a > 0).mean() > 0.99),
        ("dF/F", lambda a: 0.05 < np.median(a) < 3 and a.min() > -3),
    ],
)
def test_raw_outputs(output, check):
    ds = make_session("mouse", n_units=60, n_time=200, seed=0, output=output)
    assert ds["activity"].attrs["units"] == output
    validate(ds)
    assert check(ds["activity"].values)


def test_sessions_of_a_species_vary():
    a = make_session("mouse", seed=3, session_index=0, n_time=50)
    b = make_session("mouse", seed=3, session_index=1, n_time=50)
    assert a.sizes["unit"] != b.sizes["unit"]
    lo, hi = SPECIES_PRESETS["mouse"].default_n_units * 0.85, SPECIES_PRESETS["mouse"].default_n_units * 1.15
    assert lo - 1 <= a.sizes["unit"] <= hi + 1


def test_100k_unit_zebrafish_session():
    ds = make_session("zebrafish", n_units=100_000, n_time=40, seed=0)
    assert ds["activity"].shape == (40, 100_000) and ds["activity"].dtype == np.float32
    counts = ds["region"].to_series().value_counts()
    assert len(counts) == len(SPECIES_PRESETS["zebrafish"].regions)
    assert counts["hindbrain"] > counts["habenula"] > 1000
    assert np.isfinite(ds["activity"].values).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"species": "fly"}, "unknown species"),
        ({"species": "worm", "n_time": 1}, "n_time"),
        ({"species": "mouse", "n_units": 0}, "n_units"),
        ({"species": "mouse", "seed": -1}, "seed"),
        ({"species": "mouse", "output": "spikes"}, "output"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_session(**kwargs)


def test_bad_corpus_size():
    with pytest.raises(ValueError, match="size"):
        make_demo_corpus(0, size="huge")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- science


def _within_between(ds: xr.Dataset) -> tuple[float, float]:
    c = np.corrcoef(ds["activity"].values.T)
    r = ds["region"].values.astype(str)
    known = r != ""
    same = (r[:, None] == r[None, :]) & known[:, None] & known[None, :] & ~np.eye(len(r), dtype=bool)
    diff = (r[:, None] != r[None, :]) & known[:, None] & known[None, :]
    return float(c[same].mean()), float(c[diff].mean())


@pytest.mark.parametrize("species", ["zebrafish", "mouse", "worm"])
def test_units_of_a_region_share_dynamics(species, fish):
    ds = fish if species == "zebrafish" else make_session(species, n_units=None if species == "worm" else 200, n_time=800, seed=0)
    within, between = _within_between(ds)
    assert within > between + 0.1, (within, between)


def _lagged(x: np.ndarray, lags: int) -> np.ndarray:
    return np.concatenate([np.roll(x, lag, axis=0) for lag in range(lags)], axis=1)


def _heldout_r2(features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, k: int) -> float:
    a = features[train]
    m, s = a.mean(0), a.std(0) + 1e-9
    a = (a - m) / s
    yt = y[train + k] - y[train + k].mean()
    w = np.linalg.solve(a.T @ a + 1e-2 * len(a) * np.eye(a.shape[1]), a.T @ yt)
    pred = (features[test] - m) / s @ w + y[train + k].mean()
    return 1.0 - float(np.mean((pred - y[test + k]) ** 2) / np.var(y[test + k]))


@pytest.mark.parametrize("species", ["zebrafish", "worm"])
def test_population_context_helps_forecasting(species, fish):
    """Ridge forecasts 8 frames ahead: own past + population PCs beat own past alone, held out."""
    ds = fish if species == "zebrafish" else make_session("worm", n_time=800, seed=0)
    x = ds["activity"].values.astype(np.float64)
    T = x.shape[0]
    k, lags, cut = 8, 16, int(0.7 * T)
    mu = x[:cut].mean(0)
    _, _, vt = np.linalg.svd(x[:cut] - mu, full_matrices=False)
    pcs = _lagged((x - mu) @ vt[:8].T, 4)
    idx = np.arange(lags, T - k)
    train, test = idx[idx < cut - k], idx[idx >= cut]
    units = np.random.default_rng(0).choice(x.shape[1], 40, replace=False)
    own, pop = [], []
    for u in units:
        past = _lagged(x[:, [u]], lags)
        own.append(_heldout_r2(past, x[:, u], train, test, k))
        pop.append(_heldout_r2(np.c_[past, pcs], x[:, u], train, test, k))
    gain = np.mean(pop) - np.mean(own)
    assert gain > 0.04, (np.mean(own), np.mean(pop))
    assert np.mean(np.asarray(pop) > np.asarray(own)) > 0.6


@pytest.mark.parametrize(
    ("kind", "expect_ok"),
    [("chaotic", True), ("dead", False), ("dying", False), ("frozen", False)],
)
def test_dynamics_check_rejects_dead_or_frozen_latents(kind, expect_ok):
    rng = np.random.default_rng(0)
    T, n = 900, 20
    slices = (slice(0, 10), slice(10, 20))
    if kind == "chaotic":  # fast, large fluctuations
        x = np.tanh(2 * rng.standard_normal((T, n)))
    elif kind == "dead":  # tiny fluctuations around a fixed point
        x = 0.05 * rng.standard_normal((T, n))
    elif kind == "dying":  # activity decays over the session
        x = np.tanh(2 * rng.standard_normal((T, n))) * np.linspace(1.0, 0.3, T)[:, None]
    else:  # a slow drift that never decorrelates within 12 tau
        x = np.tanh(np.cumsum(rng.standard_normal((T, n)), axis=0) / 10)
    bad = _dynamics_violation(x, slices, frames_per_tau=2.0)
    assert bool(bad == 0.0) is expect_ok, bad


def test_demo_corpus_fits_the_asset_budget(tmp_path):
    tree = make_demo_corpus(0)
    sessions = _sessions(tree)
    assert {p.split("/")[1] for p in sessions} == {"zebrafish", "mouse", "worm"}
    for ds in sessions.values():
        assert ds.sizes["time"] >= 1000
    path = save_corpus(tree, tmp_path / "demo.nc", quantize=1e-3)
    assert path.stat().st_size <= 18 * 10**6

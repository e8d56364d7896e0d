"""The pretrained models in assets/models: present, loadable, truthful cards, acceptance order."""

from __future__ import annotations

import pytest

from pocoviz.assets import assets_dir, models_dir
from pocoviz.forecast import available_models, evaluate, load_model
from pocoviz.forecast.recipes import DEMO_MODELS, DEMO_STRIDES, load_corpus

SHIPPED = sorted(DEMO_MODELS)


def test_every_demo_model_is_shipped():
    assert set(SHIPPED) <= set(available_models()), f"run `pocoviz make-assets --models-only` (have {available_models()})"


def test_assets_stay_under_50_mb():
    total = sum(f.stat().st_size for f in assets_dir().rglob("*") if f.is_file())
    assert total <= 50 * 10**6, f"assets/ holds {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_describes_the_model(name):
    m = load_model(name)
    kind, _ = DEMO_MODELS[name]
    card = m.card
    assert card["kind"] == kind == m.kind
    assert [s.name for s in m.sessions] == card["training"]["sessions"]
    assert len(m.sessions) == 9 and set(m.datasets) == {"zebrafish", "mouse", "worm"}
    assert card["training"]["steps_done"] >= card["training"]["best_step"] > 0
    assert (models_dir() / f"{name}.safetensors").stat().st_size < 20 * 2**20


def test_test_scores_in_the_cards_are_ordered_poco_mlp_nlinear():
    """Issue 3 acceptance on the shipped (seed 0) models; 3 seeds are measured in the note."""
    score = {n: load_model(n).card["metrics"]["test_score"] for n in SHIPPED}
    assert score["poco_demo"] > score["mlp_demo"] > score["nlinear_demo"] > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_card_scores_reproduce(name):
    """Re-evaluating one small session gives the score recorded in the card (a truthful card)."""
    m = load_model(name)
    corpus = load_corpus(["demo"], strides=DEMO_STRIDES).subset(["worm/worm0"])
    rep = evaluate(m, corpus, "test", device="cpu")
    card = {s["name"]: s["score"] for s in m.card["metrics"]["test"]["sessions"]}
    assert rep.session("worm/worm0").score == pytest.approx(card["worm/worm0"], abs=1e-5)


def test_shipped_poco_unit_embeddings_separate_mouse_regions():
    """Issue 5 acceptance on the shipped POCO: within a mouse session the unit embeddings group by
    cortical area far above shuffled labels (spec §6), and each area's own units are its nearest."""
    from pocoviz.embeddings import region_distance_matrix, region_separation, unit_embeddings

    corpus = load_corpus(["demo"])
    emb = unit_embeddings(load_model("poco_demo"), ["mouse/mouse0"], recordings=corpus.recordings)
    x, regions = emb["embedding"].values, emb["region"].values
    sep = region_separation(x, regions, n_shuffles=100, seed=0)
    assert sep["score"] > sep["null_p95"] + 0.02 and sep["z"] > 5, {k: sep[k] for k in ("score", "null_p95", "z")}
    m = region_distance_matrix(x, regions)
    assert (m.values.argmin(axis=1) == range(len(m.region))).all()

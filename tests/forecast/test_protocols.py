"""``pocoviz protocols``: the leave-one-worm-out protocol end to end on two small worms in the
Flavell-lab layout (a few steps), the JSON lines it writes, and their summary."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pocoviz.cli import main
from pocoviz.forecast import TrainConfig, protocols, recipes


def write_worm(path, n_units: int, seed: int, n_time: int = 800) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None]
    x = np.sin(2 * np.pi * t / rng.uniform(20, 40, n_units) + rng.uniform(0, 6, n_units)) + 0.2 * rng.standard_normal((n_time, n_units))
    with h5py.File(path, "w") as f:
        f["gcamp/trace_array"] = (x - x.mean(0)) / x.std(0)
        f["timing/timestamp_confocal"] = 1000.0 + 0.6 * np.arange(n_time)
    labels = ["trace_index,neuropal_label,ganglion", "0,AVAL,Lateral Ganglion", "1,AVAR,Lateral Ganglion"]
    path.with_name(path.name.replace("-data.h5", "-labels.csv")).write_text("\n".join(labels) + "\n")


@pytest.fixture
def shared(tmp_path, monkeypatch):
    folder = tmp_path / "shared" / protocols.FLAVELL_DIR
    folder.mkdir(parents=True)
    write_worm(folder / "w1-data.h5", 5, 1)
    write_worm(folder / "w2-data.h5", 4, 2)
    monkeypatch.setitem(recipes.RECIPES, "short", TrainConfig(steps=6, batch_size=8, eval_every=3, patience=None))
    monkeypatch.setattr(protocols, "ADAPT_STEPS", 4)
    return tmp_path / "shared"


def test_leave_one_out_writes_every_comparison_per_fold(shared, tmp_path, capsys):
    out = tmp_path / "loo.jsonl"
    assert main(["protocols", "loo", "--seeds", "0", "--out", str(out), "--shared-data", str(shared), "--folds", "w2"]) == 0
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["model"], r["variant"]) for r in runs] == [
        ("MLP", "pretrained"), ("POCO", "adapted:embedding:labels"), ("POCO", "scratch-4"), ("MLP", "scratch-4"),
    ]  # fmt: skip
    for r in runs:
        assert r["fold"] == "C_elegans/w2" and r["seed"] == 0 and r["machine"]["torch_threads"] >= 1
        assert list(r["test"]["session_scores"]) == ["C_elegans/w2"]
        assert len(r["test"]["per_step_mae"]) == 16 and np.isfinite(r["test_score"])
    adapted = runs[1]
    assert adapted["pretrained_on"] == ["C_elegans/w1"]
    assert adapted["info"]["label_matched_units"] == 2  # AVAL and AVAR are known from w1
    assert adapted["history"][0]["step"] == 0 and adapted["steps_done"] == 4
    assert adapted["pretrain"]["steps_done"] == 6  # POCO warm-started from the pretrained MLP (short recipe)
    assert runs[2]["steps_done"] == runs[3]["steps_done"] == 4

    capsys.readouterr()
    assert main(["protocols", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "adapted:embedding:labels" in text and "scratch-4" in text
    rows = protocols.summarise([out, out])
    per_fold = [r for r in rows if r["fold"] == "C_elegans/w2"]
    assert len(per_fold) == 4 and {r["n"] for r in per_fold} == {2} and all(r["sd"] == 0.0 for r in per_fold)
    by_key = {(r["model"], r["variant"]): r["test_score"] for r in runs}
    for r in per_fold:
        assert r["mean"] == pytest.approx(by_key[(r["model"], r["variant"])])
    # one fold only: the mean over folds is that fold's score (one entry per seed)
    means = {(r["model"], r["variant"]): r for r in rows if r["fold"] == "(mean over folds)"}
    assert set(means) == set(by_key) and all(m["n"] == 1 and m["mean"] == pytest.approx(by_key[k]) for k, m in means.items())


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["protocols", "worms"], "--out"),
        (["protocols", "summary"], "JSON-lines files"),
        (["protocols", "worms", "--out", "x.jsonl", "--folds", "a"], "loo"),
        (["protocols", "loo", "--out", "x.jsonl", "--models", "MLP"], "worms and tectum"),
    ],
)
def test_protocol_arguments_are_checked(argv, match, capsys):
    assert main(argv) != 0
    assert match in capsys.readouterr().err


def test_a_missing_worm_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["protocols", "worms", "--out", str(tmp_path / "w.jsonl"), "--shared-data", str(tmp_path)]) != 0
    assert "no Flavell-lab worm" in capsys.readouterr().err


@pytest.mark.parametrize(("n_time", "expected"), [(800, "short"), (1137, "short"), (1400, "short"), (1500, "default"), (2000, "default")])
def test_auto_recipe_treats_recordings_up_to_1400_frames_as_short(n_time, expected):
    """The lab's worms come with 800 or 1137 traced frames: both get the short recipe (early stopping,
    frozen unit embeddings, POCO warm-started from the MLP); the demo-sized sessions do not."""
    from pocoviz.forecast import ForecastCorpus
    from pocoviz.recordings.schema import make_recording

    rec = make_recording(np.zeros((n_time, 3), np.float32), sampling_rate_hz=1.0, species="C. elegans", session="w")
    assert recipes.auto_recipe(ForecastCorpus([rec])) == expected
    assert recipes.warm_start_for(expected, "POCO") == ("mlp" if expected == "short" else "none")


def test_summary_averages_folds_per_seed_over_seeds_that_ran_every_fold(tmp_path):
    lines = [
        {"protocol": "loo", "model": "POCO", "variant": "adapted", "fold": f, "seed": seed, "test_score": v, "test": {"mae": 1.0}}
        for f, seed, v in [("a", 0, 0.2), ("b", 0, 0.4), ("a", 1, 0.1), ("b", 1, 0.3), ("a", 2, 0.9)]  # seed 2 lacks fold b
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = {(r["fold"]): r for r in protocols.summarise([path])}
    assert rows["a"]["n"] == 3 and rows["a"]["mean"] == pytest.approx(0.4)
    mean = rows["(mean over folds)"]
    assert mean["n"] == 2 and mean["seeds"] == [0, 1]
    assert mean["mean"] == pytest.approx(0.25) and mean["sd"] == pytest.approx(np.std([0.3, 0.2], ddof=1))
    assert "(mean over folds)" in protocols.format_summary(list(rows.values()))

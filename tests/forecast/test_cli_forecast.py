"""``pocoviz train / evaluate / finetune`` run in-process on tiny recordings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocoviz.cli import main
from pocoviz.forecast import load_model, read_card
from pocoviz.recordings import make_recording, save_recording


def _sine_recording(path, session: str, n_units: int, seed: int, n_time: int = 1000):
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None]
    period = rng.uniform(20, 40, n_units)
    phase = rng.uniform(0, 2 * np.pi, n_units)
    a = np.sin(2 * np.pi * t / period + phase) + 0.1 * rng.standard_normal((n_time, n_units))
    a = (a - a.mean(0)) / a.std(0)
    save_recording(make_recording(a.astype(np.float32), sampling_rate_hz=2.0, species="sine", session=session), path)
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    return [_sine_recording(d / "a.nc", "a", 6, 0), _sine_recording(d / "b.nc", "b", 5, 1), _sine_recording(d / "c.nc", "c", 7, 2)]


def _json_out(capsys):
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_round_trip(tmp_path, recordings, capsys):
    out = tmp_path / "m"
    rc = main(["train", "MLP", str(recordings[0]), str(recordings[1]), "--out", str(out), "--steps", "40", "--eval-every", "20",
               "--batch-size", "16", "--quiet", "--json"])  # fmt: skip
    assert rc == 0
    trained = _json_out(capsys)
    assert trained["model"] == "MLP" and len(trained["sessions"]) == 2 and len(trained["per_step_mse"]) == 16
    card = read_card(out.with_suffix(".json"))
    assert card["kind"] == "MLP" and card["metrics"]["test_score"] == pytest.approx(trained["score"])
    assert [s["name"] for s in card["sessions"]] == ["sine/a", "sine/b"]
    assert card["training"]["config"]["steps"] == 40
    assert main(["evaluate", str(out), str(recordings[0]), str(recordings[1]), "--json"]) == 0
    again = _json_out(capsys)
    assert again["score"] == pytest.approx(trained["score"], abs=1e-9)
    assert [s["score"] for s in again["sessions"]] == pytest.approx([s["score"] for s in trained["sessions"]], abs=1e-9)
    # the human-readable form names every session and the per-step MSE
    assert main(["evaluate", str(out), str(recordings[0])]) == 0
    text = capsys.readouterr().out
    assert "sine/a" in text and "per-step MSE" in text and "sine/b" not in text


def test_evaluate_json_has_mae(recordings, capsys):
    """MAE beside score and MSE in ``evaluate --json`` (the shipped NLinear needs no training)."""
    assert main(["evaluate", "nlinear_demo", str(recordings[0]), str(recordings[1]), "--json"]) == 0
    d = _json_out(capsys)
    for key in ("mae", "copy_mae", "per_step_mae", "per_step_copy_mae", "dataset_mae", "score", "mse", "per_step_mse"):
        assert key in d, key
    assert len(d["per_step_mae"]) == len(d["per_step_copy_mae"]) == 16
    assert 0 < d["mae"] < d["mse"] ** 0.5  # MAE <= RMSE
    assert d["dataset_mae"] == pytest.approx({"sine": d["mae"]})
    # the report's MAE weighs each session by its predictions (windows x units x steps)
    weights = [s["windows"] * s["units"] for s in d["sessions"]]
    assert d["mae"] == pytest.approx(np.average([s["mae"] for s in d["sessions"]], weights=weights), rel=1e-9)
    assert np.mean(d["per_step_mae"]) == pytest.approx(d["mae"], rel=1e-9)
    for s in d["sessions"]:
        assert len(s["per_step_mae"]) == 16 and s["copy_mae"] > 0
        assert np.mean(s["per_step_mae"]) == pytest.approx(s["mae"], rel=1e-9)


def test_finetune_adds_the_new_session(tmp_path, recordings, capsys):
    base = tmp_path / "poco"
    assert main(["train", "POCO", str(recordings[0]), "--out", str(base), "--steps", "10", "--eval-every", "10", "--batch-size", "8",
                 "--quiet", "--config", json.dumps({"dim": 16, "hidden": 32, "self_heads": 2, "dim_head": 8})]) == 0  # fmt: skip
    capsys.readouterr()
    # 1000-frame recordings (537 training windows): the auto recipe is the short-recording one
    card = read_card(base.with_suffix(".json"))
    assert card["training"]["recipe"] == "short" and card["config"]["unit_embedding_lr"] == 0.0
    assert card["training"]["config"]["patience"] is not None
    # POCO has unit embeddings per session: an unseen recording needs fine-tuning first
    assert main(["evaluate", str(base), str(recordings[2])]) == 2
    assert "fine-tune" in capsys.readouterr().err
    adapted = tmp_path / "adapted"
    rc = main(["finetune", str(base), str(recordings[2]), "--out", str(adapted), "--steps", "10", "--eval-every", "5",
               "--batch-size", "8", "--quiet", "--json"])  # fmt: skip
    assert rc == 0
    res = _json_out(capsys)
    assert [h["step"] for h in res["learning_curve"]] == [0, 5, 10]
    m = load_model(adapted)
    assert [s.name for s in m.sessions] == ["sine/a", "sine/c"]
    assert m.card["training"]["finetune"]["mode"] == "embedding"
    assert m.card["training"]["finetune"]["init"] == "random"
    assert main(["evaluate", str(adapted), str(recordings[2]), "--json"]) == 0
    assert _json_out(capsys)["score"] == pytest.approx(res["score"], abs=1e-9)


def test_errors_name_the_problem(tmp_path, recordings, capsys):
    assert main(["evaluate", "no_such_model", str(recordings[0])]) == 2
    assert "no_such_model" in capsys.readouterr().err
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert main(["train", "MLP", str(bad), "--out", str(tmp_path / "x"), "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.nc" in err
    assert not (tmp_path / "x.json").exists()
    assert main(["train", "NoSuchKind", str(recordings[0]), "--out", str(tmp_path / "y"), "--steps", "1", "--quiet"]) == 2
    assert "unknown model kind" in capsys.readouterr().err


def test_a_checkpoint_written_in_the_working_directory_is_found_by_name(tmp_path, recordings, capsys, monkeypatch):
    """`pocoviz train --out NAME` then `pocoviz evaluate NAME` in the same folder (it used to look
    only in the shipped models and POCOVIZ_MODELS)."""
    monkeypatch.chdir(tmp_path)
    args = ["--steps", "4", "--eval-every", "2", "--batch-size", "8", "--quiet", "--json"]
    assert main(["train", "MLP", str(recordings[0]), "--out", "my_mlp", *args]) == 0
    trained = _json_out(capsys)
    assert main(["evaluate", "my_mlp", str(recordings[0]), "--json"]) == 0
    assert _json_out(capsys)["score"] == pytest.approx(trained["score"], abs=1e-9)
    assert main(["finetune", "my_mlp", str(recordings[1]), "--out", "my_mlp_b", *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", "no_such_model", str(recordings[0])]) != 0
    assert "no model named 'no_such_model'" in capsys.readouterr().err


def test_every_cli_option_has_help():
    import argparse

    from pocoviz.cli import build_parser

    missing = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {a.option_strings or a.dest}" for a in sub._actions if not a.help]
    assert missing == []

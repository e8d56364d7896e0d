"""``pocoviz serve`` options (issue 17): processes, websocket origins for a reverse proxy, and the
errors for values the server cannot run."""

from __future__ import annotations

import pytest

import pocoviz.ui.serve as serve_mod
from pocoviz.cli import main


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setattr(serve_mod, "serve", lambda data_dir, **kw: calls.append((data_dir, kw)))
    return calls


def test_num_procs_and_extra_origins_reach_the_server(served, tmp_path):
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "5100", "--num-procs", "3",
                 "--allow-websocket-origin", "lab.example.org", "--allow-websocket-origin", "proxy:8080"]) == 0  # fmt: skip
    (data_dir, kw), = served
    assert data_dir == str(tmp_path) and kw["num_procs"] == 3 and kw["port"] == 5100
    assert kw["websocket_origins"] == ["127.0.0.1:5100", "localhost:5100", "lab.example.org", "proxy:8080"]


@pytest.mark.parametrize("procs", ["0", "-2"])
def test_a_process_count_below_one_is_refused(served, procs, capsys):
    assert main(["serve", "--num-procs", procs]) == 2
    assert "--num-procs" in capsys.readouterr().err and not served


def test_the_shared_forecast_switch_is_set_only_for_several_processes(monkeypatch):
    import panel as pn

    monkeypatch.delenv(serve_mod.SHARED_FORECASTS_ENV, raising=False)
    seen = []
    monkeypatch.setattr(pn, "serve", lambda *a, **kw: seen.append((kw["num_procs"], serve_mod.os.environ.get(serve_mod.SHARED_FORECASTS_ENV))))
    monkeypatch.setattr("pocoviz.ui.warmup.start_warmup", lambda: None)
    try:
        serve_mod.serve(None, num_procs=1)
        serve_mod.serve(None, num_procs=2)
    finally:  # serve() sets it for the processes it forks; monkeypatch does not undo a variable it did not set
        serve_mod.os.environ.pop(serve_mod.SHARED_FORECASTS_ENV, None)
    assert seen == [(1, None), (2, "1")]

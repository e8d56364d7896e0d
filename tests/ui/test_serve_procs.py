"""``pocoviz serve --num-procs 2`` (issue 17): several users at once on two server processes, each
page complete offline (no stylesheet from Panel's CDN, even when a page's websocket reaches the
process that did not render it), the forecast cache shared on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from pocoviz.serving import free_port

from .conftest import _serve, user_env

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def procs_url(tmp_path_factory, ui_data_dir):
    port = free_port()
    script = Path(sys.executable).with_name("pocoviz")
    cmd = [*([str(script)] if script.exists() else [sys.executable, "-m", "pocoviz"]),
           "serve", "--port", str(port), "--num-procs", "2", "--data-dir", str(ui_data_dir)]  # fmt: skip
    log = tmp_path_factory.mktemp("serve") / "procs.log"
    for url in _serve(cmd, port, log, user_env()):
        yield url, log


def test_several_users_on_two_processes_get_complete_pages(procs_url, new_page):
    procs_url, log = procs_url
    assert log.read_text().count("Launching server at") == 2  # one line per forked process
    pages = [new_page() for _ in range(4)]
    for pg in pages:  # all four connect before any is driven: the connections spread over both processes
        pg.goto(procs_url, wait_until="domcontentloaded")
    for k, pg in enumerate(pages):
        expect(pg.locator(".pocoviz-raster canvas").first).to_be_visible(timeout=90_000)
        pg.locator(".pocoviz-session select").select_option(label=["worm/worm1", "mouse/mouse0"][k % 2])
        pg.wait_for_function(
            "(text) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
            " if (m.constructor.__name__ === 'Title' && m.text.includes(text)) return true; return false; }",
            arg=["worm/worm1: 120 units", "mouse/mouse0: 650 units"][k % 2], timeout=60_000,
        )  # fmt: skip
    for pg in pages:
        assert pg.external_requests == [], pg.external_requests[:3]  # Panel's stylesheets from this server, in both processes
        assert pg.local_css, "no stylesheet came from this server"

"""Offline: however the app is started, no request leaves loopback and the page is styled by CSS
that the app's own server sent. Quiet: every tab, opened by its link, draws with no warning or error
in the browser's console and no traceback or error on the server (the ``page`` fixture and
``no_server_traceback`` check both when each test ends)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

#: Stylesheets of the page (not of the shadow roots) that came from ``location.origin`` and parsed.
DOCUMENT_CSS_JS = """() => [...document.styleSheets]
  .filter(s => s.href && s.href.startsWith(location.origin + '/') && s.cssRules.length > 0)
  .map(s => s.href)"""


def _assert_offline_and_styled(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator(".bk-tab", has_text="Transformer limits")).to_be_visible(timeout=60_000)
    expect(page.locator(".bk-tab", has_text="Recordings")).to_be_visible()
    expect(page.locator(".pocoviz-raster canvas").first).to_be_visible(timeout=90_000)
    n_external = len(page.external_requests)  # each one was blocked (route.abort) and counted
    assert n_external == 0, f"{n_external} request(s) left loopback: {page.external_requests[:5]}"
    # the template's stylesheets came from the app's server, with content; Bootstrap's among them
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    served = [u for u, status in page.local_css if u.startswith(origin + "/") and status == 200]
    assert any("bootstrap" in u for u in served), page.local_css
    assert any("bootstrap" in u for u in page.evaluate(DOCUMENT_CSS_JS)), page.evaluate(DOCUMENT_CSS_JS)
    # styled, as those files make it (unstyled, offline: Times New Roman, a block header, an
    # underlined blue link as the title)
    assert "system-ui" in page.evaluate("() => getComputedStyle(document.body).fontFamily")
    assert page.locator("nav#header").evaluate("e => getComputedStyle(e).display") == "flex"
    assert page.locator("#header .title").first.evaluate("e => getComputedStyle(e).textDecorationLine") == "none"
    assert not [e for e in page.console_errors if "pageerror" in e], page.console_errors


def test_pocoviz_serve_loads_everything_from_its_own_server(pocoviz_url, page):
    """``pocoviz serve`` (``make serve``), as users start it and from shells with BOKEH_RESOURCES set."""
    _assert_offline_and_styled(page, pocoviz_url)


def test_panel_serve_app_loads_everything_from_its_own_server(app_url, page):
    """``panel serve app/app.py``."""
    _assert_offline_and_styled(page, app_url)


TABS = ["Recordings", "Forecast", "Embeddings", "Ensembles", "Sequence memory", "Transformer limits"]


@pytest.mark.parametrize("index", range(len(TABS)), ids=TABS)
def test_every_tab_opens_by_its_link_and_draws_quietly(app_url, page, index):
    """Issue 15, defect 10: no console noise (Choices' allowHTML deprecation from every label or model
    picker, Bokeh's range and log-axis warnings) and no server traceback, tab by tab."""
    page.goto(f"{app_url}?tab={index}", wait_until="domcontentloaded")
    expect(page.locator(".bk-tab.bk-active", has_text=TABS[index])).to_be_visible(timeout=60_000)
    expect(page.locator("canvas:visible").first).to_be_visible(timeout=120_000)
    page.wait_for_function("() => !document.querySelector('.pocoviz-loading')", timeout=60_000)
    page.wait_for_timeout(5000)  # background work of the tab lands (theory curves, first forecasts, sweeps)

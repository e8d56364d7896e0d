"""The Transformer limits tab in headless Chromium: the sweep plots render and a live run streams
its loss; no request leaves loopback."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LIVE_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.step !== undefined && m.data.loss !== undefined
      && Object.keys(m.data).length === 2) return m.data.step.length; return -1; }"""


def test_plots_and_a_live_run(app_url, page, screenshot_dir):
    page.goto(f"{app_url}?tab=5", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-lim-headvar canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-lim-summary")).to_contain_text("head variance vs N: slope", timeout=30_000)
    for name in ("lr", "spread", "dwk", "hist", "loss-n"):
        expect(page.locator(f".pocoviz-lim-{name} canvas").first).to_be_visible()
    page.locator(".pocoviz-lim-live_steps input").fill("150")
    page.locator(".pocoviz-lim-live_steps input").press("Enter")
    page.locator(".pocoviz-lim-train button").click()
    page.wait_for_function(f"() => ({LIVE_JS})() >= 3", timeout=60_000)  # the loss streams in while it trains
    expect(page.locator(".pocoviz-lim-status")).to_contain_text("done: 150 steps", timeout=120_000)
    assert page.evaluate(LIVE_JS) == 30
    page.wait_for_timeout(500)
    page.screenshot(path=screenshot_dir / "limits_tab.png", full_page=True)
    assert not page.external_requests, page.external_requests

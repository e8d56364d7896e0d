"""The Sequence memory tab in headless Chromium: playback advances, the overlap heatmap grows, a
preset reproduces the paper's Fig. 1 failure; no request leaves loopback."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

#: steps drawn in the overlap heatmap (columns with values) and the step readout
HEAT_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.what !== undefined && m.data.what.length) {
    const img = m.data.image[0]; let n = 0; for (const v of img) if (!Number.isNaN(v)) n++; return n; }
  return -1; }"""


def _step(page) -> int:
    import re

    text = page.locator(".pocoviz-sm-readout").evaluate("e => (e.shadowRoot || e).textContent")
    m = re.search(r"step\s+(\d+)\s*/", text)
    assert m, text
    return int(m.group(1))


def test_playback_advances_and_the_heatmap_grows(app_url, page, screenshot_dir):
    page.goto(f"{app_url}?tab=4", wait_until="domcontentloaded")
    readout = page.locator(".pocoviz-sm-readout")
    expect(readout).to_contain_text("DenseNet (d = 2)", timeout=90_000)
    page.wait_for_function(f"() => ({HEAT_JS})() > 0", timeout=30_000)
    cells0 = page.evaluate(HEAT_JS)
    assert cells0 == 40  # step 0: one column of 40 overlaps
    page.locator(".pocoviz-sm-play button").click()
    page.wait_for_function(f"() => ({HEAT_JS})() >= 40 * 6", timeout=30_000)
    assert _step(page) >= 5
    expect(readout).to_contain_text("recall perfect so far")
    page.wait_for_timeout(1500)
    assert page.evaluate(HEAT_JS) > 40 * 6  # still growing while it plays
    page.locator(".pocoviz-sm-play button").click()  # pause
    expect(page.locator(".pocoviz-sm-capacity canvas").first).to_be_visible()
    expect(page.locator(".pocoviz-sm-status")).not_to_contain_text("capacity simulation", timeout=60_000)
    page.wait_for_timeout(500)
    page.screenshot(path=screenshot_dir / "seqmem_tab.png", full_page=True)
    # the Fig. 1 preset: SeqNet loses the sequence at the first step
    page.locator(".pocoviz-sm-preset select").select_option("Fig. 1: SeqNet fails (N 300, P 100)")
    expect(readout).to_contain_text("SeqNet", timeout=30_000)
    page.locator(".pocoviz-sm-step button").click()
    expect(readout).to_contain_text("first error at step 1", timeout=30_000)
    assert not page.external_requests, page.external_requests

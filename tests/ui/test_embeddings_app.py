"""The Embeddings tab in headless Chromium: the layout renders, a box selection marks the units on
the position map and shows their traces; the separation test is reported."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

SOURCES_JS = """() => { const out = {};
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'ColumnDataSource') {
      const keys = Object.keys(m.data).sort().join(',');
      const first = m.data[Object.keys(m.data)[0]] || [];
      out[keys] = Math.max(out[keys] || 0, first.length); }
  return out; }"""


def test_layout_selection_map_and_traces(app_url, page, screenshot_dir):
    page.goto(f"{app_url}?tab=2", wait_until="domcontentloaded")
    scatter = page.locator(".pocoviz-emb-scatter canvas").first
    expect(scatter).to_be_visible(timeout=90_000)
    page.locator(".pocoviz-e-session select").select_option("mouse/mouse0")
    expect(page.locator(".pocoviz-emb-info")).to_contain_text("650", timeout=60_000)
    # the shipped POCO groups mouse cortical areas far above shuffled labels
    expect(page.locator(".pocoviz-separation")).to_contain_text("above chance", timeout=90_000)
    expect(page.locator(".pocoviz-separation")).not_to_contain_text("not above chance")
    page.wait_for_timeout(1500)
    box = scatter.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=8)
    page.mouse.up()
    expect(page.locator(".pocoviz-emb-selection")).to_contain_text("selected", timeout=30_000)
    page.wait_for_function(
        "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
        " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.pos_x !== undefined && m.data.unit === undefined"
        " && m.data.pos_x.length > 0) return true; return false; }",
        timeout=30_000,
    )  # the selected units' marks on the position map
    sources = page.evaluate(SOURCES_JS)
    traces = [n for k, n in sources.items() if k == "color,unit,xs,ys"]
    assert traces and 0 < max(traces) <= 8, sources
    page.screenshot(path=screenshot_dir / "embeddings_tab.png", full_page=True)
    page.locator(".pocoviz-emb-sessions canvas").first.scroll_into_view_if_needed()
    expect(page.locator(".pocoviz-emb-heat canvas").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(800)
    page.screenshot(path=screenshot_dir / "embeddings_separation.png")
    assert not page.external_requests, page.external_requests


EMB_X_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x !== undefined && m.data.session !== undefined)
    return Array.from(m.data.emb_x.slice(0, 20)); return null; }"""


def test_torch_umap_layout_from_the_layout_buttons(app_url, page, screenshot_dir):
    """The torch UMAP (CPU here, GPU where there is one) is computed when chosen, with its
    progress and time reported, and replaces the points' positions."""
    page.goto(f"{app_url}?tab=2", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-emb-scatter canvas").first).to_be_visible(timeout=90_000)
    page.wait_for_function(f"() => ({EMB_X_JS})() !== null", timeout=60_000)
    before = page.evaluate(EMB_X_JS)
    page.locator(".pocoviz-e-reducer button", has_text="torch UMAP").click()
    expect(page.locator(".pocoviz-e-status")).to_contain_text("torch UMAP of 5070 units", timeout=120_000)
    page.wait_for_function(f"(b) => JSON.stringify(({EMB_X_JS})()) !== JSON.stringify(b)", arg=before, timeout=30_000)
    page.wait_for_timeout(800)
    page.screenshot(path=screenshot_dir / "embeddings_torch_umap.png")
    assert not page.external_requests, page.external_requests

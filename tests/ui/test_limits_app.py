"""The Transformer limits tab in headless Chromium: the sweep plots render and a live run streams
its loss; at 1280×800 nothing overflows sideways and the live-run plot sits beside its Train
button; titles fit; no console warning (the conftest fixture fails a test on any); a link
reproduces the tab's settings in a new browser context; no request leaves loopback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LIVE_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.step !== undefined && m.data.loss !== undefined
      && Object.keys(m.data).length === 2) return m.data.step.length; return -1; }"""

#: every titled Bokeh plot: its title's width in its font against the room it has (from the plot
#: frame's left edge to the canvas' right edge, less a toolbar drawn above it)
TITLES_FIT_JS = """() => {
  const ctx = document.createElement('canvas').getContext('2d');
  const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (m.title == null || typeof m.title !== 'object' || !m.title.text || m.toolbar_location === undefined) continue;
    const view = Bokeh.index.find_one(m);
    if (view == null || view.bbox == null || view.bbox.width === 0) continue;
    const t = m.title;
    ctx.font = `${t.text_font_style} ${t.text_font_size} ${t.text_font}`;
    let room = view.bbox.width - view.frame.bbox.left;
    if (m.toolbar_location === 'above') room -= 30 * m.toolbar.tools.length;
    out.push({text: t.text, need: Math.round(ctx.measureText(t.text).width), room: Math.round(room)});
  }
  return out; }"""


def open_tab(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-lim-headvar canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-lim-summary")).to_contain_text("head variance vs N: slope", timeout=30_000)


def test_plots_and_a_live_run(app_url, page, screenshot_dir):
    open_tab(page, f"{app_url}?tab=5")
    for name in ("lr", "spread", "dwk", "hist", "loss-n", "loss-h", "loss-l", "live"):
        expect(page.locator(f".pocoviz-lim-{name} canvas").first).to_be_visible()
    page.locator(".pocoviz-lim-live_steps input").fill("150")
    page.locator(".pocoviz-lim-live_steps input").press("Enter")
    # the server has the new value once it is in the link (events run in a thread pool: a click
    # sent right after could be handled first)
    page.wait_for_function("() => window.location.search.includes('lim_steps=150')", timeout=20_000)
    page.locator(".pocoviz-lim-train button").click()
    page.wait_for_function(f"() => ({LIVE_JS})() >= 3", timeout=60_000)  # the loss streams in while it trains
    expect(page.locator(".pocoviz-lim-status")).to_contain_text("done: 150 steps", timeout=120_000)
    page.wait_for_function(f"() => ({LIVE_JS})() === 30", timeout=10_000)  # every 5th of 150 steps, no more
    # issue 15 defect 10: Bokeh guessed log ranges from empty figures ("could not determine
    # minimum/maximum data value for log axis"); the fixture fails on any warning, this names it
    noise = [text for kind, text in page.console_messages if "log axis" in text or "initial ranges" in text]
    assert noise == [], noise[:3]
    page.wait_for_timeout(500)
    page.screenshot(path=screenshot_dir / "limits_tab.png", full_page=True)


def test_at_1280x800_nothing_overflows_and_the_live_plot_is_beside_its_train_button(app_url, new_page, screenshot_dir):
    """Issue 15 defect 5: the tab overflowed sideways at 1280×800 and the live-run loss sat about
    1100 px below its Train button, out of sight; defect 6: titles cut off."""
    page = new_page(viewport={"width": 1280, "height": 800})
    open_tab(page, f"{app_url}?tab=5")
    expect(page.locator(".pocoviz-lim-kernel canvas").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)
    scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width
    for element in page.locator(".pocoviz-limits [class*='pocoviz-lim-']").all():
        box = element.bounding_box()
        if box is not None and box["width"] > 0:
            assert box["x"] >= 0 and box["x"] + box["width"] <= inner_width + 0.5, (element.get_attribute("class"), box)
    train = page.locator(".pocoviz-lim-train button").bounding_box()
    live = page.locator(".pocoviz-lim-live").bounding_box()
    assert live["y"] >= 0 and live["y"] + live["height"] <= 800, live  # in sight without scrolling
    assert train["y"] + train["height"] <= 800, train
    assert live["x"] > train["x"] + train["width"] and abs((live["y"] + live["height"] / 2) - (train["y"] + train["height"] / 2)) < 300
    page.screenshot(path=screenshot_dir / "limits_1280x800.png")
    titles = page.evaluate(TITLES_FIT_JS)
    assert len(titles) >= 12 and all(t["need"] <= t["room"] for t in titles), [t for t in titles if t["need"] > t["room"]]


def test_a_link_reproduces_the_tabs_settings_in_a_new_browser(app_url, new_page):
    page = new_page()
    open_tab(page, f"{app_url}?tab=5&lim_N=16&lim_aA=0.5")
    expect(page.locator(".pocoviz-lim-live_N input")).to_have_value("16")
    page.locator(".pocoviz-lim-live_alpha_L button", has_text="αL = ½").click()
    page.locator(".pocoviz-lim-live_steps input").fill("120")
    page.locator(".pocoviz-lim-live_steps input").press("Enter")
    page.wait_for_function("() => window.location.search.includes('lim_steps=120') && window.location.search.includes('lim_aL=0.5')")
    query = parse_qs(urlparse(page.url).query)
    assert {k: v[0] for k, v in query.items() if k.startswith("lim_") or k == "tab"} == {
        "tab": "5", "lim_N": "16", "lim_aA": "0.5", "lim_aL": "0.5", "lim_steps": "120",
    }  # fmt: skip
    other = new_page()  # a new browser context: no cookies, no history
    open_tab(other, page.url)
    expect(other.locator(".pocoviz-lim-live_N input")).to_have_value("16")
    expect(other.locator(".pocoviz-lim-live_steps input")).to_have_value("120")
    expect(other.locator(".pocoviz-lim-live_alpha_A button.bk-active")).to_have_text("αA = ½")
    expect(other.locator(".pocoviz-lim-live_alpha_L button.bk-active")).to_have_text("αL = ½")

"""The Sequence memory tab in headless Chromium: playback advances, the overlap heatmap grows, a
preset reproduces the paper's Fig. 1 failure; at 1280×800 nothing overflows sideways and Play is in
the first screen; a P typed outside its bounds is clamped visibly; its link reproduces the view in
a new browser context; no request leaves loopback."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

#: steps drawn in the overlap heatmap (columns with values) and the step readout
HEAT_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.what !== undefined && m.data.what.length) {
    const img = m.data.image[0]; let n = 0; for (const v of img) if (!Number.isNaN(v)) n++; return n; }
  return -1; }"""
READOUT = ".pocoviz-sm-readout"


def _text(page, css: str) -> str:
    return " ".join(page.locator(css).first.evaluate("e => (e.shadowRoot || e).textContent").split())


def _step(page) -> int:
    text = _text(page, READOUT)
    m = re.search(r"step\s+(\d+)\s*/", text)
    assert m, text
    return int(m.group(1))


def test_playback_advances_and_the_heatmap_grows(app_url, page, screenshot_dir):
    page.goto(f"{app_url}?tab=4", wait_until="domcontentloaded")
    readout = page.locator(READOUT)
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
    expect(page.locator(".pocoviz-sm-status")).not_to_contain_text("capacity simulation", timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=screenshot_dir / "seqmem_tab.png", full_page=True)
    # the Fig. 1 preset: SeqNet loses the sequence at the first step
    page.locator(".pocoviz-sm-preset select").select_option("Fig. 1: SeqNet fails (N 300, P 100)")
    expect(readout).to_contain_text("SeqNet", timeout=30_000)
    page.locator(".pocoviz-sm-step button").click()
    expect(readout).to_contain_text("first error at step 1", timeout=30_000)


def test_at_1280x800_nothing_overflows_and_play_is_in_the_first_screen(app_url, new_page):
    """Issue 15, defect 5: at 1280×800 the tab ran past the right edge (the correlated-patterns
    figure ended at x ≈ 1360) and Play sat below the fold, under the settings."""
    page = new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{app_url}?tab=4", wait_until="domcontentloaded")
    expect(page.locator(READOUT)).to_contain_text("DenseNet (d = 2)", timeout=90_000)
    expect(page.locator(".pocoviz-sm-timing canvas").first).to_be_attached(timeout=30_000)
    page.wait_for_timeout(1000)
    width, inner = page.evaluate("() => [document.scrollingElement.scrollWidth, innerWidth]")
    assert width <= inner
    play = page.locator(".pocoviz-sm-play button")
    expect(play).to_be_in_viewport()
    box = play.bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800, box
    figures = (".pocoviz-sm-heat", ".pocoviz-sm-capacity", ".bk-Figure.pocoviz-sm-correlated", ".pocoviz-sm-timing", ".pocoviz-sm-explain")
    for css in figures:
        loc = page.locator(css).first
        right = loc.evaluate("e => e.getBoundingClientRect().right")
        assert right <= inner, (css, right, inner)


def test_a_p_outside_its_bounds_is_clamped_visibly_and_the_preset_says_custom(app_url, page):
    """Issue 15, defect 7: P = 5000 typed in its box was silently ignored; a preset's name stayed
    selected after its settings changed."""
    page.goto(f"{app_url}?tab=4", wait_until="domcontentloaded")
    expect(page.locator(READOUT)).to_contain_text("DenseNet (d = 2)", timeout=90_000)
    expect(page.locator(".pocoviz-sm-P")).to_contain_text("[2–400]")
    box = page.locator(".pocoviz-sm-P input")
    box.fill("5000")
    box.press("Enter")
    expect(page.locator(".pocoviz-sm-notice")).to_contain_text("P = 5000 is above the maximum 400: using 400", timeout=30_000)
    expect(box).to_have_value("400", timeout=10_000)
    expect(page.locator(READOUT)).to_contain_text("P = 400", timeout=60_000)
    box.fill("-3")
    box.press("Enter")
    expect(page.locator(".pocoviz-sm-notice")).to_contain_text("below the minimum 2: using 2", timeout=30_000)
    expect(box).to_have_value("2", timeout=10_000)
    select = page.locator(".pocoviz-sm-preset select")
    select.select_option("Fig. 1: DenseNet d = 2 recalls (N 300, P 100)")
    expect(page.locator(READOUT)).to_contain_text("N = 300, P = 100", timeout=60_000)
    seed = page.locator(".pocoviz-sm-seed input")
    seed.fill("7")
    seed.press("Enter")
    expect(select).to_have_value("custom", timeout=10_000)


def test_link_reproduces_the_view_in_a_new_browser_context(app_url, page, new_page):
    """Issue 15: every tab's settings are in its link (``?tab=4&seq_...``)."""
    page.goto(f"{app_url}?tab=4", wait_until="domcontentloaded")
    expect(page.locator(READOUT)).to_contain_text("DenseNet (d = 2)", timeout=90_000)
    page.locator(".pocoviz-sm-preset select").select_option("Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)")
    expect(page.locator(READOUT)).to_contain_text("MixedNet", timeout=60_000)
    for _ in range(7):
        page.locator(".pocoviz-sm-step button").click()
    expect(page.locator(READOUT)).to_contain_text("step 7 /", timeout=30_000)
    page.locator(".pocoviz-sm-correlated button", has_text="digits").click()
    page.wait_for_function("() => location.search.includes('seq_t=7') && location.search.includes('seq_corr=digits')", timeout=30_000)
    url = page.url
    assert "tab=4" in url and "seq_preset=" in url, url
    readout = _text(page, READOUT)
    other = new_page(viewport={"width": 1280, "height": 800})  # a new browser context: a new user
    other.goto(url, wait_until="domcontentloaded")
    expect(other.locator(READOUT)).to_contain_text("step 7 /", timeout=90_000)
    assert _text(other, READOUT) == readout
    expect(other.locator(".pocoviz-sm-preset select")).to_have_value("Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)")
    expect(other.locator(".pocoviz-sm-correlated button", has_text="digits")).to_have_class(re.compile("active"))
    assert other.url == url

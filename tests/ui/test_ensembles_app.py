"""The Ensembles tab in headless Chromium: moving α or r redraws the curves, and turning the
simulation on adds markers with error bars, without Bokeh's log-axis warnings; its link reproduces
the view in a new browser context; no request leaves loopback."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

#: the chosen-P theory line (the source with an ``N`` column) and the simulation markers
LINE_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.N !== undefined && m.data.E !== undefined && m.data.E.length)
    return Array.from(m.data.E); return null; }"""
LINES_JS = """() => { const out = []; for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.N !== undefined && m.data.E !== undefined)
    out.push(JSON.stringify(Array.from(m.data.E))); return out.sort().join('|'); }"""
SIM_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.upper !== undefined) return m.data.mean.length; return -1; }"""


def _nudge(page, css: str, key: str, times: int) -> None:
    handle = page.locator(f"{css} .noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)
        page.wait_for_timeout(60)


def test_alpha_and_r_redraw_and_simulation_adds_markers(app_url, page, screenshot_dir):
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type in ("warning", "error") else None)
    page.goto(f"{app_url}?tab=3", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-ens-vs-k canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-ens-badge")).to_contain_text("K = 1 optimal", timeout=60_000)
    page.wait_for_function(f"() => ({LINE_JS})() !== null", timeout=30_000)
    first = page.evaluate(LINES_JS)
    # α: 1.50 -> 1.70 with the keyboard (the slider acts on release: one recomputation)
    _nudge(page, ".pocoviz-ens-alpha", "ArrowRight", 4)
    expect(page.locator(".pocoviz-ens-badge")).to_contain_text("α = 1.70", timeout=30_000)
    page.wait_for_function(f"(b) => ({LINES_JS})() !== b", arg=first, timeout=30_000)
    after_alpha = page.evaluate(LINES_JS)
    expect(page.locator(".pocoviz-ens-exponent")).to_be_visible()
    # r: 0.80 -> 0.40, a hard task: no crossover ℓ* any more
    _nudge(page, ".pocoviz-ens-r", "ArrowLeft", 8)
    expect(page.locator(".pocoviz-ens-badge")).to_contain_text("r = 0.40", timeout=30_000)
    page.wait_for_function(f"(b) => ({LINES_JS})() !== b", arg=after_alpha, timeout=30_000)
    assert page.evaluate(SIM_JS) == 0
    page.locator(".pocoviz-ens-simulate input[type=checkbox]").check()
    page.wait_for_function(f"() => ({SIM_JS})() === 7", timeout=90_000)  # K = 1..64 at M = 512
    expect(page.locator(".pocoviz-ens-status")).to_contain_text("simulated 3 seeds", timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=screenshot_dir / "ensembles_tab.png", full_page=True)
    assert not page.external_requests, page.external_requests
    # issue 15, defect 10: log axes with no data at start made Bokeh warn in the console
    assert not [w for w in warnings if "log axis" in w or "initial ranges" in w], warnings[:5]


BADGE = ".pocoviz-ens-badge"


def _text(page, css: str) -> str:
    """The text of a Panel pane (its content sits in a shadow root), whitespace collapsed."""
    return " ".join(page.locator(css).evaluate("e => (e.shadowRoot || e).textContent").split())


def test_link_reproduces_the_view_in_a_new_browser_context(app_url, page, new_page):
    """Issue 15: every tab's settings are in its link (``?tab=3&ens_...``)."""
    page.goto(f"{app_url}?tab=3", wait_until="domcontentloaded")
    expect(page.locator(BADGE)).to_contain_text("K = 1 optimal", timeout=90_000)
    _nudge(page, ".pocoviz-ens-alpha", "ArrowLeft", 5)  # α 1.50 -> 1.25
    page.locator(".pocoviz-ens-regime button", has_text="N > P").click()
    page.locator(".pocoviz-ens-ridge_mode button", has_text="fixed").click()
    expect(page.locator(BADGE)).to_contain_text("fixed λ = 1", timeout=30_000)
    expect(page.locator(BADGE)).to_contain_text("α = 1.25", timeout=30_000)
    page.wait_for_function("() => location.search.includes('ens_alpha=1.25') && location.search.includes('ens_regime=over')", timeout=30_000)
    url = page.url
    assert "tab=3" in url and "ens_ridge=fixed" in url and "ens_P=32" in url, url
    badge = _text(page, BADGE)
    other = new_page(viewport={"width": 1280, "height": 800})  # a new browser context: a new user
    other.goto(url, wait_until="domcontentloaded")
    expect(other.locator(BADGE)).to_contain_text("α = 1.25", timeout=90_000)
    expect(other.locator(BADGE)).to_contain_text("fixed λ = 1", timeout=30_000)
    assert _text(other, BADGE) == badge
    expect(other.locator(".pocoviz-ens-alpha").first).to_contain_text("1.25")
    expect(other.locator(".pocoviz-ens-P").first).to_contain_text("32")
    assert other.url == url

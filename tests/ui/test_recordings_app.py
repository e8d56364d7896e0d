"""The served app in headless Chromium: offline page, Recordings view, session and source changes."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

TITLES_JS = """() => { const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'Title') out.push(m.text);
  return out; }"""

SOURCES_JS = """() => { const out = {};
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'ColumnDataSource') {
      const keys = Object.keys(m.data).sort().join(',');
      const first = m.data[Object.keys(m.data)[0]] || [];
      out[keys] = first.length; }
  return out; }"""

TRACES_KEYS = "color,region,unit,xs,ys"
MAP_KEYS = "color,pos_a,pos_b,region,unit"


def open_app(page, url):
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-raster canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-traces canvas").first).to_be_visible(timeout=30_000)


def titles(page) -> list[str]:
    return page.evaluate(TITLES_JS)


def wait_for_title(page, text: str, timeout: float = 30_000) -> None:
    """Wait until some plot title contains ``text``."""
    page.wait_for_function(
        "(text) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
        " if (m.constructor.__name__ === 'Title' && m.text.includes(text)) return true; return false; }",
        arg=text,
        timeout=timeout,
    )


def test_page_loads_offline_with_raster_traces_and_map(app_url, page, screenshot_dir):
    open_app(page, app_url)
    wait_for_title(page, "zebrafish/fish0: 1500 units")
    expect(page.locator(".bk-tab", has_text="Recordings")).to_be_visible()
    # the raster, the traces (8 units of the first region) and the map of all 1500 units are drawn
    sources = page.evaluate(SOURCES_JS)
    assert sources[TRACES_KEYS] == 8, sources
    assert sources[MAP_KEYS] in (1500, 8), sources  # the map's points and the highlighted units
    assert any(k.startswith("dh,dw,image") for k in sources), sources
    assert any("unit positions" in t for t in titles(page))
    expect(page.locator(".pocoviz-meta")).to_contain_text("zebrafish")
    expect(page.locator(".pocoviz-meta")).to_contain_text("telencephalon")
    shot = screenshot_dir / "recordings.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    assert page.external_requests == [], f"requests left loopback: {page.external_requests[:5]}"
    assert not [e for e in page.console_errors if "pageerror" in e], page.console_errors


def test_changing_session_updates_raster_traces_and_metadata(app_url, page, screenshot_dir):
    open_app(page, app_url)
    page.locator(".pocoviz-session select").select_option(label="worm/worm1")
    wait_for_title(page, "worm/worm1: 120 units")
    expect(page.locator(".pocoviz-meta")).to_contain_text("worm1")
    expect(page.locator(".pocoviz-meta")).to_contain_text("Lateral Ganglion")
    # the region list follows the session, and neuron labels are offered for the worm
    page.locator(".pocoviz-region select").select_option(label="Lateral Ganglion")
    expect(page.locator(".pocoviz-selection")).to_contain_text("8 unit(s) shown")
    page.locator(".pocoviz-select_by button", has_text="label").click()
    page.locator(".pocoviz-labels input").fill("AVAL")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => ({SOURCES_JS})()['{TRACES_KEYS}'] === 1", timeout=20_000)
    page.screenshot(path=str(screenshot_dir / "recordings_worm.png"), full_page=True)
    assert page.external_requests == []


def test_clicking_the_raster_selects_that_unit(app_url, page):
    open_app(page, app_url)
    wait_for_title(page, "zebrafish/fish0")
    box = page.locator(".pocoviz-raster canvas").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    unit_input = page.locator(".pocoviz-unit_ids input")
    expect(unit_input).to_have_value(re.compile(r"^\d+$"), timeout=20_000)
    expect(page.locator(".pocoviz-selection")).to_contain_text("1 unit(s) shown")
    page.wait_for_function(f"() => ({SOURCES_JS})()['{TRACES_KEYS}'] === 1", timeout=20_000)
    # typing ids works too, and a bad id is reported without breaking the view
    unit_input.fill("0-2, 7")
    unit_input.press("Enter")
    expect(page.locator(".pocoviz-selection")).to_contain_text("4 unit(s) shown", timeout=20_000)
    unit_input.fill("999999")
    unit_input.press("Enter")
    expect(page.locator(".pocoviz-selection")).to_contain_text("no unit with id", timeout=20_000)


def test_data_dir_file_errors_are_shown_and_the_app_recovers(app_url, page):
    open_app(page, app_url)
    source = page.locator(".pocoviz-source select")
    options = source.locator("option").all_inner_texts()
    assert options == ["Demo corpus (synthetic)", "broken.nc", "good.nc", "nopos.nc"], options
    source.select_option(label="broken.nc")
    alert = page.locator(".alert-danger")
    expect(alert).to_be_visible(timeout=20_000)
    expect(alert).to_contain_text("broken.nc")
    expect(alert).to_contain_text("unknown format")
    source.select_option(label="good.nc")
    expect(alert).to_be_hidden(timeout=20_000)
    wait_for_title(page, "testfish/good: 40 units × 400 frames")
    expect(page.locator(".pocoviz-meta")).to_contain_text("testfish")
    expect(page.locator(".pocoviz-session select")).to_have_value("testfish/good")
    assert page.external_requests == []


#: point counts of the map's sources that the page's roots still reference (a replaced plot's
#: source can linger in ``doc.all_models`` without being drawn)
MAP_SIZES_JS = """(keys) => { const out = [];
  for (const doc of Bokeh.documents) for (const root of doc.roots()) for (const m of root.references())
    if (m.constructor.__name__ === 'ColumnDataSource' && Object.keys(m.data).sort().join(',') === keys)
      out.push(m.data.pos_a.length);
  return out; }"""


def test_the_position_map_never_shows_another_recordings_units(app_url, page, screenshot_dir):
    """fish0 (1500 positioned units), then a recording without positions, then good.nc (40): the
    map must show good.nc's 40 units, never fish0's 1500 again."""
    open_app(page, app_url)
    page.wait_for_function(f"(keys) => ({MAP_SIZES_JS})(keys).includes(1500)", arg=MAP_KEYS, timeout=60_000)
    source = page.locator(".pocoviz-source select")
    source.select_option(label="nopos.nc")
    wait_for_title(page, "testfish/nopos: 10 units")
    source.select_option(label="good.nc")
    wait_for_title(page, "testfish/good: 40 units × 400 frames")
    page.wait_for_timeout(5_000)  # a late update from the old recording would land here
    sizes = page.evaluate(MAP_SIZES_JS, MAP_KEYS)
    page.screenshot(path=str(screenshot_dir / "recordings_map_after_switch.png"), full_page=True)
    assert 1500 not in sizes and 40 in sizes, sizes
    assert page.external_requests == []


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


def test_at_1280x800_titles_fit_and_nothing_overflows(app_url, new_page, screenshot_dir):
    """Issue 15 defect 6: the raster's, traces' and map's titles ran under their toolbars."""
    page = new_page(viewport={"width": 1280, "height": 800})
    open_app(page, app_url)
    wait_for_title(page, "zebrafish/fish0: 1500 units")
    page.wait_for_timeout(1000)
    scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width
    titles = page.evaluate(TITLES_FIT_JS)
    assert len(titles) >= 3 and all(t["need"] <= t["room"] for t in titles), [t for t in titles if t["need"] > t["room"]]
    page.screenshot(path=str(screenshot_dir / "recordings_1280x800.png"))


def test_a_link_reproduces_the_view_in_a_new_browser(app_url, new_page):
    """Source, session, selection, projection and time window travel in the link (?tab=0&rec_...)."""
    page = new_page()
    open_app(page, f"{app_url}?tab=0")
    page.locator(".pocoviz-source select").select_option(label="good.nc")
    wait_for_title(page, "testfish/good: 40 units × 400 frames")
    page.locator(".pocoviz-select_by button", has_text="index").click()
    unit_input = page.locator(".pocoviz-unit_ids input")
    unit_input.fill("3-5, 17")
    unit_input.press("Enter")
    expect(page.locator(".pocoviz-selection")).to_contain_text("4 unit(s) shown", timeout=20_000)
    start = page.locator(".pocoviz-window-start input")
    start.fill("20")
    start.press("Enter")
    page.wait_for_function("() => window.location.search.includes('rec_t=')", timeout=20_000)
    page.wait_for_function("() => window.location.search.includes('rec_units=')", timeout=20_000)
    query = {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}
    assert query["tab"] == "0" and query["rec_src"] == "good.nc" and query["rec_by"] == "index" and query["rec_units"] == "3-5, 17"
    assert query["rec_t"].startswith("20"), query
    other = new_page()  # a new browser context: no cookies, no history
    open_app(other, page.url)
    wait_for_title(other, "testfish/good: 40 units × 400 frames")
    expect(other.locator(".pocoviz-selection")).to_contain_text("4 unit(s) shown", timeout=20_000)
    expect(other.locator(".pocoviz-unit_ids input")).to_have_value("3-5, 17")
    expect(other.locator(".pocoviz-window-start input")).to_have_value(re.compile(r"^20(\.0+)?$"))
    other.wait_for_function(f"() => ({SOURCES_JS})()['{TRACES_KEYS}'] === 4", timeout=20_000)

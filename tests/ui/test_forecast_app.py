"""The Forecast tab in headless Chromium: playback moves the cursor and the forecasts, regions,
links that reproduce the view in a new browser, errors that leave the tab playing, exports, what
only a browser shows (layout at 1280×800, the page's busy indicator, console warnings)."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LAYER_JS = """(layer) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.name === 'pocoviz-frame') { const out = {xs: [], ys: [], unit: []};
      m.data.layer.forEach((l, i) => { if (l === layer) { out.xs.push(Array.from(m.data.xs[i])); out.ys.push(Array.from(m.data.ys[i]));
                                                          out.unit.push(m.data.unit[i]); } });
      return out; }
  return null; }"""
PARAM_JS = "(name) => new URLSearchParams(window.location.search).get(name)"


def query(**params) -> str:
    return "&".join(f"{k}={urllib.parse.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in params.items())


def layer(page, name: str) -> dict:
    """xs, ys and unit of each line of one layer of the traces plot ("context", "horizon", "model-<i>")."""
    return page.evaluate(LAYER_JS, name)


def url_param(page, name: str) -> str | None:
    return page.evaluate(PARAM_JS, name)


def wait_for_forecast_lines(page, slot: int = 0, timeout: float = 90_000) -> None:
    page.wait_for_function(
        "(layer) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
        " if (m.name === 'pocoviz-frame' && m.data.layer && m.data.layer.includes(layer)) return true; return false; }",
        arg=f"model-{slot}",
        timeout=timeout,
    )


def wait_for_lines_of(page, slot: int, units: list[int], timeout: float = 90_000) -> None:
    """Until the traces plot holds model ``slot``'s lines for exactly ``units`` (positional indices)."""
    page.wait_for_function(
        "([layer, units]) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
        " if (m.name === 'pocoviz-frame' && m.data.layer) { const got = m.data.unit.filter((u, i) => m.data.layer[i] === layer);"
        " return JSON.stringify(Array.from(got)) === JSON.stringify(units); } return false; }",
        arg=[f"model-{slot}", units],
        timeout=timeout,
    )


def open_forecast(page, app_url: str, **params) -> None:
    page.goto(f"{app_url}?{query(tab='1', **params)}", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-forecast-raster canvas").first).to_be_visible(timeout=60_000)


def play_until(page, frames: int, timeout: float = 30_000) -> int:
    """Press play, wait until the cursor has advanced ``frames`` frames, press pause."""
    start = int(url_param(page, "t") or 48)
    page.locator(".pocoviz-play button").click()
    page.wait_for_function(f"() => Number(new URLSearchParams(location.search).get('t')) >= {start + frames}", timeout=timeout)
    page.locator(".pocoviz-play button").click()
    page.wait_for_timeout(600)  # let the last frame and the link's t arrive
    return int(url_param(page, "t"))


def test_play_region_and_shareable_url(app_url, page, new_page, screenshot_dir):
    open_forecast(page, app_url, session="worm/worm0", models=["poco_demo", "mlp_demo"])
    wait_for_forecast_lines(page, 0)
    wait_for_forecast_lines(page, 1)
    before, context = layer(page, "model-0"), layer(page, "context")
    assert len(before["ys"]) == 8 and len(before["ys"][0]) == 17  # 8 units, last seen frame + 16 forecast frames
    t = play_until(page, 15)
    assert t >= 63
    wait_for_forecast_lines(page, 0)
    assert layer(page, "model-0")["ys"] != before["ys"]  # new forecasts at the new cursor
    assert layer(page, "context")["ys"] != context["ys"]
    expect(page.locator(".pocoviz-metrics")).to_contain_text("poco_demo")
    expect(page.locator(".pocoviz-metrics")).to_contain_text("mlp_demo")

    region = page.locator(".pocoviz-f-region select")
    options = region.locator("option").all_inner_texts()
    region.select_option(label=options[2])
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('region') === {json.dumps(options[2])}", timeout=20_000)
    page.wait_for_timeout(800)
    shown = layer(page, "model-0")
    page.screenshot(path=screenshot_dir / "forecast_tab.png", full_page=True)

    # the link reproduces the view in a new browser context: recording, models, region, cursor, lines
    link = page.url
    assert url_param(page, "session") == "worm/worm0" and "poco_demo" in url_param(page, "models")
    t = int(url_param(page, "t"))
    other = new_page()
    other.goto(link, wait_until="domcontentloaded")
    expect(other.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    wait_for_lines_of(other, 0, shown["unit"])
    expect(other.locator(".pocoviz-f-region select")).to_have_value(options[2])
    expect(other.locator(".pocoviz-f-session select")).to_have_value("worm/worm0")
    assert url_param(other, "t") == str(t)
    other.wait_for_function(f"() => new URLSearchParams(location.search).get('t') === '{t}'", timeout=20_000)
    assert layer(other, "model-0") == shown


def test_a_link_with_units_and_cursor_reproduces_the_view_in_a_new_browser(app_url, page, new_page):
    """Issue 15: every tab's link reproduces its view in a new browser context."""
    link = f"{app_url}?tab=1&recording=demo&session=worm%2Fworm1&models=nlinear_demo,mlp_demo&units_by=units&units=3,5,17&t=300"
    page.goto(link, wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    wait_for_lines_of(page, 1, [3, 5, 17])  # worm1's units are numbered from 0 in order
    first = layer(page, "model-1")
    assert len(first["ys"]) == 3 and len(first["ys"][0]) == 17
    expect(page.locator(".pocoviz-clock")).to_contain_text("frame 300 / 1599")
    other = new_page(viewport={"width": 1280, "height": 800})
    other.goto(page.url, wait_until="domcontentloaded")
    expect(other.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    wait_for_lines_of(other, 1, [3, 5, 17])
    expect(other.locator(".pocoviz-f-session select")).to_have_value("worm/worm1")
    expect(other.locator(".pocoviz-f-unit_ids input")).to_have_value("3,5,17")
    expect(other.locator(".pocoviz-clock")).to_contain_text("frame 300 / 1599")
    assert layer(other, "model-1") == first and layer(other, "context") == layer(page, "context")
    assert url_param(other, "models") == "nlinear_demo,mlp_demo" and url_param(other, "t") == "300"


def test_a_bad_link_shows_a_message_and_the_tab_plays(app_url, page):
    """``t=1e309`` and ``units=10^30`` must never stop the tab: a message, and playback works."""
    page.goto(f"{app_url}?tab=1&session=worm%2Fworm2&models=nlinear_demo&units_by=units&units=10%5E30&t=1e309", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    notice = page.locator(".pocoviz-forecast-notice")
    expect(notice).to_contain_text("not a finite number", timeout=30_000)
    expect(notice).to_contain_text("10^30")
    page.locator(".pocoviz-f-select_by button", has_text="region").click()
    wait_for_forecast_lines(page, 0)
    assert play_until(page, 10) >= 58


def test_bad_file_and_mismatched_checkpoint_show_errors_and_playback_goes_on(app_url, page):
    # a POCO checkpoint made for a 30-unit "testfish/good", against the 40-unit recording of that name
    open_forecast(page, app_url, recording="good.nc", models=["data:models/mismatched", "nlinear_demo"])
    alert = page.locator(".pocoviz-forecast-error")
    expect(alert).to_contain_text("mismatched", timeout=60_000)
    expect(alert).to_contain_text("40 units")
    wait_for_forecast_lines(page, 1)  # the other model still forecasts
    page.locator(".pocoviz-f-source select").select_option(label="broken.nc")
    expect(alert).to_contain_text("broken.nc", timeout=30_000)
    expect(page.locator(".pocoviz-f-session select")).to_have_value("testfish/good")
    assert play_until(page, 10) >= 58


def test_exports_png_and_netcdf_with_its_size_shown_first(app_url, page, tmp_path):
    open_forecast(page, app_url, session="worm/worm2", models=["nlinear_demo"])
    wait_for_forecast_lines(page, 0)
    with page.expect_download(timeout=30_000) as png:
        page.locator(".pocoviz-png button").click()
    path = tmp_path / "figure.png"
    png.value.save_as(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 600 and height > 300  # the traces figure, not an icon
    button = page.locator(".pocoviz-netcdf button")
    expect(page.locator(".pocoviz-f-export_scope select")).to_have_value("units on screen")
    expect(button).to_contain_text("kB", timeout=30_000)  # its size, before downloading
    with page.expect_download(timeout=60_000) as nc:
        button.click()
    out = tmp_path / "forecasts.nc"
    nc.value.save_as(out)
    size = out.stat().st_size
    assert 10_000 < size < 1_000_000, (size, out.read_bytes()[:16], page.locator(".pocoviz-forecast-error").all_inner_texts())
    import xarray as xr

    with xr.open_dataset(out) as ds:
        assert "forecast_nlinear_demo" in ds and ds.attrs["recording"] == "worm/worm2"
        assert ds["forecast_nlinear_demo"].sizes["step"] == 16 and ds.sizes["unit"] == 8


def test_at_1280x800_the_export_buttons_are_whole_and_inside_the_controls(app_url, new_page):
    """Issue 15, defect 4: the export button was clipped."""
    page = new_page(viewport={"width": 1280, "height": 800})
    open_forecast(page, app_url, session="worm/worm3", models=["nlinear_demo"])
    controls = page.locator(".pocoviz-forecast-controls").first.bounding_box()
    for css in (".pocoviz-netcdf button", ".pocoviz-png button"):
        button = page.locator(css)
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        assert box["width"] > 150 and box["height"] > 20
        assert controls["x"] - 1 <= box["x"] and box["x"] + box["width"] <= controls["x"] + controls["width"] + 1, (css, box, controls)
        assert box["x"] + box["width"] <= 1280
        whole = button.evaluate("(b) => b.scrollWidth <= b.clientWidth + 1 && b.scrollHeight <= b.clientHeight + 1")
        assert whole, f"{css}: its label does not fit"


#: counts each time a busy indicator of the page starts spinning (Panel's LoadingSpinner)
SPIN_HOOK = """() => { window.__pocovizSpins = 0; let n = 0;
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (Array.isArray(m.css_classes) && m.css_classes.includes('loader')) { n++;
      m.properties.css_classes.change.connect(() => { if (m.css_classes.includes('spin')) window.__pocovizSpins++; }); }
  return n; }"""


def test_the_page_is_quiet_while_idle_and_while_playing(app_url, page):
    """Issue 15: the header's busy indicator was seen spinning while nothing ran (the tab polled
    every 200 ms with a periodic callback, which marks the page busy; it now draws on the
    controller's changes, and playback is a background callback), and 'could not set initial
    ranges' was logged about 100 times a minute (figures with data ranges over empty data; 10 in
    40 s on the old tab here, none now). Idle: no spin; while playing: no such warning."""
    open_forecast(page, app_url, session="worm/worm3", models=["nlinear_demo"])
    wait_for_forecast_lines(page, 0)
    expect(page.locator(".pocoviz-model-status")).to_contain_text("ready", timeout=60_000)
    page.wait_for_timeout(1000)
    assert page.evaluate(SPIN_HOOK) >= 1
    page.wait_for_timeout(3000)
    assert page.evaluate("window.__pocovizSpins") == 0
    assert play_until(page, 20) >= 68
    ranges = [text for kind, text in page.console_messages if "could not set initial ranges" in text]
    assert ranges == []

"""The Forecast tab in headless Chromium: playback moves the cursor and the forecasts, regions,
shareable URLs, errors that leave the tab playing, offline page."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LAYER_JS = """(layer) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.name === 'pocoviz-frame') { const out = {xs: [], ys: []};
      m.data.layer.forEach((l, i) => { if (l === layer) { out.xs.push(Array.from(m.data.xs[i])); out.ys.push(Array.from(m.data.ys[i])); } });
      return out; }
  return null; }"""
PARAM_JS = "(name) => new URLSearchParams(window.location.search).get(name)"


def query(**params) -> str:
    return "&".join(f"{k}={urllib.parse.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in params.items())


def layer(page, name: str) -> dict:
    """xs and ys of one layer of the traces plot ("context", "horizon", "model-<i>")."""
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


def open_forecast(page, app_url: str, **params) -> None:
    page.goto(f"{app_url}?{query(tab='1', **params)}", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-forecast-raster canvas").first).to_be_visible(timeout=60_000)


def play_until(page, frames: int, timeout: float = 30_000) -> int:
    """Press play, wait until the cursor has advanced ``frames`` frames, press pause."""
    start = int(url_param(page, "t"))
    page.locator(".pocoviz-play button").click()
    page.wait_for_function(f"() => Number(new URLSearchParams(location.search).get('t')) >= {start + frames}", timeout=timeout)
    page.locator(".pocoviz-play button").click()
    page.wait_for_timeout(400)  # let the last frame arrive
    return int(url_param(page, "t"))


def test_play_region_and_shareable_url(app_url, page, browser, screenshot_dir):
    open_forecast(page, app_url, session="worm/worm0", models=["poco_demo", "mlp_demo"])
    wait_for_forecast_lines(page, 0)
    wait_for_forecast_lines(page, 1)
    assert url_param(page, "t") == "48"
    before, context = layer(page, "model-0"), layer(page, "context")
    assert len(before["ys"]) == 8 and len(before["ys"][0]) == 17  # 8 units, last seen frame + 16 forecast frames
    t = play_until(page, 15)
    assert t >= 63
    wait_for_forecast_lines(page, 0)
    after = layer(page, "model-0")
    assert after["ys"] != before["ys"]  # new forecasts at the new cursor
    assert layer(page, "context")["ys"] != context["ys"]
    expect(page.locator(".pocoviz-metrics")).to_contain_text("poco_demo")
    expect(page.locator(".pocoviz-metrics")).to_contain_text("mlp_demo")

    # another region: its units' traces
    region = page.locator(".pocoviz-f-region select")
    options = region.locator("option").all_inner_texts()
    region.select_option(label=options[2])
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('region') === {json.dumps(options[2])}", timeout=20_000)
    page.wait_for_timeout(500)
    shown = layer(page, "model-0")
    page.screenshot(path=screenshot_dir / "forecast_tab.png", full_page=True)

    # the link reproduces the view: recording, models, region, cursor, and the same forecast lines
    link = page.url
    assert url_param(page, "session") == "worm/worm0" and "poco_demo" in url_param(page, "models")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = ctx.new_page()
        other.goto(link, wait_until="domcontentloaded")
        expect(other.locator(".pocoviz-forecast-traces canvas").first).to_be_visible(timeout=90_000)
        wait_for_forecast_lines(other, 0)
        expect(other.locator(".pocoviz-f-region select")).to_have_value(options[2])
        expect(other.locator(".pocoviz-f-session select")).to_have_value("worm/worm0")
        assert url_param(other, "t") == str(t)
        assert layer(other, "model-0") == shown
    finally:
        ctx.close()
    assert not page.external_requests, page.external_requests


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
    assert not page.external_requests, page.external_requests
    assert not [e for e in page.console_errors if "Traceback" in e], page.console_errors


def test_exports_png_and_netcdf(app_url, page, tmp_path):
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
    with page.expect_download(timeout=60_000) as nc:
        page.locator(".pocoviz-netcdf button").click()
    out = tmp_path / "forecasts.nc"
    nc.value.save_as(out)
    import xarray as xr

    with xr.open_dataset(out) as ds:
        assert "forecast_nlinear_demo" in ds and ds.attrs["recording"] == "worm/worm2"
        assert ds["forecast_nlinear_demo"].sizes["step"] == 16
    assert not page.external_requests, page.external_requests

"""The Embeddings tab in headless Chromium: the layout renders, a box selection marks the units on
the position map and shows their traces; the separation test is reported."""

from __future__ import annotations

import numpy as np
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


SCATTER_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x !== undefined && m.data.session !== undefined)
    return {x: Array.from(m.data.emb_x), color: Array.from(m.data.color)}; return null; }"""
MARKS_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x !== undefined && m.data.session === undefined)
    return Array.from(m.data.color); return null; }"""


def _box_select(page, locator, lo: float, hi: float) -> None:
    box = locator.bounding_box()
    page.mouse.move(box["x"] + box["width"] * lo, box["y"] + box["height"] * lo)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * hi, box["y"] + box["height"] * hi, steps=8)
    page.mouse.up()


def test_an_embeddings_link_reproduces_the_view_in_a_new_browser_context(app_url, new_page, screenshot_dir):
    """Session, layout, colouring (per-unit scores, which arrive with their colour bar instead of
    staying grey) and the selection travel in the URL; a new browser context opening it shows the
    same points in the same colours with the same units selected. Console warnings or errors fail
    the test (the new_page fixture)."""
    first = new_page()
    first.goto(f"{app_url}?tab=2", wait_until="domcontentloaded")
    scatter = first.locator(".pocoviz-emb-scatter canvas").first
    expect(scatter).to_be_visible(timeout=90_000)
    first.locator(".pocoviz-e-session select").select_option("worm/worm0")
    expect(first.locator(".pocoviz-emb-info")).to_contain_text("112", timeout=60_000)
    first.locator(".pocoviz-e-reducer button", has_text="PCA").click()
    expect(first.locator(".pocoviz-e-scatter-caption")).to_contain_text("PCA layout of 112 units", timeout=30_000)
    first.locator(".pocoviz-e-color_by select").select_option("score")
    expect(first.locator(".pocoviz-e-colorbar")).to_contain_text("≥", timeout=90_000)  # the scale: scores arrived
    expect(first.locator(".pocoviz-e-colorbar")).to_contain_text("no score yet: 0 of 112")
    first.wait_for_timeout(800)
    _box_select(first, scatter, 0.3, 0.7)
    expect(first.locator(".pocoviz-emb-selection")).to_contain_text("selected", timeout=30_000)
    first.wait_for_function("() => window.location.search.includes('emb_sel=')", timeout=30_000)
    url = first.url
    assert "emb_session=worm%2Fworm0" in url and "emb_layout=pca" in url and "emb_color=score" in url, url
    selection = first.locator(".pocoviz-emb-selection p").inner_text()  # the Markdown inside the pane's shadow root
    first.wait_for_function(f"() => ({MARKS_JS})() !== null && ({MARKS_JS})().length > 0", timeout=30_000)
    shown = first.evaluate(SCATTER_JS)
    assert len(set(shown["color"]) - {"#b0b0b0"}) > 10  # scores coloured, not grey

    second = new_page()
    second.goto(url, wait_until="domcontentloaded")
    expect(second.locator(".pocoviz-emb-scatter canvas").first).to_be_visible(timeout=90_000)
    assert "selected" in selection
    expect(second.locator(".pocoviz-emb-selection p")).to_have_text(selection, timeout=90_000)
    expect(second.locator(".pocoviz-e-session select")).to_have_value("worm/worm0")
    expect(second.locator(".pocoviz-e-color_by select")).to_have_value("score")
    expect(second.locator(".pocoviz-e-scatter-caption")).to_contain_text("PCA layout of 112 units", timeout=30_000)
    expect(second.locator(".pocoviz-e-colorbar")).to_contain_text("no score yet: 0 of 112", timeout=90_000)
    second.wait_for_function(f"(want) => JSON.stringify(({SCATTER_JS})()) === JSON.stringify(want)", arg=shown, timeout=30_000)
    assert second.evaluate(MARKS_JS) == first.evaluate(MARKS_JS)
    second.screenshot(path=screenshot_dir / "embeddings_link.png", full_page=True)


def test_a_large_selection_is_a_highlight_not_a_black_block(app_url, page, screenshot_dir):
    """Defect 3: selected units were ringed in thick black, so a large selection became a black
    block. Selected units are drawn again in their own colours with a thin outline."""
    import io

    import numpy as np
    from PIL import Image

    page.goto(f"{app_url}?tab=2", wait_until="domcontentloaded")
    pane = page.locator(".pocoviz-emb-scatter").first
    scatter = page.locator(".pocoviz-emb-scatter canvas").first
    expect(scatter).to_be_visible(timeout=90_000)
    expect(page.locator(".pocoviz-e-scatter-caption")).to_contain_text("UMAP layout of 5070 units", timeout=60_000)
    page.wait_for_timeout(1000)
    _box_select(page, scatter, 0.2, 0.65)
    expect(page.locator(".pocoviz-emb-selection")).to_contain_text("selected", timeout=30_000)
    count = int(page.locator(".pocoviz-emb-selection p").inner_text().split()[0])
    assert count > 500
    page.wait_for_function(f"(n) => ({MARKS_JS})() !== null && ({MARKS_JS})().length === n", arg=count, timeout=30_000)
    marks = page.evaluate(MARKS_JS)
    assert len(set(marks)) > 5 and not {"black", "#000000"} >= set(marks)  # the units' colours
    page.wait_for_timeout(1000)
    image = np.asarray(Image.open(io.BytesIO(pane.screenshot())).convert("RGB")).astype(int)
    h, w, _ = image.shape
    inside = image[int(h * 0.35) : int(h * 0.6), int(w * 0.3) : int(w * 0.6)]  # well inside the selected box
    dark = (inside.max(axis=2) < 60).mean()
    colourful = ((inside.max(axis=2) - inside.min(axis=2)) > 60).mean()
    page.screenshot(path=screenshot_dir / "embeddings_selection.png")
    assert dark < 0.05 and colourful > 0.3, (dark, colourful)


@pytest.fixture(scope="module")
def shaded_url(tmp_path_factory, ui_data_dir):
    """The app as users start it, told to draw with Datashader above 200 units (a worm session has
    112 units, a mouse session 650)."""
    import sys

    from pocoviz.serving import free_port

    from .conftest import APP, _serve, user_env

    port = free_port()
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--num-threads", "2", "--liveness", "--args", "--data-dir", str(ui_data_dir)]  # fmt: skip
    yield from _serve(cmd, port, tmp_path_factory.mktemp("serve") / "panel.log", user_env(POCOVIZ_DATASHADE_ABOVE="200"))


_HAS_IMAGE_JS = (
    "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
    " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.image !== undefined) return true; return false; }"
)


def test_a_box_on_the_datashader_images_selects_units(shaded_url, page, screenshot_dir):
    """Issue 16: the layout and the map of many units are Datashader images (no glyph per unit),
    and a box drawn on either still selects: the selected units are marked on both and their
    traces drawn. The page starts on a small session (glyphs) and switches to a large one, as a
    user going from a worm to a whole brain does (the box once stopped selecting after that switch)."""
    page.goto(f"{shaded_url}?tab=2&emb_session=worm/worm0", wait_until="domcontentloaded")
    expect(page.locator(".pocoviz-emb-info")).to_contain_text("112", timeout=90_000)
    page.wait_for_function("(k) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
                           " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x !== undefined && m.data.emb_x.length === 112)"
                           " return true; return false; }", timeout=60_000)  # fmt: skip  # glyphs first
    page.locator(".pocoviz-e-session select").select_option("mouse/mouse0")
    expect(page.locator(".pocoviz-emb-info")).to_contain_text("650", timeout=90_000)
    scatter = page.locator(".pocoviz-emb-scatter canvas").first
    expect(scatter).to_be_visible(timeout=60_000)
    page.wait_for_function(_HAS_IMAGE_JS, timeout=60_000)  # Datashader's image
    page.wait_for_timeout(1500)
    _box_select(page, scatter, 0.15, 0.85)
    expect(page.locator(".pocoviz-emb-selection")).to_contain_text("selected", timeout=30_000)
    page.wait_for_function(
        "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
        " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x !== undefined && m.data.emb_x.length > 0"
        " && m.data.alpha === undefined) return true; return false; }",
        timeout=30_000,
    )  # the selected units drawn on the image
    sources = page.evaluate(SOURCES_JS)
    marked = sources.get("color,emb_x,emb_y", 0)
    assert 0 < marked < 650, sources
    assert sources.get("color,pos_x,pos_y", 0) > 0, sources  # and on the (shaded) position map
    traces = [n for k, n in sources.items() if k == "color,unit,xs,ys"]
    assert traces and 0 < max(traces) <= 8, sources
    # the image sits where its points are: the marked units lie well inside it (the box spans
    # 15-85 % of the canvas, which holds the title and the toolbar besides the image)
    geometry = page.evaluate(
        "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models) {"
        " if (!m.renderers || !m.x_range) continue; const out = {};"
        " for (const r of m.renderers) { const d = r.data_source ? r.data_source.data : null; if (!d) continue;"
        "   if (d.image !== undefined && d.x.length) out.image = [d.x[0], d.y[0], d.dw[0], d.dh[0]];"
        "   if (d.emb_x !== undefined && d.alpha === undefined && d.emb_x.length) out.marks = [Array.from(d.emb_x), Array.from(d.emb_y)]; }"
        " if (out.image && out.marks) return out; } return null; }"
    )  # the layout's figure: its image and the marks on it
    x0, y0, dw, dh = geometry["image"]
    fx = (np.asarray(geometry["marks"][0]) - x0) / dw
    fy = 1 - (np.asarray(geometry["marks"][1]) - y0) / dh
    assert fx.min() > 0.05 and fx.max() < 0.95 and fy.min() > 0.05 and fy.max() < 0.95, (geometry["image"], fx.min(), fx.max(), fy.min(), fy.max())
    page.screenshot(path=screenshot_dir / "embeddings_datashader_selection.png", full_page=True)

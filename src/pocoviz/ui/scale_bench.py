"""The Recordings and Embeddings tabs on a whole-brain recording, measured in headless Chromium.

:func:`measure_scale_app` serves the app as users start it (``panel serve app/app.py`` on
127.0.0.1, the data directory given), opens it in Debian's headless Chromium, chooses ``filename``
in the Recordings tab and times:

* ``open_s``: from choosing the file until its raster is drawn: the raster's image glyph holds new
  data (its ``ColumnDataSource.data.image`` is another array than before the choice), the raster's
  title names the recording's unit count, and the browser has painted two animation frames since;
* ``viewport_s``: for each of ``viewports`` random pans (mouse drags) and zooms (mouse wheel) of
  the raster, from the end of the gesture until the image glyph holds new data and two frames are
  painted (Bokeh sends the new ranges after HoloViews' 100 ms debounce; that wait is included);
* the server's resident memory (``VmRSS`` and its peak ``VmHWM`` from ``/proc/PID/status``)
  after browsing.

:func:`measure_embeddings_app` opens the Embeddings tab on a checkpoint of that many units
(:func:`write_untrained_poco`) and times its table, its Datashader layout, a box selection with
its traces, and the region separation test.

Nothing here leaves loopback (requests elsewhere are blocked and counted). Returns a JSON-able
dict; ``pocoviz bench --only scale`` reports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "app" / "app.py"
CHROMIUM = os.environ.get("POCOVIZ_CHROMIUM", "/usr/bin/chromium")

# The raster's image source: the ColumnDataSource of an Image glyph inside the .pocoviz-raster pane
# (found once as the one whose data changes when the file is chosen; see FIND_JS).
IMAGES_JS = """() => { const out = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'GlyphRenderer' && m.glyph.constructor.__name__ === 'Image')
      out.push(m.data_source);
  return out; }"""

MARK_JS = "() => { window.__pv_images = (" + IMAGES_JS + ")(); window.__pv_before = window.__pv_images.map(s => s.data.image[0]); }"

# the index of the image source whose array changed (and whose plot title names the units), or -1
FIND_JS = (
    "(units) => { const imgs = ("
    + IMAGES_JS
    + """)();
  let titled = false;
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'Title' && m.text.includes(units + ' units')) titled = true;
  if (!titled) return -1;
  for (let i = 0; i < imgs.length; i++) {
    const j = window.__pv_images.indexOf(imgs[i]);
    if (j < 0 || imgs[i].data.image[0] !== window.__pv_before[j]) { window.__pv_raster = imgs[i]; return i; }
  }
  return -1; }"""
)
HAS_IMAGES_JS = "() => typeof Bokeh !== 'undefined' && (" + IMAGES_JS + ")().length > 0"
REMEMBER_JS = "() => { window.__pv_last = window.__pv_raster.data.image[0]; }"
CHANGED_JS = "() => window.__pv_raster.data.image[0] !== window.__pv_last"
SHAPE_JS = "() => { const a = window.__pv_raster.data.image[0]; return a.shape ? Array.from(a.shape) : [a.length]; }"
# the raster's x and y ranges (start, end, start, end), from its plot
RANGES_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'Figure' || m.constructor.__name__ === 'Plot')
      for (const r of m.renderers) if (r.data_source === window.__pv_raster)
        return [m.x_range.start, m.x_range.end, m.y_range.start, m.y_range.end];
  return [0, 0, 0, 0]; }"""
PAINTED_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


def _rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (Panel serves from one process; this is a check)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            total += _rss_mb(p).get("VmRSS", 0.0)
        except OSError:
            pass
    return round(total, 1)


def _units_of(data_dir: Path, filename: str) -> int:
    """The store's unit count, from its metadata only."""
    from pocoviz.recordings import open_recording

    ds = open_recording(data_dir / filename, data_dir=data_dir, load=False)
    return int(ds.sizes["unit"])


@contextmanager
def served_page(data_dir: Path, result: dict[str, Any], *, width: int = 1600, height: int = 1000) -> Iterator[tuple[Any, int, Any]]:
    """The app served as users start it on ``data_dir`` and a headless Chromium page on it, with
    requests that leave loopback blocked: yields (server process, port, page). On the way out the
    server's memory, its logged errors and the blocked requests are added to ``result``."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pocoviz-scale-")) / "panel.log"
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--num-threads", "2", "--liveness",
           "--args", "--data-dir", str(data_dir)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("BOKEH_RESOURCES", "BOKEH_CDN_VERSION", "PANEL_INLINE")}
    env["POCOVIZ_DATA_DIR"] = str(data_dir)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    external: list[str] = []
    try:
        wait_until_live(proc, port, timeout=90, on_fail=lambda: log.read_text()[-3000:])
        result["server_rss_mb_idle"] = _rss_mb(proc.pid)["VmRSS"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": width, "height": height})

            def route(r) -> None:
                host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else ""
                if host in ("127.0.0.1", "localhost", ""):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            yield proc, port, page
            browser.close()
        mem = _rss_mb(proc.pid)
        result.update(server_rss_mb=mem["VmRSS"], server_peak_rss_mb=mem["VmHWM"], server_tree_rss_mb=_tree_rss_mb(proc.pid))
    finally:
        stop(proc)
        text = log.read_text(errors="replace")
        result["server_errors"] = text.count("Traceback (most recent call last)") + text.count("ERROR: ")
        result["external_requests"] = len(external)


def measure_scale_app(
    data_dir: str | os.PathLike,
    filename: str,
    viewports: int = 20,
    seed: int = 0,
    *,
    width: int = 1600,
    height: int = 1000,
    screenshot: str | os.PathLike | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Serve the app on ``data_dir``, choose ``filename`` in the Recordings tab, time the raster's
    first draw and ``viewports`` random pans and zooms, and read the server's memory (see module
    docstring). ``screenshot``: also save the page (``width`` × ``height``) after opening the file."""
    data_dir = Path(data_dir).resolve()
    n_units = _units_of(data_dir, filename)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"file": filename, "units": n_units, "viewports": viewports, "seed": seed}
    with served_page(data_dir, result, width=width, height=height) as (proc, port, page):
        t = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/app", wait_until="domcontentloaded")
        page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=timeout_s * 1000)
        page.wait_for_function(HAS_IMAGES_JS, timeout=timeout_s * 1000)
        result["page_s"] = round(time.perf_counter() - t, 2)
        page.evaluate(MARK_JS)
        t = time.perf_counter()
        page.locator(".pocoviz-source select").select_option(label=filename)
        page.wait_for_function(f"() => ({FIND_JS})({n_units}) >= 0", timeout=timeout_s * 1000, polling=20)
        page.evaluate(PAINTED_JS)
        result["open_s"] = round(time.perf_counter() - t, 3)
        result["load_average_1min"] = os.getloadavg()[0]
        result["first_image_shape"] = page.evaluate(SHAPE_JS)
        result["server_rss_mb_opened"] = _rss_mb(proc.pid)["VmRSS"]
        page.wait_for_timeout(4000)  # the traces and the map settle before the first gesture
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=False)
        box = page.locator(".pocoviz-raster canvas").first.bounding_box()
        missed = 0
        viewport_list: list[dict[str, Any]] = []
        noop = 0
        while len(viewport_list) < viewports and noop < 3 * viewports:
            page.evaluate(REMEMBER_JS)
            before = page.evaluate(RANGES_JS)
            cx = box["x"] + box["width"] * rng.uniform(0.25, 0.75)
            cy = box["y"] + box["height"] * rng.uniform(0.25, 0.75)
            page.mouse.move(cx, cy)
            if rng.random() < 0.5:  # zoom at the pointer: in more often than out (out stops at the recording's edges)
                kind = "zoom"
                page.mouse.wheel(0, float((-1 if rng.random() < 0.65 else 1) * rng.uniform(100, 400)))
            else:  # drag by up to a third of the plot
                kind = "pan"
                page.mouse.down()
                page.mouse.move(cx + box["width"] * rng.uniform(-0.33, 0.33), cy + box["height"] * rng.uniform(-0.33, 0.33), steps=5)
                page.mouse.up()
            t = time.perf_counter()
            after = page.evaluate(RANGES_JS)
            if np.allclose(before, after, rtol=1e-6, atol=1e-9):
                noop += 1  # the gesture did not move the view (a zoom out at the edges): not a viewport
                page.wait_for_timeout(700)
                continue
            entry: dict[str, Any] = {"kind": kind}
            try:
                page.wait_for_function(CHANGED_JS, timeout=10_000, polling=10)
                entry["data_ms"] = round((time.perf_counter() - t) * 1000, 1)
                page.evaluate(PAINTED_JS)
                entry["ms"] = round((time.perf_counter() - t) * 1000, 1)
                entry["image"] = page.evaluate(SHAPE_JS)
            except Exception:  # no new image within 10 s (counted, not timed)
                missed += 1
            entry["view"] = [round(v, 2) for v in page.evaluate(RANGES_JS)]
            viewport_list.append(entry)
            page.wait_for_timeout(150)
        times = [e["ms"] / 1000 for e in viewport_list if "ms" in e]
        data_times = [e["data_ms"] / 1000 for e in viewport_list if "data_ms" in e]
        kinds = [e["kind"] for e in viewport_list]
        result["viewport_detail"] = viewport_list
        result["gestures_without_effect"] = noop
        ms = np.array(times) * 1000
        result.update(
            viewport_kinds=kinds,
            viewport_p50_ms=round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            viewport_p95_ms=round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
            viewport_data_p50_ms=round(float(np.percentile(data_times, 50)) * 1000, 1) if data_times else None,
            viewport_data_p95_ms=round(float(np.percentile(data_times, 95)) * 1000, 1) if data_times else None,
            viewport_missed=missed,
            last_image_shape=page.evaluate(SHAPE_JS),
        )
    result["note"] = (
        "open_s: choice of the file to its raster drawn (image data changed, title names the units, two frames painted); "
        "viewport_ms: end of a mouse pan/zoom to a new image painted (includes HoloViews' 100 ms range debounce); "
        "viewport_data_*: to the new image's data in the browser, before painting"
    )
    return result


# the Embeddings layout's figure: its Datashader image (x, y, dw, dh, pixels) once it holds the points
# (more than the 2 x 2 placeholder) and its title names ``units``; null before
LAYOUT_IMAGE_JS = """(units) => { for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (!m.renderers || !m.title || !m.title.text || !m.title.text.includes(units + ' units, Datashader')) continue;
    if (!m.title.text.startsWith('unit embeddings')) continue;
    for (const r of m.renderers) { const d = r.data_source ? r.data_source.data : null;
      if (d && d.image !== undefined && d.image.length && d.image[0].length > 16) return [d.x[0], d.y[0], d.dw[0], d.dh[0]]; } }
  return null; }"""
TRACES_JS = """() => { let n = 0; for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.constructor.__name__ === 'ColumnDataSource' && m.data.xs !== undefined && m.data.unit !== undefined) n = Math.max(n, m.data.xs.length);
  return n; }"""


def write_untrained_poco(store: str | os.PathLike, dest: str | os.PathLike) -> str:
    """An untrained POCO checkpoint (``dest`` + .json/.safetensors) for the one session of
    ``store``, named as ``pocoviz train`` names it: what the Embeddings tab needs to draw that many
    unit embeddings (their values do not matter for the timings). Returns the session name."""
    import torch

    from pocoviz.forecast import SessionInfo, build_model, save_model
    from pocoviz.recordings import corpus_sessions, open_corpus

    sessions = corpus_sessions(open_corpus(store, load=False))
    name, ds = next(iter(sessions.items()))
    torch.manual_seed(0)
    model = build_model("POCO", [SessionInfo(name, int(ds.sizes["unit"]), name.split("/")[0])])
    save_model(model, dest, training={"data": [str(store)]}, extra={"description": "untrained: for pocoviz bench --only scale"})
    return name


def measure_embeddings_app(
    data_dir: str | os.PathLike, model_key: str, units: int, *, width: int = 1600, height: int = 1000,
    screenshot: str | os.PathLike | None = None, timeout_s: float = 300.0,
) -> dict[str, Any]:  # fmt: skip
    """Serve the app on ``data_dir``, open the Embeddings tab on checkpoint ``model_key`` (``units``
    unit embeddings, PCA layout) and time: ``table_s`` (page opened to the table's summary shown),
    ``image_s`` (to the layout's Datashader image holding the points), ``select_s`` (a box drawn
    over the middle of the image to the selection summary) and ``traces_s`` (to the selected units'
    traces drawn), ``separation_s`` (to the region silhouette reported); the server's memory after."""
    data_dir = Path(data_dir).resolve()
    result: dict[str, Any] = {"model": model_key, "units": units}
    with served_page(data_dir, result, width=width, height=height) as (proc, port, page):
        t = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/app?tab=2&emb_model={model_key}&emb_layout=pca", wait_until="domcontentloaded")
        page.locator(".pocoviz-emb-info").filter(has_text=str(units)).wait_for(timeout=timeout_s * 1000)
        result["table_s"] = round(time.perf_counter() - t, 2)
        page.wait_for_function(f"() => ({LAYOUT_IMAGE_JS})({units}) !== null", timeout=timeout_s * 1000, polling=50)
        page.evaluate(PAINTED_JS)
        result["image_s"] = round(time.perf_counter() - t, 2)
        result["load_average_1min"] = os.getloadavg()[0]
        box = page.locator(".pocoviz-emb-scatter canvas").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.6, steps=8)
        page.mouse.up()
        t = time.perf_counter()
        page.locator(".pocoviz-emb-selection").filter(has_text="selected").wait_for(timeout=timeout_s * 1000)
        result["select_s"] = round(time.perf_counter() - t, 2)
        result["selection"] = page.locator(".pocoviz-emb-selection p").inner_text()  # the Markdown in the pane's shadow root
        page.wait_for_function(f"() => ({TRACES_JS})() > 0", timeout=timeout_s * 1000, polling=50)
        result["traces_s"] = round(time.perf_counter() - t, 2)
        result["traces"] = page.evaluate(TRACES_JS)
        page.locator(".pocoviz-separation").filter(has_text="Is it real?").wait_for(timeout=timeout_s * 1000)
        result["separation_after_select_s"] = round(time.perf_counter() - t, 2)
        result["separation"] = " ".join(page.locator(".pocoviz-separation div").all_inner_texts()).strip()
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=False)
    result["note"] = (
        "table_s / image_s: page opened on the tab to the table's summary / the layout's Datashader image drawn; "
        "select_s / traces_s: a box drawn on the image to the selection summary / the traces drawn"
    )
    return result


if __name__ == "__main__":  # python -m pocoviz.ui.scale_bench DATA_DIR FILE [VIEWPORTS] [SCREENSHOT]
    import json

    args = sys.argv[1:]
    print(json.dumps(measure_scale_app(args[0], args[1], int(args[2]) if len(args) > 2 else 20, screenshot=args[3] if len(args) > 3 else None), indent=1))

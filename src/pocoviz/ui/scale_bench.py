"""The Recordings tab on a whole-brain recording, measured in headless Chromium.

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

Nothing here leaves loopback (requests elsewhere are blocked and counted). Returns a JSON-able
dict; ``pocoviz bench --only scale`` reports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
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
    from playwright.sync_api import sync_playwright

    data_dir = Path(data_dir).resolve()
    n_units = _units_of(data_dir, filename)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pocoviz-scale-")) / "panel.log"
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--num-threads", "2", "--liveness",
           "--args", "--data-dir", str(data_dir)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("BOKEH_RESOURCES", "BOKEH_CDN_VERSION", "PANEL_INLINE")}
    env["POCOVIZ_DATA_DIR"] = str(data_dir)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {"file": filename, "units": n_units, "viewports": viewports, "seed": seed}
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
            browser.close()
        mem = _rss_mb(proc.pid)
        result.update(server_rss_mb=mem["VmRSS"], server_peak_rss_mb=mem["VmHWM"], server_tree_rss_mb=_tree_rss_mb(proc.pid))
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    result["server_errors"] = text.count("Traceback (most recent call last)") + text.count("ERROR: ")
    result["external_requests"] = len(external)
    result["note"] = (
        "open_s: choice of the file to its raster drawn (image data changed, title names the units, two frames painted); "
        "viewport_ms: end of a mouse pan/zoom to a new image painted (includes HoloViews' 100 ms range debounce); "
        "viewport_data_*: to the new image's data in the browser, before painting"
    )
    return result


if __name__ == "__main__":  # python -m pocoviz.ui.scale_bench DATA_DIR FILE [VIEWPORTS] [SCREENSHOT]
    import json

    args = sys.argv[1:]
    print(json.dumps(measure_scale_app(args[0], args[1], int(args[2]) if len(args) > 2 else 20, screenshot=args[3] if len(args) > 3 else None), indent=1))

"""``pocoviz bench``: time the hot paths on the machine at hand and return a JSON-able report.

Each figure is ``{"first_s": ..., "median_s": ..., "repeats": n}`` (first call includes JIT
compilation and caches; the median is over the warm repeats). Later features add sections.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pocoviz import __version__
from pocoviz.backend import configure_threads, describe

DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def timed(fn: Callable[[], Any], repeats: int = 3) -> dict[str, Any]:
    """Run ``fn`` once cold and ``repeats`` times warm; seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return {"first_s": round(first, 4), "median_s": round(statistics.median(warm), 4) if warm else None, "repeats": repeats}


def bench_recordings(quick: bool, shared_data: Path | None) -> dict[str, Any]:
    import datashader as ds_
    import xarray as xr

    from pocoviz.recordings import aggregate_raster, make_demo_corpus, make_session, open_recording, sort_units_by_region

    out: dict[str, Any] = {}
    out["demo_corpus_generation"] = timed(lambda: make_demo_corpus(seed=0, size="tiny" if quick else "demo"), repeats=1)
    n_units, n_time = (10_000, 1000) if quick else (100_000, 1000)
    out[f"zebrafish_session_{n_units}x{n_time}_generation"] = timed(
        lambda: make_session("zebrafish", n_units=n_units, n_time=n_time, seed=0), repeats=1
    )

    readers: dict[str, Any] = {}
    root = shared_data if shared_data is not None else DEFAULT_SHARED
    if root.is_dir():
        for f in sorted(root.glob("*/*")):
            if f.suffix in (".h5", ".mat"):
                readers[f"{f.parent.name}/{f.name}"] = timed(lambda f=f: open_recording(f), repeats=2)
    else:
        readers["skipped"] = f"no shared data at {root}"
    out["readers"] = readers

    rng = np.random.default_rng(0)
    act = rng.standard_normal((n_time, n_units), dtype=np.float32)
    out[f"raster_aggregate_numpy_{n_units}x{n_time}_to_1000x600"] = timed(lambda: aggregate_raster(act, width=1000, height=600))
    img = xr.DataArray(
        np.ascontiguousarray(act.T), dims=("row", "time"), coords={"row": np.arange(n_units), "time": np.arange(n_time) / 2.0}
    )
    canvas = ds_.Canvas(plot_width=1000, plot_height=600)
    out[f"raster_aggregate_datashader_{n_units}x{n_time}_to_1000x600"] = timed(lambda: canvas.raster(img, agg="mean"))
    session = make_session("zebrafish", n_units=n_units, n_time=n_time, seed=1)
    out[f"sort_units_by_region_pc1_{n_units}"] = timed(lambda: sort_units_by_region(session, within="pc1"), repeats=1)
    return out


SECTIONS = ("recordings", "forecast", "embeddings", "ensembles", "seqmem", "limits", "app", "scale", "scaleout", "load")
#: what a bare ``pocoviz bench`` runs: ``scale`` writes a 2.1 GB store and takes minutes, ``scaleout``
#: starts process groups and Dask clusters, ``load`` drives 20 browser sessions for 5 minutes; they
#: run only when asked (``--only scale``: :mod:`pocoviz.scale_bench`; ``--only scaleout``: training
#: with 1 and 2 processes, the batch forecast with 1 and 2 Dask workers; ``--only load``:
#: :mod:`pocoviz.ui.load_test`)
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in ("scale", "scaleout", "load"))


def run_bench(quick: bool = False, shared_data: str | Path | None = None, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run every benchmark; returns the report (see module docstring)."""
    threads = configure_threads()
    report: dict[str, Any] = {
        "pocoviz": __version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "environment": describe(),
        "threads": threads.__dict__,
        "quick": quick,
    }
    try:
        import datashader
        import xarray

        report["environment"].update({"xarray": xarray.__version__, "datashader": datashader.__version__})
    except ImportError:
        pass
    t0 = time.perf_counter()
    only = tuple(only) if only else DEFAULT_SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; choose from {SECTIONS}")
    if "recordings" in only:
        report["recordings"] = bench_recordings(quick, Path(shared_data) if shared_data else None)
    if "forecast" in only:
        from pocoviz.forecast.bench import bench_forecast

        report["forecast"] = bench_forecast(quick)
    if "embeddings" in only:
        from pocoviz.embeddings.bench import bench_embeddings

        report["embeddings"] = bench_embeddings(quick)
    if "ensembles" in only:
        from pocoviz.ensembles.bench import bench_ensembles

        report["ensembles"] = bench_ensembles(quick)
    if "seqmem" in only:
        from pocoviz.seqmem.bench import bench_seqmem

        report["seqmem"] = bench_seqmem(quick)
    if "limits" in only:
        from pocoviz.limits.bench import bench_limits

        report["limits"] = bench_limits(quick)
    if "app" in only:
        report["app"] = bench_app_cold_start()
        report["app"]["forecast_playback"] = bench_playback()
        report["app"]["embeddings_tab_fresh_server"] = bench_embeddings_tab()
    if "scale" in only:
        from pocoviz.scale_bench import bench_scale

        report["scale"] = bench_scale(quick)
    if "scaleout" in only:
        from pocoviz.forecast.batch import bench_forecast_dask
        from pocoviz.forecast.distributed import bench_ddp

        report["scaleout"] = {"ddp_training": bench_ddp(), "dask_forecast": bench_forecast_dask()}
    if "load" in only:
        from pocoviz.ui.load_test import run_load_test

        report["load"] = run_load_test(sessions=4 if quick else 20, minutes=1.0 if quick else 5.0, num_procs=2)
    report["total_s"] = round(time.perf_counter() - t0, 2)
    return report



@contextlib.contextmanager
def _served(chromium: str):
    """``pocoviz serve`` (the README's command) on a free port plus a headless Chromium:
    yields ``(browser, base_url, t_launch)``, or a ``{"skipped"/"error": ...}`` dict."""
    import subprocess
    import sys

    from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

    if not Path(chromium).exists():
        yield {"skipped": f"{chromium} not found (apt-get install chromium)"}
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield {"skipped": "playwright is not installed (pip install -e .[test])"}
        return
    port = free_port()
    cmd = [sys.executable, "-m", "pocoviz.cli", "serve", "--address", "127.0.0.1", "--port", str(port)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # as users start it
        try:
            try:
                wait_until_live(proc, port, timeout=120)
            except RuntimeError:
                yield {"error": "pocoviz serve did not start"}
                return
            yield browser, f"http://127.0.0.1:{port}/app", t0
        finally:
            stop(proc)
            browser.close()


def bench_app_cold_start(chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    """Launch ``pocoviz serve`` and time it to the first painted page and raster in headless Chromium.

    ``ready_s``: launch until ``/liveness`` answers; ``first_contentful_paint_s``: launch until the
    browser first paints the page (navigation starts when the server is ready);
    ``raster_visible_s``: launch until the population raster's canvas is visible (the view a user
    waits for); ``second_page_s``: a second page on the warm server, to its raster;
    ``session_switch_s``: choosing another session until its metadata shows.
    """
    out: dict[str, Any] = {}
    with _served(chromium) as served:
        if isinstance(served, dict):
            return served
        browser, url, t0 = served
        out["ready_s"] = round(time.perf_counter() - t0, 2)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t_nav = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=120_000)
        out["raster_visible_s"] = round(time.perf_counter() - t0, 2)
        fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)")
        if fcp:
            out["first_contentful_paint_s"] = round(t_nav - t0 + fcp[0] / 1000, 2)
        page.close()
        t1 = time.perf_counter()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="commit")
        page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=60_000)
        out["second_page_s"] = round(time.perf_counter() - t1, 2)
        select = page.locator(".pocoviz-session select")
        options = select.locator("option").all_inner_texts()
        if len(options) > 1:
            t2 = time.perf_counter()
            select.select_option(label=options[-1])
            page.locator(".pocoviz-meta", has_text=options[-1].split("/")[-1]).wait_for(timeout=60_000)
            out["session_switch_s"] = round(time.perf_counter() - t2, 2)
    return out


def bench_embeddings_tab(chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    """A fresh ``pocoviz serve`` opened directly on the Embeddings tab (``?tab=2``): seconds from
    navigation (server ready) until the layout's canvas shows, until the layout holds all points
    (the shipped UMAP layout), and until the separation test is reported; then, in a second page,
    from a click on the tab (the app already showing) to the layout with all points."""
    out: dict[str, Any] = {}
    with _served(chromium) as served:
        if isinstance(served, dict):
            return served
        browser, url, _ = served
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(f"{url}?tab=2", wait_until="commit")
        page.locator(".pocoviz-emb-scatter canvas").first.wait_for(state="visible", timeout=120_000)
        out["layout_canvas_s"] = round(time.perf_counter() - t0, 2)
        page.wait_for_function(
            "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
            " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x && m.data.emb_x.length > 1000) return true; return false; }",
            timeout=120_000,
        )
        out["layout_points_s"] = round(time.perf_counter() - t0, 2)
        page.locator(".pocoviz-separation", has_text="Region silhouette").wait_for(timeout=180_000)
        out["separation_s"] = round(time.perf_counter() - t0, 2)
        page.close()
        # the usual way in: the app's first page, then a click on the tab
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="commit")
        page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=120_000)
        t0 = time.perf_counter()
        page.locator(".bk-tab", has_text="Embeddings").click()
        page.wait_for_function(
            "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
            " if (m.constructor.__name__ === 'ColumnDataSource' && m.data.emb_x && m.data.emb_x.length > 1000) return true; return false; }",
            timeout=120_000,
        )
        out["click_to_layout_s"] = round(time.perf_counter() - t0, 2)
    return out


#: counts data updates of the traces plot in the browser (one per drawn frame), those that hold
#: POCO's lines (the first model, "model-0") and those that hold every model's
_FRAME_HOOK = """(n) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (m.name === 'pocoviz-frame') { window.__pocovizFrames = 0; window.__pocovizFull = 0; window.__pocovizPoco = 0;
    m.properties.data.change.connect(() => { window.__pocovizFrames++;
      const layers = new Set(m.data.layer);
      if (layers.has('model-0')) window.__pocovizPoco++;
      let all = true; for (let i = 0; i < n; i++) if (!layers.has('model-' + i)) all = false;
      if (all) window.__pocovizFull++; });
    return true; }
  return false; }"""


#: the HTML of the Forecast tab's model-status pane
_STATUS_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
  if (Array.isArray(m.css_classes) && m.css_classes.includes('pocoviz-model-status')) return m.text; return null; }"""


def _readout_frame(page: Any) -> int:
    """The cursor as the Forecast tab's readout shows it ("frame 123 / 1499 ...")."""
    import re

    text = page.locator(".pocoviz-clock").get_by_text(re.compile(r"frame \d+")).first.inner_text()
    return int(re.search(r"frame (\d+)", text).group(1))


def bench_playback(
    chromium: str = "/usr/bin/chromium", seconds: float = 5.0, speeds: tuple[int, ...] = (10, 30), settled: bool = False
) -> dict[str, Any]:
    """Forecast-tab playback in headless Chromium: frames drawn per second over ``seconds`` with
    8 traces, three models (POCO first) and the 1500-unit zebrafish raster, per requested speed,
    each on a fresh page right after POCO's first lines appear (its whole-population pass has
    barely started).

    ``frames_per_s``: data updates of the traces plot that reached the browser (a test hook on
    its ColumnDataSource); ``cursor_frames_per_s``: how far the cursor moved;
    ``frames_with_poco``: the share of drawn frames that held POCO's lines (the target is at
    least 0.95 at 30 frames/s: the units on screen are forecast ahead of the playhead, the whole
    population behind it); ``frames_with_all_forecasts``: the share that held all three models';
    ``poco_full_pass_at_end``: how much of POCO's whole-recording pass (for the metrics) was done
    when playback stopped.
    """
    import html
    import os
    import re
    import urllib.parse

    out: dict[str, Any] = {"recording": "zebrafish/fish0 (1500 units x 1500 frames)", "traces": 8, "seconds": seconds}
    out["load_average_1min_before"] = round(os.getloadavg()[0], 2)  # the same machine serves, forecasts and renders
    models = ["poco_demo", "mlp_demo", "nlinear_demo"]
    with _served(chromium) as served:
        if isinstance(served, dict):
            return served
        browser, url, _ = served
        for fps in speeds:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            q = urllib.parse.urlencode({"tab": "1", "session": "zebrafish/fish0", "models": ",".join(models), "traces": "8", "speed": str(fps)})
            page.goto(f"{url}?{q}", wait_until="domcontentloaded")
            page.locator(".pocoviz-forecast-traces canvas").first.wait_for(state="visible", timeout=180_000)
            page.wait_for_function(
                "() => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
                " if (m.name === 'pocoviz-frame' && m.data.layer && m.data.layer.includes('model-0')) return true; return false; }",
                timeout=180_000,
            )
            page.wait_for_timeout(1500)
            if settled:  # wait until every model has forecast the whole recording (the worker is idle)
                page.locator(".pocoviz-model-status").filter(has_text="computing").wait_for(state="detached", timeout=300_000)
            page.evaluate(_FRAME_HOOK, len(models))
            t_start = _readout_frame(page)
            page.locator(".pocoviz-play button").click()
            t0 = time.perf_counter()
            page.wait_for_timeout(seconds * 1000)
            frames, full, poco = page.evaluate("[window.__pocovizFrames, window.__pocovizFull, window.__pocovizPoco]")
            elapsed = time.perf_counter() - t0
            page.locator(".pocoviz-play button").click()
            played = time.perf_counter() - t0
            page.wait_for_timeout(500)
            status = html.unescape(page.evaluate(_STATUS_JS) or "")
            first = re.search(r"poco_demo.*?(?:computing (\d+)%|: ready)", status, re.S)
            out[f"speed_{fps}"] = {
                "frames_per_s": round(frames / elapsed, 1),
                "cursor_frames_per_s": round((_readout_frame(page) - t_start) / played, 1),
                "frames_with_poco": round(poco / frames, 3) if frames else None,
                "frames_with_all_forecasts": round(full / frames, 3) if frames else None,
                "poco_full_pass_at_end": None if first is None else (1.0 if first.group(1) is None else int(first.group(1)) / 100),
            }
            page.close()
    out["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    return out

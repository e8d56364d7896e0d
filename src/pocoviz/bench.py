"""``pocoviz bench``: time the hot paths on the machine at hand and return a JSON-able report.

Each figure is ``{"first_s": ..., "median_s": ..., "repeats": n}`` (first call includes JIT
compilation and caches; the median is over the warm repeats). Later features add sections.
"""

from __future__ import annotations

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


SECTIONS = ("recordings", "forecast", "app")


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
    only = tuple(only) if only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; choose from {SECTIONS}")
    if "recordings" in only:
        report["recordings"] = bench_recordings(quick, Path(shared_data) if shared_data else None)
    if "forecast" in only:
        from pocoviz.forecast.bench import bench_forecast

        report["forecast"] = bench_forecast(quick)
    if "app" in only:
        report["app"] = bench_app_cold_start()
    report["total_s"] = round(time.perf_counter() - t0, 2)
    return report



def bench_app_cold_start(chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    """Launch ``pocoviz serve`` and time it to the first painted page and raster in headless Chromium.

    ``ready_s``: launch until ``/liveness`` answers; ``first_contentful_paint_s``: launch until the
    browser first paints the page (navigation starts when the server is ready);
    ``raster_visible_s``: launch until the population raster's canvas is visible (the view a user
    waits for); ``second_page_s``: a second page on the warm server, to its raster;
    ``session_switch_s``: choosing another session until its metadata shows.
    """
    import os
    import subprocess
    import sys

    from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

    if not Path(chromium).exists():
        return {"skipped": f"{chromium} not found (apt-get install chromium)"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (pip install -e .[test])"}
    port = free_port()
    # the README's serve command (`make serve` runs exactly this)
    cmd = [sys.executable, "-m", "pocoviz.cli", "serve", "--address", "127.0.0.1", "--port", str(port)]
    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "BOKEH_RESOURCES": "server"})
        try:
            try:
                wait_until_live(proc, port, timeout=120)
            except RuntimeError:
                return {"error": "pocoviz serve did not start"}
            out["ready_s"] = round(time.perf_counter() - t0, 2)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t_nav = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/app", wait_until="commit")
            page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=120_000)
            out["raster_visible_s"] = round(time.perf_counter() - t0, 2)
            fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)")
            if fcp:
                out["first_contentful_paint_s"] = round(t_nav - t0 + fcp[0] / 1000, 2)
            page.close()
            t1 = time.perf_counter()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/app", wait_until="commit")
            page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=60_000)
            out["second_page_s"] = round(time.perf_counter() - t1, 2)
            select = page.locator(".pocoviz-session select")
            options = select.locator("option").all_inner_texts()
            if len(options) > 1:
                t2 = time.perf_counter()
                select.select_option(label=options[-1])
                page.locator(".pocoviz-meta", has_text=options[-1].split("/")[-1]).wait_for(timeout=60_000)
                out["session_switch_s"] = round(time.perf_counter() - t2, 2)
        finally:
            stop(proc)
            browser.close()
    return out

"""A load test: many browser sessions at once on ``pocoviz serve --num-procs N``.

:func:`run_load_test` starts the server as users start it (``pocoviz serve`` on 127.0.0.1, Bokeh
resources served locally), opens ``sessions`` browser contexts in one headless Chromium (each its
own Bokeh session), and for ``minutes`` has every session repeat what a lab member does in the
Recordings tab, with a pause between actions (``think_s``, 1-3 s by default: a busy room):

* ``session``: choose another recording session; done when the raster's title names it;
* ``region``: choose a region; done when the selection summary names the units shown;
* ``unit``: click the raster; done when the unit field lists the clicked unit.

Each action's latency is from the browser event to its result on the page. Reported: latency
percentiles per action and overall, failed actions (no result within 30 s), pages that never
loaded, the server's tracebacks and errors, and the resident memory of the server's processes
(the forked workers included) sampled every 2 s. Requests that leave loopback are blocked and
counted. ``pocoviz bench --only load`` runs it (20 sessions, 5 minutes, 2 processes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

from .scale_bench import CHROMIUM, _tree_rss_mb

#: the demo corpus' sessions and a region of each (what the actions choose from)
SESSIONS = {
    "zebrafish/fish0": "zebrafish/fish0: 1500 units",
    "zebrafish/fish1": "zebrafish/fish1: 1300 units",
    "mouse/mouse0": "mouse/mouse0: 650 units",
    "worm/worm0": "worm/worm0: 112 units",
    "worm/worm1": "worm/worm1: 120 units",
}
TITLE_JS = (
    "(text) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)"
    " if (m.constructor.__name__ === 'Title' && m.text.includes(text)) return true; return false; }"
)
ACTION_TIMEOUT_MS = 30_000


async def _user(browser: Any, url: str, k: int, until: float, rng: np.random.Generator, out: dict[str, Any], external: list[str],
                think_s: tuple[float, float] = (1.0, 3.0)) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()

    async def route(r: Any) -> None:
        host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else ""
        if host in ("127.0.0.1", "localhost", ""):
            await r.continue_()
        else:
            external.append(r.request.url)
            await r.abort()

    await page.route("**/*", route)
    page.on("pageerror", lambda exc: out["page_errors"].append(f"session {k}: {exc}"))
    t = time.perf_counter()
    try:
        await page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        await page.locator(".pocoviz-raster canvas").first.wait_for(state="visible", timeout=120_000)
        await page.wait_for_function(TITLE_JS, arg="units", timeout=120_000)
    except Exception as exc:  # counted: a page that never loaded
        out["pages_failed"].append(f"session {k}: {type(exc).__name__}: {str(exc)[:200]}")
        await context.close()
        return
    out["page_s"].append(time.perf_counter() - t)
    current = "zebrafish/fish0"
    while time.perf_counter() < until:
        await page.wait_for_timeout(float(rng.uniform(1000 * think_s[0], 1000 * think_s[1])))
        kind = str(rng.choice(["session", "region", "unit"], p=[0.4, 0.3, 0.3]))
        t = time.perf_counter()
        try:
            if kind == "session":
                current = str(rng.choice([s for s in SESSIONS if s != current]))
                await page.locator(".pocoviz-session select").select_option(label=current)
                await page.wait_for_function(TITLE_JS, arg=SESSIONS[current], timeout=ACTION_TIMEOUT_MS)
            elif kind == "region":
                options = [o for o in await page.locator(".pocoviz-region select option").all_inner_texts() if o.strip() and "all" not in o.lower()]
                if not options:
                    continue
                await page.locator(".pocoviz-region select").select_option(label=str(rng.choice(options)))
                await page.locator(".pocoviz-selection").filter(has_text="unit(s) shown").wait_for(timeout=ACTION_TIMEOUT_MS)
            else:
                box = await page.locator(".pocoviz-raster canvas").first.bounding_box()
                field = page.locator(".pocoviz-unit_ids input")  # in a shadow root: Playwright's locators reach it
                before = await field.input_value()
                await page.mouse.click(box["x"] + box["width"] * rng.uniform(0.2, 0.8), box["y"] + box["height"] * rng.uniform(0.2, 0.8))
                while (value := await field.input_value()) == before:  # the clicked unit joins the ids shown
                    if time.perf_counter() - t > ACTION_TIMEOUT_MS / 1000:
                        raise TimeoutError(f"the unit field still reads {value!r}")
                    await page.wait_for_timeout(20)
        except Exception as exc:
            out["failed"].append(f"session {k} {kind}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        out["latency"].setdefault(kind, []).append(time.perf_counter() - t)
    await context.close()


async def _drive(url: str, sessions: int, minutes: float, seed: int, out: dict[str, Any], external: list[str], think_s: tuple[float, float]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        until = time.perf_counter() + 60 * minutes
        rngs = [np.random.default_rng([seed, k]) for k in range(sessions)]
        users = []
        for k in range(sessions):  # arrive over a few seconds, as a room does
            users.append(asyncio.create_task(_user(browser, url, k, until, rngs[k], out, external, think_s)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*users)
        await browser.close()


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ms = np.asarray(values) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1)}  # fmt: skip


def run_load_test(
    sessions: int = 20, minutes: float = 5.0, num_procs: int = 2, *, seed: int = 0, data_dir: str | os.PathLike | None = None,
    think_s: tuple[float, float] = (1.0, 3.0),
) -> dict[str, Any]:  # fmt: skip
    """Serve the app with ``num_procs`` processes and drive ``sessions`` browser sessions for
    ``minutes``, each pausing ``think_s`` seconds (uniform) between actions (see module docstring);
    returns a JSON-able report."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pocoviz-load-")) / "serve.log"
    script = Path(sys.executable).with_name("pocoviz")  # the command users run
    cmd = [str(script) if script.exists() else "pocoviz", "serve", "--port", str(port), "--num-procs", str(num_procs)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if k not in ("BOKEH_RESOURCES", "BOKEH_CDN_VERSION", "PANEL_INLINE")}
    out: dict[str, Any] = {"page_s": [], "latency": {}, "failed": [], "pages_failed": [], "page_errors": []}
    external: list[str] = []
    memory: list[float] = []
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.perf_counter()
    try:
        wait_until_live(proc, port, timeout=120, on_fail=lambda: log.read_text()[-3000:])
        rss_idle = _tree_rss_mb(proc.pid)

        async def main() -> None:
            async def sample() -> None:
                while True:
                    memory.append(_tree_rss_mb(proc.pid))
                    await asyncio.sleep(2.0)

            sampler = asyncio.create_task(sample())
            try:
                await _drive(f"http://127.0.0.1:{port}/app", sessions, minutes, seed, out, external, think_s)
            finally:
                sampler.cancel()

        asyncio.run(main())
        rss_end = _tree_rss_mb(proc.pid)
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    every = [v for values in out["latency"].values() for v in values]
    return {
        "sessions": sessions, "minutes": minutes, "num_procs": num_procs, "seed": seed, "think_s": list(think_s), "cpu_count": os.cpu_count(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "pages_loaded": len(out["page_s"]), "page_load": _percentiles(out["page_s"]),
        "actions": _percentiles(every), "by_action": {k: _percentiles(v) for k, v in sorted(out["latency"].items())},
        "failed_actions": len(out["failed"]), "failed_detail": out["failed"][:20], "pages_failed": out["pages_failed"][:20],
        "page_errors": out["page_errors"][:20],
        "server_tracebacks": text.count("Traceback (most recent call last)"), "server_error_lines": sum("ERROR" in line for line in text.splitlines()),
        "server_rss_mb_idle": rss_idle, "server_rss_mb_peak": max(memory) if memory else None, "server_rss_mb_end": rss_end,
        "external_requests": len(external), "external_examples": sorted(set(external))[:5],
        "note": "latency: from the browser event to its result on the page; RSS summed over the server's processes",
    }  # fmt: skip


if __name__ == "__main__":  # python -m pocoviz.ui.load_test [SESSIONS] [MINUTES] [NUM_PROCS] [THINK_MIN_S THINK_MAX_S]
    import json

    args = [float(a) for a in sys.argv[1:]]
    think = (args[3], args[4]) if len(args) > 4 else (1.0, 3.0)
    print(json.dumps(run_load_test(int(args[0]) if args else 20, args[1] if len(args) > 1 else 5.0, int(args[2]) if len(args) > 2 else 2,
                                   think_s=think), indent=1))  # fmt: skip

"""Screenshots of every tab of the served app at the sizes people use, to look at.

    .venv/bin/python benchmarks/screenshots.py [--out docs/screenshots] [--tabs forecast,limits] [--full]
                                               [--sizes 1600x1000,1280x800] [--settle 10]

Serves ``app/app.py`` as users do (``panel serve``, no resource variables, every request beyond
loopback blocked), opens each tab by its link (``?tab=N``) in a fresh browser context per size,
waits until the tab has drawn (a canvas inside it, no loading placeholder) and ``--settle``
seconds more for its background work, and saves ``<out>/<tab>_<width>x<height>.png``: what the
window shows (with ``--full`` also ``..._full.png``, the window made as tall as the tab). Prints
one line per shot: the tab's size, whether it overflows sideways or a plot ends beyond the window,
how much lies below the window, and the console's warnings and errors. Exit status 1 if a tab did
not draw, a request left loopback or the server printed a traceback or an error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live  # noqa: E402

#: (slug, tab title, index in the app's tabs)
TABS = [
    ("recordings", "Recordings", 0),
    ("forecast", "Forecast", 1),
    ("embeddings", "Embeddings", 2),
    ("ensembles", "Ensembles", 3),
    ("seqmem", "Sequence memory", 4),
    ("limits", "Transformer limits", 5),
]
CHROMIUM = os.environ.get("POCOVIZ_CHROMIUM", "/usr/bin/chromium")
#: the scrolled content's size (the template scrolls its #main column, not the document), its
#: top on the page and the window's size
PAGE_SIZE_JS = """() => { const m = document.getElementById('main') || document.scrollingElement;
  return [m.scrollWidth, m.scrollHeight, m.getBoundingClientRect().top, innerWidth, innerHeight]; }"""
#: the right edge of the rightmost plot (plots live in shadow roots: Playwright's locator pierces them)
RIGHT_EDGE_JS = "els => Math.max(0, ...els.map(e => e.getBoundingClientRect().right))"


def serve(log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("BOKEH_RESOURCES", "BOKEH_CDN_VERSION", "PANEL_INLINE")}
    cmd = [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "app.py"), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--liveness"]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wait_until_live(proc, port, timeout=120, on_fail=lambda: log.read_text()[-3000:])
    return proc, port


def shoot(browser, url: str, title: str, size: tuple[int, int], path: Path, settle: float, full: bool) -> tuple[bool, str]:
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    external: list[str] = []
    console: list[str] = []

    def only_loopback(route):
        u = route.request.url
        host = u.split("/")[2].split(":")[0] if "://" in u else ""
        if not u.startswith("http") or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            external.append(u)
            route.abort()

    ctx.route("**/*", only_loopback)
    page = ctx.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text[:160]}") if m.type in ("warning", "error") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {str(e)[:160]}"))
    t0 = time.monotonic()
    drew = True
    try:
        page.goto(url, wait_until="domcontentloaded")
        # the open tab's panel is the visible one; it has drawn once a canvas shows and no placeholder
        page.locator(".bk-tab.bk-active", has_text=title).wait_for(timeout=90_000)
        page.locator("canvas:visible").first.wait_for(timeout=120_000)
        page.wait_for_function("() => !document.querySelector('.pocoviz-loading')", timeout=60_000)
    except Exception as exc:  # still take the picture: it shows what went wrong
        drew = False
        console.append(f"did not draw: {str(exc).splitlines()[0][:160]}")
    page.wait_for_timeout(settle * 1000)
    width, height, top, win_w, win_h = page.evaluate(PAGE_SIZE_JS)
    right = page.locator("canvas:visible").evaluate_all(RIGHT_EDGE_JS)
    page.screenshot(path=str(path))  # what the window shows
    if full:  # the same window made as tall as the tab
        page.set_viewport_size({"width": win_w, "height": min(int(top + height) + 4, 6000)})
        page.wait_for_timeout(2000)
        page.screenshot(path=str(path.with_name(path.stem + "_full.png")), full_page=True)
    ctx.close()
    sideways = f"; OVERFLOWS SIDEWAYS by {width - win_w} px" if width > win_w else ""
    clipped = f"; a plot ends {right - win_w:.0f} px beyond the window" if right > win_w + 1 else ""
    below = f"; {int(top + height - win_h)} px of the tab below the window" if top + height > win_h else ""
    line = f"{path.name}: content {width}x{height} px{sideways}{clipped}{below} ({time.monotonic() - t0:.0f} s)"
    if external:
        line += f"\n  requests beyond loopback: {external[:3]}"
    for msg in console:
        line += f"\n  {msg}"
    return drew and not external, line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs (docs/screenshots)")
    p.add_argument("--tabs", default=",".join(t[0] for t in TABS), help="comma-separated: " + ", ".join(t[0] for t in TABS))
    p.add_argument("--sizes", default="1600x1000,1280x800", help="comma-separated WIDTHxHEIGHT windows")
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait after a tab has drawn (background work)")
    p.add_argument("--full", action="store_true", help="also <tab>_<size>_full.png: the window made as tall as the tab")
    a = p.parse_args(argv)
    wanted = a.tabs.split(",")
    unknown = set(wanted) - {t[0] for t in TABS}
    if unknown:
        p.error(f"unknown tabs: {', '.join(sorted(unknown))}")
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    log = a.out / "server.log.tmp"
    proc, port = serve(log)
    ok = True
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for slug, title, index in TABS:
                if slug not in wanted:
                    continue
                for size in sizes:
                    path = a.out / f"{slug}_{size[0]}x{size[1]}.png"
                    good, line = shoot(browser, f"http://127.0.0.1:{port}/app?tab={index}", title, size, path, a.settle, a.full)
                    ok &= good
                    print(line, flush=True)
            browser.close()
    finally:
        stop(proc)
        server_log = log.read_text(errors="replace")
        log.unlink()
        if "Traceback" in server_log or "ERROR:" in server_log:
            print("server log (tracebacks or errors):\n" + server_log[-4000:])
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

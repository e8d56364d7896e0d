"""Serve the app the way users start it, in a subprocess, and drive it in headless Debian Chromium.

``app_url``: ``panel serve app/app.py`` with no Bokeh/Panel resource variables in its environment,
as a user's shell has none (every view test); ``pocoviz_url``: ``pocoviz serve`` (what ``make
serve`` runs) from a shell without them, and from shells with ``BOKEH_RESOURCES=inline`` or ``cdn``
left over, started only by the tests that ask for it. Nothing here makes the page load its
resources locally: the app does that itself. One browser per test session.
Every page (``page``, and each one ``new_page()`` opens in a fresh browser context) blocks and
records each request that leaves loopback (``page.external_requests``), and records every console
message (``page.console_messages``: (type, text); ``page.console_errors``: the errors' texts and
uncaught exceptions); at teardown it fails its test if any request left loopback or if the console
had a warning, an error or an uncaught exception (see ``CONSOLE_ALLOWED`` for the one exception),
whatever tabs the test opened. It also records the stylesheets the app's server answered
(``page.local_css``: (url, status)). The servers' output is checked after every test and at the
end: any Python traceback there ("Traceback (most recent call last)", asyncio's "Task exception
was never retrieved", "Exception in callback") or error logged by Panel/Bokeh ("ERROR: ...") fails
the test that was running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "app.py"
CHROMIUM = os.environ.get("POCOVIZ_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("POCOVIZ_SCREENSHOT_DIR", ROOT / "tests" / "ui" / "screenshots"))

#: Console warnings/errors that are not ours and say nothing about the app. Each entry: a regex, and why.
CONSOLE_ALLOWED: list[tuple[str, str]] = [
    # Chromium's GPU process reports driver performance hints of its software WebGL (SwiftShader,
    # this machine has no GPU: --disable-gpu) as console warnings, e.g. "GPU stall due to
    # ReadPixels" when a canvas is read back; they come from the browser, not from the page's code,
    # and a user's browser with a GPU does not print them.
    (r"^\[\.WebGL-0x[0-9a-f]+\]GL Driver Message", "headless Chromium's software WebGL"),
]
_CONSOLE_ALLOWED_RE = [re.compile(pattern) for pattern, _ in CONSOLE_ALLOWED]
#: what marks a Python traceback, or an error Panel or Bokeh logged, in a server's output
SERVER_ERROR = re.compile(r"Traceback \(most recent call last\)|Task exception was never retrieved|Exception in callback|\bERROR: ")
#: server logs of the running app servers -> how far they have been checked
_SERVER_LOGS: dict[Path, int] = {}


@pytest.fixture(scope="session")
def ui_data_dir(tmp_path_factory) -> Path:
    """A data directory with a good recording, one without unit positions, and a malformed file."""
    import numpy as np

    from pocoviz.recordings import make_recording, save_recording

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    act = rng.standard_normal((400, 40)).cumsum(axis=0) * 0.1
    ds = make_recording(
        act, sampling_rate_hz=2.0, species="testfish", session="good", units="dF/F",
        region=["alpha"] * 20 + ["beta"] * 20, x=rng.uniform(0, 100, 40), y=rng.uniform(0, 100, 40),
    )
    save_recording(ds, folder / "good.nc")
    nopos = make_recording(act[:, :10], sampling_rate_hz=2.0, species="testfish", session="nopos", units="dF/F")
    save_recording(nopos, folder / "nopos.nc")  # a recording without unit positions
    (folder / "broken.nc").write_text("this is not a netCDF file\n")
    write_test_checkpoints(folder / "models")
    return folder


def write_test_checkpoints(folder: Path) -> None:
    """``tiny_mlp`` (session-free: forecasts any recording) and ``mismatched``: a POCO trained on a
    session called testfish/good but with 30 units, where the good.nc recording has 40."""
    import torch

    from pocoviz.forecast import SessionInfo, build_model, save_model

    torch.manual_seed(0)
    save_model(build_model("MLP", [SessionInfo("testfish/other", 40, "testfish")], hidden=16), folder / "tiny_mlp")
    poco = build_model("POCO", [SessionInfo("testfish/good", 30, "testfish")], dim=16, hidden=32, self_heads=2, dim_head=8)
    save_model(poco, folder / "mismatched")


def _serve(cmd: list[str], port: int, log: Path, env: dict[str, str]) -> Iterator[str]:
    """Run ``cmd`` until ``/liveness`` answers, yield the app's URL, stop it; fail if it printed a
    traceback or an error after the last test's check."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_until_live(proc, port, timeout=90, on_fail=lambda: f"{cmd[:4]} failed:\n" + log.read_text()[-3000:])
        _SERVER_LOGS[log] = 0
        yield f"http://127.0.0.1:{port}/app"
    finally:
        stop(proc)
        new = _unchecked_server_output(log)
        _SERVER_LOGS.pop(log, None)
        if SERVER_ERROR.search(new):  # logged after the last test's check (e.g. while shutting down)
            pytest.fail(f"{cmd[:4]} printed a traceback or an error after the last check:\n{new[-5000:]}")


def _unchecked_server_output(log: Path) -> str:
    """What ``log`` gained since it was last checked (and mark it checked)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    new = text[_SERVER_LOGS.get(log, 0):]
    _SERVER_LOGS[log] = len(text)
    return new


@pytest.fixture(autouse=True)
def no_server_traceback(request):
    """Fail the test if an app server printed a Python traceback or logged an error while it ran (its pages included:
    this fixture is torn down after them, and waits a moment for the server to notice they closed)."""
    for log in _SERVER_LOGS:
        _unchecked_server_output(log)  # earlier output belongs to earlier tests
    yield
    if not _SERVER_LOGS:
        return
    if "page" in request.fixturenames or "new_page" in request.fixturenames:
        time.sleep(0.5)
    found = {f"{log.parent.name}/{log.name}": new for log in list(_SERVER_LOGS) if SERVER_ERROR.search(new := _unchecked_server_output(log))}
    for name, new in found.items():
        print(f"--- {name} ---\n{new[-5000:]}")
    assert not found, f"the app server printed a traceback or an error during this test ({', '.join(found)}; output above)"


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, ui_data_dir):
    """``panel serve app/app.py --args --data-dir DIR``, started as a user starts it."""
    port = free_port()
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--num-threads", "2", "--liveness",
           "--args", "--data-dir", str(ui_data_dir)]
    yield from _serve(cmd, port, tmp_path_factory.mktemp("serve") / "panel.log", user_env())


def user_env(**resources: str) -> dict[str, str]:
    """The runner's environment without Bokeh's and Panel's resource variables (a user's shell has
    none), plus ``resources``."""
    env = {k: v for k, v in os.environ.items() if k not in ("BOKEH_RESOURCES", "BOKEH_CDN_VERSION", "PANEL_INLINE")}
    return {**env, **resources}


@pytest.fixture(scope="session", params=["unset", "inline", "cdn"], ids=lambda p: f"BOKEH_RESOURCES={p}")
def pocoviz_url(request, tmp_path_factory, ui_data_dir):
    """``pocoviz serve --data-dir DIR`` (``make serve``) as users start it, and from shells with
    ``BOKEH_RESOURCES`` left over (from saving standalone HTML, say): with ``inline`` Bokeh used to
    point the page at about ten CSS files on cdn.holoviz.org (unstyled offline), with ``cdn`` at
    BokehJS on cdn.bokeh.org (no page offline)."""
    port = free_port()
    script = Path(sys.executable).with_name("pocoviz")  # the console script pip installed
    cmd = [*([str(script)] if script.exists() else [sys.executable, "-m", "pocoviz.cli"]),
           "serve", "--address", "127.0.0.1", "--port", str(port), "--data-dir", str(ui_data_dir)]
    env = user_env() if request.param == "unset" else user_env(BOKEH_RESOURCES=request.param)
    yield from _serve(cmd, port, tmp_path_factory.mktemp("serve") / "pocoviz.log", env)


@pytest.fixture(scope="session")
def browser():
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _watch(pg) -> None:
    """Record every console message of ``pg`` and its uncaught exceptions."""
    pg.console_messages = []
    pg.console_errors = []

    def on_console(msg) -> None:
        pg.console_messages.append((msg.type, msg.text))
        if msg.type == "error":
            pg.console_errors.append(msg.text)

    def on_pageerror(exc) -> None:
        pg.console_messages.append(("pageerror", str(exc)))
        pg.console_errors.append(f"pageerror: {exc}")

    pg.on("console", on_console)
    pg.on("pageerror", on_pageerror)


def console_problems(messages: list[tuple[str, str]]) -> list[str]:
    """The warnings, errors and uncaught exceptions among ``messages``, less ``CONSOLE_ALLOWED``."""
    return [
        f"{kind}: {text}"
        for kind, text in messages
        if kind in ("warning", "error", "pageerror") and not any(r.search(text) for r in _CONSOLE_ALLOWED_RE)
    ]


@pytest.fixture
def new_page(browser) -> Iterator[Callable[..., object]]:
    """``new_page(**context_options)``: a page in a new browser context (a new user: no cookies, no
    history) that blocks and records requests beyond loopback and records its console; each one is
    checked when the test ends (no request beyond loopback, no console warning or error)."""
    opened: list[tuple[object, object]] = []

    def open_page(**context_options):
        ctx = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context_options})
        external: list[str] = []

        def only_loopback(route):
            url = route.request.url
            host = url.split("/")[2].split(":")[0] if "://" in url else ""
            if not url.startswith("http") or host in ("127.0.0.1", "localhost"):
                route.continue_()
            else:
                external.append(url)
                route.abort()

        ctx.route("**/*", only_loopback)
        pg = ctx.new_page()
        pg.external_requests = external
        pg.local_css = []
        pg.on("response", lambda r: pg.local_css.append((r.url, r.status)) if r.request.resource_type == "stylesheet" else None)
        _watch(pg)
        opened.append((ctx, pg))
        return pg

    yield open_page
    problems = []
    for i, (ctx, pg) in enumerate(opened):
        ctx.close()
        # every browser test, whatever it opened: nothing left loopback (each request was blocked)
        if pg.external_requests:
            problems.append(f"page {i}: {len(pg.external_requests)} request(s) left loopback: {pg.external_requests[:5]}")
        console = console_problems(pg.console_messages)
        if console:
            print(f"page {i}: console warnings and errors:\n  " + "\n  ".join(console))
            problems.append(f"page {i}: {len(console)} console warning(s)/error(s), first: {console[0][:300]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def page(new_page):
    """One watched page in its own browser context, 1400×1000 (see ``new_page``)."""
    return new_page()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

"""Serve the app the way users start it, in a subprocess, and drive it in headless Debian Chromium.

``app_url``: ``panel serve app/app.py`` with no Bokeh/Panel resource variables in its environment,
as a user's shell has none (every view test); ``pocoviz_url``: ``pocoviz serve`` (what ``make
serve`` runs) from a shell without them, and from shells with ``BOKEH_RESOURCES=inline`` or ``cdn``
left over, started only by the tests that ask for it. Nothing here makes the page load its
resources locally: the app does that itself. One browser per test session.
Every page blocks and records each request that leaves loopback (``page.external_requests``) and
fails its test at teardown if there was any, whatever tabs the test opened; it records the
stylesheets the app's server answered (``page.local_css``: (url, status)) and console errors
(``page.console_errors``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocoviz.serving import CHROMIUM_ARGS, free_port, stop, wait_until_live

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "app.py"
CHROMIUM = os.environ.get("POCOVIZ_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("POCOVIZ_SCREENSHOT_DIR", ROOT / "tests" / "ui" / "screenshots"))


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
    """Run ``cmd`` until ``/liveness`` answers, yield the app's URL, stop it (its log printed on tracebacks)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_until_live(proc, port, timeout=90, on_fail=lambda: f"{cmd[:4]} failed:\n" + log.read_text()[-3000:])
        yield f"http://127.0.0.1:{port}/app"
    finally:
        stop(proc)
        server_log = log.read_text(errors="replace")
        if "Traceback" in server_log:
            print(f"{cmd[:4]} log (tracebacks found):\n" + server_log[-5000:])


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


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
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
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.console_errors.append(f"pageerror: {e}"))
    yield pg
    ctx.close()
    # every browser test, whatever it opened: nothing left loopback (each request was blocked)
    assert external == [], f"{len(external)} request(s) left loopback: {external[:5]}"


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

"""Start and stop a served app in a subprocess, and the headless-Chromium flags for this machine.

Shared by ``pocoviz bench`` (cold-start timing) and the browser tests, which need only the standard
library here; the app installs :func:`ignore_writes_to_closed_websockets` (Tornado, imported when called).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

#: Flags for Debian's chromium on a machine without outside network (no background fetches).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_live(proc: subprocess.Popen, port: int, *, timeout: float = 90.0, on_fail: Callable[[], str] = lambda: "") -> None:
    """Poll ``/liveness`` until it answers; raise RuntimeError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2)
            return
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start\n{on_fail()}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    """Terminate, then kill if it does not stop within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _is_write_to_closed_websocket(context: dict) -> bool:
    """An asyncio error context for a websocket write that failed because the browser had gone."""
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    return isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError))


def ignore_writes_to_closed_websockets() -> bool:
    """Keep asyncio from printing a traceback for websocket writes that fail because the browser left.

    When a browser closes a page while the server is sending to it (a playing Forecast tab sends
    about 30 updates a second), Panel's dispatch of document patches can leave some of Tornado's
    write tasks without an awaiter; each then fails with ``WebSocketClosedError`` and asyncio logs
    "Task exception was never retrieved" with a traceback when the task is collected. Nothing is
    lost (the session is closing) and Bokeh itself logs such writes as "Failed sending message as
    connection was closed"; this handler logs one such line instead. Every other error goes to the
    handler that was there before. Installed once on the running event loop (the server's); returns
    whether it is installed.
    """
    import asyncio
    import logging

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if getattr(loop, "_pocoviz_closed_websocket_handler", False):
        return True
    previous = loop.get_exception_handler()
    log = logging.getLogger("pocoviz.serving")

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if _is_write_to_closed_websocket(context):
            log.info("a write to a closed websocket failed (the browser left): %s", context.get("message", ""))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    loop._pocoviz_closed_websocket_handler = True  # type: ignore[attr-defined]
    return True

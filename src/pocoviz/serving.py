"""Start and stop a served app in a subprocess, and the headless-Chromium flags for this machine.

Shared by ``pocoviz bench`` (cold-start timing) and the browser tests; stdlib only.
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

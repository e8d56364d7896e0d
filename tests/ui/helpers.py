"""Waiting for views that compute in background threads (tests without a browser)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(pred: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_idle(view: Any, timeout: float = 120.0) -> None:
    """Until the background jobs of ``view`` (a tab view or a controller) are done."""
    controller = getattr(view, "controller", view)
    assert controller.jobs.wait_idle(timeout), f"timed out after {timeout} s waiting for the background jobs of {type(view).__name__}"

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
    """Until the background work of ``view`` (a tab view or a controller) is done: its controller's
    jobs (``controller.jobs.wait_idle``, public); for a view still on ``ui.jobs.LatestRunner``, its
    runner."""
    controller = getattr(view, "controller", view)
    jobs = getattr(controller, "jobs", None)
    if jobs is not None and hasattr(jobs, "wait_idle"):
        assert jobs.wait_idle(timeout), f"timed out after {timeout} s waiting for the background jobs of {type(view).__name__}"
        return
    wait_for(lambda: view._runner.idle, timeout, "the view's background work")

"""Background work for views: one job at a time per view, the newest request wins, results are
applied on the session's event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def on_loop(doc: Any, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the session's event loop (Bokeh edits need the document lock); directly when
    not served (tests, notebooks)."""
    if doc is None or doc.session_context is None:
        fn()
    else:
        doc.add_next_tick_callback(fn)


class LatestRunner:
    """Runs ``work(what)`` in a background thread for the names requested since the last run.
    Requests made while it runs are merged and run next, so only the newest settings are computed.
    Threads are not daemons (a daemon killed inside torch at exit aborts the interpreter): call
    :meth:`close` when the view goes away."""

    def __init__(self, work: Callable[[set[str]], None], name: str = "pocoviz-job"):
        self._work = work
        self._name = name
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._thread: threading.Thread | None = None
        self.closed = False

    def request(self, *what: str) -> None:
        with self._lock:
            if self.closed:
                return
            self._dirty.update(what)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=False, name=self._name)
                self._thread.start()

    def pending(self, what: str) -> bool:
        """Whether ``what`` was requested again since the current run took it (newer settings wait)."""
        with self._lock:
            return what in self._dirty or self.closed

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._thread is None and not self._dirty

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._dirty or self.closed:
                    self._thread = None
                    return
                what, self._dirty = self._dirty, set()
            self._work(what)

    def close(self, timeout: float = 60.0) -> None:
        with self._lock:
            self.closed = True
            t = self._thread
        if t is not None:
            t.join(timeout)

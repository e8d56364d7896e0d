"""The one background-job primitive of every tab.

A :class:`JobRunner` runs jobs in lanes (one per kind of work: ``"forecast"``, ``"layout"``,
``"simulate"`` ...). In a lane at most one job runs; starting a job cancels the running one (it
stops at its next :meth:`Job.report` or :meth:`Job.check`) and replaces any job still waiting, so
the newest request wins and stale work is never applied. Threads are not daemons (a daemon killed
inside torch at interpreter exit aborts the process): :meth:`JobRunner.close` cancels everything
and joins the threads, and the tab calls it when its browser session ends.

Jobs only compute and report; they never touch widgets. ``on_done`` callbacks run in the job's
thread, after the job finished and was not superseded; the UI moves them onto its event loop.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Cancelled(Exception):
    """Raised inside a job by :meth:`Job.report` / :meth:`Job.check` once it was cancelled."""


@dataclass
class Job:
    """One unit of background work and what it reports: progress in [0, 1] (``None`` while
    unknown), a short message, and when it ends its result or error."""

    lane: str
    fn: Callable[[Job], Any]
    on_done: Callable[[Job], None] | None = None
    id: int = 0
    progress: float | None = None
    message: str = ""
    result: Any = None
    error: BaseException | None = None
    state: str = "waiting"  # waiting, running, done, failed, cancelled
    started: float | None = None
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled (call between units of work)."""
        if self._cancel.is_set():
            raise Cancelled(self.lane)

    def report(self, progress: float | None = None, message: str | None = None) -> None:
        """Record progress (fraction done) and/or a message; raises :class:`Cancelled` when the job
        was cancelled, so a loop that reports also stops."""
        if progress is not None:
            self.progress = float(min(1.0, max(0.0, progress)))
        if message is not None:
            self.message = message
        self.check()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ended (or was dropped before starting); True if it did in time."""
        return self._done.wait(timeout)

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"


class _Lane:
    def __init__(self) -> None:
        self.current: Job | None = None
        self.pending: Job | None = None
        self.thread: threading.Thread | None = None


class JobRunner:
    """Background jobs of one tab (see module docstring)."""

    def __init__(self, name: str = "pocoviz", on_change: Callable[[], None] | None = None):
        self.name = name
        self.on_change = on_change  # called (in a worker thread) when any job starts or ends
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.closed = False

    # ------------------------------------------------------------------ starting and stopping
    def start(self, lane: str, fn: Callable[[Job], Any], on_done: Callable[[Job], None] | None = None) -> Job:
        """Queue ``fn(job)`` in ``lane``; cancels the lane's running job and drops its waiting one.
        Returns the job (already cancelled when the runner is closed)."""
        job = Job(lane=lane, fn=fn, on_done=on_done, id=next(self._ids))
        with self._lock:
            if self.closed:
                job.state = "cancelled"
                job.cancel()
                job._done.set()
                return job
            ln = self._lanes.setdefault(lane, _Lane())
            if ln.current is not None:
                ln.current.cancel()
            if ln.pending is not None:
                self._drop(ln.pending)
            ln.pending = job
            if ln.thread is None:
                ln.thread = threading.Thread(target=self._run, args=(lane, ln), daemon=False, name=f"{self.name}-{lane}")
                ln.thread.start()
        return job

    @staticmethod
    def _drop(job: Job) -> None:
        job.cancel()
        job.state = "cancelled"
        job._done.set()

    def cancel(self, lane: str | None = None) -> None:
        """Cancel the running and waiting jobs of ``lane`` (of every lane when ``None``)."""
        with self._lock:
            for name, ln in self._lanes.items():
                if lane is None or name == lane:
                    if ln.current is not None:
                        ln.current.cancel()
                    if ln.pending is not None:
                        self._drop(ln.pending)
                        ln.pending = None

    def close(self, timeout: float = 60.0) -> None:
        """Cancel every job and join the threads (called when the session ends); idempotent."""
        with self._lock:
            self.closed = True
        self.cancel()
        deadline = time.monotonic() + timeout
        for ln in list(self._lanes.values()):
            t = ln.thread
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ what is going on
    def busy(self, lane: str | None = None) -> bool:
        with self._lock:
            return any(
                (ln.current is not None or ln.pending is not None) for name, ln in self._lanes.items() if lane is None or name == lane
            )

    def current(self, lane: str) -> Job | None:
        """The running job of ``lane``, else the waiting one, else ``None``."""
        with self._lock:
            ln = self._lanes.get(lane)
            if ln is None:
                return None
            return ln.current or ln.pending

    def status(self) -> dict[str, dict[str, Any]]:
        """``{lane: {"state", "progress", "message"}}`` of the lanes with work (for snapshots)."""
        out = {}
        with self._lock:
            for name, ln in self._lanes.items():
                job = ln.current or ln.pending
                if job is not None:
                    out[name] = {"state": job.state, "progress": job.progress, "message": job.message}
        return out

    def wait_idle(self, timeout: float = 60.0, lane: str | None = None) -> bool:
        """Block until no job runs or waits (in ``lane``); True if that happened in time."""
        deadline = time.monotonic() + timeout
        while self.busy(lane):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # ------------------------------------------------------------------ the lane thread
    def _notify(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a broken listener must not kill the lane
                traceback.print_exc()

    def _run(self, lane: str, ln: _Lane) -> None:
        while True:
            with self._lock:
                job = ln.pending
                ln.pending = None
                if job is None or self.closed:
                    if job is not None:
                        self._drop(job)
                    ln.current = None
                    ln.thread = None
                    return
                ln.current = job
                job.state = "running"
                job.started = time.monotonic()
            self._notify()
            try:
                job.check()
                job.result = job.fn(job)
                job.state = "cancelled" if job.cancelled else "done"
            except Cancelled:
                job.state = "cancelled"
            except Exception as exc:  # reported through the job, never lost in a thread
                job.error = exc
                job.state = "failed" if not job.cancelled else "cancelled"
                if not job.cancelled:
                    traceback.print_exc()
            job.finished = time.monotonic()
            with self._lock:
                ln.current = None
                superseded = ln.pending is not None
            if job.on_done is not None and job.state in ("done", "failed") and not superseded:
                try:
                    job.on_done(job)
                except Exception:
                    traceback.print_exc()
            job._done.set()
            self._notify()

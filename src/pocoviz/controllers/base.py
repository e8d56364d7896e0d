"""The base of the tabs' controllers: state as parameters, background jobs, URL state and a
snapshot of what should be on screen. Controllers never import panel, holoviews or bokeh; a view
renders their snapshots and binds their parameters to widgets."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import param

from .jobs import Job, JobRunner
from .urlstate import UrlField, UrlState


class Controller(param.Parameterized):
    """Subclasses list :attr:`url_fields` and implement :meth:`snapshot`.

    ``version`` increases each time what is on screen should change (a view watches it and renders
    :meth:`snapshot` on its event loop); ``busy`` is true while any background job runs or waits;
    ``notice`` holds messages for the user (link settings that were clamped or ignored, errors).
    """

    url_fields: ClassVar[tuple[UrlField | tuple[str, str], ...]] = ()

    version = param.Integer(default=0, precedence=-1, doc="Bumped when the snapshot changes")
    busy = param.Boolean(default=False, precedence=-1, doc="A background job runs or waits")
    notice = param.String(default="", precedence=-1, doc="A message for the user")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.jobs = JobRunner(name=f"pocoviz-{type(self).__name__}", on_change=self._jobs_changed)
        self.url = UrlState(self.url_fields)
        self._lock = threading.Lock()  # guards results that jobs store and snapshots read
        self._error = ""

    def _jobs_changed(self) -> None:
        busy = self.jobs.busy()
        if busy != self.busy:
            self.busy = busy

    def _store(self, job: Job, **values: Any) -> None:
        """Store results of ``job`` as attributes unless a newer job replaced it, then tell the view."""
        with self._lock:
            if job.cancelled:
                return
            for k, v in values.items():
                setattr(self, k, v)
        self.changed()

    def _failed(self, job: Job) -> None:
        """``on_done`` of jobs whose failure the snapshot shows (as ``_error``)."""
        if job.state == "failed":
            self._error = f"{job.lane} failed: {job.error}"
            self.changed()

    def changed(self) -> None:
        """Tell the view to render a new snapshot."""
        self.version += 1

    def snapshot(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ URL state
    def url_query(self) -> dict[str, str]:
        """This tab's settings as query parameters (only those that differ from the defaults)."""
        return self.url.encode(self)

    def apply_url(self, query: dict[str, Any]) -> list[str]:
        """Apply a link's settings; returns (and shows as :attr:`notice`) what was clamped or ignored."""
        messages = self.url.apply(self, query)
        if messages:
            self.notice = "Link settings: " + "; ".join(messages)
        return messages

    def close(self, timeout: float = 60.0) -> None:
        """Cancel and join background jobs (the browser session ended)."""
        self.jobs.close(timeout)

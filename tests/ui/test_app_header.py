"""The header's busy indicator belongs to its session: it follows the background jobs of that
session's tabs, not Panel's process-wide ``pn.state.busy`` (which every visitor's callbacks drive,
and whose indicators outlive their sessions in Panel's global list, edited from worker threads
after their documents are gone: "Using the unlocked decorator when running inside a thread")."""

from __future__ import annotations

import threading
import time

import panel as pn

import pocoviz.ui.app as app_module
from pocoviz.controllers.base import Controller


class _Work(Controller):
    def snapshot(self):
        return None


class _View(pn.viewable.Viewer):
    def __init__(self, folder):
        super().__init__()
        self.controller = _Work()

    def __panel__(self):
        return pn.pane.Markdown("work")


def _header_spinner(template) -> pn.indicators.LoadingSpinner:
    found = [obj for obj in template.header if "pocoviz-header-busy" in (obj.css_classes or [])]
    assert len(found) == 1, template.header
    return found[0]


def _until(predicate, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_the_header_spinner_follows_this_sessions_jobs_only(monkeypatch, tmp_path):
    views: list[_View] = []

    def make(folder):
        views.append(_View(folder))
        return views[-1]

    monkeypatch.setattr(app_module, "TABS", [("Work", make)])
    before = len(pn.state._indicators)
    first, second = app_module.create_app(tmp_path), app_module.create_app(tmp_path)
    assert first.busy_indicator is None and second.busy_indicator is None
    assert len(pn.state._indicators) == before  # nothing joins Panel's global list of indicators
    spin1, spin2 = _header_spinner(first), _header_spinner(second)
    assert len(views) == 2 and spin1.value is False

    release = threading.Event()
    job = views[0].controller.jobs.start("work", lambda job: release.wait(10))
    try:
        assert _until(lambda: spin1.value is True), "the header does not show its session's running job"
        assert spin2.value is False, "another session's header spins with this session's job"
    finally:
        release.set()
    assert job.wait(10)
    assert _until(lambda: spin1.value is False), "the header still spins after the job ended"
    for view in views:
        view.controller.close()

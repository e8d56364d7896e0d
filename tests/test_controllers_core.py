"""The primitives every tab's controller shares: one LRU cache type, one background-job runner,
one URL-state codec (pocoviz.controllers)."""

from __future__ import annotations

import threading
import time

import param
import pytest

from pocoviz.controllers import Cancelled, Controller, JobRunner, LRUCache, UrlField, UrlState


# ---------------------------------------------------------------------------------------- cache
def test_lru_cache_evicts_least_recently_used_and_creates_once():
    cache: LRUCache[int] = LRUCache(2)
    calls = []
    assert cache.get_or_create("a", lambda: calls.append("a") or 1) == 1
    assert cache.get_or_create("a", lambda: calls.append("a") or 99) == 1
    cache.put("b", 2)
    cache.get("a")  # a is now newer than b
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    assert calls == ["a"]
    with pytest.raises(ValueError):
        LRUCache(0)


# ---------------------------------------------------------------------------------------- jobs
def test_newest_job_wins_and_superseded_results_are_never_delivered():
    runner = JobRunner("t")
    release = threading.Event()
    delivered = []

    def slow(job):
        while not release.is_set():
            job.report(message="waiting")  # raises Cancelled once superseded
            time.sleep(0.005)
        return "slow"

    first = runner.start("lane", slow, on_done=lambda j: delivered.append(j.result))
    time.sleep(0.05)
    middle = runner.start("lane", lambda job: "middle", on_done=lambda j: delivered.append(j.result))
    last = runner.start("lane", lambda job: "last", on_done=lambda j: delivered.append(j.result))
    assert first.wait(5) and middle.wait(5) and last.wait(5)
    assert first.state == "cancelled" and middle.state == "cancelled" and last.state == "done"
    assert delivered == ["last"]
    runner.close()


def test_lanes_run_side_by_side_and_report_progress():
    runner = JobRunner("t")
    gate = threading.Event()

    def work(job):
        job.report(0.5, "half")
        gate.wait(5)
        return 7

    a = runner.start("a", work)
    b = runner.start("b", lambda job: 8)
    assert b.wait(5) and b.result == 8
    time.sleep(0.05)
    status = runner.status()
    assert status["a"]["progress"] == 0.5 and status["a"]["message"] == "half" and "b" not in status
    assert runner.busy("a") and not runner.busy("b")
    gate.set()
    assert a.wait(5) and a.result == 7 and runner.wait_idle(5)
    runner.close()


def test_failures_are_reported_and_close_joins_non_daemon_threads():
    runner = JobRunner("t")
    job = runner.start("x", lambda j: 1 / 0, on_done=lambda j: None)
    assert job.wait(5) and job.state == "failed" and isinstance(job.error, ZeroDivisionError)
    started = threading.Event()
    names = []

    def forever(j):
        names.append((threading.current_thread().name, threading.current_thread().daemon))
        started.set()
        while True:
            j.check()
            time.sleep(0.005)

    long = runner.start("y", forever)
    assert started.wait(5)
    runner.close(timeout=5)
    assert long.state == "cancelled" and names == [("t-y", False)]
    assert not any(t.name.startswith("t-") for t in threading.enumerate())
    after = runner.start("y", lambda j: 1)  # a closed runner starts nothing
    assert after.cancelled and after.wait(0)


def test_cancel_stops_a_job_at_its_next_report():
    runner = JobRunner("t")
    seen = []

    def loop(job):
        for i in range(1000):
            job.report(i / 1000)
            seen.append(i)
            time.sleep(0.002)

    job = runner.start("x", loop)
    time.sleep(0.05)
    runner.cancel("x")
    assert job.wait(5) and job.state == "cancelled" and 0 < len(seen) < 1000
    with pytest.raises(Cancelled):
        job.check()
    runner.close()


# ---------------------------------------------------------------------------------------- URL state
class Demo(Controller):
    url_fields = (
        UrlField("source", "src"),
        UrlField("cursor", "t", clamp=lambda self, v: min(v, self.length - 1)),
        UrlField("speed", "speed"),
        UrlField("names", "names"),
        UrlField("flag", "flag"),
        UrlField("text", "q"),
    )
    source = param.Selector(default="demo", objects=["demo", "worm.h5", "7"])
    cursor = param.Integer(default=48, bounds=(0, None))
    speed = param.Number(default=1.0, bounds=(0.1, 10.0))
    names = param.ListSelector(default=[], objects=["AVAL", "AVAR", "a,b"])
    flag = param.Boolean(default=False)
    text = param.String(default="")
    length = 1500

    def snapshot(self):
        return {}


def test_url_round_trip_writes_only_changed_values():
    c = Demo()
    assert c.url_query() == {}
    c.param.update(source="worm.h5", cursor=900, speed=2.5, names=["AVAR", "AVAL"], flag=True, text="0-3, 17")
    q = c.url_query()
    assert q == {"src": "worm.h5", "t": "900", "speed": "2.5", "names": "AVAR,AVAL", "flag": "true", "q": "0-3, 17"}
    d = Demo()
    assert d.apply_url(q) == [] and d.notice == ""
    assert (d.source, d.cursor, d.speed, d.names, d.flag, d.text) == ("worm.h5", 900, 2.5, ["AVAR", "AVAL"], True, "0-3, 17")
    d.names = ["a,b"]  # a choice with a comma is written as JSON
    e = Demo()
    e.apply_url(d.url_query())
    assert e.names == ["a,b"]


@pytest.mark.parametrize(
    "query, attr, expected, says",
    [
        ({"t": "1e309"}, "cursor", 48, "finite"),
        ({"t": "10^30"}, "cursor", 48, "not a number"),
        ({"t": "-5"}, "cursor", 0, "below 0"),
        ({"t": "1000000"}, "cursor", 1499, None),
        ({"t": "12.7"}, "cursor", 13, "whole number"),
        ({"t": 17}, "cursor", 17, None),  # already parsed by Panel
        ({"speed": "99"}, "speed", 10.0, "above 10"),
        ({"speed": "nan"}, "speed", 1.0, "finite"),
        ({"src": "../../etc/passwd"}, "source", "demo", "not one of the choices"),
        ({"src": 7}, "source", "7", None),
        ({"names": "['AVAL', 'nope']"}, "names", ["AVAL"], "unknown 'nope'"),
        ({"names": '["AVAR"]'}, "names", ["AVAR"], None),
        ({"flag": "maybe"}, "flag", False, "true or false"),
        ({"q": "x" * 5000}, "text", "", "longer than"),
    ],
)
def test_bad_link_values_are_clamped_or_ignored_with_a_message(query, attr, expected, says):
    c = Demo()
    messages = c.apply_url(query)
    assert getattr(c, attr) == expected
    if says is None:
        assert all("ignored" not in m for m in messages)
    else:
        assert any(says in m for m in messages), messages
        assert c.notice.startswith("Link settings:")


def test_url_keys_must_be_unique_and_foreign_keys_are_kept():
    with pytest.raises(ValueError):
        UrlState([("a", "k"), ("b", "k")])
    c = Demo(cursor=5)
    assert c.url.merge_into({"tab": "1", "t": "900", "other": "x"}, c) == {"tab": "1", "other": "x", "t": "5"}
    c.cursor = 48  # back to the default: the key leaves the URL
    assert c.url.merge_into({"t": "5"}, c) == {}


def test_controller_busy_follows_its_jobs():
    c = Demo()
    gate = threading.Event()
    c.jobs.start("x", lambda j: gate.wait(5))
    deadline = time.monotonic() + 5
    while not c.busy and time.monotonic() < deadline:
        time.sleep(0.005)
    assert c.busy
    gate.set()
    c.jobs.wait_idle(5)
    deadline = time.monotonic() + 5
    while c.busy and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not c.busy
    c.close()

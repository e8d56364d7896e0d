"""The served app's event loop: a write to a websocket whose browser has left is not a traceback
(issue 15, defect 10); every other unretrieved task error still is."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from pocoviz.serving import ignore_writes_to_closed_websockets

pytest.importorskip("tornado")


def _leave_unretrieved(exc: BaseException) -> None:
    """Run a task that fails with ``exc`` and drop it without awaiting: asyncio reports it when the
    task is collected ("Task exception was never retrieved")."""

    async def main() -> None:
        assert ignore_writes_to_closed_websockets()

        async def write() -> None:
            raise exc

        task = asyncio.ensure_future(write())
        await asyncio.sleep(0.01)
        assert task.done()
        del task
        gc.collect()

    asyncio.run(main())


def _unretrieved_reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.getMessage()]


@pytest.mark.parametrize("kind", ["WebSocketClosedError", "StreamClosedError"])
def test_a_write_to_a_closed_websocket_is_not_a_traceback(kind, caplog):
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    exc = WebSocketClosedError() if kind == "WebSocketClosedError" else StreamClosedError()
    with caplog.at_level(logging.INFO):
        _leave_unretrieved(exc)
    assert _unretrieved_reports(caplog) == []
    assert any(r.name == "pocoviz.serving" and "closed websocket" in r.getMessage() for r in caplog.records)


def test_other_unretrieved_task_errors_are_still_reported(caplog):
    with caplog.at_level(logging.INFO):
        _leave_unretrieved(ValueError("a real bug"))
    assert len(_unretrieved_reports(caplog)) == 1


def test_not_installed_without_a_running_loop():
    assert ignore_writes_to_closed_websockets() is False

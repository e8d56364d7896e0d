"""Applying results on the session's event loop (the background jobs themselves are
:class:`pocoviz.controllers.JobRunner`'s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def on_loop(doc: Any, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the session's event loop (Bokeh edits need the document lock); directly when
    not served (tests, notebooks)."""
    if doc is None or doc.session_context is None:
        fn()
    else:
        doc.add_next_tick_callback(fn)

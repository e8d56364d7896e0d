"""Bokeh's property-validation switch made per thread.

Bokeh turns validation off with ``with validate(False): ...``, which saves the process-wide flag
``Property._should_validate``, clears it, and restores the saved value on exit. HoloViews does this
around every ColumnDataSource update. With Panel's worker threads (``--num-threads``) two such
blocks can interleave: A saves True and clears; B saves False; A restores True; B restores False.
Validation then stays off for the whole server, and with it the conversions that only run when
validation rejects a value: ``figure(title="...")`` keeps the bare string instead of making a
``Title``, and every later session fails with "'str' object has no attribute 'text_font_size'".

:func:`install` replaces the switch by a per-thread one: ``validate(False)`` turns validation off
in the calling thread only, and Panel's process-wide setting (``pn.config.disable_validation``,
which writes ``Property._should_validate``) still holds everywhere.
"""

from __future__ import annotations

import sys
import threading

from bokeh.core.property import bases, validation

_ORIGINAL = validation.validate
_LOCAL = threading.local()


def validation_on() -> bool:
    """Whether Bokeh validates property values in this thread."""
    return bases.Property._should_validate and not getattr(_LOCAL, "off", False)


class validate:  # noqa: N801 (stands in for bokeh's class of this name)
    """``bokeh.core.property.validation.validate`` for the calling thread only: usable as a call
    (``validate(False)``) or as a context manager that restores this thread's previous state."""

    def __init__(self, value: bool) -> None:
        self.old = getattr(_LOCAL, "off", False)
        _LOCAL.off = not value

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        _LOCAL.off = self.old


def install() -> None:
    """Use the per-thread switch in Bokeh and in every module that imported Bokeh's ``validate``
    by name (HoloViews' plotting modules among them). Idempotent."""
    import holoviews.plotting.bokeh  # noqa: F401 (its modules hold their own reference to validate)

    bases.validation_on = validation_on
    for module in list(sys.modules.values()):
        if getattr(module, "validate", None) is _ORIGINAL:
            module.validate = validate

"""Bokeh's validation switch, interleaved across threads as Panel's worker threads do (CI failure
of stop 20: validation stuck off, every later figure got a bare-string title)."""

import threading

import pytest
from bokeh.core.property import bases, validation
from bokeh.models import Title
from bokeh.plotting import figure

import pocoviz.ui  # noqa: F401 (installs the per-thread switch)
from pocoviz.ui import bokeh_validation


def _interleave(validate):
    """A enters validate(False), B enters, A leaves, B leaves; returns what a figure made in a
    third thread while A and B were inside got as its title."""
    a_in, b_in, a_out, titled = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with validate(False):
            a_in.set()
            b_in.wait(5)
            titled.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with validate(False):
            b_in.set()
            a_out.wait(5)

    def c():
        b_in.wait(5)
        seen["title"] = figure(title="made while others had validation off").title
        titled.set()

    threads = [threading.Thread(target=f) for f in (a, b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen["title"]


def test_the_installed_switch_is_bokehs_and_holoviews():
    from holoviews.plotting.bokeh import graphs, plot

    assert validation.validate is bokeh_validation.validate
    assert plot.validate is bokeh_validation.validate and graphs.validate is bokeh_validation.validate
    assert bases.validation_on is bokeh_validation.validation_on


def test_interleaved_blocks_leave_validation_on_and_other_threads_unaffected():
    title = _interleave(validation.validate)
    assert isinstance(title, Title) and title.text == "made while others had validation off"
    assert bases.validation_on()
    assert isinstance(figure(title="after").title, Title)


def test_bokehs_own_switch_loses_validation_when_interleaved():
    """The failure the per-thread switch prevents, shown with Bokeh's original class (so this
    test fails if a Bokeh release makes the original safe and the workaround can go)."""
    original_on = bokeh_validation.bases.validation_on
    try:
        bases.validation_on = lambda: bases.Property._should_validate
        _interleave(bokeh_validation._ORIGINAL)
        assert bases.Property._should_validate is False
        with pytest.raises(AttributeError, match="text_font_size"):
            figure(title="plain").title.text_font_size = "12px"
    finally:
        bases.Property._should_validate = True
        bases.validation_on = original_on


def test_a_thread_keeps_its_own_state_and_the_process_setting_still_holds():
    with validation.validate(False):
        assert not bases.validation_on()
        with validation.validate(True):
            assert bases.validation_on()
        assert not bases.validation_on()
    assert bases.validation_on()
    bases.Property._should_validate = False  # what pn.config.disable_validation = True does
    try:
        assert not bases.validation_on()
    finally:
        bases.Property._should_validate = True

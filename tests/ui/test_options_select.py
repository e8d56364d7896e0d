"""A pick among options the widget no longer has (the 20-session load test: a region of the
previous session chosen as the session changed) is dropped, not a server traceback."""

from __future__ import annotations

import panel as pn

from pocoviz.ui.base import OptionsSelect
from pocoviz.ui.recordings import RecordingsView


def test_a_stale_choice_is_ignored_and_a_current_one_taken():
    w = OptionsSelect(options=["tectum", "habenula"], value="tectum")
    w.param.update(options=["M2", "V1"], value="M2")  # another session's regions (the controller sets both)
    w._process_events({"value": "habenula"})  # what Panel's Select raised "habenula not in list" for
    assert w.value == "M2"
    w._process_events({"value": "V1"})
    assert w.value == "V1"
    plain = pn.widgets.Select(options=["M2", "V1"], value="M2")
    try:
        plain._process_events({"value": "habenula"})
        raised = False
    except ValueError:
        raised = True
    assert raised  # Panel's own Select: the failure this class prevents (drop the class when this fails)


def test_the_tabs_selects_are_options_selects():
    view = RecordingsView()
    layout = view.__panel__()
    selects = [w for w in layout.select(pn.widgets.Select) if "pocoviz-region" in w.css_classes or "pocoviz-session" in w.css_classes]
    assert len(selects) == 2 and all(isinstance(w, OptionsSelect) for w in selects)
    view.close()

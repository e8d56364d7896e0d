"""The Sequence memory tab's view without a browser: it draws its controller's snapshot (the numbers
are tested on the controller, tests/test_seqmem_controller.py), its number boxes show their bounds
and the value actually used, the preset selector follows the settings, and its figures are readable
(titles that fit, legends off the data)."""

from __future__ import annotations

import numpy as np
import panel as pn
import pytest
from bokeh.models import Legend

from pocoviz.ui.seqmem import SeqMemView
from tests.ui.helpers import wait_for


@pytest.fixture(scope="module")
def view():
    v = SeqMemView()
    assert v.controller.wait_settled()
    yield v
    v.close()


def by_class(view: SeqMemView, css: str):
    found = view.__panel__().select(lambda o: css in (getattr(o, "css_classes", None) or []))
    assert found, css
    return found[0]


def figures(view: SeqMemView):
    return [o.object for o in view.__panel__().select(pn.pane.Bokeh)]


def test_the_view_draws_the_current_frame(view):
    view.controller.t = 7
    fr = view.controller.snapshot().frame
    images = {f.css_classes[0]: f.renderers[0].data_source.data for f in figures(view) if f.renderers}
    np.testing.assert_array_equal(images["pocoviz-sm-target"]["image"][0], fr.images[0])
    np.testing.assert_array_equal(images["pocoviz-sm-heat"]["image"][0], fr.heat)
    np.testing.assert_array_equal(images["pocoviz-sm-errors"]["errors"], fr.errors)
    readout = by_class(view, "pocoviz-sm-readout").object
    assert "step <b>7</b> / 41" in readout and "recall perfect so far" in readout


def test_number_boxes_show_their_bounds_and_the_value_used(view):
    """Issue 15, defect 7: P = 5000 typed in its box was silently ignored."""
    box = by_class(view, "pocoviz-sm-P")
    assert "[2–400]" in box.label and box.start is None and box.end is None  # the browser passes any value on
    box.value = 5000
    wait_for(lambda: box.value == 400, 10, "the box to show the value used")
    assert view.controller.P == 400
    assert by_class(view, "pocoviz-sm-notice").object == "P = 5000 is above the maximum 400: using 400"
    box.value = -3
    wait_for(lambda: box.value == 2, 10, "the box to show the value used")
    assert "below the minimum 2" in by_class(view, "pocoviz-sm-notice").object
    box.value = 40
    assert view.controller.P == 40 and by_class(view, "pocoviz-sm-notice").object == ""
    assert view.controller.wait_settled()


def test_the_preset_selector_says_custom_once_a_setting_differs(view):
    """Issue 15, defect 7: a preset's name stayed selected after its settings changed."""
    select = by_class(view, "pocoviz-sm-preset")
    select.value = "Fig. 1: SeqNet fails (N 300, P 100)"
    assert view.controller.N == 300 and by_class(view, "pocoviz-sm-P").value == 100
    by_class(view, "pocoviz-sm-seed").value = 4
    assert select.value == "custom" and view.controller.seed == 4
    assert view.controller.wait_settled()


def test_titles_fit_and_legends_sit_outside_the_data(view):
    """Issue 15, defect 6: cut-off titles (the correlated-patterns title ran past its figure) and
    legends drawn over the data."""
    assert view.controller.wait_settled()
    figs = {f.css_classes[0]: f for f in figures(view)}
    for name in ("pocoviz-sm-capacity", "pocoviz-sm-correlated", "pocoviz-sm-timing"):
        f = figs[name]
        assert len(f.title.text) * 6.6 <= f.width - 40, f.title.text  # 12 px bold: about 6.6 px a character
        assert [r for r in f.below if isinstance(r, Legend)] and not [r for r in f.center if isinstance(r, Legend)], name
    assert figs["pocoviz-sm-heat"].yaxis[0].ticker.desired_num_ticks <= 6

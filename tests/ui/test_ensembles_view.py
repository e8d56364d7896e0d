"""The Ensembles tab's view without a browser: it draws its controller's snapshot (the numbers are
tested on the controller, tests/test_ensembles_controller.py), readably: log axes with explicit
ranges and tick labels, legends off the data, titles that fit."""

from __future__ import annotations

import numpy as np
import panel as pn
import pytest
from bokeh.models import Legend, LogAxis, Range1d

from pocoviz.ui.ensembles import EnsemblesView, _fmt, log_ticks


@pytest.fixture(scope="module")
def view():
    v = EnsemblesView()
    assert v.controller.wait_settled()
    yield v
    v.close()


def figures(view: EnsemblesView):
    layout = view.__panel__()
    return [obj.object for obj in layout.select(lambda o: hasattr(o, "object") and type(o.object).__name__ == "figure")]


def test_the_view_draws_the_controllers_snapshot(view):
    snap = view.controller.snapshot()
    vk = snap.theory["vs_K"]
    lines = [r.data_source.data for r in figures(view)[0].renderers if "N" in r.data_source.data]
    for i, data in enumerate(lines):
        np.testing.assert_allclose(data["E"], vk["total"][i], rtol=1e-12)
    assert len(lines) == 3
    panes = {c: o.object for o in view.__panel__().select(pn.pane.HTML) for c in o.css_classes}
    assert "K = 1 optimal" in panes["pocoviz-ens-badge"]
    note = panes["pocoviz-ens-scaling-note"]  # defect 8: the sizes, and per ℓ whether fit and s(ℓ) agree
    assert "P = 100000, D = 16000" in note and note.count("✓") == sum(r.agrees for r in snap.scaling_rows) >= 1
    assert note.count("✗") == sum(not r.agrees for r in snap.scaling_rows) >= 1


def test_log_axes_have_ranges_and_tick_labels_and_legends_sit_below(view):
    """Issue 15, defects 6 and 10: log axes without tick labels (E(K)/E(1) spans less than a decade),
    legends over the data, and empty log axes at start (Bokeh's 'could not determine minimum data
    value for log axis')."""
    figs = figures(view)
    assert len(figs) == 5
    for f in figs:
        for axis, rng in ((f.xaxis[0], f.x_range), (f.yaxis[0], f.y_range)):
            if isinstance(axis, LogAxis):
                assert isinstance(rng, Range1d) and 0 < rng.start < rng.end, f.title.text
                inside = [t for t in axis.ticker.ticks if rng.start <= t <= rng.end]
                assert len(inside) >= 2, (f.title.text, axis.ticker.ticks, rng.start, rng.end)
        legends = [r for r in f.below if isinstance(r, Legend)]
        assert legends and not [r for r in f.center if isinstance(r, Legend)], f.title.text
        assert len(f.title.text) * 6.6 <= f.width - 40, f.title.text  # 12 px bold: about 6.6 px a character


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (1e-5, 0.1, [1e-5, 1e-4, 1e-3, 1e-2, 0.1]),  # decades
        (1.0, 30.0, [1, 2, 5, 10, 20]),  # 1-2-5
        (0.9, 1.6, [1.0, 1.1, 1.3, 1.4]),  # less than a decade: Bokeh's log ticker labels nothing here
        (0.0011, 0.0035, [0.0014, 0.0017, 0.0022, 0.0028]),
    ],
)
def test_log_ticks_give_labels_in_every_range(lo, hi, expected):
    np.testing.assert_allclose(log_ticks(lo, hi), expected)


@pytest.mark.parametrize(("x", "text"), [(4096, "4096"), (512 / 4, "128"), (16000.0, "16000"), (512 / 3, "171"), (0.001, "0.001"), (2.5e-5, "2.5e-05")])
def test_numbers_in_labels_are_written_as_people_read_them(x, text):
    """Issue 15, defect 6: a member size of 4096 was labelled 'N = 4.1e+03'."""
    assert _fmt(x) == text

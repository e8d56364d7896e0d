"""The Transformer limits view without a browser: it draws its controller's snapshots (every sweep
figure, the live run streaming in), with legends beside the data rather than over it, labelled
ticks on every log axis and explicit ranges. The tab's state, jobs and figure data are tested
through the controller in tests/test_limits_controller.py."""

from __future__ import annotations

import pytest
from bokeh.models import FixedTicker, Legend, Range1d

from pocoviz.ui.limits import LimitsView


@pytest.fixture(scope="module")
def view():
    v = LimitsView()
    assert v.controller.jobs.wait_idle(180)
    yield v
    v.close()


def test_every_figure_is_drawn_readably(view):
    """Issue 15 defect 6: no legend over the data (each sits below its plot), a title that fits its
    figure, and tick labels on every log axis; defect 10: explicit ranges everywhere, so Bokeh
    never guesses a log range from no data."""
    snap = view.controller.snapshot()
    figures = {**view._figs, "live": view._f_live}
    assert set(snap.figures) <= set(figures)
    for name, f in figures.items():
        assert isinstance(f.x_range, Range1d) and isinstance(f.y_range, Range1d), name
        assert not [r for r in f.center if isinstance(r, Legend)], f"{name}: a legend inside the plot"
        if name != "live":
            assert f.title.text == snap.figures[name].title and len(f.renderers) >= len(snap.figures[name].series)
            assert [r for r in f.below if isinstance(r, Legend)], f"{name}: no legend"
        # ~6.5 px per character of a 12 px title, the toolbar beside the plot (not above it)
        assert f.toolbar_location == "right" and len(f.title.text) * 6.5 < f.width - 40, (name, f.title.text)
        for axis, scale in ((f.xaxis[0], f.x_scale), (f.yaxis[0], f.y_scale)):
            if type(scale).__name__ == "LogScale":
                rng = f.x_range if axis in f.xaxis else f.y_range
                assert isinstance(axis.ticker, FixedTicker), name
                inside = [t for t in axis.ticker.ticks if rng.start <= t <= rng.end]
                assert len(inside) >= 2 and rng.start > 0, (name, axis.ticker.ticks, rng.start, rng.end)


def test_the_live_run_streams_into_its_figure(view):
    c = view.controller
    c.live_steps = 30
    job = c.start_live()
    assert c.jobs.wait_idle(180) and job.state == "done"
    assert view._live_source.data["step"] == [5, 10, 15, 20, 25, 30]
    assert view._live_source.data["loss"] == list(c.snapshot().live.loss)
    assert 0 < view._f_live.y_range.start < min(c.snapshot().live.loss) and view._f_live.x_range.end == 30
    assert "done: 30 steps" in view._status_pane.object


def test_a_links_clamped_settings_are_shown(view):
    view.controller.apply_url({"lim_N": "1000"})
    assert view._alert.visible and "lim_N=1000 is above 64; using 64" in view._alert.object
    view.controller.notice = ""
    assert not view._alert.visible

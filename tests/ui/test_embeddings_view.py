"""The Embeddings tab's figures without a browser: what the view draws from its controller's
snapshots (layout, colours and their legend or colour bar, hovers, the selection highlight, the
position map's frame), driven through the controller's public methods (issue 15, defect 3)."""

from __future__ import annotations

import threading
import time

import holoviews as hv
import numpy as np
import pytest
from bokeh.models import HoverTool

from pocoviz.ui.embeddings import ALL, EmbeddingsView, unit_colors


@pytest.fixture(scope="module")
def view(ui_data_dir):
    v = EmbeddingsView(str(ui_data_dir))
    v.controller.session = "worm/worm0"
    assert v.controller.wait_idle(120)
    v.refresh()  # what the jobs delivered, drawn in this thread
    yield v
    v.close()


def _glyph_figure(pane_object):
    """A Bokeh figure of what the pane shows now (a static copy: not attached to the view's streams)."""
    return hv.render(pane_object[()] if isinstance(pane_object, hv.DynamicMap) else pane_object, backend="bokeh")


def test_checkpoints_with_unit_embeddings_only(view):
    c = view.controller
    keys = list(c.param.model.objects.values()) if isinstance(c.param.model.objects, dict) else c.param.model.objects
    assert "poco_demo" in keys
    assert "mlp_demo" not in keys and "nlinear_demo" not in keys
    assert "data:models/mismatched" in keys  # a POCO card under the data directory
    assert c.param.session.objects[0] == ALL and "zebrafish/fish0" in c.param.session.objects


def test_layout_and_colours_follow_the_snapshot(view):
    c = view.controller
    snap = c.snapshot()
    data = view.scatter_pipe.data
    np.testing.assert_allclose(np.c_[data["emb_x"], data["emb_y"]], snap.xy)
    assert list(data["region"]) == list(snap.table["region"].values) and view.scatter_caption.object == "UMAP layout of 112 units"
    c.color_by = "label"
    snap = c.snapshot()
    colors = view.scatter_pipe.data["color"]
    for g in set(snap.groups):  # one colour per label
        assert len(set(colors[snap.groups == g])) == 1
    c.reducer = "pca"
    assert view.scatter_caption.object == "PCA layout of 112 units"
    np.testing.assert_allclose(view.scatter_pipe.data["emb_x"], c.snapshot().xy[:, 0])
    c.param.update(color_by="region", reducer="umap")


def test_hovers_show_unit_label_region_session_score_only(view):
    """Defect 3: the tooltip listed internal fields (color, group, emb_x)."""
    tips = []
    for pane in (view.scatter_pane, view.map_pane):
        fig = _glyph_figure(pane.object)
        tips += [[name for name, _ in t.tooltips] for t in fig.tools if isinstance(t, HoverTool)]
    assert tips == [["unit", "label", "region", "session", "score"], ["unit", "label", "region", "session"]]
    assert set(view.scatter_pipe.data["score"]) == {"–"}  # no score yet: a dash, not NaN


def test_legend_lists_the_colours_and_score_gets_a_colour_bar(view):
    """Defect 3: no legend for region/session/dataset/label colours and no colour bar for score."""
    c = view.controller
    snap = c.snapshot()
    colors = unit_colors(snap)
    legend = view.legend.object
    assert "colour: region" in legend
    for name, count in snap.legend:
        color = colors[snap.groups == name][0]
        assert f"<span style='color:{color}'>●</span> {name or '(none)'} <span style='color:#777'>{count}</span>" in legend
    c.color_by = "score"
    assert "per-unit forecast score" in view.legend.object and "linear-gradient" in view.legend.object
    assert c.wait_idle(120)
    view.refresh()
    snap = c.snapshot()
    lo, hi = snap.score_range
    assert f"≤ {lo:.2f}" in view.legend.object and f"≥ {hi:.2f}" in view.legend.object
    data = view.scatter_pipe.data
    best, worst = int(np.nanargmax(snap.scores)), int(np.nanargmin(snap.scores))
    assert data["color"][best] != data["color"][worst] and data["score"][best] == f"{snap.scores[best]:.3f}"
    c.color_by = "region"


def test_progress_of_a_running_job_is_shown(view):
    """Defect 3: score colouring used to stay grey with no sign of progress."""
    c = view.controller
    gate = threading.Event()

    def work(job):
        job.report(0.4, "per-unit forecast scores: worm/worm0 (1 of 1 sessions)")
        gate.wait(10)

    c.jobs.start("test-lane", work)
    try:
        deadline = time.monotonic() + 10
        while c.snapshot().progress.get("test-lane", (None,))[0] != 0.4 and time.monotonic() < deadline:
            time.sleep(0.01)
        view.render_progress(c.snapshot())
        assert view.progress.visible and view.progress.value == 40
        assert "worm/worm0 (1 of 1 sessions) (40%)" in view.status.object
    finally:
        gate.set()
    assert c.wait_idle(20)
    view.render_progress(c.snapshot())
    assert not view.progress.visible


def test_selection_is_a_highlight_in_the_units_colours(view):
    """Defect 3: the selection was drawn as black rings (a black block for a large selection)."""
    c = view.controller
    c.select([3, 7, 20])
    snap = c.snapshot()
    colors = unit_colors(snap)
    marks = view.marks_pipe.data
    np.testing.assert_allclose(marks["emb_x"], snap.xy[[3, 7, 20], 0])
    assert list(marks["color"]) == list(colors[[3, 7, 20]])
    assert set(view.scatter_pipe.data["alpha"]) == {0.25}  # the rest fades
    fig = _glyph_figure(view.scatter_pane.object)
    mark_glyph = fig.renderers[-1].glyph
    assert mark_glyph.fill_alpha == 1.0 and mark_glyph.line_width <= 1.0 and mark_glyph.line_color != "black"
    assert getattr(mark_glyph.fill_color, "field", mark_glyph.fill_color) in ("color", colors[3])  # a column, or one colour for all
    map_marks = view.map_marks_pipe.data
    np.testing.assert_allclose(map_marks["pos_x"], snap.table["x"].values[[3, 7, 20]])
    assert len(view.traces_pipe.data) == 3 and "3 selected" in view.selection_info.object
    c.select_on_map([0, 2])
    rows = snap.map_rows
    assert c.selected == sorted([int(rows[0]), int(rows[2])])
    c.select([])
    assert set(view.scatter_pipe.data["alpha"]) == {1.0} and len(view.marks_pipe.data["emb_x"]) == 0


def test_all_sessions_map_draws_one_frame_with_a_note(view):
    """Defect 3: with all sessions the map mixed every species' coordinate frame on one axis."""
    c = view.controller
    c.session = ALL
    try:
        assert c.wait_idle(120)  # unserved, the jobs' threads draw too: let them finish first
        view.refresh()
        snap = c.snapshot()
        data = view.map_pipe.data
        assert set(data["session"]) == set(snap.map_sessions) and {s.split("/")[0] for s in data["session"]} == {snap.map_dataset}
        assert view.map_caption.object.startswith(f"{snap.map_dataset}: ")
        assert view.map_select.visible and set(view.map_select.options.values()) == {"", *snap.map_datasets}
        assert "other coordinate frames" in view.map_note.object and view.map_note.visible
        c.map_dataset = "mouse"
        assert {s.split("/")[0] for s in view.map_pipe.data["session"]} == {"mouse"}
        ds = snap.table["dataset"].values.astype(str)
        c.select([*np.flatnonzero(ds == "mouse")[:5], *np.flatnonzero(ds == "worm")[:7]])  # marks only in the frame shown
        np.testing.assert_allclose(view.map_marks_pipe.data["pos_x"], snap.table["x"].values[np.flatnonzero(ds == "mouse")[:5]])
        assert len(view.marks_pipe.data["emb_x"]) == 12 and "7 selected units are there" in view.map_note.object
    finally:
        c.param.update(map_dataset="", session="worm/worm0")
        assert c.wait_idle(120)
        view.refresh()
    assert not view.map_select.visible and not view.map_note.visible


def _shaded_parts(pane_object):
    """The Datashader image, the selected units' glyphs and the box stream of a shaded figure."""
    overlay = pane_object[()]
    image = next(el for el in overlay if isinstance(el, hv.RGB))
    marks = next(el for el in overlay if isinstance(el, hv.Points))
    source = pane_object.callback.inputs[0]
    boxes = [s for s in hv.streams.Stream.registry.get(source, []) if isinstance(s, hv.streams.BoundsXY)]
    return image, marks, boxes


def test_large_sets_go_through_datashader_and_a_box_selects(view, monkeypatch):
    """Issue 16: above DATASHADE_ABOVE units the layout and the map are Datashader images; a box
    drawn on either selects the units inside it (linked: marked on both, traces shown)."""
    import pocoviz.ui.embeddings as mod

    c = view.controller
    monkeypatch.setattr(mod, "DATASHADE_ABOVE", 50)  # worm0 has 112 units
    view.render(c.snapshot())
    c.reducer = "pca"  # a new layout revision: redrawn
    assert view.scatter_pane.object is not view.scatter_figure
    image, marks, boxes = _shaded_parts(view.scatter_pane.object)
    alpha = np.asarray(image.dimension_values(image.vdims[-1], flat=False))
    assert isinstance(image, hv.RGB) and (alpha > 0).sum() > 50  # points drawn into the image
    assert len(marks) == 0 and len(boxes) == 1
    xy = c.snapshot().xy
    left, bottom = xy.min(axis=0) - 1
    right, top = np.median(xy, axis=0)
    inside = np.flatnonzero((xy[:, 0] <= right) & (xy[:, 1] <= top))
    assert 0 < len(inside) < len(xy)
    boxes[0].event(bounds=(left, bottom, right, top))  # what the browser's box-select sends
    assert c.selected == inside.tolist()
    view.refresh()
    image, marks, boxes = _shaded_parts(view.scatter_pane.object)
    np.testing.assert_allclose(np.c_[marks["emb_x"], marks["emb_y"]], xy[inside])
    # the map is shaded too, and shows the same selection; a box there selects by position
    m_image, m_marks, m_boxes = _shaded_parts(view.map_pane.object)
    snap = c.snapshot()
    emb, rows = snap.table, snap.map_rows
    on_map = rows[np.isin(rows, inside)]
    np.testing.assert_allclose(np.sort(m_marks["pos_x"]), np.sort(emb["x"].values[on_map]))
    pos = np.c_[emb["x"].values[rows], emb["y"].values[rows]]
    x_mid = float(np.median(pos[:, 0]))
    m_boxes[0].event(bounds=(x_mid, pos[:, 1].min() - 1, pos[:, 0].max() + 1, pos[:, 1].max() + 1))
    assert c.selected == sorted(rows[pos[:, 0] >= x_mid].tolist())
    c.select([])
    monkeypatch.setattr(mod, "DATASHADE_ABOVE", 20_000)
    c.reducer = "umap"
    assert view.scatter_pane.object is view.scatter_figure and view.map_pane.object is view.map_figure


def test_session_embeddings_panel(view):
    plot = view.sessions_pane.object
    points = next(el for el in plot if isinstance(el, hv.Points))
    assert list(points.dimension_values("session")) == [s.name for s in view.controller.loaded_model.sessions]
    assert set(points.dimension_values("dataset")) == {"zebrafish", "mouse", "worm"}


def test_duplicated_labels_keep_their_colour_and_are_marked(tmp_path, monkeypatch):
    """A checkpoint whose worm session names URADL twice: the table flags both rows, colouring by
    label gives both URADL's colour, hovers and the selection say they are duplicates."""
    import pocoviz.controllers.embeddings as ctrl_mod
    from pocoviz.forecast import SessionInfo, build_model, save_model

    labels = ("URADL", "AVAL", "URADL", "", "AVAR", "RIML")
    poco = build_model("POCO", [SessionInfo("worm/dup", 6, "worm", labels=labels)], dim=16, hidden=32, self_heads=2, dim_head=8)
    save_model(poco, tmp_path / "models" / "dup")
    monkeypatch.setattr(ctrl_mod, "embedding_models", lambda data_dir: {"dup": "data:models/dup"})
    monkeypatch.setattr(ctrl_mod.EmbeddingsController, "_umap_job", lambda self, st, job: None)  # no UMAP of 6 points
    v = EmbeddingsView(str(tmp_path))
    try:
        c = v.controller
        assert c.wait_idle(60)
        v.refresh()
        assert c.table["label_duplicate"].values.tolist() == [True, False, True, False, False, False]
        c.color_by = "label"
        data = v.scatter_pipe.data
        assert data["color"][0] == data["color"][2] != data["color"][1]
        assert list(data["label"]) == ["URADL (dup #0)", "AVAL", "URADL (dup #2)", "", "AVAR", "RIML"]
        c.select([0, 1])
        assert "duplicated label: URADL in worm/dup (units 0, 2)" in v.selection_info.object
        c.select([1, 4])
        assert "duplicated" not in v.selection_info.object
    finally:
        v.close()


def test_separation_text_and_figures_follow_the_snapshot(view):
    snap = view.controller.snapshot()
    sep = snap.separation
    assert f"{sep['score']:.4f}" in view.separation.object and "200 label shuffles" in view.separation.object
    assert view.null_pipe.data is sep and view.heat_pipe.data is sep["matrix"]
    null = view.null_pane.object[()]  # histogram of the shuffles, the observed score and the 95th percentile
    spikes = [el for el in null if isinstance(el, hv.Spikes)]
    assert [float(s.dimension_values(0)[0]) for s in spikes] == [sep["score"], sep["null_p95"]]

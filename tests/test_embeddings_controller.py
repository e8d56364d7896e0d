"""The Embeddings tab's controller without a browser or Panel: layouts and scores as jobs with
progress, colour legends, the selection and its link, one coordinate frame on the position map
(issue 15, defect 3), the separation test against the library."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from pocoviz.controllers.embeddings import (
    ALL,
    SCORE_CACHE,
    EmbeddingsController,
    category_order,
    encode_rows,
    parse_rows,
)
from pocoviz.controllers.urlstate import UrlValueError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ctrl():
    c = EmbeddingsController()
    c.session = "worm/worm0"
    assert c.wait_idle(120)
    yield c
    c.close()


def test_a_table_per_choice_of_sessions_and_layouts_from_jobs(ctrl):
    snap = ctrl.snapshot()
    assert snap.model == "poco_demo" and snap.session == "worm/worm0" and snap.error == ""
    assert snap.table.sizes["unit"] == 112 and set(snap.table["session"].values) == {"worm/worm0"}
    assert {"pca", "umap"} <= set(snap.layouts_ready) and snap.layout == "umap"
    ctrl.reducer = "pca"
    snap = ctrl.snapshot()
    assert snap.layout == "pca" and snap.xy.shape == (112, 2)
    ctrl.reducer = "umap"
    assert not snap.progress  # nothing left running


def test_torch_umap_runs_when_chosen_and_reports_progress(ctrl):
    from pocoviz.controllers.embeddings import on_gpu
    from pocoviz.embeddings import torch_umap_layout

    if not on_gpu():  # on a CPU it costs seconds: only computed when asked for
        assert "umap-torch" not in ctrl.snapshot().layouts_ready
    ctrl.reducer = "umap-torch"
    seen = []
    while ctrl.busy or not seen:
        seen.append(ctrl.snapshot().progress.get("umap-torch"))
        if "umap-torch" in ctrl.snapshot().layouts_ready:
            break
        time.sleep(0.01)
    assert ctrl.wait_idle(120)
    snap = ctrl.snapshot()
    assert snap.layout == "umap-torch" and "torch UMAP" in snap.status
    if not on_gpu():  # deterministic on the CPU: the same layout as the library's
        np.testing.assert_array_equal(snap.xy, torch_umap_layout(snap.table["embedding"].values, seed=0))
    ctrl.reducer = "umap"
    assert "torch UMAP" not in ctrl.snapshot().status


def test_legend_lists_every_colour_category_with_counts(ctrl):
    """Defect 3: a legend for region/session/dataset/label colours."""
    for color_by in ("region", "session", "dataset", "label"):
        ctrl.color_by = color_by
        snap = ctrl.snapshot()
        names = [c for c, _ in snap.legend]
        assert names == category_order(snap.groups, color_by) and sum(n for _, n in snap.legend) == 112
        assert dict(snap.legend) == {g: int((snap.groups == g).sum()) for g in set(snap.groups)}
        if "" in names:
            assert names[-1] == ""  # unknown last (grey)
    ctrl.color_by = "region"


def test_colour_by_score_reports_progress_shows_sessions_as_they_finish_and_caches():
    """Defect 3: score colouring used to stay grey for up to 2 minutes with no progress. Now the
    scores job says which session it computes and how far it is, smallest sessions first, and each
    session's scores show as soon as they are done; a second browser session gets them at once."""
    from pocoviz.forecast import ForecastCorpus, evaluate

    SCORE_CACHE.clear()
    c = EmbeddingsController()
    try:
        assert c.wait_idle(120) and c.session == ALL
        n = c.table.sizes["unit"]
        assert c.snapshot().scores_done == 0  # computed only once asked for
        c.color_by = "score"
        seen = []
        while c.jobs.busy("scores"):
            snap = c.snapshot()
            if "scores" in snap.progress:
                seen.append((snap.progress["scores"], snap.scores_done))
            time.sleep(0.02)
        messages = [m for (_, m), _ in seen]
        assert any("worm/" in m and "of 9 sessions" in m for m in messages), messages[:3]
        assert any(0 < done < n for _, done in seen)  # partial colours while the rest is computed
        assert any(p is not None and 0 < p < 1 for (p, _), _ in seen)
        snap = c.snapshot()
        assert snap.scores_done == int(np.isfinite(snap.scores).sum()) and snap.score_range is not None
        assert snap.legend == ()  # a colour bar, not categories
        lo, hi = snap.score_range
        assert lo < hi
        rows = np.flatnonzero(snap.table["session"].values == "worm/worm1")
        rec = c.recordings["worm/worm1"]
        corpus = ForecastCorpus({"worm/worm1": rec}, strides={"train": 1, "val": 4, "test": 4})
        want = evaluate(c.loaded_model, corpus, "test", device="cpu").session("worm/worm1").per_unit_score
        np.testing.assert_allclose(snap.scores[rows], want, rtol=1e-6)
    finally:
        c.close()
    d = EmbeddingsController()
    try:
        d.wait_idle(120)
        t0 = time.perf_counter()
        d.color_by = "score"
        assert d.wait_idle(30) and time.perf_counter() - t0 < 5  # cached for every browser session
        assert d.snapshot().scores_done == snap.scores_done
    finally:
        d.close()


def test_all_sessions_map_one_coordinate_frame_at_a_time():
    """Defect 3: with all sessions the position map mixed every species' coordinate frame on one
    axis. It shows one frame (dataset) and says where the other units are; it follows the selection
    unless a frame is chosen."""
    c = EmbeddingsController()
    try:
        snap = c.snapshot()
        emb = snap.table
        assert snap.session == ALL and set(snap.map_datasets) == {"zebrafish", "mouse", "worm"}
        ds = emb["dataset"].values.astype(str)
        assert set(ds[snap.map_rows]) == {snap.map_dataset} and len(snap.map_rows) == int((ds == snap.map_dataset).sum())
        others = set(snap.map_datasets) - {snap.map_dataset}
        assert all(o in snap.map_note for o in others) and "other coordinate frames" in snap.map_note
        mouse = np.flatnonzero(ds == "mouse")[:30]
        c.select(mouse)
        snap = c.snapshot()
        assert snap.map_dataset == "mouse" and set(ds[snap.map_rows]) == {"mouse"}
        c.map_dataset = "worm"  # chosen: stays, and says where the selection is
        snap = c.snapshot()
        assert snap.map_dataset == "worm" and "30 selected units are there" in snap.map_note
        c.select_on_map([0, 1])
        assert c.selected == [int(snap.map_rows[0]), int(snap.map_rows[1])]
        c.select(range(0, 4000, 2))  # 2000 scattered rows: too long for a link, kept on screen
        assert len(c.selected) == 2000 and c.selection == "" and "emb_sel" not in c.url_query()
        assert "too many units to keep in the link" in c.snapshot().selection_text
        c.session = "worm/worm0"  # one session: its own frame, no note
        snap = c.snapshot()
        assert snap.map_datasets == ("worm",) and snap.map_note == "" and len(snap.map_rows) == 112
    finally:
        c.close()


def test_selection_text_traces_and_the_link(ctrl):
    ctrl.select([3, 7, 20, 500])  # 500 is beyond worm0's 112 units
    snap = ctrl.snapshot()
    assert snap.selected == (3, 7, 20) and "3 selected" in snap.selection_text
    assert [t.row for t in snap.traces] == [3, 7, 20]
    rec = ctrl.recordings["worm/worm0"]
    np.testing.assert_allclose(snap.traces[1].activity, rec["activity"].values[:, int(snap.table["unit_index"].values[7])])
    ctrl.color_by = "session"
    query = ctrl.url_query()
    assert query == {"emb_model": "poco_demo", "emb_session": "worm/worm0", "emb_color": "session", "emb_sel": "3,7,20"}
    other = EmbeddingsController()
    try:
        assert other.apply_url({"tab": "2", **query}) == []
        assert other.session == "worm/worm0" and other.color_by == "session" and other.selected == [3, 7, 20]
        assert other.url_query() == query
    finally:
        other.close()
        ctrl.color_by = "region"
        ctrl.select([])
    assert ctrl.url_query() == {"emb_model": "poco_demo", "emb_session": "worm/worm0"}


@pytest.mark.parametrize(
    "query, says",
    [
        ({"emb_sel": "3,x"}, "not a unit row"),
        ({"emb_sel": "100-130"}, "beyond the 112 units"),
        ({"emb_color": "mood"}, "not one of the choices"),
        ({"emb_session": "worm/nope"}, "not one of the choices"),
    ],
)
def test_bad_link_values_are_ignored_or_clamped_with_a_message(ctrl, query, says):
    other = EmbeddingsController()
    try:
        messages = other.apply_url({"emb_session": "worm/worm0", **query})
        assert any(says in m for m in messages), messages
        assert other.notice.startswith("Link settings:")
        if query.get("emb_sel") == "100-130":
            assert other.selected == list(range(100, 112))
    finally:
        other.close()


@pytest.mark.parametrize(
    "rows, text", [([], ""), ([5], "5"), ([0, 1, 2, 3, 17], "0-3,17"), ([9, 2, 3, 2], "2-3,9"), ([1, 3, 4, 5, 7], "1,3-5,7")]
)
def test_rows_round_trip_as_link_text(rows, text):
    assert encode_rows(rows) == text
    assert parse_rows(text) == sorted(set(rows))


def test_rows_text_that_is_not_rows_raises():
    with pytest.raises(UrlValueError, match="not a range"):
        parse_rows("9-3")
    with pytest.raises(UrlValueError, match="not a unit row"):
        parse_rows("a-b")


def test_separation_numbers_match_the_library(ctrl):
    from pocoviz.embeddings import region_separation, unit_embeddings

    snap = ctrl.snapshot()
    assert snap.separation_state == "done"
    sep = snap.separation
    emb = unit_embeddings(ctrl.loaded_model, ["worm/worm0"], recordings=ctrl.recordings)
    keep = emb["region"].values != ""
    ref = region_separation(emb["embedding"].values[keep], emb["region"].values[keep], n_shuffles=200, seed=0)
    assert sep["score"] == pytest.approx(ref["score"]) and sep["null_p95"] == pytest.approx(ref["null_p95"])
    matrix = sep["matrix"]
    assert list(matrix.region.values) == sorted(set(emb["region"].values[keep]))
    assert np.nanmin(matrix.values) == 0 and np.nanmax(matrix.values) == 1  # row-normalised


def test_session_switch_drops_stale_results_and_close_joins_the_jobs():
    c = EmbeddingsController()
    try:
        c.session = "mouse/mouse0"
        c.session = "worm/worm1"  # the mouse jobs' results go to a table nobody shows
        assert c.wait_idle(120)
        snap = c.snapshot()
        assert snap.table.sizes["unit"] == 120 and snap.xy.shape == (120, 2) and snap.separation["n"] <= 120
        c.color_by = "score"
    finally:
        c.close(timeout=60)
    assert not any(t.name.startswith("pocoviz-EmbeddingsController") for t in threading.enumerate())


def test_a_box_selects_the_units_inside_it_in_the_layout_and_on_the_map(ctrl):
    """Datashader images have no glyphs to pick: the controller resolves a box to units (issue 16)."""
    ctrl.select([])
    xy = ctrl.snapshot_layout()
    assert xy is not None and len(xy) == ctrl.snapshot().table.sizes["unit"]
    x_mid, y_mid = np.median(xy, axis=0)
    ctrl.select_in_box(x_mid, y_mid, xy[:, 0].max(), xy[:, 1].max())  # corners in either order
    expected = np.flatnonzero((xy[:, 0] >= x_mid) & (xy[:, 1] >= y_mid)).tolist()
    assert ctrl.selected == expected and 0 < len(expected) < len(xy)
    ctrl.select_in_box(xy[:, 0].max(), xy[:, 1].max(), x_mid, y_mid)
    assert ctrl.selected == expected
    ctrl.select_in_box(float("nan"), 0, 1, 1)  # a box that is not a box selects nothing
    assert ctrl.selected == []
    snap = ctrl.snapshot()
    rows = snap.map_rows
    x, y = snap.table["x"].values[rows], snap.table["y"].values[rows]
    ctrl.select_on_map_box(float(np.median(x)), float(y.min()), float(x.max()), float(y.max()))
    assert ctrl.selected == sorted(rows[x >= np.median(x)].tolist())
    ctrl.select([])

"""The Embeddings tab's view-model without a browser: tables, layouts, linked selection,
separation numbers against shuffled labels."""

from __future__ import annotations

import numpy as np
import pytest

from pocoviz.embeddings import region_separation, unit_embeddings
from pocoviz.ui.embeddings import ALL, EmbeddingsView
from tests.ui.helpers import wait_for


@pytest.fixture(scope="module")
def view(ui_data_dir):
    v = EmbeddingsView(str(ui_data_dir))
    v.session = "worm/worm0"
    wait_for(lambda: "pca" in v._xy and hasattr(v, "separation") and v.separation["n"] < 200, what="worm0 PCA and separation")
    yield v
    v.close()


def test_checkpoints_with_unit_embeddings_only(view):
    assert "poco_demo" in view.param.model.objects
    assert "mlp_demo" not in view.param.model.objects and "nlinear_demo" not in view.param.model.objects
    assert "data:models/mismatched" in view.param.model.objects  # a POCO card under the data directory
    assert view.param.session.objects[0] == ALL and "zebrafish/fish0" in view.param.session.objects


def test_layout_and_colours_follow_the_table(view):
    emb = view._emb
    assert emb.sizes["unit"] == 112 and set(emb["session"].values) == {"worm/worm0"}
    data = view._scatter_pipe.data
    np.testing.assert_allclose(np.c_[data["emb_x"], data["emb_y"]], view._xy.get(view.reducer, view._xy["pca"]))
    assert list(data["region"]) == list(emb["region"].values)
    view.color_by = "label"
    assert list(view._scatter_pipe.data["group"]) == list(emb["label"].values)
    view.color_by = "region"
    wait_for(lambda: "umap" in view._xy, what="the UMAP layout")  # computed (or read) in the background
    view.reducer = "umap"
    np.testing.assert_allclose(view._scatter_pipe.data["emb_x"], view._xy["umap"][:, 0])


def test_torch_umap_is_computed_when_chosen_and_shown(view):
    from pocoviz.embeddings import torch_umap_layout
    from pocoviz.ui.embeddings import _on_gpu, reducer_options

    assert "umap-torch" in reducer_options().values()
    if not _on_gpu():  # on a CPU it costs seconds: only computed when asked for
        assert "umap-torch" not in view._xy and not view._torch_started
    view.reducer = "umap-torch"
    wait_for(lambda: "umap-torch" in view._xy, what="the torch UMAP layout")
    xy = view._xy["umap-torch"]
    if not _on_gpu():  # deterministic on the CPU: the same layout as the library's
        np.testing.assert_array_equal(xy, torch_umap_layout(view._emb["embedding"].values, seed=0))
    np.testing.assert_allclose(np.c_[view._scatter_pipe.data["emb_x"], view._scatter_pipe.data["emb_y"]], xy)
    assert "torch UMAP of 112 units" in view._status_pane.object and not view._torch_progress.visible
    view.reducer = "umap"


def test_selection_links_layout_map_and_traces(view):
    emb = view._emb
    view._on_scatter_select([3, 7, 20])
    assert view._selected == [3, 7, 20]
    marks = view._map_marks_pipe.data
    np.testing.assert_allclose(marks["pos_x"], emb["x"].values[[3, 7, 20]])
    paths = view._traces_pipe.data
    assert len(paths) == 3
    rec = view._recordings["worm/worm0"]
    np.testing.assert_allclose(paths[1]["offset"], rec["activity"].values[:, int(emb["unit_index"].values[7])] - 4.0)
    assert "3 selected" in view._selection_info.object
    # a selection on the map marks the same units in the layout
    rows = view._map_rows
    view._on_map_select([0, 2])
    assert view._selected == [int(rows[0]), int(rows[2])]
    xy = view._xy[view.reducer]
    np.testing.assert_allclose(view._marks_pipe.data["emb_x"], xy[view._selected, 0])


def test_separation_numbers_match_the_library(view):
    sep = view.separation
    emb = unit_embeddings(view._model, ["worm/worm0"], recordings=view._recordings)
    keep = emb["region"].values != ""
    ref = region_separation(emb["embedding"].values[keep], emb["region"].values[keep], n_shuffles=200, seed=0)
    assert sep["score"] == pytest.approx(ref["score"]) and sep["null_p95"] == pytest.approx(ref["null_p95"])
    assert f"{sep['score']:.4f}" in view._separation.object and "200 label shuffles" in view._separation.object
    matrix = view._heat_data
    assert list(matrix.region.values) == sorted(set(emb["region"].values[keep]))
    assert np.nanmin(matrix.values) == 0 and np.nanmax(matrix.values) == 1  # row-normalised


def test_colour_by_per_unit_forecast_score(view):
    from pocoviz.forecast import ForecastCorpus, evaluate

    assert not np.isfinite(view._scores).any()  # computed only once asked for
    view.color_by = "score"
    wait_for(lambda: np.isfinite(view._scores).any(), what="per-unit scores")
    corpus = ForecastCorpus({"worm/worm0": view._recordings["worm/worm0"]}, strides={"train": 1, "val": 4, "test": 4})
    want = evaluate(view._model, corpus, "test", device="cpu").session("worm/worm0").per_unit_score
    np.testing.assert_allclose(view._scores, want, rtol=1e-6)
    view._send_scatter()
    data = view._scatter_pipe.data
    np.testing.assert_allclose(data["score"], np.round(want, 4))
    best, worst = int(np.nanargmax(want)), int(np.nanargmin(want))
    assert data["color"][best] != data["color"][worst]
    view.color_by = "region"


def test_large_sets_go_through_datashader(view, monkeypatch):
    import pocoviz.ui.embeddings as mod

    monkeypatch.setattr(mod, "DATASHADE_ABOVE", 50)  # worm0 has 112 units
    view._send_scatter()
    assert view._scatter_pane.object is not view._scatter_glyphs
    import holoviews as hv

    image = view._scatter_pane.object[()]  # the datashaded layout, aggregated once
    alpha = np.asarray(image.dimension_values(image.vdims[-1], flat=False))
    assert isinstance(image, hv.RGB) and (alpha > 0).sum() > 50  # points drawn into the image
    monkeypatch.setattr(mod, "DATASHADE_ABOVE", 20_000)
    view._send_scatter()
    assert view._scatter_pane.object is view._scatter_glyphs


def test_session_embeddings_panel(view):
    import holoviews as hv

    plot = view._sessions_pane.object
    points = next(el for el in plot if isinstance(el, hv.Points))
    assert list(points.dimension_values("session")) == [s.name for s in view._model.sessions]
    assert set(points.dimension_values("dataset")) == {"zebrafish", "mouse", "worm"}


def test_duplicated_labels_keep_their_colour_and_are_marked(tmp_path, monkeypatch):
    """A checkpoint whose worm session names URADL twice: the table flags both rows, colouring by
    label gives both URADL's colour, hovers and the selection say they are duplicates."""
    import pocoviz.ui.embeddings as mod
    from pocoviz.forecast import SessionInfo, build_model, save_model

    labels = ("URADL", "AVAL", "URADL", "", "AVAR", "RIML")
    poco = build_model("POCO", [SessionInfo("worm/dup", 6, "worm", labels=labels)], dim=16, hidden=32, self_heads=2, dim_head=8)
    save_model(poco, tmp_path / "models" / "dup")
    monkeypatch.setattr(mod, "embedding_models", lambda data_dir: {"dup": "data:models/dup"})
    monkeypatch.setattr(EmbeddingsView, "_umap_job", lambda self, gen: None)  # no UMAP of 6 points
    v = EmbeddingsView(str(tmp_path))
    try:
        wait_for(lambda: "pca" in v._xy, what="the PCA layout")
        emb = v._emb
        assert emb["label_duplicate"].values.tolist() == [True, False, True, False, False, False]
        v.color_by = "label"
        data = v._scatter_pipe.data
        assert list(data["group"]) == list(labels)
        assert data["color"][0] == data["color"][2] != data["color"][1]
        assert list(data["label"]) == ["URADL (dup #0)", "AVAL", "URADL (dup #2)", "", "AVAR", "RIML"]
        v.select([0, 1])
        assert "duplicated label: URADL in worm/dup (units 0, 2)" in v._selection_info.object
        v.select([1, 4])
        assert "duplicated" not in v._selection_info.object
    finally:
        v.close()

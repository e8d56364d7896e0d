"""Unit embeddings of trained forecasters: region separation (silhouette against a shuffled
null, region distance matrix, spec ``poco.md`` §6) and 2-D layouts (PCA, umap-learn, UMAP in torch). No UI imports."""

from __future__ import annotations

from .layout import REDUCERS, cached_layout, compute_layout, layout_cache_dir, umap_layout
from .separation import pairwise_distances, pca_layout, region_distance_matrix, region_separation, silhouette_score
from .torch_umap import neighbor_preservation, torch_umap_layout
from .units import session_embeddings, unit_embeddings

__all__ = [
    "REDUCERS", "cached_layout", "compute_layout", "layout_cache_dir", "neighbor_preservation", "pairwise_distances", "pca_layout",
    "region_distance_matrix", "region_separation", "session_embeddings", "silhouette_score", "torch_umap_layout", "umap_layout",
    "unit_embeddings",
]  # fmt: skip

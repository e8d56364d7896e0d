"""Unit embeddings of trained forecasters: region separation (silhouette against a shuffled
null, region distance matrix, spec ``poco.md`` §6) and 2-D layouts. No UI imports."""

from __future__ import annotations

from .separation import pairwise_distances, pca_layout, region_distance_matrix, region_separation, silhouette_score

__all__ = ["pairwise_distances", "pca_layout", "region_distance_matrix", "region_separation", "silhouette_score"]

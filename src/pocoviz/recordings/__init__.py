"""The data layer: the recording schema, readers for real formats, the synthetic corpus,
preprocessing, time splits and torch windows.

Never imports panel, holoviews or bokeh.
"""

from __future__ import annotations

from .io import (
    RECORDING_SUFFIXES,
    corpus_sessions,
    detect_format,
    open_corpus,
    open_recording,
    resolve_in_data_dir,
    save_corpus,
    save_recording,
    session_key,
)
from .preprocess import (
    CONTEXT_LENGTH,
    PREDICTION_LENGTH,
    compute_dff,
    split_indices,
    split_recording,
    zscore,
)
from .raster import aggregate_raster, sort_units_by_region
from .schema import RecordingError, as_recording, duplicate_labels, is_lazy, label_duplicate_mask, make_recording, summarize, validate
from .species import same_species, species_key
from .synthetic import SPECIES_PRESETS, make_demo_corpus, make_session

_LAZY = {"WindowDataset": "windows", "collate_padded": "windows"}


def __getattr__(name: str):
    """Torch-backed names load on first use, so importing the data layer does not import torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONTEXT_LENGTH",
    "PREDICTION_LENGTH",
    "RECORDING_SUFFIXES",
    "RecordingError",
    "SPECIES_PRESETS",
    "WindowDataset",
    "aggregate_raster",
    "as_recording",
    "collate_padded",
    "compute_dff",
    "corpus_sessions",
    "detect_format",
    "duplicate_labels",
    "is_lazy",
    "label_duplicate_mask",
    "make_demo_corpus",
    "make_recording",
    "make_session",
    "open_corpus",
    "open_recording",
    "resolve_in_data_dir",
    "same_species",
    "save_corpus",
    "save_recording",
    "session_key",
    "sort_units_by_region",
    "species_key",
    "split_indices",
    "split_recording",
    "summarize",
    "validate",
    "zscore",
]

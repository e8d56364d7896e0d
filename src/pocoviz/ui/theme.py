"""Colours and small shared view helpers."""

from __future__ import annotations

from collections.abc import Iterable

# Okabe–Ito plus Tableau-like extensions: distinguishable, colour-blind friendly first.
REGION_PALETTE = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
    "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#9467bd", "#2ca02c", "#d62728", "#1f77b4",
    "#ff7f0e", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
]
UNKNOWN_COLOR = "#b0b0b0"
UNKNOWN_NAMES = {"", "(no region)", "unknown"}


def region_colors(regions: Iterable[str]) -> dict[str, str]:
    """A stable colour per region name (sorted order); unknown regions grey."""
    names = sorted({str(r) for r in regions})
    known = [r for r in names if r not in UNKNOWN_NAMES]
    colors = {r: REGION_PALETTE[i % len(REGION_PALETTE)] for i, r in enumerate(known)}
    for r in names:
        if r in UNKNOWN_NAMES:
            colors[r] = UNKNOWN_COLOR
    return colors


APP_CSS = """
.pocoviz-meta table { font-size: 0.85em; }
.pocoviz-meta td, .pocoviz-meta th { padding: 1px 8px 1px 0; }
table.pocoviz-table { border-collapse: collapse; font-size: 0.9em; margin: 4px 0 8px 0; }
table.pocoviz-table th { text-align: left; border-bottom: 1px solid #ccc; padding: 2px 14px 2px 0; }
table.pocoviz-table td { padding: 1px 14px 1px 0; font-variant-numeric: tabular-nums; }
"""

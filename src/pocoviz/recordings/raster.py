"""Population rasters: units sorted by region, aggregated to screen resolution.

The app draws rasters through Datashader; these functions give it the unit order and region
bands, and offer a plain NumPy aggregation that ``pocoviz bench`` times and the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

UNKNOWN_REGION = "(no region)"


@dataclass(frozen=True)
class RegionBand:
    """Rows ``start:stop`` of the sorted raster belong to ``region``."""

    region: str
    start: int
    stop: int

    @property
    def center(self) -> float:
        return (self.start + self.stop - 1) / 2


def _leading_pc_scores(x: np.ndarray, n_iter: int = 8, seed: int = 0) -> np.ndarray:
    """Projection of each column of ``x`` (T, U) on the leading temporal PC (power iteration).

    NaNs count as zero. Cost O(n_iter * T * U); fine for 100k units."""
    x = np.nan_to_num(x - np.nanmean(x, axis=0, keepdims=True), copy=False)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(x.shape[0]).astype(x.dtype)
    for _ in range(n_iter):
        w = x.T @ v  # (U,)
        v = x @ w  # (T,)
        norm = np.linalg.norm(v)
        if norm == 0:
            break
        v /= norm
    scores = x.T @ v
    # fix the sign so that the order does not flip between runs
    if scores.sum() < 0:
        scores = -scores
    return scores


def sort_units_by_region(
    ds: xr.Dataset,
    *,
    region_order: list[str] | None = None,
    within: Literal["index", "label", "pc1"] = "pc1",
) -> tuple[np.ndarray, list[RegionBand]]:
    """Order units by region, and within a region by label, index or leading-PC loading.

    Parameters
    ----------
    ds
        A recording (``activity`` dims ``(time, unit)``).
    region_order
        Regions in the order to show them; default: alphabetical, units with no region last.
    within
        ``"pc1"`` (default) puts units of similar activity next to each other; ``"label"`` sorts
        by neuron label (labelled first), ``"index"`` keeps file order.

    Returns
    -------
    order : ndarray of int, shape (U,)
        Positional unit indices in display order (row 0 first).
    bands : list of RegionBand
        Contiguous row ranges per region, in display order.

    Examples
    --------
    >>> from pocoviz.recordings import make_recording, sort_units_by_region
    >>> import numpy as np
    >>> ds = make_recording(np.random.rand(20, 4), sampling_rate_hz=1, species="s", session="a",
    ...                     region=["b", "a", "b", "a"])
    >>> order, bands = sort_units_by_region(ds, within="index")
    >>> order.tolist(), [(b.region, b.start, b.stop) for b in bands]
    ([1, 3, 0, 2], [('a', 0, 2), ('b', 2, 4)])
    """
    regions = np.asarray(ds["region"].values).astype(str)
    present = sorted(set(regions.tolist()) - {""})
    if region_order is not None:
        ordered = [r for r in region_order if r in present] + [r for r in present if r not in region_order]
    else:
        ordered = present
    if (regions == "").any():
        ordered.append("")
    act = ds["activity"].values
    labels = np.asarray(ds["label"].values).astype(str)
    order_parts: list[np.ndarray] = []
    bands: list[RegionBand] = []
    row = 0
    for reg in ordered:
        idx = np.flatnonzero(regions == reg)
        if within == "label":
            key = np.array([(lab == "", lab) for lab in labels[idx]], dtype=object)
            idx = idx[sorted(range(len(idx)), key=lambda i: tuple(key[i]))]
        elif within == "pc1" and len(idx) > 2:
            scores = _leading_pc_scores(np.array(act[:, idx], dtype=np.float32))
            idx = idx[np.argsort(-scores, kind="stable")]
        order_parts.append(idx)
        bands.append(RegionBand(reg if reg else UNKNOWN_REGION, row, row + len(idx)))
        row += len(idx)
    order = np.concatenate(order_parts) if order_parts else np.arange(0)
    return order, bands


def _bin_edges(n: int, bins: int) -> np.ndarray:
    bins = max(1, min(int(bins), n))
    return np.linspace(0, n, bins + 1).round().astype(np.int64)[:-1]


def aggregate_raster(
    activity: np.ndarray,
    *,
    width: int,
    height: int,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """Average a (T, U) activity matrix into a (height, width) image: rows are unit bins, columns time bins.

    NaNs are ignored (a bin of only NaNs is NaN). Bins never exceed the data (a 100-unit raster
    asked for 600 rows gives 100 rows).

    Parameters
    ----------
    activity : ndarray, shape (T, U)
    width, height
        Number of time bins and unit bins.
    order : ndarray of int, shape (U,), optional
        Unit display order (from :func:`sort_units_by_region`).

    Returns
    -------
    ndarray, shape (min(height, U), min(width, T)), float32

    Examples
    --------
    >>> import numpy as np
    >>> aggregate_raster(np.arange(8.0).reshape(4, 2), width=2, height=1).tolist()
    [[1.5, 5.5]]
    """
    a = np.asarray(activity, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"activity must be 2-D (time, unit), got shape {a.shape}")
    if order is not None:
        a = a[:, order]
    n_time, n_unit = a.shape
    t_edges = _bin_edges(n_time, width)
    u_edges = _bin_edges(n_unit, height)

    def bin_sums(x: np.ndarray) -> np.ndarray:
        # units first: rows of a C-ordered (T, U) array are contiguous, and that axis usually shrinks most
        if len(u_edges) < n_unit:
            x = np.add.reduceat(x, u_edges, axis=1)
        if len(t_edges) < n_time:
            x = np.add.reduceat(x, t_edges, axis=0)
        return x

    nan = np.isnan(a)
    if nan.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            out = bin_sums(np.where(nan, 0, a)) / bin_sums((~nan).astype(np.float32))
    else:
        t_sizes = np.diff(np.append(t_edges, n_time)).astype(np.float32)
        u_sizes = np.diff(np.append(u_edges, n_unit)).astype(np.float32)
        out = bin_sums(a) / t_sizes[:, None] / u_sizes[None, :]
    return np.ascontiguousarray(out.T, dtype=np.float32)

"""Rasters: screen-resolution aggregation against a plain loop, and the region-sorted unit order."""

from __future__ import annotations

import doctest
import itertools
import warnings

import numpy as np
import pytest

import pocoviz.recordings.raster as raster_mod
from pocoviz.recordings import make_recording
from pocoviz.recordings.raster import UNKNOWN_REGION, RegionBand, _bin_edges, aggregate_raster, sort_units_by_region


def _edges(n: int, bins: int) -> np.ndarray:
    """Bin start/stop positions: min(bins, n) bins as equal as possible (sizes differ by at most one).

    The rounding rule is the module's (ties follow ``np.round`` on ``linspace``); that each partition
    is valid is checked separately in ``test_bins_partition_the_axis_evenly``."""
    k = max(1, min(bins, n))
    return np.linspace(0, n, k + 1).round().astype(int)


def _reference(activity: np.ndarray, width: int, height: int, order=None) -> np.ndarray:
    """The obvious double loop: the nanmean of every (unit bin, time bin) block, rows = unit bins."""
    a = np.asarray(activity, dtype=np.float64)
    if order is not None:
        a = a[:, order]
    te, ue = _edges(a.shape[0], width), _edges(a.shape[1], height)
    out = np.empty((len(ue) - 1, len(te) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN block
        for i in range(len(ue) - 1):
            for j in range(len(te) - 1):
                out[i, j] = np.nanmean(a[te[j] : te[j + 1], ue[i] : ue[i + 1]])
    return out


def _rec(activity, region, label=None, **kw):
    return make_recording(
        np.asarray(activity, dtype=float), sampling_rate_hz=1.0, species="s", session="a", region=region, label=label, **kw
    )


# ------------------------------------------------------------------------------- aggregate_raster


@pytest.mark.parametrize(
    ("n_time", "n_unit", "width", "height"),
    [
        (4, 2, 2, 1),  # the docstring example
        (100, 40, 10, 8),  # divisible
        (101, 37, 7, 6),  # neither axis divisible
        (97, 53, 10, 12),  # uneven bins of two sizes on both axes
        (13, 9, 13, 9),  # one cell per bin: the identity
        (10, 5, 40, 30),  # asked for more bins than data: clipped to the data
        (1, 1, 600, 400),
        (1000, 3, 600, 2),
        (5, 300, 1, 1),  # everything into one pixel
    ],
)
def test_aggregate_matches_plain_loop(n_time, n_unit, width, height):
    rng = np.random.default_rng(n_time * 1000 + n_unit)
    a = rng.normal(size=(n_time, n_unit)).astype(np.float32)
    out = aggregate_raster(a, width=width, height=height)
    assert out.shape == (min(height, n_unit), min(width, n_time))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, _reference(a, width, height), rtol=1e-5, atol=1e-6)


def test_aggregate_identity_and_overlarge_requests_return_the_data_itself():
    a = np.arange(45, dtype=np.float32).reshape(9, 5)
    np.testing.assert_array_equal(aggregate_raster(a, width=9, height=5), a.T)
    np.testing.assert_array_equal(aggregate_raster(a, width=900, height=500), a.T)


def test_aggregate_known_values():
    a = np.arange(8.0).reshape(4, 2)  # columns (units) [0,2,4,6] and [1,3,5,7]
    np.testing.assert_array_equal(aggregate_raster(a, width=2, height=1), [[1.5, 5.5]])
    np.testing.assert_array_equal(aggregate_raster(a, width=1, height=2), [[3.0], [4.0]])
    np.testing.assert_array_equal(aggregate_raster(a, width=4, height=2), a.T)


@pytest.mark.parametrize(("n", "bins"), [(10, 3), (101, 7), (97, 10), (37, 6), (5, 5), (5, 9), (600, 599), (1, 4)])
def test_bins_partition_the_axis_evenly(n, bins):
    starts = _bin_edges(n, bins)
    assert len(starts) == min(bins, n)
    stops = np.append(starts[1:], n)
    assert starts[0] == 0 and np.all(stops > starts)  # contiguous, covering, none empty
    sizes = stops - starts
    assert set(sizes.tolist()) <= {n // min(bins, n), -(-n // min(bins, n))}
    np.testing.assert_array_equal(starts, _edges(n, bins)[:-1])


def test_aggregate_nan_handling():
    a = np.arange(24, dtype=np.float32).reshape(6, 4)  # time 6 x unit 4 -> 2 x 2 bins of 3 x 2
    a[0:3, 0:2] = np.nan  # block (unit bin 0, time bin 0) entirely NaN
    a[3, 2] = np.nan  # block (unit bin 1, time bin 1) partly NaN
    a[5, 3] = np.nan
    out = aggregate_raster(a, width=2, height=2)
    assert np.isnan(out[0, 0])
    assert not np.isnan(out[[0, 1, 1], [1, 0, 1]]).any()
    assert out[1, 1] == pytest.approx(np.mean([15.0, 18.0, 19.0, 22.0]))  # 14 and 23 left out
    assert out[0, 1] == pytest.approx(np.mean([12, 13, 16, 17, 20, 21]))
    np.testing.assert_allclose(out, _reference(a, 2, 2), rtol=1e-6)


@pytest.mark.parametrize(("width", "height"), [(7, 5), (3, 2), (50, 40), (1, 1)])
def test_aggregate_with_scattered_nans_matches_plain_loop(width, height):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(43, 29)).astype(np.float32)
    a[rng.random(a.shape) < 0.3] = np.nan
    a[:, 4] = np.nan  # a whole unit missing
    a[10:20, :] = np.nan  # a stretch of frames missing
    ref = _reference(a, width, height)
    out = aggregate_raster(a, width=width, height=height)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    if width == 50:
        assert np.isnan(out[4]).all()  # the unit that is all NaN stays NaN at full resolution


def test_aggregate_applies_order_before_binning():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 11))
    order = rng.permutation(11)
    out = aggregate_raster(a, width=4, height=3, order=order)
    np.testing.assert_allclose(out, _reference(a, 4, 3, order=order), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, aggregate_raster(a[:, order], width=4, height=3))
    assert not np.allclose(out, aggregate_raster(a, width=4, height=3))  # the order matters
    # full resolution: row i is unit order[i]
    np.testing.assert_allclose(aggregate_raster(a, width=30, height=11, order=order), a[:, order].T.astype(np.float32))


def test_aggregate_accepts_integers_and_rejects_non_2d():
    out = aggregate_raster(np.array([[1, 2], [3, 5]]), width=1, height=2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2.0], [3.5]])
    with pytest.raises(ValueError, match="2-D"):
        aggregate_raster(np.zeros(5), width=2, height=2)
    with pytest.raises(ValueError, match="2-D"):
        aggregate_raster(np.zeros((2, 3, 4)), width=2, height=2)


# --------------------------------------------------------------------------- sort_units_by_region


def _check_bands(order: np.ndarray, bands: list[RegionBand], regions: np.ndarray) -> None:
    """Bands are contiguous, cover every row once, and each row's unit is in its band's region."""
    n = len(regions)
    assert sorted(order.tolist()) == list(range(n))  # a permutation
    assert bands[0].start == 0 and bands[-1].stop == n
    for prev, nxt in itertools.pairwise(bands):
        assert prev.stop == nxt.start
    assert all(b.stop > b.start for b in bands)
    assert len({b.region for b in bands}) == len(bands)
    for b in bands:
        want = "" if b.region == UNKNOWN_REGION else b.region
        assert (regions[order[b.start : b.stop]] == want).all(), b


REGIONS = np.array(["v", "", "b", "a", "v", "b", "", "a", "a", "b", "v", "b"])


@pytest.mark.parametrize("within", ["index", "label", "pc1"])
def test_bands_alphabetical_with_no_region_last(within):
    rng = np.random.default_rng(0)
    ds = _rec(rng.normal(size=(40, len(REGIONS))), REGIONS)
    order, bands = sort_units_by_region(ds, within=within)
    _check_bands(order, bands, REGIONS)
    assert [(b.region, b.start, b.stop) for b in bands] == [
        ("a", 0, 3),
        ("b", 3, 7),
        ("v", 7, 10),
        (UNKNOWN_REGION, 10, 12),
    ]
    assert order.dtype.kind == "i"
    if within == "index":
        assert order.tolist() == [3, 7, 8, 2, 5, 9, 11, 0, 4, 10, 1, 6]


def test_band_center():
    assert RegionBand("a", 3, 7).center == 4.5
    assert RegionBand("a", 0, 1).center == 0.0


def test_no_unknown_band_when_every_unit_has_a_region():
    ds = _rec(np.random.default_rng(1).normal(size=(10, 3)), ["z", "y", "z"])
    order, bands = sort_units_by_region(ds, within="index")
    assert order.tolist() == [1, 0, 2]
    assert [(b.region, b.start, b.stop) for b in bands] == [("y", 0, 1), ("z", 1, 3)]


@pytest.mark.parametrize(
    ("region_order", "expected"),
    [
        (["v", "a", "b"], ["v", "a", "b"]),
        (["b"], ["b", "a", "v"]),  # unnamed regions follow, alphabetically
        (["zzz", "v", "nope"], ["v", "a", "b"]),  # regions not in the data are ignored
        ([], ["a", "b", "v"]),
    ],
)
def test_region_order_respected(region_order, expected):
    ds = _rec(np.random.default_rng(2).normal(size=(30, len(REGIONS))), REGIONS)
    order, bands = sort_units_by_region(ds, region_order=region_order, within="index")
    _check_bands(order, bands, REGIONS)
    assert [b.region for b in bands] == expected + [UNKNOWN_REGION]
    # within a band, "index" keeps file order
    for b in bands:
        rows = order[b.start : b.stop]
        assert rows.tolist() == sorted(rows.tolist())


def test_within_label_puts_labelled_units_first_sorted_by_label():
    regions = np.array(["r", "r", "r", "r", "r", "q", "q", "q"])
    labels = np.array(["", "SMDV", "", "AVAL", "ASH", "", "b", "a"])
    ds = _rec(np.random.default_rng(3).normal(size=(20, 8)), regions, label=labels)
    order, bands = sort_units_by_region(ds, within="label")
    _check_bands(order, bands, regions)
    assert [b.region for b in bands] == ["q", "r"]
    assert order.tolist() == [7, 6, 5, 4, 3, 1, 0, 2]
    assert labels[order].tolist() == ["a", "b", "", "ASH", "AVAL", "SMDV", "", ""]


def _two_populations(n_time=200, seed=0, sign=-1.0):
    """Region "mix" holds two interleaved groups driven by the same slow signal with opposite
    (sign=-1) or independent sign; region "other" is noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    s = np.sin(2 * np.pi * t / 50.0)
    group_a = np.array([0, 2, 5, 7, 8])
    group_b = np.array([1, 3, 4, 6, 9])
    act = rng.normal(scale=0.1, size=(n_time, 13))
    act[:, group_a] += 1.0 * s[:, None] * rng.uniform(0.8, 1.2, size=5)
    act[:, group_b] += sign * s[:, None] * rng.uniform(0.8, 1.2, size=5)
    regions = np.array(["mix"] * 10 + ["other"] * 3)
    return act, regions, group_a, group_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_within_pc1_separates_anticorrelated_subpopulations(seed):
    act, regions, group_a, group_b = _two_populations(seed=seed)
    ds = _rec(act, regions)
    order, bands = sort_units_by_region(ds, within="pc1")
    _check_bands(order, bands, regions)
    mix = next(b for b in bands if b.region == "mix")
    rows = order[mix.start : mix.stop]
    first, second = set(rows[:5].tolist()), set(rows[5:].tolist())
    assert {frozenset(first), frozenset(second)} == {frozenset(group_a.tolist()), frozenset(group_b.tolist())}
    # file order interleaves the two groups; index order would not separate them
    idx_order, _ = sort_units_by_region(ds, within="index")
    assert set(idx_order[:5].tolist()) not in (set(group_a.tolist()), set(group_b.tolist()))
    # deterministic
    again, _ = sort_units_by_region(ds, within="pc1")
    np.testing.assert_array_equal(order, again)


def test_within_pc1_orders_by_loading_on_a_rank_one_signal():
    """Units that are scaled copies of one signal sort by their scale, largest first (the sign is
    fixed so that loadings sum to a positive number)."""
    t = np.arange(120)
    s = np.cos(2 * np.pi * t / 30.0) + 0.3 * np.sin(2 * np.pi * t / 17.0)
    gains = np.array([0.5, -2.0, 3.0, 1.0, -0.25, 2.0, 0.1])  # sum > 0
    act = s[:, None] * gains[None, :] + 5.0  # an offset per unit does not matter (PCA centres)
    ds = _rec(act, ["r"] * len(gains))
    order, _ = sort_units_by_region(ds, within="pc1")
    assert order.tolist() == np.argsort(-gains).tolist()
    # the PC's sign is arbitrary; the sign rule makes the order the same for the negated data
    # (negated loadings sum below zero and are flipped back)
    order_neg, _ = sort_units_by_region(_rec(-s[:, None] * gains[None, :], ["r"] * len(gains)), within="pc1")
    assert order_neg.tolist() == order.tolist()
    # a loading sum below zero for these data: order by the negated gains
    flipped = np.array([-0.5, 2.0, -3.0, -1.0, 0.25, -2.0, 0.4])  # sum < 0 -> flipped: largest -gain first
    order_f, _ = sort_units_by_region(_rec(s[:, None] * flipped[None, :], ["r"] * len(flipped)), within="pc1")
    assert order_f.tolist() == np.argsort(flipped).tolist()


def test_within_pc1_keeps_file_order_for_tiny_regions():
    act = np.random.default_rng(4).normal(size=(50, 5))
    ds = _rec(act, ["b", "a", "b", "a", ""])
    order, bands = sort_units_by_region(ds, within="pc1")
    assert order.tolist() == [1, 3, 0, 2, 4]
    assert [b.region for b in bands] == ["a", "b", UNKNOWN_REGION]


def test_within_pc1_tolerates_nans():
    act, regions, group_a, group_b = _two_populations(seed=4)
    act[::7, 3] = np.nan
    act[10:30, :5] = np.nan
    ds = _rec(act, regions)
    order, bands = sort_units_by_region(ds, within="pc1")
    _check_bands(order, bands, regions)
    rows = order[bands[0].start : bands[0].stop]
    assert {frozenset(rows[:5].tolist()), frozenset(rows[5:].tolist())} == {
        frozenset(group_a.tolist()),
        frozenset(group_b.tolist()),
    }


def test_sorted_raster_end_to_end():
    """sort_units_by_region + aggregate_raster: at full resolution row i is unit order[i]."""
    act, regions, *_ = _two_populations(seed=5)
    ds = _rec(act, regions)
    order, _ = sort_units_by_region(ds)
    img = aggregate_raster(ds["activity"].values, width=act.shape[0], height=act.shape[1], order=order)
    np.testing.assert_array_equal(img, ds["activity"].values[:, order].T)


def test_module_doctests_pass():
    result = doctest.testmod(raster_mod, verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0

"""Preprocessing, time splits and torch windows: from a recording to POCO's training samples.

- :func:`compute_dff` turns raw fluorescence into dF/F with a percentile baseline.
- :func:`zscore` standardizes each unit (POCO trains on z-scored data, spec §1.2).
- :func:`split_indices` / :func:`split_recording` cut a session in time exactly as POCO does
  (spec §2.3): patches of 1000 frames, the last absorbing the remainder, each split 60/20/20.
- :class:`WindowDataset` serves ``context`` (C, U) / ``target`` (P, U) windows that never cross
  a patch or split boundary; :func:`collate_padded` batches sessions with different unit counts.

Examples
--------
>>> import numpy as np
>>> from pocoviz.recordings.preprocess import split_indices
>>> split_indices(2500)
{'train': [(0, 600), (1000, 1900)], 'val': [(600, 800), (1900, 2200)], 'test': [(800, 1000), (2200, 2500)]}
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, overload

import numpy as np
import xarray as xr

from .schema import RecordingError

#: Frames of context the forecasters see (POCO: ``seq_length - pred_length = 48``).
CONTEXT_LENGTH = 48
#: Frames they forecast (POCO: ``pred_length = 16``).
PREDICTION_LENGTH = 16
#: POCO's patch length in frames (spec §2.3).
PATCH_LENGTH = 1000
#: POCO's train/val/test fractions within each patch.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)

Split = Literal["train", "val", "test"]
Baseline = Literal["percentile", "median"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# dF/F and z-score
# --------------------------------------------------------------------------------------------


def _running_percentile(a: np.ndarray, q: float, window: int, step: int) -> np.ndarray:
    """Percentile of ``a`` (T, U) over a centred window of ``window`` frames, per unit.

    The window for frame ``t`` is ``[t - window // 2, t - window // 2 + window)`` clipped to the
    recording. It is evaluated exactly every ``step`` frames (and at the last frame) and linearly
    interpolated in between; ``step=1`` is exact everywhere. Returns (T, U).
    """
    T = a.shape[0]
    centers = np.unique(np.r_[np.arange(0, T, step), T - 1])
    pct = np.nanpercentile if np.isnan(a).any() else np.percentile
    half = window // 2
    vals = np.empty((len(centers), a.shape[1]), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stretches give NaN
        for i, c in enumerate(centers):
            lo = max(0, c - half)
            hi = min(T, c - half + window)
            vals[i] = pct(a[lo:hi], q, axis=0)
    if len(centers) == T:
        return vals
    t = np.arange(T)
    k = np.clip(np.searchsorted(centers, t, side="right") - 1, 0, len(centers) - 2)
    frac = ((t - centers[k]) / (centers[k + 1] - centers[k]))[:, None]
    return vals[k] * (1.0 - frac) + vals[k + 1] * frac


@overload
def compute_dff(
    x: xr.Dataset,
    *,
    baseline: Baseline = ...,
    percentile: float = ...,
    window_s: float | None = ...,
    sampling_rate_hz: float | None = ...,
    step: int | None = ...,
) -> xr.Dataset: ...


@overload
def compute_dff(
    x: np.ndarray,
    *,
    baseline: Baseline = ...,
    percentile: float = ...,
    window_s: float | None = ...,
    sampling_rate_hz: float | None = ...,
    step: int | None = ...,
) -> np.ndarray: ...


def compute_dff(
    x: xr.Dataset | np.ndarray,
    *,
    baseline: Baseline = "percentile",
    percentile: float = 8.0,
    window_s: float | None = None,
    sampling_rate_hz: float | None = None,
    step: int | None = None,
) -> xr.Dataset | np.ndarray:
    """dF/F = (F - F0) / F0 per unit, with F0 a low percentile of the unit's fluorescence.

    Parameters
    ----------
    x : xarray.Dataset or array, shape (T, U)
        A recording whose ``activity`` is raw fluorescence (``attrs["units"]`` ``"F"`` or
        ``"a.u."``), or an array, time by unit.
    baseline
        ``"percentile"`` (F0 = the ``percentile``-th percentile) or ``"median"`` (the 50th, as
        POCO's zebrafish preprocessing).
    percentile
        Which percentile, in [0, 100].
    window_s
        ``None``: one F0 per unit over the whole recording. A number: F0 from a running centred
        window of that many seconds (clipped at the ends), which follows slow drift and bleaching.
    sampling_rate_hz
        Frame rate, needed with ``window_s`` for array input (datasets use their attribute).
    step
        Running baseline only: F0 is computed exactly every ``step`` frames and linearly
        interpolated between (default ``max(1, window // 10)``; ``1`` is exact).

    Returns
    -------
    xarray.Dataset or ndarray, shape (T, U)
        The same kind as ``x``. A dataset keeps its coords and attrs; ``activity`` becomes float32
        with ``attrs["units"] = "dF/F"`` and ``attrs["baseline"]`` describing F0. An array comes
        back float64 if it was float64, else float32. NaNs stay NaN (F0 ignores them).

    Raises
    ------
    RecordingError
        F0 is not positive for some unit (names the field ``activity`` and the units; subtract
        less background or add an offset first), the dataset is already dF/F or z-scored, or
        ``window_s`` is given for an array without ``sampling_rate_hz``.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[100.0, 10.0], [150.0, 10.0], [100.0, 20.0]])
    >>> compute_dff(F, percentile=0.0)
    array([[0. , 0. ],
           [0.5, 0. ],
           [0. , 1. ]])
    """
    if baseline not in ("percentile", "median"):
        raise ValueError(f"baseline must be 'percentile' or 'median', got {baseline!r}")
    q = 50.0 if baseline == "median" else float(percentile)
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    is_ds = isinstance(x, xr.Dataset)
    where = None
    if is_ds:
        ds = x
        where = ds.attrs.get("source") or None
        if "activity" not in ds.data_vars:
            raise RecordingError("missing", path=where, field="activity")
        units = ds["activity"].attrs.get("units")
        if units in ("dF/F", "z-score"):
            raise RecordingError(
                f"is {units!r} already; compute_dff needs raw fluorescence ('F')", path=where, field="activity.attrs['units']"
            )
        a = np.asarray(ds["activity"].transpose("time", "unit").values)
        rate = sampling_rate_hz if sampling_rate_hz is not None else ds.attrs.get("sampling_rate_hz")
    else:
        a = np.asarray(x)
        if a.ndim != 2:
            raise RecordingError(f"must be 2-D (time, unit), got shape {a.shape}", field="activity")
        rate = sampling_rate_hz
    out_dtype = np.float64 if (not is_ds and a.dtype == np.float64) else np.float32
    af = a.astype(np.float64, copy=False) if a.dtype.kind != "f" else a
    if window_s is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pct = np.nanpercentile if np.isnan(af).any() else np.percentile
            f0 = pct(af, q, axis=0)[None, :]
        how = f"{q:g}th percentile of the whole recording"
    else:
        if rate is None or not float(rate) > 0:
            raise RecordingError("a running baseline (window_s) needs the sampling rate", path=where, field="sampling_rate_hz")
        window = max(1, int(round(float(window_s) * float(rate))))
        st = max(1, window // 10) if step is None else int(step)
        if st < 1:
            raise ValueError(f"step must be >= 1, got {step!r}")
        f0 = _running_percentile(af, q, window, st)
        how = f"{q:g}th percentile in a running {float(window_s):g} s window"
    bad = np.any(f0 <= 0, axis=0)
    if bad.any():
        idx = np.flatnonzero(bad)
        ids = np.asarray(x["unit"].values)[idx] if is_ds else idx
        kind = "unit id(s)" if is_ds else "column(s)"
        raise RecordingError(
            f"baseline F0 <= 0 for {len(idx)} unit(s) ({kind} {ids[:5].tolist()}); dF/F needs positive "
            "fluorescence: subtract less background or add an offset first",
            path=where,
            field="activity",
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        dff = ((af - f0) / f0).astype(out_dtype, copy=False)
    if not is_ds:
        return dff
    out = x.copy()
    attrs = dict(x["activity"].attrs)
    attrs.update({"units": "dF/F", "baseline": how})
    out["activity"] = (("time", "unit"), dff.astype(np.float32, copy=False), attrs)
    return out


@overload
def zscore(x: xr.Dataset) -> xr.Dataset: ...


@overload
def zscore(x: np.ndarray) -> np.ndarray: ...
def zscore(x: xr.Dataset | np.ndarray) -> xr.Dataset | np.ndarray:
    """Standardize each unit to zero mean and unit SD over time.

    NaN-aware (statistics ignore NaNs; NaNs stay NaN). A constant unit becomes zeros, never NaN.
    SD is the population SD (``ddof=0``), as in POCO's preprocessing.

    Parameters
    ----------
    x : xarray.Dataset or array, shape (T, U)
        A recording or an array, time by unit.

    Returns
    -------
    xarray.Dataset or ndarray, shape (T, U)
        The same kind as ``x``. A dataset keeps coords and attrs; ``activity`` is float32 with
        ``attrs["units"] = "z-score"`` and ``attrs["zscored_from"]`` the units it had. An array
        keeps a float64 dtype, other dtypes give float32.

    Examples
    --------
    >>> import numpy as np
    >>> zscore(np.array([[1.0, 5.0], [3.0, 5.0]]))
    array([[-1.,  0.],
           [ 1.,  0.]])
    """
    is_ds = isinstance(x, xr.Dataset)
    if is_ds:
        if "activity" not in x.data_vars:
            raise RecordingError("missing", path=x.attrs.get("source") or None, field="activity")
        a = np.asarray(x["activity"].transpose("time", "unit").values)
    else:
        a = np.asarray(x)
        if a.ndim != 2:
            raise RecordingError(f"must be 2-D (time, unit), got shape {a.shape}", field="activity")
    out_dtype = np.float64 if (not is_ds and a.dtype == np.float64) else np.float32
    af = a if a.dtype.kind == "f" else a.astype(np.float64)
    if np.isnan(af).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN units stay NaN
            m = np.nanmean(af, axis=0, dtype=np.float64)
            s = np.nanstd(af, axis=0, dtype=np.float64)
    else:
        m = af.mean(axis=0, dtype=np.float64)
        s = af.std(axis=0, dtype=np.float64)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    z = ((af - m.astype(af.dtype)) / s.astype(af.dtype)).astype(out_dtype, copy=False)
    if not is_ds:
        return z
    out = x.copy()
    attrs = dict(x["activity"].attrs)
    attrs.update({"units": "z-score", "zscored_from": str(attrs.get("units", "a.u."))})
    out["activity"] = (("time", "unit"), z.astype(np.float32, copy=False), attrs)
    return out


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def split_indices(
    n_time: int,
    *,
    patch_length: int = PATCH_LENGTH,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> dict[str, list[tuple[int, int]]]:
    """POCO's time split (spec §2.3): frame ranges ``[start, stop)`` of each split.

    The session is cut into ``max(1, n_time // patch_length)`` patches of ``patch_length``
    frames; the last patch absorbs the remainder (so it is between 1 and 2 patches long, or the
    whole session when that is shorter than one patch). Each patch of length ``L`` is split
    chronologically: train ``[0, floor(L f_train))``, val up to ``floor(L (f_train + f_val))``,
    test the rest, as POCO's ``int(...)`` does (a 1e-9 tolerance keeps e.g. ``0.6 * 1000`` at
    600). Empty ranges are left out.

    Parameters
    ----------
    n_time
        Frames in the session.
    patch_length
        Frames per patch (POCO: 1000).
    fractions
        Train, val and test fractions; non-negative and summing to 1.

    Returns
    -------
    dict
        ``{"train": [(start, stop), ...], "val": [...], "test": [...]}``, one range per patch
        (in time order). Together they cover ``[0, n_time)`` without overlap.

    Examples
    --------
    >>> split_indices(999)
    {'train': [(0, 599)], 'val': [(599, 799)], 'test': [(799, 999)]}
    >>> split_indices(2300)["test"]
    [(800, 1000), (2040, 2300)]
    """
    n_time, patch_length = int(n_time), int(patch_length)
    if n_time < 1:
        raise ValueError(f"n_time must be positive, got {n_time}")
    if patch_length < 1:
        raise ValueError(f"patch_length must be positive, got {patch_length}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    n_patches = max(1, n_time // patch_length)
    out: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    for k in range(n_patches):
        a = k * patch_length
        b = (k + 1) * patch_length if k < n_patches - 1 else n_time
        L = b - a
        t1 = a + int(math.floor(L * fr[0] + 1e-9))
        t2 = a + int(math.floor(L * (fr[0] + fr[1]) + 1e-9))
        for name, (lo, hi) in zip(SPLITS, ((a, t1), (t1, t2), (t2, b))):
            if hi > lo:
                out[name].append((lo, hi))
    return out


def split_recording(ds: xr.Dataset, **kw: Any) -> dict[str, list[xr.Dataset]]:
    """Cut a recording into its train/val/test pieces (see :func:`split_indices`).

    Parameters
    ----------
    ds
        A recording, ``activity`` (time, unit).
    **kw
        ``patch_length`` and ``fractions`` for :func:`split_indices`.

    Returns
    -------
    dict
        ``{"train": [piece, ...], "val": [...], "test": [...]}``; each piece is ``ds.isel(time=...)``
        (a view: coords, including the original ``time`` in seconds, and attrs kept).

    Examples
    --------
    >>> from pocoviz.recordings.synthetic import make_session
    >>> parts = split_recording(make_session("worm", n_time=300))
    >>> [p.sizes["time"] for p in parts["train"] + parts["val"] + parts["test"]]
    [180, 60, 60]
    """
    spans = split_indices(ds.sizes["time"], **kw)
    return {name: [ds.isel(time=slice(a, b)) for a, b in ranges] for name, ranges in spans.items()}

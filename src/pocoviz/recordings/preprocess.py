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
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from .io import corpus_sessions
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


# --------------------------------------------------------------------------------------------
# torch windows
# --------------------------------------------------------------------------------------------


def _as_sessions(data: xr.Dataset | xr.DataTree | Sequence[xr.Dataset]) -> tuple[list[str], list[xr.Dataset]]:
    if isinstance(data, xr.DataTree):
        sessions = corpus_sessions(data)
        if not sessions:
            raise RecordingError("the corpus holds no sessions (no node with an 'activity' variable)", field="activity")
        return list(sessions), list(sessions.values())
    if isinstance(data, xr.Dataset):
        data = [data]
    dss = list(data)
    if not dss:
        raise ValueError("no recordings given")
    names = []
    for i, ds in enumerate(dss):
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"recording {i} is a {type(ds).__name__}, not an xarray.Dataset")
        sp, se = ds.attrs.get("species"), ds.attrs.get("session")
        names.append(f"{sp}/{se}" if sp and se else f"session{i}")
    return names, dss


class WindowDataset(Dataset):
    """Sliding windows ``(context, target)`` over one or many recordings, within one split.

    Windows of ``context + horizon`` frames start every ``stride`` frames inside each split range
    of :func:`split_indices`, so none crosses a patch or split boundary; windows containing any
    NaN are skipped. Each recording is converted once to a float32 tensor (T, U); a sample is a
    view into it.

    Parameters
    ----------
    data
        One recording, a list of recordings, or a corpus (``xarray.DataTree``; sessions in
        :func:`~pocoviz.recordings.io.corpus_sessions` order).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    context, horizon
        C and P (defaults :data:`CONTEXT_LENGTH` = 48, :data:`PREDICTION_LENGTH` = 16).
    stride
        Frames between window starts (POCO: 1 for training; larger makes evaluation cheaper).
    patch_length, fractions
        Passed to :func:`split_indices`.

    Attributes
    ----------
    session_names : list of str
        ``"species/session"`` per session (the corpus path for a DataTree).
    n_units : list of int
        Units per session.
    windows_per_session : list of int
        How many windows each session contributes.

    Notes
    -----
    ``ds[i]`` is a dict: ``context`` float32 (C, U), ``target`` float32 (P, U), ``session`` (int
    index into ``session_names``) and ``start`` (the window's first frame in the recording).
    ``context`` and ``target`` are views; copy before changing them in place. Batch sessions with
    different unit counts with :func:`collate_padded`.

    Examples
    --------
    >>> from pocoviz.recordings.synthetic import make_demo_corpus
    >>> ds = WindowDataset(make_demo_corpus(0, size="tiny"), split="train", stride=4)
    >>> sample = ds[0]
    >>> tuple(sample["context"].shape), tuple(sample["target"].shape), ds.session_names[sample["session"]]
    ((48, 80), (16, 80), 'zebrafish/fish0')
    """

    def __init__(
        self,
        data: xr.Dataset | xr.DataTree | Sequence[xr.Dataset],
        *,
        split: Split = "train",
        context: int = CONTEXT_LENGTH,
        horizon: int = PREDICTION_LENGTH,
        stride: int = 1,
        patch_length: int = PATCH_LENGTH,
        fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if context < 1 or horizon < 1 or stride < 1:
            raise ValueError(f"context, horizon and stride must be positive, got {context}, {horizon}, {stride}")
        self.split: Split = split
        self.context = int(context)
        self.horizon = int(horizon)
        self.stride = int(stride)
        self.session_names, recordings = _as_sessions(data)
        width = self.context + self.horizon
        self._tensors: list[torch.Tensor] = []
        sessions: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        self.n_units: list[int] = []
        self.windows_per_session: list[int] = []
        for i, ds in enumerate(recordings):
            if "activity" not in ds.data_vars:
                raise RecordingError("missing", path=ds.attrs.get("source") or None, field="activity")
            a = np.asarray(ds["activity"].transpose("time", "unit").values)
            a = np.array(a, dtype=np.float32, order="C", copy=not (a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable))
            self._tensors.append(torch.from_numpy(a))
            self.n_units.append(a.shape[1])
            bad = np.isnan(a).any(axis=1)
            cum = np.concatenate([[0], np.cumsum(bad)])
            found = []
            for lo, hi in split_indices(a.shape[0], patch_length=patch_length, fractions=fractions)[split]:
                s = np.arange(lo, hi - width + 1, self.stride, dtype=np.int64)
                found.append(s[cum[s + width] == cum[s]])
            st = np.concatenate(found) if found else np.zeros(0, np.int64)
            starts.append(st)
            sessions.append(np.full(len(st), i, dtype=np.int64))
            self.windows_per_session.append(len(st))
        self._session = np.concatenate(sessions)
        self._start = np.concatenate(starts)

    def __len__(self) -> int:
        return len(self._start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self._start)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        s, t = int(self._session[i]), int(self._start[i])
        w = self._tensors[s][t : t + self.context + self.horizon]
        return {"context": w[: self.context], "target": w[self.context :], "session": s, "start": t}

    def recording_tensor(self, session: int) -> torch.Tensor:
        """The whole recording of ``session`` as the float32 tensor (T, U) windows are cut from."""
        return self._tensors[session]

    def __repr__(self) -> str:
        return (
            f"WindowDataset(split={self.split!r}, sessions={len(self.session_names)}, windows={len(self)}, "
            f"context={self.context}, horizon={self.horizon}, stride={self.stride})"
        )


def collate_padded(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack :class:`WindowDataset` samples, padding unit counts to the largest with zeros.

    Parameters
    ----------
    batch
        Samples from :class:`WindowDataset` (any mix of sessions).

    Returns
    -------
    dict
        ``context`` (B, C, U_max) and ``target`` (B, P, U_max) float32, zero where padded;
        ``unit_mask`` (B, U_max) bool, True for real units; ``session`` (B,) and ``start`` (B,) int64.

    Examples
    --------
    >>> import torch
    >>> a = {"context": torch.ones(4, 2), "target": torch.ones(1, 2), "session": 0, "start": 0}
    >>> b = {"context": torch.ones(4, 3), "target": torch.ones(1, 3), "session": 1, "start": 5}
    >>> collate_padded([a, b])["unit_mask"]
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    if not batch:
        raise ValueError("empty batch")
    B = len(batch)
    C, _ = batch[0]["context"].shape
    P = batch[0]["target"].shape[0]
    u_max = max(int(b["context"].shape[1]) for b in batch)
    context = torch.zeros((B, C, u_max), dtype=torch.float32)
    target = torch.zeros((B, P, u_max), dtype=torch.float32)
    mask = torch.zeros((B, u_max), dtype=torch.bool)
    for i, b in enumerate(batch):
        u = b["context"].shape[1]
        if b["context"].shape[0] != C or b["target"].shape[0] != P:
            raise ValueError("all samples in a batch need the same context and horizon lengths")
        context[i, :, :u] = b["context"]
        target[i, :, :u] = b["target"]
        mask[i, :u] = True
    return {
        "context": context,
        "target": target,
        "unit_mask": mask,
        "session": torch.tensor([int(b["session"]) for b in batch], dtype=torch.int64),
        "start": torch.tensor([int(b["start"]) for b in batch], dtype=torch.int64),
    }

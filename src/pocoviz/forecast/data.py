"""Forecasting corpora: sessions grouped into datasets, split into windows, batched per dataset.

A :class:`ForecastCorpus` holds recordings keyed by session name (``"dataset/session"``), each
belonging to a dataset (a species, or a lab's recordings of one preparation). Training draws one
batch of windows per dataset per step (POCO spec §1.7, §2.4); evaluation walks every window of a
split session by session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..recordings import RecordingError, corpus_sessions
from ..recordings.preprocess import CONTEXT_LENGTH, PREDICTION_LENGTH, Split
from ..recordings.schema import is_lazy
from ..recordings.windows import DEFAULT_CACHE_BYTES, BandCache, WindowDataset
from .base import SessionInfo

#: unit-windows per evaluation batch (bounds the memory of per-unit hidden layers)
MAX_UNIT_WINDOWS = 16384

DataLike = xr.DataTree | xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset]


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name).strip()).strip("_")
    return s or "recording"


def _session_items(data: DataLike) -> list[tuple[str, str, xr.Dataset]]:
    """``(name, dataset, recording)`` per session, in a stable order."""
    if isinstance(data, xr.DataTree):
        items = corpus_sessions(data)
        if not items:
            raise RecordingError("the corpus holds no sessions (no node with an 'activity' variable)", field="activity")
        return [(k, k.split("/")[0] if "/" in k else "recordings", ds) for k, ds in items.items()]
    if isinstance(data, xr.Dataset):
        data = [data]
    if isinstance(data, Mapping):
        return [(k, k.split("/")[0] if "/" in k else "recordings", ds) for k, ds in data.items()]
    out = []
    for i, ds in enumerate(data):
        if isinstance(ds, xr.DataTree):
            out.extend(_session_items(ds))
            continue
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"recording {i} is a {type(ds).__name__}, not an xarray.Dataset")
        dataset = _safe(ds.attrs.get("species") or "recordings")
        session = _safe(ds.attrs.get("session") or f"session{i}")
        out.append((f"{dataset}/{session}", dataset, ds))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two recordings share a session name: {sorted({n for n in names if names.count(n) > 1})}")
    return out


def _unit_labels(ds: xr.Dataset) -> tuple[str, ...] | None:
    """The recording's unit labels ("" where a unit is unidentified), or None without any."""
    if "label" not in ds.coords:
        return None
    labels = tuple("" if v is None else str(v).strip() for v in ds["label"].values.tolist())
    labels = tuple("" if x.lower() in ("nan", "none") else x for x in labels)
    return labels if any(labels) else None


def _species(ds: xr.Dataset) -> str | None:
    """The recording's ``species`` attribute (None when it has none)."""
    value = ds.attrs.get("species")
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass
class Batch:
    """A padded batch: ``context`` (B, C, U), ``target`` (B, P, U), ``unit_mask`` (B, U),
    ``session`` (B,) indices into the corpus sessions, ``unit_index`` (B, U) or None."""

    context: torch.Tensor
    target: torch.Tensor
    unit_mask: torch.Tensor
    session: torch.Tensor
    unit_index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.context.to(device, non_blocking=True),
            self.target.to(device, non_blocking=True),
            self.unit_mask.to(device, non_blocking=True),
            self.session.to(device, non_blocking=True),
            None if self.unit_index is None else self.unit_index.to(device, non_blocking=True),
        )


@dataclass
class ForecastCorpus:
    """Sessions, their datasets, and window datasets per split and dataset.

    Parameters
    ----------
    data
        A corpus (``DataTree`` /dataset/session, e.g. the demo corpus), one recording, a list of
        recordings (dataset = the ``species`` attribute), or a mapping ``{"dataset/session": ds}``.
    context, horizon
        C and P.
    strides
        Window stride per split (training uses 1, spec §2.3; a larger validation stride makes
        model selection cheaper).
    zscore
        Standardise every unit over its whole recording (chunked recordings: statistics from block
        sums, equal to :func:`~pocoviz.recordings.preprocess.zscore`'s).
    cache_bytes
        Cap of the band cache through which chunked recordings are read in this process
        (evaluation, :meth:`sample`); training streams through its own caches
        (:mod:`pocoviz.forecast.stream`).

    Recordings with a chunked (Dask-backed) ``activity``, as ``open_recording(..., load=False)``
    returns for a Zarr store, are never loaded: their windows are read band by band (see
    :class:`~pocoviz.recordings.windows.WindowDataset`) and give the same values as in memory.
    """

    data: DataLike
    context: int = CONTEXT_LENGTH
    horizon: int = PREDICTION_LENGTH
    strides: dict[str, int] = field(default_factory=lambda: {"train": 1, "val": 1, "test": 1})
    zscore: bool = False
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        items = _session_items(self.data)
        self.recordings: dict[str, xr.Dataset] = {n: ds for n, _, ds in items}
        self.sessions: list[SessionInfo] = []
        for n, d, ds in items:
            if "activity" not in ds.data_vars:
                raise RecordingError("missing", path=ds.attrs.get("source") or None, field="activity")
            self.sessions.append(SessionInfo(n, int(ds.sizes["unit"]), d, labels=_unit_labels(ds), species=_species(ds)))
        self.datasets: list[str] = list(dict.fromkeys(s.dataset for s in self.sessions))
        self._windows: dict[tuple[str, str], WindowDataset] = {}
        self._global: dict[str, np.ndarray] = {}
        self.cache = BandCache(self.cache_bytes)

    # -- structure -----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sessions]

    @property
    def lazy(self) -> bool:
        """True when any recording is read from chunked storage (training then streams its windows)."""
        return any(is_lazy(ds) for ds in self.recordings.values())

    def dataset_sessions(self, dataset: str) -> list[int]:
        return [i for i, s in enumerate(self.sessions) if s.dataset == dataset]

    def windows(self, split: Split, dataset: str) -> WindowDataset:
        """Windows of one split over the sessions of ``dataset`` (built once, cached)."""
        key = (split, dataset)
        if key not in self._windows:
            idx = self.dataset_sessions(dataset)
            if not idx:
                raise KeyError(f"no dataset {dataset!r}; datasets: {self.datasets}")
            recs = [self.recordings[self.sessions[i].name] for i in idx]
            self._windows[key] = WindowDataset(
                recs, split=split, context=self.context, horizon=self.horizon, stride=self.strides.get(split, 1), zscore=self.zscore, cache=self.cache
            )
            self._global[dataset] = np.asarray(idx, dtype=np.int64)
        return self._windows[key]

    def n_windows(self, split: Split) -> dict[str, int]:
        return {d: len(self.windows(split, d)) for d in self.datasets}

    def regions(self, session: str) -> np.ndarray | None:
        ds = self.recordings[session]
        if "region" not in ds.coords:
            return None
        r = np.asarray(ds["region"].values).astype(str)
        return r if (r != "").any() else None

    def subset(self, names: Sequence[str]) -> ForecastCorpus:
        """A corpus of some of these sessions (same datasets, strides)."""
        missing = [n for n in names if n not in self.recordings]
        if missing:
            raise KeyError(f"sessions not in the corpus: {missing}")
        return ForecastCorpus(
            {n: self.recordings[n] for n in names}, context=self.context, horizon=self.horizon, strides=dict(self.strides),
            zscore=self.zscore, cache_bytes=self.cache_bytes,
        )  # fmt: skip

    # -- batches -------------------------------------------------------------------------------

    def sample(self, dataset: str, batch_size: int, generator: torch.Generator, *, max_units: int | None = None) -> Batch:
        """Draw ``batch_size`` training windows uniformly from the sessions of ``dataset``.

        With ``max_units``, a window of a larger session keeps a random subset of that many units
        (sorted; ``unit_index`` names them), a unit-subsampling augmentation that bounds the cost
        of a step on sessions with thousands of units.

        Chunked recordings give the same batch as in memory (read through :attr:`cache`); for
        training on them, :class:`pocoviz.forecast.stream.WindowStream` reads far less.
        """
        wd = self.windows("train", dataset)
        n = len(wd)
        if n == 0:
            raise ValueError(f"dataset {dataset!r} has no training windows (recordings too short for {self.context}+{self.horizon} frames)")
        picks = torch.randint(n, (batch_size,), generator=generator)
        local = torch.as_tensor(wd._session)[picks]
        starts = torch.as_tensor(wd._start)[picks]
        counts = torch.tensor(wd.n_units)[local]
        widest = int(counts.max())
        u_max = widest if max_units is None else min(widest, int(max_units))
        B, C, P = batch_size, self.context, self.horizon
        window = torch.zeros((B, C + P, u_max))
        mask = torch.zeros((B, u_max), dtype=torch.bool)
        index = torch.zeros((B, u_max), dtype=torch.int64) if max_units is not None else None
        # one gather per session present in the batch (rows in batch order)
        for s in torch.unique(local).tolist():
            rows = (local == s).nonzero(as_tuple=True)[0]
            w = wd.read_windows(s, starts[rows])  # (b, L, U_s)
            u = w.shape[2]
            if max_units is not None and u > max_units:
                sel = torch.rand((len(rows), u), generator=generator).argsort(dim=1)[:, :max_units].sort(dim=1).values
                window[rows] = torch.gather(w, 2, sel[:, None, :].expand(-1, C + P, -1))
                mask[rows] = True
                index[rows] = sel
            else:
                window[rows, :, :u] = w
                mask[rows, :u] = True
                if index is not None:
                    index[rows, :u] = torch.arange(u)
        context, target = window[:, :C], window[:, C:]
        session = torch.as_tensor(self._global[dataset])[local]
        return Batch(context, target, mask, session, index)

    def session_windows(
        self, split: Split, session: int, batch_size: int = 256, *, max_elements: int = MAX_UNIT_WINDOWS
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """All windows of one session in a split: ``(context (b, C, U), target (b, P, U), start (b,))``.

        ``b`` is at most ``batch_size`` and at most ``max_elements // U`` (a batch of 256 windows
        of 1500 units would make 1.5 GB hidden activations in POCO's MLP). A chunked recording is
        read band by band (in start order, each band once while the cache holds it): the same
        batches, so :func:`~pocoviz.forecast.metrics.evaluate` scores it in chunks to the same sums.
        """
        info = self.sessions[session]
        batch_size = max(1, min(batch_size, max_elements // max(info.n_units, 1)))
        wd = self.windows(split, info.dataset)
        local = self.dataset_sessions(info.dataset).index(session)
        starts = torch.as_tensor(wd._start[wd._session == local])
        for i in range(0, len(starts), batch_size):
            st = starts[i : i + batch_size]
            w = wd.read_windows(local, st)  # (b, L, U)
            yield w[:, : self.context], w[:, self.context :], st

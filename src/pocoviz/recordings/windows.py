"""Torch windows over recordings: POCO's training samples (context C = 48, horizon P = 16).

Kept apart from :mod:`pocoviz.recordings.preprocess` so that the data layer (and the app) import
without torch; ``pocoviz.recordings.WindowDataset`` loads this module on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from .io import corpus_sessions
from .preprocess import CONTEXT_LENGTH, PATCH_LENGTH, PREDICTION_LENGTH, SPLIT_FRACTIONS, SPLITS, Split, split_indices
from .schema import RecordingError


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

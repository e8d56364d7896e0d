"""Training windows streamed from chunked storage: a chunk-aware sampler, worker processes, a bench.

A whole-brain recording (ZAPBench's 71,721 units × 7,879 frames, 2.1 GB) is opened lazily and
never loaded: :class:`WindowStream` reads it by time bands (whole time chunks of the store)
through a bounded :class:`~pocoviz.recordings.windows.BandCache` and draws many windows from each
band it holds.

Sampling is by epochs over the windows of a split. An epoch shuffles the time *blocks* (a few
consecutive bands of one session), takes them ``mix_blocks`` at a time and shuffles the windows
of those blocks together; batches are consecutive runs of that order, and epochs follow each other
without a gap, so the first ``N`` windows drawn are every window of the split once (``N`` of them).
A batch therefore reads only the few bands of its blocks, and each band is read about once per
epoch when the cache holds ``mix_blocks`` blocks (the block length is chosen so that it does).

With ``max_units`` a window of a larger session keeps a random sorted subset of that many units
(``unit_index`` names them), as :meth:`ForecastCorpus.sample` does. Everything random is derived
from ``(seed, dataset, epoch)`` and ``(seed, dataset, batch)``, so a batch is the same whichever
process builds it: ``workers=N`` (a torch DataLoader whose worker processes each have their own
cache and read consecutive runs of steps) yields exactly the batches of ``workers=0``.

:func:`~pocoviz.forecast.train.train` uses this path by itself for a corpus with chunked
recordings (or with ``TrainConfig.workers > 0``); in-memory data with no workers keeps
:meth:`ForecastCorpus.sample`. Evaluation of chunked recordings goes through
:meth:`ForecastCorpus.session_windows`, which reads them band by band in time order.
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..recordings.preprocess import Split
from ..recordings.windows import ArrayActivity, BandCache, LazyActivity
from .data import Batch, ForecastCorpus

#: bytes of bands each process (the trainer, every worker) keeps by default
DEFAULT_STREAM_CACHE_BYTES = 384 * 2**20
#: blocks whose windows are shuffled together (the cache is sized to hold them)
DEFAULT_MIX_BLOCKS = 2
#: most bands in a block
MAX_BLOCK_BANDS = 4
#: most steps a worker builds in one run (bounds what waits in the DataLoader's queues)
MAX_RUN_STEPS = 8


class _DatasetPlan:
    """The windows of one dataset's split, grouped into blocks, and where they are read from."""

    def __init__(self, corpus: ForecastCorpus, split: Split, dataset: str, index: int, cache: BandCache, cap: int, mix: int, block_frames: int | None):
        wd = corpus.windows(split, dataset)
        self.index = index
        self.name = dataset
        self.session = np.asarray(wd._session, dtype=np.int64)
        self.start = np.asarray(wd._start, dtype=np.int64)
        self.n_units = np.asarray(wd.n_units, dtype=np.int64)
        self.global_session = np.asarray(corpus.dataset_sessions(dataset), dtype=np.int64)
        self.sources: list[LazyActivity | ArrayActivity] = [wd.source(s).rebind(cache) for s in range(len(wd.n_units))]
        lazy = [s for s in self.sources if isinstance(s, LazyActivity)]
        band = max((s.band_frames for s in lazy), default=256)
        band_bytes = max((s.band_bytes for s in lazy), default=0)
        if block_frames is None:
            # the largest block (in whole bands) of which `mix` fit the cache, each with the band after it;
            # fewer blocks mixed when even one-band blocks do not fit
            bands = MAX_BLOCK_BANDS
            while bands > 1 and band_bytes and mix * (bands + 1) * band_bytes > cap:
                bands -= 1
            if band_bytes:
                mix = max(1, min(mix, cap // (2 * band_bytes)))
            block_frames = bands * band
        self.mix = int(mix)
        self.block_frames = int(block_frames)
        key = self.session * (int(self.start.max(initial=0)) // self.block_frames + 1) + self.start // self.block_frames
        # windows are sorted by (session, start): each block is one contiguous range of them
        edges = np.flatnonzero(np.diff(key)) + 1
        self.block_lo = np.concatenate([[0], edges]).astype(np.int64) if len(key) else np.zeros(0, np.int64)
        self.block_hi = np.concatenate([edges, [len(key)]]).astype(np.int64) if len(key) else np.zeros(0, np.int64)
        self.n = len(self.start)
        self._orders: dict[int, np.ndarray] = {}

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The window order of ``epoch``: a permutation of ``range(n)``."""
        mix = self.mix
        order = self._orders.get(epoch)
        if order is None:
            rng = np.random.default_rng([seed, self.index, epoch, 0])
            blocks = rng.permutation(len(self.block_lo))
            parts = []
            for g in range(0, len(blocks), mix):
                ids = np.concatenate([np.arange(self.block_lo[b], self.block_hi[b]) for b in blocks[g : g + mix]])
                parts.append(rng.permutation(ids))
            order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = order
        return order


class WindowStream:
    """Batches of training windows read from chunked storage by blocks (see the module docstring).

    Parameters
    ----------
    corpus
        Any :class:`ForecastCorpus` (chunked or in-memory recordings; the windows are those of
        ``corpus.windows(split, dataset)``).
    split
        Usually ``"train"``.
    batch_size
        Windows per dataset per step.
    max_units
        Units kept per window of a larger session (None: all).
    seed
        Everything random derives from it (block and window order, unit subsets).
    cache_bytes
        Cap of this process's band cache (every worker has its own of the same cap).
    mix_blocks
        Blocks whose windows are shuffled together (fewer when the cache cannot hold that many
        one-band blocks with the band after each).
    block_frames
        Frames per block (default: the most whole bands, up to :data:`MAX_BLOCK_BANDS`, of which
        ``mix_blocks`` fit the cache).
    shard
        ``(rank, world)``: each batch holds only that rank's contiguous share of the global batch
        (:func:`pocoviz.forecast.distributed.shard`), laid out and drawn as in the global batch
        (the same padding width, the same unit subsets), and only its windows are read.

    Examples
    --------
    >>> stream = WindowStream(corpus, batch_size=64, max_units=512)         # doctest: +SKIP
    >>> for step, batches in zip(range(100), stream.iterate(workers=2)):     # doctest: +SKIP
    ...     ...  # one Batch per dataset: context (64, 48, 512), target (64, 16, 512)
    """

    def __init__(
        self,
        corpus: ForecastCorpus,
        split: Split = "train",
        *,
        batch_size: int = 64,
        max_units: int | None = None,
        seed: int = 0,
        cache_bytes: int = DEFAULT_STREAM_CACHE_BYTES,
        mix_blocks: int = DEFAULT_MIX_BLOCKS,
        block_frames: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if batch_size < 1 or mix_blocks < 1 or (max_units is not None and max_units < 1):
            raise ValueError(f"batch_size, mix_blocks and max_units must be positive, got {batch_size}, {mix_blocks}, {max_units}")
        if shard is not None and not (0 <= shard[0] < shard[1] <= batch_size):
            raise ValueError(f"shard (rank, world) needs 0 <= rank < world <= batch_size ({batch_size}), got {shard}")
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        self.split = split
        self.batch_size = int(batch_size)
        self.max_units = None if max_units is None else int(max_units)
        self.seed = int(seed)
        self.mix_blocks = int(mix_blocks)
        self.context, self.horizon = corpus.context, corpus.horizon
        self.cache = BandCache(cache_bytes)
        self.datasets = list(corpus.datasets)
        self.plans = [_DatasetPlan(corpus, split, d, i, self.cache, self.cache.cap_bytes, self.mix_blocks, block_frames) for i, d in enumerate(self.datasets)]
        empty = [p.name for p in self.plans if p.n == 0]
        if empty:
            raise ValueError(f"dataset(s) {empty} have no {split} windows (recordings too short for {self.context}+{self.horizon} frames)")

    # -- the plan ------------------------------------------------------------------------------

    def windows_per_epoch(self) -> dict[str, int]:
        return {p.name: p.n for p in self.plans}

    def window_ids(self, dataset: int, batch: int) -> np.ndarray:
        """Indices (into the dataset's split windows) of batch ``batch`` of dataset ``dataset``."""
        p = self.plans[dataset]
        pos = batch * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epochs, offsets = pos // p.n, pos % p.n
        out = np.empty(self.batch_size, np.int64)
        for e in np.unique(epochs).tolist():
            m = epochs == e
            out[m] = p.epoch_order(self.seed, e)[offsets[m]]
        return out

    def run_steps(self) -> int:
        """Steps a worker builds in one run: about one group of blocks' windows per dataset."""
        per_group = [p.n / max(len(p.block_lo), 1) * p.mix for p in self.plans]
        return int(min(MAX_RUN_STEPS, max(1, round(max(per_group) / self.batch_size))))

    # -- batches -------------------------------------------------------------------------------

    def _rows(self) -> slice:
        """The rows of a global batch this stream yields (all, or its shard's)."""
        if self.shard is None:
            return slice(0, self.batch_size)
        from .distributed import shard

        return shard(self.batch_size, *self.shard)

    def units_in_batch(self, dataset: int, batch: int) -> int:
        """Real (window, unit) elements of the *global* batch ``batch`` of ``dataset`` (all shards)."""
        p = self.plans[dataset]
        counts = p.n_units[p.session[self.window_ids(dataset, batch)]]
        return int((counts if self.max_units is None else np.minimum(counts, self.max_units)).sum())

    def batch(self, dataset: int, batch: int) -> Batch:
        """Batch ``batch`` of dataset ``dataset``: as :meth:`ForecastCorpus.sample` lays it out
        (with :attr:`shard`: this rank's rows of it, laid out as in the global batch)."""
        p = self.plans[dataset]
        ids = self.window_ids(dataset, batch)
        local, starts = p.session[ids], p.start[ids]
        counts = p.n_units[local]
        widest = int(counts.max())
        mu = self.max_units
        u_max = widest if mu is None else min(widest, mu)
        rows = self._rows()
        B, C, L = rows.stop - rows.start, self.context, self.context + self.horizon
        window = np.zeros((B, L, u_max), np.float32)
        mask = np.zeros((B, u_max), dtype=bool)
        index = np.zeros((B, u_max), dtype=np.int64) if mu is not None else None
        rng = np.random.default_rng([self.seed, p.index, batch, 1])
        for g in range(self.batch_size):
            s, t, u = int(local[g]), int(starts[g]), int(counts[g])
            r = g - rows.start
            src = p.sources[s]
            if mu is not None and u > mu:
                sel = np.sort(rng.choice(u, size=mu, replace=False))  # drawn for every row: the same subsets whatever the shard
                if not 0 <= r < B:
                    continue
                src.window(t, L, cols=sel, out=window[r])
                mask[r] = True
                index[r] = sel
            elif 0 <= r < B:
                src.window(t, L, out=window[r, :, :u])
                mask[r, :u] = True
                if index is not None:
                    index[r, :u] = np.arange(u)
        w = torch.from_numpy(window)
        return Batch(
            w[:, :C], w[:, C:], torch.from_numpy(mask), torch.from_numpy(p.global_session[local[rows]]),
            None if index is None else torch.from_numpy(index),
        )  # fmt: skip

    def step(self, k: int) -> list[Batch]:
        """Step ``k``: one batch per dataset (in ``corpus.datasets`` order)."""
        return [self.batch(d, k) for d in range(len(self.plans))]

    def iterate(self, start: int = 0, *, workers: int = 0, prefetch_runs: int = 1) -> Iterator[list[Batch]]:
        """Steps ``start, start + 1, ...`` forever: in this process (``workers=0``) or from
        ``workers`` DataLoader processes (the same batches, in the same order).

        Close the iterator (or let it be collected) to stop the workers.
        The workers start at once (call this early, while the process is small: each worker is a
        fork of it) and read ahead ``prefetch_runs`` runs of :meth:`run_steps` steps each.
        """
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if workers == 0:
            return (self.step(k) for k in itertools.count(start))
        runs = _Runs(self, start, self.run_steps())
        # the loader's own generator: creating workers must not draw from the global torch RNG
        loader = DataLoader(
            runs, batch_size=None, num_workers=workers, prefetch_factor=max(1, prefetch_runs), persistent_workers=False,
            generator=torch.Generator().manual_seed(self.seed),
        )  # fmt: skip
        return _from_runs(iter(loader))

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cache"] = BandCache(self.cache.cap_bytes)
        return d


def _from_runs(it: Iterator) -> Iterator[list[Batch]]:
    try:
        for run in it:
            for step in run:
                yield [Batch(*b) for b in step]
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class _Runs(IterableDataset):
    """Runs of consecutive steps for DataLoader workers: worker w of N builds runs w, w + N, ...,
    which the loader returns in run order, with its own band cache and synchronous reads."""

    def __init__(self, stream: WindowStream, start: int, run: int) -> None:
        self.stream, self.start, self.run = stream, int(start), int(run)

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        st = self.stream
        cache = BandCache(st.cache.cap_bytes)
        for p in st.plans:
            p.sources = [s.rebind(cache, scheduler="synchronous") for s in p.sources]
        st.cache = cache
        for r in itertools.count(w, n):
            first = self.start + r * self.run
            yield [[(b.context, b.target, b.unit_mask, b.session, b.unit_index) for b in st.step(k)] for k in range(first, first + self.run)]


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------


def _tree_rss() -> tuple[int, int]:
    """(RSS, PSS) in bytes of this process and its children, from /proc (0, 0 where unreadable)."""
    pids = [os.getpid()]
    try:
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            kids = Path(f"/proc/{os.getpid()}/task/{tid}/children").read_text().split()
            pids += [int(k) for k in kids]
    except OSError:
        pass
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


class _PeakMemory:
    """Samples the RSS and PSS of this process and its children every ``period`` seconds."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def sample(self) -> None:
        rss, pss = _tree_rss()
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def bench_train_stream(
    store: str | os.PathLike,
    *,
    steps: int = 30,
    max_units: int = 512,
    batch_size: int = 64,
    workers: int = 2,
    eval_stride: int = 64,
    cache_bytes: int = DEFAULT_STREAM_CACHE_BYTES,
    seed: int = 0,
) -> dict[str, Any]:
    """POCO trained for ``steps`` steps on a chunked store, streaming its windows; then evaluation.

    Run as ``python -c "from pocoviz.forecast.stream import bench_train_stream as b; print(b(PATH))"``
    (:func:`pocoviz.bench` may call it for ``--only scale``).

    The store is opened lazily (``open_recording(..., load=False)``); training is
    :func:`~pocoviz.forecast.train.train` with ``max_units``, ``batch_size`` and ``workers``
    (validation only at the end, on a handful of windows), and evaluation scores the validation
    split with stride ``eval_stride`` through the corpus's band cache.

    Returns
    -------
    dict
        Sizes, the opening and window-indexing times, the mean step time (data waits included) and
        its compute part, windows/s over the loop, seconds spent waiting for data, peak RSS and PSS of this process and its workers (sampled every 0.2 s), the
        process's own peak RSS (getrusage), the evaluation's windows, seconds and score, and the
        trainer's band-cache statistics.
    """
    from ..backend import configure_threads
    from .metrics import evaluate
    from .train import TrainConfig, make_model, train

    configure_threads()
    out: dict[str, Any] = {"store": str(store), "steps": steps, "max_units": max_units, "batch_size": batch_size, "workers": workers,
                           "threads": torch.get_num_threads(), "cache_bytes_per_process": cache_bytes}  # fmt: skip
    with _PeakMemory() as mem:
        t0 = time.perf_counter()
        ds = _open_lazy(store)
        out["open_s"] = time.perf_counter() - t0
        out["n_time"], out["n_unit"] = int(ds.sizes["time"]), int(ds.sizes["unit"])
        out["lazy"] = ds["activity"].chunks is not None
        # validation at the end only: a window per 1000-frame patch (stride beyond the val range)
        corpus = ForecastCorpus(ds, strides={"train": 1, "val": 10**6, "test": 1})
        t0 = time.perf_counter()
        n_train = corpus.n_windows("train")
        out["index_windows_s"] = time.perf_counter() - t0  # one chunked pass (NaN frames)
        out["train_windows"] = int(sum(n_train.values()))
        model = make_model("POCO", corpus, seed=seed)
        cfg = TrainConfig(steps=steps, batch_size=batch_size, eval_every=max(steps, 1), max_units=max_units, seed=seed,
                          workers=workers, cache_bytes=cache_bytes)  # fmt: skip
        t0 = time.perf_counter()
        res = train(model, corpus, cfg)
        out["train_s"] = time.perf_counter() - t0  # with the two validations (step 0 and the last)
        loop_s = res.train_seconds + res.data_seconds
        out["step_s_mean"] = loop_s / max(res.steps_done, 1)  # data waits included (the first step starts the workers)
        out["step_s_compute"] = res.train_seconds / max(res.steps_done, 1)
        out["data_wait_s"] = res.data_seconds
        out["windows_per_s"] = res.windows / loop_s if loop_s > 0 else math.nan
        out["val_mse"] = [h["val_mse"] for h in res.history]
        out["train_loss_last"] = res.history[-1]["train_loss"]
        ev = ForecastCorpus(ds, strides={"train": 1, "val": eval_stride, "test": eval_stride}, cache_bytes=cache_bytes)
        t0 = time.perf_counter()
        rep = evaluate(model, ev, "val")
        out["eval_s"] = time.perf_counter() - t0
        out["eval_windows"] = int(sum(s.n_windows for s in rep.sessions))
        out["eval_s_per_window"] = out["eval_s"] / max(out["eval_windows"], 1)
        out["eval_score"] = rep.score
        out["eval_cache"] = ev.cache.stats()
    out["peak_rss_tree_bytes"] = mem.peak_rss
    out["peak_pss_tree_bytes"] = mem.peak_pss
    out["peak_rss_self_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["peak_rss_children_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    out["peak_rss_tree_gb"] = mem.peak_rss / 1e9
    return out


def _open_lazy(store: str | os.PathLike):
    """The store's recording with a Dask-backed ``activity`` (``open_recording(load=False)`` when the
    reader offers it, else ``xarray.open_zarr``)."""
    import inspect

    import xarray as xr

    from ..recordings import open_recording

    if "load" in inspect.signature(open_recording).parameters:
        ds = open_recording(store, load=False)
        if ds["activity"].chunks is not None:
            return ds
    return xr.open_zarr(store)

"""Sequence-memory figures for ``pocoviz bench``: the capacity sweep of the tab (d = 1, 2, 3) and
the recall rollouts of the playback presets."""

from __future__ import annotations

import time
from typing import Any

from .capacity import capacity_estimate
from .models import DenseNet, MixedNet, recall
from .patterns import random_patterns

#: the Sequence memory tab's capacity sweep: (degree, N values)
SWEEP = ((1, tuple(range(10, 101, 10))), (2, tuple(range(10, 101, 10))), (3, tuple(range(10, 41, 5))))


def capacity_sweep(n_seq: int = 8, c: float = 0.1, progress: Any = None, should_stop: Any = None) -> list[dict[str, Any]]:
    """:func:`capacity_estimate` for every (d, N) of :data:`SWEEP`; ``None`` entries are skipped
    when stopped."""
    jobs = [(d, N) for d, Ns in SWEEP for N in Ns]
    out = []
    for i, (d, N) in enumerate(jobs):
        if should_stop is not None and should_stop():
            break
        out.append(capacity_estimate(N, d, c=c, n_seq=n_seq))
        if progress is not None:
            progress((i + 1) / len(jobs))
    return out


def bench_seqmem(quick: bool = False) -> dict[str, Any]:
    from pocoviz.backend import get_device

    out: dict[str, Any] = {"device": str(get_device()), "sweep": {str(d): list(Ns) for d, Ns in SWEEP}, "n_seq": 8}
    times = []
    for _ in range(1 if quick else 2):
        t0 = time.perf_counter()
        capacity_sweep()
        times.append(round(time.perf_counter() - t0, 3))
    out["capacity_sweep_d1_3_s"] = {"first_s": times[0], "warm_s": times[-1]}
    X = random_patterns(300, 100, seed=0)
    t0 = time.perf_counter()
    recall(DenseNet(X, 2), 100)
    out["recall_fig1_N300_P100_100_steps_s"] = round(time.perf_counter() - t0, 4)
    X = random_patterns(100, 40, seed=0)
    t0 = time.perf_counter()
    recall(MixedNet(X, 10, lam=2.5, tau=5), 200)
    out["recall_fig4a_N100_P40_tau5_200_steps_s"] = round(time.perf_counter() - t0, 4)
    return out

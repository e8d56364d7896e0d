"""Forecasting figures for ``pocoviz bench``: training throughput, step time, forecast latency,
the FLOP/s a training step achieves against a large matmul on the same device, and the time to
forecast every cursor of a recording for playback (:func:`recording_pass`)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from ..backend import get_device
from .base import SessionInfo, build_model
from .data import ForecastCorpus
from .metrics import autocast_context
from .recipes import DEMO_RECIPE, DEMO_STRIDES, load_corpus
from .train import TrainConfig, make_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, n: int = 4096, repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of an n x n matmul in the dtype training computes in (bf16 on CUDA, fp32 on CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": round(t, 5), "tflops": round(2 * n**3 / t / 1e12, 3)}


def _step_fn(model, corpus: ForecastCorpus, cfg: TrainConfig, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
    gen = torch.Generator().manual_seed(0)
    model.to(device).train()

    def step() -> int:
        batches = [corpus.sample(d, cfg.batch_size, gen, max_units=cfg.max_units) for d in corpus.datasets]
        loss = torch.zeros((), device=device)
        with autocast_context(device):
            for b in batches:
                b = b.to(device)
                loss = loss + model.training_loss(b.context, b.target, b.session, b.unit_mask, b.unit_index).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        _sync(device)
        return sum(b.context.shape[0] for b in batches)

    return step


def training_step(kind: str, corpus: ForecastCorpus, cfg: TrainConfig, device: torch.device, steps: int, **model_kw: Any) -> dict[str, Any]:
    """Median step time, windows/s and achieved FLOP/s of ``steps`` training steps."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model(kind, corpus, seed=0, **model_kw)
    step = _step_fn(model, corpus, cfg, device)
    step()  # warm-up (allocations, kernels)
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    times, windows = [], 0
    for _ in range(steps):
        t0 = time.perf_counter()
        windows += step()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "model": kind, "batch_per_dataset": cfg.batch_size, "datasets": len(corpus.datasets), "max_units": cfg.max_units,
        "step_s": round(t, 4), "windows_per_s": round(windows / sum(times), 1), "flop_per_step": flops,
        "achieved_tflops": round(flops / t / 1e12, 4),
    }  # fmt: skip


@torch.no_grad()
def forecast_latency(kind: str, corpus: ForecastCorpus, device: torch.device, session: int = 0, repeats: int = 10) -> dict[str, Any]:
    """Time to forecast every unit of one recording at one time point (one window, batch 1)."""
    model = make_model(kind, corpus, seed=0).to(device).eval()
    ctx, _, _ = next(corpus.session_windows("test", session, batch_size=1))
    ctx = ctx.to(device)
    sess = torch.tensor([session], device=device)
    with autocast_context(device):
        model(ctx, sess)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with autocast_context(device):
            model(ctx, sess)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"model": kind, "session": corpus.sessions[session].name, "units": corpus.sessions[session].n_units, "median_s": round(statistics.median(times), 5)}


def recording_pass(
    kind: str, n_units: int, n_time: int, device: torch.device, *, first: int = 32, seed: int = 0, **model_kw: Any
) -> dict[str, Any]:
    """Time to forecast every cursor of one fresh recording for playback (the Forecast tab).

    A recording of ``n_units`` x ``n_time`` random z-scored frames, a session the model has not
    seen (registered on the model, which is built with random weights at its default config: the
    cost does not depend on the weights). Times :class:`~pocoviz.forecast.playback.RecordingForecast`
    construction (copy-last errors of every window), the first ``first`` cursors (what the app
    waits for before playback shows forecasts), the rest, and a ``metrics()`` call on the result.
    """
    from .playback import RecordingForecast

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n_time, n_units), generator=gen)
    x = (x - x.mean(0)) / x.std(0)
    info = SessionInfo("bench/recording", n_units, "bench")
    torch.manual_seed(seed)
    model = build_model(kind, [info], **model_kw).to(device).eval()
    t0 = time.perf_counter()
    rf = RecordingForecast(model, x, info.name, device=device)
    _sync(device)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_first = rf.compute(rf.cursors[:first])
    _sync(device)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_rest = rf.compute()
    _sync(device)
    rest_s = time.perf_counter() - t0
    total = first_s + rest_s
    n = n_first + n_rest
    t0 = time.perf_counter()
    rf.metrics()
    metrics_first = time.perf_counter() - t0
    warm = []
    for upto in range(0, n_time + 1, max(1, n_time // 20)):
        t0 = time.perf_counter()
        rf.metrics(upto, split="test")
        warm.append(time.perf_counter() - t0)
    return {
        "model": kind, "units": n_units, "frames": n_time, "cursors": n, "batch_windows": rf.batch_size,
        "setup_s": round(setup, 4), "first_chunk_cursors": n_first, "first_chunk_s": round(first_s, 4), "total_s": round(total, 3),
        "unit_windows_per_s": round(n * n_units / total, 1), "metrics_first_s": round(metrics_first, 5),
        "metrics_warm_median_s": round(statistics.median(warm), 6),
    }  # fmt: skip


def bench_forecast(quick: bool = False, device: str | torch.device | None = None, corpus: ForecastCorpus | None = None) -> dict[str, Any]:
    """The forecasting section of ``pocoviz bench`` on the demo corpus (or ``corpus``)."""
    dev = get_device(device)
    corpus = corpus if corpus is not None else load_corpus(["demo"], strides=DEMO_STRIDES)
    steps = 2 if quick else 5
    out: dict[str, Any] = {"device": str(dev), "matmul": matmul_flops(dev, 2048 if quick else 4096)}
    # the spec's configuration: every unit of every window, batch 64 per dataset (3 datasets)
    default = TrainConfig()
    if quick:
        default = replace(default, batch_size=8)
    out["train_default_POCO"] = training_step("POCO", corpus, default, dev, steps)
    out["train_demo_recipe"] = {k: training_step(k, corpus, DEMO_RECIPE, dev, steps) for k in ("POCO", "MLP", "NLinear")}
    for r in [out["train_default_POCO"], *out["train_demo_recipe"].values()]:
        r["fraction_of_matmul_flops"] = round(r["achieved_tflops"] / out["matmul"]["tflops"], 4)
    fish = corpus.names.index("zebrafish/fish0")
    out["forecast_latency_one_timepoint"] = {k: forecast_latency(k, corpus, dev, fish) for k in ("POCO", "MLP", "NLinear")}
    # forecasts at every cursor of a recording, as the Forecast tab fills them for playback; with
    # every core of this machine (the app's worker uses the configured count, 1 on 2-core machines)
    n_units, n_time = (200, 600) if quick else (1000, 3000)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        out["recording_pass"] = {k: recording_pass(k, n_units, n_time, dev) for k in ("POCO", "MLP", "NLinear")}
        out["recording_pass"]["torch_threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    return out

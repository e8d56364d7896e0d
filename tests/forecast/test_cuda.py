"""The forecasters on a GPU: same numbers as the CPU (within bf16 autocast), training steps run.

Skipped, with the reason printed, on machines without CUDA (CI); run on a GPU machine with
``python -m pytest tests/forecast/test_cuda.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr

from pocoviz.forecast import ForecastCorpus, TrainConfig, evaluate, make_model, train
from pocoviz.forecast.metrics import autocast_context

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (GPU checks run on a lent GPU machine)")

SMALL = {"dim": 32, "hidden": 64, "self_heads": 4, "dim_head": 16}


def _corpus() -> ForecastCorpus:
    rng = np.random.default_rng(0)
    items = {}
    for i, u in enumerate((9, 13)):
        t = np.arange(1100)[:, None]
        a = np.sin(2 * np.pi * t / rng.uniform(15, 40, u) + rng.uniform(0, 6, u)) + 0.2 * rng.standard_normal((1100, u))
        items[f"sine/s{i}"] = xr.Dataset({"activity": (("time", "unit"), ((a - a.mean(0)) / a.std(0)).astype(np.float32))})
    return ForecastCorpus(items)


@pytest.mark.parametrize("kind", ["POCO", "MLP", "NLinear", "DLinear", "TexFilter"])
def test_forward_matches_cpu(kind):
    corpus = _corpus()
    kw = SMALL if kind == "POCO" else {}
    model = make_model(kind, corpus, seed=0, **kw).eval()
    ctx, _, _ = next(corpus.session_windows("test", 1, batch_size=32))
    sess = torch.ones(ctx.shape[0], dtype=torch.int64)
    with torch.no_grad():
        cpu = model(ctx, sess)
        gpu_model = copy.deepcopy(model).cuda()
        fp32 = gpu_model(ctx.cuda(), sess.cuda()).cpu()
        with autocast_context(torch.device("cuda")):
            bf16 = gpu_model(ctx.cuda(), sess.cuda()).float().cpu()
    torch.testing.assert_close(fp32, cpu, atol=2e-4, rtol=1e-3)
    scale = cpu.abs().max().clamp_min(1e-3)
    assert float((bf16 - cpu).abs().max() / scale) < 0.05  # bf16 keeps 8 bits of mantissa


def test_training_on_cuda_learns_and_evaluates_like_cpu():
    corpus = _corpus()
    model = make_model("POCO", corpus, seed=0, **SMALL)
    res = train(model, corpus, TrainConfig(steps=150, batch_size=32, eval_every=50, lr=1e-3), device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert res.history[-1]["val_score"] > res.history[0]["val_score"] + 0.2
    rep_gpu = evaluate(model, corpus, "test", device="cuda")
    rep_cpu = evaluate(model.cpu(), corpus, "test", device="cpu")
    assert rep_gpu.score > 0.4
    assert abs(rep_gpu.score - rep_cpu.score) < 0.02  # bf16 autocast on the GPU, fp32 on the CPU


def test_copy_last_scores_zero_on_cuda():
    corpus = _corpus()
    rep = evaluate(make_model("copy-last", corpus), corpus, "test", device="cuda")
    assert all(s.score == 0.0 for s in rep.sessions)

"""Transformer-limits figures for ``pocoviz bench``: the step time of the tab's default live run
(and of larger ones), on the CPU and on a GPU when there is one."""

from __future__ import annotations

from typing import Any

import torch

from .model import LimitsConfig
from .train import train_run


def bench_limits(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = {"default_N8_H4_L2": LimitsConfig(), "N32_H8_L4": LimitsConfig(N=32, H=8, L=4)}
    if quick:
        sizes = {"default_N8_H4_L2": LimitsConfig()}
    steps = 40 if quick else 200
    for dev in devices:
        for name, cfg in sizes.items():
            train_run(cfg, steps=5, device=dev)  # warm-up (allocations, CUDA context)
            r = train_run(cfg, steps=steps, device=dev)
            out[f"{dev}_{name}_ms_per_step"] = round(1000 * r.seconds / steps, 2)
    return out

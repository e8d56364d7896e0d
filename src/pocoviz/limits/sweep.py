"""The shipped sweeps (spec ``transformer_limits.md`` §4.2–4.4): one deterministic command trains
every run on the CPU with one thread and writes one netCDF file per sweep under
``assets/limits``; :func:`load_sweep` reads them (never re-trains).

- ``N``: key/query dimension N ∈ {4, 8, 16, 32, 64} at H = 4, L = 2, for αA ∈ {1, ½}, 2 seeds.
- ``lr``: η0 on a log grid for N ∈ {8, 16, 32} and αA ∈ {1, ½} (learning-rate transfer).
- ``H``: heads H ∈ {1, 2, 4, 8, 16, 32} at N = 4, L = 2 (αA = 1), 6 seeds (concentration over seeds).
- ``L``: depth L ∈ {2, 4, 8, 16, 32} at N = 8, H = 4, for αL ∈ {1, ½}, 2 seeds.

Every run is the teacher task, 300 SGD steps of batch 32 (β0 = 4, L0 = 2, γ0 = 0.5, η0 = 0.5
unless swept). A sweep file holds, per run: the config, the loss curve (every 5 steps), the probe
loss, the head variance of the attention logits at init and at the end, ‖ΔW_K‖/‖W_K(0)‖ per layer
(after training and after the first step),
mean |ΔA|, the probe outputs, and the logits of every head at one position.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .model import LimitsConfig
from .train import RunResult, train_run

STEPS = 300
BATCH = 32
LR_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def sweep_runs(name: str) -> list[tuple[LimitsConfig, int]]:
    """``(config, seed)`` of every run of sweep ``name``."""
    if name == "N":
        return [(LimitsConfig(N=N, H=4, L=2, alpha_A=a), s) for a, N, s in itertools.product((1.0, 0.5), (4, 8, 16, 32, 64), (0, 1))]
    if name == "lr":
        return [(LimitsConfig(N=N, H=4, L=2, alpha_A=a, eta0=e), 0) for a, N, e in itertools.product((1.0, 0.5), (8, 16, 32), LR_GRID)]
    if name == "H":
        return [(LimitsConfig(N=4, H=H, L=2, alpha_A=1.0), s) for H, s in itertools.product((1, 2, 4, 8, 16, 32), range(6))]
    if name == "L":
        return [(LimitsConfig(N=8, H=4, L=L, alpha_L=a), s) for a, L, s in itertools.product((1.0, 0.5), (2, 4, 8, 16, 32), (0, 1))]
    raise ValueError(f"unknown sweep {name!r}; choose from {SWEEPS}")


SWEEPS = ("N", "lr", "H", "L")
CONFIG_FIELDS = ("N", "H", "L", "alpha_A", "alpha_L", "beta0", "L0", "gamma0", "eta0")


def to_dataset(name: str, results: list[RunResult]) -> xr.Dataset:
    """One sweep's runs as a Dataset over ``run`` (configs as coordinates)."""
    n = len(results)
    steps = results[0].steps
    n_rec, max_L = len(steps), max(len(r.dWK) for r in results)
    max_H = max(len(r.A_heads_init) for r in results)
    loss = np.full((n, n_rec), np.nan)
    dWK = np.full((n, max_L), np.nan)
    dWK_first = np.full((n, max_L), np.nan)
    A_init = np.full((n, max_H), np.nan)
    A_final = np.full((n, max_H), np.nan)
    for i, r in enumerate(results):
        loss[i, : len(r.loss)] = r.loss
        dWK[i, : len(r.dWK)] = r.dWK
        dWK_first[i, : len(r.dWK_first)] = r.dWK_first
        A_init[i, : len(r.A_heads_init)] = r.A_heads_init
        A_final[i, : len(r.A_heads_final)] = r.A_heads_final
    coords: dict[str, Any] = {f: ("run", np.array([r.config[f] for r in results])) for f in CONFIG_FIELDS}
    coords["seed"] = ("run", np.array([r.seed for r in results]))
    coords["step"] = steps
    ds = xr.Dataset(
        {
            "loss": (("run", "step"), loss),
            "probe_loss": ("run", np.array([r.probe_loss for r in results])),
            "head_var_init": ("run", np.array([r.head_var_init for r in results])),
            "head_var_final": ("run", np.array([r.head_var_final for r in results])),
            "dWK": (("run", "layer"), dWK),
            "dWK_first": (("run", "layer"), dWK_first),
            "dA": ("run", np.array([r.dA for r in results])),
            "f_probe": (("run", "probe"), np.stack([r.f_probe[:, 0] for r in results])),
            "A_heads_init": (("run", "head"), A_init),
            "A_heads_final": (("run", "head"), A_final),
            "seconds": ("run", np.array([r.seconds for r in results])),
        },
        coords=coords,
    )
    import torch

    import pocoviz

    ds.attrs.update({
        "sweep": name, "task": results[0].task, "steps": STEPS, "batch": BATCH, "pocoviz": str(pocoviz.__version__), "torch": str(torch.__version__),
        "description": __doc__.split("\n\n")[0].replace("\n", " "),
    })  # fmt: skip
    return ds


@contextlib.contextmanager
def single_thread():
    """One torch thread (float reductions then do not depend on the machine's core count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_sweep(name: str, *, progress: Callable[[int, int, float], None] | None = None) -> xr.Dataset:
    """Train every run of sweep ``name`` (CPU, one thread: bit-reproducible) and return the Dataset."""
    with single_thread():
        results = []
        runs = sweep_runs(name)
        for i, (cfg, seed) in enumerate(runs):
            r = train_run(cfg, steps=STEPS, batch=BATCH, seed=seed, device="cpu")
            results.append(r)
            if progress is not None:
                progress(i + 1, len(runs), r.seconds)
        return to_dataset(name, results)


def sweeps_dir() -> Path:
    from pocoviz.assets import assets_dir

    return assets_dir() / "limits"


def write_sweeps(names: tuple[str, ...] = SWEEPS, folder: str | Path | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Run and write the sweeps (``make-assets --limits``); returns the files."""
    out_dir = Path(folder) if folder is not None else sweeps_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name in names:
        t0 = time.perf_counter()
        ds = run_sweep(name, progress=lambda i, n, s, name=name: log(f"  {name}: run {i}/{n} ({s:.1f} s)") if i % 5 == 0 or i == n else None)
        path = out_dir / f"{name}.nc"
        tmp = path.with_suffix(".nc.tmp")
        ds.to_netcdf(tmp, engine="h5netcdf")
        tmp.replace(path)
        files.append(path)
        log(f"wrote {path} ({len(ds.run)} runs, {time.perf_counter() - t0:.0f} s)")
    return files


def load_sweep(name: str, folder: str | Path | None = None) -> xr.Dataset:
    """A shipped sweep (``assets/limits/<name>.nc``), loaded into memory."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; choose from {SWEEPS}")
    path = (Path(folder) if folder is not None else sweeps_dir()) / f"{name}.nc"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sweep {name!r} not found; run `pocoviz make-assets --limits` to create it")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()

"""Data-parallel training over several processes (torchrun, DistributedDataParallel).

``pocoviz train`` and ``pocoviz finetune`` run unchanged under torchrun::

    torchrun --nproc-per-node 2 -m pocoviz train POCO demo --out poco2
    pocoviz train POCO demo --out poco2 --nproc 2          # the same, launched for you

Every process (rank) joins one process group (gloo on the CPU, NCCL on CUDA with device
``cuda:LOCAL_RANK``) from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`pocoviz.forecast.train.train` then

- draws each dataset's *global* batch exactly as a one-process run draws it (the same generator,
  the same draws whatever the number of ranks) and trains rank ``r`` on its contiguous share of
  it (:func:`shard`: the shares of a dataset differ by at most one window);
- reduces the gradients so that the optimiser step is the one-process step for that global batch
  (the loss is a mean over real (window, unit) elements, so each rank's share is weighted by its
  element count; see ``train``), clips after the reduction, and steps identically everywhere;
- validates, logs, calls back and writes the resumable state and the checkpoint on rank 0 only;
  the others wait for its decision (go on / stop) in a collective.

The resumable state holds nothing that depends on the number of ranks, so a run written by N
processes resumes with M. A rank that dies ends the job: torchrun notices the exit at once and
stops the others (its report names the rank and exit code); a rank that hangs in a collective is
ended after the collective timeout (:data:`ENV_TIMEOUT`, default :data:`DEFAULT_TIMEOUT_S`).

Limits: dropout and other training noise draw from each rank's own torch generator, so runs with
dropout are statistically, not numerically, equal across world sizes; batch norm (TSMixer)
normalises over each rank's share of a session's windows.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

#: seconds a collective waits for the other ranks before the job fails (a hung or lost rank)
ENV_TIMEOUT = "POCOVIZ_DIST_TIMEOUT"
#: rank 0 validates (and writes checkpoints) while the others wait in a collective, so the timeout
#: must exceed the longest validation: whole-brain validation splits take minutes
DEFAULT_TIMEOUT_S = 1800.0
#: test hook: this rank exits with code :data:`FAULT_EXIT_CODE` (or hangs, :data:`ENV_FAIL_MODE`
#: ``hang``) at the training step :data:`ENV_FAIL_STEP`
ENV_FAIL_RANK = "POCOVIZ_FAIL_RANK"
ENV_FAIL_STEP = "POCOVIZ_FAIL_STEP"
ENV_FAIL_MODE = "POCOVIZ_FAIL_MODE"
FAULT_EXIT_CODE = 3
#: the variables torchrun sets for every worker
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """The process group cannot be set up as asked (bad environment, device or timeout)."""


# ----------------------------------------------------------------------------------------------
# the process group
# ----------------------------------------------------------------------------------------------


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a process group of more than one rank is set up (training then runs data-parallel)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process validates, logs and writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if active():
        dist.barrier()


def timeout_seconds(value: float | str | None = None) -> float:
    """The collective timeout: ``value``, else :data:`ENV_TIMEOUT`, else :data:`DEFAULT_TIMEOUT_S`."""
    source = "argument"
    if value is None:
        env = os.environ.get(ENV_TIMEOUT, "").strip()
        if not env:
            return DEFAULT_TIMEOUT_S
        value, source = env, f"environment variable {ENV_TIMEOUT}"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise DistributedError(f"the distributed timeout must be a number of seconds, got {value!r} (from the {source})") from None
    if not math.isfinite(t) or t <= 0:
        raise DistributedError(f"the distributed timeout must be a positive number of seconds, got {value!r} (from the {source})")
    return t


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        v = int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name} must be a non-negative integer, got {raw!r} (is this a torchrun worker?)") from None
    if v < 0:
        raise DistributedError(f"environment variable {name} must be a non-negative integer, got {raw!r}")
    return v


def rank_device(preference: str | torch.device | None = None) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is asked for (or present and nothing
    is asked for), else the CPU."""
    from ..backend import get_device

    dev = get_device(preference)
    if dev.type == "cuda":
        local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
        local_world = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else 1
        n = torch.cuda.device_count()
        if dev.index is not None and local_world > 1:
            raise DistributedError(f"device {str(preference)!r}: with several processes per machine each rank uses cuda:LOCAL_RANK; pass 'cuda'")
        if dev.index is None and local >= n:
            raise DistributedError(f"rank with LOCAL_RANK={local} needs cuda:{local}, but this machine has {n} GPU(s): use --nproc-per-node <= {n}")
        return torch.device("cuda", dev.index if dev.index is not None else local)
    if dev.type != "cpu":
        raise DistributedError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {dev.type}")
    return dev


def init(device: str | torch.device | None = None, *, timeout: float | str | None = None) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device.

    Without torchrun's variables nothing happens (one process: the device of
    :func:`pocoviz.backend.get_device`). The backend is NCCL for a CUDA device and gloo for the
    CPU; collectives give up after :func:`timeout_seconds`. Torch threads are split between the
    ranks of a machine (``POCOVIZ_THREADS`` overrides).
    """
    from ..backend import get_device

    if not launched():
        return get_device(device)
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    for name in ("RANK", "WORLD_SIZE"):
        _env_int(name)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise DistributedError(f"environment variable(s) {missing} unset: start the ranks with torchrun (or set them as torchrun does)")
    dev = rank_device(device)
    t = timeout_seconds(timeout)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=t), **kw)
    local_world = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else 1
    if not os.environ.get("POCOVIZ_THREADS", "").strip() and local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return dev


def teardown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str | torch.device | None = None, *, timeout: float | str | None = None) -> Iterator[torch.device]:
    """``with session(device) as dev:`` joins the process group (under torchrun) and leaves it."""
    joined = launched() and not (dist.is_available() and dist.is_initialized())
    dev = init(device, timeout=timeout)
    try:
        yield dev
    finally:
        if joined:
            teardown()


# ----------------------------------------------------------------------------------------------
# helpers for the training loop
# ----------------------------------------------------------------------------------------------


def shard(n: int, rank_: int | None = None, world_: int | None = None) -> slice:
    """Rows of a global batch of ``n`` that rank ``rank_`` of ``world_`` trains on: contiguous,
    the first ``n % world_`` shares one longer (as :func:`torch.tensor_split`)."""
    r = rank() if rank_ is None else int(rank_)
    w = world() if world_ is None else int(world_)
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in 0..{w - 1}")
    q, extra = divmod(int(n), w)
    lo = r * q + min(r, extra)
    return slice(lo, lo + q + (1 if r < extra else 0))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; no-op without a process group)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the ranks, in place (no-op without a process group)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (the state dict) to every rank, in place."""
    if not active():
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=src)


def fault_point(step: int) -> None:
    """Test hook: when ``POCOVIZ_FAIL_RANK`` names this rank and ``POCOVIZ_FAIL_STEP`` this step,
    exit at once (code :data:`FAULT_EXIT_CODE`), or with ``POCOVIZ_FAIL_MODE=hang`` stop
    responding (the other ranks then time out in their next collective)."""
    r, s = os.environ.get(ENV_FAIL_RANK), os.environ.get(ENV_FAIL_STEP)
    if r is None or s is None or not launched():
        return
    if str(rank()) == r.strip() and str(step) == s.strip():
        hang = os.environ.get(ENV_FAIL_MODE, "exit").strip() == "hang"
        what = "hanging" if hang else f"exiting with code {FAULT_EXIT_CODE}"
        print(f"pocoviz: rank {r}: fault injected at step {step} ({ENV_FAIL_RANK}/{ENV_FAIL_STEP}); {what} (unix time {time.time():.3f})",
              file=sys.stderr, flush=True)  # fmt: skip
        if hang:
            while True:
                time.sleep(3600)
        os._exit(FAULT_EXIT_CODE)


# ----------------------------------------------------------------------------------------------
# the launcher
# ----------------------------------------------------------------------------------------------


def launch_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command that runs ``pocoviz ARGV`` in ``nproc`` processes on this machine."""
    if int(nproc) < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}", "-m", "pocoviz", *map(str, argv)]


def launch(argv: Sequence[str], nproc: int, *, timeout: float | None = None, env: dict[str, str] | None = None) -> int:
    """Run ``pocoviz ARGV`` in ``nproc`` processes under torchrun (same interpreter); returns its exit code.

    ``timeout`` sets the collective timeout of the ranks (:data:`ENV_TIMEOUT`). A failed run is
    reported on stderr: torchrun's report above it names the rank and its exit code.
    """
    cmd = launch_command(argv, nproc)
    run_env = dict(os.environ if env is None else env)
    if timeout is not None:
        run_env[ENV_TIMEOUT] = str(timeout_seconds(timeout))
    t0 = time.monotonic()
    rc = subprocess.run(cmd, env=run_env).returncode
    if rc != 0:
        print(
            f"pocoviz: error: distributed run of {nproc} processes failed after {time.monotonic() - t0:.0f} s (torchrun exit code {rc}); "
            "the failed rank and its exit code are in torchrun's report above",
            file=sys.stderr,
            flush=True,
        )
    return rc


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------


def _bench_corpus(n_datasets: int, sessions: int, units: int, frames: int):
    import numpy as np

    from ..recordings.schema import make_recording
    from .data import ForecastCorpus

    recs = []
    for d in range(n_datasets):
        for s in range(sessions):
            rng = np.random.default_rng(1000 * d + s)
            t = np.arange(frames)[:, None]
            x = np.sin(2 * np.pi * t / rng.uniform(20, 40, units) + rng.uniform(0, 2 * np.pi, units)) + 0.1 * rng.standard_normal((frames, units))
            recs.append(make_recording(x.astype(np.float32), sampling_rate_hz=10.0, species=f"d{d}", session=f"s{s}"))
    return ForecastCorpus(recs, strides={"train": 1, "val": 10**6, "test": 10**6})


def _bench_worker(local: int, world_: int, port: int, spec: dict[str, Any], out: str) -> None:
    from .train import TrainConfig, make_model, train

    os.environ.update(RANK=str(local), LOCAL_RANK=str(local), WORLD_SIZE=str(world_), LOCAL_WORLD_SIZE=str(world_),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), POCOVIZ_THREADS=str(spec["threads"]))  # fmt: skip
    torch.set_num_threads(int(spec["threads"]))
    with session("cpu", timeout=120):
        corpus = _bench_corpus(spec["datasets"], spec["sessions"], spec["units"], spec["frames"])
        runs = []
        for _ in range(spec["repeats"]):
            model = make_model(spec["kind"], corpus, seed=0, **spec["model"])
            cfg = TrainConfig(steps=spec["steps"], batch_size=spec["batch_size"], eval_every=10**9, seed=0)
            cpu0 = time.process_time()
            res = train(model, corpus, cfg, device="cpu")
            cpu = time.process_time() - cpu0  # this rank's CPU time (validation at steps 0 and the last included)
            loop = res.train_seconds + res.data_seconds
            runs.append({"windows": res.windows, "loop_s": loop, "train_s": res.train_seconds, "data_s": res.data_seconds, "cpu_s_rank0": cpu,
                         "windows_per_s": res.windows / loop if loop > 0 else math.nan})  # fmt: skip
        if local == 0:
            with open(out, "w") as f:
                json.dump(runs, f)


def bench_ddp(
    *,
    kind: str = "POCO",
    steps: int = 40,
    batch_size: int = 64,
    datasets: int = 2,
    sessions: int = 2,
    units: int = 64,
    frames: int = 1200,
    threads: int = 1,
    processes: Sequence[int] = (1, 2),
    repeats: int = 2,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Training windows/s with 1 and 2 (``processes``) CPU processes on a small synthetic corpus.

    Each run is :func:`~pocoviz.forecast.train.train` (the same global batch: ``batch_size``
    windows per dataset per step) in freshly spawned processes with ``threads`` torch threads
    each, joined by gloo on 127.0.0.1; windows/s counts the global windows over the training loop
    (sampling, forward, backward, gradient reduction, optimiser step; validation excluded), best of
    ``repeats`` runs in the same processes (the first pays for warming up; on a shared machine,
    another process taking a core slows every step of a synchronous data-parallel run).
    ``scaling_efficiency`` is ``w/s(2) / (2 * w/s(1))``; ``cpu_efficiency`` compares CPU time
    instead (rank 0's CPU seconds for its half of the windows against one process's for all of
    them: the efficiency with two free cores, which other work on the machine does not change).
    """
    import tempfile

    import torch.multiprocessing as mp

    from ..serving import free_port

    if model is None:
        model = {"dim": 64, "hidden": 256, "ffn_dropout": 0.0, "latent_dropout": 0.0} if kind == "POCO" else {}
    spec = {"kind": kind, "steps": int(steps), "batch_size": int(batch_size), "datasets": int(datasets), "sessions": int(sessions),
            "units": int(units), "frames": int(frames), "threads": int(threads), "repeats": max(1, int(repeats)), "model": dict(model)}  # fmt: skip
    out: dict[str, Any] = {"bench": "ddp", **{k: v for k, v in spec.items()}, "cpu_count": os.cpu_count(), "backend": "gloo"}
    per: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in processes:
            path = os.path.join(tmp, f"w{n}.json")
            t0 = time.perf_counter()
            mp.start_processes(_bench_worker, args=(int(n), free_port(), spec, path), nprocs=int(n), start_method="spawn", join=True)
            with open(path) as f:
                runs = json.load(f)
            best = max(runs, key=lambda r: r["windows_per_s"])
            per[str(n)] = {**best, "wall_s": time.perf_counter() - t0, "windows_per_s_each": [r["windows_per_s"] for r in runs]}
    out["runs"] = per
    out["windows_per_s"] = {k: v["windows_per_s"] for k, v in per.items()}
    if "1" in per and "2" in per:
        out["scaling_efficiency"] = per["2"]["windows_per_s"] / (2 * per["1"]["windows_per_s"])
        out["cpu_efficiency"] = per["1"]["cpu_s_rank0"] / (2 * per["2"]["cpu_s_rank0"])
    return out

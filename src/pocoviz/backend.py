"""Device and dtype choice, seeding and thread settings.

Every compute package asks this module for its device, so that one environment variable
(``POCOVIZ_DEVICE``) moves all of pocoviz between the CPU and a GPU.

Examples
--------
>>> from pocoviz.backend import get_device, seed_everything
>>> gen = seed_everything(0)
>>> get_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ENV_DEVICE = "POCOVIZ_DEVICE"


class BackendError(RuntimeError):
    """A requested device or setting is not available on this machine."""


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def get_device(preference: str | torch.device | None = None) -> torch.device:
    """Return the torch device that computations should use.

    Parameters
    ----------
    preference
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"mps"`` or ``None``. ``None`` reads the
        ``POCOVIZ_DEVICE`` environment variable, and when that is unset picks CUDA when a GPU is
        present and the CPU otherwise.

    Returns
    -------
    torch.device

    Raises
    ------
    BackendError
        The requested device does not exist here (for example ``cuda`` on a machine without a
        GPU, or ``cuda:3`` with two GPUs). The message says where the request came from.
    """
    source = "argument"
    if preference is None:
        env = os.environ.get(ENV_DEVICE, "").strip()
        if env:
            preference, source = env, f"environment variable {ENV_DEVICE}"
    if preference is None or str(preference).lower() == "auto":
        return torch.device("cuda") if _cuda_count() else torch.device("cpu")
    try:
        dev = torch.device(preference)
    except (RuntimeError, ValueError) as exc:
        raise BackendError(
            f"unknown device {str(preference)!r} (from the {source}); use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from exc
    if dev.type == "cuda":
        n = _cuda_count()
        if n == 0:
            raise BackendError(
                f"device {str(preference)!r} was requested (from the {source}) but torch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
                f"unset {ENV_DEVICE} or set it to 'cpu'"
            )
        if dev.index is not None and dev.index >= n:
            raise BackendError(
                f"device {str(preference)!r} was requested (from the {source}) but only {n} CUDA GPU(s) exist"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise BackendError(f"device 'mps' was requested (from the {source}) but MPS is not available")
    elif dev.type != "cpu":
        raise BackendError(f"device type {dev.type!r} (from the {source}) is not supported; use 'cpu' or 'cuda'")
    return dev


def default_dtype(device: torch.device | None = None) -> torch.dtype:
    """Storage dtype for activity tensors: float32 everywhere (bf16 only inside autocast)."""
    return torch.float32


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype to train with on ``device``: bfloat16 on CUDA, none on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else None


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a torch generator seeded alike.

    Determinism holds on the CPU; CUDA kernels may still differ in the last bits.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BackendError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@dataclass(frozen=True)
class ThreadSettings:
    torch_threads: int
    torch_interop_threads: int
    blas_threads: int


_BLAS_LIMITER: Any = None


def configure_threads(torch_threads: int | None = None, blas_threads: int | None = None) -> ThreadSettings:
    """Set torch and BLAS thread counts deliberately.

    On small machines (≤ 2 cores) multi-threaded OpenBLAS is many times slower than one thread
    on small matrices, and torch threads fight the web server's event loop. Defaults: all cores
    for torch on machines with more than 2 cores, else 1; BLAS 1 thread on ≤ 2 cores.
    ``POCOVIZ_THREADS`` overrides the torch count.
    """
    global _BLAS_LIMITER
    ncpu = os.cpu_count() or 1
    if torch_threads is None:
        env = os.environ.get("POCOVIZ_THREADS", "").strip()
        torch_threads = int(env) if env.isdigit() and int(env) > 0 else (ncpu if ncpu > 2 else 1)
    if blas_threads is None:
        blas_threads = 1 if ncpu <= 2 else min(ncpu, 8)
    if torch_threads < 1 or blas_threads < 1:
        raise BackendError("thread counts must be ≥ 1")
    torch.set_num_threads(int(torch_threads))
    try:
        from threadpoolctl import threadpool_limits

        _BLAS_LIMITER = threadpool_limits(limits=int(blas_threads), user_api="blas")
    except Exception:  # threadpoolctl missing or no BLAS found: nothing to limit
        _BLAS_LIMITER = None
    return ThreadSettings(torch.get_num_threads(), torch.get_num_interop_threads(), int(blas_threads))


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch thread and one BLAS thread, then put the counts back.

    For computations whose bits must not depend on the machine's core count (the shipped demo
    corpus, the shipped sweeps): a float reduction split over more threads sums in another order.
    The thread counts are process-wide, so another thread computing meanwhile runs single-threaded too.

    Examples
    --------
    >>> import torch
    >>> with single_threaded():
    ...     torch.get_num_threads()
    1
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        blas: Any = threadpool_limits(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or no BLAS found: nothing to limit
        blas = contextlib.nullcontext()
    try:
        with blas:
            yield
    finally:
        torch.set_num_threads(threads)


def describe() -> dict[str, Any]:
    """A JSON-able summary of the compute environment (used by ``pocoviz bench``)."""
    import platform

    dev = get_device()
    info: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info

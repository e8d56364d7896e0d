"""Device choice, seeding, thread settings and the environment summary (pocoviz.backend).

The CUDA cases hold on both kinds of machine: without a GPU every CUDA request raises a
BackendError naming where it came from; with one, ``cuda`` and existing indices work and an index
past the last GPU raises.
"""

from __future__ import annotations

import doctest
import json
import os
import platform
import random

import numpy as np
import pytest
import torch

from pocoviz import backend
from pocoviz.backend import (
    ENV_DEVICE,
    BackendError,
    ThreadSettings,
    autocast_dtype,
    configure_threads,
    default_dtype,
    describe,
    get_device,
    seed_everything,
    single_threaded,
)

HAS_CUDA = torch.cuda.is_available()
N_GPU = torch.cuda.device_count() if HAS_CUDA else 0
FROM_ARG = "from the argument"
FROM_ENV = f"from the environment variable {ENV_DEVICE}"


@pytest.fixture(autouse=True)
def _no_device_env(monkeypatch):
    """Tests start without POCOVIZ_DEVICE / POCOVIZ_THREADS, whatever the shell has set."""
    monkeypatch.delenv(ENV_DEVICE, raising=False)
    monkeypatch.delenv("POCOVIZ_THREADS", raising=False)


# ---------------------------------------------------------------------------------- get_device


def test_auto_picks_cuda_when_present_else_cpu():
    expected = torch.device("cuda") if HAS_CUDA else torch.device("cpu")
    assert get_device() == expected
    assert get_device(None) == expected
    assert get_device("auto") == expected
    assert get_device("AUTO") == expected


@pytest.mark.parametrize(
    ("preference", "expected"),
    [
        ("cpu", torch.device("cpu")),
        ("cpu:0", torch.device("cpu", 0)),
        (torch.device("cpu"), torch.device("cpu")),
    ],
)
def test_cpu_always_available(preference, expected):
    dev = get_device(preference)
    assert isinstance(dev, torch.device) and dev == expected and dev.type == "cpu"


@pytest.mark.parametrize(
    ("preference", "index"),
    [("cuda", None), ("cuda:0", 0), ("cuda:3", 3), ("cuda:99", 99), (torch.device("cuda", 1), 1)],
)
def test_cuda_requests(preference, index):
    """Works exactly when the GPU exists; otherwise a BackendError that names the argument."""
    exists = N_GPU > 0 and (index is None or index < N_GPU)
    if exists:
        dev = get_device(preference)
        assert dev.type == "cuda" and dev.index == index
        torch.zeros(1, device=dev)  # really usable
    else:
        with pytest.raises(BackendError) as err:
            get_device(preference)
        msg = str(err.value)
        assert FROM_ARG in msg and FROM_ENV not in msg
        assert str(preference) in msg
        if N_GPU == 0:
            assert "no CUDA GPU" in msg
        else:
            assert f"only {N_GPU} CUDA GPU(s) exist" in msg


@pytest.mark.parametrize("value", ["cuda", "cuda:99"])
def test_cuda_from_environment(monkeypatch, value):
    monkeypatch.setenv(ENV_DEVICE, value)
    if value == "cuda" and HAS_CUDA:
        assert get_device() == torch.device("cuda")
        return
    with pytest.raises(BackendError) as err:
        get_device()
    assert FROM_ENV in str(err.value) and FROM_ARG not in str(err.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("cpu", "cpu"),
        ("  cpu  ", "cpu"),  # stripped
        ("auto", "cuda" if HAS_CUDA else "cpu"),
        ("", "cuda" if HAS_CUDA else "cpu"),  # empty: as if unset
    ],
)
def test_environment_variable_is_used_when_no_argument(monkeypatch, env, expected):
    monkeypatch.setenv(ENV_DEVICE, env)
    assert get_device().type == expected
    assert get_device(None).type == expected


def test_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv(ENV_DEVICE, "tpu")  # would raise if it were read
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(BackendError, match="from the argument"):
        get_device("gpu0")


@pytest.mark.parametrize("preference", ["tpu", "gpu0", "gpu", "CPU", "cuda:x", "", "meta", "xla"])
def test_unknown_or_unsupported_devices_raise(preference):
    with pytest.raises(BackendError) as err:
        get_device(preference)
    msg = str(err.value)
    assert FROM_ARG in msg
    assert repr(preference) in msg


@pytest.mark.parametrize("value", ["tpu", "gpu0", "meta"])
def test_unknown_device_from_environment_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_DEVICE, value)
    with pytest.raises(BackendError, match=f"environment variable {ENV_DEVICE}"):
        get_device()


def test_backend_error_is_a_runtime_error():
    assert issubclass(BackendError, RuntimeError)


# ------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ("device", "expected"),
    [(torch.device("cpu"), None), (torch.device("cuda"), torch.bfloat16), (torch.device("cuda", 1), torch.bfloat16)],
)
def test_autocast_dtype(device, expected):
    assert autocast_dtype(device) is expected  # needs no GPU: only the device type is read


def test_default_dtype_is_float32():
    assert default_dtype() is torch.float32
    assert default_dtype(torch.device("cpu")) is torch.float32


# --------------------------------------------------------------------------------------- seeding


def _draws(gen: torch.Generator) -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(4).tolist(),
        torch.rand(5).tolist(),
        torch.randn(3, generator=gen).tolist(),
    )


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40, np.int64(7)])
def test_same_seed_same_draws(seed):
    first = _draws(seed_everything(seed))
    second = _draws(seed_everything(seed))
    assert first == second
    # the returned generator starts where torch's global generator starts
    gen = seed_everything(seed)
    assert torch.equal(torch.rand(6, generator=gen), torch.rand(6))


def test_different_seeds_different_draws():
    a, b = _draws(seed_everything(0)), _draws(seed_everything(1))
    for x, y in zip(a, b):
        assert x != y


def test_seed_everything_returns_a_cpu_generator():
    gen = seed_everything(3)
    assert isinstance(gen, torch.Generator) and gen.device == torch.device("cpu")
    assert gen.initial_seed() == 3


@pytest.mark.parametrize("seed", [-1, -(2**40), 1.5, "3", None])
def test_bad_seeds_raise(seed):
    with pytest.raises(BackendError, match="non-negative integer"):
        seed_everything(seed)


# --------------------------------------------------------------------------------------- threads


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def threads():
    """configure_threads, with torch's thread count and the BLAS limits put back afterwards."""
    saved_torch, saved_blas, saved_limiter = torch.get_num_threads(), _blas_threads(), backend._BLAS_LIMITER
    limiters = []

    def call(*args, **kwargs) -> ThreadSettings:
        try:
            return configure_threads(*args, **kwargs)
        finally:
            if backend._BLAS_LIMITER is not None and backend._BLAS_LIMITER not in limiters:
                limiters.append(backend._BLAS_LIMITER)

    yield call
    for lim in reversed(limiters):
        lim.restore_original_limits()
    backend._BLAS_LIMITER = saved_limiter
    torch.set_num_threads(saved_torch)
    assert torch.get_num_threads() == saved_torch
    assert _blas_threads() == saved_blas


@pytest.mark.parametrize("n", [1, 2, 3])
def test_configure_threads_sets_torch_threads(threads, n):
    settings = threads(torch_threads=n)
    assert torch.get_num_threads() == n
    assert settings.torch_threads == n
    assert settings.torch_interop_threads == torch.get_num_interop_threads()


@pytest.mark.parametrize("blas", [1, 2])
def test_configure_threads_limits_blas(threads, blas):
    settings = threads(torch_threads=1, blas_threads=blas)
    assert settings.blas_threads == blas
    libs = _blas_threads()
    assert libs, "numpy links a BLAS that threadpoolctl should find"
    assert all(n == blas for n in libs)


def test_single_threaded_runs_one_torch_and_one_blas_thread_and_puts_them_back(threads):
    threads(torch_threads=3, blas_threads=2)
    with single_threaded():
        assert torch.get_num_threads() == 1
        assert _blas_threads() and all(n == 1 for n in _blas_threads())
    assert torch.get_num_threads() == 3 and all(n == 2 for n in _blas_threads())
    with pytest.raises(ZeroDivisionError), single_threaded():
        _ = 1 / 0
    assert torch.get_num_threads() == 3 and all(n == 2 for n in _blas_threads())


@pytest.mark.parametrize(("env", "expected"), [("1", 1), ("3", 3), (" 2 ", 2)])
def test_pocoviz_threads_environment_is_honoured(threads, monkeypatch, env, expected):
    monkeypatch.setenv("POCOVIZ_THREADS", env)
    assert threads().torch_threads == expected
    assert torch.get_num_threads() == expected


@pytest.mark.parametrize("env", ["0", "-2", "many", ""])
def test_unusable_pocoviz_threads_falls_back_to_the_default(threads, monkeypatch, env):
    monkeypatch.setenv("POCOVIZ_THREADS", env)
    ncpu = os.cpu_count() or 1
    expected = ncpu if ncpu > 2 else 1
    assert threads().torch_threads == expected
    assert torch.get_num_threads() == expected


def test_argument_beats_pocoviz_threads(threads, monkeypatch):
    monkeypatch.setenv("POCOVIZ_THREADS", "3")
    assert threads(torch_threads=1).torch_threads == 1
    assert torch.get_num_threads() == 1


def test_default_blas_threads_follow_the_core_count(threads):
    ncpu = os.cpu_count() or 1
    settings = threads(torch_threads=1)
    assert settings.blas_threads == (1 if ncpu <= 2 else min(ncpu, 8))


@pytest.mark.parametrize(("kwargs"), [{"torch_threads": 0}, {"torch_threads": -1}, {"blas_threads": 0}])
def test_bad_thread_counts_raise_and_change_nothing(threads, kwargs):
    before = torch.get_num_threads()
    with pytest.raises(BackendError, match="≥ 1"):
        threads(**kwargs)
    assert torch.get_num_threads() == before


# -------------------------------------------------------------------------------------- describe


def test_describe_keys_and_values():
    info = describe()
    base = {"device", "torch", "numpy", "python", "cpu_count", "torch_threads", "cuda_available"}
    assert set(info) == base | ({"gpu"} if HAS_CUDA else set())
    assert info["device"] == str(get_device())
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    assert info["python"] == platform.python_version()
    assert info["cpu_count"] == os.cpu_count()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cuda_available"] is HAS_CUDA
    assert json.loads(json.dumps(info)) == info  # JSON-able as is


def test_describe_follows_the_device_environment(monkeypatch):
    monkeypatch.setenv(ENV_DEVICE, "cpu")
    info = describe()
    assert info["device"] == "cpu" and "gpu" not in info


def test_module_doctests_pass():
    result = doctest.testmod(backend, verbose=False)
    assert result.attempted >= 2 and result.failed == 0

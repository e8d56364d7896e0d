"""Warm the server in the background: import the plotting stack, load the demo corpus, compile
Datashader's kernels (numba compiles them on first use, which would hold up the first raster) while the
browser is still loading BokehJS."""

from __future__ import annotations

import threading

_THREAD: threading.Thread | None = None
_LOCK = threading.Lock()


def enable_kernel_cache() -> int:
    """Let numba cache Datashader's resampling kernels on disk (numba's public ``enable_caching``),
    so that a restarted server loads them instead of compiling them again. Returns how many."""
    try:
        import datashader.resampling as resampling
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return 0
    n = 0
    for obj in vars(resampling).values():
        if isinstance(obj, CPUDispatcher):
            try:
                obj.enable_caching()
                n += 1
            except Exception:  # a kernel numba cannot cache (e.g. a closure) just compiles as before
                pass
    return n


def _warm() -> None:
    import holoviews as hv
    import numpy as np
    from holoviews.operation.datashader import rasterize

    from pocoviz.controllers.sources import SOURCE_CACHE

    try:
        sessions = SOURCE_CACHE.load("demo", None)
        from .recordings import prepare_session

        name, ds = next(iter(sessions.items()))
        prepare_session(("demo", name, id(ds)), ds, name)
    except Exception:  # the view reports loading errors itself
        pass
    enable_kernel_cache()
    image = hv.Image((np.arange(8.0), np.arange(8.0), np.zeros((8, 8), np.float32)), kdims=["time", "row"])
    rasterize(image, dynamic=False, width=4, height=4, precompute=True)


def start_warmup() -> threading.Thread:
    """Start the warm-up once per process; returns its thread."""
    global _THREAD
    with _LOCK:
        if _THREAD is None:
            _THREAD = threading.Thread(target=_warm, name="pocoviz-warmup", daemon=True)
            _THREAD.start()
        return _THREAD


def wait_warmup(timeout: float | None = 60.0) -> None:
    """Block until the warm-up has finished (no-op when it never started)."""
    if _THREAD is not None:
        _THREAD.join(timeout)

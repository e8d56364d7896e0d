"""``pocoviz serve``: the app on Panel's server, in one process or several.

With ``num_procs`` > 1 Bokeh's server binds the port, then forks that many processes that accept
connections on it (Tornado's multi-process mode; not on Windows). Nothing that starts a thread may
run before the fork: the warm-up then runs in each process at its first session, and Panel's
worker threads are created by each process after it. The processes share what is kept on disk:

- forecasts: ``POCOVIZ_SHARED_FORECASTS`` is set, so every recording's forecasts (not only those
  of lazily opened whole-brain stores) go to the on-disk cache under ``POCOVIZ_CACHE_DIR``
  (:mod:`pocoviz.forecast.diskcache`: per-block claims, so two processes never compute one block,
  and each reads the blocks the other finished);
- layouts: UMAP layouts are read from and written to the layout cache on disk
  (:func:`pocoviz.embeddings.cached_layout`);
- loaded recordings and checkpoints are per process (read from the same files).

A browser session lives in one process: Bokeh creates a session when its websocket connects, in
the process that accepted that connection. Behind a reverse proxy spreading users over several
hosts, keep each user on one host (sticky sessions) and pass websockets through (README,
"Scaling out").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: set by :func:`serve` when several processes serve the app (read by the Forecast controller)
SHARED_FORECASTS_ENV = "POCOVIZ_SHARED_FORECASTS"


def check_num_procs(num_procs: int) -> None:
    """Raise ValueError for a process count the server cannot run."""
    if num_procs < 1:
        raise ValueError(f"--num-procs {num_procs}: at least 1")
    if num_procs > 1 and sys.platform == "win32":
        raise ValueError("--num-procs > 1 is not supported on Windows (Tornado cannot fork there)")


def serve(
    data_dir: str | os.PathLike | None, *, port: int = 5006, address: str = "127.0.0.1", num_procs: int = 1, num_threads: int = 2,
    show: bool = False, websocket_origins: list[str] | None = None,
) -> None:  # fmt: skip
    """Serve the app on ``address:port`` until interrupted (see module docstring)."""
    check_num_procs(num_procs)
    import panel as pn

    from . import create_app
    from .app import serve_resources_locally
    from .warmup import start_warmup

    serve_resources_locally()  # whatever BOKEH_RESOURCES says: the app works offline
    folder = str(Path(data_dir).resolve()) if data_dir else None
    if num_procs == 1:
        start_warmup()  # imports, demo corpus, Datashader kernels: ready before the first browser arrives
    else:
        os.environ[SHARED_FORECASTS_ENV] = "1"  # inherited by the forked processes
    pn.config.nthreads = num_threads
    procs = f", {num_procs} processes" if num_procs > 1 else ""
    print(f"pocoviz: serving on http://{address}:{port}/app (data directory: {folder or 'none'}{procs})", flush=True)
    pn.serve(
        {"app": lambda: create_app(folder)},
        port=port,
        address=address,
        websocket_origin=websocket_origins or [f"{address}:{port}", f"localhost:{port}"],
        show=show and num_procs == 1,
        title="pocoviz",
        liveness=True,
        num_procs=num_procs,
    )

"""``pocoviz bench --only scale``: whole-brain recordings at ZAPBench's size (71,721 units × 7,879
frames, 2.1 GB of float32), measured on the machine at hand.

Each step runs in a fresh subprocess where memory matters, so that its peak RSS is its own:

- ``synth``: ``pocoviz synth`` writes the store (chunked Zarr with its pyramid): seconds, peak RSS,
  bytes on disk;
- ``open``: ``open_recording`` on it (lazy): seconds, RSS added by the open, peak RSS;
- ``info``: ``pocoviz info`` on it: wall seconds of the whole command (interpreter start included)
  and of the summary alone;
- ``train``: POCO streaming windows from the store (max_units 512, batch 64, worker processes);
- ``forecast``: forecasts for 8 shown units at new cursors with the whole population as context,
  then a bounded part of the full pass into the on-disk cache;
- ``embeddings``: a torch UMAP layout of 71,721 unit embeddings (128-d, region-clustered) on this
  machine's backend device, and the Datashader image the Embeddings tab draws of them;
- ``app``: the served app in headless Chromium: raster visible after choosing the file, pan/zoom
  re-render latencies over 20 random viewports, server RSS after browsing;
- ``app-embeddings``: the Embeddings tab on an untrained POCO checkpoint of the store's units
  (written beside the store once): table, Datashader layout, a box selection and its traces, the
  region separation test.

``--quick`` runs the same steps on a 2,000 × 3,000 store (seconds), to check the machinery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FULL = (71_721, 7_879)
QUICK = (3_000, 2_000)

_OPEN_PROBE = r"""
import json, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
from pocoviz.recordings import open_recording, summarize
imported = time.perf_counter() - t0
rss0 = status("VmRSS:")
t0 = time.perf_counter()
ds = open_recording(sys.argv[1])
opened = time.perf_counter() - t0
rss1 = status("VmRSS:")
t0 = time.perf_counter()
summary = summarize(ds)
summarised = time.perf_counter() - t0
print(json.dumps({
    "open_s": round(opened, 3), "summarize_s": round(summarised, 3), "import_s": round(imported, 3),
    "rss_before_mb": round(rss0, 1), "rss_after_open_mb": round(rss1, 1), "rss_added_by_open_mb": round(rss1 - rss0, 1),
    "peak_rss_mb": round(status("VmHWM:"), 1), "lazy": type(ds.activity.data).__module__.split(".")[0] == "dask",
    "activity_checked": summary.get("activity_checked"),
}))
"""


def _python() -> str:
    return sys.executable


def _run_json(args: list[str], timeout: float) -> dict[str, Any]:
    """Run a subprocess that prints one JSON object on its last line; its wall time and its exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}", "wall_s": round(wall, 2)}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"stdout": proc.stdout[-500:]}
    out["wall_s"] = round(wall, 2)
    return out


def bench_open(store: Path) -> dict[str, Any]:
    """``open_recording`` and ``summarize`` in a fresh interpreter (RSS is the process's own)."""
    return _run_json([_python(), "-c", _OPEN_PROBE, str(store)], timeout=600)


def bench_info(store: Path) -> dict[str, Any]:
    """``pocoviz info STORE``: wall seconds of the whole command, as a user runs it."""
    t0 = time.perf_counter()
    proc = subprocess.run([_python(), "-m", "pocoviz.cli", "info", str(store)], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": round(wall, 2), "exit": proc.returncode}
    out["output"] = (proc.stdout if proc.returncode == 0 else proc.stderr)[-600:]
    t0 = time.perf_counter()
    subprocess.run([_python(), "-c", "import pocoviz.cli, pocoviz.recordings"], capture_output=True, timeout=600)
    out["interpreter_and_imports_s"] = round(time.perf_counter() - t0, 2)
    return out


def bench_embeddings_scale(units: int, dim: int = 128, regions: int = 60, seed: int = 0) -> dict[str, Any]:
    """torch UMAP of ``units`` embeddings (clustered by region, as a trained POCO's are) with
    progress reports, then the Datashader image of the layout, as the Embeddings tab computes them."""
    import numpy as np
    import torch

    from pocoviz.backend import get_device
    from pocoviz.embeddings.torch_umap import neighbor_preservation, torch_umap_layout

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((regions, dim)).astype(np.float32) * 2.0
    region = rng.integers(0, regions, units)
    x = centres[region] + rng.standard_normal((units, dim)).astype(np.float32)
    reports: list[float] = []
    t0 = time.perf_counter()
    xy = torch_umap_layout(x, seed=seed, progress=reports.append)
    umap_s = time.perf_counter() - t0
    sample = rng.choice(units, size=min(units, 5000), replace=False)
    out: dict[str, Any] = {
        "device": str(get_device()), "torch_threads": torch.get_num_threads(), "units": units, "dim": dim,
        "torch_umap_s": round(umap_s, 2), "progress_reports": len(reports),
        "neighbour_preservation_15nn_5k_sample": round(float(neighbor_preservation(x[sample], xy[sample], k=15)), 3),
    }  # fmt: skip
    try:
        from pocoviz.ui.embeddings import SIZE, shade_points
    except ImportError as exc:  # the app's extras are not installed
        out["datashader"] = f"skipped: {exc}"
        return out
    colors = np.array([f"#{(37 * r) % 256:02x}{(91 * r) % 256:02x}{(173 * r) % 256:02x}" for r in range(regions)])[region]
    data = {"x": xy[:, 0], "y": xy[:, 1], "color": colors, "title": ""}
    shade_points(data, ("emb_x", "emb_y"), None, None, SIZE, SIZE)  # first call: imports and JIT
    t0 = time.perf_counter()
    for _ in range(5):
        shade_points(data, ("emb_x", "emb_y"), None, None, SIZE, SIZE)
    out["datashader_image_s"] = round((time.perf_counter() - t0) / 5, 4)
    return out


def _step(name: str, fn, *args, **kwargs) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # one failing step must not hide the others' figures
        import traceback

        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    if isinstance(out, dict):
        out.setdefault("step_s", round(time.perf_counter() - t0, 2))
    return out


def bench_scale(quick: bool = False, store: str | os.PathLike | None = None, steps: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The whole-brain figures (see the module docstring). ``store``: where the synthetic store is
    written (default: ``$POCOVIZ_CACHE_DIR``/bench, or ``~/.cache/pocoviz/bench``); an existing
    store of the right size and seed is reused (its synthesis figures are then those recorded
    beside it)."""
    units, frames = QUICK if quick else FULL
    root = Path(store) if store else _cache_dir() / "bench"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"wholebrain-{units}x{frames}-seed0.zarr"
    steps = steps or ("synth", "open", "info", "train", "forecast", "embeddings", "app", "app-embeddings")
    out: dict[str, Any] = {"units": units, "frames": frames, "store": str(path)}

    record = path.with_name(path.name + ".synth.json")
    if "synth" in steps or not path.exists():
        if path.exists() and record.exists():
            out["synth"] = {**json.loads(record.read_text()), "reused": True}
        else:
            from pocoviz.recordings.wholebrain import bench_synth

            out["synth"] = _step("synth", bench_synth, path, units=units, frames=frames, seed=0)
            if "error" not in out["synth"]:
                record.write_text(json.dumps(out["synth"]))
    if not path.exists():
        out["error"] = "the synthetic store was not written; the other steps need it"
        return out
    if "open" in steps:
        out["open"] = _step("open", bench_open, path)
    if "info" in steps:
        out["info"] = _step("info", bench_info, path)
    if "train" in steps:
        from pocoviz.forecast.stream import bench_train_stream

        out["train"] = _step("train", bench_train_stream, path, steps=10 if quick else 30, max_units=512, batch_size=64, workers=2)
    if "forecast" in steps:
        from pocoviz.forecast.diskcache import bench_forecast_scale

        out["forecast"] = _step("forecast", bench_forecast_scale, path, shown=8)
    if "embeddings" in steps:
        out["embeddings"] = _step("embeddings", bench_embeddings_scale, units)
    if "app" in steps:
        from pocoviz.ui.scale_bench import measure_scale_app

        out["app"] = _step("app", measure_scale_app, root, path.name, viewports=20, seed=0)
    if "app-embeddings" in steps:
        from pocoviz.ui.scale_bench import measure_embeddings_app, write_untrained_poco

        card = root / "models" / f"poco-untrained-{path.stem}"
        if not card.with_suffix(".json").exists():
            write_untrained_poco(path, card)
        out["app_embeddings"] = _step("app-embeddings", measure_embeddings_app, root, f"data:models/{card.name}", units)
    return out


def _cache_dir() -> Path:
    env = os.environ.get("POCOVIZ_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "pocoviz"

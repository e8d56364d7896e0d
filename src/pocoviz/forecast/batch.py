"""Batch forecasting on a Dask cluster: ``pocoviz forecast MODEL DATA... --out forecasts.zarr``.

One model's forecasts at every cursor of whole recordings (cursor × step × unit) and their
per-window errors are written into a chunked Zarr store, in parallel on a Dask ``distributed``
cluster: a :class:`~distributed.LocalCluster` started for the run by default, or an existing one
(``--scheduler ADDRESS``). Each task computes a block of :data:`~pocoviz.forecast.diskcache.BLOCK`
cursors (or a few: ``--blocks-per-task``) of one recording session on its worker's device
(:func:`pocoviz.backend.get_device`; with several GPUs on one machine, worker ``i`` of a local
cluster takes GPU ``i mod n``). Workers load the model and open the recording themselves (from the
checkpoint's and the recording's paths: nothing large is sent over the network), so every worker
must see the same files at the same paths (one machine, or a shared file system). A re-run on the
same store computes only the blocks not finished (resumable); one run at a time per store (the
run removes claims left by an interrupted one).

The Forecast tab (:mod:`pocoviz.controllers.forecast`) reads such a store, found in its data
directory, instead of computing, when the store holds the chosen model (same checksum) and the
recording (same identity) complete (:func:`find_stored_forecast`).

Store layout (``OUT.zarr``; a Zarr v3 hierarchy readable without the model)
---------------------------------------------------------------------------
- ``zarr.json``: the root group; its attribute :data:`STORE_ATTR` holds::

    {"layout": "pocoviz-forecast-store-1", "created": ISO time, "updated": ISO time,
     "model": {"name", "kind", "checksum" (of the checkpoint as loaded), "context" C, "horizon" P},
     "block": cursors per block, "entries": {KEY: ENTRY, ...}}

  and each ``ENTRY`` (one recording session) is::

    {"path": "forecasts/KEY", "recording": {"path", "size", "mtime_ns", "session"} (the file's
     identity, :func:`~pocoviz.forecast.diskcache.path_identity`), "session", "model_checksum"
     (the model as it forecasts this session), "T", "U", "C", "P", "block", "unit_chunk",
     "n_blocks", "blocks_done", "complete", "cursors" (valid cursors), "lazy",
     "metrics": {"all": M, "test": M}}

  with ``M = {"n_windows", "score", "mse", "copy_mse", "mae", "copy_mae", "per_step_mse",
  "per_step_copy_mse", "per_step_mae", "per_step_copy_mae", "region_scores"?}`` (the numbers of
  :meth:`~pocoviz.forecast.playback.RecordingForecast.metrics` over every window, and over the
  test split's windows);
- ``forecasts/KEY/``: one :class:`~pocoviz.forecast.diskcache.DiskForecast` entry (a Zarr group
  whose attributes repeat ``ENTRY``):

  - ``forecast.zarr``: the forecasts, a (T, P, U) float16 Zarr array in chunks of
    (block, P, unit_chunk), uncompressed; ``forecast[t, k, u]`` forecasts frame ``t + k`` of unit
    ``u`` from frames ``t-C..t-1``; NaN where a cursor is not valid (``t < C``, ``t > T-P``, a NaN
    in its window) or not computed;
  - ``blocks/<b>.npz``: block ``b``'s marker (cursors ``b·block..(b+1)·block-1``), written last:
    ``valid`` (n,), per-window errors summed over units ``sse_step``, ``sae_step``,
    ``copy_sse_step``, ``copy_sae_step`` (n, P) float64 (NaN for invalid cursors), per-unit sums
    over the block ``unit_sse``, ``unit_copy`` (U,) and a CRC32 of each chunk written ``crc``;
  - ``meta.json``: what the entry is (layout, identity, checksum, shapes);
- ``stats/<id>.npz``: the z-scoring statistics (``mean``, ``sd`` per unit) of a lazily opened
  recording, computed once by the client and read by every worker.

:func:`read_store` returns the attributes; :func:`open_store_entry` an ``xarray.Dataset`` of one
entry (Dask-backed forecasts, per-window errors) without the model.

Examples
--------
>>> from pocoviz.forecast.batch import forecast_to_store
>>> summary = forecast_to_store("poco_demo", ["fish.zarr"], "forecasts.zarr", n_workers=2)  # doctest: +SKIP
>>> summary["sessions"][0]["score"]                                                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..storeformat import FORECAST_STORE_ATTR as STORE_ATTR
from ..storeformat import FORECAST_STORE_LAYOUT as STORE_LAYOUT
from ..storeformat import is_forecast_store
from .diskcache import BLOCK, UNIT_CHUNK, ChunkedActivity, DiskForecast, _key, model_checksum, path_identity

#: a store never evicts entries (it is not a cache)
_NO_LIMIT = 2**62
_METRIC_KEYS = ("n_windows", "score", "mse", "copy_mse", "mae", "copy_mae", "per_step_mse", "per_step_copy_mse", "per_step_mae", "per_step_copy_mae")


class BatchForecastError(RuntimeError):
    """A batch forecast cannot start or did not finish; the message names the file and what."""


# ==================================================================================== the store
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            got = json.load(f)
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def read_store(path: str | os.PathLike) -> dict[str, Any]:
    """The description of a forecast store (its :data:`STORE_ATTR` attribute; see the module's
    docstring). ValueError naming ``path`` when it is not one."""
    p = Path(path)
    if not is_forecast_store(p):
        raise ValueError(f"{p}: not a pocoviz forecast store (no {STORE_ATTR!r} attribute with layout {STORE_LAYOUT!r} in zarr.json)")
    return dict(_read_json(p / "zarr.json")["attributes"][STORE_ATTR])


def _write_attrs(path: Path, attrs: dict[str, Any]) -> None:
    import zarr

    g = zarr.open_group(str(path), mode="a", zarr_format=3)
    g.attrs.update(attrs)


def open_store_entry(path: str | os.PathLike, key: str | None = None) -> Any:
    """One entry of a forecast store as an ``xarray.Dataset``, without the model: ``forecast``
    (cursor, step, unit) float16, Dask-backed on the store's chunks; per-window errors summed over
    units ``sse_step``, ``sae_step``, ``copy_sse_step``, ``copy_sae_step`` (cursor, step) and
    ``done``, ``valid`` (cursor) from the finished blocks' markers; attrs from the entry.
    ``key``: the entry (default: the only one)."""
    import dask.array as da
    import xarray as xr
    import zarr

    p = Path(path)
    info = read_store(p)
    entries = info.get("entries", {})
    if key is None:
        if len(entries) != 1:
            raise ValueError(f"{p}: holds {len(entries)} entries ({', '.join(entries) or 'none'}): name one")
        key = next(iter(entries))
    if key not in entries:
        raise ValueError(f"{p}: no entry {key!r} (entries: {', '.join(entries) or 'none'})")
    e = entries[key]
    arr = zarr.open_array(str(p / e["path"] / "forecast.zarr"), mode="r")
    T, P, block = int(e["T"]), int(e["P"]), int(e["block"])
    errs = {k: np.full((T, P), np.nan) for k in ("sse_step", "sae_step", "copy_sse_step", "copy_sae_step")}
    valid, done = np.zeros(T, bool), np.zeros(T, bool)
    for b in range(-(-T // block)):
        marker = p / e["path"] / "blocks" / f"{b}.npz"
        if not marker.is_file():
            continue
        lo, hi = b * block, min(T, (b + 1) * block)
        with np.load(marker) as z:  # no pickles: np.load refuses object arrays by default
            v = np.asarray(z["valid"], bool)
            for k in errs:
                errs[k][lo:hi] = z[k]
        valid[lo:hi] = v
        done[lo:hi] = v
    data = {k: (("cursor", "step"), x) for k, x in errs.items()}
    data["forecast"] = (("cursor", "step", "unit"), da.from_zarr(arr))
    data["done"] = (("cursor",), done)
    data["valid"] = (("cursor",), valid)
    attrs = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in e.items() if k != "metrics"}
    attrs.update(model=info["model"].get("name", ""), model_kind=info["model"].get("kind", ""), score=e.get("metrics", {}).get("all", {}).get("score", np.nan),
                 description="forecast[cursor, step, unit] predicts frame cursor + step - 1 of unit from frames cursor-C..cursor-1")  # fmt: skip
    return xr.Dataset(data, coords={"cursor": np.arange(T), "step": np.arange(1, P + 1), "unit": np.arange(int(e["U"]))}, attrs=attrs)


# ==================================================================================== recordings
def recording_identity(ds: Any, path: str | os.PathLike, session: str) -> dict[str, Any]:
    """A session's file identity as the Forecast tab computes it: the file the dataset was read
    from (``encoding["source"]``) when it exists, else ``path``."""
    for value in (ds.encoding.get("source"), ds["activity"].encoding.get("source")):
        if value and os.path.exists(str(value)):
            return path_identity(value, session)
    return path_identity(path, session)


def _open_sessions(path: Path, load: bool | None = None) -> dict[str, Any]:
    import dask

    from ..recordings import corpus_sessions, open_corpus

    with dask.config.set(scheduler="synchronous"):
        return corpus_sessions(open_corpus(path, load=load))


def _direct_array(ds: Any, path: str) -> Any:
    """The store's ``activity`` Zarr array when it is stored (time, unit) with nothing to decode
    (as the Forecast tab reads it), else None."""
    act = ds["activity"]
    if act.dims != ("time", "unit") or any(k in act.encoding for k in ("scale_factor", "add_offset")):
        return None
    try:
        import zarr

        arr = zarr.open_group(path, mode="r")["activity"]
    except Exception:
        return None
    return arr if tuple(arr.shape) == (ds.sizes["time"], ds.sizes["unit"]) and arr.dtype.kind == "f" else None


def _activity_source(ds: Any, source: str, lazy: bool, stats_path: str | None) -> Any:
    """Frames as the models see them, as the Forecast tab builds them: z-scored in memory
    (:func:`~pocoviz.recordings.preprocess.zscore`), or read in slabs from a lazily opened store."""
    from ..recordings.preprocess import zscore
    from .diskcache import ArrayActivity

    act = ds["activity"].transpose("time", "unit")
    zscored = act.attrs.get("units") == "z-score"
    if not lazy:
        a = np.asarray(act.values, dtype=np.float32)
        return ArrayActivity(a if zscored else zscore(a).astype(np.float32))
    direct = _direct_array(ds, source)
    rows = int(act.chunks[0][0]) if act.chunks else 256
    return ChunkedActivity(act.data if direct is None else direct, zscored=zscored, stats_path=stats_path, rows=rows)


class _Shape:
    """An activity source that knows only its shape (the client opens entries without reading frames)."""

    def __init__(self, T: int, U: int):
        self.T, self.U = int(T), int(U)

    def slab(self, t0: int, t1: int) -> np.ndarray:  # pragma: no cover - never read on the client
        raise RuntimeError("the batch client does not read frames")


# ==================================================================================== the workers
_WORKER_LOCK = threading.Lock()
_WORKER_MODELS: OrderedDict[tuple, Any] = OrderedDict()
_WORKER_ENTRIES: OrderedDict[tuple, DiskForecast] = OrderedDict()


def _worker_device(pref: str | None) -> Any:
    import torch

    from ..backend import get_device

    dev = get_device(pref)
    if dev.type == "cuda" and dev.index is None and torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            name = get_worker().name
            if isinstance(name, int):  # a LocalCluster's worker i takes GPU i mod n
                dev = torch.device("cuda", name % torch.cuda.device_count())
        except Exception:
            pass
    return dev


def _worker_forecast(spec: dict[str, Any]) -> DiskForecast:
    """The entry a task computes, opened once per worker process (model loaded from its checkpoint,
    recording opened from its path)."""
    from .checkpoint import load_model

    ck = (spec["key"], spec["out"], spec["device"])
    with _WORKER_LOCK:
        fc = _WORKER_ENTRIES.get(ck)
        if fc is not None:
            _WORKER_ENTRIES.move_to_end(ck)
            return fc
        stem = spec["model"]
        card = Path(stem + ".json")
        mk = (stem, card.stat().st_mtime_ns if card.exists() else None)
        base = _WORKER_MODELS.get(mk)
        if base is None:
            base = load_model(stem, device="cpu")
            _WORKER_MODELS[mk] = base
            while len(_WORKER_MODELS) > 2:
                _WORKER_MODELS.popitem(last=False)
        sessions = _open_sessions(Path(spec["recording"]), load=False if spec["lazy"] else True)
        if spec["session"] not in sessions:
            raise BatchForecastError(f"{spec['recording']}: no session {spec['session']!r} any more (found {', '.join(sessions)})")
        ds = sessions[spec["session"]]
        src = _activity_source(ds, spec["source"], spec["lazy"], spec["stats"])
        fc = DiskForecast(copy.deepcopy(base), src, spec["session"], identity=spec["identity"], root=spec["out"], block=spec["block"],
                          unit_chunk=spec["unit_chunk"], device=_worker_device(spec["device"]), evict=False, max_bytes=_NO_LIMIT)  # fmt: skip
        if fc.key != spec["key"]:
            raise BatchForecastError(
                f"{spec['recording']} (session {spec['session']}): this worker's model or recording differs from the client's "
                f"(entry {fc.key} here, {spec['key']} there; model checksum {fc.checksum[:12]}): do all workers see the same files?"
            )
        _WORKER_ENTRIES[ck] = fc
        while len(_WORKER_ENTRIES) > 4:
            _WORKER_ENTRIES.popitem(last=False)
        return fc


def _forecast_task(spec: dict[str, Any], blocks: list[int]) -> dict[str, Any]:
    """One Dask task: compute ``blocks`` of one entry on this worker; returns what was done."""
    import dask

    where = f"{spec['recording']} (session {spec['session']}), blocks {blocks[0]}–{blocks[-1]}"
    t0 = time.perf_counter()
    fc = None
    try:
        with dask.config.set(scheduler="synchronous"):  # never a nested graph on the cluster from a task
            fc = _worker_forecast(spec)
            fc.refresh(force=True)
            for b in blocks:
                if fc.block_done[b] and not (fc.path / "blocks" / f"{b}.npz").exists():
                    fc._drop_block(b)  # its marker was removed since this worker opened the entry: compute it again
            before = fc.blocks_written
            n = fc.compute_blocks(blocks)
            fc.refresh(force=True)
    except BatchForecastError:
        raise
    except Exception as exc:
        if fc is not None:
            fc.close()  # give up the block being computed (its claim goes)
        raise BatchForecastError(f"{where}: {type(exc).__name__}: {exc}") from None
    left = [b for b in blocks if not fc.block_done[b]]
    if left:
        raise BatchForecastError(f"{where}: blocks {left} not finished (claimed by another process? one run at a time per store)")
    try:
        from distributed import get_worker

        worker = str(get_worker().address)
    except Exception:
        worker = f"pid {os.getpid()}"
    return {"key": spec["key"], "blocks": list(blocks), "windows": int(n), "blocks_computed": int(fc.blocks_written - before),
            "seconds": time.perf_counter() - t0, "worker": worker, "device": str(fc.device)}  # fmt: skip


# ==================================================================================== the client
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable_metrics(m: dict[str, Any]) -> dict[str, Any]:
    def num(x: Any) -> Any:
        x = float(x)
        return x if np.isfinite(x) else None

    out: dict[str, Any] = {}
    for k in _METRIC_KEYS:
        v = m[k]
        out[k] = int(v) if k == "n_windows" else ([num(x) for x in np.asarray(v).tolist()] if np.ndim(v) else num(v))
    if "region_scores" in m:
        out["region_scores"] = {str(r): num(s) for r, s in m["region_scores"].items()}
    return out


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _prepare_model(model: Any, out: Path, search: Sequence[str | os.PathLike] | None) -> tuple[str, Any, str, Path | None]:
    """(checkpoint stem the workers load, the model loaded here, its display name, a temporary
    folder to remove): an in-memory model is saved to a temporary checkpoint first."""
    from .base import Forecaster
    from .checkpoint import CheckpointError, load_model, resolve, save_model

    tmp = None
    if isinstance(model, Forecaster):
        tmp = Path(tempfile.mkdtemp(prefix=".pocoviz-model-", dir=out.parent))
        stem = tmp / "model"
        save_model(model, stem)
        name = f"{model.kind} (in memory)"
    else:
        try:
            stem = resolve(model, search).resolve()
        except CheckpointError as exc:
            raise BatchForecastError(f"model {str(model)!r}: {exc}") from None
        name = str(model)
    try:
        loaded = load_model(stem, device="cpu")
    except (CheckpointError, OSError, ValueError) as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise BatchForecastError(f"model {str(model)!r} ({stem}): {exc}") from None
    return str(stem), loaded, name, tmp


def _plan(base: Any, recordings: Sequence[str | os.PathLike], out: Path, data_dir: Any, sessions: Sequence[str] | None) -> list[dict[str, Any]]:
    """Every (recording, session) to forecast, checked against the model before anything is written."""
    from ..recordings import RecordingError, is_lazy, resolve_in_data_dir
    from .playback import resolve_session

    plans = []
    wanted = None if not sessions else {str(s) for s in sessions}
    for rec in recordings:
        try:
            path = resolve_in_data_dir(rec, data_dir)
        except RecordingError as exc:
            raise BatchForecastError(str(exc)) from None
        if not path.exists():
            raise BatchForecastError(f"{path}: no such recording")
        if _inside(out, path) or _inside(path, out):
            raise BatchForecastError(f"--out {out} and the recording {path} must not lie inside one another")
        try:
            found = _open_sessions(path)
        except (RecordingError, OSError, ValueError) as exc:
            raise BatchForecastError(f"{path}: {exc}") from None
        names = [s for s in found if wanted is None or s in wanted]
        if not names:
            raise BatchForecastError(f"{path}: none of the sessions {sorted(wanted or [])} here (found: {', '.join(found)})")
        for name in names:
            ds = found[name]
            U, T = int(ds.sizes["unit"]), int(ds.sizes["time"])
            model = copy.deepcopy(base)
            try:
                resolve_session(model, name, U)
            except (KeyError, ValueError) as exc:
                raise BatchForecastError(f"{path} (session {name!r}): {str(exc).strip(chr(34))}") from None
            if T < model.context + model.horizon:
                raise BatchForecastError(f"{path} (session {name!r}): {T} frames, fewer than the model's context + horizon ({model.context + model.horizon})")
            source = ds.encoding.get("source") or ds["activity"].encoding.get("source") or str(path)
            regions = np.asarray(ds["region"].values).astype(str).tolist() if "region" in ds.coords else None
            plans.append({"path": path, "session": name, "ds": ds, "model": model, "T": T, "U": U, "lazy": bool(is_lazy(ds)),
                          "identity": recording_identity(ds, path, name), "source": str(source if os.path.exists(str(source)) else path),
                          "regions": regions})  # fmt: skip
    return plans


def _check_out(out: Path, checksum: str) -> dict[str, Any] | None:
    """The existing store's description, None when ``out`` does not exist; BatchForecastError when
    it exists and is not a forecast store of this model."""
    if not out.exists():
        return None
    if not is_forecast_store(out):
        what = "a folder" if out.is_dir() else "a file"
        raise BatchForecastError(f"--out {out} exists and is {what}, not a pocoviz forecast store: choose another path (nothing was written)")
    info = read_store(out)
    have = (info.get("model") or {}).get("checksum")
    if have != checksum:
        raise BatchForecastError(f"--out {out} holds the forecasts of another model ({(info.get('model') or {}).get('name')}, checksum "
                                 f"{str(have)[:12]}…): choose another path (nothing was written)")  # fmt: skip
    return info


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` of ``n_workers`` single-threaded worker processes for
    forecasting (no dashboard). Unlike Dask's default, the workers do not get
    ``MALLOC_TRIM_THRESHOLD_`` (set at all, it fixes glibc's mmap threshold, and torch's CPU
    inference then runs about 1.5 times slower), nor the statistical profiler; ``OMP_NUM_THREADS=1``
    and the rest of Dask's settings stay."""
    import dask
    from distributed import LocalCluster

    key = "MALLOC_TRIM_THRESHOLD_"
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    dask_value = env.pop(key, None)
    inherited = os.environ.get(key)
    if inherited is not None and dask_value is not None and str(inherited) == str(dask_value):
        os.environ.pop(key)  # left here by an earlier Dask nanny of this process, not by the user
    try:
        # no statistical profiler in the workers either: it samples the compute thread's stack every 10 ms (a few % here)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env, "distributed.worker.profile.enabled": False}):
            opts = dict(n_workers=int(n_workers), threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40)
            return LocalCluster(**{**opts, **kwargs})
    finally:
        if inherited is not None:
            os.environ[key] = inherited


def _start_client(client: Any, scheduler: str | None, n_workers: int) -> tuple[Any, Any, bool]:
    from distributed import Client

    if client is not None:
        return client, None, False
    if scheduler:
        return Client(scheduler, set_as_default=False), None, True
    cluster = local_cluster(n_workers)
    return Client(cluster, set_as_default=False), cluster, True


def _count_workers(dclient: Any) -> int:
    try:
        return len(dclient.scheduler_info(n_workers=-1)["workers"])
    except TypeError:  # an older distributed
        return len(dclient.scheduler_info()["workers"])


def forecast_to_store(
    model: Any,
    recordings: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    client: Any = None,
    n_workers: int = 2,
    scheduler: str | None = None,
    blocks_per_task: int = 1,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    data_dir: str | os.PathLike | None = None,
    sessions: Sequence[str] | None = None,
    search: Sequence[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Forecast every cursor of every session of ``recordings`` with ``model`` into the store ``out``.

    Parameters
    ----------
    model
        A checkpoint's path or shipped name (workers load it), or a forecaster (saved to a
        temporary checkpoint beside ``out`` first, removed at the end).
    recordings
        Recording files or stores (any format :func:`pocoviz.recordings.open_corpus` reads); every
        session is forecast (or those in ``sessions``).
    out
        The store (created; an existing store of this model is completed: finished blocks are
        kept). Must not exist as anything else.
    client, scheduler, n_workers
        A ``distributed.Client`` to use; else a scheduler's address to connect to; else a
        ``LocalCluster`` of ``n_workers`` single-threaded worker processes, started and closed here.
    blocks_per_task
        Blocks of :data:`~pocoviz.forecast.diskcache.BLOCK` cursors per task.
    device
        Each worker's device (default: :func:`pocoviz.backend.get_device` on the worker).
    progress
        Called with (tasks finished, tasks) as tasks finish.
    data_dir
        When given, recordings must lie inside it (relative paths are taken from it).
    search
        Folders where a bare model name is looked up (default: the shipped models).

    Returns
    -------
    dict
        ``out``, ``workers``, ``tasks``, ``seconds``, ``blocks_computed`` and ``sessions``: per
        session ``recording``, ``session``, ``entry``, ``T``, ``U``, ``cursors`` (valid),
        ``blocks``, ``blocks_computed``, ``seconds`` (task time summed), ``score``, ``mse``,
        ``test_score``.

    Raises
    ------
    BatchForecastError
        A bad model, recording or ``out`` (before anything is written), or a failed task (naming
        the recording, session and blocks).
    """
    t_start = time.perf_counter()
    out = Path(out).expanduser().resolve()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise BatchForecastError(f"--data-dir {data_dir}: not a folder")
    if out.exists() and not is_forecast_store(out):
        _check_out(out, "")  # raises, naming out
    if not out.parent.is_dir():
        raise BatchForecastError(f"--out {out}: its folder {out.parent} does not exist")
    stem, base, name, tmp_model = _prepare_model(model, out, search)
    own_client = cluster = None
    try:
        checksum = model_checksum(base)
        info = _check_out(out, checksum)
        plans = _plan(base, recordings, out, data_dir, sessions)
        # -- the store and its entries (the client creates them: workers only add blocks)
        if info is None:
            tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
            _write_attrs(tmp, {STORE_ATTR: {"layout": STORE_LAYOUT, "created": _now(), "updated": _now(), "block": BLOCK, "entries": {},
                                            "model": {"name": name, "kind": base.kind, "checksum": checksum, "context": int(base.context),
                                                      "horizon": int(base.horizon)}}})  # fmt: skip
            os.replace(tmp, out)
            info = read_store(out)
        entries = dict(info.get("entries", {}))
        (out / "forecasts").mkdir(exist_ok=True)
        _write_attrs(out / "forecasts", {"description": "one DiskForecast entry per recording session"})
        jobs: list[tuple[dict[str, Any], list[int]]] = []
        for plan in plans:
            stats = None
            if plan["lazy"]:
                stats = str(out / "stats" / f"{_key(plan['identity'])}.npz")
                src = _activity_source(plan["ds"], plan["source"], True, stats)
                src.stats()  # once, here: every worker reads them
            fc = DiskForecast(plan["model"], _Shape(plan["T"], plan["U"]), plan["session"], identity=plan["identity"], root=out,
                              regions=plan["regions"], evict=False, max_bytes=_NO_LIMIT, name=name)  # fmt: skip
            for claim in (fc.path / "blocks").glob(".*.claim"):  # left by an interrupted run (one run at a time per store)
                claim.unlink(missing_ok=True)
            plan["fc"] = fc
            spec = {"key": fc.key, "out": str(out), "model": stem, "device": device, "recording": str(plan["path"]), "source": plan["source"],
                    "session": plan["session"], "identity": plan["identity"], "lazy": plan["lazy"], "stats": stats, "block": fc.block,
                    "unit_chunk": fc.unit_chunk}  # fmt: skip
            plan["spec"] = spec
            pending = fc.pending_blocks()
            plan["pending"] = pending
            k = max(1, int(blocks_per_task))
            jobs += [(spec, pending[i : i + k]) for i in range(0, len(pending), k)]
            entries[fc.key] = _entry_record(fc, plan)
            _write_attrs(fc.path, {"pocoviz_forecast_entry": entries[fc.key]})
        _update_store(out, entries)
        # -- the tasks
        results: list[dict[str, Any]] = []
        n_workers_seen = 0
        if jobs:
            dclient, cluster, own = _start_client(client, scheduler, n_workers)
            own_client = dclient if own else None
            n_workers_seen = _count_workers(dclient)
            results = _run_tasks(dclient, jobs, progress)
        # -- check, score, describe
        summary_sessions = []
        for plan in plans:
            fc = plan["fc"]
            left = fc.pending_blocks()
            if left:
                raise BatchForecastError(f"{plan['path']} (session {plan['session']}): blocks {left} not finished after the run")
            mine = [r for r in results if r["key"] == fc.key]
            entries[fc.key] = rec = _entry_record(fc, plan)
            _write_attrs(fc.path, {"pocoviz_forecast_entry": rec})
            summary_sessions.append({
                "recording": str(plan["path"]), "session": plan["session"], "entry": f"forecasts/{fc.key}", "T": fc.T, "U": fc.U,
                "cursors": fc.n_valid, "blocks": int(fc.block_done.sum()),
                "blocks_computed": sum(r["blocks_computed"] for r in mine), "seconds": round(sum(r["seconds"] for r in mine), 3),
                "score": rec["metrics"]["all"]["score"], "mse": rec["metrics"]["all"]["mse"], "test_score": rec["metrics"]["test"]["score"],
            })  # fmt: skip
        _update_store(out, entries)
        return {"out": str(out), "model": name, "workers": n_workers_seen, "tasks": len(jobs), "seconds": round(time.perf_counter() - t_start, 3),
                "blocks_computed": sum(r["blocks_computed"] for r in results), "devices": sorted({r["device"] for r in results}),
                "sessions": summary_sessions}  # fmt: skip
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
        if tmp_model is not None:
            shutil.rmtree(tmp_model, ignore_errors=True)


def _entry_record(fc: DiskForecast, plan: dict[str, Any]) -> dict[str, Any]:
    import dask

    with dask.config.set(scheduler="synchronous"):
        fc.refresh(force=True)
        done = int(fc.block_done.sum())
        complete = not fc.pending_blocks()
        metrics = {"all": _jsonable_metrics(fc.metrics()), "test": _jsonable_metrics(fc.metrics(split="test")) if "test" in fc.splits else None}
    return {"path": f"forecasts/{fc.key}", "recording": fc.identity, "session": fc.session, "model_checksum": fc.checksum, "T": fc.T, "U": fc.U,
            "C": fc.C, "P": fc.P, "block": fc.block, "unit_chunk": fc.unit_chunk, "n_blocks": fc.n_blocks, "blocks_done": done,
            "complete": complete, "cursors": fc.n_valid, "lazy": plan["lazy"], "metrics": metrics}  # fmt: skip


def _update_store(out: Path, entries: dict[str, Any]) -> None:
    info = read_store(out)
    info.update(entries=entries, updated=_now())
    _write_attrs(out, {STORE_ATTR: info})


def _run_tasks(dclient: Any, jobs: list[tuple[dict[str, Any], list[int]]], progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    from distributed import as_completed

    futures = {}
    for spec, blocks in jobs:
        f = dclient.submit(_forecast_task, spec, blocks, key=f"pocoviz-forecast-{spec['key'][:12]}-{blocks[0]}-{uuid.uuid4().hex[:6]}", pure=False)
        futures[f] = (spec, blocks)
    results = []
    try:
        for i, f in enumerate(as_completed(list(futures), loop=dclient.loop), start=1):
            spec, blocks = futures[f]
            try:
                results.append(f.result())
            except Exception as exc:
                msg = (
                    str(exc)
                    if isinstance(exc, BatchForecastError)
                    else f"{spec['recording']} (session {spec['session']}), blocks {blocks}: {type(exc).__name__}: {exc}"
                )
                raise BatchForecastError(f"a forecast task failed: {msg}") from None
            if progress is not None:
                progress(i, len(futures))
    finally:
        left = [f for f in futures if not f.done()]
        if left:
            dclient.cancel(left)
    return results


# ==================================================================================== the app
def find_stored_forecast(model: Any, activity: Any, session: str, identity: dict[str, Any] | None, stores: Sequence[str | os.PathLike], *,
                         regions: Sequence[str] | None = None, name: str | None = None) -> DiskForecast | None:  # fmt: skip
    """The complete forecasts of ``model`` on a recording session (``identity``:
    :func:`~pocoviz.forecast.diskcache.path_identity`) in one of ``stores``, opened read-only; None
    when no store holds them (another model, another file or version of it, an incomplete entry).
    A session-free ``model`` gets the session registered (as the tab's own forecasts would)."""
    from .playback import resolve_session

    if identity is None or "path" not in identity:
        return None
    checksum = None
    for store in stores:
        try:
            info = read_store(store)
        except ValueError:
            continue
        for e in (info.get("entries") or {}).values():
            if not isinstance(e, dict) or e.get("recording") != identity or e.get("session") != session or not e.get("complete"):
                continue
            if (e.get("T"), e.get("U"), e.get("C"), e.get("P")) != (activity.T, activity.U, model.context, model.horizon):
                continue
            if checksum is None:
                try:
                    resolve_session(model, session, int(activity.U))
                except (KeyError, ValueError):
                    return None
                checksum = model_checksum(model)
            if e.get("model_checksum") != checksum:
                continue
            try:
                fc = DiskForecast(model, activity, session, identity=identity, root=store, regions=regions, name=name, read_only=True,
                                  block=int(e["block"]), unit_chunk=int(e.get("unit_chunk", UNIT_CHUNK)))  # fmt: skip
            except (ValueError, OSError):
                continue
            if fc.path.resolve() == (Path(store) / e["path"]).resolve() and not fc.pending_blocks():
                return fc
    return None


# ==================================================================================== benchmark
def _warm_worker() -> int:
    """Import what a task needs (a worker's first task otherwise pays for it)."""
    import torch  # noqa: F401

    from ..recordings import io  # noqa: F401
    from . import checkpoint, diskcache, models  # noqa: F401

    return os.getpid()


def bench_forecast_dask(
    *, units: int = 1000, frames: int = 3000, model_kind: str = "POCO", workers: Sequence[int] = (1, 2), blocks_per_task: int = 1,
    in_process: bool = True, seed: int = 0, folder: str | os.PathLike | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The forecast pass of a synthetic recording (``units`` × ``frames``, an untrained
    ``model_kind``) with 1 and 2 (``workers``) Dask workers of one thread each, and in this process
    on one thread (no Dask) for reference. Times each pass from the first task submitted to the
    store complete (cluster start and the workers' imports excluded, reported apart); returns a
    JSON-able dict with seconds, cursors/s and the efficiency ``t(1 worker) / (n · t(n workers))``."""
    import torch
    from distributed import Client

    from ..recordings import make_recording, save_recording
    from .base import SessionInfo, build_model
    from .checkpoint import save_model
    from .playback import RecordingForecast

    tmp = Path(tempfile.mkdtemp(prefix="pocoviz-bench-dask-", dir=folder))
    try:
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal((frames, units)).cumsum(0) * 0.1 + rng.standard_normal((frames, units))).astype(np.float32)
        ds = make_recording(x, sampling_rate_hz=2.0, species="bench", session="dask", units="dF/F")
        save_recording(ds, tmp / "rec.nc", compress=False)
        torch.manual_seed(seed)
        model = build_model(model_kind, [SessionInfo("bench/dask", units, "bench")])
        save_model(model, tmp / "model")
        out: dict[str, Any] = {"units": units, "frames": frames, "model": model_kind, "blocks_per_task": blocks_per_task, "cpus": os.cpu_count(),
                               "torch_threads_per_worker": 1, "runs": []}  # fmt: skip
        if in_process:
            from ..recordings.preprocess import zscore

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                rf = RecordingForecast(model, zscore(x).astype(np.float32), "bench/dask")
                t0 = time.perf_counter()
                n = rf.compute()
                dt = time.perf_counter() - t0
            finally:
                torch.set_num_threads(threads)
            out["in_process"] = {"seconds": round(dt, 2), "cursors": n, "cursors_per_s": round(n / dt, 1), "score": float(rf.metrics()["score"])}
        for n_workers in workers:
            t0 = time.perf_counter()
            cluster = local_cluster(n_workers)
            client = Client(cluster, set_as_default=False)
            try:
                client.run(_warm_worker)
                t_start = time.perf_counter() - t0
                t0 = time.perf_counter()
                s = forecast_to_store(str(tmp / "model"), [tmp / "rec.nc"], tmp / f"out-{n_workers}.zarr", client=client, blocks_per_task=blocks_per_task)
                dt = time.perf_counter() - t0
            finally:
                client.close()
                cluster.close()
            (sess,) = s["sessions"]
            out["runs"].append({"workers": int(n_workers), "seconds": round(dt, 2), "cursors": sess["cursors"], "tasks": s["tasks"],
                                "cursors_per_s": round(sess["cursors"] / dt, 1), "task_seconds_sum": sess["seconds"],
                                "cluster_start_s": round(t_start, 2), "score": sess["score"]})  # fmt: skip
        base = next((r for r in out["runs"] if r["workers"] == 1), None)
        for r in out["runs"]:
            r["speedup"] = round(base["seconds"] / r["seconds"], 3) if base else None
            r["efficiency"] = round(base["seconds"] / (r["workers"] * r["seconds"]), 3) if base else None
        out["load_average"] = [round(v, 2) for v in os.getloadavg()]
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ==================================================================================== the command
def cmd_forecast(args: argparse.Namespace) -> int:
    """``pocoviz forecast``: run :func:`forecast_to_store` and print a summary."""
    from ..recordings import RecordingError
    from .checkpoint import CheckpointError, default_search

    if args.workers < 1 or args.blocks_per_task < 1:
        print("pocoviz: error: --workers and --blocks-per-task must be at least 1", file=sys.stderr)
        return 2
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if not args.json and (done == total or now - last[0] > 2):
            last[0] = now
            print(f"  {done}/{total} tasks", file=sys.stderr, flush=True)

    try:
        summary = forecast_to_store(args.model, args.data, args.out, n_workers=args.workers, scheduler=args.scheduler, device=args.device,
                                    blocks_per_task=args.blocks_per_task, progress=progress, data_dir=args.data_dir, sessions=args.session,
                                    search=[*default_search(), Path.cwd()])  # fmt: skip
    except (BatchForecastError, CheckpointError, RecordingError, OSError) as exc:
        print(f"pocoviz: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{summary['out']}: {summary['model']}, {summary['tasks']} tasks on {summary['workers']} workers, "
          f"{summary['blocks_computed']} blocks computed in {summary['seconds']:.1f} s")  # fmt: skip
    for s in summary["sessions"]:
        score = "–" if s["score"] is None else f"{s['score']:.4f}"
        print(f"  {s['session']} ({s['recording']}): {s['U']} units × {s['T']} frames, {s['cursors']} cursors, score {score}")
    return 0


__all__ = [
    "BatchForecastError", "STORE_ATTR", "STORE_LAYOUT", "bench_forecast_dask", "cmd_forecast", "find_stored_forecast", "forecast_to_store",
    "is_forecast_store", "local_cluster", "open_store_entry", "read_store", "recording_identity",
]  # fmt: skip

"""Multi-session, multi-dataset training and fine-tuning (POCO spec §1.7, §5).

Each step draws one batch of windows per dataset, sums the per-dataset losses, clips the gradient
norm and takes an AdamW step; every ``eval_every`` steps the model is scored on the validation
split and the state with the lowest validation MSE (averaged over datasets) is kept. Training can
stop early after ``patience`` evaluations without improvement, resumes from a state file, runs on
the backend device with bf16 autocast on CUDA, and is deterministic for a seed on the CPU.

A corpus with chunked recordings (a Zarr store opened lazily), or any corpus with
``TrainConfig.workers > 0``, streams its training windows from storage
(:class:`pocoviz.forecast.stream.WindowStream`: epochs over time blocks read through a bounded
cache, optionally in DataLoader worker processes, the same batches whatever their number);
in-memory data without workers keeps :meth:`ForecastCorpus.sample`.

Under torchrun (:mod:`pocoviz.forecast.distributed`) the same loop runs data-parallel: every rank
draws the global batch as one process does and trains on its share of it; the gradients are
reduced to the one-process gradient; rank 0 validates and writes the state file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backend import get_device
from . import distributed
from .base import FINETUNE_INITS, FINETUNE_MODES, Forecaster, build_model
from .data import Batch, ForecastCorpus
from .metrics import EvalReport, autocast_context, evaluate, model_session_map
from .stream import DEFAULT_STREAM_CACHE_BYTES, WindowStream

#: POCO's seed offsets (spec §1.7): numpy 233 + seed, torch 3407 + seed.
DATA_SEED_OFFSET = 233
TORCH_SEED_OFFSET = 3407
#: rank r > 0 of a distributed run seeds its own torch generator (dropout, noise) this far apart
RANK_SEED_STRIDE = 1_000_003


@dataclass
class TrainConfig:
    """Optimisation settings; the defaults are POCO's (spec §1.7)."""

    steps: int = 10_000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    amsgrad: bool = True
    clip: float = 5.0
    eval_every: int = 100
    #: stop after this many evaluations without a better validation MSE (None: never)
    patience: int | None = None
    seed: int = 0
    #: unit subsampling per training window (None: all units; see ForecastCorpus.sample)
    max_units: int | None = None
    eval_batch_size: int = 256
    progress: bool = False
    #: DataLoader worker processes that read training windows (0: in this process). Chunked
    #: recordings always stream; in-memory data streams too when this is above 0
    workers: int = 0
    #: band-cache cap of each process that reads chunked recordings (the trainer, every worker)
    cache_bytes: int = DEFAULT_STREAM_CACHE_BYTES

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"steps must be >= 0, batch_size and eval_every >= 1 (got {self.steps}, {self.batch_size}, {self.eval_every})")
        if self.lr < 0 or self.weight_decay < 0 or self.clip <= 0:
            raise ValueError("lr and weight_decay must be >= 0 and clip > 0")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.max_units is not None and self.max_units < 1:
            raise ValueError(f"max_units must be >= 1 or None, got {self.max_units}")
        if self.workers < 0 or self.cache_bytes < 1:
            raise ValueError(f"workers must be >= 0 and cache_bytes >= 1 (got {self.workers}, {self.cache_bytes})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What a training run did: the validation history, the selected step, timings."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val_mse: float = math.inf
    steps_done: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    #: seconds spent waiting for training batches (sampling, or reading from chunked storage)
    data_seconds: float = 0.0
    windows: int = 0
    stopped_early: bool = False
    #: facts about the run besides the history (fine-tuning: the initialisation used)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.train_seconds if self.train_seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["windows_per_second"] = self.windows_per_second
        return d


def make_model(kind: str, corpus: ForecastCorpus, *, seed: int = 0, **config: Any) -> Forecaster:
    """Build a model of ``kind`` for the sessions of ``corpus``, initialised from the seed."""
    torch.manual_seed(TORCH_SEED_OFFSET + seed)
    return build_model(kind, corpus.sessions, context=corpus.context, horizon=corpus.horizon, **config)


#: ``fit(..., warm_start=...)`` choices: none, or POCO's FiLM head taken from a trained MLP
WARM_STARTS = ("none", "mlp")


def fit(
    kind: str,
    corpus: ForecastCorpus,
    config: TrainConfig | None = None,
    *,
    warm_start: str | Forecaster = "none",
    device: torch.device | str | None = None,
    state_path: str | os.PathLike | None = None,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
    **model_config: Any,
) -> tuple[Forecaster, TrainResult]:
    """Build a ``kind`` model for ``corpus`` and train it; the one entry point of the CLI and benchmarks.

    ``warm_start="mlp"`` (POCO only) first trains the MLP baseline with the same settings and seed,
    then starts POCO's FiLM head from it (:meth:`POCO.start_from_mlp`) and trains the whole model;
    a trained ``MLP`` may be passed instead of ``"mlp"``. Model selection includes step 0, so on the
    validation split the result is never worse than the MLP it started from.
    ``result.info["warm_start"]`` records the MLP's run.

    Returns
    -------
    (model, TrainResult)
        The trained model (best validation state, eval mode) and its run.
    """
    if not isinstance(warm_start, Forecaster) and warm_start not in WARM_STARTS:
        raise ValueError(f"warm_start must be one of {WARM_STARTS} or a trained MLP, got {warm_start!r}")
    cfg = config or TrainConfig()
    info: dict[str, Any] = {}
    head = None
    if isinstance(warm_start, Forecaster):
        if kind != "POCO" or warm_start.kind != "MLP":
            raise ValueError(f"a {kind} cannot start from a {warm_start.kind}; POCO's FiLM head starts from an MLP")
        head = warm_start
        info["warm_start"] = {"kind": "MLP", "given": True, "seconds": 0.0}
    elif warm_start == "mlp":
        if kind != "POCO":
            raise ValueError(f"warm_start='mlp' starts POCO's FiLM head from an MLP; {kind} has no such head")
        head = make_model("MLP", corpus, seed=cfg.seed, hidden=int(model_config.get("hidden", 1024)))
        head_run = train(head, corpus, cfg, device=device)
        info["warm_start"] = {"kind": "MLP", "best_step": head_run.best_step, "steps_done": head_run.steps_done,
                              "best_val_mse": head_run.best_val_mse, "seconds": head_run.seconds}  # fmt: skip
    model = make_model(kind, corpus, seed=cfg.seed, **model_config)
    if head is not None:
        model.start_from_mlp(head)
    result = train(model, corpus, cfg, device=device, state_path=state_path, callback=callback)
    result.info.update(info)
    if head is not None:
        result.seconds += info["warm_start"]["seconds"]
    return model, result


def _validation(model: Forecaster, corpus: ForecastCorpus, cfg: TrainConfig, device: torch.device) -> EvalReport:
    rep = evaluate(model, corpus, "val", batch_size=cfg.eval_batch_size, device=device)
    # chunked recordings: the validation bands are not needed until the next validation (training
    # reads its own), so they do not stay in memory through the training steps
    corpus.cache.clear()
    return rep


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: Forecaster,
    corpus: ForecastCorpus,
    config: TrainConfig | None = None,
    *,
    device: torch.device | str | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
    frozen_rows: Sequence[tuple[nn.Parameter, slice]] = (),
    state_path: str | os.PathLike | None = None,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
    lr_scales: bool = True,
) -> TrainResult:
    """Train ``model`` on the training split of ``corpus``; keep the best validation state.

    Parameters
    ----------
    model
        Any :class:`~pocoviz.forecast.base.Forecaster` that knows every session of ``corpus``.
    config
        :class:`TrainConfig` (POCO defaults).
    device
        Backend device (default: :func:`pocoviz.backend.get_device`); bf16 autocast on CUDA.
    parameters
        Train only these (default: every parameter); fine-tuning passes the embeddings.
    frozen_rows
        ``(parameter, rows)``: only ``rows`` of ``parameter`` may change; the other rows are
        restored after each step (new sessions' rows in a shared embedding table).
    state_path
        Resumable state (model, optimiser, RNGs, history, best weights), written atomically at
        every evaluation; an existing file with the same settings resumes the run.
    callback
        Called with each history entry (``step``, ``train_loss``, ``val_mse``, ``val_score``,
        ``seconds``); returning False stops training.
    lr_scales
        Apply the model's per-parameter learning-rate multipliers (:meth:`Forecaster.lr_scales`);
        fine-tuning trains its chosen parameters at the plain rate.

    Returns
    -------
    TrainResult
        The model is left holding the best validation state, in eval mode.
    """
    cfg = config or TrainConfig()
    empty = [d for d, n in corpus.n_windows("val").items() if n == 0]
    if empty:
        raise ValueError(
            f"no validation windows in dataset(s) {empty}: each session needs at least {corpus.context + corpus.horizon} frames "
            "in its validation split (20 % of every 1000-frame patch) to select the best model"
        )
    device = get_device(device)
    model.to(device)
    mapping = torch.tensor(model_session_map(model, corpus), dtype=torch.int64)
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    result = TrainResult()
    t0 = time.perf_counter()
    if not model.trainable or not params or cfg.steps == 0:
        rep = _validation(model, corpus, cfg, device)
        entry = {"step": 0, "train_loss": math.nan, "val_mse": _mean_dataset_mse(rep), "val_score": rep.score, "seconds": time.perf_counter() - t0}
        result.history.append(entry)
        result.best_val_mse = entry["val_mse"]
        if callback is not None:
            callback(entry)
        result.seconds = time.perf_counter() - t0
        model.eval()
        return result

    # data-parallel under torchrun: `n_ranks` processes, each training on its share of the global batch
    dist_on = distributed.active()
    n_ranks, my_rank = distributed.world(), distributed.rank()
    main = my_rank == 0
    if dist_on and cfg.batch_size < n_ranks:
        raise ValueError(f"batch_size {cfg.batch_size} is smaller than the {n_ranks} processes: each needs a window of every dataset per step")
    groups = _param_groups(model, params, cfg.lr) if lr_scales else [{"params": params, "lr": cfg.lr}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
    # the batch generator is the same on every rank (each draws the global batch); the torch generator
    # (dropout, noise) is the rank's own
    gen = torch.Generator().manual_seed(DATA_SEED_OFFSET + cfg.seed)
    torch.manual_seed(TORCH_SEED_OFFSET + cfg.seed + RANK_SEED_STRIDE * my_rank)
    # steps and the progress bar may change between a run and its resumption (extend a run); so may
    # the workers and caches of a streamed run (the same batches whatever they are)
    stream = corpus.lazy or cfg.workers > 0
    settings = {k: v for k, v in cfg.to_json().items() if k not in ("steps", "progress", "workers", "cache_bytes")}
    if stream:
        settings["sampler"] = "stream"
    fingerprint = json.dumps({"config": settings, "kind": model.kind, "sessions": [s.name for s in model.sessions]}, sort_keys=True)
    best_state: dict[str, torch.Tensor] | None = None
    bad = 0
    start = 0
    state_file = Path(state_path) if state_path is not None else None
    st: dict[str, Any] | None = None
    if main and state_file is not None and state_file.exists():
        st = torch.load(state_file, map_location="cpu", weights_only=True)
        if st.get("fingerprint") != fingerprint:
            st = {"error": f"{state_file}: the saved training state belongs to different settings; delete it or choose another path"}
    # rank 0 reads the state (it alone writes it); it holds nothing that depends on the number of
    # ranks, so a run resumes with any number
    st = distributed.broadcast_object(st) if dist_on else st
    if st is not None and "error" in st:
        raise ValueError(st["error"])
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        start, bad = int(st["step"]), int(st["bad"])
        if main:
            torch.set_rng_state(st["torch_rng"])
        else:
            torch.manual_seed(TORCH_SEED_OFFSET + cfg.seed + RANK_SEED_STRIDE * my_rank + start)
        result.history = [dict(h) for h in st["history"]]
        best_state = st["best_state"]
        result.best_step, result.best_val_mse = int(st["best_step"]), float(st["best_val_mse"])
        result.windows = int(st["windows"])
    keep = [(p, sl, None) for p, sl in frozen_rows]

    def record(step: int, loss: float) -> bool:
        """Validate, keep the best state, call back (rank 0 only); whether to go on."""
        nonlocal best_state, bad
        rep = _validation(model, corpus, cfg, device)
        entry = {"step": step, "train_loss": loss, "val_mse": _mean_dataset_mse(rep), "val_score": rep.score, "seconds": time.perf_counter() - t0}
        result.history.append(entry)
        if entry["val_mse"] < result.best_val_mse:
            result.best_val_mse, result.best_step, bad = entry["val_mse"], step, 0
            best_state = _cpu_state(model)
        else:
            bad += 1
        go_on = callback(entry) if callback is not None else None
        return go_on is not False and not (cfg.patience is not None and bad >= cfg.patience)

    def decide(go_on: bool) -> bool:
        """Rank 0's decision (go on / stop) on every rank; the other ranks wait here during its validation."""
        return bool(distributed.broadcast_object(go_on)) if dist_on else go_on

    ddp = None
    if dist_on:
        # DistributedDataParallel averages the gradients of `ranks x local loss` over the ranks while
        # the backward pass runs. The local loss is this rank's part of the one-process loss (see
        # _StepLoss), so the average is the one-process gradient; clipping and the optimiser step then
        # see the same gradient on every rank. Unused parameters (the embeddings or per-session layers
        # of sessions absent from a rank's share) are found in each step's graph; those unused on every
        # rank keep no gradient, as in one process (AdamW then skips them).
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            _StepLoss(model), device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )  # fmt: skip

    max_units = cfg.max_units if model.supports_unit_subsets else None
    steps_iter = None
    ws: WindowStream | None = None
    if stream:
        ws = WindowStream(corpus, "train", batch_size=cfg.batch_size, max_units=max_units, seed=DATA_SEED_OFFSET + cfg.seed, cache_bytes=cfg.cache_bytes,
                          shard=(my_rank, n_ranks) if dist_on else None)  # fmt: skip
        # batch k is a function of the seed and k: a resumed run continues with step `start`'s batches.
        # Workers start now, forks of a process that has not yet run a forward pass
        steps_iter = ws.iterate(start, workers=cfg.workers)
    bar = None
    running = 0.0
    n_running = 0
    step = start
    try:
        if start == 0 and not result.history and main:
            record(0, math.nan)
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=f"train {model.kind}", unit="step", leave=False)
        while step < cfg.steps:
            distributed.fault_point(step)
            model.train()
            td = time.perf_counter()
            if steps_iter is not None:
                batches = next(steps_iter)  # sharded by the stream under torchrun
                if dist_on:
                    units = [ws.units_in_batch(d, step) for d in range(len(batches))]
            else:
                batches = [corpus.sample(d, cfg.batch_size, gen, max_units=max_units) for d in corpus.datasets]
                if dist_on:  # every rank draws the global batch and keeps its share
                    units = [int(b.unit_mask.sum()) for b in batches]
                    rows = distributed.shard(cfg.batch_size, my_rank, n_ranks)
                    batches = [_batch_rows(b, rows) for b in batches]
            ts = time.perf_counter()
            result.data_seconds += ts - td
            saved = [(p, sl, p.detach()[_complement(p, sl)].clone()) for p, sl, _ in keep]
            if ddp is None:
                loss_total = torch.zeros((), device=device)
                with autocast_context(device):
                    for b in batches:
                        b.session = mapping[b.session]
                        b = b.to(device)
                        loss_total = loss_total + model.training_loss(b.context, b.target, b.session, b.unit_mask, b.unit_index).float()
                opt.zero_grad(set_to_none=True)
                loss_total.backward()
            else:
                ddp.train()
                for b in batches:
                    b.session = mapping[b.session]
                on_device = [b.to(device) for b in batches]
                weights = [int(b.unit_mask.sum()) / max(n, 1) for b, n in zip(batches, units)]
                with autocast_context(device):
                    local = ddp(on_device, weights)
                opt.zero_grad(set_to_none=True)
                (local * n_ranks).backward()  # DDP divides the summed gradients by the number of ranks
                loss_total = distributed.all_reduce_sum(local.detach().clone())  # the one-process loss, for the log
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            with torch.no_grad():
                for p, sl, old in saved:
                    p[_complement(p, sl)] = old
            lv = float(loss_total.detach())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            result.train_seconds += time.perf_counter() - ts
            result.windows += cfg.batch_size * len(batches)  # the global batch, on any number of ranks
            running += lv
            n_running += 1
            step += 1
            if bar is not None:
                bar.update(1)
                # named for what they are: this step's training MSE and the lowest validation MSE so far
                summed = f" (sum over {len(batches)} datasets)" if len(batches) > 1 else ""
                bar.set_postfix_str(f"train MSE{summed} {lv:.4f}, best validation MSE {result.best_val_mse:.4f} (step {result.best_step})")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                go_on = decide(record(step, running / max(n_running, 1)) if main else True)
                running, n_running = 0.0, 0
                if state_file is not None and main:
                    _atomic_torch_save(
                        {
                            "fingerprint": fingerprint, "model": _cpu_state(model), "optimizer": opt.state_dict(),
                            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "step": step, "bad": bad,
                            "history": result.history, "best_state": best_state, "best_step": result.best_step,
                            "best_val_mse": result.best_val_mse, "windows": result.windows,
                        },
                        state_file,
                    )  # fmt: skip
                if not go_on:
                    result.stopped_early = step < cfg.steps
                    break
    finally:
        if bar is not None:
            bar.close()
        if steps_iter is not None:
            steps_iter.close()  # stops the workers
        del ddp  # removes its gradient hooks from the model's parameters
    result.steps_done = step
    if best_state is not None:
        model.load_state_dict(best_state)
    if dist_on:
        # rank 0 alone validated: its best state and its record of the run are every rank's result
        distributed.broadcast_module(model)
        result = distributed.broadcast_object(result)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


class _StepLoss(nn.Module):
    """One step's loss on this rank's share of the global batches, the module DDP wraps.

    ``training_loss`` is a mean over the real (window, unit) elements of a batch (times the
    horizon steps: the same factor on every rank), so dataset ``d``'s one-process loss
    ``S_d / N_d`` (S: the summed squared errors of the global batch, N: its real elements) is
    the sum over ranks of ``loss_d^r * n_d^r / N_d``; ``weights`` are those ``n_d^r / N_d``.
    (An unweighted mean over ranks would weigh an element of a rank with fewer real units more.)
    """

    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, batches: list[Batch], weights: list[float]) -> torch.Tensor:
        total = torch.zeros((), device=batches[0].context.device)
        for b, w in zip(batches, weights):
            total = total + self.model.training_loss(b.context, b.target, b.session, b.unit_mask, b.unit_index).float() * w
        return total


def _batch_rows(b: Batch, rows: slice) -> Batch:
    """Rows ``rows`` of a batch (its padding width unchanged)."""
    return Batch(b.context[rows], b.target[rows], b.unit_mask[rows], b.session[rows], None if b.unit_index is None else b.unit_index[rows])


def _param_groups(model: Forecaster, params: list[nn.Parameter], lr: float) -> list[dict[str, Any]]:
    """One optimiser group per learning-rate multiplier of :meth:`Forecaster.lr_scales`."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    scales = model.lr_scales()
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(float(scales.get(by_id.get(id(p), ""), 1.0)), []).append(p)
    return [{"params": ps, "lr": lr * sc} for sc, ps in sorted(groups.items(), reverse=True)]


def _complement(p: torch.Tensor, rows: slice) -> torch.Tensor:
    keep = torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
    keep[rows] = False
    return keep


def _mean_dataset_mse(rep: EvalReport) -> float:
    v = list(rep.dataset_mse().values())
    return float(sum(v) / len(v)) if v else math.nan


def finetune(
    model: Forecaster,
    corpus: ForecastCorpus,
    mode: str = "embedding",
    config: TrainConfig | None = None,
    *,
    device: torch.device | str | None = None,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
    copy_model: bool = True,
    init: str = "random",
) -> tuple[Forecaster, TrainResult]:
    """Adapt a trained model to new sessions (spec §5).

    The sessions of ``corpus`` are added with freshly initialised per-session state (unit and
    session embeddings, per-session layers) and trained alone:

    - ``"embedding"``: only the new sessions' state (POCO: their unit + session embedding rows);
    - ``"embedding+mlp"``: that plus the forecasting head (POCO: in_proj, FiLM α/β, out_proj);
    - ``"full"``: every parameter.

    ``init`` chooses the new units' starting embeddings: ``"random"`` (spec §5: fresh rows) or
    ``"labels"``: a unit whose label (``SessionInfo.labels``, e.g. an identified C. elegans
    neuron) the model has seen in a session of the same species starts from the mean of those
    units' rows; unidentified units start fresh. ``result.info["label_matched_units"]`` counts them.

    The history's step-0 entry is the zero-shot score (the initial embeddings, no training).
    Defaults: 200 steps, validation every 20 (the spec's learning-curve resolution). Returns the
    adapted model (a copy unless ``copy_model=False``) and the run.
    """
    if mode not in FINETUNE_MODES:
        raise ValueError(f"mode must be one of {FINETUNE_MODES}, got {mode!r}")
    if init not in FINETUNE_INITS:
        raise ValueError(f"init must be one of {FINETUNE_INITS}, got {init!r}")
    cfg = config or TrainConfig(steps=200, eval_every=20)
    m = copy.deepcopy(model) if copy_model else model
    n_old_datasets = len(m.datasets)
    first = len(m.sessions)
    torch.manual_seed(TORCH_SEED_OFFSET + cfg.seed)  # the new sessions' fresh rows depend on the seed only
    m.add_sessions(corpus.sessions)
    matched = m.init_from_labels(first) if init == "labels" else 0
    device = get_device(device)
    m.to(device)
    own = m.new_session_parameters(first, n_old_datasets)
    if mode == "full":
        params = list(m.parameters())
        frozen: list[tuple[nn.Parameter, slice]] = []
    else:
        params = [p for p, _ in own]
        frozen = [(p, sl) for p, sl in own if sl is not None]
        if mode == "embedding+mlp":
            named = dict(m.named_parameters())
            params += [named[n] for n in m.head_parameter_names() if all(named[n] is not p for p in params)]
    flags = {id(p): p.requires_grad for p in m.parameters()}
    chosen = {id(p) for p in params}
    for p in m.parameters():
        p.requires_grad_(id(p) in chosen)
    try:
        result = train(m, corpus, cfg, device=device, parameters=params, frozen_rows=frozen, callback=callback, lr_scales=False)
    finally:
        for p in m.parameters():
            p.requires_grad_(flags[id(p)])
    result.info.update(init=init, label_matched_units=matched, new_units=sum(s.n_units for s in m.sessions[first:]))
    return m, result

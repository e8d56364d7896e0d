"""Benchmark protocols on real recordings (``pocoviz protocols``): long runs, not tests.

Each protocol trains models on the CPU/GPU at hand and appends one JSON object per run to a
JSON-lines file, so an interrupted sweep keeps what finished and notes can quote the lines:

- ``worms``: every Flavell-lab worm found trained together; POCO and the baselines, per seed;
  test score, MSE and MAE per step, per worm.
- ``loo``: leave one worm out. POCO (and the MLP) pretrained on the other worms; POCO adapted to
  the held-out worm, embedding-only, for 200 steps (best validation state, step 0 included),
  against POCO and MLP trained from scratch on that worm for the same 200 steps and the
  pretrained MLP as it is.
- ``tectum``: the Triplett zebrafish tectum recording (f1) alone: POCO, MLP, DLinear, NLinear.
- ``cross``: one POCO on the demo corpus + the worms + the tectum against one POCO per dataset,
  scored per dataset.
- ``summary``: mean ± sd over seeds per protocol, model and variant, and per session.

Settings follow :mod:`pocoviz.forecast.recipes` (``auto``: the ``short`` recipe for 800-frame
worms) unless given. Real recordings come from ``../shared/data`` (see its README for sources).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .data import ForecastCorpus
from .metrics import evaluate
from .recipes import auto_recipe, load_corpus, model_overrides, recipe, warm_start_for
from .train import TrainConfig, finetune, fit, make_model, train

PROTOCOLS = ("worms", "loo", "tectum", "cross")
WORM_KINDS = ("POCO", "MLP", "DLinear", "NLinear", "TSMixer", "TexFilter")
TECTUM_KINDS = ("POCO", "MLP", "DLinear", "NLinear")
#: the adaptation budget of the leave-one-out protocol (spec §5 plots the first 200 steps)
ADAPT_STEPS = 200
FLAVELL_DIR = "celegans_flavell_dag2023"
TECTUM_FILE = Path("zebrafish_tectum_triplett2018") / "zf_20151104-f1.mat"
#: the tectum has 4245 frames (about 2,300 training windows): the ``default`` recipe, cut to a CPU budget
TECTUM_CONFIG = {"steps": 1500, "eval_every": 50, "patience": 6}
CROSS_CONFIG = {"steps": 400, "eval_every": 50, "patience": 4, "max_units": 64}


def worm_files(shared_data: str | os.PathLike) -> list[Path]:
    """Every Flavell-lab ``*-data.h5`` under ``shared_data``, sorted."""
    files = sorted((Path(shared_data) / FLAVELL_DIR).glob("*-data.h5"))
    if not files:
        raise FileNotFoundError(f"no Flavell-lab worm (*-data.h5) in {Path(shared_data) / FLAVELL_DIR}")
    return files


def _machine() -> dict[str, Any]:
    import torch

    from ..backend import describe

    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(), **describe()}


def _report(model, corpus: ForecastCorpus, device) -> dict[str, Any]:
    rep = evaluate(model, corpus, "test", device=device)
    out = rep.to_json()
    out["session_scores"] = {s.name: s.score for s in rep.sessions}
    return out


def _record(protocol: str, model: str, seed: int, test: dict[str, Any], *, variant: str = "", run=None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"protocol": protocol, "model": model, "variant": variant, "seed": seed, "test_score": test["score"], "test": test}
    if run is not None:
        rec.update(best_step=run.best_step, steps_done=run.steps_done, seconds=round(run.seconds, 2),
                   history=[{k: h[k] for k in ("step", "val_mse", "val_score")} for h in run.history], info=run.info)  # fmt: skip
    rec.update(extra)
    return rec


def _train_kind(kind: str, corpus: ForecastCorpus, recipe_name: str, seed: int, device, overrides: dict[str, Any] | None = None):
    """Train ``kind`` under the recipe; ``"POCO:mlp"`` / ``"POCO:none"`` choose POCO's warm start."""
    kind, _, warm = kind.partition(":")
    cfg = recipe(recipe_name, seed=seed, progress=False, **(overrides or {}))
    kw = model_overrides(recipe_name, kind)
    model, run = fit(kind, corpus, cfg, warm_start=warm or warm_start_for(recipe_name, kind), device=device, **kw)
    return model, run, cfg, kw


def _variant(recipe_name: str, run) -> str:
    return recipe_name + ("+warm-start" if "warm_start" in run.info else "")


def run_worms(emit: Callable[[dict], None], shared_data, seeds: Sequence[int], kinds: Sequence[str] = WORM_KINDS, device=None) -> None:
    corpus = load_corpus(worm_files(shared_data))
    rname = auto_recipe(corpus)
    for seed in seeds:
        for kind in kinds:
            model, run, cfg, kw = _train_kind(kind, corpus, rname, seed, device)
            emit(_record("worms", kind.split(":")[0], seed, _report(model, corpus, device), variant=_variant(rname, run), run=run,
                         sessions=corpus.names, train_config=cfg.to_json(), model_config=kw))  # fmt: skip


def run_loo(
    emit: Callable[[dict], None], shared_data, seeds: Sequence[int], folds: Sequence[str] | None = None, init: str = "labels", device=None
) -> None:
    """Leave one worm out (see the module docstring); ``folds`` picks held-out worms by uid."""
    corpus = load_corpus(worm_files(shared_data))
    if len(corpus.sessions) < 2:
        raise ValueError("leave-one-out needs at least two worms")
    names = corpus.names
    chosen = [n for n in names if folds is None or n.split("/")[-1] in folds]
    for seed in seeds:
        for held in chosen:
            pre = corpus.subset([n for n in names if n != held])
            target = corpus.subset([held])
            rname = auto_recipe(pre)
            cfg = recipe(rname, seed=seed, progress=False)
            base = {"fold": held, "pretrained_on": pre.names}
            mlp = make_model("MLP", pre, seed=seed)
            mlp_run = train(mlp, pre, cfg, device=device)
            emit(_record("loo", "MLP", seed, _report(mlp, target, device), variant="pretrained", run=mlp_run, **base))
            kw = model_overrides(rname, "POCO")
            ws = warm_start_for(rname, "POCO")
            poco, poco_run = fit("POCO", pre, cfg, warm_start=mlp if ws == "mlp" else ws, device=device, **kw)
            adapt_cfg = TrainConfig(steps=ADAPT_STEPS, eval_every=20, seed=seed)
            adapted, run = finetune(poco, target, "embedding", adapt_cfg, device=device, init=init)
            emit(_record("loo", "POCO", seed, _report(adapted, target, device), variant=f"adapted:embedding:{init}", run=run,
                         pretrain={"best_step": poco_run.best_step, "steps_done": poco_run.steps_done, "seconds": poco_run.seconds,
                                   "best_val_mse": poco_run.best_val_mse}, **base))  # fmt: skip
            scratch_cfg = replace(cfg, steps=ADAPT_STEPS, patience=None)
            for kind in ("POCO", "MLP"):
                model, run = fit(kind, target, scratch_cfg, device=device, **model_overrides(rname, kind))
                emit(_record("loo", kind, seed, _report(model, target, device), variant=f"scratch-{ADAPT_STEPS}", run=run, **base))


def run_tectum(emit: Callable[[dict], None], shared_data, seeds: Sequence[int], kinds: Sequence[str] = TECTUM_KINDS, device=None) -> None:
    corpus = load_corpus([Path(shared_data) / TECTUM_FILE], dataset="zebrafish_tectum")
    rname = auto_recipe(corpus)
    for seed in seeds:
        for kind in kinds:
            model, run, cfg, kw = _train_kind(kind, corpus, rname, seed, device, TECTUM_CONFIG)
            emit(_record("tectum", kind.split(":")[0], seed, _report(model, corpus, device), variant=_variant(rname, run), run=run,
                         train_config=cfg.to_json(), model_config=kw))  # fmt: skip


def run_cross(emit: Callable[[dict], None], shared_data, seeds: Sequence[int], device=None) -> None:
    """One POCO on every dataset (demo + worms + tectum) against one POCO per dataset."""
    sources = ["demo", *worm_files(shared_data)]
    corpus = load_corpus(sources)
    tectum = load_corpus([Path(shared_data) / TECTUM_FILE], dataset="zebrafish_tectum")
    corpus = ForecastCorpus({**corpus.recordings, **tectum.recordings}, strides={"train": 1, "val": 4, "test": 1})
    for seed in seeds:
        model, run, cfg, kw = _train_kind("POCO", corpus, "default", seed, device, CROSS_CONFIG)
        emit(_record("cross", "POCO", seed, _report(model, corpus, device), variant="all-datasets", run=run, train_config=cfg.to_json()))
        real = [d for d in corpus.datasets if d in ("C_elegans", "zebrafish_tectum")]
        for dataset in real + [d for d in corpus.datasets if d not in real]:  # the real recordings first
            sub = corpus.subset([s.name for s in corpus.sessions if s.dataset == dataset])
            rname = auto_recipe(sub)
            over = dict(CROSS_CONFIG) if rname == "default" else {"max_units": CROSS_CONFIG["max_units"]}
            model, run, cfg, kw = _train_kind("POCO", sub, rname, seed, device, over)
            emit(_record("cross", "POCO", seed, _report(model, sub, device), variant=f"single:{dataset}", run=run, train_config=cfg.to_json()))


def run_protocol(name: str, out: str | os.PathLike, shared_data, seeds: Sequence[int], *, device=None, **kw: Any) -> None:
    """Run protocol ``name``, appending one JSON line per run to ``out``."""
    machine = _machine()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def emit(rec: dict) -> None:
        rec = {**rec, "machine": machine, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=_json_default) + "\n")
        print(f"{rec['protocol']:7s} {rec['model']:10s} {rec.get('variant', ''):28s} seed {rec['seed']} {rec.get('fold', '')} "
              f"test score {rec['test_score']:.4f}", flush=True)  # fmt: skip

    runners = {"worms": run_worms, "loo": run_loo, "tectum": run_tectum, "cross": run_cross}
    if name not in runners:
        raise KeyError(f"unknown protocol {name!r}; known: {PROTOCOLS}")
    runners[name](emit, shared_data, seeds, device=device, **kw)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def summarise(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Mean ± sd of the test score over seeds per (protocol, model, variant, fold), and per session."""
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                groups.setdefault((r["protocol"], r["model"], r.get("variant", ""), r.get("fold", "")), []).append(r)
    # leave-one-out: also the mean over the folds of each seed (only seeds that ran every fold)
    folds: dict[tuple[str, str, str], dict[int, dict[str, dict]]] = {}
    for (proto, model, variant, fold), runs in groups.items():
        if fold:
            for r in runs:
                folds.setdefault((proto, model, variant), {}).setdefault(r["seed"], {})[fold] = r
    all_folds = {k[0]: set() for k in folds}
    for (proto, _, _), by_seed in folds.items():
        for per_fold in by_seed.values():
            all_folds[proto] |= set(per_fold)
    for (proto, model, variant), by_seed in folds.items():
        complete = [per_fold for per_fold in by_seed.values() if set(per_fold) == all_folds[proto]]
        if complete:
            groups[(proto, model, variant, "(mean over folds)")] = [
                {"seed": next(iter(f.values()))["seed"], "test_score": float(np.mean([r["test_score"] for r in f.values()])),
                 "test": {"mae": float(np.mean([r["test"]["mae"] for r in f.values()]))} if all("mae" in r["test"] for r in f.values()) else {}}
                for f in complete
            ]  # fmt: skip
    rows = []
    for (proto, model, variant, fold), runs in sorted(groups.items()):
        scores = np.array([r["test_score"] for r in runs], dtype=float)
        per_session: dict[str, list[float]] = {}
        for r in runs:
            for name, v in r["test"].get("session_scores", {}).items():
                per_session.setdefault(name, []).append(v)
        maes = [r["test"]["mae"] for r in runs if "mae" in r["test"]]
        rows.append({
            "protocol": proto, "model": model, "variant": variant, "fold": fold, "n": len(runs),
            "seeds": sorted(r["seed"] for r in runs), "mean": float(scores.mean()),
            "sd": float(scores.std(ddof=1)) if len(runs) > 1 else math.nan,
            "mae": float(np.mean(maes)) if maes else math.nan,
            "per_session": {k: float(np.mean(v)) for k, v in per_session.items()},
        })  # fmt: skip
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        sd = f" ± {r['sd']:.3f}" if not math.isnan(r["sd"]) else ""
        fold = r["fold"].split("/")[-1]
        per = " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in r["per_session"].items()) if len(r["per_session"]) > 1 else ""
        mae = f" mae {r['mae']:.3f}" if not math.isnan(r["mae"]) else ""
        lines.append(f"{r['protocol']:7s} {fold:14s} {r['model']:10s} {r['variant']:28s} n={r['n']} {r['mean']:.3f}{sd}{mae}  {per}")
    return "\n".join(lines)

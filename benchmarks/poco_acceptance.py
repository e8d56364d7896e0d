"""The measurements behind issue 3's acceptance points (POCO and its baselines).

Each command trains models on the CPU/GPU at hand and appends one JSON object per run to
``--out`` (JSON lines), so interrupted sweeps keep what finished:

    python benchmarks/poco_acceptance.py demo   --seeds 0,1,2 --out benchmarks/results/demo.jsonl
    python benchmarks/poco_acceptance.py worms  --seeds 0,1,2 --out benchmarks/results/worms.jsonl
    python benchmarks/poco_acceptance.py finetune --seeds 0,1,2 --out benchmarks/results/finetune.jsonl
    python benchmarks/poco_acceptance.py cross  --seeds 0 --out benchmarks/results/cross.jsonl
    python benchmarks/poco_acceptance.py summary benchmarks/results/*.jsonl

Real recordings come from ../shared/data (see its README for the sources).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pocoviz.backend import configure_threads, describe, get_device
from pocoviz.forecast import ForecastCorpus, TrainConfig, evaluate, finetune, make_model, train
from pocoviz.forecast.recipes import DEMO_MODELS, DEMO_RECIPE, DEMO_STRIDES, SHORT_RECORDING, SHORT_RECORDING_MODELS, load_corpus

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORMS = [SHARED / "celegans_flavell_dag2023" / f"{u}-data.h5" for u in ("2022-07-26-31", "2022-07-27-45")]
TECTUM = SHARED / "zebrafish_tectum_triplett2018" / "zf_20151104-f1.mat"
WORM_MODELS = ["POCO", "POYO", "UICO", "MLP", "MLP_L", "NLinear", "DLinear", "TSMixer", "TexFilter", "MultiAR_Transformer", "copy-last"]
#: channel-independent big models: fewer units per window keeps a CPU step affordable
MAX_UNITS = {"MLP_L": 32}
#: the AR Transformer takes ~3 s per step on a 2-core CPU: its worm runs stop at this many steps
MAX_STEPS = {"MultiAR_Transformer": 200}


def _devdata() -> dict | None:
    """On the GPU machine the recordings come packed in one .npz (see devdata.py)."""
    import os

    path = os.environ.get("POCOVIZ_DEVDATA")
    if not path:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    from devdata import unpack

    return unpack(Path(path))


def demo_corpus(strides=None) -> ForecastCorpus:
    packed = _devdata()
    if packed is None:
        return load_corpus(["demo"], strides=strides)
    return ForecastCorpus({k: v for k, v in packed.items() if k.split("/")[0] in ("zebrafish", "mouse", "worm")}, strides=dict(strides or {}))


def worm_corpus(strides=None, names=None) -> ForecastCorpus:
    packed = _devdata()
    if packed is None:
        c = load_corpus([str(p) for p in WORMS], strides=strides)
    else:
        c = ForecastCorpus({k: v for k, v in packed.items() if k.startswith("C_elegans/")}, strides=dict(strides or {}))
    return c.subset(names) if names else c


def tectum_corpus(strides=None) -> ForecastCorpus:
    packed = _devdata()
    if packed is None:
        return load_corpus([str(TECTUM)], strides=strides, dataset="zebrafish_tectum")
    return ForecastCorpus({k: v for k, v in packed.items() if k.startswith("zebrafish_tectum/")}, strides=dict(strides or {}))


def emit(out: Path, record: dict) -> None:
    record["machine"] = {"device": describe().get("device"), "host": platform.node(), "torch": torch.__version__}
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in record if k in ("experiment", "model", "seed", "variant", "test_score", "seconds", "best_step")}), flush=True)


def run_one(kind: str, corpus: ForecastCorpus, cfg: TrainConfig, seed: int, model_kw: dict, device) -> tuple:
    model = make_model(kind, corpus, seed=seed, **model_kw)
    res = train(model, corpus, replace(cfg, seed=seed), device=device)
    rep = evaluate(model, corpus, "test", device=device)
    return model, res, rep


def record_of(experiment: str, kind: str, seed: int, variant: str, model_kw: dict, cfg: TrainConfig, res, rep) -> dict:
    return {
        "experiment": experiment, "model": kind, "seed": seed, "variant": variant, "model_config": model_kw, "train_config": cfg.to_json(),
        "test_score": rep.score, "dataset_scores": rep.dataset_scores(), "session_scores": {s.name: s.score for s in rep.sessions},
        "per_step_mse": rep.per_step_mse.tolist(), "best_step": res.best_step, "steps_done": res.steps_done,
        "best_val_mse": res.best_val_mse, "seconds": res.seconds, "windows_per_second": res.windows_per_second,
        "history": res.history,
    }  # fmt: skip


def cmd_demo(a) -> None:
    corpus = demo_corpus(DEMO_STRIDES)
    cfg = replace(DEMO_RECIPE, steps=a.steps or DEMO_RECIPE.steps)
    for seed in a.seeds:
        for kind in a.models:
            kw = dict(DEMO_MODELS[f"{kind.lower()}_demo"][1]) if f"{kind.lower()}_demo" in DEMO_MODELS else {}
            _, res, rep = run_one(kind, corpus, cfg, seed, kw, a.device)
            emit(a.out, record_of("demo", kind, seed, "demo-recipe" + (f"|{json.dumps(kw, sort_keys=True)}" if kw else ""), kw, cfg, res, rep))


def cmd_worms(a) -> None:
    corpus = worm_corpus()
    variants = json.loads(a.variants) if a.variants else {"short": None}
    for seed in a.seeds:
        for kind in a.models:
            for vname, vkw in variants.items():
                model_kw = dict(SHORT_RECORDING_MODELS.get(kind, {})) if vkw is None else dict(vkw.get(kind, {}))
                cfg = replace(SHORT_RECORDING, steps=a.steps or MAX_STEPS.get(kind, SHORT_RECORDING.steps), max_units=MAX_UNITS.get(kind))
                if vkw is not None and "train" in vkw:
                    cfg = replace(cfg, **vkw["train"])
                _, res, rep = run_one(kind, corpus, cfg, seed, model_kw, a.device)
                emit(a.out, record_of("worms", kind, seed, vname, model_kw, cfg, res, rep))


def cmd_finetune(a) -> None:
    """Pretrain on worm A (+ demo corpus), adapt embedding-only to worm B for 200 steps."""
    worms = worm_corpus()
    a_name, b_name = worms.names
    target = worms.subset([b_name])
    ft_cfg = TrainConfig(steps=200, eval_every=20, batch_size=64)
    for seed in a.seeds:
        for pre in a.pretrain:
            pre_corpus = worm_corpus(names=[a_name])
            if pre == "worm+demo":
                pre_corpus = ForecastCorpus({**pre_corpus.recordings, **demo_corpus().recordings}, strides={"train": 1, "val": 4, "test": 1})
            kw = json.loads(a.pretrain_kw) if a.pretrain_kw else dict(SHORT_RECORDING_MODELS["POCO"])
            cfg = replace(SHORT_RECORDING, steps=a.steps or SHORT_RECORDING.steps, max_units=64 if pre == "worm+demo" else None)
            if a.pretrain_eval_every:
                cfg = replace(cfg, eval_every=a.pretrain_eval_every, patience=a.pretrain_patience)
            model, res, _ = run_one("POCO", pre_corpus, cfg, seed, kw, a.device)
            for mode in a.modes:
                for lr, init in itertools.product(a.ft_lrs, a.inits):
                    fcfg = replace(ft_cfg, seed=seed, lr=lr)
                    adapted, fres = finetune(model, target, mode, fcfg, device=a.device, init=init)
                    rep = evaluate(adapted, target, "test", device=a.device)
                    tag = f"pretrained[{pre}{'|' + a.pretrain_kw if a.pretrain_kw else ''}]:{mode}{'' if lr == ft_cfg.lr else f'|lr={lr:g}'}"
                    tag += "" if init == "random" else f"|init={init}"
                    r = record_of("finetune", "POCO", seed, tag, kw, fcfg, fres, rep)
                    r["finetune_info"] = fres.info
                    r["zero_shot_val_score"] = fres.history[0]["val_score"]
                    r["pretrain_best_step"] = res.best_step
                    emit(a.out, r)
        for kind in ("POCO", "MLP") if not a.no_scratch else ():
            kw = dict(SHORT_RECORDING_MODELS.get(kind, {}))
            _, res, rep = run_one(kind, target, replace(ft_cfg, seed=seed), seed, kw, a.device)
            emit(a.out, record_of("finetune", kind, seed, "scratch-200", kw, ft_cfg, res, rep))


def cmd_cross(a) -> None:
    """One POCO on demo + both worms + the tectum; single-dataset POCOs for comparison."""
    demo, worms, tectum = demo_corpus(DEMO_STRIDES), worm_corpus(DEMO_STRIDES), tectum_corpus(DEMO_STRIDES)
    items = {**demo.recordings, **worms.recordings, **tectum.recordings}
    everything = ForecastCorpus(items, strides=dict(DEMO_STRIDES))
    cfg = replace(DEMO_RECIPE, steps=a.steps or 2000, eval_every=50, patience=a.patience)
    kw = json.loads(a.kw) if a.kw else (dict(SHORT_RECORDING_MODELS["POCO"]) if a.robust else {})
    for seed in a.seeds:
        if "all" in a.parts:
            _, res, rep = run_one("POCO", everything, cfg, seed, kw, a.device)
            emit(a.out, record_of("cross", "POCO", seed, "all-datasets", kw, cfg, res, rep))
        for name, c in (("worms", worms), ("tectum", tectum), ("demo", demo)):
            if name not in a.parts:
                continue
            _, res, rep = run_one("POCO", c, cfg, seed, kw, a.device)
            emit(a.out, record_of("cross", "POCO", seed, f"single:{name}", kw, cfg, res, rep))


def cmd_summary(a) -> None:
    rows: dict[tuple, list] = {}
    for p in a.files:
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            rows.setdefault((r["experiment"], r["variant"], r["model"]), []).append(r)
    for (exp, var, model), rs in sorted(rows.items()):
        s = np.array([r["test_score"] for r in rs])
        ds = {}
        for r in rs:
            for k, v in r["dataset_scores"].items():
                ds.setdefault(k, []).append(v)
        extra = "  ".join(f"{k} {np.mean(v):.3f}" for k, v in ds.items()) if len(ds) > 1 else ""
        sd = f"± {s.std(ddof=1):.3f}" if len(s) > 1 else ""
        print(f"{exp:9s} {var:34s} {model:20s} n={len(s)} score {s.mean():.3f} {sd:8s} best_step {np.mean([r['best_step'] for r in rs]):6.0f}  {extra}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("demo", cmd_demo), ("worms", cmd_worms), ("finetune", cmd_finetune), ("cross", cmd_cross)):
        q = sub.add_parser(name)
        q.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
        q.add_argument("--out", type=Path, required=True)
        q.add_argument("--steps", type=int, default=None)
        q.add_argument("--device", default=None)
        q.set_defaults(func=fn)
        if name == "demo":
            q.add_argument("--models", type=lambda s: s.split(","), default=["POCO", "MLP", "NLinear"])
        if name == "worms":
            q.add_argument("--models", type=lambda s: s.split(","), default=WORM_MODELS)
            q.add_argument("--variants", default=None, help='JSON {"name": {"POCO": {...}, "train": {...}}}')
        if name == "finetune":
            q.add_argument("--pretrain", type=lambda s: [x for x in s.split(",") if x != "none"], default=["worm", "worm+demo"], help="worm, worm+demo, none")
            q.add_argument("--modes", type=lambda s: s.split(","), default=["embedding"])
            q.add_argument("--pretrain-kw", default=None, help="POCO settings for pretraining as JSON (default: the short recipe's)")
            q.add_argument("--no-scratch", action="store_true", help="skip the from-scratch controls")
            q.add_argument("--pretrain-eval-every", type=int, default=None)
            q.add_argument("--pretrain-patience", type=int, default=None)
            q.add_argument("--inits", type=lambda s: s.split(","), default=["random"], help="new-unit initialisations (random, labels)")
            q.add_argument("--ft-lrs", type=lambda s: [float(x) for x in s.split(",")], default=[3e-4], help="fine-tuning learning rates")
        if name == "cross":
            q.add_argument("--patience", type=int, default=None)
            q.add_argument("--robust", action="store_true")
            q.add_argument("--kw", default=None, help="POCO settings as JSON (overrides --robust)")
            q.add_argument("--parts", type=lambda s: s.split(","), default=["all", "demo", "worms", "tectum"])
    q = sub.add_parser("summary")
    q.add_argument("files", nargs="+")
    q.set_defaults(func=cmd_summary)
    a = p.parse_args(argv)
    if a.cmd != "summary":
        configure_threads()
        a.device = get_device(a.device)
        a.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    a.func(a)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

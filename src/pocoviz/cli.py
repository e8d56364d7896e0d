"""The ``pocoviz`` command: serve, import, synth, info, train, evaluate, finetune, forecast, bench, make-assets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _err(msg: str) -> int:
    print(f"pocoviz: error: {msg}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the app (Panel's server on the packaged app factory; see :mod:`pocoviz.ui.serve`)."""
    if args.data_dir and not Path(args.data_dir).is_dir():
        return _err(f"--data-dir {args.data_dir}: not a folder")
    from pocoviz.ui.serve import check_num_procs, serve

    try:
        check_num_procs(args.num_procs)
    except ValueError as exc:
        return _err(str(exc))
    origins = [f"{args.address}:{args.port}", f"localhost:{args.port}", *(args.allow_websocket_origin or [])]
    serve(args.data_dir, port=args.port, address=args.address, num_procs=args.num_procs, num_threads=args.num_threads, show=args.show,
          websocket_origins=origins)  # fmt: skip
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    """``pocoviz forecast`` (:func:`pocoviz.forecast.batch.cmd_forecast`; imported when run, so that
    other commands start without torch)."""
    from pocoviz.forecast.batch import cmd_forecast as run

    return run(args)


def _memory_cap(text: str) -> int:
    """``--memory-cap`` values ("1GB", "512MB", a number of bytes) for argparse."""
    from pocoviz.recordings.chunked import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _progress(label: str):
    """A progress callback printing ``label: done/total`` on stderr at most every 5%."""
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct // 5 != last[0] // 5 or done == total:
            last[0] = pct
            print(f"{label}: {done}/{total} frames ({pct}%)", file=sys.stderr, flush=True)

    return report


def cmd_import(args: argparse.Namespace) -> int:
    """Convert any supported recording to a pocoviz netCDF file, or to a chunked Zarr store (DEST.zarr)."""
    from pocoviz.recordings import RecordingError, open_recording, save_recording

    src, dest = Path(args.src), Path(args.dest)
    chunked = dest.suffix == ".zarr"
    if dest.suffix not in (".nc", ".nc4") and not chunked:
        return _err(f"{dest}: the destination must end in .nc (one file) or .zarr (chunked, for recordings larger than memory)")
    if (dest.exists() or dest.is_symlink()) and not args.overwrite:
        return _err(f"{dest} exists; pass --overwrite to replace it")
    if not dest.parent.is_dir():
        return _err(f"{dest}: the folder {dest.parent} does not exist")
    if dest.resolve() == src.resolve():
        return _err("the destination is the source file")
    kwargs: dict[str, Any] = {}
    if args.sampling_rate is not None:
        kwargs["sampling_rate_hz"] = args.sampling_rate
    if chunked:
        from pocoviz.recordings.chunked import write_chunked

        attrs = {k: v for k, v in (("species", args.species), ("session", args.session)) if v}
        try:
            info = write_chunked(
                src, dest, memory_cap_bytes=args.memory_cap, overwrite=args.overwrite, pyramid=not args.no_pyramid,
                attrs=attrs, reader_kwargs=kwargs, progress=_progress(f"importing {src.name}"),
            )
        except RecordingError as exc:
            return _err(str(exc))
        print(
            f"wrote {dest}: {info['units']} units × {info['frames']} frames ({info['species']}, {info['session']}), "
            f"chunked, {info['pyramid_levels']} pyramid levels, {info['seconds']:.1f} s"
        )
        return 0
    try:
        ds = open_recording(src, **kwargs)
        if args.species:
            ds.attrs["species"] = args.species
        if args.session:
            ds.attrs["session"] = args.session
        save_recording(ds, dest)
    except RecordingError as exc:
        return _err(str(exc))
    print(f"wrote {dest}: {ds.sizes['unit']} units × {ds.sizes['time']} frames ({ds.attrs['species']}, {ds.attrs['session']})")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write a synthetic region-structured whole-brain recording (a chunked Zarr store)."""
    from pocoviz.recordings import RecordingError
    from pocoviz.recordings.wholebrain import write_wholebrain

    dest = Path(args.dest)
    if dest.suffix != ".zarr":
        return _err(f"{dest}: the destination must end in .zarr")
    if args.units < 1 or args.frames < 2:
        return _err(f"needs at least 1 unit and 2 frames, got --units {args.units} --frames {args.frames}")
    if not args.rate > 0:
        return _err(f"--rate must be positive, got {args.rate}")
    try:
        info = write_wholebrain(
            dest, units=args.units, frames=args.frames, seed=args.seed, rate_hz=args.rate,
            memory_cap_bytes=args.memory_cap, overwrite=args.overwrite, pyramid=not args.no_pyramid,
            progress=None if args.quiet else _progress("synth"),
        )
    except RecordingError as exc:
        return _err(str(exc))
    print(f"wrote {dest}: {info['units']} units × {info['frames']} frames (seed {info['seed']}), "
          f"{info['pyramid_levels']} pyramid levels, {info['seconds']:.1f} s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise a recording or corpus.

    Large netCDF/Zarr recordings open lazily: only metadata and a sample of ``activity`` (first,
    last and middle time chunks) are read, and the output says which frames were checked."""
    from pocoviz.assets import demo_corpus_path
    from pocoviz.recordings import RecordingError, corpus_sessions, open_corpus, summarize

    try:
        tree = open_corpus(demo_corpus_path() if args.path == "demo" else args.path)  # 'demo', as train/evaluate take it
    except RecordingError as exc:
        return _err(str(exc))
    datasets = corpus_sessions(tree)
    sessions = {name: summarize(ds) for name, ds in datasets.items()}
    if args.json:
        print(json.dumps({"path": str(args.path), "sessions": sessions}, indent=2, default=str))
        return 0
    print(f"{args.path}: {len(sessions)} session(s)")
    for name, s in sessions.items():
        regions = ", ".join(f"{k} ({v})" for k, v in list(s["regions"].items())[:12])
        if datasets[name].attrs.get("time_is_frame_index"):  # the 1 Hz is a placeholder: do not print it as a rate
            clock = f"(frame rate unknown: time is the frame index, set it with pocoviz import --sampling-rate; {s['activity_units']})"
        else:
            clock = f"@ {s['sampling_rate_hz']:.3g} Hz ({s['duration_s']:.0f} s, {s['activity_units']})"
        print(
            f"  {name}: {s['n_unit']} units × {s['n_time']} frames {clock}, {s['n_labelled']} labelled, "
            f"positions: {','.join(s['has_positions']) or 'none'}"
        )
        print(f"    regions: {regions}")
        if s.get("activity_checked"):  # a lazy (large, chunked) recording: only a sample of activity was read
            frames = ", ".join(f"{a}-{b}" for a, b in s.get("activity_sample_frames", []))
            print(f"    activity checked: {s['activity_checked']} (frames {frames}; NaN fraction {s['nan_fraction']:.3g} in the sample)")
    return 0


# ----------------------------------------------------------------------------------------------
# forecasting: train / evaluate / finetune
# ----------------------------------------------------------------------------------------------


def _load_data(args: argparse.Namespace, strides: dict[str, int] | None = None):
    from pocoviz.forecast.recipes import load_corpus

    return load_corpus(args.data, data_dir=getattr(args, "data_dir", None), strides=strides, dataset=getattr(args, "dataset", None))


def _train_config(args: argparse.Namespace, recipe_name: str, **fixed: Any):
    from pocoviz.forecast.recipes import recipe

    over = {
        "steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every, "patience": args.patience,
        "max_units": args.max_units, "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "progress": not args.quiet,
        "workers": getattr(args, "workers", None),
        "cache_bytes": None if getattr(args, "cache_mb", None) is None else int(args.cache_mb * 2**20),
    }  # fmt: skip
    over.update(fixed)
    return recipe(recipe_name, **over)


def _print_report(rep, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps({**rep.to_json(), **(extra or {})}, indent=1))
        return
    print(f"{rep.model}: {rep.split} score {rep.score:.4f} (mean over {len(rep.sessions)} sessions; 0 = copy last frame, 1 = perfect)")
    for s in rep.sessions:
        print(
            f"  {s.name:40s} score {s.score:7.4f}  mse {s.mse:.4f}  mae {s.mae:.4f}  copy-last mse {s.copy_mse:.4f}  "
            f"({s.n_windows} windows, {s.sse.shape[1]} units)"
        )
    for name, values in (("MSE", rep.per_step_mse), ("MAE", rep.per_step_mae)):
        print(f"  per-step {name} (steps 1..{len(values)}): {' '.join(f'{v:.3f}' for v in values)}")


def _forecast_errors():
    from pocoviz.forecast import CheckpointError
    from pocoviz.recordings import RecordingError

    return (CheckpointError, RecordingError, KeyError, ValueError, FileNotFoundError)


def _forward_argv(args: argparse.Namespace) -> list[str]:
    """The command line of ``args``'s subcommand without ``--nproc`` (what each torchrun rank runs)."""
    parser: argparse.ArgumentParser = args.parser_
    options: list[str] = []
    positional: list[str] = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or a.dest in ("nproc", "func", "parser_"):
            continue
        v = getattr(args, a.dest, None)
        if not a.option_strings:
            positional += [str(x) for x in (v if isinstance(v, list) else [v])]
        elif isinstance(a, argparse._StoreTrueAction):
            options += [a.option_strings[-1]] if v else []
        elif v is not None and v != a.default:
            options.append(f"{a.option_strings[-1]}={v}")
    return [parser.prog.split()[-1], *options, *positional]


def _launch_ranks(args: argparse.Namespace) -> int | None:
    """``--nproc N``: run this command in N processes under torchrun; None when it runs here."""
    from pocoviz.forecast import distributed

    if args.nproc is None:
        return None
    if args.nproc < 1:
        return _err(f"--nproc must be >= 1, got {args.nproc}")
    if distributed.launched():
        return _err("--nproc starts torchrun itself; under torchrun leave it out (torchrun's --nproc-per-node sets the processes)")
    if args.nproc == 1:
        return None
    try:
        timeout = None if args.dist_timeout is None else distributed.timeout_seconds(args.dist_timeout)
    except distributed.DistributedError as exc:
        return _err(str(exc))
    return distributed.launch(_forward_argv(args), args.nproc, timeout=timeout)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a forecaster on recordings and save it as a checkpoint (safetensors + JSON card).

    Under torchrun (or with ``--nproc N``) every process trains on its share of each batch; rank 0
    prints, validates and writes the checkpoint.
    """
    return _in_ranks(args, _train)


def _in_ranks(args: argparse.Namespace, body) -> int:
    """Run ``body(args, device, is_rank_0)``: in this process, or in ``--nproc`` processes launched
    through torchrun, or as one rank of a torchrun job."""
    from pocoviz.backend import configure_threads
    from pocoviz.forecast import distributed

    launched = _launch_ranks(args)
    if launched is not None:
        return launched
    configure_threads()
    try:
        with distributed.session(args.device, timeout=args.dist_timeout) as device:
            return body(args, device, distributed.is_main())
    except distributed.DistributedError as exc:
        return _err(str(exc))


def _train(args: argparse.Namespace, device, main: bool) -> int:
    from pocoviz.forecast import evaluate, fit, save_model
    from pocoviz.forecast.recipes import auto_recipe, model_overrides, warm_start_for

    try:
        corpus = _load_data(args, {"train": 1, "val": args.val_stride, "test": 1})
        recipe_name = auto_recipe(corpus) if args.recipe == "auto" else args.recipe
        if not args.json and main:
            print(f"recipe: {recipe_name}", flush=True)
            if corpus.lazy or (args.workers or 0) > 0:
                lazy = sum(ds["activity"].chunks is not None for ds in corpus.recordings.values())
                print(
                    f"training windows stream from storage ({lazy} of {len(corpus.recordings)} recordings chunked, never loaded whole; "
                    f"{args.workers or 0} worker processes)",
                    flush=True,
                )
                n_val = sum(corpus.n_windows("val").values())
                widest = max(s.n_units for s in corpus.sessions)
                if n_val * widest > 10**7:  # a validation scores every unit of every window
                    print(
                        f"validation: {n_val} windows of up to {widest} units at each evaluation (stride {args.val_stride}); "
                        "a larger --val-stride makes it cheaper",
                        flush=True,
                    )
        model_kw = {**model_overrides(recipe_name, args.kind), **(json.loads(args.config) if args.config else {})}
        cfg = _train_config(args, recipe_name)
        warm = warm_start_for(recipe_name, args.kind) if args.warm_start == "auto" else args.warm_start
        model, res = fit(args.kind, corpus, cfg, warm_start=warm, device=device, state_path=args.state, **model_kw)
        if not main:
            return 0  # rank 0 scores and writes the checkpoint
        rep = evaluate(model, corpus, "test", device=device)
        path = save_model(
            model,
            args.out,
            training={"data": [str(d) for d in args.data], "sessions": corpus.names, "recipe": recipe_name, "model_overrides": model_kw,
                      "config": cfg.to_json(), "warm_start": res.info.get("warm_start"),
                      "best_step": res.best_step, "steps_done": res.steps_done, "seconds": res.seconds, "device": str(device),
                      "history": res.history},
            metrics={"test": rep.to_json(), "test_score": rep.score, "best_val_mse": res.best_val_mse},
        )  # fmt: skip
    except _forecast_errors() as exc:
        return _err(str(exc))
    _print_report(rep, args.json, {"checkpoint": str(path), "best_step": res.best_step})
    if not args.json:
        print(f"saved {path} (best validation step {res.best_step} of {res.steps_done}, {res.seconds:.0f} s on {device})")
    return 0


def _model_search() -> list[Path]:
    """Where the CLI looks for a bare checkpoint name: the shipped models, ``POCOVIZ_MODELS``, then
    the working directory, so that ``pocoviz evaluate NAME`` finds what ``train --out NAME`` wrote.
    (The app does not look in its working directory: it opens only the data directory.)"""
    from pocoviz.forecast.checkpoint import default_search

    return [*default_search(), Path.cwd()]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint on recordings it was trained on (or fine-tuned to)."""
    from pocoviz.backend import configure_threads, get_device
    from pocoviz.forecast import evaluate, load_model

    configure_threads()
    try:
        device = get_device(args.device)
        model = load_model(args.model, device=device, search=_model_search())
        corpus = _load_data(args, {"train": 1, "val": args.stride, "test": args.stride})
        rep = evaluate(model, corpus, args.split, device=device)
    except _forecast_errors() as exc:
        return _err(str(exc).strip('"'))
    _print_report(rep, args.json)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Adapt a checkpoint to new recordings (new unit/session embeddings, spec §5).

    Under torchrun (or with ``--nproc N``) every process trains on its share of each batch; rank 0
    prints, validates and writes the checkpoint.
    """
    return _in_ranks(args, _finetune)


def _finetune(args: argparse.Namespace, device, main: bool) -> int:
    from pocoviz.forecast import evaluate, finetune, load_model, save_model

    try:
        model = load_model(args.model, device=device, search=_model_search())
        corpus = _load_data(args, {"train": 1, "val": args.val_stride, "test": 1})
        cfg = _train_config(args, "default", steps=args.steps, eval_every=args.eval_every)
        adapted, res = finetune(model, corpus, args.mode, cfg, device=device, init=args.init)
        if not main:
            return 0  # rank 0 scores and writes the checkpoint
        rep = evaluate(adapted, corpus, "test", device=device)
        card = getattr(model, "card", {})
        path = save_model(
            adapted,
            args.out,
            training={**card.get("training", {}), "finetune": {"from": str(args.model), "data": [str(d) for d in args.data],
                      "mode": args.mode, **res.info, "config": cfg.to_json(), "learning_curve": res.history, "best_step": res.best_step}},
            metrics={"finetune_test": rep.to_json(), "finetune_test_score": rep.score, "zero_shot_val_score": res.history[0]["val_score"]},
        )  # fmt: skip
    except _forecast_errors() as exc:
        return _err(str(exc).strip('"'))
    _print_report(rep, args.json, {"checkpoint": str(path), "learning_curve": res.history})
    if not args.json:
        curve = ", ".join(f"{h['step']}: {h['val_score']:.3f}" for h in res.history)
        print(f"learning curve (step: validation score): {curve}")
        print(f"saved {path}")
    return 0


def _add_train_options(p: argparse.ArgumentParser, *, steps_default: int | None = None, eval_default: int | None = None) -> None:
    p.add_argument("--steps", type=int, default=steps_default, help="optimiser steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per dataset per step (64)")
    p.add_argument("--eval-every", type=int, default=eval_default, help="validate every this many steps (the best state is kept)")
    p.add_argument("--patience", type=int, default=None, help="stop after this many evaluations without improvement")
    p.add_argument("--max-units", type=int, default=None, help="random units kept per training window")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (3e-4)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    p.add_argument(
        "--workers", type=int, default=None,
        help="worker processes that read training windows (default 0; chunked recordings always stream, the same batches for any N)",
    )  # fmt: skip
    p.add_argument("--cache-mb", type=float, default=None, help="band cache of chunked recordings per process, MiB (512)")
    p.add_argument("--val-stride", type=int, default=1, help="stride of validation windows (larger is cheaper)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU when present)")
    p.add_argument("--data-dir", default=None, help="refuse data paths outside this folder")
    p.add_argument("--dataset", default=None, help="dataset name for the given recordings (default: their species)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--nproc", type=int, default=None, metavar="N",
        help="train in N processes on this machine (torchrun, DistributedDataParallel: gloo on the CPU, NCCL with one GPU each); "
        "several machines: torchrun --nnodes ... -m pocoviz train ...",
    )  # fmt: skip
    p.add_argument(
        "--dist-timeout", type=float, default=None, metavar="SECONDS",
        help="distributed runs: seconds a process waits for the others (rank 0's validation included) before the run fails "
        "(default: POCOVIZ_DIST_TIMEOUT, else 1800)",
    )  # fmt: skip
    p.set_defaults(parser_=p)


def cmd_protocols(args: argparse.Namespace) -> int:
    """Run a benchmark protocol on the real recordings (pocoviz.forecast.protocols), or summarise runs."""
    from pocoviz.backend import configure_threads, get_device
    from pocoviz.bench import DEFAULT_SHARED
    from pocoviz.forecast.protocols import format_summary, run_protocol, summarise

    if args.protocol == "summary":
        if not args.files:
            return _err("summary needs the JSON-lines files to read")
        rows = summarise(args.files)
        print(json.dumps(rows, indent=1) if args.json else format_summary(rows))
        return 0
    if not args.out:
        return _err("--out FILE.jsonl is needed (the runs are appended to it)")
    configure_threads()
    kw: dict[str, Any] = {}
    if args.protocol == "loo":
        kw["init"] = args.init
        if args.folds:
            kw["folds"] = args.folds.split(",")
    elif args.folds:
        return _err("--folds is for the loo protocol")
    if args.models:
        if args.protocol not in ("worms", "tectum"):
            return _err("--models is for the worms and tectum protocols")
        kw["kinds"] = args.models.split(",")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
        run_protocol(args.protocol, args.out, args.shared_data or DEFAULT_SHARED, seeds, device=get_device(args.device), **kw)
    except (*_forecast_errors(), TypeError) as exc:
        return _err(str(exc))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pocoviz.bench import run_bench

    try:
        report = run_bench(quick=args.quick, shared_data=args.shared_data, only=tuple(args.only.split(",")) if args.only else None)
    except ValueError as exc:
        return _err(str(exc))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_make_assets(args: argparse.Namespace) -> int:
    """Write the shipped assets deterministically: the demo corpus, then the demo models."""
    import time

    from pocoviz.recordings import make_demo_corpus, save_corpus

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = out / "demo_corpus.nc"
    if args.layouts_only:
        return _make_layouts(out / "models", out / "layouts")
    if args.limits_only is not None:
        from pocoviz.limits.sweep import SWEEPS, write_sweeps

        names = tuple(n for n in args.limits_only.split(",") if n) or SWEEPS
        unknown = set(names) - set(SWEEPS)
        if unknown:
            return _err(f"unknown sweeps {sorted(unknown)}; choose from {SWEEPS}")
        write_sweeps(names, out / "limits")
        return 0
    if not args.models_only:
        tree = make_demo_corpus(seed=args.seed)  # one torch and one BLAS thread, whatever the machine
        path = save_corpus(tree, path, quantize=1e-3)
        size = path.stat().st_size
        print(f"wrote {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
        if size > 20 * 2**20:
            return _err(f"{path} is {size / 2**20:.1f} MiB, over the 20 MiB budget")
    if args.corpus_only:
        return 0
    rc = _make_demo_models(path, out / "models", args.seed, args.models.split(",") if args.models else None, args.device)
    rc = rc or _make_layouts(out / "models", out / "layouts")
    if not rc:
        from pocoviz.limits.sweep import write_sweeps

        write_sweeps(folder=out / "limits")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"assets: {total / 2**20:.1f} MiB in {out}")
    if total > 50 * 2**20:
        return _err(f"{out} holds {total / 2**20:.1f} MiB, over the 50 MB budget")
    return rc


def _make_layouts(models_dir: Path, layouts_dir: Path) -> int:
    """UMAP layouts of the shipped checkpoints' unit embeddings (per session and all together), so
    that the Embeddings tab shows them at once on a fresh server (umap-learn takes about a minute)."""
    import shutil
    import time

    from pocoviz.embeddings.layout import precompute_layouts
    from pocoviz.forecast import available_models, load_model, model_card

    if layouts_dir.exists():
        shutil.rmtree(layouts_dir)  # layouts are keyed by the embeddings: old ones would only linger
    layouts_dir.mkdir(parents=True)
    for name in available_models([models_dir]):
        if model_card(name, search=[models_dir]).get("kind") not in ("POCO", "POYO", "UICO"):
            continue
        t0 = time.perf_counter()
        files = precompute_layouts(load_model(name, search=[models_dir]), layouts_dir)
        print(f"wrote {len(files)} UMAP layouts of {name} to {layouts_dir} in {time.perf_counter() - t0:.1f} s")
    return 0


def _make_demo_models(corpus_path: Path, models_dir: Path, seed: int, names: list[str] | None, device: str | None) -> int:
    """Train the shipped demo models (recipes.DEMO_MODELS) on the corpus as saved (quantized)."""
    from dataclasses import replace

    from pocoviz.backend import configure_threads, get_device
    from pocoviz.forecast import evaluate, make_model, save_model, train
    from pocoviz.forecast.recipes import DEMO_MODELS, DEMO_RECIPE, DEMO_STRIDES, load_corpus

    configure_threads()
    dev = get_device(device)
    unknown = set(names or []) - set(DEMO_MODELS)
    if unknown:
        return _err(f"unknown demo models {sorted(unknown)}; known: {sorted(DEMO_MODELS)}")
    corpus = load_corpus([str(corpus_path)], strides=DEMO_STRIDES)
    models_dir.mkdir(parents=True, exist_ok=True)
    for name, (kind, kw) in DEMO_MODELS.items():
        if names and name not in names:
            continue
        cfg = replace(DEMO_RECIPE, seed=seed, progress=True)
        model = make_model(kind, corpus, seed=seed, **kw)
        res = train(model, corpus, cfg, device=dev)
        test = evaluate(model, corpus, "test", device=dev)
        p = save_model(
            model,
            models_dir / name,
            training={"data": ["demo"], "corpus_file": corpus_path.name, "sessions": corpus.names, "recipe": "demo",
                      "config": cfg.to_json(), "seed": seed, "best_step": res.best_step, "steps_done": res.steps_done,
                      "seconds": res.seconds, "device": str(dev), "history": res.history},
            metrics={"test_score": test.score, "test": test.to_json(), "best_val_mse": res.best_val_mse},
            extra={"description": f"{kind} trained on the synthetic demo corpus by `pocoviz make-assets`"},
        )  # fmt: skip
        print(f"wrote {p}: {kind} test score {test.score:.4f} {test.dataset_scores()} (best step {res.best_step}, {res.seconds:.0f} s)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pocoviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the app")
    p.add_argument("--data-dir", default=os.environ.get("POCOVIZ_DATA_DIR"), help="folder of recordings to offer")
    p.add_argument("--port", type=int, default=5006, help="port to serve on (5006)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--num-threads", type=int, default=2, help="Panel's worker threads for background work, per process (2)")
    p.add_argument("--num-procs", type=int, default=1, help="server processes sharing the port; forecasts and layouts are shared on disk (1)")
    p.add_argument("--allow-websocket-origin", action="append", default=None, metavar="HOST[:PORT]",
                   help="a host the browser may connect from besides ADDRESS:PORT (a reverse proxy's name); repeatable")  # fmt: skip
    p.add_argument("--show", action="store_true", help="open a browser")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("import", help="convert a recording to pocoviz netCDF, or to a chunked Zarr store (DEST.zarr)")
    p.add_argument("src", help="a recording in any supported format (NWB, Flavell HDF5, MATLAB, NumPy, suite2p, netCDF, Zarr)")
    p.add_argument("dest", help="the netCDF file (.nc) or chunked store (.zarr) to write")
    p.add_argument("--sampling-rate", type=float, default=None, help="frames per second, when the file lacks it")
    p.add_argument("--species", default=None, help="species, when the file does not say")
    p.add_argument("--session", default=None, help="session name (default: from the file name)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.add_argument("--memory-cap", type=_memory_cap, default="1GB", metavar="SIZE",
                   help="working memory for a chunked import (DEST.zarr), e.g. 512MB, 2GB (1GB)")
    p.add_argument("--no-pyramid", action="store_true", help="chunked import without the multi-resolution pyramid")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("synth", help="write a synthetic whole-brain recording (chunked Zarr, ZAPBench's size by default)")
    p.add_argument("dest", help="the .zarr store to write")
    p.add_argument("--units", type=int, default=71721, help="units (71721, ZAPBench's larval zebrafish)")
    p.add_argument("--frames", type=int, default=7879, help="frames (7879)")
    p.add_argument("--seed", type=int, default=0, help="seed: the values depend on it (and on the size) only (0)")
    p.add_argument("--rate", type=float, default=1.0, help="frames per second (1.0)")
    p.add_argument("--memory-cap", type=_memory_cap, default="1GB", metavar="SIZE", help="working memory, e.g. 512MB (1GB)")
    p.add_argument("--no-pyramid", action="store_true", help="skip the multi-resolution pyramid")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("info", help="summarise a recording or corpus")
    p.add_argument("path", help="a recording, a corpus, a folder of recordings, or 'demo'")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a forecaster (POCO or a baseline) and save a checkpoint")
    p.add_argument("kind", help="POCO, POYO, UICO, MLP, MLP_L, NLinear, DLinear, TSMixer, TexFilter, MultiAR_Transformer")
    p.add_argument("data", nargs="+", help="recording files, folders, corpora, or 'demo'")
    p.add_argument("--out", required=True, help="checkpoint path stem (writes STEM.safetensors and STEM.json)")
    p.add_argument(
        "--recipe", default="auto", choices=["auto", "default", "demo", "short"],
        help="default: POCO's settings; short: early stopping and frozen unit embeddings for recordings of a few hundred "
        "frames; auto (the default): short when sessions average under 800 training windows (recordings up to ~1400 frames)",
    )
    p.add_argument("--config", default=None, help="model settings as JSON, e.g. '{\"unit_dropout\": 0.2}'")
    p.add_argument("--state", default=None, help="resumable training state file")
    p.add_argument(
        "--warm-start", default="auto", choices=["auto", "none", "mlp"],
        help="mlp: train the MLP baseline first and start POCO's FiLM head from it; auto: mlp for POCO under the short recipe",
    )
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("protocols", help="long benchmark protocols on the real recordings; JSON lines (not a test)")
    p.add_argument("protocol", choices=["worms", "loo", "tectum", "cross", "summary"], help="which protocol to run, or summary of runs")
    p.add_argument("files", nargs="*", help="summary: the JSON-lines files to summarise")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (0,1,2)")
    p.add_argument("--out", default=None, help="JSON-lines file the runs are appended to")
    p.add_argument("--shared-data", default=None, help="folder of the real recordings (default ../shared/data)")
    p.add_argument("--folds", default=None, help="loo: held-out worm uids, comma-separated (default: every worm)")
    p.add_argument("--models", default=None, help="worms/tectum: model kinds, comma-separated (POCO:mlp, POCO:none set the warm start)")
    p.add_argument("--init", default="labels", choices=["labels", "random"], help="loo: the adapted units' starting embeddings")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU when present)")
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.set_defaults(func=cmd_protocols)

    p = sub.add_parser("evaluate", help="score a checkpoint: per-session scores, mean score, per-step MSE")
    p.add_argument("model", help="a shipped model name, a checkpoint in the working directory, or a path")
    p.add_argument("data", nargs="+", help="recording files, folders, corpora, or 'demo'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split's windows to score (test)")
    p.add_argument("--stride", type=int, default=1, help="stride of evaluation windows")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU when present)")
    p.add_argument("--data-dir", default=None, help="refuse data paths outside this folder")
    p.add_argument("--dataset", default=None, help="dataset name for the given recordings (as in training)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("finetune", help="adapt a checkpoint to new recordings")
    p.add_argument("model", help="a shipped model name, a checkpoint in the working directory, or a path")
    p.add_argument("data", nargs="+", help="the new recordings (files, folders, corpora)")
    p.add_argument("--out", required=True, help="checkpoint path stem of the adapted model")
    p.add_argument(
        "--mode", default="embedding", choices=["embedding", "embedding+mlp", "full"],
        help="what is trained: the new units' embeddings (spec), plus the forecasting head, or everything",
    )  # fmt: skip
    p.add_argument(
        "--init", default="random", choices=["random", "labels"],
        help="new units' embeddings: fresh (spec), or from units of the same label (identified neurons) the model knows",
    )  # fmt: skip
    _add_train_options(p, steps_default=200, eval_default=20)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "forecast", help="forecast whole recordings into a chunked Zarr store, in parallel on a Dask cluster",
        description="Write one model's forecasts at every cursor (cursor × step × unit) and the per-window errors of whole recordings "
                    "into OUT.zarr, computed in blocks of cursors on a Dask cluster (a local one by default). Re-running completes an "
                    "interrupted store. The app's Forecast tab reads such a store in its data directory instead of computing.",
    )  # fmt: skip
    p.add_argument("model", help="checkpoint path or shipped name (e.g. poco_demo)")
    p.add_argument("data", nargs="+", help="recordings or corpora (every session is forecast)")
    p.add_argument("--out", required=True, help="the store to write (OUT.zarr); an existing store of this model is completed")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2; ignored with --scheduler)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786) instead of a local cluster")
    p.add_argument("--device", default=None, help="each worker's device: cpu, cuda, cuda:N (default: POCOVIZ_DEVICE, else a GPU if present)")
    p.add_argument("--blocks-per-task", type=int, default=1, help="blocks of 64 cursors per task (default 1)")
    p.add_argument("--session", action="append", default=None, help="only this session (species/session; repeatable)")
    p.add_argument("--data-dir", default=None, help="recordings must lie inside this folder (relative paths are taken from it)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("bench", help="time the hot paths; prints a JSON report")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--shared-data", default=None, help="folder with the real recordings (default ../shared/data)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument(
        "--only", default=None,
        help="comma-separated sections: recordings, forecast, embeddings, ensembles, seqmem, limits, app (these by default), "
        "scale (whole-brain size: writes 2.1 GB, minutes)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("make-assets", help="write the shipped demo assets (corpus, then pretrained models)")
    p.add_argument("--out", default="assets", help="assets folder to write (assets)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and the models")
    p.add_argument("--corpus-only", action="store_true", help="only the demo corpus (seconds)")
    p.add_argument("--models-only", action="store_true", help="only retrain the models on the existing corpus")
    p.add_argument("--layouts-only", action="store_true", help="only recompute the UMAP layouts of the shipped models")
    p.add_argument(
        "--limits-only", nargs="?", const="", default=None, metavar="SWEEPS",
        help="only rerun the transformer-limits sweeps (all, or a comma-separated subset of N, lr, H, L; ~10 min CPU)",
    )  # fmt: skip
    p.add_argument("--models", default=None, help="comma-separated subset of poco_demo, mlp_demo, nlinear_demo")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU when present)")
    p.set_defaults(func=cmd_make_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

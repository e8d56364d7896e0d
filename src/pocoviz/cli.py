"""The ``pocoviz`` command: serve, import, info, bench, make-assets."""

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
    """Serve the app (``panel serve`` on the packaged app factory)."""
    if args.data_dir and not Path(args.data_dir).is_dir():
        return _err(f"--data-dir {args.data_dir}: not a folder")
    import panel as pn

    from pocoviz.ui import create_app
    from pocoviz.ui.warmup import start_warmup

    start_warmup()  # imports, demo corpus, Datashader kernels: ready before the first browser arrives
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    pn.config.nthreads = args.num_threads
    print(f"pocoviz: serving on http://{args.address}:{args.port}/app (data directory: {data_dir or 'none'})", flush=True)
    pn.serve(
        {"app": lambda: create_app(data_dir)},
        port=args.port,
        address=args.address,
        websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}"],
        show=args.show,
        title="pocoviz",
        liveness=True,
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Convert any supported recording to a pocoviz netCDF file."""
    from pocoviz.recordings import RecordingError, open_recording, save_recording

    src, dest = Path(args.src), Path(args.dest)
    if dest.suffix not in (".nc", ".nc4"):
        return _err(f"{dest}: the destination must end in .nc")
    if dest.exists() and not args.overwrite:
        return _err(f"{dest} exists; pass --overwrite to replace it")
    if not dest.parent.is_dir():
        return _err(f"{dest}: the folder {dest.parent} does not exist")
    if dest.resolve() == src.resolve():
        return _err("the destination is the source file")
    kwargs: dict[str, Any] = {}
    if args.sampling_rate is not None:
        kwargs["sampling_rate_hz"] = args.sampling_rate
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


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise a recording or corpus."""
    from pocoviz.recordings import RecordingError, corpus_sessions, open_corpus, summarize

    try:
        tree = open_corpus(args.path)
    except RecordingError as exc:
        return _err(str(exc))
    sessions = {name: summarize(ds) for name, ds in corpus_sessions(tree).items()}
    if args.json:
        print(json.dumps({"path": str(args.path), "sessions": sessions}, indent=2, default=str))
        return 0
    print(f"{args.path}: {len(sessions)} session(s)")
    for name, s in sessions.items():
        regions = ", ".join(f"{k} ({v})" for k, v in list(s["regions"].items())[:12])
        print(
            f"  {name}: {s['n_unit']} units × {s['n_time']} frames @ {s['sampling_rate_hz']:.3g} Hz "
            f"({s['duration_s']:.0f} s, {s['activity_units']}), {s['n_labelled']} labelled, "
            f"positions: {','.join(s['has_positions']) or 'none'}"
        )
        print(f"    regions: {regions}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pocoviz.bench import run_bench

    report = run_bench(quick=args.quick, shared_data=args.shared_data)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_make_assets(args: argparse.Namespace) -> int:
    """Write the shipped assets (the demo corpus) deterministically."""
    import time

    from pocoviz.recordings import make_demo_corpus, save_corpus

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    t0 = time.perf_counter()
    # one torch thread: with more than two, float reductions split differently and a few quantized
    # values change, so the bytes would depend on the machine's core count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tree = make_demo_corpus(seed=args.seed)
    finally:
        torch.set_num_threads(threads)
    path = save_corpus(tree, out / "demo_corpus.nc", quantize=1e-3)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    if size > 20 * 2**20:
        return _err(f"{path} is {size / 2**20:.1f} MiB, over the 20 MiB budget")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pocoviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the app")
    p.add_argument("--data-dir", default=os.environ.get("POCOVIZ_DATA_DIR"), help="folder of recordings to offer")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--show", action="store_true", help="open a browser")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("import", help="convert a recording to pocoviz netCDF")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--sampling-rate", type=float, default=None, help="frames per second, when the file lacks it")
    p.add_argument("--species", default=None)
    p.add_argument("--session", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("info", help="summarise a recording or corpus")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="time the hot paths; prints a JSON report")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--shared-data", default=None, help="folder with the real recordings (default ../shared/data)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("make-assets", help="write the shipped demo assets")
    p.add_argument("--out", default="assets")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

"""One prepared run on a lent GPU machine: CUDA tests, the forecast benchmark in bf16, and the
GPU share of issue 3's measurements. Writes everything under $OUT; each stage is timed and a
failing stage does not stop the next.

    POCOVIZ_DEVDATA=.devdata/corpus.npz PYTHONPATH=src python benchmarks/gpu_session.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "/tmp/gpu_out"))
OUT.mkdir(parents=True, exist_ok=True)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOG = OUT / "stages.json"
stages: dict = {}


def stage(name: str, cmd: list[str], timeout: float) -> None:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with open(OUT / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    stages[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
    LOG.write_text(json.dumps(stages, indent=1))
    print(name, stages[name], flush=True)


py = sys.executable
DEV = os.environ.get("GPU_SESSION_DEVICE", "cuda")
QUICK = bool(os.environ.get("GPU_SESSION_QUICK"))
only = sys.argv[1].split(",") if len(sys.argv) > 1 else ["tests", "bench", "demo", "cross"]
if "tests" in only:
    stage("tests_cuda", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/forecast/test_cuda.py"], 90)
    # the CPU-written tests with the GPU as the default device (bf16 autocast in training)
    tests = [f"tests/forecast/{t}" for t in ("test_models.py", "test_metrics.py", "test_train.py", "test_mixers.py", "test_checkpoint.py")]
    stage("tests_default_cuda", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests], 100)
if "bench" in only:
    code = (
        "import json,sys; sys.path.insert(0,'benchmarks'); from poco_acceptance import demo_corpus;"
        "from pocoviz.forecast.recipes import DEMO_STRIDES; from pocoviz.forecast.bench import bench_forecast;"
        "from pocoviz.backend import describe; import torch;"
        "gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None;"
        f"r={{'environment': describe(), 'gpu': gpu, 'forecast': bench_forecast({QUICK}, '{DEV}', demo_corpus(DEMO_STRIDES))}};"
        f"open('{OUT}/bench_cuda.json','w').write(json.dumps(r, indent=1)); print(json.dumps(r))"
    )
    stage("bench", [py, "-c", code], 120)
if "demo" in only:
    stage("demo", [py, "benchmarks/poco_acceptance.py", "demo", "--seeds", "0,1,2", "--device", "cuda", "--out", str(OUT / "demo.jsonl")], 240)
if "cross" in only:
    cross = ["cross", "--seeds", "0", "--device", "cuda", "--robust", "--steps", "1000", "--out", str(OUT / "cross.jsonl")]
    stage("cross", [py, "benchmarks/poco_acceptance.py", *cross], 200)

"""Distributed training (torchrun, DistributedDataParallel, gloo on the CPU, 2 processes).

- after k steps the parameters and the optimiser state of a 2-process run equal a 1-process run
  with the same global batch and seed: in-memory sampling (POCO with unit subsets, DLinear with
  per-session layers that some ranks, or all, leave unused in a step) and streamed windows
  (chunked recordings);
- a 2-process run's state resumes in 1 process, and a 1-process run's in 2, each equal to the
  uninterrupted run;
- ``pocoviz train --nproc 2`` writes the checkpoint ``pocoviz train`` writes (same tensors to
  float tolerance, same card but for timings);
- a rank that dies, or hangs, ends the job with a clear error in bounded time.

This file is also the workers' script: ``python -m torch.distributed.run ... tests/test_distributed.py OUTDIR``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

C, P = 24, 8
POCO_TINY = dict(dim=16, hidden=32, self_heads=2, dim_head=8, token_length=8, ffn_dropout=0.0, latent_dropout=0.0)
#: (kind, model settings, TrainConfig settings, streamed)
SCENARIOS = {
    "poco_mem": ("POCO", POCO_TINY, dict(batch_size=6, max_units=5), False),
    "dlinear_mem": ("DLinear", {}, dict(batch_size=4), False),
    "poco_stream": ("POCO", POCO_TINY, dict(batch_size=5, max_units=5), True),
}
STEPS = 6
HALF = 3
ROOT = Path(__file__).resolve().parents[1]


def make_corpus(streamed: bool, sessions=(("a", "s0", 5), ("a", "s1", 7), ("a", "s2", 4), ("b", "s0", 6))):
    """Two datasets: ``a`` with three sessions of 5, 7 and 4 units, ``b`` with one of 6 (800 frames each)."""
    from pocoviz.forecast import ForecastCorpus
    from pocoviz.recordings.schema import make_recording

    recs = []
    for sp, se, u in sessions:
        rng = np.random.default_rng(sum(map(ord, sp + se)) + u)
        t = np.arange(800)[:, None]
        x = np.sin(2 * np.pi * t / rng.uniform(10, 30, u) + rng.uniform(0, 6.3, u)) + 0.2 * rng.standard_normal((800, u))
        ds = make_recording(x.astype(np.float32), sampling_rate_hz=5.0, species=sp, session=se)
        recs.append(ds.chunk({"time": 100}) if streamed else ds)
    return ForecastCorpus(recs, context=C, horizon=P, strides={"train": 1, "val": 4, "test": 4})


def run(name: str, state: Path, steps: int = STEPS):
    """Train scenario ``name`` for ``steps`` steps (validation every HALF), writing ``state``."""
    from pocoviz.forecast import TrainConfig, make_model, train

    kind, model_kw, cfg_kw, streamed = SCENARIOS[name]
    corpus = make_corpus(streamed)
    assert corpus.lazy == streamed
    model = make_model(kind, corpus, seed=0, **model_kw)
    result = train(model, corpus, TrainConfig(steps=steps, eval_every=HALF, lr=3e-3, seed=0, **cfg_kw), device="cpu", state_path=state)
    return model, result


#: new sessions for fine-tuning: one more of dataset a, one of a new dataset c
NEW_SESSIONS = (("a", "s5", 6), ("c", "s0", 5))


def run_finetune(pretrained: Path, out: Path) -> None:
    """Fine-tune the pretrained POCO's new embeddings (frozen rows of shared tables) for STEPS steps;
    save the adapted weights and the learning curve."""
    from pocoviz.forecast import TrainConfig, finetune, load_model

    model = load_model(pretrained)
    cfg = TrainConfig(steps=STEPS, eval_every=HALF, lr=3e-3, seed=0, batch_size=4)
    adapted, res = finetune(model, make_corpus(False, NEW_SESSIONS), "embedding", cfg, device="cpu")
    torch.save({"model": adapted.state_dict(), "history": res.history, "best_step": res.best_step}, out)


# ----------------------------------------------------------------------------------------------
# the workers (run by torchrun)
# ----------------------------------------------------------------------------------------------


def worker(out: Path) -> None:
    """Every scenario in 2 processes; then the 1-process half-way states resumed to STEPS."""
    from pocoviz.forecast import distributed

    torch.set_num_threads(1)
    with distributed.session("cpu", timeout=60):
        assert distributed.world() == 2
        for name in SCENARIOS:
            _, res = run(name, out / f"{name}.2.pt")
            if distributed.is_main():
                (out / f"{name}.2.json").write_text(json.dumps(res.to_json()))
            run(name, out / f"{name}.2half.pt", steps=HALF)  # resumed by 1 process in the test
            run(name, out / f"{name}.1half.pt")  # a 1-process half-way state, resumed here
        run_finetune(out / "pretrained", out / "finetune.2.pt")


def launch_workers(out: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(Path(__file__).resolve()), str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
    raise SystemExit(0)


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------

import pytest  # noqa: E402

torch.set_num_threads(1)
#: AdamW divides each gradient coordinate by its running RMS, so a float32 rounding difference in a
#: near-zero coordinate (the ranks sum their shares in another order than one process sums the
#: batch) moves a weight by up to ~1e-5 over the run; a wrong reduction moves them by ~lr = 3e-3
TOL = dict(rtol=1e-4, atol=1e-5)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    """Model and optimiser states equal to float tolerance; generator, step and history alike."""
    assert a["fingerprint"] == b["fingerprint"] and a["step"] == b["step"] and a["windows"] == b["windows"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], **TOL, msg=lambda m, k=k: f"parameter {k}: {m}")
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()  # the same parameters were stepped (unused ones are skipped alike)
    for i in oa:
        for k in oa[i]:
            torch.testing.assert_close(oa[i][k], ob[i][k], **TOL, msg=lambda m, i=i, k=k: f"optimiser state {i}.{k}: {m}")
    assert torch.equal(a["generator"], b["generator"])
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]]
    for ha, hb in zip(a["history"], b["history"]):
        for k in ("train_loss", "val_mse", "val_score"):
            assert (math.isnan(ha[k]) and math.isnan(hb[k])) or ha[k] == pytest.approx(hb[k], rel=1e-5), (ha, hb)
    assert a["best_step"] == b["best_step"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """1-process references (and half-way states), then the 2-process workers."""
    from pocoviz.forecast import save_model

    out = tmp_path_factory.mktemp("ddp")
    model, _ = run("poco_mem", out / "pretrain.pt", steps=HALF)
    save_model(model, out / "pretrained")
    run_finetune(out / "pretrained", out / "finetune.1.pt")
    for name in SCENARIOS:
        run(name, out / f"{name}.1.pt")
        run(name, out / f"{name}.1half.pt", steps=HALF)
    t0 = time.perf_counter()
    proc = launch_workers(out)
    print(f"2-process workers: {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_equal_one(runs, name):
    one, two = load(runs / f"{name}.1.pt"), load(runs / f"{name}.2.pt")
    assert one["step"] == STEPS
    assert_same_state(one, two)
    # the parameters moved (the comparison is not between two initial states)
    from pocoviz.forecast import make_model

    kind, model_kw, _, streamed = SCENARIOS[name]
    init = make_model(kind, make_corpus(streamed), seed=0, **model_kw).state_dict()
    moved = [k for k in init if not torch.equal(init[k], one["model"][k])]
    assert len(moved) >= len(init) // 2, moved
    res = json.loads((runs / f"{name}.2.json").read_text())
    assert res["steps_done"] == STEPS and res["windows"] == one["windows"]


def test_finetuning_in_two_processes_equals_one(runs):
    """Fine-tuning trains some rows of shared embedding tables (the others are restored after each
    step): the adapted model and the learning curve of 2 processes are those of 1."""
    one, two = load(runs / "finetune.1.pt"), load(runs / "finetune.2.pt")
    assert one["model"].keys() == two["model"].keys()
    for k in one["model"]:
        torch.testing.assert_close(one["model"][k], two["model"][k], **TOL, msg=lambda m, k=k: f"parameter {k}: {m}")
    assert [h["step"] for h in one["history"]] == [0, HALF, STEPS] and one["best_step"] == two["best_step"]
    for ha, hb in zip(one["history"], two["history"]):
        assert ha["val_mse"] == pytest.approx(hb["val_mse"], rel=1e-5)
    from pocoviz.forecast import TrainConfig, finetune, load_model

    pre = load_model(runs / "pretrained").state_dict()["unit_emb.weight"]
    start, _ = finetune(load_model(runs / "pretrained"), make_corpus(False, NEW_SESSIONS), "embedding", TrainConfig(steps=0), device="cpu")
    emb, n_old = two["model"]["unit_emb.weight"], pre.shape[0]
    assert torch.equal(emb[:n_old], pre)  # the pretrained sessions' rows are kept, on every rank
    assert float((emb[n_old:] - start.state_dict()["unit_emb.weight"][n_old:]).abs().min()) > 0  # every new row trained


def test_the_weighted_shares_sum_to_the_one_process_gradient():
    """What the ranks reduce: their shares' losses weighted by real elements sum to the batch loss and
    gradient; an unweighted mean of the shares (DDP's plain average) would not."""
    from pocoviz.forecast import make_model
    from pocoviz.forecast.distributed import shard
    from pocoviz.forecast.train import _batch_rows, _StepLoss

    corpus = make_corpus(False)
    model = make_model("POCO", corpus, seed=0, **POCO_TINY)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # a batch whose halves hold different numbers of real units
        batches = [corpus.sample(d, 6, gen) for d in corpus.datasets]
        if int(batches[0].unit_mask[:3].sum()) != int(batches[0].unit_mask[3:].sum()):
            break
    assert int(batches[0].unit_mask[:3].sum()) != int(batches[0].unit_mask[3:].sum())
    n = [int(b.unit_mask.sum()) for b in batches]

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    step = _StepLoss(model)
    full = grads(step(batches, [1.0] * len(batches)))
    shares = [[_batch_rows(b, shard(6, r, 2)) for b in batches] for r in range(2)]
    weighted = sum(grads(step(s, [int(b.unit_mask.sum()) / k for b, k in zip(s, n)])) for s in shares)
    plain = sum(grads(step(s, [1.0] * len(s))) for s in shares) / 2
    torch.testing.assert_close(weighted, full, rtol=1e-5, atol=1e-7)
    assert float((plain - full).abs().max()) > 100 * 1e-5


def test_some_parameters_were_unused_in_a_step(runs):
    """DLinear's per-session layers: with 4 windows of 3 sessions, a session is sometimes absent from
    a whole step, and its layers keep no gradient (AdamW skips them), in 1 process as in 2."""
    from pocoviz.forecast import TrainConfig, make_model, train

    corpus = make_corpus(False)
    model = make_model("DLinear", corpus, seed=0)
    seen = []
    orig = model.forward

    def spy(context, session, unit_mask=None, unit_index=None):
        seen.append(sorted(set(session.tolist())))
        return orig(context, session, unit_mask, unit_index)

    model.forward = spy
    train(model, corpus, TrainConfig(steps=STEPS, eval_every=10**6, lr=3e-3, seed=0, batch_size=4), device="cpu")
    # training forwards come in pairs per step (datasets a, b); validation scores every session
    a_steps = [s for s in seen if s and max(s) <= 2 and len(s) < 3]
    assert a_steps, seen


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_resume_at_another_world_size(runs, name, tmp_path):
    ref = load(runs / f"{name}.1.pt")
    # written by 2 processes at step HALF, resumed by 1
    state = tmp_path / "from2.pt"
    state.write_bytes((runs / f"{name}.2half.pt").read_bytes())
    assert load(state)["step"] == HALF
    run(name, state)
    assert_same_state(ref, load(state))
    # written by 1 process at step HALF, resumed by 2 (in the workers)
    assert_same_state(ref, load(runs / f"{name}.1half.pt"))


# -- the command line: checkpoints, failures -----------------------------------------------------


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    from pocoviz.recordings import save_recording
    from pocoviz.recordings.schema import make_recording

    d = tmp_path_factory.mktemp("recs")
    paths = []
    for i, (sp, u) in enumerate([("a", 5), ("b", 7)]):
        rng = np.random.default_rng(10 + i)
        t = np.arange(1000)[:, None]
        x = np.sin(2 * np.pi * t / rng.uniform(10, 30, u) + rng.uniform(0, 6.3, u)) + 0.2 * rng.standard_normal((1000, u))
        path = d / f"{sp}.nc"
        save_recording(make_recording(x.astype(np.float32), sampling_rate_hz=5.0, species=sp, session=f"{sp}0"), path)
        paths.append(str(path))
    return paths


def train_argv(recordings, out: Path, steps: int = 4) -> list[str]:
    return ["train", "MLP", *recordings, "--out", str(out), "--recipe", "default", "--steps", str(steps), "--batch-size", "4", "--eval-every", "2",
            "--val-stride", "16", "--config", '{"hidden": 16}', "--quiet", "--device", "cpu", "--lr", "3e-3"]  # fmt: skip


def pocoviz(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pocoviz", *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})  # fmt: skip


TIMING = {"seconds", "created", "weights_sha256"}


def assert_same_card(a, b, where="card") -> None:
    """Equal JSON but for timings (and the weights' hash: the weights agree to float tolerance)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b) if isinstance(b, dict) else b}"
        for k in a:
            if k not in TIMING:
                assert_same_card(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_card(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, str):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-4, abs=1e-6), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_checkpoints_from_one_and_two_processes_load_identically(recordings, tmp_path):
    from pocoviz.cli import main
    from pocoviz.forecast import load_model

    assert main(train_argv(recordings, tmp_path / "one")) == 0
    t0 = time.perf_counter()
    proc = pocoviz([*train_argv(recordings, tmp_path / "two"), "--nproc", "2"])
    print(f"pocoviz train --nproc 2: {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "saved" in proc.stdout and proc.stdout.count("saved") == 1  # rank 0 alone reports and writes
    one, two = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    assert type(one) is type(two) and one.sessions == two.sessions
    sa, sb = one.state_dict(), two.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], **TOL)
    assert_same_card(one.card, two.card)
    assert two.card["training"]["steps_done"] == 4 and [h["step"] for h in two.card["training"]["history"]] == [0, 2, 4]


#: a hung job would run until the test's guard; a working one ends this soon after the fault (the
#: time from the start depends on how long imports take on a busy machine, so it is not asserted)
AFTER_FAULT_S = 30
GUARD_S = 300
#: the hung job's collective timeout: above rank 0's validation and the ranks' start-up skew on a busy machine
HANG_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def faults(recordings, tmp_path_factory):
    """Two jobs started together (most of their time is starting up): rank 1 dies at step 2 in one,
    hangs at step 2 in the other (collective timeout HANG_TIMEOUT_S); each: (exit code, stderr, seconds from
    the fault to the job's end)."""
    d = tmp_path_factory.mktemp("faults")
    jobs = {
        "dies": ([*train_argv(recordings, d / "dead", steps=10**6), "--nproc", "2"], {}),
        "hangs": ([*train_argv(recordings, d / "hung", steps=10**6), "--nproc", "2", "--dist-timeout", str(HANG_TIMEOUT_S)], {"POCOVIZ_FAIL_MODE": "hang"}),
    }
    procs = {}
    t0 = time.perf_counter()
    for name, (argv, env) in jobs.items():
        env = {**os.environ, "POCOVIZ_FAIL_RANK": "1", "POCOVIZ_FAIL_STEP": "2", **env}
        procs[name] = subprocess.Popen([sys.executable, "-m", "pocoviz", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    out = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(1.0, GUARD_S - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the job whose rank 1 {name} did not end within {GUARD_S} s (a hang): {err[-3000:]}")
        end = time.time()
        fault = re.search(r"fault injected at step 2 .*\(unix time ([0-9.]+)\)", err)
        assert fault, err[-3000:]
        out[name] = (proc.returncode, err, end - float(fault.group(1)))
        print(f"rank 1 {name}: exit code {proc.returncode}, {out[name][2]:.1f} s after the fault, {time.perf_counter() - t0:.1f} s in all")
    assert not (d / "dead.safetensors").exists() and not (d / "hung.safetensors").exists()
    return out


def test_a_rank_that_dies_ends_the_job_with_a_clear_error(faults):
    rc, err, after = faults["dies"]
    assert rc != 0 and after < AFTER_FAULT_S
    assert "rank 1: fault injected at step 2 (POCOVIZ_FAIL_RANK/POCOVIZ_FAIL_STEP); exiting with code 3" in err
    # torchrun's report names the failed rank and its exit code; the launcher says what failed
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", err) and re.search(r"exitcode\s*:\s*3", err), err[-3000:]
    assert "distributed run of 2 processes failed" in err


def test_a_rank_that_hangs_ends_the_job_after_the_timeout(faults):
    rc, err, after = faults["hangs"]
    assert rc != 0 and HANG_TIMEOUT_S - 1 <= after < HANG_TIMEOUT_S + AFTER_FAULT_S  # rank 0 may be waiting a moment before the fault
    assert "rank 1: fault injected at step 2 (POCOVIZ_FAIL_RANK/POCOVIZ_FAIL_STEP); hanging" in err
    # rank 0 gives up in its next collective after the timeout
    assert re.search(r"timed out|timeout", err, re.IGNORECASE), err[-3000:]
    assert "distributed run of 2 processes failed" in err


# -- pieces ----------------------------------------------------------------------------------------


def test_shards_are_disjoint_balanced_and_cover_the_batch():
    from pocoviz.forecast.distributed import shard

    for n in (1, 5, 6, 64):
        for w in range(1, min(n, 5) + 1):
            parts = [range(n)[shard(n, r, w)] for r in range(w)]
            assert [i for p in parts for i in p] == list(range(n))  # contiguous, in order, each row once
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        shard(4, 2, 2)


def test_the_launcher_forwards_the_command_line(monkeypatch):
    """``--nproc`` re-runs the same command (options as parsed, without --nproc) under torchrun."""
    from pocoviz import cli
    from pocoviz.forecast import distributed

    argv = ["train", "POCO", "a.nc", "my data/b.nc", "--out", "x y", "--steps", "7", "--lr", "0.0003", "--config", '{"dim": 16}', "--quiet",
            "--max-units", "-1", "--nproc", "3", "--dist-timeout", "9.5"]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    fwd = cli._forward_argv(args)
    assert fwd[0] == "train" and "--nproc" not in " ".join(fwd)
    again = cli.build_parser().parse_args(fwd)
    skip = {"nproc", "parser_", "func"}
    assert {k: v for k, v in vars(again).items() if k not in skip} == {k: v for k, v in vars(args).items() if k not in skip}
    cmd = distributed.launch_command(fwd, 3)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"] and cmd[5:8] == ["-m", "pocoviz", "train"]

    seen = {}

    def fake_launch(a, n, timeout=None):
        seen.update(argv=a, n=n, timeout=timeout)
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    assert cli.main(argv) == 0 and seen == {"argv": fwd, "n": 3, "timeout": 9.5}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(argv) == 2  # under torchrun --nproc is refused


def test_bad_settings_are_named(monkeypatch):
    from pocoviz.forecast import distributed

    monkeypatch.setenv(distributed.ENV_TIMEOUT, "soon")
    with pytest.raises(distributed.DistributedError, match="POCOVIZ_DIST_TIMEOUT"):
        distributed.timeout_seconds()
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "-1")
    with pytest.raises(distributed.DistributedError, match="positive.*POCOVIZ_DIST_TIMEOUT"):
        distributed.timeout_seconds()
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "42")
    assert distributed.timeout_seconds() == 42.0 and distributed.timeout_seconds(7) == 7.0
    monkeypatch.delenv(distributed.ENV_TIMEOUT)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S
    # torchrun's variables, one missing
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(distributed.DistributedError, match="MASTER_PORT"):
        distributed.init("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(distributed.DistributedError, match="WORLD_SIZE"):
        distributed.init("cpu")
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()

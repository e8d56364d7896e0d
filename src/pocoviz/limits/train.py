"""Tasks, training runs and the statistics of spec ``transformer_limits.md`` §4.3.

Tasks (no download):
- ``"teacher"``: S tokens x_s ~ N(0, I_D); the target is a fixed random single-head softmax-attention
  teacher, ``y = mean_s Σ_t softmax_t(c (W_qᵀx_s)·(W_kᵀx_t)/√D) uᵀx_t/√D`` (W ~ N(0, 1/D),
  c = 2), standardised; MSE loss.
- ``"digits"``: scikit-learn's bundled 8×8 digits cut into 2×2 patches (16 tokens of dimension 4),
  standardised pixels, 10-way cross-entropy (a tiny ViT).

Statistics per run: the loss curve; the variance of the attention logits across heads (averaged
over layers, probe samples and token pairs) at init and after training; the relative movement
``‖W_K(T) − W_K(0)‖_F / ‖W_K(0)‖_F`` per layer, after training and after the first step; the
outputs on a fixed probe set; the logits of all heads at one (sample, s, s') for histograms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pocoviz.backend import get_device

from .model import CentredModel, LimitsConfig, LimitsTransformer, param_groups

TEACHER_C = 2.0
TEACHER_SEED = 1234


def teacher_task(n: int, S: int = 16, D: int = 16, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of the teacher task: X (n, S, D) float32 and standardised targets (n, 1)."""
    tg = torch.Generator().manual_seed(TEACHER_SEED)  # the teacher is the same for every data seed
    Wq, Wk = torch.randn(D, D, generator=tg) / math.sqrt(D), torch.randn(D, D, generator=tg) / math.sqrt(D)
    u = torch.randn(D, generator=tg)
    g = torch.Generator().manual_seed(int(seed))
    X = torch.randn(n, S, D, generator=g)
    logits = TEACHER_C * torch.einsum("bsd,btd->bst", X @ Wq, X @ Wk) / math.sqrt(D)
    y = (logits.softmax(-1) @ (X @ u / math.sqrt(D))[..., None]).mean(1)  # (n, 1)
    # standardise with the statistics of a large fixed draw, so every data seed shares one scale
    ref = torch.randn(4096, S, D, generator=torch.Generator().manual_seed(TEACHER_SEED + 1))
    ref_logits = TEACHER_C * torch.einsum("bsd,btd->bst", ref @ Wq, ref @ Wk) / math.sqrt(D)
    y_ref = (ref_logits.softmax(-1) @ (ref @ u / math.sqrt(D))[..., None]).mean(1)
    return X, (y - y_ref.mean()) / y_ref.std()


def digits_task(patch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as (1797, (8/patch)², patch²) standardised tokens and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    img = torch.as_tensor(x, dtype=torch.float32).view(-1, 8, 8)
    p = int(patch)
    tokens = img.unfold(1, p, p).unfold(2, p, p).reshape(len(img), (8 // p) ** 2, p * p)
    tokens = (tokens - tokens.mean()) / tokens.std()
    return tokens, torch.as_tensor(y, dtype=torch.int64)


def task_data(task: str, cfg: LimitsConfig, n_train: int = 2048, n_probe: int = 64) -> tuple[torch.Tensor, ...]:
    """``(X_train, y_train, X_probe, y_probe)`` for ``task`` with the sizes of ``cfg``."""
    if task == "teacher":
        X, y = teacher_task(n_train + n_probe, cfg.S, cfg.D_in, seed=0)
        return X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    if task == "digits":
        X, y = digits_task()
        if cfg.S != X.shape[1] or cfg.D_in != X.shape[2] or cfg.n_out != 10:
            raise ValueError(f"the digits task needs S={X.shape[1]}, D_in={X.shape[2]}, n_out=10")
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
        X, y = X[perm], y[perm]
        return X[n_probe:], y[n_probe:], X[:n_probe], y[:n_probe]
    raise ValueError(f"task must be 'teacher' or 'digits', got {task!r}")


def _loss(task: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(f, y) if task == "digits" else ((f - y) ** 2).mean()


def head_variance(A: torch.Tensor) -> float:
    """Variance of the attention logits across heads, averaged over layers, samples and token pairs
    (``A``: (L, B, H, S, S))."""
    return float(A.var(dim=2, unbiased=False).mean())


def init_statistics(device: Any = None, *, n_heads: int = 256, n_samples: int = 24) -> dict[str, dict[tuple[float, int], np.ndarray]]:
    """Statistics of freshly initialised models (forward passes only), computed on ``device``
    (default: the backend's, :func:`pocoviz.backend.get_device`) and returned as NumPy arrays.

    Returns ``{"hist": {(alpha_A, N): (4 * n_heads,) logits A_h at one token pair (s, s') = (0, 1)
    of 4 teacher-task samples, N in (1, 16), one block}, "kernels": {(alpha_L, L): (n_samples,
    n_samples) cosine kernel of the final features, L in (2, 32), N = 8, H = 4}}``.

    Examples
    --------
    >>> stats = init_statistics("cpu", n_heads=8, n_samples=5)
    >>> stats["hist"][(1.0, 16)].shape, stats["kernels"][(0.5, 32)].shape
    ((32,), (5, 5))
    """
    dev = get_device(device)
    x = teacher_task(int(n_samples))[0].to(dev)
    hist, kernels = {}, {}
    with torch.no_grad():
        for a in (1.0, 0.5):
            for N in (1, 16):
                model = LimitsTransformer(LimitsConfig(N=N, H=int(n_heads), L=1, alpha_A=a), seed=0).to(dev)
                _, A = model(x[:4], return_attention=True)
                hist[(a, N)] = A[0, :, :, 0, 1].flatten().cpu().numpy()  # every head, 4 samples, one (s, s') pair
        for a in (1.0, 0.5):
            for L in (2, 32):
                feats = LimitsTransformer(LimitsConfig(N=8, H=4, L=L, alpha_L=a), seed=0).to(dev).features(x)
                f = feats / feats.norm(dim=1, keepdim=True)
                kernels[(a, L)] = (f @ f.T).cpu().numpy()
    return {"hist": hist, "kernels": kernels}


@dataclass
class RunResult:
    config: dict[str, Any]
    task: str
    seed: int
    steps: np.ndarray  # recorded steps
    loss: np.ndarray  # mean training loss over the steps since the last record
    probe_loss: float
    head_var_init: float
    head_var_final: float
    dWK: np.ndarray  # (L,) relative movement of W_K per layer
    dWK_first: np.ndarray  # (L,) the same after the first step (the per-step scaling, before any dynamics)
    dA: float  # mean |A(T) − A(0)| on the probe set
    f_probe: np.ndarray  # (n_probe, n_out) final outputs
    A_heads_init: np.ndarray  # (H,) logits at (layer 0, probe 0, s 0, s' 1)
    A_heads_final: np.ndarray
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def train_run(
    cfg: LimitsConfig,
    *,
    task: str = "teacher",
    steps: int = 300,
    batch: int = 32,
    seed: int = 0,
    data_seed: int = 0,
    record_every: int = 5,
    device: Any = None,
    progress: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult | None:
    """Train one model with SGD (per-tensor learning rates) for ``steps`` steps of ``batch``
    samples; ``seed`` fixes the initialisation and ``data_seed`` the batch order (the data set is
    fixed), so runs that differ only in ``seed`` differ only in their initial weights.
    ``progress(step, loss)`` is called at every record; a stopped run returns ``None``.
    ``device``: default the backend's (:func:`pocoviz.backend.get_device`); the shipped sweeps
    pass ``"cpu"`` (bit-reproducible there). The initial weights and the batch order come from CPU
    generators, the same on every device; the loss reaches the host once per record."""
    t0 = time.perf_counter()
    dev = get_device(device)
    Xtr, ytr, Xp, yp = (t.to(dev) for t in task_data(task, cfg))
    model = CentredModel(cfg, seed).to(dev)
    opt = torch.optim.SGD(param_groups(model), lr=0.0)
    K0 = model.net.K.detach().clone()
    with torch.no_grad():
        _, A0 = model(Xp, return_attention=True)
    g = torch.Generator(device="cpu").manual_seed(10_000 + int(data_seed))
    rec_steps, rec_loss, count = [], [], 0
    acc_t = torch.zeros((), dtype=torch.float64, device=dev)  # float64 sum of float32 losses, as Python's
    for step in range(1, int(steps) + 1):
        idx = torch.randint(0, len(Xtr), (int(batch),), generator=g).to(dev)
        loss = _loss(task, model(Xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 1:
            with torch.no_grad():
                dWK_first = ((model.net.K - K0).flatten(1).norm(dim=1) / K0.flatten(1).norm(dim=1)).cpu().numpy()
        acc_t += loss.detach()
        count += 1
        if step % record_every == 0 or step == steps:
            acc = float(acc_t)
            rec_steps.append(step)
            rec_loss.append(acc / count)
            if not math.isfinite(acc):
                break  # diverged: the curve ends here
            acc_t.zero_()
            count = 0
            if progress is not None:
                progress(step, rec_loss[-1])
            if should_stop is not None and should_stop():
                return None
    with torch.no_grad():
        f, A1 = model(Xp, return_attention=True)
        probe_loss = float(_loss(task, f, yp))
        dWK = ((model.net.K - K0).flatten(1).norm(dim=1) / K0.flatten(1).norm(dim=1)).cpu().numpy()
    return RunResult(
        config=cfg.to_dict(), task=task, seed=int(seed), steps=np.array(rec_steps), loss=np.array(rec_loss), probe_loss=probe_loss,
        head_var_init=head_variance(A0), head_var_final=head_variance(A1), dWK=dWK, dWK_first=dWK_first, dA=float((A1 - A0).abs().mean()),
        f_probe=f.cpu().numpy(), A_heads_init=A0[0, 0, :, 0, 1].cpu().numpy(), A_heads_final=A1[0, 0, :, 0, 1].cpu().numpy(),
        seconds=time.perf_counter() - t0,
    )  # fmt: skip

"""Pattern sets for sequence memories: random ±1 (optionally biased), and scikit-learn's bundled
8×8 digits binarised (no download). Patterns are rows of a (P, N) float64 tensor of ±1."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pocoviz.backend import get_device


def random_patterns(N: int, P: int, *, bias: float = 0.0, seed: int = 0, device: Any = None, batch: int | None = None) -> torch.Tensor:
    """i.i.d. patterns with P(ξ = +1) = (1 + bias)/2 (bias 0: Rademacher; spec §3 ε), shape (P, N),
    or (batch, P, N) when ``batch`` is given."""
    if not (0.0 <= bias < 1.0):
        raise ValueError(f"bias must be in [0, 1), got {bias}")
    if N < 2 or P < 1:
        raise ValueError(f"need N >= 2 neurons and P >= 1 patterns, got N={N}, P={P}")
    dev = get_device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    shape = (P, N) if batch is None else (batch, P, N)
    u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64)
    return torch.where(u < (1.0 + bias) / 2.0, 1.0, -1.0).to(torch.float64)


def digit_patterns(P: int, *, threshold: int = 8, device: Any = None) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``P`` of scikit-learn's 8×8 digits ordered 0, 1, …, 9, 0, 1, … with no image used
    twice (duplicates after binarising at ``pixel >= threshold`` are skipped), as ±1 rows (P, 64),
    and their digit labels."""
    from sklearn.datasets import load_digits  # bundled in the wheel: no download

    x, y = load_digits(return_X_y=True)
    binary = np.where(x >= threshold, 1.0, -1.0)
    _, first = np.unique(binary, axis=0, return_index=True)
    keep = np.sort(first)  # unique images, in file order
    by_digit = {d: [i for i in keep if y[i] == d] for d in range(10)}
    order, used = [], {d: 0 for d in range(10)}
    while len(order) < P:
        d = len(order) % 10
        if used[d] >= len(by_digit[d]):
            raise ValueError(f"only {sum(len(v) for v in by_digit.values())} distinct binarised digits; asked for P={P}")
        order.append(by_digit[d][used[d]])
        used[d] += 1
    idx = np.array(order, dtype=np.int64)
    return torch.as_tensor(binary[idx], dtype=torch.float64, device=get_device(device)), y[idx]


def image_shape(N: int) -> tuple[int, int]:
    """Rows × columns to draw an N-neuron state: a square when N is one, else the most square
    factorisation."""
    r = int(np.sqrt(N))
    while N % r:
        r -= 1
    return r, N // r

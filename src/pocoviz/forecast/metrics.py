"""Prediction score and error breakdowns (POCO spec §3).

``score_s = 1 - MSE_s / MSE_copy_s`` per session, where MSE runs over every window of the split,
every horizon step and every unit, and the copy-last forecast repeats the last context frame;
the reported score is the unweighted mean over sessions. 0 is as good as copying the last frame,
1 is perfect. Per-step MSE, per-unit and per-region scores come from the same sums, and MAE
(the element mean of ``|ŷ - y|``, ZAPBench's metric per step, spec §4.3) from sums of absolute
error gathered in the same pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backend import autocast_dtype
from ..recordings.preprocess import Split
from .base import Forecaster
from .data import ForecastCorpus


@dataclass
class SessionScore:
    """Error sums of one session over one split. Arrays are float64 sums over windows."""

    name: str
    dataset: str
    n_windows: int
    sse: np.ndarray  # (P, U) squared error summed over windows
    copy_sse: np.ndarray  # (P, U) same for copy-last
    sae: np.ndarray  # (P, U) absolute error summed over windows
    copy_sae: np.ndarray  # (P, U) same for copy-last

    def _mean(self, total: np.ndarray | float, count: int) -> np.ndarray | float:
        # no windows: no estimate (NaN), never a perfect 0
        return total / count if self.n_windows > 0 and count > 0 else total * np.nan

    @property
    def mse(self) -> float:
        return float(self._mean(self.sse.sum(), self.sse.size * self.n_windows))

    @property
    def copy_mse(self) -> float:
        return float(self._mean(self.copy_sse.sum(), self.copy_sse.size * self.n_windows))

    @property
    def score(self) -> float:
        """``1 - MSE / MSE_copy`` (NaN when the copy baseline has no error at all)."""
        c = self.copy_sse.sum()
        return float(1.0 - self.sse.sum() / c) if c > 0 else float("nan")

    @property
    def per_step_mse(self) -> np.ndarray:
        return self._mean(self.sse.sum(1), self.sse.shape[1] * self.n_windows)

    @property
    def per_step_copy_mse(self) -> np.ndarray:
        return self._mean(self.copy_sse.sum(1), self.copy_sse.shape[1] * self.n_windows)

    @property
    def per_unit_mse(self) -> np.ndarray:
        return self._mean(self.sse.sum(0), self.sse.shape[0] * self.n_windows)

    @property
    def mae(self) -> float:
        """Element mean of ``|ŷ - y|`` over windows, steps and units (NaN without windows)."""
        return float(self._mean(self.sae.sum(), self.sae.size * self.n_windows))

    @property
    def copy_mae(self) -> float:
        return float(self._mean(self.copy_sae.sum(), self.copy_sae.size * self.n_windows))

    @property
    def per_step_mae(self) -> np.ndarray:
        """MAE per horizon step 1..P, shape (P,)."""
        return self._mean(self.sae.sum(1), self.sae.shape[1] * self.n_windows)

    @property
    def per_step_copy_mae(self) -> np.ndarray:
        return self._mean(self.copy_sae.sum(1), self.copy_sae.shape[1] * self.n_windows)

    @property
    def per_unit_mae(self) -> np.ndarray:
        """MAE per unit, shape (U,)."""
        return self._mean(self.sae.sum(0), self.sae.shape[0] * self.n_windows)

    @property
    def per_unit_score(self) -> np.ndarray:
        c = self.copy_sse.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(c > 0, 1.0 - self.sse.sum(0) / c, np.nan)

    def region_scores(self, regions: np.ndarray) -> dict[str, float]:
        """Score per region over the units labelled with it (unlabelled '' units skipped)."""
        out = {}
        regions = np.asarray(regions).astype(str)
        for r in sorted(set(regions) - {""}):
            m = regions == r
            c = self.copy_sse[:, m].sum()
            out[r] = float(1.0 - self.sse[:, m].sum() / c) if c > 0 else float("nan")
        return out


@dataclass
class EvalReport:
    """Scores of one model on one split of a corpus."""

    model: str
    split: str
    sessions: list[SessionScore]
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Unweighted mean of the per-session scores (spec §3)."""
        return float(np.nanmean([s.score for s in self.sessions])) if self.sessions else float("nan")

    @property
    def mse(self) -> float:
        """Element mean over all sessions (weighted by the number of predictions)."""
        n = sum(s.sse.size * s.n_windows for s in self.sessions)
        return float(sum(s.sse.sum() for s in self.sessions) / max(n, 1))

    @property
    def mae(self) -> float:
        """Element mean of ``|ŷ - y|`` over all sessions (weighted by the number of predictions;
        NaN without any)."""
        n = sum(s.sae.size * s.n_windows for s in self.sessions)
        return float(sum(s.sae.sum() for s in self.sessions) / n) if n > 0 else float("nan")

    @property
    def copy_mae(self) -> float:
        """The same for copy-last."""
        n = sum(s.copy_sae.size * s.n_windows for s in self.sessions)
        return float(sum(s.copy_sae.sum() for s in self.sessions) / n) if n > 0 else float("nan")

    def dataset_scores(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for s in self.sessions:
            out.setdefault(s.dataset, []).append(s.score)
        return {d: float(np.nanmean(v)) for d, v in out.items()}

    def dataset_mse(self) -> dict[str, float]:
        out: dict[str, list[SessionScore]] = {}
        for s in self.sessions:
            out.setdefault(s.dataset, []).append(s)
        res = {}
        for d, v in out.items():
            n = sum(x.sse.size * x.n_windows for x in v)
            res[d] = float(sum(x.sse.sum() for x in v) / n) if n > 0 else float("nan")  # no windows: undefined
        return res

    def dataset_mae(self) -> dict[str, float]:
        """MAE per dataset, weighted by the number of predictions (NaN for a dataset without windows)."""
        out: dict[str, list[SessionScore]] = {}
        for s in self.sessions:
            out.setdefault(s.dataset, []).append(s)
        res = {}
        for d, v in out.items():
            n = sum(x.sae.size * x.n_windows for x in v)
            res[d] = float(sum(x.sae.sum() for x in v) / n) if n > 0 else float("nan")
        return res

    @property
    def per_step_mse(self) -> np.ndarray:
        """MSE per horizon step 1..P over all sessions (weighted by predictions)."""
        num = sum(s.sse.sum(1) for s in self.sessions)
        den = sum(s.sse.shape[1] * s.n_windows for s in self.sessions)
        return np.asarray(num) / max(den, 1)

    @property
    def per_step_copy_mse(self) -> np.ndarray:
        num = sum(s.copy_sse.sum(1) for s in self.sessions)
        den = sum(s.copy_sse.shape[1] * s.n_windows for s in self.sessions)
        return np.asarray(num) / max(den, 1)

    def _per_step(self, attr: str) -> np.ndarray:
        den = sum(getattr(s, attr).shape[1] * s.n_windows for s in self.sessions)
        if den == 0:  # no predictions: no estimate
            p = getattr(self.sessions[0], attr).shape[0] if self.sessions else 0
            return np.full(p, np.nan)
        return np.asarray(sum(getattr(s, attr).sum(1) for s in self.sessions)) / den

    @property
    def per_step_mae(self) -> np.ndarray:
        """MAE per horizon step 1..P over all sessions (weighted by predictions), shape (P,)."""
        return self._per_step("sae")

    @property
    def per_step_copy_mae(self) -> np.ndarray:
        return self._per_step("copy_sae")

    def session(self, name: str) -> SessionScore:
        for s in self.sessions:
            if s.name == name:
                return s
        raise KeyError(name)

    def region_scores(self) -> dict[str, dict[str, float]]:
        return {s.name: s.region_scores(self.regions[s.name]) for s in self.sessions if s.name in self.regions}

    def to_json(self, *, per_unit: bool = False) -> dict[str, Any]:
        """Plain JSON: mean score, per-dataset and per-session scores, MSE and MAE, each also per step."""
        sessions = []
        for s in self.sessions:
            d: dict[str, Any] = {
                "name": s.name, "dataset": s.dataset, "windows": s.n_windows, "units": int(s.sse.shape[1]),
                "score": s.score, "mse": s.mse, "copy_mse": s.copy_mse, "per_step_mse": s.per_step_mse.tolist(),
                "mae": s.mae, "copy_mae": s.copy_mae, "per_step_mae": s.per_step_mae.tolist(),
                "per_step_copy_mae": s.per_step_copy_mae.tolist(),
            }  # fmt: skip
            if s.name in self.regions:
                d["region_scores"] = s.region_scores(self.regions[s.name])
            if per_unit:
                d["per_unit_score"] = [None if np.isnan(v) else float(v) for v in s.per_unit_score]
            sessions.append(d)
        return {
            "model": self.model,
            "split": self.split,
            "score": self.score,
            "mse": self.mse,
            "dataset_scores": self.dataset_scores(),
            "per_step_mse": self.per_step_mse.tolist(),
            "per_step_copy_mse": self.per_step_copy_mse.tolist(),
            "mae": self.mae,
            "copy_mae": self.copy_mae,
            "dataset_mae": self.dataset_mae(),
            "per_step_mae": self.per_step_mae.tolist(),
            "per_step_copy_mae": self.per_step_copy_mae.tolist(),
            "sessions": sessions,
        }


def model_session_map(model: Forecaster, corpus: ForecastCorpus) -> list[int]:
    """The model's session index for each corpus session (by name), checking unit counts.

    A session-free model (no per-session state: copy-last, NLinear, MLP, TexFilter) forecasts
    any recording; sessions it does not know are registered with it on the way.
    """
    known = {s.name: i for i, s in enumerate(model.sessions)}
    if model.session_free:
        new = [s for s in corpus.sessions if s.name not in known]
        if new:
            model.add_sessions(new)
            known = {s.name: i for i, s in enumerate(model.sessions)}
    out = []
    for s in corpus.sessions:
        if s.name not in known:
            raise KeyError(
                f"session {s.name!r} is not known to this {model.kind} model; fine-tune it to the recording first "
                f"(known: {', '.join(list(known)[:8])}{' ...' if len(known) > 8 else ''})"
            )
        i = known[s.name]
        if model.sessions[i].n_units != s.n_units:
            raise ValueError(f"session {s.name!r} has {s.n_units} units but the model was trained on {model.sessions[i].n_units}")
        out.append(i)
    return out


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: Forecaster,
    corpus: ForecastCorpus,
    split: Split = "test",
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    sessions: list[str] | None = None,
) -> EvalReport:
    """Score ``model`` on every window of ``split`` (spec §3), session by session."""
    device = torch.device(device) if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    mapping = model_session_map(model, corpus)
    was_training = model.training
    model.eval()
    out = []
    regions = {}
    try:
        for ci, info in enumerate(corpus.sessions):
            if sessions is not None and info.name not in sessions:
                continue
            sse = np.zeros((corpus.horizon, info.n_units))
            copy = np.zeros_like(sse)
            sae = np.zeros_like(sse)
            copy_sae = np.zeros_like(sse)
            n = 0
            for ctx, tgt, _ in corpus.session_windows(split, ci, batch_size):
                ctx, tgt = ctx.to(device), tgt.to(device)
                sess = torch.full((ctx.shape[0],), mapping[ci], dtype=torch.int64, device=device)
                with autocast_context(device):
                    pred = model(ctx, sess)
                err, copy_err = pred.float() - tgt, ctx[:, -1:, :] - tgt
                sse += (err**2).sum(0).double().cpu().numpy()
                copy += (copy_err**2).sum(0).double().cpu().numpy()
                sae += err.abs().sum(0).double().cpu().numpy()
                copy_sae += copy_err.abs().sum(0).double().cpu().numpy()
                n += ctx.shape[0]
            out.append(SessionScore(info.name, info.dataset, n, sse, copy, sae, copy_sae))
            r = corpus.regions(info.name)
            if r is not None:
                regions[info.name] = r
    finally:
        model.train(was_training)
    return EvalReport(model.kind, split, out, regions)

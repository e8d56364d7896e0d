"""The Sequence memory tab's controller: its settings (with visible bounds), the presets, playback
state, the four background jobs (rollout, capacity, correlated patterns, MixedNet timing), its URL
state and the snapshot of what is on screen (``pocoviz.ui.seqmem`` draws it). No panel, holoviews or
bokeh.

Settings typed into a box go through :meth:`SeqMemController.set_setting`: a value outside the
bounds is clamped to them and :attr:`notice` says so, never dropped silently. A preset sets every setting; as soon as one differs from the preset's, the
preset reads "custom" again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param

from .base import Controller
from .jobs import Job
from .urlstate import UrlField

MODELS = {
    "SeqNet (d = 1)": "seqnet",
    "DenseNet, polynomial": "dense",
    "DenseNet, exponential": "exp",
    "pseudoinverse rule": "pseudoinverse",
    "MixedNet (timing)": "mixed",
}
PATTERN_SETS = {"random ±1": "random", "biased random (ε)": "biased", "digits (8×8, bundled)": "digits"}
N_OPTIONS = [16, 25, 36, 49, 64, 100, 144, 196, 256, 300, 400]
MAX_STEPS = 800
CUSTOM = "custom"
#: the settings a preset fixes (those a preset does not name take these defaults)
SETTINGS = ("model", "patterns", "degree", "N", "P", "bias", "tau", "lam", "flip", "seed")
DEFAULTS: dict[str, Any] = {"model": "dense", "patterns": "random", "degree": 2, "N": 100, "P": 40, "bias": 0.5, "tau": 5, "lam": 2.5, "flip": 0, "seed": 0}
PRESETS: dict[str, dict[str, Any]] = {
    "Fig. 1: SeqNet fails (N 300, P 100)": {"model": "seqnet", "patterns": "random", "N": 300, "P": 100, "degree": 1},
    "Fig. 1: DenseNet d = 2 recalls (N 300, P 100)": {"model": "dense", "patterns": "random", "N": 300, "P": 100, "degree": 2},
    "Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)": {"model": "mixed", "patterns": "random", "N": 100, "P": 40, "degree": 10, "tau": 5, "lam": 2.5},
    "Fig. 4A: MixedNet d = 2 (too early)": {"model": "mixed", "patterns": "random", "N": 100, "P": 40, "degree": 2, "tau": 5, "lam": 2.5},
    "Digits: exponential DenseNet (P 200)": {"model": "exp", "patterns": "digits", "N": 64, "P": 200},
    "Digits: d = 2 fails, pseudoinverse recalls (P 40)": {"model": "pseudoinverse", "patterns": "digits", "N": 64, "P": 40, "degree": 2},
    "Biased ε = 0.7: pseudoinverse (N 100, P 50)": {"model": "pseudoinverse", "patterns": "biased", "N": 100, "P": 50, "degree": 3, "bias": 0.7},
}
CAP_COLORS = {1: "#0072B2", 2: "#E69F00", 3: "#009E73", "exp": "#D55E00"}
EXP_SWEEP = tuple(range(6, 14))


def _image(flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.flipud(np.asarray(flat, dtype=np.float32).reshape(shape))  # row 0 at the top


@dataclass
class Frame:
    """One playback step: the images (target, state, difference; rows flipped for drawing), the
    overlaps drawn so far (``(P, T)``, NaN in the future), the bit errors so far, and the readout."""

    t: int
    last: int
    images: list[np.ndarray]
    heat: np.ndarray
    errors: np.ndarray
    target: int
    label: int | None
    bit_errors: int
    nearest: int
    nearest_overlap: float
    first_error: int | None


@dataclass
class SeqMemSnapshot:
    """What the Sequence memory tab shows."""

    rollout: Any = None  # pocoviz.seqmem.Recall
    info: dict[str, Any] = field(default_factory=dict)  # model, N, P, tau, labels, steps, X, rank
    shape: tuple[int, int] = (8, 8)
    frame: Frame | None = None
    capacity: list[dict[str, Any]] = field(default_factory=list)
    capacity_points: dict[str, dict[str, list]] = field(default_factory=dict)  # "P_T"/"P_S": N, P, color
    c: float = 0.1
    corr: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    playing: bool = False
    progress: float | None = None
    status: str = ""
    notice: str = ""
    preset: str = CUSTOM


class SeqMemController(Controller):
    """The Sequence memory tab's state (see module docstring)."""

    url_fields = (
        UrlField("preset", "seq_preset"),
        UrlField("model", "seq_model"),
        UrlField("patterns", "seq_patterns"),
        UrlField("degree", "seq_d"),
        UrlField("N", "seq_N"),
        UrlField("P", "seq_P"),
        UrlField("bias", "seq_eps"),
        UrlField("tau", "seq_tau"),
        UrlField("lam", "seq_lam"),
        UrlField("flip", "seq_flip"),
        UrlField("seed", "seq_seed"),
        UrlField("speed", "seq_speed"),
        UrlField("c", "seq_c"),
        UrlField("correlated", "seq_corr"),
        UrlField("t", "seq_t"),
    )

    preset = param.Selector(default=CUSTOM, objects=[CUSTOM, *PRESETS])
    model = param.Selector(default="dense", objects=MODELS)
    degree = param.Integer(default=2, bounds=(1, 60), doc="polynomial degree d (d_S = d_A for MixedNet)")
    patterns = param.Selector(default="random", objects=PATTERN_SETS)
    N = param.Selector(default=100, objects=N_OPTIONS, doc="neurons")
    P = param.Integer(default=40, bounds=(2, 400), doc="sequence length")
    bias = param.Number(default=0.5, bounds=(0.0, 0.95), doc="ε: P(ξ = +1) = (1 + ε)/2")
    tau = param.Integer(default=5, bounds=(1, 10), doc="MixedNet: steps per pattern")
    lam = param.Number(default=2.5, bounds=(0.5, 5.0), doc="MixedNet: transition strength λ")
    flip = param.Integer(default=0, bounds=(0, 100), doc="bits of the cue flipped")
    seed = param.Integer(default=0, bounds=(0, 999))
    t = param.Integer(default=0, bounds=(0, MAX_STEPS), doc="playback step")
    speed = param.Integer(default=8, bounds=(1, 30), doc="steps per second")
    c = param.Number(default=0.1, bounds=(0.0, 0.5), doc="capacity tolerance: success rate >= 1 − c")
    correlated = param.Selector(default="biased", objects={"biased random (vs ε)": "biased", "digits (vs P)": "digits"})
    playing = param.Boolean(default=False, precedence=-1, doc="playback runs (the view ticks advance())")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._rollout: Any = None
        self._info: dict[str, Any] = {}
        self._capacity: list[dict[str, Any]] = []
        self._cap_progress: float | None = None
        self._corr: dict[str, Any] = {}
        self._timing: dict[str, Any] = {}
        self._start_rollout()
        self._start_timing()
        self._start_corr()
        self._start_capacity()

    # ------------------------------------------------------------------ settings
    def set_setting(self, name: str, value: Any) -> Any:
        """Set a numeric setting typed by the user: clamped to its bounds, with a :attr:`notice`
        saying so when it was outside them. Returns the value used."""
        p = self.param[name]
        lo, hi = p.bounds
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.notice = f"{name} = {value!r} is not a number: kept {getattr(self, name)}"
            return getattr(self, name)
        if not math.isfinite(x):
            self.notice = f"{name} = {value} is not a finite number: kept {getattr(self, name)}"
            return getattr(self, name)
        used = min(max(x, lo), hi)
        if isinstance(p, param.Integer):
            used = int(round(used))
        if used != x:
            side = f"above the maximum {hi:g}" if x > hi else f"below the minimum {lo:g}" if x < lo else "not a whole number"
            self.notice = f"{name} = {x:g} is {side}: using {used:g}"
        else:
            self.notice = ""
        setattr(self, name, used)
        return used

    def bounds_text(self, name: str) -> str:
        lo, hi = self.param[name].bounds
        return f"{lo:g}–{hi:g}"

    @param.depends("preset", watch=True)
    def _on_preset(self) -> None:
        spec = PRESETS.get(self.preset)
        if spec:
            self.param.update(**{**DEFAULTS, **spec})

    def matching_preset(self) -> str:
        """The preset whose settings are the current ones, else "custom"."""
        now = {k: getattr(self, k) for k in SETTINGS}
        for name, spec in PRESETS.items():
            if {**DEFAULTS, **spec} == now:
                return name
        return CUSTOM

    @param.depends(*SETTINGS, watch=True)
    def _on_setting(self) -> None:
        if self.patterns == "digits" and self.N != 64:
            self.N = 64  # the digits are 8 × 8
            return
        if self.preset != CUSTOM and self.matching_preset() != self.preset:
            self.preset = CUSTOM  # a setting left the preset: its name no longer describes the view
        self.playing = False
        self.t = 0
        self._start_rollout()

    @param.depends("c", "t", "playing", "notice", watch=True)
    def _on_view_setting(self) -> None:
        self.changed()

    @param.depends("correlated", watch=True)
    def _on_correlated(self) -> None:
        self._start_corr()

    def build_model(self) -> tuple[Any, np.ndarray | None]:
        """The model of the current settings and, for digits, the digit labels."""
        from pocoviz.seqmem import DenseNet, MixedNet, PseudoinverseNet, digit_patterns, random_patterns

        labels = None
        if self.patterns == "digits":
            X, labels = digit_patterns(int(self.P))
        else:
            X = random_patterns(int(self.N), int(self.P), bias=float(self.bias) if self.patterns == "biased" else 0.0, seed=int(self.seed))
        kind, d = self.model, int(self.degree)
        if kind == "seqnet":
            return DenseNet(X, 1), labels
        if kind == "exp":
            return DenseNet(X, "exp"), labels
        if kind == "pseudoinverse":
            return PseudoinverseNet(X, d), labels
        if kind == "mixed":
            return MixedNet(X, d, lam=float(self.lam), tau=int(self.tau)), labels
        return DenseNet(X, d), labels

    # ------------------------------------------------------------------ playback
    def last_step(self) -> int:
        with self._lock:
            r = self._rollout
        return 0 if r is None else len(r.errors) - 1

    def toggle_play(self) -> None:
        if self.playing:
            self.playing = False
            return
        if self._rollout is not None and self.t >= self.last_step():
            self.t = 0
        self.playing = True

    def advance(self, n: int = 1) -> None:
        if self._rollout is None:
            return
        last = self.last_step()
        self.t = min(last, self.t + n)
        if self.t >= last:
            self.playing = False

    def reset(self) -> None:
        self.t = 0

    # ------------------------------------------------------------------ jobs
    def _start_rollout(self) -> None:
        from pocoviz.seqmem import recall

        try:
            model, labels = self.build_model()
        except Exception as exc:  # shown in the tab
            self._error = f"model failed: {exc}"
            self.changed()
            return
        flip, seed = min(int(self.flip), model.N // 2), int(self.seed)

        def work(job: Job) -> None:
            steps = min(MAX_STEPS, int(model.P) * model.tau + model.tau)
            r = recall(model, steps, flip=flip, seed=seed)
            job.check()
            info = {"model": model.describe(), "N": model.N, "P": model.P, "tau": model.tau, "labels": labels, "steps": steps, "X": model.X.cpu().numpy()}
            if hasattr(model, "rank"):
                info["rank"] = model.rank
            self._store(job, _rollout=r, _info=info, _error="")
            last = len(r.errors) - 1
            self.param.t.bounds = (0, last)  # the step slider spans this rollout
            if self.t > last:
                self.t = last

        self.jobs.start("rollout", work, on_done=self._failed)

    def _start_timing(self) -> None:
        def work(job: Job) -> None:
            from pocoviz.seqmem import MixedNet, random_patterns, recall

            X = random_patterns(100, 20, seed=0)
            taus = np.arange(1, 9)
            out: dict[Any, Any] = {"tau": taus}
            for d in (1, 2, 10):
                dwell = []
                for tau in taus:
                    job.check()
                    runs = recall(MixedNet(X, d, lam=2.5, tau=int(tau)), 20 * int(tau)).visits()
                    inner = [n for _, n in runs[1:-1]]
                    dwell.append(float(np.mean(inner)) if inner else np.nan)
                out[d] = np.array(dwell)
            self._store(job, _timing=out)

        self.jobs.start("timing", work, on_done=self._failed)

    def _start_corr(self) -> None:
        family = self.correlated

        def work(job: Job) -> None:
            from pocoviz.seqmem import digit_patterns, random_patterns, transitions_ok

            kinds: list[tuple[str, Any]] = [("plain", 1), ("plain", 2), ("plain", 3), ("pseudoinverse", 1), ("pseudoinverse", 2), ("pseudoinverse", 3)]
            if family == "biased":
                xs = np.round(np.linspace(0.0, 0.9, 10), 2)
                pats = [[random_patterns(100, 50, bias=float(e), seed=s) for s in range(3)] for e in xs]
            else:
                kinds = [("plain", 2), ("plain", 10), ("plain", 25), ("plain", "exp"), ("pseudoinverse", 2)]
                xs = np.array([10, 20, 30, 40, 60, 100, 200])
                pats = [[digit_patterns(int(p))[0]] for p in xs]
            rates = {}
            for kind, d in kinds:
                job.check()
                rates[(kind, d)] = np.array(
                    [np.mean([float(transitions_ok(X, d, pseudoinverse=kind == "pseudoinverse").double().mean()) for X in group]) for group in pats]
                )
            self._store(job, _corr={"family": family, "x": xs, "rates": rates})

        self.jobs.start("corr", work, on_done=self._failed)

    def _start_capacity(self) -> None:
        def work(job: Job) -> None:
            from pocoviz.seqmem import capacity_estimate
            from pocoviz.seqmem.bench import SWEEP

            todo = [(d, N) for d, Ns in SWEEP for N in Ns] + [("exp", N) for N in EXP_SWEEP]
            out: list[dict[str, Any]] = []
            self._store(job, _cap_progress=0.0)
            for i, (d, N) in enumerate(todo):
                job.report(i / len(todo), f"capacity {d}, N = {N}")
                out.append(capacity_estimate(N, d, n_seq=8))
                done = i == len(todo) - 1
                if i % 6 == 5 or done:
                    self._store(job, _capacity=list(out), _cap_progress=None if done else (i + 1) / len(todo))

        self.jobs.start("capacity", work, on_done=self._failed)

    # ------------------------------------------------------------------ what is on screen
    def capacity_points(self, estimates: list[dict[str, Any]] | None = None, c: float | None = None) -> dict[str, dict[str, list]]:
        """Simulated capacities at success rate ≥ 1 − c: ``{"P_T": {"N", "P", "color", "degree"}, "P_S": ...}``."""
        from pocoviz.seqmem.capacity import _crossing

        estimates = self._capacity if estimates is None else estimates
        c = float(self.c if c is None else c)
        out: dict[str, dict[str, list]] = {w: {"N": [], "P": [], "color": [], "degree": []} for w in ("P_T", "P_S")}
        for e in estimates:
            for which, rate in (("P_T", e["trans_ok"]), ("P_S", e["seq_ok"])):
                p = _crossing(e["grid"], rate, 1 - c)
                if p > 0:
                    rows = out[which]
                    rows["N"].append(e["N"])
                    rows["P"].append(p)
                    rows["color"].append(CAP_COLORS[e["degree"]])
                    rows["degree"].append(str(e["degree"]))
        return out

    def frame(self, t: int | None = None) -> Frame | None:
        """Playback step ``t`` (default: the current one) of the current rollout."""
        from pocoviz.seqmem import image_shape

        with self._lock:
            r, info = self._rollout, self._info
        if r is None:
            return None
        last = len(r.errors) - 1
        t = int(min(self.t if t is None else t, last))
        shape = (8, 8) if info["labels"] is not None else image_shape(info["N"])
        target_idx = int(r.target[t])
        target = info["X"][target_idx]
        state = r.states[t]
        err = (state != target).astype(np.float32)
        heat = np.full((r.overlaps.shape[1], len(r.errors)), np.nan, dtype=np.float32)
        heat[:, : t + 1] = r.overlaps[: t + 1].T
        near = int(r.nearest[t])
        return Frame(
            t=t, last=last, images=[_image(img, shape) for img in (target, state, err)], heat=heat, errors=np.asarray(r.errors[: t + 1]),
            target=target_idx, label=None if info["labels"] is None else int(info["labels"][target_idx]), bit_errors=int(r.errors[t]),
            nearest=near, nearest_overlap=float(r.overlaps[t, near]), first_error=r.first_error,
        )  # fmt: skip

    def snapshot(self) -> SeqMemSnapshot:
        from pocoviz.seqmem import image_shape

        with self._lock:
            r, info, cap, progress, corr, timing, error = (
                self._rollout, self._info, self._capacity, self._cap_progress, self._corr, self._timing, self._error,
            )  # fmt: skip
        snap = SeqMemSnapshot(
            rollout=r, info=info, frame=self.frame(), capacity=cap, capacity_points=self.capacity_points(cap), c=float(self.c),
            corr=corr, timing=timing, playing=self.playing, progress=progress, notice=self.notice, preset=self.preset,
        )  # fmt: skip
        if info:
            snap.shape = (8, 8) if info["labels"] is not None else image_shape(info["N"])
        if error:
            snap.status = error
        elif progress is not None:
            snap.status = f"capacity simulation: {int(round(100 * progress))}%"
        return snap

    def wait_settled(self, timeout: float = 180.0) -> bool:
        """Block until no job runs (tests, notebooks)."""
        return self.jobs.wait_idle(timeout)


__all__ = ["CAP_COLORS", "CUSTOM", "MODELS", "N_OPTIONS", "PATTERN_SETS", "PRESETS", "SeqMemController", "SeqMemSnapshot"]

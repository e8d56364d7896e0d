"""The Transformer limits tab's controller: the shipped sweeps turned into figure data (series with
their slopes, reference lines and axis ticks), the initialisation statistics computed in the
background on the backend's device, and a live training run whose loss streams in through its
job. No panel, holoviews or bokeh here (``pocoviz.ui.limits`` draws the snapshots).

Paper: Bordelon, Chaudhry & Pehlevan, *Infinite Limits of Multi-head Transformer Dynamics*,
NeurIPS 2024 (spec ``transformer_limits.md`` §4.3).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import param

from .base import Controller
from .jobs import Cancelled, Job
from .urlstate import UrlField

#: line colours (Okabe–Ito, colour-blind safe), in the order series of one figure are added
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#8c564b"]
#: αA = 1 / αL = 1 in blue, ½ in vermillion, in every figure
ALPHA_COLOR = {1.0: "#0072B2", 0.5: "#D55E00"}
SWEEP_STEPS = 300


def half(a: float) -> str:
    return "1" if a == 1 else "½"


@dataclass(frozen=True)
class Series:
    """One line (and optionally markers) of a figure; ``x``/``y`` hold only points that the
    figure's axes can show (positive on a log axis, finite)."""

    x: np.ndarray
    y: np.ndarray
    label: str
    color: str
    dash: str = "solid"
    width: float = 2.0
    markers: bool = False
    kind: str = "line"  # "line", "step" (a histogram outline) or "point" (markers only)


@dataclass(frozen=True)
class FigureData:
    """A figure: title, axis labels and types, series, and the tick positions of each log axis
    (Bokeh's log ticker labels nothing on an axis spanning less than a decade)."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    x_log: bool = False
    y_log: bool = False
    series: tuple[Series, ...] = ()
    x_ticks: tuple[float, ...] = ()
    y_ticks: tuple[float, ...] = ()
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None


def log_ticks(lo: float, hi: float, *, min_ticks: int = 3) -> tuple[float, ...]:
    """Readable tick positions for a log axis covering ``lo``–``hi`` (> 0): powers of ten, then
    1-2-5, then 1-2-3-…-9 per decade, whichever first gives ``min_ticks`` inside the range; a range
    narrower than that gets evenly spaced round values."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return ()
    lo, hi = min(lo, hi), max(lo, hi)
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mantissas]
        inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(inside) >= min_ticks:
            return tuple(float(f"{t:.6g}") for t in inside)
    span = hi - lo
    step = 10.0 ** math.floor(math.log10(span / 2)) if span > 0 else lo / 10
    ticks = np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)
    return tuple(float(f"{t:.6g}") for t in ticks if t > 0)


def _bounds(values: list[np.ndarray]) -> tuple[float, float] | None:
    v = np.concatenate([np.asarray(x, float).ravel() for x in values]) if values else np.array([])
    v = v[np.isfinite(v)]
    return (float(v.min()), float(v.max())) if v.size else None


def log_range(lo: float, hi: float, pad: float = 0.08) -> tuple[float, float]:
    """``lo``–``hi`` widened by ``pad`` of its width in log space (a flat series still gets a range)."""
    a, b = math.log10(lo), math.log10(hi)
    d = max(b - a, 0.05) * pad
    return 10 ** (a - d), 10 ** (b + d)


def linear_range(lo: float, hi: float, pad: float = 0.05) -> tuple[float, float]:
    """``lo``–``hi`` widened by ``pad`` of its width on each side (a flat series still gets a range)."""
    d = (hi - lo) * pad if hi > lo else max(abs(lo) * 0.1, 1.0)
    return lo - d, hi + d


def make_figure(name: str, title: str, xlabel: str, ylabel: str, series: list[Series], *, x_log: bool = False, y_log: bool = False) -> FigureData:
    """A figure whose series keep only the points its axes can show, with explicit ranges (Bokeh
    then never guesses a range from no data, nor a log range from non-positive data) and readable
    ticks on log axes."""
    kept = []
    for s in series:
        x, y = np.asarray(s.x, float), np.asarray(s.y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        if x_log:
            ok &= x > 0
        if y_log:
            ok &= y > 0
        if ok.any():
            kept.append(Series(x[ok], y[ok], s.label, s.color, s.dash, s.width, s.markers, s.kind))
    xb, yb = _bounds([s.x for s in kept]), _bounds([s.y for s in kept])
    x_range = y_range = None
    x_ticks = y_ticks = ()
    if xb is not None:
        x_range = log_range(*xb) if x_log else linear_range(*xb, pad=0.02)
        x_ticks = log_ticks(*x_range) if x_log else ()
    if yb is not None:
        y_range = log_range(*yb) if y_log else linear_range(*yb)
        y_ticks = log_ticks(*y_range) if y_log else ()
    return FigureData(name, title, xlabel, ylabel, x_log, y_log, tuple(kept), x_ticks, y_ticks, x_range, y_range)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def sweep_figures(sweeps: dict[str, Any]) -> tuple[dict[str, FigureData], list[str]]:
    """The figures drawn from the shipped sweeps (``load_sweep`` datasets by name) and one summary
    sentence per measured slope."""
    figs: dict[str, FigureData] = {}
    lines: list[str] = []
    ds = sweeps.get("N")
    if ds is not None:
        series, loss_n = [], []
        for a in (1.0, 0.5):
            sel = ds.where(ds.alpha_A == a, drop=True)
            fin = sel.head_var_final.groupby(sel.N).mean()
            ini = sel.head_var_init.groupby(sel.N).mean()
            s = slope(fin.N.values, fin.values)
            color = ALPHA_COLOR[a]
            series.append(Series(fin.N.values, fin.values, f"αA = {half(a)}, trained (slope {s:+.2f})", color, width=2.5, markers=True))
            series.append(Series(ini.N.values, ini.values, f"αA = {half(a)}, init", color, dash="dotted"))
            lines.append(f"head variance vs N: slope <b>{s:+.2f}</b> for αA = {half(a)}")
        Ns = np.array([4.0, 64.0])
        top = float(ds.head_var_final.where(ds.alpha_A == 1.0).max())
        series.append(Series(Ns, top * (Ns / 4) ** -1, "∝ N⁻¹", "#999999", dash="dashed", width=1.5))
        series.append(Series(Ns, top * (Ns / 4) ** -2, "∝ N⁻²", "#bbbbbb", dash="dashed", width=1.5))
        figs["headvar"] = make_figure(
            "headvar", "head variance of logits vs N", "N (key/query dimension)", "Var over heads of A", series, x_log=True, y_log=True
        )
        sel = ds.where((ds.alpha_A == 1.0) & (ds.seed == 0), drop=True)
        for i, N in enumerate(sel.N.values):
            run = sel.where(sel.N == N, drop=True)
            loss_n.append(Series(run.step.values, run.loss.values[0], f"N = {int(N)}", COLORS[i % len(COLORS)]))
        figs["loss-n"] = make_figure("loss-n", "loss, scaling N (αA = 1)", "step", "train loss", loss_n, y_log=True)
    ds = sweeps.get("lr")
    if ds is not None:
        series = []
        for a, dash in ((1.0, "solid"), (0.5, "dashed")):
            for i, N in enumerate(np.unique(ds.N.values)):
                sel = ds.where((ds.alpha_A == a) & (ds.N == N), drop=True)
                final = sel.loss.isel(step=slice(-4, None)).mean("step").values  # the last 20 steps
                y = np.where(np.isfinite(final), final, np.nan)
                color = COLORS[i % len(COLORS)]
                series.append(Series(sel.eta0.values, y, f"N = {int(N)}, αA = {half(a)}", color, dash=dash))
                if np.isfinite(y).any():
                    best = int(np.nanargmin(y))
                    series.append(Series(sel.eta0.values[best : best + 1], y[best : best + 1], "", color, kind="point", markers=True))
        figs["lr"] = make_figure("lr", "learning-rate transfer across N", "η0", f"loss, steps {SWEEP_STEPS - 19}–{SWEEP_STEPS}", series, x_log=True, y_log=True)
    ds = sweeps.get("H")
    if ds is not None:
        spread = ds.f_probe.groupby(ds.H).var("run").mean("probe")
        s = slope(spread.H.values, spread.values)
        Hs = spread.H.values.astype(float)
        series = [
            Series(Hs, spread.values, f"measured (slope {s:+.2f})", "#009E73", width=2.5, markers=True),
            Series(Hs, float(spread.values[0]) * Hs[0] / Hs, "∝ 1/H", "#999999", dash="dashed", width=1.5),
        ]
        figs["spread"] = make_figure("spread", "output spread across seeds vs H", "H (heads)", "Var over seeds of f(x)", series, x_log=True, y_log=True)
        lines.append(f"output spread across seeds vs H: slope <b>{s:+.2f}</b>")
        sel = ds.where(ds.seed == 0, drop=True)
        loss_h = []
        for i, H in enumerate(sel.H.values):
            run = sel.where(sel.H == H, drop=True)
            loss_h.append(Series(run.step.values, run.loss.values[0], f"H = {int(H)}", COLORS[i % len(COLORS)]))
        figs["loss-h"] = make_figure("loss-h", "loss, scaling H (N = 4)", "step", "train loss", loss_h, y_log=True)
    ds = sweeps.get("L")
    if ds is not None:
        series = []
        for a in (1.0, 0.5):
            sel = ds.where(ds.alpha_L == a, drop=True)
            move = sel.dWK.mean("layer", skipna=True).groupby(sel.L).mean()
            s = slope(move.L.values, move.values)
            color = ALPHA_COLOR[a]
            series.append(Series(move.L.values, move.values, f"αL = {half(a)}, {SWEEP_STEPS} steps (slope {s:+.2f})", color, width=2.5, markers=True))
            if "dWK_first" in sel:
                first = sel.dWK_first.mean("layer", skipna=True).groupby(sel.L).mean()
                s1 = slope(first.L.values, first.values)
                series.append(Series(first.L.values, first.values, f"αL = {half(a)}, first step (slope {s1:+.2f})", color, dash="dotted"))
                lines.append(
                    f"‖ΔW_K‖/‖W_K(0)‖ vs L for αL = {half(a)}: slope <b>{s1:+.2f}</b> per step, <b>{s:+.2f}</b> over {SWEEP_STEPS} steps"
                )
        Ls = np.array([2.0, 32.0])
        base = float(ds.dWK.where(ds.alpha_L == 0.5).mean("layer").where(ds.L == 2).mean())
        series.append(Series(Ls, base * (Ls / 2) ** -0.5, "∝ L^−½", "#999999", dash="dashed", width=1.5))
        figs["dwk"] = make_figure("dwk", "key-weight movement vs depth", "L (blocks)", "‖ΔW_K‖ / ‖W_K(0)‖", series, x_log=True, y_log=True)
        sel = ds.where((ds.alpha_L == 1.0) & (ds.seed == 0), drop=True)
        loss_l = []
        for i, L in enumerate(sel.L.values):
            run = sel.where(sel.L == L, drop=True)
            loss_l.append(Series(run.step.values, run.loss.values[0], f"L = {int(L)}", COLORS[i % len(COLORS)]))
        figs["loss-l"] = make_figure("loss-l", "loss, scaling L (αL = 1)", "step", "train loss", loss_l, y_log=True)
    return figs, lines


def histogram_figure(hist: dict[tuple[float, int], np.ndarray]) -> FigureData:
    """Histograms (outlines) of the logits over heads at initialisation, one per (αA, N)."""
    series = []
    for i, ((a, N), vals) in enumerate(hist.items()):
        counts, edges = np.histogram(vals, bins=40, density=True)
        series.append(Series(np.repeat(edges, 2)[1:-1], np.repeat(counts, 2), f"αA = {half(a)}, N = {N}", COLORS[i % len(COLORS)], kind="step"))
    return make_figure("hist", "logits over 256 heads at init", "A_h (one token pair)", "density", series)


@dataclass(frozen=True)
class LiveRun:
    """The live run: its id (a new run clears the plot), the recorded steps and losses so far,
    what it says, and its result once done."""

    id: int = 0
    steps: tuple[int, ...] = ()
    loss: tuple[float, ...] = ()
    total_steps: int = 0
    status: str = ""
    result: Any = None


@dataclass(frozen=True)
class LimitsSnapshot:
    """What the Transformer limits tab shows (see :meth:`LimitsController.snapshot`)."""

    figures: dict[str, FigureData]  # sweep figures and, once computed, "hist"
    summary: str  # the measured slopes, one sentence
    missing: str  # sweeps that could not be read ("" when all were)
    kernels: dict[tuple[float, int], np.ndarray]  # (αL, L) -> (24, 24) cosine kernel at init; {} until computed
    live: LiveRun
    device: str
    notice: str = ""
    forward_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def device_name() -> str:
    from pocoviz.backend import BackendError, get_device

    try:
        return str(get_device())
    except BackendError:
        return "no usable device (see POCOVIZ_DEVICE)"


class LimitsController(Controller):
    """State of the Transformer limits tab (see module docstring)."""

    url_fields = (
        UrlField("live_N", "lim_N"),
        UrlField("live_H", "lim_H"),
        UrlField("live_L", "lim_L"),
        UrlField("live_alpha_A", "lim_aA"),
        UrlField("live_alpha_L", "lim_aL"),
        UrlField("live_eta0", "lim_eta0"),
        UrlField("live_steps", "lim_steps"),
    )

    live_N = param.Integer(default=8, bounds=(1, 64), doc="Key/query dimension per head")
    live_H = param.Integer(default=4, bounds=(1, 32), doc="Heads")
    live_L = param.Integer(default=2, bounds=(1, 16), doc="Blocks")
    live_alpha_A = param.Selector(default=1.0, objects={"αA = 1 (μP logits)": 1.0, "αA = ½": 0.5})
    live_alpha_L = param.Selector(default=1.0, objects={"αL = 1": 1.0, "αL = ½": 0.5})
    live_eta0 = param.Number(default=0.5, bounds=(0.01, 8.0), doc="Base learning rate η0")
    live_steps = param.Integer(default=200, bounds=(10, 2000), doc="Training steps")

    def __init__(self, *, forward: bool = True, **params: Any):
        super().__init__(**params)
        self.param.watch(lambda event: self.changed(), "notice")  # a link's clamped settings are shown
        # until the user changes a setting (a link applies its values first)
        self.param.watch(lambda *events: self.param.update(notice="") if self.notice else None, list(self.url.params))
        self._live = LiveRun()
        self._requests = 0  # live runs requested (a stopped run says "stopped" only if none followed)
        self._hist: FigureData | None = None
        self._kernels: dict[tuple[float, int], np.ndarray] = {}
        self._forward_error = ""
        self.device = device_name()
        self.sweeps, missing = self._load_sweeps()
        self._missing = "; ".join(missing)
        self._figures, lines = sweep_figures(self.sweeps)
        self._summary = ("From the shipped sweeps: " + "; ".join(lines) + ".") if lines else ""
        if forward:
            self.jobs.start("forward", self._forward)

    # ------------------------------------------------------------------ data
    @staticmethod
    def _load_sweeps() -> tuple[dict[str, Any], list[str]]:
        from pocoviz.limits import SWEEPS, load_sweep

        sweeps, missing = {}, []
        for name in SWEEPS:
            try:
                sweeps[name] = load_sweep(name)
            except (FileNotFoundError, OSError, ValueError) as exc:
                missing.append(f"{name}: {exc}")
        return sweeps, missing

    def _forward(self, job: Job) -> None:
        """Initialisation-only statistics (forward passes on the backend's device: a second or two)."""
        from pocoviz.backend import configure_threads, get_device
        from pocoviz.limits import init_statistics

        configure_threads()  # one torch thread on small machines: the other core stays with the web server
        job.report(None, "forward passes at initialisation")
        try:
            stats = init_statistics(get_device())  # NumPy arrays, for the plots
        except Exception as exc:  # shown in the tab; the app keeps running
            self._forward_error = f"initial statistics failed: {exc}"
            self.changed()
            raise
        job.check()
        self._hist = histogram_figure(stats["hist"])
        self._kernels = stats["kernels"]
        self.changed()

    # ------------------------------------------------------------------ live run
    def start_live(self) -> Job:
        """Train one model with the live settings in the background; its loss streams into the
        snapshot every 5 steps. A run already going is cancelled (the newest wins)."""
        with self._lock:
            self._requests += 1
            request = self._requests
        settings = dict(
            N=int(self.live_N), H=int(self.live_H), L=int(self.live_L), alpha_A=float(self.live_alpha_A),
            alpha_L=float(self.live_alpha_L), eta0=float(self.live_eta0),
        )  # fmt: skip
        steps = int(self.live_steps)
        return self.jobs.start("live", lambda job: self._live_run(job, request, settings, steps))

    def stop_live(self) -> None:
        """Stop the live run (it keeps the loss it has streamed)."""
        self.jobs.cancel("live")

    def _set_live(self, **changes: Any) -> None:
        with self._lock:
            self._live = LiveRun(**{**self._live.__dict__, **changes})
        self.changed()

    def _live_run(self, job: Job, request: int, settings: dict[str, Any], steps: int) -> Any:
        from pocoviz.backend import configure_threads, get_device
        from pocoviz.limits import LimitsConfig, train_run

        configure_threads()
        device = get_device()
        cfg = LimitsConfig(**settings)
        status = f"training N={cfg.N}, H={cfg.H}, L={cfg.L} on {device} …"
        with self._lock:
            self._live = LiveRun(id=job.id, total_steps=steps, status=status)
        self.changed()
        job.report(0.0, status)
        t0 = time.perf_counter()

        def progress(step: int, loss: float) -> None:
            with self._lock:
                live = self._live
                self._live = LiveRun(live.id, live.steps + (int(step),), live.loss + (float(loss),), live.total_steps, live.status)
            self.changed()
            job.report(step / steps, f"step {step}: loss {loss:.3g}")  # raises Cancelled once stopped

        try:
            r = train_run(cfg, steps=steps, seed=0, progress=progress, should_stop=lambda: job.cancelled, device=device)
            if r is None:
                raise Cancelled("live")
        except Cancelled:
            if request == self._requests:  # not replaced by a newer run: say it stopped
                self._set_live(status="stopped")
            raise
        except Exception as exc:
            self._set_live(status=f"failed: {exc}")
            raise
        dt = time.perf_counter() - t0
        per_step = 1000 * dt / max(1, steps)
        self._set_live(
            status=f"done: {steps} steps in {dt:.1f} s ({per_step:.1f} ms/step); final loss {r.loss[-1]:.3f}, "
            f"head variance {r.head_var_init:.3g} → {r.head_var_final:.3g}",
            result=r,
        )
        return r

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> LimitsSnapshot:
        """What the tab shows now."""
        figures = dict(self._figures)
        if self._hist is not None:
            figures["hist"] = self._hist
        with self._lock:
            live = self._live
        return LimitsSnapshot(
            figures=figures, summary=self._summary, missing=self._missing, kernels=dict(self._kernels), live=live,
            device=self.device, notice=self.notice, forward_error=self._forward_error,
        )  # fmt: skip

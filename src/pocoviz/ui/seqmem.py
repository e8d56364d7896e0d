"""Sequence memory tab: recall playback and capacity of dense associative sequence memories
(Chaudhry, Zavatone-Veth, Krotov & Pehlevan, *Long Sequence Hopfield Memory*, NeurIPS 2023; spec
``seq_hopfield.md`` §4).

- Playback: a model (SeqNet, polynomial or exponential DenseNet, pseudoinverse rule, MixedNet)
  recalls a stored sequence from its first pattern; the stored target, the current state and their
  difference as images; the overlap of the state with every stored pattern over time as a heatmap
  that grows as it plays; the bit errors per step. Presets reproduce the paper's Fig. 1 and 4A.
- Capacity: P_T and P_S against N for d = 1, 2, 3 and exponential: theory lines, simulation markers
  (success rate ≥ 1 − c on a grid around the theory; c adjustable without re-simulating).
- Correlated patterns: exact transitions of the plain rule against the pseudoinverse rule, on biased
  random patterns (vs ε) or on the bundled digits (vs P).
- MixedNet timing: dwell per pattern against τ, for d = 1, 2, 10.

The rollout and the three analyses run in background jobs; playback is a server-side periodic
callback, so the browser sends nothing per step.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearColorMapper, Span
from bokeh.plotting import figure

from .base import TabView
from .jobs import LatestRunner
from .theme import REGION_PALETTE

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
PRESETS: dict[str, dict[str, Any] | None] = {
    "(none)": None,
    "Fig. 1: SeqNet fails (N 300, P 100)": {"model": "seqnet", "patterns": "random", "N": 300, "P": 100, "degree": 1},
    "Fig. 1: DenseNet d = 2 recalls (N 300, P 100)": {"model": "dense", "patterns": "random", "N": 300, "P": 100, "degree": 2},
    "Fig. 4A: MixedNet d = 10, τ = 5 (N 100, P 40)": {"model": "mixed", "patterns": "random", "N": 100, "P": 40, "degree": 10, "tau": 5, "lam": 2.5},
    "Fig. 4A: MixedNet d = 2 (too early)": {"model": "mixed", "patterns": "random", "N": 100, "P": 40, "degree": 2, "tau": 5, "lam": 2.5},
    "Digits: exponential DenseNet (P 200)": {"model": "exp", "patterns": "digits", "N": 64, "P": 200},
    "Digits: d = 2 fails, pseudoinverse recalls (P 40)": {"model": "pseudoinverse", "patterns": "digits", "N": 64, "P": 40, "degree": 2},
    "Biased ε = 0.7: pseudoinverse (N 100, P 50)": {"model": "pseudoinverse", "patterns": "biased", "N": 100, "P": 50, "degree": 3, "bias": 0.7},
}
IMG = 150
CAP_COLORS = {1: "#0072B2", 2: "#E69F00", 3: "#009E73", "exp": "#D55E00"}
EXP_SWEEP = tuple(range(6, 14))


def _image(flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.flipud(np.asarray(flat, dtype=np.float32).reshape(shape))  # row 0 at the top


class SeqMemView(TabView):
    """The Sequence memory tab (see module docstring)."""

    css_prefix = "pocoviz-sm"

    preset = param.Selector(default="(none)", objects=list(PRESETS))
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
    status = param.String(default="")

    def __init__(self, data_dir: str | None = None, **params: Any):
        super().__init__(**params)
        self._play_cb = None
        self._draw_pending = False
        self.rollout: Any = None
        self.capacity: list[dict[str, Any]] = []
        self.corr: dict[str, Any] = {}
        self.timing: dict[str, Any] = {}
        self._runner = LatestRunner(self._work, "pocoviz-seqmem")
        self._build_plots()
        self._status_pane = pn.pane.HTML("", css_classes=["pocoviz-sm-status"], width=260, styles={"font-size": "12px", "color": "#555"})
        self._readout = pn.pane.HTML("", css_classes=["pocoviz-sm-readout"], sizing_mode="stretch_width")
        self._progress = pn.indicators.Progress(value=0, max=100, width=240, visible=False, css_classes=["pocoviz-sm-progress"])
        self._play_button = pn.widgets.Button(label="▶ Play", width=80, css_classes=["pocoviz-sm-play"])
        self._play_button.on_click(lambda e: self.toggle_play())
        self._step_button = pn.widgets.Button(label="Step ›", width=70, css_classes=["pocoviz-sm-step"])
        self._step_button.on_click(lambda e: self.advance(1))
        self._reset_button = pn.widgets.Button(label="⟲ Reset", width=80, css_classes=["pocoviz-sm-reset"])
        self._reset_button.on_click(lambda e: setattr(self, "t", 0))
        self._runner.request("rollout", "capacity", "corr", "timing")

    # ------------------------------------------------------------------ settings
    @param.depends("preset", watch=True)
    def _on_preset(self) -> None:
        spec = PRESETS.get(self.preset)
        if spec:
            self.param.update(**{k: v for k, v in spec.items()})

    @param.depends("model", "degree", "patterns", "N", "P", "bias", "tau", "lam", "flip", "seed", watch=True)
    def _on_setting(self) -> None:
        if self.patterns == "digits" and self.N != 64:
            self.N = 64  # the digits are 8 × 8
            return
        self.t = 0
        self._runner.request("rollout")

    @param.depends("c", watch=True)
    def _on_c(self) -> None:
        self._on_loop(self._send_capacity)

    @param.depends("correlated", watch=True)
    def _on_correlated(self) -> None:
        self._runner.request("corr")

    @param.depends("t", watch=True)
    def _on_t(self) -> None:
        # callbacks run in Panel's thread pool: Bokeh models are edited on the session's loop
        if not self._draw_pending:
            self._draw_pending = True
            self._on_loop(self._draw_step)

    @param.depends("status", watch=True)
    def _show_status(self) -> None:
        self._status_pane.object = html.escape(self.status)

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

    # ------------------------------------------------------------------ background work
    def _work(self, what: set[str]) -> None:
        try:
            if "rollout" in what:
                self._compute_rollout()
            if "timing" in what:
                self._compute_timing()
            if "corr" in what:
                self._compute_corr()
            if "capacity" in what:
                self._compute_capacity()
        except Exception as exc:  # shown in the tab; the app keeps running
            self._on_loop(lambda exc=exc: setattr(self, "status", f"failed: {exc}"))

    def _compute_rollout(self) -> None:
        from pocoviz.seqmem import recall

        model, labels = self.build_model()
        steps = min(MAX_STEPS, int(model.P) * model.tau + model.tau)
        r = recall(model, steps, flip=min(int(self.flip), model.N // 2), seed=int(self.seed))
        info = {"model": model.describe(), "N": model.N, "P": model.P, "tau": model.tau, "labels": labels, "steps": steps, "X": model.X.cpu().numpy()}
        if hasattr(model, "rank"):
            info["rank"] = model.rank
        self._on_loop(lambda: self._apply_rollout(r, info))

    def _compute_timing(self) -> None:
        from pocoviz.seqmem import MixedNet, random_patterns, recall

        X = random_patterns(100, 20, seed=0)
        taus = np.arange(1, 9)
        out = {"tau": taus}
        for d in (1, 2, 10):
            dwell = []
            for tau in taus:
                runs = recall(MixedNet(X, d, lam=2.5, tau=int(tau)), 20 * int(tau)).visits()
                inner = [n for _, n in runs[1:-1]]
                dwell.append(float(np.mean(inner)) if inner else np.nan)
            out[d] = np.array(dwell)
        self._on_loop(lambda: self._apply_timing(out))

    def _compute_corr(self) -> None:
        from pocoviz.seqmem import digit_patterns, random_patterns, transitions_ok

        family = self.correlated
        kinds = [("plain", 1), ("plain", 2), ("plain", 3), ("pseudoinverse", 1), ("pseudoinverse", 2), ("pseudoinverse", 3)]
        if family == "biased":
            xs = np.round(np.linspace(0.0, 0.9, 10), 2)
            pats = [[random_patterns(100, 50, bias=float(e), seed=s) for s in range(3)] for e in xs]
        else:
            kinds = [("plain", 2), ("plain", 10), ("plain", 25), ("plain", "exp"), ("pseudoinverse", 2)]
            xs = np.array([10, 20, 30, 40, 60, 100, 200])
            pats = [[digit_patterns(int(p))[0]] for p in xs]
        rates = {}
        for kind, d in kinds:
            rates[(kind, d)] = np.array(
                [np.mean([float(transitions_ok(X, d, pseudoinverse=kind == "pseudoinverse").double().mean()) for X in group]) for group in pats]
            )
        self._on_loop(lambda: self._apply_corr({"family": family, "x": xs, "rates": rates}))

    def _compute_capacity(self) -> None:
        from pocoviz.seqmem import capacity_estimate
        from pocoviz.seqmem.bench import SWEEP

        jobs = [(d, N) for d, Ns in SWEEP for N in Ns] + [("exp", N) for N in EXP_SWEEP]
        out = []
        for i, (d, N) in enumerate(jobs):
            if self._runner.pending("capacity"):
                return
            out.append(capacity_estimate(N, d, n_seq=8))
            frac = (i + 1) / len(jobs)
            self._on_loop(lambda frac=frac: self._set_progress(frac))
            if i % 6 == 5 or i == len(jobs) - 1:
                snapshot = list(out)
                self._on_loop(lambda snapshot=snapshot: self._apply_capacity(snapshot))

    # ------------------------------------------------------------------ playback
    def toggle_play(self) -> None:
        if self._play_cb is not None:
            self._stop_play()
            return
        if self.rollout is not None and self.t >= len(self.rollout.errors) - 1:
            self.t = 0
        self._play_button.label = "⏸ Pause"
        self._play_cb = pn.state.add_periodic_callback(lambda: self._on_loop(lambda: self.advance(1)), period=int(1000 / self.speed))

    def _stop_play(self) -> None:
        if self._play_cb is not None:
            self._play_cb.stop()
            self._play_cb = None
        self._play_button.label = "▶ Play"

    @param.depends("speed", watch=True)
    def _on_speed(self) -> None:
        if self._play_cb is not None:
            self._play_cb.period = int(1000 / self.speed)

    def advance(self, n: int = 1) -> None:
        if self.rollout is None:
            return
        last = len(self.rollout.errors) - 1
        self.t = min(last, self.t + n)
        if self.t >= last:
            self._stop_play()

    def close(self, timeout: float = 60.0) -> None:
        self._stop_play()
        self._runner.close(timeout)

    # ------------------------------------------------------------------ drawing
    def _set_progress(self, frac: float) -> None:
        self._progress.visible = frac < 1
        self._progress.value = int(round(100 * frac))
        self.status = "" if frac >= 1 else f"capacity simulation: {self._progress.value}%"

    def _apply_rollout(self, r: Any, info: dict[str, Any]) -> None:
        from pocoviz.seqmem import image_shape

        self.rollout, self._info = r, info
        self._shape = (8, 8) if info["labels"] is not None else image_shape(info["N"])
        T, P = len(r.errors), info["P"]
        self._heat_fig.x_range.start, self._heat_fig.x_range.end = -0.5, T - 0.5
        self._heat_fig.y_range.start, self._heat_fig.y_range.end = 0.5, P + 0.5
        self._err_fig.x_range.start, self._err_fig.x_range.end = -0.5, T - 0.5
        self._err_fig.y_range.start, self._err_fig.y_range.end = -0.5, max(2.0, float(r.errors.max()) * 1.1)
        self._heat_fig.title.text = f"overlap m^μ(t) = ξ^μ·S(t)/N with each of the {P} stored patterns"
        rows, cols = self._shape
        for f in self._img_figs:
            f.x_range.start, f.x_range.end, f.y_range.start, f.y_range.end = 0, cols, 0, rows
        self.param.t.bounds = (0, T - 1)  # the step slider spans this rollout
        self.t = min(self.t, T - 1)
        self._draw_step()

    def _draw_step(self) -> None:
        self._draw_pending = False
        r = self.rollout
        if r is None:
            return
        t = int(min(self.t, len(r.errors) - 1))
        rows, cols = self._shape
        target_idx = int(r.target[t])
        target = self._info["X"][target_idx]
        state = r.states[t]
        err = (state != target).astype(np.float32)
        for src, img in zip(self._img_sources, (target, state, err)):
            src.data = {"image": [_image(img, (rows, cols))], "x": [0], "y": [0], "dw": [cols], "dh": [rows]}
        heat = np.full((r.overlaps.shape[1], len(r.errors)), np.nan, dtype=np.float32)
        heat[:, : t + 1] = r.overlaps[: t + 1].T
        self._heat_source.data = {"image": [heat], "x": [-0.5], "y": [0.5], "dw": [len(r.errors)], "dh": [heat.shape[0]], "what": ["overlaps"]}
        self._err_source.data = {"t": np.arange(t + 1), "errors": r.errors[: t + 1]}
        self._cursor.location = t
        info = self._info
        first = r.first_error
        label = ""
        if info["labels"] is not None:
            label = f" (digit {int(info['labels'][target_idx])})"
        near = int(r.nearest[t])
        self._readout.object = (
            f"<b>{html.escape(info['model'])}</b>, N = {info['N']}, P = {info['P']}"
            + (f", rank O = {info['rank']}" if "rank" in info else "")
            + f" &nbsp;|&nbsp; step <b>{t}</b> / {len(r.errors) - 1}: target ξ<sup>{target_idx + 1}</sup>{label}, "
            f"<b>{int(r.errors[t])}</b> bit errors, nearest stored pattern ξ<sup>{near + 1}</sup> (m = {r.overlaps[t, near]:.2f}) &nbsp;|&nbsp; "
            + (
                "<span style='color:#1a7f37;font-weight:600'>recall perfect so far</span>"
                if first is None or first > t
                else f"<span style='color:#b35900;font-weight:600'>first error at step {first}</span>"
            )
        )

    def _apply_timing(self, out: dict[str, Any]) -> None:
        self.timing = out
        self._timing_source.data = {
            "xs": [out["tau"]] * 3, "ys": [out[1], out[2], out[10]], "color": ["#999999", "#E69F00", "#0072B2"],
            "label": ["d = 1 (TAN)", "d = 2", "d = 10"],
        }  # fmt: skip

    def _apply_corr(self, res: dict[str, Any]) -> None:
        self.corr = res
        xs, ys, colors, labels, dashes = [], [], [], [], []
        for i, ((kind, d), rate) in enumerate(res["rates"].items()):
            xs.append(res["x"])
            ys.append(rate)
            colors.append(REGION_PALETTE[i % len(REGION_PALETTE)] if kind == "plain" else ["#000000", "#555555", "#999999"][i % 3])
            labels.append(f"{kind} {'exp' if d == 'exp' else f'd = {d}'}")
            dashes.append("solid" if kind == "plain" else "dashed")
        self._corr_source.data = {"xs": xs, "ys": ys, "color": colors, "label": labels, "dash": dashes}
        self._corr_fig.xaxis.axis_label = "bias ε (N = 100, P = 50)" if res["family"] == "biased" else "sequence length P (digits, N = 64)"
        self._corr_fig.title.text = "exact transitions: plain rule vs pseudoinverse" + (" (biased random)" if res["family"] == "biased" else " (digits)")

    def _apply_capacity(self, estimates: list[dict[str, Any]]) -> None:
        self.capacity = estimates
        self._send_capacity()

    def _send_capacity(self) -> None:
        from pocoviz.seqmem.capacity import _crossing

        c = float(self.c)
        rows = {"N": [], "P": [], "color": [], "which": []}
        for e in self.capacity:
            for which, rate in (("P_T", e["trans_ok"]), ("P_S", e["seq_ok"])):
                p = _crossing(e["grid"], rate, 1 - c)
                if p > 0:
                    rows["N"].append(e["N"])
                    rows["P"].append(p)
                    rows["color"].append(CAP_COLORS[e["degree"]])
                    rows["which"].append(which)
        mask_t = np.array(rows["which"]) == "P_T"
        for src, m in ((self._cap_t_source, mask_t), (self._cap_s_source, ~mask_t)):
            src.data = {k: list(np.asarray(v)[m]) if len(v) else [] for k, v in rows.items()}
        self._cap_fig.title.text = f"capacity vs N: theory (lines) and simulation at success ≥ {1 - c:.2f} (markers)"

    def _build_plots(self) -> None:
        from pocoviz.seqmem import capacity_theory

        tools = "pan,wheel_zoom,box_zoom,reset,save"
        cmap = LinearColorMapper(palette=["#ffffff", "#1f1f1f"], low=-1, high=1)
        emap = LinearColorMapper(palette=["#ffffff", "#d62728"], low=0, high=1)
        self._img_figs, self._img_sources = [], []
        for title, mapper, cls in (("stored target", cmap, "target"), ("current state", cmap, "state"), ("difference", emap, "diff")):
            f = figure(width=IMG, height=IMG + 25, title=title, toolbar_location=None, x_range=(0, 8), y_range=(0, 8), css_classes=[f"pocoviz-sm-{cls}"])
            f.axis.visible = False
            f.grid.visible = False
            src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
            f.image("image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=mapper)
            self._img_figs.append(f)
            self._img_sources.append(src)
        heat_map = LinearColorMapper(palette="RdBu11", low=-1, high=1, nan_color="#f4f4f4")
        self._heat_fig = figure(
            height=260, title="overlaps", x_axis_label="step t", y_axis_label="stored pattern μ", tools=tools, sizing_mode="stretch_width",
            x_range=(0, 1), y_range=(0, 1), css_classes=["pocoviz-sm-heat"],
        )  # fmt: skip
        self._heat_source = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": [], "what": []})
        self._heat_fig.image("image", x="x", y="y", dw="dw", dh="dh", source=self._heat_source, color_mapper=heat_map)
        self._cursor = Span(location=0, dimension="height", line_color="#000000", line_width=1, line_alpha=0.5)
        self._heat_fig.add_layout(self._cursor)
        self._err_fig = figure(
            height=150, title="bit errors vs the target", x_axis_label="step t", y_axis_label="errors", tools=tools, sizing_mode="stretch_width",
            x_range=(0, 1), y_range=(0, 1), css_classes=["pocoviz-sm-errors"],
        )  # fmt: skip
        self._err_source = ColumnDataSource({"t": [], "errors": []})
        self._err_fig.step("t", "errors", source=self._err_source, color="#d62728", line_width=2, mode="center")
        # capacity
        self._cap_fig = figure(
            width=620,
            height=360,
            title="capacity vs N",
            x_axis_label="N (neurons)",
            y_axis_label="patterns P",
            y_axis_type="log",
            tools=tools,
            css_classes=["pocoviz-sm-capacity"],
        )
        for d, Ns in ((1, np.arange(10, 101)), (2, np.arange(10, 101)), (3, np.arange(10, 41)), ("exp", np.arange(6, 21))):
            th = capacity_theory("dense", Ns, d)
            name = "exp" if d == "exp" else f"d = {d}"
            self._cap_fig.line(Ns, th["P_T"], color=CAP_COLORS[d], line_width=2, legend_label=f"{name}: P_T")
            self._cap_fig.line(Ns, th["P_S"], color=CAP_COLORS[d], line_width=2, line_dash="dashed", legend_label=f"{name}: P_S")
        self._cap_t_source = ColumnDataSource({"N": [], "P": [], "color": [], "which": []})
        self._cap_s_source = ColumnDataSource({"N": [], "P": [], "color": [], "which": []})
        self._cap_fig.scatter("N", "P", source=self._cap_t_source, color="color", size=7, legend_label="simulated P_T")
        self._cap_fig.scatter("N", "P", source=self._cap_s_source, color="color", size=8, marker="triangle", fill_alpha=0.3, legend_label="simulated P_S")
        self._cap_fig.legend.label_text_font_size = "10px"
        self._cap_fig.add_layout(self._cap_fig.legend[0], "right")  # outside: the markers stay visible
        # correlated patterns
        self._corr_fig = figure(
            width=440,
            height=360,
            title="exact transitions",
            x_axis_label="",
            y_axis_label="fraction of exact transitions",
            tools=tools,
            y_range=(-0.03, 1.05),
            css_classes=["pocoviz-sm-correlated"],
        )
        self._corr_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": [], "dash": []})
        self._corr_fig.multi_line("xs", "ys", source=self._corr_source, color="color", line_dash="dash", line_width=2, legend_field="label")
        self._corr_fig.legend.location = "bottom_left"
        self._corr_fig.legend.label_text_font_size = "10px"
        # MixedNet timing
        self._timing_fig = figure(
            width=400,
            height=360,
            title="MixedNet: dwell per pattern vs τ (N 100, P 20, λ 2.5)",
            x_axis_label="τ (steps per pattern)",
            y_axis_label="mean dwell (steps)",
            tools=tools,
            css_classes=["pocoviz-sm-timing"],
        )
        self._timing_fig.line([1, 8], [1, 8], color="#bbbbbb", line_dash="dotted", legend_label="dwell = τ")
        self._timing_source = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        self._timing_fig.multi_line("xs", "ys", source=self._timing_source, color="color", line_width=2.5, legend_field="label")
        self._timing_fig.legend.location = "top_left"
        self._timing_fig.legend.label_text_font_size = "10px"

    def _build_layout(self) -> pn.viewable.Viewable:
        controls = pn.Column(
            self._widget("preset", pn.widgets.Select, "Preset (the paper's figures)"),
            self._widget("model", pn.widgets.Select, "Model"),
            self._widget("patterns", pn.widgets.Select, "Patterns"),
            self._widget("degree", pn.widgets.IntInput, "d (degree)"),
            self._widget("N", pn.widgets.Select, "N (neurons)"),
            self._widget("P", pn.widgets.IntInput, "P (sequence length)"),
            self._widget("bias", pn.widgets.FloatInput, "ε (bias, biased patterns)", step=0.05),
            pn.Row(self._widget("tau", pn.widgets.IntInput, "τ (MixedNet)", width=120), self._widget("lam", pn.widgets.FloatInput, "λ (MixedNet)", width=120, step=0.1)),
            pn.Row(self._widget("flip", pn.widgets.IntInput, "cue bits flipped", width=120), self._widget("seed", pn.widgets.IntInput, "seed", width=120)),
            pn.pane.Markdown("**Playback**", margin=(5, 10, 0, 10)),
            pn.Row(self._play_button, self._step_button, self._reset_button),
            self._widget("t", pn.widgets.IntSlider, "step"),
            self._widget("speed", pn.widgets.IntSlider, "speed (steps/s)"),
            pn.pane.Markdown("**Capacity**", margin=(5, 10, 0, 10)),
            self._widget("c", pn.widgets.FloatSlider, "tolerance c (success ≥ 1 − c)", step=0.05),
            self._widget("correlated", pn.widgets.RadioButtonGroup, "Correlated patterns"),
            self._progress,
            self._status_pane,
            width=280,
        )
        explain = pn.pane.Markdown(
            "Synchronous recall from ξ¹; the state should step through ξ¹ → ξ² → … (τ steps each for MixedNet). "
            "Polynomial DenseNets store ~N^d/(2(2d−1)!! log N) transitions, the exponential one ~β^(N−1)/(2 log N) with "
            "β = e²/cosh 2 ≈ 1.964 (Chaudhry, Zavatone-Veth, Krotov & Pehlevan, *Long Sequence Hopfield Memory*, NeurIPS 2023). "
            "Capacity markers: largest P whose success rate over 8 random sequences is ≥ 1 − c.",
            css_classes=["pocoviz-sm-explain"], sizing_mode="stretch_width", styles={"font-size": "12px"},
        )  # fmt: skip
        images = pn.Row(*[pn.pane.Bokeh(f, width=IMG + 10, height=IMG + 35) for f in self._img_figs])
        plots = pn.Column(
            self._readout,
            images,
            pn.pane.Bokeh(self._heat_fig, sizing_mode="stretch_width", height=270),
            pn.pane.Bokeh(self._err_fig, sizing_mode="stretch_width", height=160),
            pn.Row(pn.pane.Bokeh(self._cap_fig, width=630, height=370), pn.pane.Bokeh(self._corr_fig, width=450, height=370)),
            pn.Row(pn.pane.Bokeh(self._timing_fig, width=410, height=370), explain),
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, plots, sizing_mode="stretch_width", css_classes=["pocoviz-seqmem"])

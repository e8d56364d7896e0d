"""A synthetic whole-brain recording at ZAPBench's size (``pocoviz synth``), written chunk by chunk.

The brain is a larval-zebrafish-like ellipsoid (about 450 µm wide, 900 µm long, 250 µm deep)
holding 60 anatomically placed regions (bilateral pairs and midline nuclei from the olfactory
bulb to the anterior spinal cord). Each unit has a 3-D position in its region and:

- a drive from brain-wide latent modes (8 damped oscillators and a sparse "bout" mode) and from
  its region's own three latent modes (damped oscillators that the brain-wide modes push), so
  units of a region are correlated and regions are coupled;
- a soft-plus rate, sparse events (about 1 in 500 frames per unit), a calcium-like exponential
  decay (τ = 2 s), a per-unit gain, and Gaussian noise; values are dF/F-like.

Everything is exactly determined by the seed: the latents and per-unit parameters come from
``(seed, purpose)`` streams and the noise and events of each stored chunk (256 frames × 4096 units)
from ``(seed, chunk row, chunk column)``, so the values do not depend on the memory cap (which only
sets how many chunk columns are computed at once). Units are stored grouped by region (stable sort
by region name, then by id); ids number the units plane by plane, as a segmentation would.

Never imports panel, holoviews or bokeh.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .chunked import MIN_MEMORY_CAP, check_dest, create_store, finish_store, remove_partial, temp_path
from .pyramid import CHUNKS, DEFAULT_MEMORY_CAP, PyramidWriter, n_levels
from .schema import RecordingError

ZAPBENCH_UNITS = 71_721
ZAPBENCH_FRAMES = 7_879
GENERATOR_VERSION = 1

#: Ellipsoid semi-axes (x: left-right, y: rostral-caudal, z: dorsal-ventral), µm; the centre is at the semi-axes.
SEMI_AXES = np.array([225.0, 450.0, 125.0])
N_GLOBAL = 8
N_REGION_MODES = 3
CALCIUM_TAU_S = 2.0
EVENT_PROB = 0.002
NOISE_SD = 0.08

# name, (lateral, rostro-caudal, dorso-ventral) in units of the semi-axes (lateral > 0 → an L/R pair), spread, weight
_REGIONS: tuple[tuple[str, tuple[float, float, float], float, float], ...] = (
    ("olfactory_bulb", (0.25, -0.88, 0.15), 0.07, 0.6),
    ("pallium", (0.25, -0.68, -0.25), 0.10, 2.5),
    ("subpallium", (0.18, -0.62, 0.15), 0.08, 1.5),
    ("habenula", (0.18, -0.45, -0.55), 0.05, 0.8),
    ("preoptic_area", (0.0, -0.50, 0.45), 0.07, 1.0),
    ("thalamus", (0.15, -0.35, 0.0), 0.08, 1.6),
    ("pretectum", (0.35, -0.30, -0.20), 0.08, 1.8),
    ("hypothalamus_rostral", (0.0, -0.30, 0.70), 0.08, 1.4),
    ("hypothalamus_caudal", (0.15, -0.12, 0.75), 0.08, 1.4),
    ("optic_tectum", (0.55, -0.10, -0.45), 0.16, 9.0),
    ("torus_longitudinalis", (0.08, -0.15, -0.70), 0.05, 0.6),
    ("torus_semicircularis", (0.40, 0.02, 0.05), 0.07, 1.4),
    ("tegmentum", (0.15, 0.00, 0.35), 0.09, 2.5),
    ("nucleus_mlf", (0.06, -0.12, 0.15), 0.03, 0.3),
    ("oculomotor_nucleus", (0.08, -0.02, 0.25), 0.03, 0.4),
    ("cerebellum", (0.35, 0.15, -0.55), 0.10, 4.0),
    ("eminentia_granularis", (0.55, 0.20, -0.35), 0.05, 0.8),
    ("locus_coeruleus", (0.10, 0.16, 0.10), 0.03, 0.2),
    ("raphe_superior", (0.0, 0.12, 0.55), 0.04, 0.5),
    ("rhombomere_1", (0.25, 0.22, 0.20), 0.07, 1.8),
    ("rhombomere_2", (0.25, 0.32, 0.20), 0.06, 1.6),
    ("rhombomere_3", (0.25, 0.41, 0.20), 0.06, 1.6),
    ("rhombomere_4", (0.25, 0.50, 0.20), 0.06, 1.6),
    ("rhombomere_5", (0.25, 0.59, 0.20), 0.06, 1.6),
    ("rhombomere_6", (0.25, 0.68, 0.20), 0.06, 1.6),
    ("rhombomere_7", (0.22, 0.78, 0.20), 0.06, 1.8),
    ("octavolateral_nucleus", (0.45, 0.55, -0.15), 0.07, 1.5),
    ("area_postrema", (0.10, 0.84, -0.45), 0.05, 0.5),
    ("inferior_olive", (0.08, 0.86, 0.65), 0.04, 0.5),
    ("vagal_motor_nucleus", (0.18, 0.88, 0.10), 0.05, 0.8),
    ("spinal_cord", (0.10, 0.96, 0.20), 0.04, 0.8),
    ("interpeduncular_nucleus", (0.0, 0.05, 0.65), 0.04, 0.4),
)
#: A few labelled units: (label, region, which end of the region along y: nearest to this y).
_LABELS = (("Mauthner", "rhombomere_4", 0.50), ("MiD2cm", "rhombomere_5", 0.59), ("MiD3cm", "rhombomere_6", 0.68))


def region_table() -> list[dict[str, Any]]:
    """The regions: name, centre (µm), spread (µm, per axis) and relative weight (unit share)."""
    out = []
    for name, (lat, rc, dv), spread, weight in _REGIONS:
        sides = (("_L", -1.0), ("_R", 1.0)) if lat > 0 else (("", 0.0),)
        for suffix, sign in sides:
            centre = SEMI_AXES + SEMI_AXES * np.array([sign * lat, rc, dv])
            out.append({"name": name + suffix, "centre": centre, "spread": SEMI_AXES * spread, "weight": weight})
    return out


def _streams(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), GENERATOR_VERSION, *key])


@dataclass
class WholeBrainModel:
    """The generator's state for one seed and size (everything but the per-chunk noise)."""

    seed: int
    n_units: int
    n_frames: int
    rate_hz: float
    region: np.ndarray  # (U,) object, stored order
    unit: np.ndarray  # (U,) int64 ids
    label: np.ndarray  # (U,) object
    pos: np.ndarray  # (U, 3) float32 µm
    region_index: np.ndarray  # (U,) int, into region_names
    region_names: list[str]
    latents_global: np.ndarray  # (T, G) float32
    latents_region: np.ndarray  # (T, R, k) float32
    w_global: np.ndarray  # (U, G) float32
    w_region: np.ndarray  # (U, k) float32
    bias: np.ndarray  # (U,) float32
    gain: np.ndarray  # (U,) float32

    @property
    def decay(self) -> float:
        return float(np.exp(-1.0 / (CALCIUM_TAU_S * self.rate_hz)))


def _damped_oscillators(rng: np.random.Generator, n_frames: int, n: int, rate_hz: float, drive: np.ndarray | None = None,
                        drive_weights: np.ndarray | None = None) -> np.ndarray:
    """``n`` noise-driven damped oscillators (periods 8–120 s), unit variance, optionally pushed by ``drive``."""
    period_s = np.exp(rng.uniform(np.log(8.0), np.log(120.0), n))
    omega = 2 * np.pi / (period_s * rate_hz)
    r = np.exp(-1.0 / (rng.uniform(5.0, 40.0, n) * rate_hz))
    a1, a2 = 2 * r * np.cos(omega), -(r**2)
    eps = rng.standard_normal((n_frames, n))
    push = drive @ drive_weights if drive is not None else 0.0
    out = np.zeros((n_frames, n))
    prev1 = np.zeros(n)
    prev2 = np.zeros(n)
    for t in range(n_frames):
        cur = a1 * prev1 + a2 * prev2 + eps[t] + (push[t] if drive is not None else 0.0)
        out[t] = cur
        prev2, prev1 = prev1, cur
    out -= out.mean(axis=0)
    out /= out.std(axis=0) + 1e-9
    return out


def make_model(n_units: int = ZAPBENCH_UNITS, n_frames: int = ZAPBENCH_FRAMES, *, seed: int = 0, rate_hz: float = 1.0) -> WholeBrainModel:
    """Regions, positions, ids, latents and per-unit parameters for one seed (small: ~U·16 floats)."""
    if n_units < 1 or n_frames < 2:
        raise RecordingError(f"needs at least 1 unit and 2 frames, got {n_units} × {n_frames}", field="shape")
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise RecordingError(f"must be positive, got {rate_hz}", field="sampling_rate_hz")
    table = region_table()
    names = [r["name"] for r in table]
    weights = np.array([r["weight"] for r in table])
    rng = _streams(seed, 0)
    counts = rng.multinomial(n_units, weights / weights.sum())
    # positions, region by region, inside the ellipsoid
    prng = _streams(seed, 1)
    pos = np.empty((n_units, 3))
    reg_idx = np.repeat(np.arange(len(table)), counts)
    start = 0
    for i, r in enumerate(table):
        n = counts[i]
        p = r["centre"] + prng.standard_normal((n, 3)) * r["spread"]
        q = (p - SEMI_AXES) / SEMI_AXES
        norm = np.sqrt((q**2).sum(axis=1))
        outside = norm > 0.98
        q[outside] *= (0.98 / norm[outside])[:, None]
        pos[start : start + n] = SEMI_AXES + q * SEMI_AXES
        start += n
    # ids: plane by plane (5 µm planes, dorsal first), then rostral to caudal, then left to right
    order = np.lexsort((pos[:, 0], pos[:, 1], np.floor(pos[:, 2] / 5.0)))
    ids = np.empty(n_units, dtype=np.int64)
    ids[order] = np.arange(n_units)
    # stored order: stable by region name, then by id
    region_names = np.array(names, dtype=object)[reg_idx]
    stored = np.lexsort((ids, region_names.astype(str)))
    reg_idx, pos, ids = reg_idx[stored], pos[stored], ids[stored]
    region = np.array(names, dtype=object)[reg_idx]
    label = np.full(n_units, "", dtype=object)
    for name, reg, _y in _LABELS:
        for side in ("_L", "_R"):
            members = np.flatnonzero(region == reg + side)
            if len(members):
                centre = table[names.index(reg + side)]["centre"]
                pick = members[np.argmin(((pos[members] - centre) ** 2).sum(axis=1))]
                label[pick] = name + side
    # latents: brain-wide modes (one of them a sparse "bout" train), then each region's modes
    lrng = _streams(seed, 2)
    g = _damped_oscillators(lrng, n_frames, N_GLOBAL - 1, rate_hz)
    bouts = (lrng.random(n_frames) < min(0.5, 0.02 / rate_hz)).astype(float)  # one bout per ~50 s
    kernel = np.exp(-np.arange(int(6 * rate_hz) + 1) / (2.0 * rate_hz))
    bout = np.convolve(bouts, kernel)[:n_frames]
    bout = (bout - bout.mean()) / (bout.std() + 1e-9)
    g = np.concatenate([g, bout[:, None]], axis=1)
    n_reg = len(table)
    push = lrng.standard_normal((N_GLOBAL, n_reg * N_REGION_MODES)) * 0.15
    z = _damped_oscillators(lrng, n_frames, n_reg * N_REGION_MODES, rate_hz, drive=g, drive_weights=push)
    z = z.reshape(n_frames, n_reg, N_REGION_MODES)
    # per-unit parameters: regions share a pattern of brain-wide coupling
    urng = _streams(seed, 3)
    region_coupling = urng.standard_normal((n_reg, N_GLOBAL)) * 0.5
    w_global = region_coupling[reg_idx] + urng.standard_normal((n_units, N_GLOBAL)) * 0.2
    w_region = urng.standard_normal((n_units, N_REGION_MODES)) * 0.8
    bias = urng.normal(-1.0, 0.5, n_units)
    gain = np.exp(urng.normal(-1.0, 0.4, n_units))
    return WholeBrainModel(
        seed=int(seed), n_units=int(n_units), n_frames=int(n_frames), rate_hz=float(rate_hz),
        region=region, unit=ids, label=label, pos=pos.astype(np.float32), region_index=reg_idx, region_names=names,
        latents_global=g.astype(np.float32), latents_region=z.astype(np.float32),
        w_global=w_global.astype(np.float32), w_region=w_region.astype(np.float32),
        bias=bias.astype(np.float32), gain=gain.astype(np.float32),
    )


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.float32(0), x)


def chunk_values(model: WholeBrainModel, row: int, col: int, state: np.ndarray) -> np.ndarray:
    """Values of stored chunk (``row``, ``col``) (frames row·256…, units col·4096…).

    ``state`` is the calcium of those units at the chunk's previous frame (updated in place): the
    chunks of one column must be computed in time order.
    """
    t0, t1 = row * CHUNKS[0], min((row + 1) * CHUNKS[0], model.n_frames)
    u0, u1 = col * CHUNKS[1], min((col + 1) * CHUNKS[1], model.n_units)
    n_t, n_u = t1 - t0, u1 - u0
    drive = model.latents_global[t0:t1] @ model.w_global[u0:u1].T  # (n_t, n_u)
    ridx = model.region_index[u0:u1]
    for r in np.unique(ridx):
        sel = np.flatnonzero(ridx == r)
        lo, hi = sel[0], sel[-1] + 1  # units are grouped by region: one contiguous band
        drive[:, lo:hi] += model.latents_region[t0:t1, r] @ model.w_region[u0 + lo : u0 + hi].T
    drive += model.bias[u0:u1]
    rate = _softplus(drive)
    rng = _streams(model.seed, 4, row, col)
    n_events = rng.binomial(n_t * n_u, EVENT_PROB)
    flat = rng.integers(0, n_t * n_u, n_events)
    np.add.at(rate.reshape(-1), flat, rng.exponential(3.0, n_events).astype(np.float32))
    a = np.float32(model.decay)
    calcium = rate  # filtered in place, frame by frame
    prev = state
    for t in range(n_t):
        calcium[t] += a * prev
        prev = calcium[t]
    state[:] = prev
    out = calcium * ((1 - a) * model.gain[u0:u1])
    out += rng.standard_normal((n_t, n_u), dtype=np.float32) * np.float32(NOISE_SD)
    return out


def synth_attrs(seed: int, rate_hz: float) -> dict[str, Any]:
    text = f"synthetic, pocoviz synth, seed {int(seed)}"
    return {
        "species": "larval zebrafish (Danio rerio), synthetic",
        "session": f"synthetic-wholebrain-seed{int(seed)}",
        "sampling_rate_hz": float(rate_hz),
        "source": text,
        "citation": text,
        "synthetic": text,
        "synth_seed": int(seed),
        "synth_version": GENERATOR_VERSION,
        "pocoviz_layout": "chunked-1",
        "unit_order": "region",
    }


def write_wholebrain(
    dest: str | os.PathLike,
    *,
    units: int = ZAPBENCH_UNITS,
    frames: int = ZAPBENCH_FRAMES,
    seed: int = 0,
    rate_hz: float = 1.0,
    memory_cap_bytes: int = DEFAULT_MEMORY_CAP,
    overwrite: bool = False,
    pyramid: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Write a synthetic whole-brain recording to ``dest`` (a ``.zarr`` store, docs/wholebrain.md).

    Parameters
    ----------
    dest
        The store to write (atomically: built in ``DEST.tmp-<pid>`` then renamed).
    units, frames, seed, rate_hz
        Size, seed and frame rate. The values depend on these only.
    memory_cap_bytes
        Working memory for the chunk columns computed at once (at least 32 MiB).
    overwrite
        Replace an existing ``dest``.
    pyramid
        Also write the pyramid.
    progress
        Called as ``progress(done_frames, frames)`` after each time slab.

    Returns
    -------
    dict
        ``{"path", "units", "frames", "seed", "seconds", "pyramid_levels"}``.
    """
    started = _time.perf_counter()
    if memory_cap_bytes < MIN_MEMORY_CAP:
        raise RecordingError(f"memory cap of {memory_cap_bytes} bytes is below the minimum {MIN_MEMORY_CAP}", field="memory_cap")
    d = check_dest(dest, overwrite=overwrite)
    model = make_model(units, frames, seed=seed, rate_hz=rate_hz)
    tmp = temp_path(d)
    remove_partial(tmp)
    try:
        coords = {"unit": model.unit, "region": model.region, "label": model.label,
                  "x": model.pos[:, 0], "y": model.pos[:, 1], "z": model.pos[:, 2]}
        root = create_store(
            tmp, n_time=frames, time=np.arange(frames, dtype=np.float64) / rate_hz, unit_coords=coords,
            attrs=synth_attrs(seed, rate_hz), activity_attrs={"units": "dF/F"},
        )
        act = root["activity"]
        levels = n_levels((frames, units)) if pyramid else 0
        inline = pyramid and CHUNKS[0] % (4**levels) == 0 and CHUNKS[1] % (4**levels) == 0
        writer = PyramidWriter(root, (frames, units), levels=levels) if inline else None
        n_cols = -(-units // CHUNKS[1])
        # chunk columns computed at once: 256 frames × cols·4096 units, ~24 bytes per value in flight
        per_col = CHUNKS[0] * CHUNKS[1] * 24
        cols_at_once = int(max(1, min(n_cols, memory_cap_bytes // per_col)))
        states = np.zeros(units, dtype=np.float32)
        for row in range(-(-frames // CHUNKS[0])):
            t0, t1 = row * CHUNKS[0], min((row + 1) * CHUNKS[0], frames)
            for c0 in range(0, n_cols, cols_at_once):
                c1 = min(n_cols, c0 + cols_at_once)
                u0, u1 = c0 * CHUNKS[1], min(c1 * CHUNKS[1], units)
                slab = np.empty((t1 - t0, u1 - u0), dtype=np.float32)
                for col in range(c0, c1):
                    a0, a1 = col * CHUNKS[1], min((col + 1) * CHUNKS[1], units)
                    slab[:, a0 - u0 : a1 - u0] = chunk_values(model, row, col, states[a0:a1])
                act[t0:t1, u0:u1] = slab
                if writer is not None:
                    writer.add(slab, t0, u0)
                del slab
            if progress is not None:
                progress(t1, frames)
        if writer is not None:
            writer.close()
        elif pyramid:
            from .pyramid import build_pyramid

            build_pyramid(root, memory_cap_bytes=memory_cap_bytes, levels=levels)
        finish_store(tmp, d, overwrite=overwrite)
    except BaseException:
        remove_partial(tmp)
        raise
    return {
        "path": str(d), "units": int(units), "frames": int(frames), "seed": int(seed),
        "seconds": round(_time.perf_counter() - started, 2), "pyramid_levels": levels,
    }


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def bench_synth(dest: str | os.PathLike, units: int = ZAPBENCH_UNITS, frames: int = ZAPBENCH_FRAMES, seed: int = 0,
                memory_cap: str = "1GB") -> dict[str, Any]:
    """Time ``pocoviz synth`` in a child process: seconds, the child's peak RSS, bytes on disk.

    ``dest`` is overwritten. Returns a JSON-able dict.
    """
    cmd = [sys.executable, "-m", "pocoviz.cli", "synth", str(dest), "--units", str(units), "--frames", str(frames),
           "--seed", str(seed), "--memory-cap", str(memory_cap), "--overwrite"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = _time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = _time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out: dict[str, Any] = {
        "units": int(units), "frames": int(frames), "seed": int(seed), "memory_cap": str(memory_cap),
        "seconds": round(seconds, 2), "returncode": proc.returncode,
        # RUSAGE_CHILDREN holds the largest child so far: exact when this is the largest child of the process
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_rss_exact": peak_kb > before,
        "bytes_on_disk": dir_bytes(dest) if Path(dest).exists() else 0,
        "activity_bytes": int(units) * int(frames) * 4,
    }
    if proc.returncode != 0:
        out["error"] = (proc.stderr or proc.stdout)[-2000:]
    return out

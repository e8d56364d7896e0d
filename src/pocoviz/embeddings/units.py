"""The unit embeddings of a trained forecaster as a labelled table (spec ``poco.md`` §6: the raw rows
of POCO's unit-embedding table, without the session and dataset terms).

Examples
--------
>>> from pocoviz.forecast import SessionInfo, build_model
>>> model = build_model("POCO", [SessionInfo("worm/a", 3, "worm", labels=("AVAL", "", "RIML"))], dim=8, hidden=8, self_heads=1, dim_head=8)
>>> emb = unit_embeddings(model)
>>> emb["embedding"].dims, emb["label"].values.tolist()
(('unit', 'dim'), ['AVAL', '', 'RIML'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..recordings.schema import label_duplicate_mask

#: per-unit coordinates copied from a session's recording when it is given
UNIT_COORDS = ("region", "label", "neuron_class", "x", "y", "z")


def unit_embeddings(
    model: Any, sessions: Sequence[str] | None = None, *, recordings: Mapping[str, xr.Dataset] | None = None
) -> xr.Dataset:
    """Unit-embedding rows of ``model`` for ``sessions`` (default: all it knows), concatenated.

    Parameters
    ----------
    model
        A forecaster with a ``unit_emb`` table (POCO and its ablations).
    sessions
        Session names as the model knows them.
    recordings
        ``{session name: recording}``: per-unit ``region``, ``label``, ``neuron_class`` and
        positions ``x``/``y``/``z`` are taken from it (the unit counts must agree).

    Returns
    -------
    xarray.Dataset
        ``embedding`` (unit, dim) float32; coords per unit: ``session``, ``dataset``,
        ``unit_index`` (position within its session), ``label`` (from the model's session labels
        or the recording), ``label_duplicate`` (bool: another unit of the same session carries
        the same non-empty label, as when a NeuroPAL table names one neuron twice; such units
        keep their label), ``region`` ("" when unknown) and, where the recordings have them,
        ``neuron_class``, ``x``, ``y``, ``z`` (NaN elsewhere).
    """
    table = getattr(model, "unit_emb", None)
    if table is None:
        raise TypeError(f"a {getattr(model, 'kind', type(model).__name__)} model has no unit embeddings (POCO, POYO and UICO do)")
    known = {s.name: i for i, s in enumerate(model.sessions)}
    names = list(sessions) if sessions is not None else list(known)
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"sessions not known to the model: {missing} (known: {list(known)[:8]})")
    if not names:
        raise ValueError("no sessions given")
    weights = table.weight.detach().to("cpu", dtype=table.weight.dtype).float().numpy()
    recordings = recordings or {}
    rows, cols = [], {c: [] for c in ("session", "dataset", "unit_index", *UNIT_COORDS)}
    duplicate: list[np.ndarray] = []
    for name in names:
        i = known[name]
        info = model.sessions[i]
        n, off = info.n_units, int(model.unit_offset[i])
        rows.append(weights[off : off + n])
        cols["session"] += [name] * n
        cols["dataset"] += [info.dataset] * n
        cols["unit_index"] += list(range(n))
        rec = recordings.get(name)
        if rec is not None and rec.sizes.get("unit") != n:
            raise ValueError(f"recording for {name!r} has {rec.sizes.get('unit')} units, the model {n}")
        for c in UNIT_COORDS:
            if rec is not None and c in rec.coords:
                vals = np.asarray(rec[c].values)
                cols[c] += [float(v) for v in vals] if c in ("x", "y", "z") else ["" if v is None else str(v) for v in vals]
            elif c == "label" and info.labels is not None:
                cols[c] += list(info.labels)
            else:
                cols[c] += [np.nan] * n if c in ("x", "y", "z") else [""] * n
        duplicate.append(label_duplicate_mask(cols["label"][-n:]))
    emb = np.concatenate(rows).astype(np.float32)
    coords: dict[str, Any] = {"unit": np.arange(len(emb)), "dim": np.arange(emb.shape[1])}
    for c, v in cols.items():
        if c in ("x", "y", "z"):
            arr = np.asarray(v, dtype=np.float64)
            if np.isnan(arr).all():
                continue
        elif c == "unit_index":
            arr = np.asarray(v, dtype=np.int64)
        else:
            arr = np.asarray(v, dtype=str)
            if c == "neuron_class" and not (arr != "").any():
                continue
        coords[c] = ("unit", arr)
    coords["label_duplicate"] = ("unit", np.concatenate(duplicate))
    return xr.Dataset(
        {"embedding": (("unit", "dim"), emb)},
        coords=coords,
        attrs={"model_kind": str(getattr(model, "kind", "")), "description": "raw unit-embedding rows (no session/dataset terms)"},
    )


def session_embeddings(model: Any) -> xr.Dataset:
    """One vector per session (spec §6): its session embedding plus the mean of its unit embeddings.

    Returns ``embedding`` (session, dim) float32 with coords ``session`` (names), ``dataset`` and
    ``n_units``.
    """
    table = getattr(model, "session_emb", None)
    if table is None or getattr(model, "unit_emb", None) is None:
        raise TypeError(f"a {getattr(model, 'kind', type(model).__name__)} model has no session embeddings (POCO, POYO and UICO do)")
    sess = table.weight.detach().float().cpu().numpy()
    units = model.unit_emb.weight.detach().float().cpu().numpy()
    rows = []
    for i, s in enumerate(model.sessions):
        off = int(model.unit_offset[i])
        rows.append(sess[i] + units[off : off + s.n_units].mean(0))
    return xr.Dataset(
        {"embedding": (("session", "dim"), np.stack(rows).astype(np.float32))},
        coords={
            "session": [s.name for s in model.sessions],
            "dataset": ("session", [s.dataset for s in model.sessions]),
            "n_units": ("session", [s.n_units for s in model.sessions]),
            "dim": np.arange(sess.shape[1]),
        },
        attrs={"description": "session embedding + mean unit embedding per session (spec §6)"},
    )

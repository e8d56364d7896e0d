"""Choosing units to show: ids typed as ``"0-3, 7"``, a region's units, labelled units, clicks on
raster rows. Panel-free helpers shared by the tabs' controllers; they take any prepared session
with ``ds`` (the recording), ``order`` (display row -> positional unit), ``bands`` (region bands of
the sorted raster) and ``duplicates`` (label -> positional units carrying it, for labels on more
than one unit)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import xarray as xr

from pocoviz.recordings import duplicate_labels


def unit_name(label: str, uid: int, duplicated: bool = False) -> str:
    """How a unit is named on axes and in hovers: its label, ``#<id>`` without one, and
    ``"URADL (dup #12)"`` when another unit of the recording carries the same label."""
    if not label:
        return f"#{uid}"
    return f"{label} (dup #{uid})" if duplicated else label


def label_options(ds: xr.Dataset) -> dict[str, str]:
    """Choices of a neuron-label picker, ``{shown: label}`` sorted by label; a label that several
    units carry is shown as ``"URADL (2 units: duplicated label)"`` (picking it selects all of them)."""
    labels = np.asarray(ds["label"].values).astype(str)
    dups = duplicate_labels(labels)
    out = {}
    for lab in sorted({v for v in labels if v}):
        out[f"{lab} ({len(dups[lab])} units: duplicated label)" if lab in dups else lab] = lab
    return out


def duplicate_note(prep: Any, units: list[int]) -> str:
    """A sentence naming the duplicated labels among ``units`` ("" when there are none)."""
    ids = np.asarray(prep.ds["unit"].values)
    shown = set(units)
    parts = [
        f"{lab} is carried by {len(idx)} units ({', '.join(f'#{int(ids[i])}' for i in idx)})" for lab, idx in prep.duplicates.items() if shown.intersection(idx)
    ]
    return ("duplicated label: " + "; ".join(parts)) if parts else ""


def parse_unit_ids(text: str) -> list[int]:
    """``"0-3, 7"`` -> ``[0, 1, 2, 3, 7]``; raises ValueError with the bad token."""
    out: list[int] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", token)
        if not m:
            raise ValueError(f"not a unit id or range: {token[:40]!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or b - a > 10_000:
            raise ValueError(f"bad range: {token[:40]!r}")
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))


def units_of_region(prep: Any, region: str | None, n: int) -> list[int]:
    """Up to ``n`` units of ``region``, evenly spread over its rows of the sorted raster."""
    band = next((b for b in prep.bands if b.region == region), None)
    if band is None:
        return []
    rows = np.unique(np.linspace(band.start, band.stop - 1, min(n, band.stop - band.start)).round().astype(int))
    return [int(prep.order[r]) for r in rows]


def units_with_labels(prep: Any, labels: list[str], limit: int) -> list[int]:
    """The units carrying any of ``labels``, in the order given, at most ``limit``; a duplicated
    label (several units carry it) selects every one of its units."""
    have = np.asarray(prep.ds["label"].values).astype(str)
    units = [int(i) for lab in dict.fromkeys(labels) for i in np.flatnonzero(have == lab)]
    return list(dict.fromkeys(units))[:limit]


def units_with_ids(prep: Any, text: str, limit: int) -> list[int]:
    """Positions of the unit ids in ``text`` ("0-3, 7"); ValueError names ids not in the session."""
    ids = parse_unit_ids(text)
    pos = {int(u): i for i, u in enumerate(np.asarray(prep.ds["unit"].values))}
    missing = [u for u in ids if u not in pos]
    if missing:
        shown = ", ".join(str(u)[:20] for u in missing[:5])
        raise ValueError(f"no unit with id [{shown}] in this session (ids run {min(pos)}–{max(pos)})")
    return [pos[u] for u in ids][:limit]


def toggle_tapped_unit(prep: Any, y: float | None, text: str, limit: int) -> str | None:
    """The unit-id text after a click on raster row ``y`` (adds or removes that unit); None when
    the click hit no row."""
    if y is None or not np.isfinite(y):
        return None
    row = int(round(y))
    if not 0 <= row < len(prep.order):
        return None
    uid = int(prep.ds["unit"].values[prep.order[row]])
    try:
        current = parse_unit_ids(text)
    except ValueError:
        current = []
    if uid in current:
        current.remove(uid)
    else:
        current.append(uid)
    return ", ".join(map(str, current[-limit:]))

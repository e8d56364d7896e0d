"""Pack the recordings the GPU run needs into one .npz (the GPU machine has no netCDF engine and
no access to ../shared/data), and unpack them there into a ForecastCorpus mapping.

    python benchmarks/devdata.py pack .devdata/corpus.npz     # here (folder git-ignored locally)

Only plain arrays are stored (no pickles): per session ``<i>/activity`` (T, U) float32 and
``<i>/region`` (U,) unicode, plus ``names`` (unicode).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr


def pack(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from poco_acceptance import TECTUM, WORMS
    from pocoviz.forecast.recipes import load_corpus

    items = {**load_corpus(["demo"]).recordings, **load_corpus([str(p) for p in WORMS]).recordings}
    items.update({f"zebrafish_tectum/{k.split('/', 1)[1]}": v for k, v in load_corpus([str(TECTUM)]).recordings.items()})
    arrays: dict[str, np.ndarray] = {"names": np.array(list(items), dtype=str)}
    for i, ds in enumerate(items.values()):
        arrays[f"{i}/activity"] = np.asarray(ds["activity"].transpose("time", "unit").values, dtype=np.float32)
        region = ds["region"].values.astype(str) if "region" in ds.coords else np.full(ds.sizes["unit"], "", dtype=str)
        arrays[f"{i}/region"] = region
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: {len(items)} sessions, {out.stat().st_size / 2**20:.1f} MiB")


def unpack(path: Path) -> dict[str, xr.Dataset]:
    with np.load(path, allow_pickle=False) as z:
        names = [str(n) for n in z["names"]]
        out = {}
        for i, n in enumerate(names):
            a = z[f"{i}/activity"]
            out[n] = xr.Dataset(
                {"activity": (("time", "unit"), a)},
                coords={"time": np.arange(a.shape[0], dtype=float), "unit": np.arange(a.shape[1]), "region": ("unit", z[f"{i}/region"])},
                attrs={"species": n.split("/")[0], "session": n.split("/")[1]},
            )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "pack":
        raise SystemExit(__doc__)
    pack(Path(sys.argv[2]))

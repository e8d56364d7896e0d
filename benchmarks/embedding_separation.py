"""Region separation of a POCO checkpoint's unit embeddings, per session and all together
(issue 5): silhouette by region against 200 label shuffles, and the row-normalised distance matrix's
diagonal rank. Prints a table and appends JSON lines to --out.

    python benchmarks/embedding_separation.py poco_demo --data demo --out benchmarks/results/embeddings.jsonl
    python benchmarks/embedding_separation.py /tmp/worms_poco --data ../shared/data/celegans_flavell_dag2023 --by region,neuron_class
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pocoviz.embeddings import region_distance_matrix, region_separation, unit_embeddings
from pocoviz.forecast import load_model
from pocoviz.forecast.recipes import load_corpus


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--data", nargs="+", default=["demo"])
    p.add_argument("--by", default="region", help="comma-separated unit coordinates to test (region, neuron_class, label)")
    p.add_argument("--shuffles", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    model = load_model(a.model)
    corpus = load_corpus(a.data)
    recordings = {k: v for k, v in corpus.recordings.items() if k in {s.name for s in model.sessions}}
    scopes = [[n] for n in recordings] + [list(recordings)]
    for by in a.by.split(","):
        for scope in scopes:
            emb = unit_embeddings(model, scope, recordings=recordings)
            if by not in emb.coords:
                continue
            lab = emb[by].values.astype(str)
            keep = lab != ""
            if len(set(lab[keep])) < 2:
                continue
            x = emb["embedding"].values[keep]
            groups = emb["session"].values[keep] if len(scope) > 1 else None  # within sessions (spec §6)
            sep = region_separation(x, lab[keep], groups=groups, n_shuffles=a.shuffles, seed=0)
            m = region_distance_matrix(x, lab[keep], groups=groups).values
            diag_rank = float(np.mean([np.nanargmin(row) == i for i, row in enumerate(m)]))  # rows whose own region is nearest
            rec = {
                "model": str(a.model), "by": by, "scope": scope[0] if len(scope) == 1 else "all (within sessions)", "n": sep["n"], "groups": len(sep["labels"]),
                "silhouette": sep["score"], "null_mean": sep["null_mean"], "null_p95": sep["null_p95"], "p_value": sep["p_value"], "z": sep["z"],
                "self_nearest_fraction": diag_rank,
            }  # fmt: skip
            print(f"{by:12s} {rec['scope']:24s} n={rec['n']:5d} k={rec['groups']:3d} silhouette {rec['silhouette']:+.4f}  null p95 {rec['null_p95']:+.4f}  "
                  f"p={rec['p_value']:.3f} z={rec['z']:+.1f}  region nearest itself: {diag_rank:.2f}")  # fmt: skip
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()

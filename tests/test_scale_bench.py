"""``pocoviz bench --only scale`` machinery at a small size: the store is synthesised once and reused,
opening it in a fresh interpreter is lazy and reports memory, ``pocoviz info`` runs as users run it.
(The figures themselves come from ``pocoviz bench --only scale`` on the machine at hand.)"""

from __future__ import annotations

import json

from pocoviz import bench
from pocoviz.scale_bench import bench_scale


def test_scale_is_not_in_a_bare_bench_run():
    assert "scale" in bench.SECTIONS and "scale" not in bench.DEFAULT_SECTIONS


def test_small_scale_bench_synthesises_once_then_opens_lazily(tmp_path, monkeypatch):
    monkeypatch.setenv("POCOVIZ_LAZY_BYTES", str(1 << 20))  # the 24 MB quick store opens lazily, as a big one does
    out = bench_scale(quick=True, store=tmp_path, steps=("synth", "open", "info"))
    assert out["units"] == 3000 and out["frames"] == 2000
    synth = out["synth"]
    assert synth.get("returncode") == 0 and synth["bytes_on_disk"] > 1e6 and synth["peak_rss_mb"] > 0, synth
    opened = out["open"]
    assert opened["lazy"] is True and opened["open_s"] > 0 and opened["peak_rss_mb"] >= opened["rss_after_open_mb"] > 0, opened
    assert "sample of" in (opened["activity_checked"] or ""), opened
    assert out["info"]["exit"] == 0 and "3000 units" in out["info"]["output"], out["info"]
    record = tmp_path / "wholebrain-3000x2000-seed0.zarr.synth.json"
    assert json.loads(record.read_text())["bytes_on_disk"] == synth["bytes_on_disk"]
    again = bench_scale(quick=True, store=tmp_path, steps=("synth",))
    assert again["synth"]["reused"] is True  # not written twice

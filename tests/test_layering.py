"""The compute packages never import the UI stack (DESIGN.md: compute is testable without a browser)."""

from __future__ import annotations


def test_data_layer_imports_without_torch_and_without_ui_packages():
    """`pocoviz.recordings` and `pocoviz.backend` never import panel/holoviews/bokeh; the data layer
    does not even import torch (the app starts faster); torch names load on first use."""
    import subprocess
    import sys

    code = (
        "import sys, pocoviz.recordings as r;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh', 'torch'});"
        "assert not bad, bad;"
        "import pocoviz.backend;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh'});"
        "assert not bad, bad;"
        "assert r.WindowDataset.__module__ == 'pocoviz.recordings.windows'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

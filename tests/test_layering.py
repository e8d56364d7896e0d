"""The compute packages never import the UI stack (DESIGN.md: compute is testable without a browser)."""

from __future__ import annotations

import subprocess
import sys


def _runs_ok(code: str) -> None:
    """Run ``code`` in a fresh interpreter (so sys.modules starts empty); it must print ok."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_data_layer_imports_without_torch_and_without_ui_packages():
    """`pocoviz.recordings` and `pocoviz.backend` never import panel/holoviews/bokeh; the data layer
    does not even import torch (the app starts faster); torch names load on first use."""
    code = (
        "import sys, pocoviz.recordings as r;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh', 'torch'});"
        "assert not bad, bad;"
        "import pocoviz.backend;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh'});"
        "assert not bad, bad;"
        "assert r.WindowDataset.__module__ == 'pocoviz.recordings.windows'; print('ok')"
    )
    _runs_ok(code)


def test_forecast_package_imports_no_ui_packages():
    """`pocoviz.forecast` (every model, training, checkpoints, playback, the bench helpers) and
    `pocoviz.embeddings` never import
    panel/holoviews/bokeh/datashader."""
    code = (
        "import sys, pocoviz.forecast as f; from pocoviz.forecast import models, checkpoint, recipes, bench, playback;"
        "import pocoviz.embeddings;"
        "f.model_kinds();"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh', 'datashader'});"
        "assert not bad, bad; print('ok')"
    )
    _runs_ok(code)


def test_controllers_import_no_ui_packages():
    """The tabs' controllers (state, jobs, URL state, snapshots) and the shared caches never import
    panel/holoviews/bokeh/datashader: they are driven by tests and other front ends without a browser."""
    code = (
        "import sys, pkgutil, importlib, pocoviz.controllers as c;"
        "[importlib.import_module('pocoviz.controllers.' + m.name) for m in pkgutil.iter_modules(c.__path__)];"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'panel', 'holoviews', 'bokeh', 'datashader'});"
        "assert not bad, bad; print('ok')"
    )
    _runs_ok(code)

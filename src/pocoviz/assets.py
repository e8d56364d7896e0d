"""Where the shipped assets live: the demo corpus and the pretrained models.

``POCOVIZ_ASSETS`` points elsewhere (tests, a read-only install with assets copied aside).
Imports nothing heavy, so compute packages and the app can both use it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the repository's assets/ folder (src/pocoviz/assets.py -> repo root)
ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_FILE = "demo_corpus.nc"
MODELS_SUBDIR = "models"


def assets_dir() -> Path:
    """The folder with the shipped assets (``POCOVIZ_ASSETS`` overrides)."""
    return Path(os.environ.get("POCOVIZ_ASSETS", ASSETS))


def demo_corpus_path() -> Path:
    return assets_dir() / DEMO_FILE


def models_dir() -> Path:
    """Shipped pretrained forecasters: ``<name>.safetensors`` + ``<name>.json`` pairs."""
    return assets_dir() / MODELS_SUBDIR

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.realdata import FLAVELL, SHARED_DATA, TRIPLETT


@pytest.fixture(scope="session", autouse=True)
def _private_layout_cache(tmp_path_factory):
    """Layouts computed by the tests (and by the apps they serve, which inherit the environment)
    go to a temporary cache, not the user's ~/.cache/pocoviz."""
    old = os.environ.get("POCOVIZ_CACHE")
    os.environ["POCOVIZ_CACHE"] = str(tmp_path_factory.mktemp("pocoviz-cache"))
    yield
    if old is None:
        os.environ.pop("POCOVIZ_CACHE", None)
    else:
        os.environ["POCOVIZ_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings in ../shared/data (present in CI); skipped with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (set POCOVIZ_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def flavell_files(shared_data) -> list[Path]:
    """Every ``*-data.h5`` in the Flavell folder (however many the shared data holds, at least one)."""
    files = sorted(FLAVELL.glob("*-data.h5"))
    if not files:
        pytest.skip(f"no Flavell-lab worm (*-data.h5) in {FLAVELL}")
    return files


@pytest.fixture(scope="session")
def triplett_file(shared_data) -> Path:
    f = TRIPLETT / "zf_20151104-f1.mat"
    assert f.exists()
    return f

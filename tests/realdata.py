"""Where the real recordings of ../shared/data are, and what its README says they hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POCOVIZ_SHARED_DATA", ROOT.parent / "shared" / "data"))
FLAVELL = SHARED_DATA / "celegans_flavell_dag2023"
TRIPLETT = SHARED_DATA / "zebrafish_tectum_triplett2018"

#: The six NeuroPAL-labelled Flavell-lab worms that ../shared/data/README.md describes: uid ->
#: (traces, labelled traces). Tests take whichever of them are present.
FLAVELL_WORMS = {
    "2022-07-26-31": (146, 100),
    "2022-07-26-38": (141, 90),
    "2022-07-27-31": (145, 102),
    "2022-07-27-38": (135, 92),
    "2022-07-27-45": (140, 109),
    "2022-08-02-31": (130, 104),
}


def flavell_file(uid: str) -> Path:
    """The worm ``uid`` of the shared data; the test is skipped, with the reason printed, when it is absent."""
    path = FLAVELL / f"{uid}-data.h5"
    if not path.is_file():
        pytest.skip(f"Flavell worm {uid} is not in {FLAVELL}")
    return path

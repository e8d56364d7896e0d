"""Species keys: one per species, however a recording, a corpus path or a checkpoint card spells it."""

from __future__ import annotations

import pytest

from pocoviz.recordings import SPECIES_PRESETS, same_species, species_key


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("C. elegans", "C_elegans", True),
        ("C. elegans", "c elegans", True),
        ("C. elegans", "C._elegans", True),  # ForecastCorpus's dataset name for attrs species "C. elegans"
        ("worm", "C_elegans", True),  # the demo corpus's dataset vs a real Flavell worm
        ("Caenorhabditis elegans", "c.elegans", True),
        ("C. elegans (Caenorhabditis elegans), head ganglia, NeuroPAL-like", "C. elegans", True),
        ("zebrafish", "Danio rerio", True),
        ("mouse", "Mus musculus", True),
        ("C. elegans", "zebrafish", False),
        ("worm", "mouse", False),
        ("Drosophila melanogaster", "drosophila_melanogaster", True),
        ("Drosophila melanogaster", "C. elegans", False),
        ("", "", False),
        (None, "worm", False),
    ],
)
def test_same_species(a, b, same):
    assert same_species(a, b) is same


def test_every_synthetic_preset_is_the_species_it_imitates():
    """The demo corpus's short keys ("worm", ...) name the organisms of their presets, so that a
    checkpoint card that names only the dataset still knows its species."""
    for preset in SPECIES_PRESETS.values():
        assert species_key(preset.species) == species_key(preset.organism), preset.species
    assert species_key("worm") == species_key("C. elegans") == "c elegans"

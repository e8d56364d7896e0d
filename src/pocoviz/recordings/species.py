"""One key per species, however a file, a corpus or a checkpoint spells it.

Recordings name their species in ``attrs["species"]`` ("C. elegans" from the Flavell reader),
corpora turn that into a dataset name ("C_elegans"), and the synthetic demo corpus uses short
keys ("worm", whose ``attrs["organism"]`` is "C. elegans (Caenorhabditis elegans), ..."). Things
that must agree across datasets of one species (neuron labels: AVAL is AVAL in every worm) compare
:func:`species_key` values.

Examples
--------
>>> species_key("C. elegans") == species_key("C_elegans") == species_key("c elegans") == species_key("worm")
True
>>> species_key("larval zebrafish (Danio rerio), whole brain") == species_key("zebrafish")
True
>>> species_key("Drosophila melanogaster")
'drosophila melanogaster'
"""

from __future__ import annotations

import re

#: Spellings (after :func:`_normalise`) of the species this project meets -> one key. The short keys
#: of the synthetic presets ("worm", "zebrafish", "mouse") are here too, so that checkpoints
#: trained on the demo corpus, whose cards name only the dataset, match real recordings.
SPECIES_ALIASES: dict[str, str] = {
    **dict.fromkeys(("c elegans", "celegans", "caenorhabditis elegans", "worm", "nematode"), "c elegans"),
    **dict.fromkeys(("d rerio", "danio rerio", "zebrafish", "larval zebrafish", "zebra fish"), "d rerio"),
    **dict.fromkeys(("m musculus", "mus musculus", "mouse", "mice"), "m musculus"),
}


def _normalise(name: str) -> str:
    # "C. elegans (Caenorhabditis elegans), head ganglia" -> "c elegans"; "C_elegans" -> "c elegans"
    head = re.split(r"[(,;]", str(name), maxsplit=1)[0]
    return re.sub(r"[^0-9a-z]+", " ", head.lower()).strip()


def species_key(name: str | None) -> str:
    """A canonical key for a species name: lower case, punctuation and underscores as single
    spaces, a parenthesised or comma-separated tail dropped, known synonyms mapped to one key
    (``"c elegans"``, ``"d rerio"``, ``"m musculus"``). ``""`` for ``None`` or an empty name."""
    if name is None:
        return ""
    key = _normalise(name)
    return SPECIES_ALIASES.get(key, key)


def same_species(a: str | None, b: str | None) -> bool:
    """Whether two species names (or dataset names) denote the same species; never for empty names."""
    ka, kb = species_key(a), species_key(b)
    return bool(ka) and ka == kb

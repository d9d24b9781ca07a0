"""Condition descriptions: sentences stating a crystal's known properties (SPEC §2)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Sentence order follows the specification's example.
ORDER = ("formula", "e_above_hull", "space_group", "formation_energy", "band_gap")
SENTENCES = {
    "formula": "The chemical formula is {}.",
    "e_above_hull": "The energy above the convex hull is {}.",
    "space_group": "The spacegroup number is {}.",
    "formation_energy": "The formation energy per atom is {}.",
    "band_gap": "The band gap is {}.",
}
# Names used by the property-prediction task.
PROPERTY_LABELS = {
    "formation_energy": "formation energy per atom",
    "band_gap": "band gap",
    "e_above_hull": "energy above the convex hull",
    "heat_of_formation": "heat of formation",
    "energy_per_atom": "energy per atom",
}
CONTINUOUS = ("formation_energy", "band_gap", "e_above_hull")


def format_value(value) -> str:
    """Continuous values rounded to 4 decimals without trailing zeros (-1.6810 -> -1.681)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return str(int(value))
    s = f"{round(float(value), 4):.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def available(row: Mapping, allowed: Sequence[str]) -> list[str]:
    """Conditions of ``allowed`` that ``row`` has a finite value for, in sentence order."""
    out = []
    for name in ORDER:
        if name not in allowed or name not in row:
            continue
        v = row[name]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(name)
    return out


def describe(row: Mapping, names: Sequence[str]) -> str:
    """The condition description of ``row`` restricted to ``names`` (in the fixed sentence order)."""
    return " ".join(SENTENCES[n].format(format_value(row[n])) for n in ORDER if n in names)


def random_subset(names: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A random subset of conditions for training; the formula is always kept (SPEC §2)."""
    rest = [n for n in names if n != "formula"]
    keep = [n for n in rest if rng.random() < 0.5]
    return (["formula"] if "formula" in names else []) + keep

"""Validity of generated crystals, as defined by CDVAE / DiffCSP (SPEC §5).

- structural: every interatomic distance > 0.5 Å and cell volume > 0.1 Å³;
- compositional: some assignment of oxidation states is charge neutral and passes the Pauling
  electronegativity test (SMACT); single-element and all-metal compositions count as valid.
Written against SMACT 4 (``neutral_ratios`` returns only the ratios; some noble gases have no oxidation
states). ``smact.screening.smact_validity`` is a different criterion and is not used.
"""

from __future__ import annotations

import itertools
from functools import cache
from math import gcd

import numpy as np


def structure_valid(structure, cutoff: float = 0.5) -> bool:
    """CDVAE's structural validity: all distances between distinct sites > ``cutoff`` and volume > 0.1 Å³.

    Like CDVAE (for comparable numbers), an atom's distance to its own periodic images is not checked.
    """
    if structure.volume < 0.1:
        return False
    if len(structure) == 1:
        return True
    d = structure.distance_matrix
    np.fill_diagonal(d, np.inf)
    return bool(d.min() >= cutoff)


@cache
def _element(symbol: str):
    import smact

    return smact.Element(symbol)


@cache
def composition_valid(symbols: tuple[str, ...], counts: tuple[int, ...]) -> bool:
    """CDVAE's compositional validity of a composition (element symbols, integer counts)."""
    import smact
    from smact.screening import pauling_test

    if len(set(symbols)) == 1:
        return True
    if all(s in smact.metals for s in symbols):
        return True
    g = 0
    for c in counts:
        g = gcd(g, int(c))
    counts = tuple(int(c) // g for c in counts)
    try:
        elements = [_element(s) for s in symbols]
    except KeyError:  # SMACT has no data (e.g. Mc, Og): no known oxidation states, so never charge-balanced
        return False
    ox_states = [e.oxidation_states or [] for e in elements]
    electronegativities = [e.pauling_eneg for e in elements]
    threshold = max(counts)
    stoichs = [(c,) for c in counts]
    for ox in itertools.product(*ox_states):
        if not smact.neutral_ratios(ox, stoichs=stoichs, threshold=threshold):
            continue
        try:
            if pauling_test(ox, electronegativities):
                return True
        except TypeError:  # an element without electronegativity: the test does not apply
            return True
    return False


def composition_valid_of(structure_or_composition) -> bool:
    comp = getattr(structure_or_composition, "composition", structure_or_composition)
    items = sorted(comp.get_el_amt_dict().items())
    return composition_valid(tuple(s for s, _ in items), tuple(int(round(n)) for _, n in items))

"""XYZ: the CrystalLLM baseline text — lattice parameters and every atom of the cell, no symmetry."""

from __future__ import annotations

import numpy as np

from crystalicl.errors import ParseError
from crystalicl.text import lattice as lat
from crystalicl.text.parsing import MAX_ATOMS, element, floats, lines


def encode(matrix, frac, symbols: list[str], shift: np.ndarray | None = None) -> str:
    """Text of the cell as given; ``shift`` translates all atoms (the baseline's training augmentation)."""
    frac = np.asarray(frac, float) + (0.0 if shift is None else np.asarray(shift, float))
    frac = np.round(np.mod(frac, 1.0), 2) % 1.0
    out = lat.format_lines(lat.parameters(matrix))
    for el, p in zip(symbols, frac, strict=True):
        out.append(el)
        out.append(" ".join(f"{x:.2f}" for x in p))
    return "\n".join(out)


def decode(text: str):
    from pymatgen.core import Structure

    ls = lines(text)
    if len(ls) < 4:
        raise ParseError(f"XYZ text needs two lattice lines and at least one atom; got {len(ls)} lines")
    params = floats(ls[0], 3, "lattice lengths") + floats(ls[1], 3, "lattice angles")
    lat.check(params, "lines 1-2")
    body = ls[2:]
    if len(body) % 2:
        raise ParseError(f"line {body[-1][0]}: an element line has no coordinate line after it")
    if len(body) // 2 > MAX_ATOMS:
        raise ParseError(f"the structure exceeds {MAX_ATOMS} atoms")
    species = []
    coords = []
    for (eno, eline), cline in zip(body[::2], body[1::2], strict=True):
        if len(eline.split()) != 1:
            raise ParseError(f"line {eno}: expected an element symbol, got {eline!r}")
        species.append(element(eline, eno))
        coords.append(floats(cline, 3, "fractional coordinates"))
    return Structure(lat.matrix(params), species, np.mod(np.array(coords), 1.0))

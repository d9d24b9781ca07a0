"""Space-group tables and symmetry analysis, on spglib directly (cheaper than pymatgen round trips).

One tolerance, :data:`SYMPREC` = 0.1 Å, is used everywhere a space group is *assigned*: writing crystal
text, labelling dataset targets, and scoring generated structures. 0.1 Å is the Materials Project
convention (the `spacegroup.number` column of MP-derived splits agrees with it); at 0.01 Å almost half
of Perov-5 and Carbon-24 change label, which would make targets depend on noise in relaxed positions.
Decoded structures keep their written group's operations exactly, but their sampled cell and coordinates may
realise a supergroup (more often at 0.1 than at 0.01): generated crystals are scored, and checked by
:func:`symmetry_mismatch`, at :data:`CHECK_SYMPREC` = 0.01, the paper's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import spglib

SYMPREC = 0.1
CHECK_SYMPREC = 0.01  # the paper's scoring tolerance: a decoded crystal must show exactly its written group here
ANGLE_TOLERANCE = -1.0  # spglib default

CRYSTAL_SYSTEMS = (
    (2, "triclinic"),
    (15, "monoclinic"),
    (74, "orthorhombic"),
    (142, "tetragonal"),
    (167, "trigonal"),
    (194, "hexagonal"),
    (230, "cubic"),
)


@dataclass(frozen=True)
class SpaceGroup:
    """A space-group type in the setting spglib standardises to (its default Hall number)."""

    number: int
    symbol: str  # Hermann–Mauguin short symbol as spglib prints it, e.g. "Fm-3m", "P6_3/mmc"
    hall_number: int
    crystal_system: str


def crystal_system(number: int) -> str:
    for upper, name in CRYSTAL_SYSTEMS:
        if number <= upper:
            return name
    raise ValueError(f"space group number {number} out of range 1-230")


@cache
def _tables() -> tuple[dict[int, SpaceGroup], dict[str, SpaceGroup]]:
    by_number: dict[int, SpaceGroup] = {}
    aliases: dict[str, SpaceGroup] = {}
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        if t.number not in by_number:  # spglib's default setting is the first Hall number of each type
            by_number[t.number] = SpaceGroup(t.number, t.international_short, hall, crystal_system(t.number))
    for sg in by_number.values():
        for hall in range(1, 531):
            t = spglib.get_spacegroup_type(hall)
            if t.number == sg.number:
                for name in (t.international_short, t.international, t.international_full):
                    aliases.setdefault(name.replace(" ", ""), sg)
        aliases[sg.symbol] = sg
    return by_number, aliases


def space_group(key: int | str) -> SpaceGroup:
    """Look a space group up by number or Hermann–Mauguin symbol (spaces ignored); KeyError if unknown."""
    by_number, aliases = _tables()
    if isinstance(key, int | np.integer):
        return by_number[int(key)]
    return aliases[str(key).replace(" ", "")]


def all_space_groups() -> list[SpaceGroup]:
    return [space_group(n) for n in range(1, 231)]


@dataclass(frozen=True)
class Orbit:
    """One Wyckoff orbit of the conventional standard cell."""

    element: str
    letter: str
    multiplicity: int
    positions: np.ndarray  # (multiplicity, 3) fractional coordinates of every atom of the orbit


@dataclass(frozen=True)
class Symmetrized:
    """A crystal in its conventional standard cell, split into Wyckoff orbits."""

    group: SpaceGroup
    lattice: np.ndarray  # (3, 3) rows are the conventional lattice vectors (Å)
    orbits: tuple[Orbit, ...]


def spglib_cell(lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray):
    """A spglib cell with atoms in a canonical order (atomic number, then wrapped coordinates).

    spglib's result at a loose tolerance can depend on atom order for borderline crystals (an MP VO
    cell comes out C2/m or R-3m depending on which element is listed first); sorting makes the space
    group, and so the text, a function of the crystal alone.
    """
    frac = np.mod(np.asarray(frac, float), 1.0)
    numbers = np.asarray(numbers, int)
    order = np.lexsort((np.round(frac[:, 2], 6), np.round(frac[:, 1], 6), np.round(frac[:, 0], 6), numbers))
    return (np.asarray(lattice, float), frac[order], numbers[order])


def space_group_number(lattice, frac, numbers, symprec: float = SYMPREC) -> int | None:
    """Space-group number of a cell (None when spglib finds no symmetry, e.g. overlapping atoms)."""
    ds = spglib.get_symmetry_dataset(spglib_cell(lattice, frac, numbers), symprec=symprec,
                                     angle_tolerance=ANGLE_TOLERANCE)
    return None if ds is None else int(ds.number)


def symmetry_mismatch(structure, number: int, symprec: float = CHECK_SYMPREC) -> str | None:
    """Why a decoded crystal does not analyse to space group ``number`` (None when it does).

    Decoding SGS text applies the written group's operations exactly, so a mismatch is a supergroup that the
    sampled lattice and coordinates happen to realise (a P-1 cell with a = b and α = β is C2/m), or atoms so
    close that spglib finds no group: the sample does not have the symmetry it claims.
    """
    found = space_group_number(structure.lattice.matrix, structure.frac_coords,
                               [site.specie.Z for site in structure], symprec)
    if found == number:
        return None
    what = "no space group (overlapping atoms?)" if found is None else f"{space_group(found).symbol} ({found})"
    return f"written {space_group(number).symbol} ({number}), analysed {what} at symprec {symprec}"


def symmetrize(lattice, frac, numbers, symprec: float = SYMPREC) -> Symmetrized:
    """Conventional standard cell (spglib, idealised) with its atoms grouped into Wyckoff orbits.

    Letters come from spglib's analysis of the input; the standardised atoms are mapped back to the
    input atoms through the primitive cell to know which orbit and letter each belongs to.
    Raises ValueError when no symmetry can be determined.
    """
    from pymatgen.core.periodic_table import Element

    from crystalicl import wyckoff

    ds = spglib.get_symmetry_dataset(spglib_cell(lattice, frac, numbers), symprec=symprec,
                                     angle_tolerance=ANGLE_TOLERANCE)
    if ds is None:
        raise ValueError(f"spglib found no symmetry at symprec={symprec} (overlapping atoms?)")
    group = space_group(int(ds.number))
    if ds.hall_number != group.hall_number:
        raise ValueError(f"spglib chose Hall setting {ds.hall_number}, expected {group.hall_number}")
    # Letter of each standardised atom, through the primitive cell, from spglib's per-atom analysis.
    prim_letter: dict[int, str] = {}
    for j, p in enumerate(ds.mapping_to_primitive):
        prim_letter.setdefault(int(p), ds.wyckoffs[j])
    std_pos = np.mod(np.asarray(ds.std_positions, float), 1.0)
    std_types = np.asarray(ds.std_types, int)
    std_lattice = np.asarray(ds.std_lattice, float)
    letters = [prim_letter[int(p)] for p in ds.std_mapping_to_primitive]
    # Orbits: expand each unassigned atom with its exact Wyckoff position and collect the atoms it
    # reaches (spglib's equivalent_atoms can split an orbit at loose tolerances).
    table = wyckoff.by_letter(group.hall_number)
    remaining = list(range(len(std_pos)))
    orbits = []
    while remaining:
        i = remaining[0]
        wp = table.get(letters[i])
        if wp is None:
            raise ValueError(f"{group.symbol} has no Wyckoff position {letters[i]!r}")
        _, u = wyckoff.project(wp, std_pos[i], std_lattice)
        images = wp.orbit(u)
        cand = [j for j in remaining if std_types[j] == std_types[i] and letters[j] == letters[i]]
        diff = std_pos[cand][:, None, :] - images[None, :, :]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ std_lattice, axis=-1).min(axis=1)
        members = [j for j, d in zip(cand, dist, strict=True) if d < 0.05]
        if len(members) != wp.multiplicity or i not in members:
            raise ValueError(f"atoms of {Element.from_Z(int(std_types[i])).symbol} {wp.label} in {group.symbol} "
                             f"do not form a complete orbit ({len(members)} of {wp.multiplicity} found)")
        orbits.append(Orbit(Element.from_Z(int(std_types[i])).symbol, wp.letter, wp.multiplicity, std_pos[members]))
        remaining = [j for j in remaining if j not in set(members)]
    return Symmetrized(group, std_lattice, tuple(orbits))

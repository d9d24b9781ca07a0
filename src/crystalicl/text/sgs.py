"""SGS: the space-group string of CrystalICL, optionally with Wyckoff labels (``sgs-wyckoff``).

Layout (SPEC §1): Hermann–Mauguin symbol; ``a b c`` (Å, one decimal); ``α β γ`` (integer degrees);
then per Wyckoff orbit an element line (``Li``, or ``Li 4g`` with labels) and a coordinate line
(three fractional coordinates, two decimals) for one representative atom.

Canonical encoding:
- cell: spglib's conventional standard cell at :data:`~crystalicl.symmetry.SYMPREC`, idealised;
- orbit order: by element electronegativity (pymatgen's formula order), then atomic number, then
  Wyckoff letter, then representative coordinates;
- representative: among the orbit's atoms lying on the Wyckoff position's generator (its first ITA
  triplet, e.g. ``x,1/4,z``), the one whose rounded coordinates in [0, 1) sort first.

Exact decoding: each representative is projected onto its Wyckoff position (the labelled one, or
without labels the most special one within :data:`SNAP_TOLERANCE` Å) and expanded with that
position's coordinate triplets, so composition and symmetry come out exact; the lattice is
regularised to the crystal system first.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from crystalicl import wyckoff
from crystalicl.errors import EncodeError, ParseError
from crystalicl.symmetry import SYMPREC, Symmetrized, space_group, symmetrize
from crystalicl.text import lattice as lat
from crystalicl.text.parsing import MAX_ATOMS, element, floats, lines

SNAP_TOLERANCE = 0.35  # Å: rounded special positions land within ~0.15 Å; real atoms are > 0.7 Å apart
_LABEL = re.compile(r"^(\d+)([a-zA-Z])$")


def _representative(wp: wyckoff.WyckoffPosition, positions: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    on_gen = wyckoff.distances_to_generator(wp, positions, matrix) < 1e-3
    cands = np.round(np.mod(positions[on_gen] if on_gen.any() else positions, 1.0), 2) % 1.0
    order = np.lexsort(cands.T[::-1])
    return cands[order[0]]


def orbit_rows(sym: Symmetrized) -> list[tuple[str, str, np.ndarray]]:
    """(element, Wyckoff label, representative) per orbit, in canonical order."""
    from pymatgen.core.periodic_table import Element

    table = wyckoff.by_letter(sym.group.hall_number)
    rows = []
    for orb in sym.orbits:
        wp = table.get(orb.letter)
        if wp is None or wp.multiplicity != orb.multiplicity:
            raise EncodeError(
                f"orbit {orb.element} {orb.multiplicity}{orb.letter} disagrees with the Wyckoff table of "
                f"{sym.group.symbol} (Hall {sym.group.hall_number})"
            )
        rep = _representative(wp, orb.positions, sym.lattice)
        el = Element(orb.element)
        key = (el.X if el.X == el.X else 99.0, el.Z, orb.letter.isupper(), orb.letter, tuple(rep))
        rows.append((key, orb.element, wp.label, rep))
    rows.sort(key=lambda r: r[0])
    return [r[1:] for r in rows]


def from_symmetrized(sym: Symmetrized, labels: bool, rows=None) -> str:
    """SGS text of an already symmetrised crystal (``rows`` from :func:`orbit_rows` may be reused)."""
    out = [sym.group.symbol, *lat.format_lines(lat.parameters(sym.lattice))]
    for el, label, rep in rows if rows is not None else orbit_rows(sym):
        out.append(f"{el} {label}" if labels else el)
        out.append(" ".join(f"{x:.2f}" for x in rep))
    return "\n".join(out)


def encode(lattice, frac, numbers, labels: bool = False, symprec: float = SYMPREC) -> str:
    try:
        sym = symmetrize(lattice, frac, numbers, symprec)
    except ValueError as e:
        raise EncodeError(str(e)) from None
    return from_symmetrized(sym, labels)


def parse(text: str, labels: bool):
    """Parse SGS text into (group, lattice params, [(element, label | None, (x, y, z))])."""
    ls = lines(text)
    if len(ls) < 5:
        raise ParseError(f"SGS text needs a symbol, two lattice lines and at least one site; got {len(ls)} lines")
    no, symbol = ls[0]
    try:
        group = space_group(symbol)
    except KeyError:
        raise ParseError(f"line {no}: {symbol!r} is not a space-group symbol") from None
    params = floats(ls[1], 3, "lattice lengths") + floats(ls[2], 3, "lattice angles")
    body = ls[3:]
    if len(body) % 2:
        raise ParseError(f"line {body[-1][0]}: an element line has no coordinate line after it")
    sites = []
    for (eno, eline), cline in zip(body[::2], body[1::2], strict=True):
        parts = eline.split()
        if labels:
            if len(parts) != 2 or not _LABEL.match(parts[1]):
                raise ParseError(f"line {eno}: expected 'Element multiplicity+letter' (e.g. 'Li 4g'), got {eline!r}")
            label = parts[1]
        else:
            if len(parts) != 1:
                raise ParseError(f"line {eno}: expected an element symbol, got {eline!r}")
            label = None
        sites.append((element(parts[0], eno), label, floats(cline, 3, "fractional coordinates"), eno))
    return group, params, sites


@cache  # a pool crystal is shown in many prompts: parse its text once
def layout(text: str | None) -> tuple[int, tuple[str, ...], str] | None:
    """(space-group number, Wyckoff labels in orbit order, anonymised reduced formula) of SGS-Wyckoff text, or None
    if it does not parse: what a demonstration lends a target of the same layout once its elements are renamed."""
    from pymatgen.core import Composition

    try:
        group, _, sites = parse(text or "", labels=True)
    except ParseError:
        return None
    counts: dict[str, int] = {}
    for symbol, label, _, _ in sites:
        counts[symbol] = counts.get(symbol, 0) + int(_LABEL.match(label).group(1))
    return group.number, tuple(label for _, label, _, _ in sites), Composition(counts).anonymized_formula


def site_orbit(group, label: str | None, xyz, matrix: np.ndarray, snap_tol: float = SNAP_TOLERANCE,
               no: int = 0) -> np.ndarray:
    """Fractional positions of the orbit one site line decodes to: the representative projected onto its
    labelled Wyckoff position (or snapped to the most special one within ``snap_tol`` Å), then expanded."""
    p = np.mod(np.array(xyz, float), 1.0)
    if label is None:
        wp, u = wyckoff.snap(group.hall_number, p, matrix, snap_tol)
        return wp.orbit(u)
    wp = wyckoff.by_letter(group.hall_number).get(label[-1])
    if wp is None:
        raise ParseError(f"line {no}: {group.symbol} has no Wyckoff position {label[-1]!r}")
    if wp.label != label:
        raise ParseError(f"line {no}: position {label[-1]} of {group.symbol} is {wp.label}, not {label}")
    return wp.orbit(wyckoff.project(wp, p, matrix)[1])


def cell_matrix(group, params) -> np.ndarray:
    """The lattice matrix a decoded crystal gets: parameters regularised to the group's crystal system."""
    params = lat.regularize(params, group.crystal_system)  # angles fixed by the system are replaced first
    lat.check(params, "lines 2-3")
    return lat.matrix(params)


def decode(text: str, labels: bool = False, snap_tol: float = SNAP_TOLERANCE):
    """Exact decoding into a pymatgen Structure (see module docstring); ParseError on bad text."""
    from pymatgen.core import Structure

    group, params, sites = parse(text, labels)
    matrix = cell_matrix(group, params)
    species, coords = [], []
    for el, label, xyz, no in sites:
        orbit = site_orbit(group, label, xyz, matrix, snap_tol, no)
        species.extend([el] * len(orbit))
        coords.extend(orbit)
        if len(species) > MAX_ATOMS:
            raise ParseError(f"line {no}: the structure exceeds {MAX_ATOMS} atoms")
    return Structure(matrix, species, np.array(coords))


def decode_naive(text: str):
    """The paper-faithful baseline: ``Structure.from_spacegroup`` with pymatgen's default tolerance."""
    from pymatgen.core import Lattice, Structure

    group, params, sites = parse(text, labels=False)
    lat.check(params, "lines 2-3")
    try:
        return Structure.from_spacegroup(
            group.number, Lattice.from_parameters(*params), [s[0] for s in sites], [s[2] for s in sites]
        )
    except Exception as e:  # pymatgen raises ValueError on lattice/system mismatch
        raise ParseError(f"naive decoding failed: {e}") from None

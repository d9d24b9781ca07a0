"""Lattice parameters as text: formatting, parsing checks, and regularisation to the crystal system."""

from __future__ import annotations

import numpy as np

from crystalicl.errors import ParseError

MAX_LENGTH = 500.0  # Å; anything longer is not a crystal a model should emit


def parameters(matrix: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, α, β, γ) of a row-vector lattice matrix, angles in degrees."""
    m = np.asarray(matrix, float)
    a, b, c = np.linalg.norm(m, axis=1)

    def angle(u, v):
        return float(np.degrees(np.arccos(np.clip(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))

    return float(a), float(b), float(c), angle(m[1], m[2]), angle(m[0], m[2]), angle(m[0], m[1])


def format_lines(params) -> list[str]:
    """Lengths with one decimal, angles as integers (SPEC §1)."""
    a, b, c, al, be, ga = params
    return [f"{a:.1f} {b:.1f} {c:.1f}", f"{round(al)} {round(be)} {round(ga)}"]


def regularize(params, system: str) -> tuple[float, ...]:
    """Bring lattice parameters into agreement with a crystal system (spglib standard settings).

    Equal lengths are averaged; fixed angles are set exactly. Monoclinic uses unique axis b;
    trigonal (rhombohedral groups included) uses hexagonal axes.
    """
    a, b, c, al, be, ga = params
    if system == "triclinic":
        return a, b, c, al, be, ga
    if system == "monoclinic":
        return a, b, c, 90.0, be, 90.0
    if system == "orthorhombic":
        return a, b, c, 90.0, 90.0, 90.0
    if system == "tetragonal":
        ab = (a + b) / 2
        return ab, ab, c, 90.0, 90.0, 90.0
    if system in ("trigonal", "hexagonal"):
        ab = (a + b) / 2
        return ab, ab, c, 90.0, 90.0, 120.0
    if system == "cubic":
        x = (a + b + c) / 3
        return x, x, x, 90.0, 90.0, 90.0
    raise ValueError(f"unknown crystal system {system!r}")


def check(params, where: str) -> None:
    """Raise ParseError unless the parameters describe a real, non-degenerate cell."""
    a, b, c, al, be, ga = params
    if not all(np.isfinite(params)):
        raise ParseError(f"{where}: lattice parameters must be finite numbers")
    if not all(0 < x <= MAX_LENGTH for x in (a, b, c)):
        raise ParseError(f"{where}: lattice lengths must be in (0, {MAX_LENGTH:g}] Å, got {a:g} {b:g} {c:g}")
    if not all(0 < x < 180 for x in (al, be, ga)):
        raise ParseError(f"{where}: lattice angles must be in (0, 180) degrees, got {al:g} {be:g} {ga:g}")
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    if 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg <= 1e-6:
        raise ParseError(f"{where}: the angles {al:g} {be:g} {ga:g} do not form a three-dimensional cell")


def matrix(params) -> np.ndarray:
    from pymatgen.core import Lattice

    return Lattice.from_parameters(*params).matrix

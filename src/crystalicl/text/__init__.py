"""Crystal ↔ text codecs: ``encode(structure, fmt)`` and ``decode(text, fmt)``."""

from __future__ import annotations

import warnings

import numpy as np

from crystalicl.errors import EncodeError, ParseError
from crystalicl.symmetry import SYMPREC
from crystalicl.text import sgs, xyz

FORMATS = ("sgs", "sgs-wyckoff", "xyz", "cif")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _cell(structure):
    if not structure.is_ordered:
        raise EncodeError("disordered structures (partial occupancies) cannot be written as crystal text")
    if len(structure) == 0:
        raise EncodeError("empty structure")
    return (structure.lattice.matrix, structure.frac_coords,
            np.array([site.specie.Z for site in structure]), [site.specie.symbol for site in structure])


def encode(structure, fmt: str = "sgs", symprec: float = SYMPREC) -> str:
    """Write a pymatgen Structure as crystal text (deterministic; SGS formats are canonical)."""
    _check_fmt(fmt)
    if fmt == "cif":
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(structure))
    matrix, frac, numbers, symbols = _cell(structure)
    if fmt == "xyz":
        return xyz.encode(matrix, frac, symbols)
    return sgs.encode(matrix, frac, numbers, labels=fmt == "sgs-wyckoff", symprec=symprec)


def decode(text: str, fmt: str = "sgs"):
    """Read crystal text into a pymatgen Structure; raises only ParseError on bad text (and ImportError where a
    decoder's dependency is missing, which no text can fix)."""
    _check_fmt(fmt)
    if fmt == "cif":
        from pymatgen.core import Structure

        if not isinstance(text, str):
            raise ParseError(f"CIF text must be a str, got {type(text).__name__}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return Structure.from_str(text, fmt="cif")
        except Exception as e:
            raise ParseError(f"unreadable CIF: {e}") from None
    try:
        if fmt == "xyz":
            return xyz.decode(text)
        return sgs.decode(text, labels=fmt == "sgs-wyckoff")
    except (ParseError, ImportError):  # a missing dependency is not bad text: redrawing the sample cannot help
        raise
    except Exception as e:  # a decoder bug must still surface as a typed, explained error
        raise ParseError(f"could not decode {fmt} text: {type(e).__name__}: {e}") from e


def detect_format(texts) -> str:
    """The one crystal-text format (SGS-Wyckoff, SGS or XYZ) in which every text decodes.

    For an instruction set that has lost its sidecar: a model trained on SGS-Wyckoff text but labelled SGS samples
    under the SGS grammar, which forbids the Wyckoff letters it learned, and writes the wrong atom counts."""
    texts = list(texts)
    if not texts:
        raise ParseError("no crystal text to tell the format from")

    def decodes(text: str, fmt: str) -> bool:
        try:
            decode(text, fmt)
        except ParseError:
            return False
        return True

    fits = [fmt for fmt in ("sgs-wyckoff", "sgs", "xyz") if all(decodes(t, fmt) for t in texts)]
    if len(fits) != 1:
        raise ParseError(f"the crystal texts decode in {' and '.join(fits) if fits else 'no format'}; "
                         "the format cannot be told from them")
    return fits[0]


def written_space_group(text: str, fmt: str) -> int | None:
    """The space-group number an SGS text names on its first line (None for XYZ and CIF, which name none
    the model chose, or for an unknown symbol)."""
    _check_fmt(fmt)
    if not fmt.startswith("sgs"):
        return None
    from crystalicl.symmetry import space_group
    from crystalicl.text.parsing import lines

    ls = lines(text)
    try:
        return space_group(ls[0][1]).number if ls else None
    except KeyError:
        return None


__all__ = ["FORMATS", "encode", "decode", "written_space_group", "EncodeError", "ParseError", "SYMPREC"]

"""Line-level parsing shared by the text formats; every failure is a ParseError naming the line."""

from __future__ import annotations

import math
from functools import cache

from crystalicl.errors import ParseError

MAX_ATOMS = 1024


def lines(text: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based line numbers."""
    if not isinstance(text, str):
        raise ParseError(f"crystal text must be a str, got {type(text).__name__}")
    return [(i + 1, s.strip()) for i, s in enumerate(text.splitlines()) if s.strip()]


def floats(line: tuple[int, str], n: int, what: str) -> tuple[float, ...]:
    no, s = line
    parts = s.split()
    if len(parts) != n:
        raise ParseError(f"line {no}: expected {n} numbers for {what}, got {s!r}")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise ParseError(f"line {no}: expected {n} numbers for {what}, got {s!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ParseError(f"line {no}: {what} must be finite numbers, got {s!r}")
    return vals


@cache
def _symbols() -> frozenset[str]:
    from pymatgen.core.periodic_table import Element

    return frozenset(e.symbol for e in Element)


def element(token: str, no: int) -> str:
    if token not in _symbols():
        raise ParseError(f"line {no}: {token!r} is not an element symbol")
    return token

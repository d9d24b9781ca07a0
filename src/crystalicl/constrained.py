"""Constrained decoding for the compact tokenizer: only text the SGS / XYZ grammar accepts can be sampled.

A logits processor re-reads each sequence's generated text and allows, at every step, only tokens that
keep it a valid prefix of::

    SGS:  <space-group symbol> \\n <len> <len> <len> \\n <ang> <ang> <ang> \\n
          ( <element> [ ' ' <Wyckoff label of that group> ] \\n <coord> <coord> <coord> )+  separated by \\n, then EOS
    XYZ:  the same without the symbol line and labels
    len = [1-9] digit? . digit  (below 100 Å)
    ang = integer in [1, 179] ([60, 119] if triclinic)
    coord = 0 . digit digit

Wyckoff labels are restricted to those of the generated space group (multiplicity and letter must
agree), and a position without free parameters (e.g. ``1a`` at the origin) is offered once only, since
a second orbit there would sit on top of the first. Coordinates need not lie on the labelled position:
the decoder projects them onto it exactly.

No two atoms closer than :data:`MIN_DISTANCE` (the structural-validity cutoff): a parameter-free position
whose orbit would land on an atom already placed is not offered, and the digits of a site's last free
coordinate can only take values whose decoded orbit (the decoder's own projection and expansion) can keep
its distance from the atoms placed so far and from itself. Where every value collides, all stay allowed: the
grammar never leaves a sample without a way on.

A :class:`Target` adds the prompt's conditions to the grammar (``Grammar.target(conditions)``): the
space-group line can only be the requested group, elements only those of the requested formula, and the
crystal can only end once its composition is the formula (``sgs-wyckoff``: site multiplicities are known
from the labels, so a label is offered only while the formula stays reachable with the positions left;
``xyz``: one atom per line; ``sgs``: every element present, since a row's multiplicity depends on its
coordinates). A sample cut by the token budget still ends, so it may then miss the formula.

A :class:`crystalicl.packing.Packing` (``Grammar(..., packing=)``) ties the atoms to the written cell: the
crystal cannot end while its atoms' volume increments fill less of the cell than the training crystals ever
do, and a site (element, Wyckoff label) that would overfill it is not offered; held to a formula, only
numbers of formula units that fit the cell are aimed at, and (for a crystal system whose angles the decoder fixes)
the third cell length can only make a cell that holds a whole number of them. Where nothing fits, the bound steps
aside. In ``sgs`` text a site's size follows from its coordinates: only the digits of its last coordinate are held
to the bound, so a site whose first two coordinates leave the special positions can still overfill the cell.
Without a formula, a :class:`Target` may carry the sample's own ``window`` of packing ratios (drawn from the
training crystals', :meth:`crystalicl.packing.Packing.drawn_window`): the same rules then hold the atoms to it
first, and where it allows nothing, to the whole window (ending or going on, whichever lands nearer to it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from crystalicl.packing import Packing
from crystalicl.text.parsing import MAX_ATOMS as PARSE_MAX_ATOMS
from crystalicl.wyckoff import SHIFTS, by_letter

MAX_SITES = 64
SITE_TOKENS = 24  # element, label, three coordinates, separators
MAX_ATOMS = 256  # largest cell (conventional, for sgs-wyckoff) a formula constraint will aim at
MIN_DISTANCE = 0.5  # Å, as metrics.validity.structure_valid
# every cell length the grammar can write ([1-9] digit? . digit), and its index
LENGTH_TEXTS = tuple(f"{i / 10:.1f}" for i in range(10, 1000))
LENGTH_VALUES = np.array([float(x) for x in LENGTH_TEXTS])
LENGTH_INDEX = {x: i for i, x in enumerate(LENGTH_TEXTS)}


def _min_distance(points: np.ndarray, others: np.ndarray, metric: np.ndarray) -> float:
    """Shortest periodic distance (Å) from ``points`` to ``others`` and between distinct ``points``."""
    pairs = [points[:, None, :] - others[None, :, :]] if len(others) else []
    iu = np.triu_indices(len(points), 1)
    if len(iu[0]):
        pairs.append((points[iu[0]] - points[iu[1]])[:, None, :])
    if not pairs:
        return np.inf
    d = np.concatenate([x.reshape(-1, 3) for x in pairs])
    d = (d - np.round(d))[:, None, :] + SHIFTS[None, :, :]
    return float(np.sqrt(max(np.einsum("nsi,ij,nsj->ns", d, metric, d).min(), 0.0)))


@dataclass(frozen=True)
class Target:
    """Conditions the grammar enforces for one prompt (any part may be absent)."""

    symbol: str | None = None  # space-group symbol of the requested group
    formula: tuple[tuple[str, int], ...] | None = None  # reduced composition, element -> count
    window: tuple[float, float] | None = None  # without a formula: this sample's packing ratio window
    balanced: bool = False  # without a formula: end only on a charge-balanced composition (while more fits)
    n_elements: tuple[int, int] | None = None  # without a formula: fewest and most distinct elements
    # without a formula: end rather than go on with an element the model gives less than this share of its element
    # probability, where the crystal may end (the packing bound otherwise forces H, B, C, N, O into a cell that
    # is too empty: their volume increments are the smallest, so they are what still fits)
    filler_floor: float | None = None

    @property
    def elements(self) -> frozenset[str] | None:
        return None if self.formula is None else frozenset(e for e, _ in self.formula)

    @property
    def empty(self) -> bool:
        return (self.symbol is None and self.formula is None and self.window is None and not self.balanced
                and self.n_elements is None and self.filler_floor is None)


@cache
def _int_prefix(s: str, values: tuple[int, ...]) -> tuple[tuple[str, ...], bool]:
    """Digits that extend ``s`` towards one of the integers ``values``, and whether ``s`` already is one."""
    texts = [str(v) for v in values]
    nxt = tuple(sorted({v[len(s)] for v in texts if v.startswith(s) and len(v) > len(s)}))
    return nxt, s in texts


@cache
def _third_angles(alpha: int, beta: int) -> tuple[int, ...]:
    """Integer gammas that make a three-dimensional cell with ``alpha`` and ``beta`` (the decoder's check)."""
    ca, cb = np.cos(np.radians([alpha, beta]))
    g = np.arange(1, 180)
    cg = np.cos(np.radians(g))
    return tuple(int(x) for x in g[1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg > 1e-5])


class Grammar:
    """Token classes of a tokenizer and the allowed-next-token sets of the crystal grammars."""

    def __init__(self, tokenizer, fmt: str, packing: Packing | None = None):
        from pymatgen.core.periodic_table import Element

        from crystalicl.symmetry import all_space_groups

        if fmt not in ("sgs", "sgs-wyckoff", "xyz"):
            raise ValueError(f"no grammar for format {fmt!r}")
        self.fmt = fmt
        self.packing = packing
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(tokenizer)
        self.eos = tokenizer.eos_token_id

        def ids(tokens) -> np.ndarray:
            missing = [t for t in tokens if t not in vocab]
            if missing:
                raise ValueError(f"tokenizer lacks tokens {missing[:5]}: constrained decoding needs the compact "
                                 "crystal tokenizer")
            return np.array([vocab[t] for t in tokens], int)

        self.groups = {g.symbol: g for g in all_space_groups()}
        self.cls = {
            "group": ids(list(self.groups)),
            "element": ids([e.symbol for e in Element]),
            "digit": ids(list("0123456789")),
            "nonzero": ids(list("123456789")),
            "zero": ids(["0"]),
            "dot": ids(["."]),
            "space": ids([" "]),
            "newline": ids(["\n"]),
            "eos": np.array([self.eos], int),
        }
        self.token_id = {t: vocab[t] for t in list("0123456789abcdefghijklmnopqrstuvwxyzA")}
        self.digit_of = {vocab[d]: d for d in "0123456789"}
        self._geometry_cache: dict[str, tuple | None] = {}  # text prefix -> _geometry
        self._blocked_cache: dict[str, frozenset[str]] = {}  # text prefix -> blocked
        self.token_id_of = {t: vocab[t] for t in [*self.groups, *(e.symbol for e in Element)]}
        self._fill_cache: dict[str, tuple[float, float, float] | None] = {}  # text prefix -> _fill

    @cache  # noqa: B019  (one grammar per generator; bounded by the 230 groups)
    def labels(self, symbol: str) -> tuple[str, ...]:
        from crystalicl.wyckoff import wyckoff_positions

        return tuple(w.label for w in wyckoff_positions(self.groups[symbol].hall_number))

    @cache  # noqa: B019
    def fixed_labels(self, symbol: str) -> frozenset[str]:
        """Positions without free parameters: each can hold one orbit only (a second would overlap it)."""
        from crystalicl.wyckoff import wyckoff_positions

        return frozenset(w.label for w in wyckoff_positions(self.groups[symbol].hall_number)
                         if not np.any(w.ops[0, :, :3]))

    @cache  # noqa: B019
    def last_free(self, symbol: str, label: str | None) -> int | None:
        """Index of the last coordinate the decoded orbit depends on (None: a parameter-free position)."""
        if label is None:  # xyz, or sgs where the decoder snaps on all three coordinates
            return 2
        rows = np.flatnonzero(np.any(by_letter(self.groups[symbol].hall_number)[label[-1]].ops[0, :, :3], axis=1))
        return int(rows[-1]) if len(rows) else None

    # --- no atoms on top of each other ----------------------------------------------------------------
    @staticmethod
    def _orbit(group, label: str | None, xyz: list[float], matrix: np.ndarray) -> np.ndarray:
        """The atoms one site line decodes to (xyz: the point itself; SGS: the decoder's own expansion)."""
        from crystalicl.text.sgs import site_orbit

        return np.mod(np.array([xyz]), 1.0) if group is None else site_orbit(group, label, xyz, matrix)

    def _geometry(self, lines: list[str], head: int, n_sites: int):
        """(metric, fractional positions of the atoms of the first ``n_sites`` sites, group, lattice matrix) as
        the decoder builds them, or None where the cell cannot be built. Cached by text prefix and built
        incrementally."""
        key = "\n".join(lines[:head + 2 + 2 * n_sites])
        if key in self._geometry_cache:
            return self._geometry_cache[key]
        from crystalicl.errors import ParseError
        from crystalicl.text import lattice as lat
        from crystalicl.text.sgs import cell_matrix

        try:
            if n_sites == 0:
                params = tuple(float(x) for x in (lines[head] + " " + lines[head + 1]).split(" "))
                group = self.groups[lines[0]] if head else None
                if group is None:
                    lat.check(params, "cell")
                matrix = lat.matrix(params) if group is None else cell_matrix(group, params)
                out = (matrix @ matrix.T, np.zeros((0, 3)), group, matrix)
            else:
                prev = self._geometry(lines, head, n_sites - 1)
                if prev is None:
                    return None
                metric, atoms, group, matrix = prev
                el_line, c_line = lines[head + 2 * n_sites], lines[head + 2 * n_sites + 1]
                xyz = [float(x) for x in c_line.split(" ")]
                label = el_line.split(" ")[1] if self.fmt == "sgs-wyckoff" else None
                out = (metric, np.concatenate([atoms, self._orbit(group, label, xyz, matrix)]), group, matrix)
        except (ParseError, ValueError, KeyError, IndexError):
            out = None
        if len(self._geometry_cache) > 50_000:
            self._geometry_cache.clear()
        self._geometry_cache[key] = out
        return out

    def blocked(self, lines: list[str], head: int, n_sites: int) -> frozenset[str]:
        """Parameter-free positions whose atoms would sit within :data:`MIN_DISTANCE` of those placed."""
        if self.fmt != "sgs-wyckoff":
            return frozenset()
        key = "\n".join(lines[:head + 2 + 2 * n_sites])
        if key not in self._blocked_cache:
            geo = self._geometry(lines, head, n_sites)
            out = frozenset()
            if geo is not None and len(geo[1]):
                metric, atoms, group, _ = geo
                table = by_letter(group.hall_number)
                out = frozenset(lab for lab in self.fixed_labels(lines[0]) if _min_distance(
                    table[lab[-1]].orbit(np.zeros(3)), atoms, metric) < MIN_DISTANCE)
            if len(self._blocked_cache) > 50_000:
                self._blocked_cache.clear()
            self._blocked_cache[key] = out
        return self._blocked_cache[key]

    # --- atoms that fit the cell (packing) --------------------------------------------------------------
    def _fill(self, lines: list[str], head: int, n_sites: int) -> tuple[float, float, float, int, float, float] | None:
        """(volume increments of the atoms of the first ``n_sites`` sites, the least and the most the written
        cell holds, its atoms, the most atoms it may have, the cell's volume), or None without a packing, a cell,
        or a volume for every element placed."""
        if self.packing is None:
            return None
        key = "\n".join(lines[:head + 2 + 2 * n_sites])
        if key not in self._fill_cache:  # built incrementally, like _geometry: the last site added to the rest
            out = None
            geo = self._geometry(lines, head, n_sites)
            if geo is not None and n_sites == 0:
                volume = abs(float(np.linalg.det(geo[3])))
                out = (0.0, *self.packing.window(volume), 0, self._atom_cap(lines[0] if head else ""), volume)
            elif geo is not None:
                prev = self._fill(lines, head, n_sites - 1)
                v = self.packing.volumes.get(lines[head + 2 * n_sites].split(" ")[0])
                if prev is not None and v is not None:
                    total, least, most, before, cap, volume = prev
                    out = (total + v * (len(geo[1]) - before), least, most, len(geo[1]), cap, volume)
            if len(self._fill_cache) > 50_000:
                self._fill_cache.clear()
            self._fill_cache[key] = out
        return self._fill_cache[key]

    @staticmethod
    def _fills(fill, window: tuple[float, float] | None) -> list:
        """The fills to bound the atoms by, in order of preference: with a sample's own ratio ``window`` first
        (its least and most taken from it), then the whole window; none without a bound."""
        if fill is None:
            return []
        if window is None:
            return [fill]
        total, _, _, atoms, cap, volume = fill
        return [(total, volume / window[1], volume / window[0], atoms, cap, volume), fill]

    def _atom_cap(self, symbol: str) -> float:
        """Most atoms a cell may hold: the training crystals' largest primitive cell, times the lattice points
        of the group's conventional cell (sgs text writes it; P 1, A/B/C/I 2, R 3 on hexagonal axes, F 4)."""
        if self.packing is None or self.packing.max_atoms is None:
            return float("inf")
        return self.packing.max_atoms * ({"A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}.get(symbol[:1], 1))

    def _smallest_orbit(self, symbol: str, taken: frozenset[str] = frozenset()) -> int:
        """Fewest atoms a next site can add (sgs: its orbit depends on its coordinates; the group's smallest)."""
        if self.fmt == "xyz":
            return 1
        fixed = self.fixed_labels(symbol)
        return min((int(lab[:-1]) for lab in self.labels(symbol) if lab not in taken & fixed),
                   default=min(int(lab[:-1]) for lab in self.labels(symbol)))

    def _fits(self, fill, element: str, m: int) -> bool:
        """Whether ``m`` more atoms of ``element`` keep the cell from overfilling (True without a bound)."""
        if fill is None:
            return True
        v = self.packing.volumes.get(element)
        return v is not None and fill[0] + v * m <= fill[2] and fill[3] + m <= fill[4]

    def _kspan(self, formula, fill) -> tuple[int, int] | None:
        """Numbers of formula units that fill the written cell neither too little nor too much (None: no
        bound, or none fits)."""
        if fill is None:
            return None
        unit = self.packing.needed(dict(formula))
        if not unit:
            return None
        lo = max(1, int(np.ceil(fill[1] / unit)))
        hi = int(min(np.floor(fill[2] / unit), fill[4] // sum(r for _, r in formula)))
        return (lo, hi) if lo <= hi else None

    @cache  # noqa: B019  (bounded by the targets met)
    def _volumes(self, symbol: str, formula, sites: int) -> tuple[tuple[float, float], ...]:
        """Cell volumes (ranges) that hold a whole number of formula units the group's positions can give."""
        unit = self.packing.needed(dict(formula))
        if not unit:
            return ()
        per_unit = sum(r for _, r in formula)
        return tuple((self.packing.low * k * unit, self.packing.high * k * unit)
                     for k in range(1, int(min(MAX_ATOMS, self._atom_cap(symbol)) // per_unit) + 1)
                     if self._feasible(symbol, formula, (), frozenset(), sites, (k, k)))

    @cache  # noqa: B019  (bounded by the cells met)
    def _c_volumes(self, symbol: str, a: float, b: float) -> np.ndarray:
        """Decoded cell volume for every third length the grammar can write (:data:`LENGTH_TEXTS`), after a, b."""
        from crystalicl.text.sgs import cell_matrix

        group = self.groups[symbol]
        return np.array([abs(float(np.linalg.det(cell_matrix(group, (a, b, c, 90.0, 90.0, 90.0)))))
                         for c in LENGTH_VALUES])

    def _packed_length(self, symbol: str, cur: str, allowed: np.ndarray, formula, room: int) -> np.ndarray:
        """Held to a formula: the digits of the third cell length after which the cell can still hold a whole
        number of formula units (a crystal system whose angles the decoder fixes: its volume is then known from
        the lengths alone). A cell too small for the formula would otherwise fill with overlapping atoms."""
        parts = cur.split(" ")
        if len(parts) != 3 or self.groups[symbol].crystal_system in ("triclinic", "monoclinic"):
            return allowed
        ranges = self._volumes(symbol, formula, max(1, min(MAX_SITES, room // SITE_TOKENS - 1)))
        if not ranges:
            return allowed
        volumes = self._c_volumes(symbol, float(parts[0]), float(parts[1]))
        fits = np.zeros(len(volumes), bool)
        for lo, hi in ranges:
            fits |= (volumes >= lo) & (volumes <= hi)
        if not fits.any():
            return allowed
        typed, newline = parts[2], int(self.cls["newline"][0])
        keep = []
        for t in allowed:
            nxt = typed if int(t) == newline else typed + ("." if int(t) == int(self.cls["dot"][0])
                                                            else self.digit_of[int(t)])
            ok = fits[LENGTH_INDEX[typed]] if int(t) == newline and typed in LENGTH_INDEX else \
                any(fits[i] for v, i in LENGTH_INDEX.items() if v.startswith(nxt))
            if ok:
                keep.append(int(t))
        return np.array(keep, int) if keep else allowed

    def _spaced_digits(self, lines: list[str], head: int, n_sites: int, allowed: np.ndarray,
                       window: tuple[float, float] | None = None) -> np.ndarray:
        """Of the digits ``allowed`` next in the current coordinate, those after which the decoded site can
        still keep clear of the placed atoms and of itself (checked on the last coordinate the site's orbit
        depends on, over every completion of that coordinate; all stay allowed if none can)."""
        parts = lines[-1].split(" ")
        label = lines[-2].split(" ")[1] if self.fmt == "sgs-wyckoff" else None
        if self.last_free(lines[0] if head else "", label) != len(parts) - 1:
            return allowed
        geo = self._geometry(lines, head, n_sites)
        if geo is None:
            return allowed
        metric, atoms, group, matrix = geo
        done = [float(x) for x in parts[:-1]]
        pad = [0.0] * (2 - len(done))  # coordinates after the last free one do not move the orbit
        fill = self._fill(lines, head, n_sites)
        volume = self.packing.volumes.get(lines[-2].split(" ")[0]) if fill is not None else None
        orbits: dict[str, tuple[bool, int]] = {}

        def clear(value: str, packed) -> bool:
            """Clear of the atoms placed (and, given a fill ``packed``, not overfilling the cell: sgs orbits grow
            with coordinates off the special positions)."""
            if value not in orbits:
                orbit = self._orbit(group, label, [*done, float(value), *pad], matrix)
                orbits[value] = (_min_distance(orbit, atoms, metric) >= MIN_DISTANCE, len(orbit))
            apart, size = orbits[value]
            return apart and (packed is None or (packed[0] + volume * size <= packed[2]
                                                 and packed[3] + size <= packed[4]))

        typed = parts[-1]
        for packed in self._fills(fill if volume is not None else None, window) + [None]:
            keep = [t for t in allowed if any(clear(typed + self.digit_of[int(t)] + tail, packed)
                                              for tail in ([""] if len(typed) == 3 else "0123456789"))]
            if keep:
                return np.array(keep, int)
        return allowed

    def _union(self, *names) -> np.ndarray:
        return np.concatenate([self.cls[n] for n in names])

    def target(self, conditions: dict | None) -> Target | None:
        """The :class:`Target` of a prompt's conditions (formula and space group; other conditions are
        properties the grammar cannot check)."""
        from pymatgen.core import Composition

        from crystalicl.errors import EncodeError
        from crystalicl.symmetry import space_group

        conditions = conditions or {}
        symbol = formula = None
        if conditions.get("space_group") is not None and self.fmt != "xyz":
            symbol = space_group(int(conditions["space_group"])).symbol
        if conditions.get("formula"):
            try:
                comp, _ = Composition(conditions["formula"]).get_integer_formula_and_factor()
                reduced = Composition(comp)
            except (ValueError, KeyError) as e:
                raise EncodeError(f"cannot read the formula {conditions['formula']!r}: {e}") from e
            formula = tuple(sorted((el.symbol, int(round(n))) for el, n in reduced.items()))
            missing = [e for e, _ in formula if e not in self.element_symbols]
            if missing:
                raise EncodeError(f"formula {conditions['formula']!r} has elements the grammar lacks: {missing}")
        t = Target(symbol, formula)
        return None if t.empty else t

    @property
    def element_symbols(self) -> frozenset[str]:
        from pymatgen.core.periodic_table import Element

        return frozenset(e.symbol for e in Element)

    def allowed(self, text: str, room: int = 10**9, target: Target | None = None) -> np.ndarray:
        """Token ids allowed after the generated ``text`` with ``room`` tokens left in the budget.

        A complete site ends the crystal when another one would not fit (a site is at most ~24 tokens),
        so a sample cut by the budget still parses. ``target`` restricts the text to the prompt's
        conditions (see the module docstring).
        """
        lines = text.split("\n")
        head = 0 if self.fmt == "xyz" else 1
        n = len(lines)
        cur = lines[-1]
        if head and n == 1:  # space-group symbol line
            if cur != "":
                return self.cls["newline"]
            if target is not None and target.symbol is not None:
                return np.array([self.token_id_of[target.symbol]], int)
            return self.cls["group"]
        if n == head + 1:
            allowed = self._numbers(cur, 3, self._length)
            if head and target is not None and target.formula is not None and self.packing is not None:
                return self._packed_length(lines[0], cur, allowed, target.formula, room)
            return allowed
        if n == head + 2:
            triclinic = head and lines[0] in self.groups and self.groups[lines[0]].crystal_system == "triclinic"
            values = tuple(range(60, 120)) if triclinic else tuple(range(1, 180))
            parts = cur.split(" ")
            if self.fmt == "xyz" and len(parts) == 2:  # the cell is taken as written: keep it three-dimensional
                values = tuple(b for b in range(1, 180) if _third_angles(int(parts[0]), b))
            elif self.fmt == "xyz" and len(parts) == 3:
                values = _third_angles(int(parts[0]), int(parts[1]))
            return self._numbers(cur, 3, lambda x: self._angle(x, values))
        site_line = n - head - 3
        formula = target.formula if target is not None else None
        window = target.window if target is not None and formula is None else None
        span = target.n_elements if target is not None and formula is None else None
        sites = [ln.split(" ") for ln in lines[head + 2:-1:2]]  # complete element (+ label) lines
        if site_line % 2 == 0:  # element line (or end)
            fill = self._fill(lines, head, len(sites))
            if cur == "":
                blocked = self.blocked(lines, head, len(sites))
                if formula is None:
                    return self._packed_elements(self._fills(fill, window), lines[0] if head else "", sites, blocked,
                                                 span)
                return self._elements(formula, lines[0] if head else "", sites, room, blocked, fill)
            if self.fmt != "sgs-wyckoff":
                return self.cls["newline"]
            used = {p[1] for p in sites if len(p) > 1}
            # budget as at the start of this line: element, space and the label typed so far
            after = self._sites_after(room + 2 + len(cur.split(" ")[-1]), len(sites))
            return self._label(cur, lines[0], used, formula, sites, after, self.blocked(lines, head, len(sites)), fill,
                               self._fills(fill, window)[0] if window is not None else None)
        allowed = self._numbers(cur, 3, self._coordinate)
        if len(cur.split(" ")[-1]) in (2, 3):  # the digits of a coordinate
            allowed = self._spaced_digits(lines, head, site_line // 2, allowed, window)
        if self.cls["newline"][0] in allowed and len(allowed) == 1:  # coordinate line complete
            symbol = lines[0] if head else ""
            if site_line // 2 + 1 >= MAX_SITES or room < SITE_TOKENS or \
                    self._atoms_bound(symbol, lines[head + 2::2]) + self._largest_orbit(symbol) > PARSE_MAX_ATOMS:
                return self.cls["eos"]
            sites = [ln.split(" ") for ln in lines[head + 2::2]]
            if formula is not None:
                if not self._complete(formula, sites):
                    return self.cls["newline"]
                if not self._extensible(formula, lines[0] if head else "", sites, room):
                    return self.cls["eos"]
            fill = self._fill(lines, head, len(sites))
            if fill is not None:  # not while the cell is nearly empty; no new site once nothing more fits
                taken = frozenset(p[1] for p in sites if len(p) > 1) | self.blocked(lines, head, len(sites))
                m = self._smallest_orbit(symbol, taken)
                names = [e for e, _ in formula] if formula is not None else self._free_names(sites, span)
                fills = self._fills(fill, window)  # the sample's own window first, then the whole
                if self._too_few(sites, span) and any(self._fits(f, e, m) for f in fills
                                                      for e in self._new_names(sites)):
                    return self.cls["newline"]  # an element short of the range, and a site of a new one fits
                for i, f in enumerate(fills):
                    can_end, can_go = f[0] >= f[1], any(self._fits(f, e, m) for e in names)
                    if can_end != can_go:
                        return self.cls["eos"] if can_end else self.cls["newline"]
                    if can_end:  # either way fits: the model chooses
                        break
                    if i == 0 and len(fills) > 1:  # too empty for its own window, and the next site overfills it:
                        whole = fills[1]  # the nearer side, where the whole window allows both
                        light = min((e for e in names if e in self.packing.volumes), key=self.packing.volumes.get,
                                    default=None)
                        if light is not None and f[0] >= whole[1] and self._fits(whole, light, m):
                            short = f[1] / max(f[0], 1e-9)
                            over = (f[0] + self.packing.volumes[light] * m) / f[2]
                            return self.cls["eos"] if short <= over else self.cls["newline"]
            if fill is None and self._too_few(sites, span):  # unbounded: too few distinct elements yet
                return self.cls["newline"]
            if target is not None and target.balanced and formula is None and not self._balanced(sites):
                return self.cls["newline"]
            return self._union("newline", "eos")
        return allowed

    def may_end(self, text: str, target: Target | None = None) -> bool:
        """Whether a crystal without a formula, at the start of an element line, could have ended after its last
        site: its atoms fill the cell at least as much as the whole packing window asks, and it meets ``target``'s
        element range and charge balance."""
        if self.packing is None or not text.endswith("\n") or (target is not None and target.formula is not None):
            return False  # checked before splitting: the logits processor asks at nearly every token
        lines = text.split("\n")
        head = 0 if self.fmt == "xyz" else 1
        site_line = len(lines) - head - 3
        if site_line < 2 or site_line % 2:
            return False
        sites = [ln.split(" ") for ln in lines[head + 2:-1:2]]
        fill = self._fill(lines, head, len(sites))
        if fill is None or fill[0] < fill[1]:
            return False
        span = target.n_elements if target is not None else None
        return not self._too_few(sites, span) and not (target is not None and target.balanced
                                                       and not self._balanced(sites))

    def _largest_orbit(self, symbol: str) -> int:
        return 1 if self.fmt == "xyz" else max(int(lab[:-1]) for lab in self.labels(symbol))

    def _atoms_bound(self, symbol: str, element_lines: list[str]) -> int:
        """Most atoms the written sites can decode to (the parser refuses more than its limit)."""
        if self.fmt == "sgs":
            return len(element_lines) * self._largest_orbit(symbol)
        return sum(self._counts([ln.split(" ") for ln in element_lines]).values())

    # --- formula constraint ---------------------------------------------------------------------------
    def _counts(self, sites: list[list[str]]) -> dict[str, int]:
        """Atoms per element so far (the label's multiplicity for sgs-wyckoff, one per line for xyz)."""
        counts: dict[str, int] = {}
        for p in sites:
            m = int(p[1][:-1]) if self.fmt == "sgs-wyckoff" and len(p) > 1 else 1
            counts[p[0]] = counts.get(p[0], 0) + m
        return counts

    def _balanced(self, sites: list[list[str]]) -> bool:
        """Whether the atoms so far make a charge-balanced composition (SMACT, as the validity metric checks;
        ``sgs`` text, whose multiplicities follow from the coordinates, is taken as balanced)."""
        if self.fmt == "sgs":
            return True
        from crystalicl.metrics.validity import composition_valid

        counts = sorted(self._counts(sites).items())
        return composition_valid(tuple(e for e, _ in counts), tuple(n for _, n in counts))

    def _complete(self, formula, sites) -> bool:
        """Whether the crystal may end here: its composition is the formula (sgs: all elements present)."""
        counts = self._counts(sites)
        if self.fmt == "sgs":
            return set(counts) == {e for e, _ in formula}
        k, r0 = divmod(counts.get(formula[0][0], 0), formula[0][1])
        return k >= 1 and r0 == 0 and len(counts) == len(formula) and all(counts.get(e, 0) == k * r for e, r in formula)

    @staticmethod
    def _sites_after(room: int, n_sites: int) -> int:
        """Sites that still fit after the one being written (token budget and :data:`MAX_SITES`)."""
        return max(0, min(room // SITE_TOKENS - 1, MAX_SITES - n_sites - 1))

    def _choices(self, symbol: str, used: frozenset[str]):
        """(multiplicity, labels it uses up) of each site that could be added next."""
        if self.fmt != "sgs-wyckoff":
            return [(1, frozenset())]
        fixed = self.fixed_labels(symbol)
        return [(int(lab[:-1]), frozenset({lab}) & fixed) for lab in self.labels(symbol) if lab not in used & fixed]

    @staticmethod
    def _add(counts: dict[str, int], element: str, m: int) -> tuple[tuple[str, int], ...]:
        c = dict(counts)
        c[element] = c.get(element, 0) + m
        return tuple(sorted(c.items()))

    def _can_add(self, formula, symbol: str, sites, element: str, after: int,
                 blocked: frozenset[str] = frozenset(), kspan: tuple[int, int] | None = None) -> bool:
        """Whether a site of ``element`` (some label) can be added and the formula still be reached (in a
        number of units within ``kspan``); ``blocked`` positions count as taken."""
        used = frozenset(p[1] for p in sites if len(p) > 1) | blocked
        counts = self._counts(sites)
        return any(self._feasible(symbol, formula, self._add(counts, element, m), used | extra, after, kspan)
                   for m, extra in self._choices(symbol, used))

    def _free_names(self, sites, span: tuple[int, int] | None = None) -> list[str] | None:
        """Without a formula: the elements a next site may take, those with a volume (None without a packing),
        only those already placed once the crystal has the most distinct elements ``span`` allows."""
        used = {p[0] for p in sites}
        if span is not None and len(used) >= span[1]:
            return sorted(used)
        return None if self.packing is None else list(self.packing.volumes)

    @staticmethod
    def _too_few(sites, span: tuple[int, int] | None) -> bool:
        """Whether the crystal has fewer distinct elements than ``span`` asks for."""
        return span is not None and len({p[0] for p in sites}) < span[0]

    def _new_names(self, sites) -> list[str]:
        """Elements with a volume that the crystal does not hold yet."""
        used = {p[0] for p in sites}
        return [e for e in self.packing.volumes if e not in used]

    def _packed_elements(self, fills: list, symbol: str, sites, blocked: frozenset[str],
                         span: tuple[int, int] | None = None) -> np.ndarray:
        """Without a formula: the elements of which a smallest site still fits the cell, by the first of
        ``fills`` that lets one (if none does, all elements, or those held once ``span``'s most is reached), no more
        distinct ones than ``span`` allows; while the crystal is short of the fewest, an element it holds only if a
        new one's site still fits after it."""
        names = self._free_names(sites, span)
        used = {p[0] for p in sites}
        full = span is not None and len(used) >= span[1]
        if not fills:  # no bound to check: any element, or those placed once the crystal has its most
            return np.array([self.token_id_of[e] for e in names if e in self.token_id_of], int) if full \
                else self.cls["element"]
        taken = frozenset(p[1] for p in sites if len(p) > 1) | blocked
        m = self._smallest_orbit(symbol, taken)
        few, m_next = self._too_few(sites, span), m
        if few and self.fmt != "xyz":  # the smallest site left once a smallest one is taken (a fixed position
            first = min((lab for lab in self.labels(symbol) if lab not in taken & self.fixed_labels(symbol)),
                        key=lambda lab: int(lab[:-1]), default=None)  # holds one orbit only)
            m_next = self._smallest_orbit(symbol, taken | {first}) if first is not None else m
        for fill in fills:
            ok = [e for e in names if e in self.token_id_of and self._fits(fill, e, m)]
            new = [e for e in ok if e not in used]
            if few and new:  # a site of an element held already must leave room for the lightest new one
                v = self.packing.volumes
                light = min(new, key=v.get)
                ok = new + [e for e in ok if e in used and self._fits(
                    (fill[0] + v[e] * m, fill[1], fill[2], fill[3] + m, fill[4]), light, m_next)]
            if ok:
                return np.array([self.token_id_of[e] for e in ok], int)
        if full:  # nothing fits: overfill, but within the range
            return np.array([self.token_id_of[e] for e in names if e in self.token_id_of], int)
        return self.cls["element"]

    def _elements(self, formula, symbol: str, sites, room: int, blocked: frozenset[str], fill=None) -> np.ndarray:
        if self.fmt == "sgs":  # keep a row for every element still missing
            rows_left = min(self._sites_after(room, len(sites)) + 1,
                            (PARSE_MAX_ATOMS - self._atoms_bound(symbol, [p[0] for p in sites]))
                            // self._largest_orbit(symbol))
            missing = [e for e, _ in formula if e not in {p[0] for p in sites}]
            ok = missing if len(missing) >= rows_left else [e for e, _ in formula]
        else:
            after = self._sites_after(room, len(sites))
            kspan = self._kspan(formula, fill)
            tiers = [(blocked, kspan)] * (kspan is not None) + [(blocked, None), (frozenset(), None)]
            ok = next((x for x in ([e for e, _ in formula if self._can_add(formula, symbol, sites, e, after, b, k)]
                                   for b, k in tiers) if x), [])
            if not ok and not sites:  # the formula does not fit the budget: still write a crystal of its elements
                ok = [e for e, _ in formula]
        return np.array([self.token_id_of[e] for e in ok], int) if ok else self.cls["eos"]

    def _extensible(self, formula, symbol: str, sites, room: int) -> bool:
        """Whether another site can still lead to the formula (else the crystal must end)."""
        if self.fmt == "sgs":
            return True
        after = self._sites_after(room - 1, len(sites))  # as at the next line's start, after the newline
        return any(self._can_add(formula, symbol, sites, e, after) for e, _ in formula)

    @cache  # noqa: B019  (bounded by the distinct partial compositions met while sampling)
    def _feasible(self, symbol: str, formula, counts: tuple[tuple[str, int], ...], used: frozenset[str],
                  sites: int, kspan: tuple[int, int] | None = None) -> bool:
        """Whether some number of formula units (within ``kspan``, if given) is reachable from ``counts`` with
        at most ``sites`` more sites on the positions left: each element's deficit is a sum of multiplicities of
        positions with free parameters (reusable) and of unused fixed positions (once each, shared out between
        elements).
        Fixed positions of equal multiplicity are interchangeable, so the search runs over how many of
        each multiplicity every element takes.
        """
        from itertools import product

        have = dict(counts)
        if any(e not in dict(formula) for e in have):
            return False
        free, fixed = self._positions(symbol, used)
        top = max([*free, *(m for m, _ in fixed)], default=1)
        per_unit = sum(r for _, r in formula)
        kmin = max(1, max(-(-have.get(e, 0) // r) for e, r in formula))
        kmax = MAX_ATOMS // per_unit
        if kspan is not None:
            kmin, kmax = max(kmin, kspan[0]), min(kmax, kspan[1])
        for k in range(kmin, kmax + 1):
            deficits = [k * r - have.get(e, 0) for e, r in formula]
            if sum(-(-d // top) for d in deficits) > sites:  # grows with k: no larger k helps
                return False
            states = {tuple(c for _, c in fixed): 0}  # unused fixed positions per multiplicity -> sites used
            for d in deficits:
                nxt: dict[tuple[int, ...], int] = {}
                for left, used_sites in states.items():
                    for take in product(*(range(c + 1) for c in left)):
                        rest = d - sum(t * m for t, (m, _) in zip(take, fixed, strict=True))
                        if rest < 0:
                            continue
                        total = used_sites + sum(take) + self._fewest_free(symbol, rest)
                        key = tuple(c - t for c, t in zip(left, take, strict=True))
                        if total <= sites and total < nxt.get(key, sites + 1):
                            nxt[key] = total
                states = nxt
                if not states:
                    break
            if states:
                return True
        return False

    @cache  # noqa: B019
    def _positions(self, symbol: str, used: frozenset[str]) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """Multiplicities of the reusable positions, and (multiplicity, count) of the unused fixed ones."""
        if self.fmt != "sgs-wyckoff":
            return (1,), ()
        fixed = self.fixed_labels(symbol)
        free = tuple(sorted({int(lab[:-1]) for lab in self.labels(symbol) if lab not in fixed}))
        left: dict[int, int] = {}
        for lab in self.labels(symbol):
            if lab in fixed and lab not in used:
                left[int(lab[:-1])] = left.get(int(lab[:-1]), 0) + 1
        return free, tuple(sorted(left.items()))

    @cache  # noqa: B019
    def _fewest_free(self, symbol: str, d: int) -> int:
        """The fewest sites on reusable positions holding exactly ``d`` atoms (a large number if none can)."""
        return int(self._fewest_free_table(symbol)[d]) if d <= MAX_ATOMS else MAX_ATOMS + MAX_SITES

    @cache  # noqa: B019
    def _fewest_free_table(self, symbol: str) -> np.ndarray:
        free, _ = self._positions(symbol, frozenset())
        fewest = np.full(MAX_ATOMS + 1, MAX_ATOMS + MAX_SITES)
        fewest[0] = 0
        for m in free:
            for d in range(m, MAX_ATOMS + 1):
                fewest[d] = min(fewest[d], fewest[d - m] + 1)
        return fewest

    def _numbers(self, cur: str, count: int, number) -> np.ndarray:
        parts = cur.split(" ")
        if len(parts) > count:
            return self.cls["eos"]  # cannot happen under the grammar; end the sequence
        done = number(parts[-1])
        nxt = done[0]
        if done[1]:  # the number is complete
            end = self.cls["newline"] if len(parts) == count else self.cls["space"]
            return end if len(nxt) == 0 else np.concatenate([nxt, end])
        return nxt

    def _length(self, s: str):
        if s == "":
            return self.cls["nonzero"], False
        m = re.fullmatch(r"[1-9]\d?(\.\d?)?", s)
        if not m:
            return self.cls["eos"], False
        if "." not in s:
            return (self.cls["dot"] if len(s) == 2 else self._union("digit", "dot")), False
        return (self.cls["digit"], False) if s.endswith(".") else (np.array([], int), True)

    def _angle(self, s: str, values: tuple[int, ...]):
        """Integer degrees among ``values``; any triple in [60, 119] is a valid triclinic cell, other systems
        only keep the angles their regularisation does not overwrite."""
        nxt, complete = _int_prefix(s, values)
        return np.array([self.token_id[d] for d in nxt], int), complete

    def _coordinate(self, s: str):
        if s == "":
            return self.cls["zero"], False
        if s == "0":
            return self.cls["dot"], False
        if len(s) < 4:
            return self.cls["digit"], False
        return np.array([], int), True

    def _label(self, cur: str, symbol: str, used: set[str], formula=None, sites=(), after: int = 0,
               blocked: frozenset[str] = frozenset(), fill=None, narrow=None) -> np.ndarray:
        parts = cur.split(" ")
        if len(parts) == 1:
            return self.cls["space"]
        typed = parts[1]
        fixed = self.fixed_labels(symbol)
        counts = self._counts(sites)

        kspan = self._kspan(formula, fill) if formula is not None else None

        def options(taken: set[str], feasible: bool, packed) -> list[str]:
            labs = [lab for lab in self.labels(symbol) if lab.startswith(typed) and lab not in taken & fixed]
            if packed is not None and formula is None:
                labs = [lab for lab in labs if self._fits(packed, parts[0], int(lab[:-1]))]
            if not feasible:
                return labs
            return [lab for lab in labs if self._feasible(symbol, formula, self._add(counts, parts[0], int(lab[:-1])),
                                                          frozenset(taken | ({lab} & fixed)), after,
                                                          kspan if packed is not None else None)]

        # preference: clear of placed atoms, the formula reachable and the cell filled right (without a formula:
        # by the sample's own window, then the whole); then without the fill; then the formula reachable; then
        # any free label
        f = formula is not None
        packed = fill is not None and (kspan is not None or not f)
        tiers = ([(used | blocked, f, narrow)] * (packed and not f and narrow is not None)
                 + [(used | blocked, f, fill)] * packed + [(used | blocked, f, None), (used, f, None),
                                                           (used, False, None)])
        labels = next((x for x in (options(t, f, p) for t, f, p in tiers) if x), [])
        nxt = sorted({lab[len(typed)] for lab in labels if len(lab) > len(typed)})
        ids = [self.token_id[c] for c in nxt]
        if typed in labels:
            ids += list(self.cls["newline"])
        return np.array(ids, int)


class GrammarLogitsProcessor:
    """A transformers logits processor applying :class:`Grammar` to each row of a batch."""

    def __init__(self, grammar: Grammar, tokenizer, prompt_length: int, max_new_tokens: int,
                 targets: list[Target | None] | None = None):
        self.grammar = grammar
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self.targets = targets

    def __call__(self, input_ids, scores):
        import torch

        gen = input_ids[:, self.prompt_length:]
        room = self.max_new_tokens - gen.shape[1]
        texts = self.tokenizer.batch_decode(gen, skip_special_tokens=False)
        mask = torch.full_like(scores, float("-inf"))
        for i, text in enumerate(texts):
            if self.tokenizer.eos_token in text or self.tokenizer.pad_token in text:
                mask[i, self.grammar.eos] = 0.0  # finished rows: keep padding with EOS
                continue
            target = self.targets[i] if self.targets else None
            allowed = self.grammar.allowed(text, room, target)
            if target is not None and target.filler_floor and self.grammar.eos not in allowed and \
                    self.grammar.may_end(text, target):
                p = torch.softmax(scores[i].float(), dim=-1)
                offered = p[torch.as_tensor(allowed, dtype=torch.long)].sum()
                if offered < target.filler_floor * p[torch.as_tensor(self.grammar.cls["element"])].sum():
                    allowed = self.grammar.cls["eos"]  # only elements the model hardly wants fit: end here
            mask[i, torch.as_tensor(allowed, dtype=torch.long)] = 0.0
        return scores + mask

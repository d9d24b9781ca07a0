"""How much room a crystal's atoms take: per-element volume increments fitted on a training set.

A language model writes the cell before the atoms, and nothing in the text ties the two: unconditional MP-20
samples spread their volume per atom over 9-41 Å^3 where the test set spans 12-31 (10th-90th percentile,
``benchmarks/results/density_errors_mp20_2400.md``), and held to a formula the model overfills its cells. The
cell volume of a real crystal is close to the sum of volume increments of its atoms, ``V ≈ Σ n_e v_e`` (one
volume per element, fitted by non-negative least squares on relative error): on reduced MP-20 the ratio of the
two has a log standard deviation of about 0.11. :class:`Packing` holds those volumes and the range of the
ratio over the training crystals; the grammar (:mod:`crystalicl.constrained`) keeps a sample's atoms inside
that range of its written cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

MIN_CRYSTALS = 5  # an element seen in fewer training crystals gets no volume (its samples are not bounded)


@dataclass(frozen=True)
class Packing:
    """Volume per atom of each element (Å^3), the range of ``V / Σ n_e v_e`` the training crystals span, and the
    most atoms one of them has in its primitive cell (a runaway sample fills a large cell with far more).

    ``ratios`` are the percentiles 0..100 of that ratio over the training crystals: unconditional sampling draws
    each crystal's own window from them (:meth:`drawn_window`), so its samples spread over the ratio as the
    training crystals do instead of piling up at the edges of the whole range. ``elements`` is the fewest and
    the most distinct elements a training crystal has (reduced MP-20: 2 and 3); the grammar keeps crystals
    written without a formula inside that range."""

    volumes: Mapping[str, float] = field(default_factory=dict)
    low: float = 0.0
    high: float = float("inf")
    max_atoms: int | None = None
    ratios: tuple[float, ...] = ()
    elements: tuple[int, int] | None = None

    def needed(self, counts: Mapping[str, float]) -> float | None:
        """``Σ n_e v_e`` of a composition (element -> atoms), or None if an element has no volume."""
        try:
            return float(sum(n * self.volumes[e] for e, n in counts.items()))
        except KeyError:
            return None

    def window(self, volume: float) -> tuple[float, float]:
        """The range of ``Σ n_e v_e`` that a cell of ``volume`` Å^3 can hold: from too empty to too full."""
        return volume / self.high, volume / self.low

    def drawn_window(self, u: float, width: float) -> tuple[float, float]:
        """The ratio window of one sample: the training ratios between the quantiles ``u - width`` and
        ``u + width`` (clipped to the whole window), for ``u`` drawn uniformly. Without ``ratios`` (a packing
        recorded before they were kept), the whole window."""
        if not self.ratios:
            return self.low, self.high
        grid = np.linspace(0.0, 1.0, len(self.ratios))
        lo, hi = np.interp([max(0.0, u - width), min(1.0, u + width)], grid, self.ratios)
        return max(float(lo), self.low), min(float(hi), self.high)

    def to_dict(self) -> dict:
        return {"volumes": dict(sorted(self.volumes.items())), "low": self.low, "high": self.high,
                "max_atoms": self.max_atoms, "ratios": list(self.ratios),
                "elements": None if self.elements is None else list(self.elements)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Packing:
        return cls({str(k): float(v) for k, v in d["volumes"].items()}, float(d["low"]), float(d["high"]),
                   None if d.get("max_atoms") is None else int(d["max_atoms"]),
                   tuple(float(r) for r in d.get("ratios", ())),
                   None if d.get("elements") is None else (int(d["elements"][0]), int(d["elements"][1])))


def fit_packing(compositions: Iterable[Mapping[str, float]], volumes: Iterable[float],
                coverage: float = 0.98) -> Packing:
    """Fit volume increments to crystals (composition of the cell, its volume) and keep the central
    ``coverage`` of their ratios as the allowed range (and the largest cell's atoms: give primitive cells)."""
    from scipy.optimize import nnls

    comps, vols = list(compositions), np.asarray(list(volumes), float)
    if not comps or len(comps) != len(vols):
        raise ValueError("fit_packing needs as many compositions as volumes, at least one")
    seen: dict[str, int] = {}
    for c in comps:
        for e in c:
            seen[e] = seen.get(e, 0) + 1
    elements = sorted(e for e, k in seen.items() if k >= MIN_CRYSTALS)
    index = {e: i for i, e in enumerate(elements)}
    rows = [i for i, c in enumerate(comps) if all(e in index for e in c)]
    if not rows:
        raise ValueError(f"no element is seen in {MIN_CRYSTALS} crystals: too few to fit volume increments")
    a = np.zeros((len(rows), len(elements)))
    for r, i in enumerate(rows):
        for e, n in comps[i].items():
            a[r, index[e]] = n
    b = vols[rows]
    x, _ = nnls(a / b[:, None], np.ones(len(rows)))  # relative error: every crystal counts alike
    ratio = b / np.maximum(a @ x, 1e-9)
    tail = (1.0 - coverage) / 2.0
    low, high = np.quantile(ratio, [tail, 1.0 - tail])
    return Packing({e: float(v) for e, v in zip(elements, x, strict=True) if v > 0}, float(low), float(high),
                   int(round(max(sum(c.values()) for c in comps))),
                   tuple(round(float(r), 4) for r in np.percentile(ratio, np.arange(101))),
                   (min(map(len, comps)), max(map(len, comps))))


def cells_of_texts(texts: Iterable[str]) -> tuple[list[dict[str, int]], list[float]]:
    """(composition of the cell, its volume) of crystals written as XYZ text (cell lengths, angles, then one
    element line and one coordinate line per atom): the prepared datasets carry it, so no structure is parsed."""
    from pymatgen.core import Lattice

    comps, vols = [], []
    for t in texts:
        lines = t.strip().split("\n")
        counts: dict[str, int] = {}
        for el in lines[2::2]:
            counts[el.strip()] = counts.get(el.strip(), 0) + 1
        comps.append(counts)
        vols.append(Lattice.from_parameters(*map(float, lines[0].split()), *map(float, lines[1].split())).volume)
    return comps, vols


def packing_of_texts(texts: Iterable[str], coverage: float = 0.98) -> Packing:
    """Fit :class:`Packing` to crystals written as XYZ text (:func:`cells_of_texts`)."""
    return fit_packing(*cells_of_texts(texts), coverage)

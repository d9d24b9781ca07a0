"""Choosing K demonstrations from a pool: the C, F, CF and R strategies of CrystalICL (SPEC §2).

- ``C`` (condition): pool crystals with the target's anonymised formula (CaTiO3 → ABC3) and space group,
  ranked by the summed standardised absolute difference of the continuous conditions (ties and the
  no-continuous case broken at random);
- ``F`` (fingerprint): a random anchor and its K−1 nearest pool neighbours (Euclidean distance of CrystalNN
  fingerprints);
- ``CF``: a random anchor among the condition-matched crystals and its K−1 nearest neighbours among them;
- ``R``: K random crystals;
- ``CL`` (consensus layout; ours): C's condition-matched crystals that share the Wyckoff layout most of them have
  (ties: the layout of the best-ranked one), ranked as C ranks, then C's other matches when fewer than K share
  it (``relaxed-layout``). Every matched crystal's layout gives the target's stoichiometry and group; showing
  one layout K times makes it the one to copy (a model trained on T's demonstrations copies consistent ones);
- ``T`` (template; training only, ours): pool crystals with the target's own Wyckoff layout (space group,
  labels in orbit order, anonymised formula: :func:`crystalicl.text.sgs.layout`), ranked as C ranks, then
  C's matches when fewer than K share it (``relaxed-layout``). It reads the target's structure, which a
  prompt for a new crystal does not have: it makes instructions whose answer a demonstration's layout gives.
Demonstrations are ordered most relevant first (C: best rank first; F/CF: anchor first); ``shuffle``
gives the ablation's random order. The target itself is never a demonstration.

Fallback when the condition filter finds fewer than K (deterministic, recorded in ``fallback``): drop the
space-group filter (``relaxed-space-group``), then the formula filter too (``relaxed-formula``), keeping
the stricter matches first. F/CF use random crystals in place of neighbours lacking a fingerprint.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np
import pandas as pd

from crystalicl.conditions import CONTINUOUS

STRATEGIES = ("C", "F", "CF", "R")  # the paper's: they need only the target's conditions
PROMPT_STRATEGIES = (*STRATEGIES, "CL")  # CL (ours) too needs only the conditions
TRAINING_STRATEGIES = (*PROMPT_STRATEGIES, "T")


@cache
def anonymized_formula(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).anonymized_formula


@dataclass
class Selection:
    indices: list[int]
    strategy: str
    fallback: str | None = None


@dataclass
class Pool:
    """Candidate demonstrations: a frame of properties and texts, with optional structure fingerprints."""

    frame: pd.DataFrame  # material_id, formula, space_group, continuous properties, text columns
    fingerprints: np.ndarray | None = None  # (n, d); NaN rows have no fingerprint
    _anon: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.frame = self.frame.reset_index(drop=True)
        self._anon = np.array([anonymized_formula(f) for f in self.frame["formula"]])
        self._sg = self.frame["space_group"].to_numpy()
        self._ids = self.frame["material_id"].astype(str).to_numpy()
        self._id_index = {m: i for i, m in enumerate(self._ids)}
        self._scale = {c: float(np.nanstd(self.frame[c])) or 1.0 for c in CONTINUOUS if c in self.frame}
        if self.fingerprints is not None:
            fp = np.asarray(self.fingerprints, float)
            self._has_fp = ~np.isnan(fp).any(axis=1)
            self._fp = np.nan_to_num(fp)
            self._sq = (self._fp**2).sum(axis=1)

    def __len__(self) -> int:
        return len(self.frame)

    @cached_property
    def _layouts(self) -> list[tuple | None]:
        """Wyckoff layout of every pool crystal's SGS-Wyckoff text (built on T's or CL's first use)."""
        from crystalicl.text.sgs import layout

        return [layout(text) for text in self.frame["sgs_wyckoff"]]

    @cached_property
    def _by_layout(self) -> dict[tuple, np.ndarray]:
        """Pool indices by Wyckoff layout."""
        out: dict[tuple, list[int]] = {}
        for i, key in enumerate(self._layouts):
            out.setdefault(key, []).append(i)
        return {key: np.array(idx, int) for key, idx in out.items() if key is not None}

    def index_of(self, material_id) -> int | None:
        return self._id_index.get(str(material_id))

    # --- condition matching -------------------------------------------------------------------------
    def condition_candidates(self, target: dict, names, exclude: int | None) -> tuple[list[np.ndarray], list[str]]:
        """Candidate index sets from strictest to most relaxed, with the fallback label of each."""
        base = np.ones(len(self), bool)
        if exclude is not None:
            base[exclude] = False
        formula_ok = base.copy()
        if "formula" in names and "formula" in target:
            formula_ok &= self._anon == anonymized_formula(target["formula"])
        strict = formula_ok.copy()
        if "space_group" in names and "space_group" in target:
            strict &= self._sg == int(target["space_group"])
        return [np.flatnonzero(strict), np.flatnonzero(formula_ok), np.flatnonzero(base)], \
            [None, "relaxed-space-group", "relaxed-formula"]

    def rank(self, idx: np.ndarray, target: dict, names, rng: np.random.Generator) -> np.ndarray:
        """``idx`` ordered by closeness of continuous conditions (random order among ties / without any)."""
        score = np.zeros(len(idx))
        for c in CONTINUOUS:
            if c in names and c in target and c in self.frame:
                vals = self.frame[c].to_numpy()[idx]
                score += np.nan_to_num(np.abs(vals - float(target[c])) / self._scale[c], nan=1e9)
        return idx[np.lexsort((rng.random(len(idx)), score))]

    def _matched(self, target, names, k, rng, exclude):
        """At least k condition-matched candidates, strictest first, the fallback that was needed, and how many
        lead them from the strictest level that has any (all of that level: it is taken whole)."""
        sets, labels = self.condition_candidates(target, names, exclude)
        chosen: list[int] = []
        fallback = None
        strictest = 0
        for idx, label in zip(sets, labels, strict=True):
            if len(chosen) >= k:
                break
            fallback = label
            chosen.extend(self.rank(np.setdiff1d(idx, chosen), target, names, rng).tolist())
            strictest = strictest or len(chosen)
        return np.array(chosen, int), fallback, strictest

    def _consensus(self, target, names, k, rng, exclude) -> tuple[list[int], str | None]:
        """CL: the strictest non-empty level of condition matches votes for one layout; its members first."""
        matched, fallback, strictest = self._matched(target, names, k, rng, exclude)
        voters = matched[:strictest].tolist()  # ranked as C ranks
        counts = Counter(self._layouts[i] for i in voters if self._layouts[i] is not None)
        if not counts:
            return matched[:k].tolist(), fallback
        top = max(counts.values())
        winner = next(self._layouts[i] for i in voters if counts.get(self._layouts[i]) == top)
        chosen = [i for i in voters if self._layouts[i] == winner][:k]
        if len(chosen) < k:
            chosen += [i for i in matched.tolist() if i not in chosen][:k - len(chosen)]
            fallback = fallback or "relaxed-layout"
        return chosen, fallback

    # --- fingerprint neighbours ---------------------------------------------------------------------
    def nearest(self, anchor: int, k: int, among: np.ndarray | None = None, exclude=()) -> np.ndarray:
        """The k nearest pool crystals to ``anchor`` by Euclidean fingerprint distance (exact, vectorised)."""
        if self.fingerprints is None:
            raise ValueError("this pool has no fingerprints; the F and CF strategies need them")
        cand = np.arange(len(self)) if among is None else np.asarray(among, int)
        cand = cand[self._has_fp[cand]]
        cand = cand[~np.isin(cand, [anchor, *exclude])]
        d2 = self._sq[cand] - 2 * self._fp[cand] @ self._fp[anchor] + self._sq[anchor]
        if len(cand) > k:
            part = np.argpartition(d2, k)[:k]
            cand, d2 = cand[part], d2[part]
        return cand[np.lexsort((cand, d2))]

    # --- strategies ---------------------------------------------------------------------------------
    def select(self, strategy: str, target: dict, names, k: int, rng: np.random.Generator,
               exclude_id=None, shuffle: bool = False, layout: tuple | None = None) -> Selection:
        """K demonstrations for ``target`` (its stated conditions ``names``); ``layout``: the target's own
        Wyckoff layout, which only ``T`` reads."""
        if strategy not in TRAINING_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(TRAINING_STRATEGIES)}")
        exclude = self.index_of(exclude_id) if exclude_id is not None else None
        fallback = None
        if strategy == "R":
            cand = np.delete(np.arange(len(self)), [] if exclude is None else [exclude])
            chosen = rng.choice(cand, size=min(k, len(cand)), replace=False).tolist()
        elif strategy == "C":
            matched, fallback, _ = self._matched(target, names, k, rng, exclude)
            chosen = matched[:k].tolist()
        elif strategy == "CL":
            chosen, fallback = self._consensus(target, names, k, rng, exclude)
        elif strategy == "T":
            if layout is None:
                raise ValueError("T chooses demonstrations by the target's own Wyckoff layout; give it (layout=): "
                                 "a strategy for training instructions, not for prompts of unknown crystals")
            same = self._by_layout.get(layout, np.zeros(0, int))
            if exclude is not None:
                same = same[same != exclude]
            chosen = self.rank(same, target, names, rng)[:k].tolist()
            if len(chosen) < k:
                matched, _, _ = self._matched(target, names, k + len(chosen), rng, exclude)
                chosen += [i for i in matched.tolist() if i not in chosen][:k - len(chosen)]
                fallback = "relaxed-layout"
        else:
            if strategy == "CF":
                among, fallback, _ = self._matched(target, names, k, rng, exclude)
            else:
                among = np.delete(np.arange(len(self)), [] if exclude is None else [exclude])
            with_fp = among[self._has_fp[among]] if self.fingerprints is not None else among
            anchor = int(rng.choice(with_fp if len(with_fp) else among))
            neigh = self.nearest(anchor, k - 1, among=among, exclude=() if exclude is None else (exclude,))
            chosen = [anchor, *neigh.tolist()]
            if len(chosen) < k:  # too few fingerprinted candidates: fill at random
                rest = np.setdiff1d(among, chosen)
                chosen += rng.choice(rest, size=min(k - len(chosen), len(rest)), replace=False).tolist()
                fallback = fallback or "random-fill"
        if shuffle:
            chosen = list(rng.permutation(chosen))
        return Selection([int(i) for i in chosen], strategy, fallback)

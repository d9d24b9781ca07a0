"""Coverage (COV-R / COV-P) and property-distribution distances, following the CDVAE evaluation code.

COV: distances from each crystal to its nearest counterpart are taken separately in structure
(CrystalNN) and composition (scaled Magpie) space; recall = share of reference crystals whose nearest
generated crystal is within the structure cut-off *and* whose nearest generated crystal is within the
composition cut-off; precision = the same from the generated side, divided by *all* generated crystals
(those without fingerprints count as misses). As in CDVAE, every crystal that could be built has fingerprints,
structurally valid or not. This is how the published numbers were computed.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance


def coverage(gen_struct: np.ndarray, gen_comp: np.ndarray, ref_struct: np.ndarray, ref_comp: np.ndarray,
             cutoffs: tuple[float, float], n_generated: int | None = None) -> dict:
    """COV-R and COV-P; rows with NaN fingerprints are dropped (and count as misses for precision)."""
    n_generated = len(gen_struct) if n_generated is None else n_generated
    g_ok = ~(np.isnan(gen_struct).any(1) | np.isnan(gen_comp).any(1))
    r_ok = ~(np.isnan(ref_struct).any(1) | np.isnan(ref_comp).any(1))
    gs, gc, rs, rc = gen_struct[g_ok], gen_comp[g_ok], ref_struct[r_ok], ref_comp[r_ok]
    if len(gs) == 0:
        return {"cov_recall": 0.0, "cov_precision": 0.0}
    s_cut, c_cut = cutoffs
    ds = _min_dists(gs, rs)
    dc = _min_dists(gc, rc)
    recall = np.mean((ds[1] <= s_cut) & (dc[1] <= c_cut))
    precision = np.sum((ds[0] <= s_cut) & (dc[0] <= c_cut)) / n_generated
    return {"cov_recall": float(recall), "cov_precision": float(precision)}


def _min_dists(a: np.ndarray, b: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(min distance of each row of a to b, min distance of each row of b to a), in memory-bounded blocks."""
    amin = np.full(len(a), np.inf)
    bmin = np.full(len(b), np.inf)
    for s in range(0, len(a), block):
        d = cdist(a[s:s + block], b)
        amin[s:s + block] = d.min(axis=1)
        bmin = np.minimum(bmin, d.min(axis=0))
    return amin, bmin


def wdist(generated, reference) -> float:
    g = np.asarray(generated, float)
    r = np.asarray(reference, float)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    return float(wasserstein_distance(g, r)) if len(g) and len(r) else float("nan")


def space_group_chi2(generated: np.ndarray, reference: np.ndarray) -> float:
    """Symmetric χ² distance between space-group histograms (1..230), normalised to distributions."""
    g = np.bincount(np.asarray(generated, int), minlength=231)[1:].astype(float)
    r = np.bincount(np.asarray(reference, int), minlength=231)[1:].astype(float)
    g, r = g / max(g.sum(), 1), r / max(r.sum(), 1)
    s = g + r
    m = s > 0
    return float(0.5 * np.sum((g[m] - r[m]) ** 2 / s[m]))

"""Evaluating generated crystals (JSONL from ``crystalicl generate`` or a directory of CIFs).

Per-sample analysis (validity, fingerprints, density, space group at 0.01 and 0.1 Å, atomic overlap)
runs in parallel through :func:`crystalicl.jobs.chunked_map` — resumable, 60 s limit per structure —
and MEGNet predictions run batched afterwards. Reference statistics (fingerprints, densities, MEGNet
predictions of a dataset split) are computed once and cached. Metric keys follow
``reference/paper_results.json`` where a counterpart exists.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from functools import cache
from pathlib import Path

import numpy as np

from crystalicl import jobs

TIMEOUT = 60.0
# where the per-sample analysis is cached beside an evaluation; the version changes when what it holds does
# (v2: structure fingerprints of structurally invalid crystals too, as CDVAE computes them)
ANALYSIS_DIR = "analysis-v2"


def load_samples(path) -> list[dict]:
    """Records with at least ``id`` and ``cif`` (None when the sample did not parse)."""
    path = Path(path)
    if path.is_dir():
        return [{"id": p.stem, "cif": p.read_text()} for p in sorted(path.glob("*.cif"))]
    recs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    return recs


@cache
def _covalent_radii() -> dict:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return CovalentRadius.radius


def to_structure(rec: dict):
    """The sample's structure: decoded exactly from its text when the format is known (a CIF of a crystal
    with coincident atoms cannot be read back), else read from its CIF; None when neither works."""
    from crystalicl.errors import ParseError
    from crystalicl.text import decode

    if rec.get("text") and rec.get("format"):
        try:
            return decode(rec["text"], rec["format"])
        except ParseError:
            return None
    if rec.get("cif"):
        try:
            return decode(rec["cif"], "cif")
        except ParseError:
            return None
    return None


def analyze(rec: dict) -> dict:
    """Everything per sample that does not need a neural network.

    A sample that breaks a metric library (a generated text may hold anything) is recorded as invalid with
    its error, counted in ``analysis_errors``, instead of ending a long evaluation.
    """
    try:
        return _analyze(rec)
    except Exception as e:  # noqa: BLE001 - one sample must not end the run; the error is kept and counted
        return _failed(f"{type(e).__name__}: {e}")


def _failed(error: str) -> dict:
    """The analysis of a sample whose metrics could not be computed (an exception or a timeout)."""
    return {"parsed": True, "error": error, "valid_structure": False, "valid_composition": False}


def _analyze(rec: dict) -> dict:
    from crystalicl.features import composition_fingerprint, structure_fingerprint
    from crystalicl.metrics.validity import composition_valid_of, structure_valid
    from crystalicl.symmetry import space_group_number

    s = to_structure(rec)
    if s is None:
        return {"parsed": False}
    out = {"parsed": True, "n_atoms": len(s), "density": float(s.density),
           "n_elements": len(s.composition.elements), "formula": s.composition.reduced_formula}
    out["valid_structure"] = structure_valid(s)
    out["valid_composition"] = composition_valid_of(s)
    cell = (s.lattice.matrix, s.frac_coords, [x.specie.Z for x in s])
    out["space_group_0.1"] = space_group_number(*cell, symprec=0.1)
    out["space_group_0.01"] = space_group_number(*cell, symprec=0.01)
    radii = _covalent_radii()
    r = np.array([radii.get(x.specie.symbol, 1.5) for x in s])
    d = s.distance_matrix
    np.fill_diagonal(d, np.inf)
    out["overlap"] = bool(len(s) > 1 and (d < 0.5 * (r[:, None] + r[None, :])).any())
    try:
        out["struct_fp"] = structure_fingerprint(s)  # CDVAE: every crystal built, atoms too close or not
        out["comp_fp"] = composition_fingerprint(s.composition)
    except Exception as e:
        out["struct_fp"], out["comp_fp"], out["fp_error"] = None, None, f"{type(e).__name__}: {e}"
    return out


def _validity(per: list[dict]) -> tuple[dict, np.ndarray, np.ndarray]:
    """Sample counts and validity rates shared by both evaluations, with the per-sample validity masks."""
    vs = np.array([p.get("valid_structure", False) for p in per])
    vc = np.array([p.get("valid_composition", False) for p in per])
    return ({"n_samples": len(per), "parse_rate": float(np.mean([p.get("parsed", False) for p in per])),
             "analysis_errors": sum("error" in p for p in per), "valid_structure": float(vs.mean()),
             "valid_composition": float(vc.mean()), "valid_overall": float((vs & vc).mean())}, vs, vc)


def analyze_many(records: list[dict], work_dir: Path, workers: int | None = None, progress: bool = True) -> list[dict]:
    res = jobs.chunked_map(analyze, records, work_dir, chunk=500, workers=workers, timeout=TIMEOUT,
                           desc="analyse samples", progress=progress)
    return [r if isinstance(r, dict) else _failed(str(r)) for r in res]


def predictions(records: list[dict], key: str, cache_path: Path | None = None) -> dict[str, np.ndarray]:
    """MEGNet formation energy and PBE band gap (NaN where impossible), cached at ``cache_path``."""
    if cache_path is not None and cache_path.exists():
        z = np.load(cache_path)
        if str(z["key"]) == key:
            return {"formation_energy": z["formation_energy"], "band_gap": z["band_gap"]}
    from crystalicl.metrics.predictors import BANDGAP, EFORM, predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs = [to_structure(r) for r in records]
    out = {"formation_energy": predict(EFORM, structs), "band_gap": predict(BANDGAP, structs, state=0)}
    if cache_path is not None:
        np.savez(cache_path, key=key, **out)
    return out


def _rec_key(rec: dict) -> str:
    return (rec.get("text") or "") + (rec.get("cif") or "")


def reference_stats(name: str, split: str, workers: int | None = None, progress: bool = True) -> dict:
    """Fingerprints, densities, element counts, space groups and MEGNet predictions of a dataset split."""
    from crystalicl.data.prepare import load_prepared, prepared_dir
    from crystalicl.features import dataset_fingerprints, scale_magpie

    df = load_prepared(name, split, workers, progress)
    ids, sfp, cfp, _ = dataset_fingerprints(name, split, workers, progress)
    order = {m: i for i, m in enumerate(ids)}
    idx = np.array([order[m] for m in df["material_id"].astype(str)])
    key = hashlib.sha1("".join(df["material_id"].astype(str)).encode()).hexdigest()
    cache = prepared_dir(name) / f"{split}.{df.attrs['protocol']}.megnet.npz"
    pred = predictions([{"cif": c} for c in df["cif"]], key, cache)
    from pymatgen.core import Composition

    density = df["cif"].map(lambda c: _density(c)).to_numpy() if "density" not in df else df["density"].to_numpy()
    return {"frame": df, "struct_fp": sfp[idx], "comp_fp": scale_magpie(cfp[idx]), "density": density,
            "n_elements": df["formula"].map(lambda f: len(Composition(f).elements)).to_numpy(),
            "space_group": df["space_group"].to_numpy(), **pred, "protocol": df.attrs["protocol"]}


def _density(cif: str) -> float:
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(Structure.from_str(cif, fmt="cif").density)


def evaluate_unconditional(records: list[dict], reference: tuple[str, str], work_dir: Path, seed: int = 0,
                           n_property: int = 1000, workers: int | None = None, progress: bool = True,
                           novelty_against: tuple[str, str] | None = None, uniqueness: bool = False) -> dict:
    """CDVAE-protocol metrics: validity, COV-R/P, wdist of density / formation energy / element count."""
    from crystalicl.data.registry import dataset
    from crystalicl.features import scale_magpie
    from crystalicl.metrics.distribution import coverage, space_group_chi2, wdist

    work_dir = Path(work_dir)
    per = analyze_many(records, work_dir / ANALYSIS_DIR, workers, progress)
    ref = reference_stats(*reference, workers=workers, progress=progress)
    n = len(per)
    m, vs, vc = _validity(per)
    sfp = np.array([p["struct_fp"] if p.get("struct_fp") is not None else np.full(61, np.nan) for p in per])
    cfp = np.array([p["comp_fp"] if p.get("comp_fp") is not None else np.full(132, np.nan) for p in per])
    cov = coverage(sfp, scale_magpie(cfp), ref["struct_fp"], ref["comp_fp"], dataset(reference[0]).cov_cutoffs, n)
    m.update(cov)
    valid = np.flatnonzero(vs & vc)
    rng = np.random.default_rng(seed)
    pick = rng.choice(valid, size=min(n_property, len(valid)), replace=False) if len(valid) else valid
    m["wdist_density"] = wdist([per[i]["density"] for i in pick], ref["density"])
    m["wdist_num_elements"] = wdist([per[i]["n_elements"] for i in pick], ref["n_elements"])
    key = hashlib.sha1(("".join(_rec_key(records[i]) for i in pick)).encode()).hexdigest()
    pred = predictions([records[i] for i in pick], key, work_dir / "megnet_property_sample.npz")
    m["wdist_energy"] = wdist(pred["formation_energy"], ref["formation_energy"])
    sg = np.array([p.get("space_group_0.1") or 0 for p in per])
    m["p1_share"] = float(np.mean(sg[sg > 0] == 1)) if (sg > 0).any() else float("nan")
    m["space_group_chi2"] = space_group_chi2(sg[sg > 0], ref["space_group"])
    m["overlap"] = float(np.mean([p.get("overlap", True) for p in per]))
    m["negative_formation_energy"] = float(np.nanmean(pred["formation_energy"] < 0)) if len(pick) else float("nan")
    if uniqueness or novelty_against:
        m.update(uniqueness_novelty(records, vs & vc, novelty_against))
    m["reference"] = f"{reference[0]}:{reference[1]}"
    m["protocol"] = ref["protocol"]
    return m


def uniqueness_novelty(records: list[dict], valid: np.ndarray, train: tuple[str, str] | None = None) -> dict:
    """Share of valid samples that are unique among themselves and, with a training split, novel.

    StructureMatcher (pymatgen defaults) compares only crystals with the same reduced formula.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    sm = StructureMatcher()
    seen: dict[str, list] = {}
    unique = []
    for i in np.flatnonzero(valid):
        s = to_structure(records[i])
        if s is None:
            continue
        f = s.composition.reduced_formula
        if any(sm.fit(s, u) for u in seen.get(f, [])):
            continue
        seen.setdefault(f, []).append(s)
        unique.append(s)
    n_valid = max(int(valid.sum()), 1)
    out = {"uniqueness": len(unique) / n_valid}
    if train is not None:
        from crystalicl.data.prepare import load_prepared

        df = load_prepared(*train)
        df = df[df["formula"].isin(seen)]
        known: dict[str, list] = {}
        for f, cif in zip(df["formula"], df["cif"], strict=True):
            known.setdefault(f, []).append(cif)
        novel = 0
        for s in unique:
            cands = [to_structure({"cif": c}) for c in known.get(s.composition.reduced_formula, [])]
            novel += not any(c is not None and sm.fit(s, c) for c in cands)
        out["novelty"] = novel / n_valid
        out["novelty_reference"] = f"{train[0]}:{train[1]}"
    return out


def aggregate_runs(runs: list[dict]) -> dict:
    """Mean and standard deviation of each numeric metric over repeated runs (``<key>_std``)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        vals = np.array([r.get(k, np.nan) for r in runs], float)
        out[k] = float(np.nanmean(vals))
        out[f"{k}_std"] = float(np.nanstd(vals, ddof=1)) if len(runs) > 1 else 0.0
    out["runs"] = len(runs)
    return out


def evaluate_conditional(records: list[dict], work_dir: Path, workers: int | None = None,
                         progress: bool = True) -> dict:
    """Success rates against each record's target ``conditions`` (denominator: every prompt)."""
    work_dir = Path(work_dir)
    per = analyze_many(records, work_dir / ANALYSIS_DIR, workers, progress)
    key = hashlib.sha1("".join(_rec_key(r) for r in records).encode()).hexdigest()
    pred = predictions(records, key, work_dir / "megnet.npz")
    hits: dict[str, list[bool]] = {}
    for i, (r, p) in enumerate(zip(records, per, strict=True)):
        cond = r.get("conditions") or {}
        ok = p.get("parsed", False)
        if "formula" in cond:
            from pymatgen.core import Composition

            target = Composition(cond["formula"]).reduced_formula
            hits.setdefault("formula", []).append(ok and p.get("formula") == target)
        if "space_group" in cond:
            for tol in ("0.01", "0.1"):
                hits.setdefault(f"space_group_symprec_{tol}", []).append(
                    ok and p.get(f"space_group_{tol}") == int(cond["space_group"]))
        if "formation_energy" in cond:
            e = pred["formation_energy"][i]
            hits.setdefault("formation_energy", []).append(
                bool(ok and np.isfinite(e) and np.sign(e) == np.sign(float(cond["formation_energy"]))))
        if "band_gap" in cond:
            g = pred["band_gap"][i]
            hits.setdefault("band_gap", []).append(
                bool(ok and np.isfinite(g) and abs(g - float(cond["band_gap"])) <= 0.5))
    m = {k: float(np.mean(v)) for k, v in hits.items()}
    if "space_group_symprec_0.01" in m:
        m["space_group"] = m["space_group_symprec_0.01"]  # the paper's default tolerance
    m.update(_validity(per)[0])
    m.update({"overlap": float(np.mean([p.get("overlap", True) for p in per])),
              "negative_formation_energy": float(np.nanmean(pred["formation_energy"] < 0))})
    return m

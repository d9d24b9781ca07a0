"""Structure and composition fingerprints (the CDVAE definitions), cached per dataset split.

- structure: mean over sites of matminer's CrystalNNFingerprint, preset "ops" (61 numbers);
- composition: matminer ElementProperty, preset "magpie" (132 numbers), raw — standardise with
  :func:`scale_magpie` (the CDVAE constants) where distances are taken.
CrystalNN dominates the cost (50-150 ms per structure), so dataset fingerprints are computed once with
:func:`crystalicl.jobs.chunked_map` (parallel, resumable, 60 s limit per structure) and cached.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import cache
from pathlib import Path

import numpy as np

from crystalicl import jobs

STRUCTURE_DIM = 61
COMPOSITION_DIM = 132
TIMEOUT = 60.0


@cache
def _crystalnn():
    from matminer.featurizers.site import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops")


@cache
def _magpie():
    from matminer.featurizers.composition import ElementProperty

    return ElementProperty.from_preset("magpie", impute_nan=False)


def equivalent_sites(structure, symprec: float = 1e-3) -> np.ndarray:
    """Orbit id of every site (spglib at a tight tolerance, so only truly equivalent sites share one)."""
    import spglib

    cell = (structure.lattice.matrix, structure.frac_coords, [s.specie.Z for s in structure])
    ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
    return np.arange(len(structure)) if ds is None else np.asarray(ds.equivalent_atoms)


def structure_fingerprint(structure, per_orbit: bool = True) -> np.ndarray:
    """Mean CrystalNN "ops" fingerprint over sites.

    Symmetry-equivalent sites have identical local environments, hence identical fingerprints, so
    with ``per_orbit`` one site per orbit is featurised and weighted by its multiplicity — the same
    mean (tested), several times faster for symmetric crystals.
    """
    fp = _crystalnn()
    orbits = equivalent_sites(structure) if per_orbit else np.arange(len(structure))
    reps, counts = np.unique(orbits, return_counts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sites = np.array([fp.featurize(structure, int(i)) for i in reps], float)
    return (sites * counts[:, None]).sum(axis=0) / counts.sum()


def composition_fingerprint(composition) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array(_magpie().featurize(composition), float)


@cache
def _magpie_scaler() -> tuple[np.ndarray, np.ndarray]:
    """CDVAE's standardisation constants for Magpie features (``reference/magpie_scaler_cdvae.json``)."""
    path = os.environ.get("CRYSTALICL_MAGPIE_SCALER")
    candidates = [Path(path)] if path else []
    if os.environ.get("CRYSTALICL_DATA_DIR"):
        candidates.append(Path(os.environ["CRYSTALICL_DATA_DIR"]).parent / "reference" / "magpie_scaler_cdvae.json")
    candidates.append(Path(__file__).with_name("magpie_scaler_cdvae.json"))
    for p in candidates:
        if p.is_file():
            d = json.loads(p.read_text())
            return np.asarray(d["means"], float), np.asarray(d["stds"], float)
    raise FileNotFoundError("CDVAE Magpie scaler constants not found; set CRYSTALICL_MAGPIE_SCALER")


def scale_magpie(x: np.ndarray) -> np.ndarray:
    mean, std = _magpie_scaler()
    return np.nan_to_num((np.asarray(x, float) - mean) / std, nan=0.0)


def fingerprint_cif(cif: str) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(structure fp, composition fp, error) of one CIF string."""
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(cif, fmt="cif")
        return structure_fingerprint(s), composition_fingerprint(s.composition), None
    except Exception as e:  # CrystalNN fails on some pathological structures
        return None, None, f"{type(e).__name__}: {e}"


def _stack(results) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    n = len(results)
    sfp = np.full((n, STRUCTURE_DIM), np.nan)
    cfp = np.full((n, COMPOSITION_DIM), np.nan)
    errors: list[str | None] = []
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            errors.append(str(r))
            continue
        s, c, err = r
        errors.append(err)
        if err is None:
            sfp[i], cfp[i] = s, c
    return sfp, cfp, errors


def dataset_fingerprints(name: str, split: str, workers: int | None = None, progress: bool = True):
    """Fingerprints of the prepared rows serving ``split`` of ``name``, cached next to the prepared data.

    Returns (material_ids, structure fps, composition fps, errors), aligned with
    :func:`crystalicl.data.prepare.load_prepared`.
    """
    import pandas as pd

    from crystalicl.data import prepare, sources

    source, part = sources.protocol_split(name, split)
    out = prepare.prepared_dir(name)
    path = out / f"{source}.fingerprints.npz"
    if not path.exists():
        df = pd.read_parquet(prepare.prepare_source(name, source, workers, progress))
        res = jobs.chunked_map(fingerprint_cif, df["cif"].tolist(), out / f"{source}.fingerprints.parts",
                               chunk=256, workers=workers, timeout=TIMEOUT, desc=f"fingerprints {name}/{source}",
                               progress=progress)
        sfp, cfp, errors = _stack(res)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, ids=df["material_id"].to_numpy(str), structure=sfp, composition=cfp,
                            errors=np.array([e or "" for e in errors]))
        os.replace(tmp, path)
        jobs.clear(out / f"{source}.fingerprints.parts")
    z = np.load(path)
    ids = z["ids"]
    keep = np.ones(len(ids), bool)
    if part is not None:
        held = sources.holdout_mask(ids.tolist())
        keep = held if part == "holdout" else ~held
    errors = [e or None for e in z["errors"][keep]]
    return ids[keep], z["structure"][keep], z["composition"][keep], errors

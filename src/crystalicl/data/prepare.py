"""Prepare a benchmark split once: parse every CIF, analyse symmetry, write every text format (Parquet).

Output, under ``<cache>/prepared/<dataset>/``: ``<split>.parquet`` (one row per usable crystal) and
``<split>.failures.csv`` (material_id and reason for every row that could not be parsed or
symmetrised — reported, never dropped silently). Work is done in chunks written atomically to
``<split>.parts/``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from crystalicl import jobs
from crystalicl.data import sources
from crystalicl.symmetry import symmetrize
from crystalicl.text import sgs, xyz

CHUNK = 1024
TEXT_COLUMNS = {"sgs": "sgs", "sgs-wyckoff": "sgs_wyckoff", "xyz": "xyz"}


def prepare_one(material_id: str, cif: str) -> dict:
    """Symmetry and every text format of one CIF; on failure a row with an ``error`` reason."""
    from pymatgen.io.cif import CifParser

    row: dict = {"material_id": material_id, "error": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = CifParser.from_str(cif, check_cif=False).parse_structures(primitive=False, check_occu=False)[0]
    except Exception as e:
        return row | {"error": f"unreadable CIF: {type(e).__name__}: {e}"}
    if not s.is_ordered:
        return row | {"error": "disordered structure (partial occupancies)"}
    matrix, frac = s.lattice.matrix, s.frac_coords
    numbers = np.array([site.specie.Z for site in s])
    try:
        sym = symmetrize(matrix, frac, numbers)
        rows = sgs.orbit_rows(sym)
        text_sgs = sgs.from_symmetrized(sym, labels=False, rows=rows)
        text_wy = sgs.from_symmetrized(sym, labels=True, rows=rows)
    except Exception as e:
        return row | {"error": f"symmetry analysis failed: {type(e).__name__}: {e}"}
    orbits = sorted(f"{o.multiplicity}{o.letter}" for o in sym.orbits)
    return row | {
        "formula": s.composition.reduced_formula,
        "n_atoms": len(s),
        "n_elements": len(s.composition.elements),
        "space_group": sym.group.number,
        "sg_symbol": sym.group.symbol,
        "wyckoff": " ".join(orbits),
        "n_orbits": len(sym.orbits),
        "sgs": text_sgs,
        "sgs_wyckoff": text_wy,
        "xyz": xyz.encode(matrix, frac, [site.specie.symbol for site in s]),
    }


def _star(args):
    return prepare_one(*args)


def prepared_dir(name: str) -> Path:
    d = sources.cache_dir() / "prepared" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def prepare_source(name: str, split: str, workers: int | None = None, progress: bool = True) -> Path:
    """Prepare one original split file (resumable); returns the Parquet path."""
    out = prepared_dir(name)
    final = out / f"{split}.parquet"
    if final.exists():
        return final
    raw = sources.read_source(name, split)
    parts = out / f"{split}.parts"
    args = list(zip(raw["material_id"], raw["cif"], strict=True))
    rows = jobs.chunked_map(_star, args, parts, chunk=CHUNK, workers=workers,
                            desc=f"prepare {name}/{split}", progress=progress)
    df = pd.DataFrame(rows)
    for c in raw.columns:
        if c != "material_id":
            df[c] = raw[c].to_numpy()
    failed = df[df["error"].notna()]
    failed[["material_id", "error"]].to_csv(out / f"{split}.failures.csv", index=False)
    _write_atomic(df[df["error"].isna()].drop(columns="error").reset_index(drop=True), final)
    jobs.clear(parts)
    return final


def failures(name: str, split: str) -> pd.DataFrame:
    p = prepared_dir(name) / f"{split}.failures.csv"
    return pd.read_csv(p, dtype=str) if p.exists() else pd.DataFrame(columns=["material_id", "error"])


def prepare(name: str, workers: int | None = None, progress: bool = True) -> dict[str, Path]:
    """Prepare every original split file that serves the dataset's current protocol."""
    proto = sources.protocol(name)
    files = ("train", "val", "test") if proto == "full" else ("val", "test")
    return {s: prepare_source(name, s, workers, progress) for s in files}


def load_prepared(name: str, split: str, workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Prepared rows serving ``split`` under the current protocol (prepares on first use)."""
    source, part = sources.protocol_split(name, split)
    df = sources.select(pd.read_parquet(prepare_source(name, source, workers, progress)), part)
    df.attrs.update(dataset=name, split=split, protocol=sources.protocol(name), source_split=source)
    return df

"""Why unconditional samples miss the test set's density: composition (mass per atom) or packing (volume per atom).

    python benchmarks/density_errors.py runs/mp20-sym0/mp20_biternary/CrystalICL+curriculum-sgs-wyckoff/uncond \\
        --reference mp20_biternary:test --name NAME

Density is mass over volume, so its Wasserstein distance to the test set (the wdist ρ of Table 2) splits into how
far the valid samples' mass per atom and volume per atom are from the test crystals'. Reads the samples of
paper_tables.py's ``uncond`` directories and the per-sample analysis cached beside them (``eval/analysis-v2``: the same
valid samples the table scores). Results: ``benchmarks/results/NAME.json`` and ``.md``.

The same split, exactly, by the grammar's packing fit (:mod:`crystalicl.packing`, fitted on the reference dataset's
training split): density = ``mass_per_increment`` (the cell's mass over the volume increments of its atoms, what
its composition alone sets) / ``packing_ratio`` (the cell's volume over those increments, what the packing bound
holds). Crystals with an element the fit has no volume for are left out of these two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, write  # noqa: E402

QUANTILES = (10, 25, 50, 75, 90)
MEASURES = ("density", "volume_per_atom", "mass_per_atom", "atoms", "mass_per_increment", "packing_ratio")
AMU_PER_A3 = 1.66053907  # g/cm^3 of one atomic mass unit per cubic ångström


def measures(structures, packing=None) -> dict[str, np.ndarray]:
    need = np.array([np.nan if packing is None or (n := packing.needed(s.composition.get_el_amt_dict())) is None
                     else n for s in structures], float)
    return {"density": np.array([s.density for s in structures]),
            "volume_per_atom": np.array([s.volume / len(s) for s in structures]),
            "mass_per_atom": np.array([s.composition.weight / len(s) for s in structures]),
            "atoms": np.array([len(s) for s in structures], float),
            "mass_per_increment": np.array([float(s.composition.weight) for s in structures]) * AMU_PER_A3 / need,
            "packing_ratio": np.array([s.volume for s in structures]) / need}


def summary(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    from scipy.stats import wasserstein_distance

    out = {}
    for k in MEASURES:
        g, r = gen[k][np.isfinite(gen[k])], ref[k][np.isfinite(ref[k])]
        if len(g) and len(r):
            out[k] = {"wdist": float(wasserstein_distance(g, r)),
                      "samples": [round(float(x), 3) for x in np.percentile(g, QUANTILES)],
                      "reference": [round(float(x), 3) for x in np.percentile(r, QUANTILES)]}
    return out


def valid_structures(samples: Path) -> list:
    from crystalicl.evaluate import to_structure

    return [to_structure(r) for r, p in analysed(samples) if p.get("valid_structure") and p.get("valid_composition")]


def main():
    from pymatgen.core import Structure

    from crystalicl.data.prepare import load_prepared
    from crystalicl.packing import packing_of_texts

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("uncond", nargs="+", help="unconditional sample directories (with samples.jsonl)")
    ap.add_argument("--reference", default="mp20_biternary:test", help="dataset:split")
    ap.add_argument("--name", default="density_errors")
    a = ap.parse_args()
    name, split = a.reference.split(":")
    packing = packing_of_texts(load_prepared(name, "train")["xyz"])
    ref = measures([Structure.from_str(c, fmt="cif") for c in load_prepared(name, split)["cif"]], packing)
    res = {}
    for d in map(Path, a.uncond):
        gen = valid_structures(d / "samples.jsonl")
        res[d.as_posix()] = {"valid": len(gen), **summary(measures(gen, packing), ref)}
    md = [f"# Density of valid unconditional samples against {a.reference}: mass and volume per atom, and "
          "composition against packing", "",
          f"Percentiles {', '.join(map(str, QUANTILES))} of samples | reference; wdist per measure.", "",
          "| samples | valid | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 2) + "|"]
    for d, r in res.items():
        cells = [f"{r[k]['wdist']:.3f} ({' '.join(f'{x:g}' for x in r[k]['samples'])} \\| "
                 f"{' '.join(f'{x:g}' for x in r[k]['reference'])})" if k in r else "–" for k in MEASURES]
        md.append(f"| {d} | {r['valid']} | " + " | ".join(cells) + " |")
    write(a.name, {"reference": a.reference, "packing_from": f"{name}:train", "quantiles": QUANTILES, "runs": res},
          "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

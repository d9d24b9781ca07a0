"""Why unconditional samples miss the test set's density: composition (mass per atom) or packing (volume per atom).

    python benchmarks/density_errors.py runs/mp20-sym0/mp20_biternary/CrystalICL+curriculum-sgs-wyckoff/uncond \\
        --reference mp20_biternary:test --name NAME

Density is mass over volume, so its Wasserstein distance to the test set (the wdist ρ of Table 2) splits into how
far the valid samples' mass per atom and volume per atom are from the test crystals'. Reads the samples of
paper_tables.py's ``uncond`` directories and the per-sample analysis cached beside them (``eval/analysis``: the same
valid samples the table scores). Results: ``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, write  # noqa: E402

QUANTILES = (10, 25, 50, 75, 90)
MEASURES = ("density", "volume_per_atom", "mass_per_atom", "atoms")


def measures(structures) -> dict[str, np.ndarray]:
    return {"density": np.array([s.density for s in structures]),
            "volume_per_atom": np.array([s.volume / len(s) for s in structures]),
            "mass_per_atom": np.array([s.composition.weight / len(s) for s in structures]),
            "atoms": np.array([len(s) for s in structures], float)}


def summary(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    from scipy.stats import wasserstein_distance

    return {k: {"wdist": float(wasserstein_distance(gen[k], ref[k])),
                "samples": [round(float(x), 3) for x in np.percentile(gen[k], QUANTILES)],
                "reference": [round(float(x), 3) for x in np.percentile(ref[k], QUANTILES)]} for k in MEASURES}


def valid_structures(samples: Path) -> list:
    from crystalicl.evaluate import to_structure

    return [to_structure(r) for r, p in analysed(samples) if p.get("valid_structure") and p.get("valid_composition")]


def main():
    from pymatgen.core import Structure

    from crystalicl.data.prepare import load_prepared

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("uncond", nargs="+", help="unconditional sample directories (with samples.jsonl)")
    ap.add_argument("--reference", default="mp20_biternary:test", help="dataset:split")
    ap.add_argument("--name", default="density_errors")
    a = ap.parse_args()
    name, split = a.reference.split(":")
    ref = measures([Structure.from_str(c, fmt="cif") for c in load_prepared(name, split)["cif"]])
    res = {}
    for d in map(Path, a.uncond):
        gen = valid_structures(d / "samples.jsonl")
        res[d.as_posix()] = {"valid": len(gen), **summary(measures(gen), ref)}
    md = [f"# Density of valid unconditional samples against {a.reference}: mass and volume per atom", "",
          f"Percentiles {', '.join(map(str, QUANTILES))} of samples | reference; wdist per measure.", "",
          "| samples | valid | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 2) + "|"]
    for d, r in res.items():
        cells = [f"{r[k]['wdist']:.3f} ({' '.join(f'{x:g}' for x in r[k]['samples'])} \\| "
                 f"{' '.join(f'{x:g}' for x in r[k]['reference'])})" for k in MEASURES]
        md.append(f"| {d} | {r['valid']} | " + " | ".join(cells) + " |")
    write(a.name, {"reference": a.reference, "quantiles": QUANTILES, "runs": res}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

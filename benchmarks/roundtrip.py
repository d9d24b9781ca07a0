"""Round trip structure → text → structure on every benchmark test split available, per text format.

For each crystal: right composition (decoded cell has exactly the atoms of the conventional cell for
SGS formats, of the input cell for XYZ), StructureMatcher() match with the input, and unchanged space
group (spglib at crystalicl.symmetry.SYMPREC). Shares are over all rows of the split: a row that
``prepare`` could not symmetrise counts as a miss in every format. ``sgs-naive`` is the paper-faithful decoder
(pymatgen ``Structure.from_spacegroup``, default tolerance) reading the plain SGS text.

    python benchmarks/roundtrip.py [--limit N] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import warnings
from collections import Counter

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import write  # noqa: E402

DATASETS = ("perov5", "carbon24", "mp20_biternary", "mpts52")
FORMATS = ("sgs", "sgs-wyckoff", "xyz", "sgs-naive")


def check(args):
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure
    from pymatgen.core.periodic_table import Element

    from crystalicl import ParseError, decode
    from crystalicl.symmetry import SYMPREC, space_group_number, symmetrize
    from crystalicl.text.sgs import decode_naive

    cif, texts, sg = args
    warnings.simplefilter("ignore")
    s = Structure.from_str(cif, fmt="cif")
    numbers = [site.specie.Z for site in s]
    sym = symmetrize(s.lattice.matrix, s.frac_coords, numbers, SYMPREC)  # the conventional cell the text describes
    conv = Counter(Element(o.element).Z for o in sym.orbits for _ in range(o.multiplicity))
    prim = Counter(numbers)
    sm = StructureMatcher()
    out = {}
    for fmt in FORMATS:
        try:
            d = decode_naive(texts["sgs"]) if fmt == "sgs-naive" else decode(texts[fmt], fmt)
        except ParseError as e:
            out[fmt] = (False, False, False, str(e)[:200])
            continue
        got = Counter(site.specie.Z for site in d)
        comp = got == (prim if fmt == "xyz" else conv)
        match = bool(sm.fit(s, d))
        sgd = space_group_number(d.lattice.matrix, d.frac_coords, [site.specie.Z for site in d])
        out[fmt] = (comp, match, sgd == sg, None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    a = ap.parse_args()
    from crystalicl.data.prepare import failures, load_prepared

    results, examples = {}, {}
    with mp.get_context("fork").Pool(a.workers) as pool:
        for name in a.datasets.split(","):
            df = load_prepared(name, "test", workers=a.workers)
            n_fail = len(failures(name, "test"))  # rows prepare could not use count as misses
            if a.limit:
                df, n_fail = df.iloc[: a.limit], 0
            args = [(r.cif, {"sgs": r.sgs, "sgs-wyckoff": r.sgs_wyckoff, "xyz": r.xyz}, r.space_group)
                    for r in df.itertuples()]
            rows = list(tqdm(pool.imap(check, args, chunksize=8), total=len(args), desc=f"round trip {name}"))
            results[name] = {}
            for fmt in FORMATS:
                arr = np.array([r[fmt][:3] for r in rows] + [(0, 0, 0)] * n_fail, float)
                results[name][fmt] = {"n": len(arr), "composition": float(arr[:, 0].mean()),
                                      "match": float(arr[:, 1].mean()), "space_group": float(arr[:, 2].mean()),
                                      "prepare_failures": n_fail}
                bad = [(mid, r[fmt]) for mid, r in zip(df.material_id, rows, strict=True) if not all(r[fmt][:3])]
                examples.setdefault(name, {})[fmt] = [[m, *map(str, v)] for m, v in bad[:5]]
            print(name, {f: results[name][f] for f in FORMATS})
    proto = {n: load_prepared(n, "test").attrs["protocol"] for n in results}
    md = ["# Round trip structure → text → structure (test splits)", "",
          "| dataset | format | n | composition | StructureMatcher | space group |", "|---|---|---|---|---|---|"]
    for n, r in results.items():
        for f, v in r.items():
            md.append(f"| {n} | {f} | {v['n']} | {v['composition']:.4f} | {v['match']:.4f} | {v['space_group']:.4f} |")
    write("roundtrip", {**results, "_failures": examples, "_protocol": proto, "_limit": a.limit}, "\n".join(md))


if __name__ == "__main__":
    main()

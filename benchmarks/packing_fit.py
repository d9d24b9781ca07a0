"""How well per-element volume increments (``crystalicl.packing``) predict held-out cell volumes: the bound the
grammar puts on a sample's atoms is only as good as this fit.

    python benchmarks/packing_fit.py --dataset mp20_biternary --name packing_fit_mp20

Fits on the training split (offline: the reduced protocol's) and reports, per split, how many crystals have a
volume for every element, the spread of ``V / Σ n_e v_e`` against that of volume per atom (log standard
deviation), and the share inside the fitted window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mp20_biternary")
    ap.add_argument("--coverage", type=float, default=0.98)
    ap.add_argument("--name", default="packing_fit")
    a = ap.parse_args()
    from crystalicl.data.prepare import load_prepared
    from crystalicl.packing import cells_of_texts, packing_of_texts

    train = load_prepared(a.dataset, "train")
    packing = packing_of_texts(train["xyz"], a.coverage)
    res = {"dataset": a.dataset, "protocol": train.attrs.get("protocol"), "coverage": a.coverage,
           "low": packing.low, "high": packing.high, "elements": len(packing.volumes),
           "volumes": packing.to_dict()["volumes"], "splits": {}}
    md = [f"# Volume increments on {a.dataset} ({res['protocol']} protocol): fitted on train, "
          f"window {packing.low:.3f}–{packing.high:.3f} (central {a.coverage:.0%})", "",
          "| split | crystals | every element fitted | log-std V / Σ n v | log-std volume per atom | inside window |",
          "|---|---|---|---|---|---|"]
    for split in ("train", "test"):
        comps, vols = cells_of_texts(load_prepared(a.dataset, split)["xyz"])
        vols = np.array(vols)
        need = np.array([packing.needed(c) or np.nan for c in comps])
        ok = np.isfinite(need)
        ratio = vols[ok] / need[ok]
        per_atom = vols / np.array([sum(c.values()) for c in comps])
        row = {"crystals": len(comps), "fitted": int(ok.sum()), "log_std_ratio": float(np.std(np.log(ratio))),
               "log_std_volume_per_atom": float(np.std(np.log(per_atom))),
               "inside": float(np.mean((ratio >= packing.low) & (ratio <= packing.high)))}
        res["splits"][split] = row
        md.append(f"| {split} | {row['crystals']} | {row['fitted']} | {row['log_std_ratio']:.3f} | "
                  f"{row['log_std_volume_per_atom']:.3f} | {row['inside']:.3f} |")
    print("\n".join(md))
    write(a.name, res, "\n".join(md))


if __name__ == "__main__":
    main()

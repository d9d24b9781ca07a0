"""How much the Table 2 density and element-count distances owe to which 1,000 valid samples are scored.

    python benchmarks/wdist_noise.py runs/mp20-u10k/mp20_biternary/CrystalICL+curriculum-sgs-wyckoff/uncond \\
        --reference mp20_biternary:test --draws 50 --name NAME

The CDVAE protocol (``crystalicl.evaluate.evaluate_unconditional``) scores wdist ρ and N_el on 1,000 valid samples
drawn at random. With more valid samples than that, the number depends on the draw: this script repeats the draw
(seeds 0..draws-1) over the valid samples of a paper_tables ``uncond`` directory (the per-sample analysis cached
beside it, ``eval/analysis-v2``, so the same verdicts as the table's), and also scores 1,000 of the reference's own
crystals against the whole reference: the floor a perfect generator would sit on. Results:
``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, write  # noqa: E402

MEASURES = {"density": "wdist_density", "n_elements": "wdist_num_elements"}


def draws(values: dict[str, np.ndarray], ref: dict[str, np.ndarray], n: int, k: int) -> dict:
    """wdist of ``n`` values drawn without replacement (seeds 0..k-1, as the protocol draws with seed 0) and of
    all of them, per measure."""
    from crystalicl.metrics.distribution import wdist

    size = len(next(iter(values.values())))
    out = {}
    for key, name in MEASURES.items():
        w = []
        for seed in range(k):
            pick = np.random.default_rng(seed).choice(size, size=min(n, size), replace=False)
            w.append(wdist(values[key][pick], ref[key]))
        w = np.array(w)
        out[name] = {"all": round(wdist(values[key], ref[key]), 4), "seed0": round(float(w[0]), 4),
                     "mean": round(float(w.mean()), 4), "std": round(float(w.std()), 4),
                     "percentiles_5_50_95": [round(float(x), 4) for x in np.percentile(w, [5, 50, 95])]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("uncond", nargs="+", help="paper_tables uncond directories (samples.jsonl and eval/ inside)")
    ap.add_argument("--reference", default="mp20_biternary:test")
    ap.add_argument("--n", type=int, default=1000, help="valid samples the protocol scores")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--name", default="wdist_noise")
    a = ap.parse_args()

    from crystalicl.evaluate import reference_stats

    ref = reference_stats(*a.reference.split(":"), progress=False)
    ref = {k: np.asarray(ref[k], float) for k in MEASURES}
    rows = {"reference itself": {"valid": len(ref["density"]), **draws(ref, ref, a.n, a.draws)}}
    for d in a.uncond:
        per = [p for _, p in analysed(Path(d) / "samples.jsonl")]
        valid = [p for p in per if p.get("valid_structure") and p.get("valid_composition")]
        values = {k: np.array([p[k] for p in valid], float) for k in MEASURES}
        rows[d] = {"samples": len(per), "valid": len(valid), **draws(values, ref, a.n, a.draws)}
    md = [f"# wdist of {a.n} valid samples drawn at random (seeds 0..{a.draws - 1}) against {a.reference}", "",
          "The protocol scores seed 0's draw. 'reference itself': the reference's own crystals drawn the same way.",
          "", "| samples | valid | measure | seed 0 | mean ± std over draws | 5th / 50th / 95th percentile | "
          "all valid |", "|---|---|---|---|---|---|---|"]
    for d, r in rows.items():
        for name in MEASURES.values():
            m = r[name]
            md.append(f"| {d} | {r['valid']} | {name} | {m['seed0']} | {m['mean']} ± {m['std']} | "
                      f"{' / '.join(map(str, m['percentiles_5_50_95']))} | {m['all']} |")
    write(a.name, {"reference": a.reference, "n": a.n, "draws": a.draws, "rows": rows}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

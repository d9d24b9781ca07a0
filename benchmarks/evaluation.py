"""Evaluation on real crystals as if generated (a ceiling for the metrics) and the 10,000-sample timing.

1. For each dataset: 1,000 crystals of the training split (reduced protocol offline: the original val
   split minus the hold-out) evaluated with every unconditional metric against the test split.
2. Speed: 10,000 real MP crystals (mp20_biternary training split, topped up from its test split) through
   all unconditional metrics, reference caches warm, on this machine.

    python benchmarks/evaluation.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402

DATASETS = ("perov5", "carbon24", "mp20_biternary")
KEYS = ("valid_structure", "valid_composition", "valid_overall", "cov_recall", "cov_precision", "wdist_density",
        "wdist_energy", "wdist_num_elements", "p1_share", "space_group_chi2", "overlap", "negative_formation_energy")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--speed-n", type=int, default=10_000)
    a = ap.parse_args()
    import pandas as pd

    from crystalicl.data.prepare import load_prepared
    from crystalicl.evaluate import evaluate_unconditional, reference_stats

    real = {}
    for name in DATASETS:
        reference_stats(name, "test", a.workers, progress=False)  # warm the cache (not timed)
        train = load_prepared(name, "train").sample(n=a.n, random_state=0)
        recs = [{"id": m, "cif": c} for m, c in zip(train.material_id, train.cif, strict=True)]
        with tempfile.TemporaryDirectory() as tmp:
            m = evaluate_unconditional(recs, (name, "test"), Path(tmp), workers=a.workers, progress=False)
        real[name] = {k: m[k] for k in KEYS} | {"n": a.n, "reference": m["reference"], "protocol": m["protocol"]}
        print(name, real[name])
    md = ["# Real crystals evaluated as if generated (1,000 training crystals vs the test split)", "",
          "| dataset | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    md += [f"| {n} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |" for n, r in real.items()]
    write("evaluation_real_data", real, "\n".join(md))

    name = "mp20_biternary"
    pool = pd.concat([load_prepared(name, "train"), load_prepared(name, "test")]).iloc[: a.speed_n]
    recs = [{"id": m, "cif": c} for m, c in zip(pool.material_id, pool.cif, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        m = evaluate_unconditional(recs, (name, "test"), Path(tmp), workers=a.workers, progress=False)
        dt = time.perf_counter() - t
    speed = {"samples": len(recs), "seconds": round(dt, 1), "workers": a.workers, "dataset": name,
             "reference": m["reference"], "protocol": m["protocol"], "metrics": {k: m[k] for k in KEYS}}
    print(speed)
    write("evaluation_speed", speed, f"# All unconditional metrics for {len(recs)} samples\n\n"
          f"{dt:.0f} s on {a.workers} workers ({name} crystals, reference {m['reference']}, caches warm); "
          f"target ≤ 600 s.")


if __name__ == "__main__":
    main()

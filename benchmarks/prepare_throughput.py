"""Wall time of ``crystalicl data prepare`` from a cold cache, per dataset, on this machine.

MP-20 itself is not on offline machines; its binary/ternary part (``mp20_biternary``, val + test, the
reduced protocol) stands in and is the headline entry. Reference: the paper converted MP-20 (45,231
structures) in 142.6 s with 32 processes (about 9.5 structures/s per process).

    python benchmarks/prepare_throughput.py [--workers 2]
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

HEADLINE = "mp20_biternary"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--datasets", default="mp20_biternary,perov5,carbon24,mpts52")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CRYSTALICL_CACHE_DIR"] = cache
        from crystalicl.data import prepare, sources

        for name in a.datasets.split(","):
            sources.protocol(name)  # locate files before timing
            n = sum(len(sources.read_source(name, s)) for s in ("val", "test"))
            t = time.perf_counter()
            paths = prepare.prepare(name, workers=a.workers, progress=False)
            dt = time.perf_counter() - t
            fails = sum(len(prepare.failures(name, s)) for s in paths)
            rows.append({"dataset": name, "splits": sorted(paths), "protocol": sources.protocol(name), "structures": n,
                         "failures": fails, "seconds": round(dt, 2), "per_second": round(n / dt, 1),
                         "workers": a.workers})
            print(rows[-1])
    head = next((r for r in rows if r["dataset"] == HEADLINE), rows[0])
    md = ["# `crystalicl data prepare` throughput (cold cache)", "",
          "| dataset | splits | structures | failures | seconds | structures/s | workers |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['dataset']} | {'+'.join(r['splits'])} | {r['structures']} | {r['failures']} | {r['seconds']} | "
           f"{r['per_second']} | {r['workers']} |" for r in rows]
    md += ["", "Paper reference: MP-20 in 142.6 s on 32 processes (≈ 9.5 structures/s per process)."]
    write("prepare_throughput", {**{k: head[k] for k in ("dataset", "structures", "seconds", "per_second", "workers")},
                                 "all": rows}, "\n".join(md))


if __name__ == "__main__":
    main()

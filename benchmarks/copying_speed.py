"""How long a training run's copying check takes, one record per forward pass against padded batches, and
whether the two read the same: the check runs every ``eval_every`` steps, outside the time budget, so its cost is
wall-clock a GPU lease pays on top of training (LoRA SmolLM2 on reduced MP-20, H200: about 30 s a check against
about 50 s for the 200 steps between checks, with one record per pass).

    python benchmarks/copying_speed.py --model runs/mp20-lora/mp20_biternary/CrystalICL-sgs/model \\
        --data runs/mp20-lora/mp20_biternary/CrystalICL-sgs/val.jsonl --n 96 --batch-sizes 1,16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a trained model directory")
    ap.add_argument("--data", required=True, help="held-out instruction JSONL (what the run checks on)")
    ap.add_argument("--n", type=int, default=96, help="first N records of the file")
    ap.add_argument("--batch-sizes", dest="batch_sizes", default="1,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="copying_speed", help="results file name (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    import torch

    from crystalicl.copying import condition_copying
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained

    records = read_jsonl(Path(a.data))[:a.n]
    model, tok, meta = load_trained(Path(a.model))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    rows, reads = {}, {}
    for _ in range(a.repeats):  # interleaved, so drift on a shared machine hits every batch size alike
        for bs in map(int, a.batch_sizes.split(",")):
            t = time.perf_counter()
            reads[bs] = condition_copying(model, tok, records, batch_size=bs)
            rows.setdefault(bs, []).append(time.perf_counter() - t)
    base = min(rows)
    res = {str(bs): {"median_s": round(statistics.median(ts), 3), "times_s": [round(t, 3) for t in ts],
                     "speedup": round(statistics.median(rows[base]) / statistics.median(ts), 2), "read": reads[bs]}
           for bs, ts in rows.items()}
    same = all({k: v for k, v in r.items() if k != "formula_likelihood"} ==
               {k: v for k, v in reads[base].items() if k != "formula_likelihood"} for r in reads.values())
    md = ["# Copying check: one record per pass against padded batches", "",
          f"Model `{a.model}` ({meta['kind']}, {meta['metrics'].get('hardware', '?')}-trained), first {len(records)} "
          f"records of `{a.data}`, on {device}; median of {a.repeats} interleaved repeats. Same reading at every "
          f"batch size (all rates; likelihood to rounding): {same}.", "",
          "| batch size | median s | speedup | copying | formula | space group |", "|---|---|---|---|---|---|"]
    for bs, r in res.items():
        c = r["read"]
        md.append(f"| {bs} | {r['median_s']:.2f} | {r['speedup']:.2f} | {c['conditions']:.4f} | {c['accuracy']:.4f} |"
                  f" {c.get('space_group', float('nan')):.4f} |")
    write(a.name, {"model": a.model, "data": a.data, "records": len(records), "device": device, "same": same,
                   "batch_sizes": res}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

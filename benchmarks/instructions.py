"""Instruction sets: fingerprint throughput, neighbour search at MP-30 scale, build time, prompt lengths.

Offline, MP-20's train split is not available: ``mp20_biternary`` under the reduced protocol (train = the
original val split minus the hold-out) stands in, as every result states.

    python benchmarks/instructions.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402

DATASET = "mp20_biternary"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    from crystalicl.data import prepare, sources
    from crystalicl.features import dataset_fingerprints
    from crystalicl.instructions import Mixture, build, load_pool
    from crystalicl.model.tokenizer import build_tokenizer
    from crystalicl.selection import Pool

    result = {"dataset": DATASET, "protocol": sources.protocol(DATASET)}
    train = prepare.load_prepared(DATASET, "train", a.workers)
    # 1. fingerprints of the whole source file behind 'train', cold cache
    warm_cache = os.environ.get("CRYSTALICL_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CRYSTALICL_CACHE_DIR"] = tmp
        prepare.load_prepared(DATASET, "train", a.workers)  # prepare (not timed)
        src = sources.protocol_split(DATASET, "train")[0]
        n_src = len(sources.read_source(DATASET, src))
        t = time.perf_counter()
        ids, sfp, _, errors = dataset_fingerprints(DATASET, "train", a.workers, progress=False)
        dt = time.perf_counter() - t
        fp_file = prepare.prepared_dir(DATASET) / f"{src}.fingerprints.npz"
        if warm_cache:  # keep them: the pool below needs the same fingerprints
            shutil.copy(fp_file, Path(warm_cache) / "prepared" / DATASET / fp_file.name)
    if warm_cache:  # back to the persistent cache for the rest
        os.environ["CRYSTALICL_CACHE_DIR"] = warm_cache
    else:
        os.environ.pop("CRYSTALICL_CACHE_DIR")
    result["fingerprints"] = {"structures": n_src, "seconds": round(dt, 1), "per_second": round(n_src / dt, 2),
                              "workers": a.workers, "failures": sum(e is not None for e in errors)}
    print(result["fingerprints"])
    # 2. exact nearest-neighbour queries in a pool of MP-30 size (random fingerprints, same dimension)
    rng = np.random.default_rng(0)
    big = Pool(train.sample(n=130_000, replace=True, random_state=0).assign(
        material_id=[f"x{i}" for i in range(130_000)]), rng.random((130_000, sfp.shape[1])))
    t = time.perf_counter()
    for q in range(200):
        big.nearest(q, 2)
    result["nearest_neighbour_130k"] = {"pool": 130_000, "queries": 200,
                                        "ms_per_query": round((time.perf_counter() - t) / 200 * 1000, 2)}
    print(result["nearest_neighbour_130k"])
    # 3. instruction-set build time with every strategy, and prompt lengths
    pool = load_pool(DATASET, "train", fingerprints=True, workers=a.workers, progress=False)
    allowed = ("formula", "space_group", "formation_energy", "band_gap", "e_above_hull")
    t = time.perf_counter()
    recs = list(build(train, pool, allowed, "sgs", Mixture(), seed=0, progress=False))
    dt = time.perf_counter() - t
    result["build"] = {"targets": len(train), "records": len(recs), "seconds": round(dt, 1),
                       "strategies": list(Mixture().strategies),
                       "fallbacks": int(sum(r["fallback"] is not None for r in recs))}
    print(result["build"])
    tok = build_tokenizer()
    lengths = {}
    sub = train.iloc[:1000]
    for fmt in ("sgs", "sgs-wyckoff", "xyz"):
        for shots in (0, 3):
            m = Mixture(zero_shot=shots == 0, few_shot=0 if shots == 0 else 1, shots=(shots,) if shots else (1,),
                        strategies=("C",), aux=0.0)
            texts = [r["prompt"] + r["response"] for r in build(sub, pool, allowed, fmt, m, seed=1, progress=False)]
            chars = np.array([len(x) for x in texts])
            toks = np.array([len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]])
            lengths[f"{fmt}/{shots}-shot"] = {
                "n": len(texts), "chars_mean": float(chars.mean()), "chars_p95": float(np.percentile(chars, 95)),
                "tokens_mean": float(toks.mean()), "tokens_p95": float(np.percentile(toks, 95)),
                "tokens_max": int(toks.max())}
    result["prompt_lengths"] = lengths
    f, b = result["fingerprints"], result["build"]
    md = [f"# Instruction sets ({DATASET}, {result['protocol']} protocol)", "",
          f"- CrystalNN fingerprints: {f['structures']} structures in {f['seconds']} s = {f['per_second']} /s "
          f"on {f['workers']} workers ({f['failures']} failures)",
          f"- exact nearest neighbours in a 130k pool: {result['nearest_neighbour_130k']['ms_per_query']} ms/query",
          f"- build (C, F, CF, R mixed, aux task): {b['targets']} targets -> {b['records']} instructions in "
          f"{b['seconds']} s ({b['fallbacks']} selections needed a fallback)", "",
          "| format / shots | chars mean | chars p95 | tokens mean | tokens p95 | tokens max |",
          "|---|---|---|---|---|---|"]
    md += [f"| {k} | {v['chars_mean']:.0f} | {v['chars_p95']:.0f} | {v['tokens_mean']:.0f} | {v['tokens_p95']:.0f} | "
           f"{v['tokens_max']} |" for k, v in lengths.items()]
    write("instructions", result, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

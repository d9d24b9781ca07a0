"""Where conditional samples miss the target formula, and whether few-shot demonstrations are to blame.

    python benchmarks/formula_errors.py runs/paper-p5-switch-2400/perov5/CrystalICL+curriculum-sgs --name NAME

Reads every ``cond-*/samples.jsonl`` under the given model directories (paper_tables.py's layout) and sorts the
samples whose formula misses the target by :func:`crystalicl.copying.formula_error`. The sampled formulas are the
per-sample analysis ``evaluate_conditional`` cached beside them (``eval/analysis-v2``), so a miss here is a miss there.
Results: ``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, conditional_jobs, write  # noqa: E402

from crystalicl.copying import FORMULA_ERRORS, demonstration_formulas, formula_error  # noqa: E402

COLUMNS = (*FORMULA_ERRORS, "unparseable")


def classify_job(samples: Path) -> dict:
    counts, examples, n = Counter(), [], 0
    for r, p in analysed(samples):
        if "formula" not in r.get("conditions", {}):
            continue
        n += 1
        got, demos = p.get("formula"), demonstration_formulas(r["prompt"])
        if got is None:
            counts["unparseable"] += 1
            continue
        kind = formula_error(r["conditions"]["formula"], got, demos)
        if kind is not None:
            counts[kind] += 1
            if len(examples) < 5:
                examples.append({"target": r["conditions"]["formula"], "sampled": got, "demonstrations": demos,
                                 "error": kind})
    return {"samples": n, "wrong": sum(counts.values()),
            "errors": {k: counts[k] for k in COLUMNS if counts[k]}, "examples": examples}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories of a paper_tables.py --work")
    ap.add_argument("--name", default="formula_errors")
    a = ap.parse_args()
    res = {name: classify_job(job) for name, job in conditional_jobs(a.models).items()}
    md = ["# Formula misses of conditional samples, by kind", "",
          "| job | samples | wrong | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for job, r in res.items():
        cells = [r["samples"], r["wrong"], *(r["errors"].get(c, 0) for c in COLUMNS)]
        md.append(f"| {job} | " + " | ".join(map(str, cells)) + " |")
    write(a.name, {"jobs": res}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Where conditional samples miss the target space group: a wrong symbol written, or the right one with a crystal
that analyses to another group.

    python benchmarks/space_group_errors.py runs/c24-4200/carbon24/CrystalICL+curriculum-sgs --name NAME

Reads every ``cond-*/samples.jsonl`` under the given model directories (paper_tables.py's layout) and sorts the
samples whose crystal does not analyse to the target group at symprec 0.01 (the scored tolerance) by
:func:`crystalicl.copying.space_group_error`. The analysed groups are the per-sample analysis
``evaluate_conditional`` cached beside them (``eval/analysis-v2``), so a miss here is a miss there; the written group is
the SGS text's first line. Results: ``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, conditional_jobs, write  # noqa: E402

from crystalicl.copying import SPACE_GROUP_ERRORS, demonstration_space_groups, space_group_error  # noqa: E402

COLUMNS = (*SPACE_GROUP_ERRORS, "unparseable")


def classify_job(samples: Path) -> dict:
    from crystalicl.text import written_space_group

    counts, examples, n, written_right, draws = Counter(), [], 0, 0, 0
    for r, p in analysed(samples):
        if "space_group" not in r.get("conditions", {}):
            continue
        n += 1
        draws += r.get("attempts", 1)
        target = int(r["conditions"]["space_group"])
        if not p.get("parsed"):
            counts["unparseable"] += 1
            continue
        written = written_space_group(r["text"], r.get("format", "sgs"))
        written_right += written == target
        kind = space_group_error(target, written, p.get("space_group_0.01"), demonstration_space_groups(r["prompt"]))
        if kind is not None:
            counts[kind] += 1
            if len(examples) < 8:
                examples.append({"target": target, "written": written, "analysed": p.get("space_group_0.01"),
                                 "text": r["text"], "error": kind})
    return {"samples": n, "wrong": sum(counts.values()), "written_right": written_right, "draws": draws,
            "errors": {k: counts[k] for k in COLUMNS if counts[k]}, "examples": examples}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories of a paper_tables.py --work")
    ap.add_argument("--name", default="space_group_errors")
    a = ap.parse_args()
    res = {name: classify_job(job) for name, job in conditional_jobs(a.models).items()}
    md = ["# Space-group misses of conditional samples, by kind (symprec 0.01)", "",
          "| job | samples | draws | symbol written right | wrong | " + " | ".join(COLUMNS) + " |",
          "|---" * (len(COLUMNS) + 5) + "|"]
    for job, r in res.items():
        cells = [r["samples"], r["draws"], r["written_right"], r["wrong"], *(r["errors"].get(c, 0) for c in COLUMNS)]
        md.append(f"| {job} | " + " | ".join(map(str, cells)) + " |")
    write(a.name, {"jobs": res}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

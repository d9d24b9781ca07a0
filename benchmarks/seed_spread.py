"""Spread over training runs: paper-tables results that differ only in how the model was trained, as mean ± std.

    python benchmarks/seed_spread.py paper_tables_p5_fs3_seed0 ... paper_tables_p5_fs3_seed4 --name NAME

paper_tables.py's ± is over prompt sets sampled from *one* trained model. On a 2-CPU budget the trained model
varies far more than the prompts do (Perov-5 3-shot formula 0.88-0.99 over five training seeds, ± 0.02 over
prompt sets), so a claim about a recipe needs the spread over training runs. This reads results files of
paper_tables.py (names under ``benchmarks/results`` or paths), refuses them unless each dataset's setup is the
same up to :data:`MAY_DIFFER` (so a recipe is never averaged with another), and writes, for every
conditional row present in all of them, each run's rate and their mean, sample std, min and max.
Results: ``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write  # noqa: E402
from paper_tables import PAPER_CONDITIONAL, _setup_of  # noqa: E402

# what may differ between the runs: how the training run was seeded or started, where and when it ran, and what
# else the run measured (other arms, more prompt sets of the same size, unconditional samples): a conditional
# row's rate estimates the same thing
MAY_DIFFER = ("train_seed", "stage1_from", "provenance", "training_hardware", "arms", "runs", "n_uncond")


class SetupMismatch(ValueError):
    """The results files measure different recipes (not just different training runs of one)."""


def load(name: str) -> dict:
    path = Path(name) if name.endswith(".json") else RESULTS / f"{name}.json"
    return json.loads(path.read_text())


def _recipe(setup: dict) -> dict:
    return {k: v for k, v in setup.items() if k not in MAY_DIFFER}


def spread(results: dict[str, dict]) -> dict:
    """Per dataset and conditional row: each run's rates and their mean, std, min, max over runs."""
    from crystalicl.evaluate import aggregate_runs

    if len(results) < 2:
        raise ValueError("the spread over training runs needs two results files or more")
    setups = {name: _setup_of(r) for name, r in results.items()}
    keys = set.intersection(*(set(s) for s in setups.values()))
    if not keys:
        raise SetupMismatch("the results files share no dataset")
    first = next(iter(results))
    out = {}
    for key in sorted(keys):
        recipes = {name: _recipe(s[key]) for name, s in setups.items()}
        ref = recipes[first]
        for name, recipe in recipes.items():
            if recipe != ref:
                diff = sorted(k for k in recipe.keys() | ref.keys() if recipe.get(k) != ref.get(k))
                raise SetupMismatch(f"{key}: {first} and {name} differ in {', '.join(diff)}")
        rows = [r["conditional_success_rate"].get(key, {}) for r in results.values()]
        table = {}
        for row in sorted(set.intersection(*(set(x) for x in rows))):
            cells = [x[row] for x in rows]
            agg = aggregate_runs(cells)  # mean and sample std, as paper_tables' ± over prompt sets
            table[row] = {}
            for metric in PAPER_CONDITIONAL:
                if all(metric in c for c in cells):
                    vals = [c[metric] for c in cells]
                    table[row][metric] = {"runs": vals, "mean": round(agg[metric], 4),
                                          "std": round(agg[f"{metric}_std"], 4), "min": min(vals), "max": max(vals)}
        out[key] = {"recipe": ref,
                    "runs": {name: {k: s[key].get(k) for k in MAY_DIFFER if k != "provenance"}
                             | {"commit": (s[key].get("provenance") or {}).get("commit")}
                             for name, s in setups.items()},
                    "conditional_success_rate": table}
    return out


def markdown(out: dict, names: list[str]) -> str:
    lines = ["# Spread over training runs (conditional success rates; paper_tables.py's ± is over prompt sets)", ""]
    for key, d in out.items():
        head = " | ".join(f"run {i}" for i in range(len(names)))
        lines += [f"## {key}", "", "runs: " + ", ".join(f"`{n}`" for n in names), "",
                  f"| row | metric | {head} | mean ± std | min | max |",
                  "|---|---|" + "---|" * (len(names) + 3)]
        for row, cells in d["conditional_success_rate"].items():
            for metric, c in cells.items():
                lines.append(f"| {row} | {metric} | " + " | ".join(f"{v:.3f}" for v in c["runs"])
                             + f" | {c['mean']:.3f} ± {c['std']:.3f} | {c['min']:.3f} | {c['max']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="paper_tables.py results: names under benchmarks/results, or paths")
    ap.add_argument("--name", required=True, help="results file to write (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    names = [Path(n).stem for n in a.results]
    if len(set(names)) != len(names):
        ap.error("each results file once")
    try:
        out = spread({n: load(p) for n, p in zip(names, a.results, strict=True)})
    except ValueError as e:  # SetupMismatch included: say which setting differs, without a traceback
        ap.error(str(e))
    md = markdown(out, names)
    write(a.name, {"results": names, "datasets": out}, md)
    print(md)


if __name__ == "__main__":
    main()

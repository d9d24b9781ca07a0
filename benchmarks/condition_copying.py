"""Does a trained model read the prompt's conditions? Teacher-forced element accuracy on held-out instructions
(``crystalicl.copying``), per task (zero-/few-shot): the accuracy of the argmax element, the share of argmax
elements that occur in the prompt's target formula at all, and (SGS text) the share of space-group symbol
lines read right.

    python benchmarks/condition_copying.py --model runs/perov5-small/model \\
        --data runs/perov5-small/instructions.val.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, nargs="+", help="one or more trained models, scored on the same data")
    ap.add_argument("--data", required=True, help="instruction JSONL (held out)")
    ap.add_argument("--n", type=int, default=200, help="records per task")
    ap.add_argument("--name", default="condition_copying", help="results file name (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    from crystalicl.copying import condition_copying
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained

    records = read_jsonl(Path(a.data))
    res, md = {}, ["# Teacher-forced condition copying", "",
                   f"Held-out instructions: `{a.data}` (at most {a.n} records per task). Accuracy: the argmax element "
                   "is the true one; likelihood: a record's probability of all its true element symbols "
                   "(temperature 1), averaged.", "",
                   "| model | preset | steps | val loss | task | records | element tokens | accuracy | "
                   "formula likelihood | predicted element in target formula | space-group symbol (records) |",
                   "|---" * 11 + "|"]
    for path in a.model:
        model, tok, meta = load_trained(Path(path))
        res[path] = {"preset": meta.get("preset"), "steps": meta["metrics"].get("steps"),
                     "val_loss": meta["metrics"].get("val_loss")}
        for task in ("zero-shot", "few-shot"):
            c = res[path][task] = condition_copying(model, tok, [r for r in records if r["task"] == task],
                                                    limit=a.n)
            print(path, task, json.dumps(c))
            md.append(f"| `{path}` | {meta.get('preset')} | {res[path]['steps']} | "
                      f"{res[path]['val_loss'] or float('nan'):.3f} | {task} | {c['records']} | "
                      f"{c['element_tokens']} | {c['accuracy']:.3f} | {c.get('formula_likelihood', float('nan')):.3f}"
                      f" | {c['in_target_formula']:.3f} | "
                      + (f"{c['space_group']:.3f} ({c['space_group_records']})" if "space_group" in c else "–")
                      + " |")
    write(a.name, {"models": res, "data": a.data, "n": a.n}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

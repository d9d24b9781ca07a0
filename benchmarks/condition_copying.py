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
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="instruction JSONL (held out)")
    ap.add_argument("--n", type=int, default=200, help="records per task")
    ap.add_argument("--name", default="condition_copying", help="results file name (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    from crystalicl.copying import condition_copying
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained, read_meta

    model, tok, _ = load_trained(Path(a.model))
    records = read_jsonl(Path(a.data))
    res = {}
    for task in ("zero-shot", "few-shot"):
        res[task] = condition_copying(model, tok, [r for r in records if r["task"] == task], limit=a.n)
        print(task, json.dumps(res[task]))
    meta = read_meta(Path(a.model))
    md = [f"# Teacher-forced element accuracy ({a.model}, preset {meta.get('preset')}, "
          f"{meta['metrics'].get('steps')} steps, val loss {meta['metrics'].get('val_loss', float('nan')):.3f})", "",
          "| task | records | element tokens | accuracy | predicted element in target formula | "
          "space-group symbol (records) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {k} | {v['records']} | {v['element_tokens']} | {v['accuracy']:.3f} | {v['in_target_formula']:.3f} | "
           + (f"{v['space_group']:.3f} ({v['space_group_records']})" if "space_group" in v else "–") + " |"
           for k, v in res.items()]
    write(a.name, {**res, "model": a.model, "data": a.data}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

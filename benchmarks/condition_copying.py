"""Does a trained model read the prompt's formula? Teacher-forced element accuracy on held-out instructions.

For each response, the model sees the true text up to every element symbol and predicts that symbol. Reported
per task (zero-/few-shot): the accuracy of the argmax element, and the share of argmax elements that occur in
the prompt's target formula at all. A model that copies the formula scores ~1 on both; one that has learnt
only the dataset's statistics gets the common anions right and the cations wrong. This separates "the model
ignores the condition" from "sampling or decoding loses it".

    python benchmarks/condition_copying.py --model runs/perov5-small/model \\
        --data runs/perov5-small/instructions.val.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
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
    import torch
    from pymatgen.core import Composition, Element

    from crystalicl.conditions import SENTENCES
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained, read_meta

    model, tok, _ = load_trained(Path(a.model))
    model.eval()
    symbols = {e.symbol for e in Element}
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    formula = re.compile(re.escape(SENTENCES["formula"]).replace(r"\{\}", r"(\S+?)") + r"(?:\s|$)")
    records = [r for r in read_jsonl(Path(a.data)) if "formula" in r["conditions"]]
    res = {}
    for task in ("zero-shot", "few-shot"):
        recs = [r for r in records if r["task"] == task][:a.n]
        hit = in_formula = total = 0
        for r in recs:
            target = formula.findall(r["prompt"])[-1]  # the last formula in the prompt is the target's
            allowed = {e.symbol for e in Composition(target).elements}
            p = bos + tok(r["prompt"], add_special_tokens=False)["input_ids"]
            q = tok(r["response"], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                pred = model(input_ids=torch.tensor([p + q])).logits[0, len(p) - 1:-1].argmax(-1).tolist()
            for t, g in zip(q, pred, strict=True):
                s = tok.convert_ids_to_tokens(t)
                if s in symbols:
                    total += 1
                    hit += g == t
                    in_formula += tok.convert_ids_to_tokens(g) in allowed
        res[task] = {"records": len(recs), "element_tokens": total, "accuracy": round(hit / max(total, 1), 4),
                     "in_target_formula": round(in_formula / max(total, 1), 4)}
        print(task, json.dumps(res[task]))
    meta = read_meta(Path(a.model))
    md = [f"# Teacher-forced element accuracy ({a.model}, preset {meta.get('preset')}, "
          f"{meta['metrics'].get('steps')} steps, val loss {meta['metrics'].get('val_loss', float('nan')):.3f})", "",
          "| task | records | element tokens | accuracy | predicted element in target formula |",
          "|---|---|---|---|---|"]
    md += [f"| {k} | {v['records']} | {v['element_tokens']} | {v['accuracy']:.3f} | {v['in_target_formula']:.3f} |"
           for k, v in res.items()]
    write(a.name, {**res, "model": a.model, "data": a.data}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

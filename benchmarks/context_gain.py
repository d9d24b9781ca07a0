"""How much does a model read its demonstrations? Teacher-forced loss of the target's Wyckoff layout, with and
without a template in the prompt.

    python benchmarks/context_gain.py runs/paper-mp20-sw25/mp20_biternary/CrystalICL+curriculum-sgs-wyckoff/model \
        runs/paper-mp20-sw25-T/mp20_biternary/T+curriculum-sgs-wyckoff/model --n 300 --name NAME

Sampling (``demonstration_use.py``) asks whether samples copy a template; this asks the model directly, without
sampling noise. For ``--n`` test crystals whose Wyckoff layout at least three training crystals share, each stated
with every condition the dataset has, the true text (the model's format: SGS-Wyckoff or SGS) is scored after six
prompts: 0-shot; 3-shot ``T`` (three training crystals of the target's own layout: copying them gives the answer);
3-shot ``C`` (the selection the benchmarks prompt with); 3-shot ``R`` (random crystals, the control); and ``T`` with
its last demonstration replaced by the target itself ("answer shown": copying needs no renaming, only plain
induction, so a model that gains nothing here cannot copy at all, and one that gains here but not after ``T`` cannot
match a template's lines to the target's elements); and the target as the only demonstration of a 1-shot prompt
("answer alone": copying one text, what a copy stage trains). Per prompt kind: mean negative log-likelihood (nats)
per response token and per *layout* token (the element lines, ``Li 4g``, with the newline before each, and the end of
text: which sites there are, what the formula follows from), and the share of targets whose every layout token is the
model's top choice (teacher-forced: greedy decoding would write the true layout). A model that reads its
demonstrations loses far less on the layout after ``T`` than after 0-shot or ``R``. Results:
``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, write  # noqa: E402

PROMPTS = {"0-shot": (None, 0), "T (own layout)": ("T", 3), "C": ("C", 3), "R": ("R", 3),
           "answer shown": ("T, answer last", 3),  # T's prompt, its last demonstration the target itself
           "answer alone": ("answer only", 1)}  # the target its only demonstration: copying one text
CONDITIONS = ("formula", "space_group", "formation_energy", "band_gap")


def layout_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the element lines of SGS text (``Li 4g``; without labels ``Li``), each with the newline
    before it: the choice to write another site is a layout token too."""
    spans, pos = [], 0
    for i, line in enumerate(text.split("\n")):
        if i >= 3 and i % 2 == 1:
            spans.append((pos - 1, pos + len(line)))
        pos += len(line) + 1
    return spans


def score(model, tok, prompt: str, response: str) -> tuple[float, float, bool, int, int]:
    """(summed NLL of the response tokens, summed NLL of its layout tokens, every layout token the argmax,
    response tokens, layout tokens), teacher-forced."""
    import torch

    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    p = bos + tok(prompt, add_special_tokens=False)["input_ids"]
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    q = enc["input_ids"] + [tok.eos_token_id]  # as trained: stopping is a layout decision
    spans = layout_spans(response)
    on_layout = np.array([any(a <= s and e <= b for a, b in spans) for s, e in enc["offset_mapping"]] + [True])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + q])).logits[0, len(p) - 1:len(p) + len(q) - 1].float()
    nll = -logits.log_softmax(-1)[range(len(q)), q].numpy()
    right = logits.argmax(-1).numpy() == np.array(q)
    return float(nll.sum()), float(nll[on_layout].sum()), bool(right[on_layout].all()), len(q), int(on_layout.sum())


def answer_shown(template, fmt: str, row, names, pool, with_t: dict, kept: int = 2) -> dict:
    """``with_t`` (a ``T`` record of ``row``) with its first ``kept`` demonstrations and then the target itself."""
    from crystalicl.conditions import describe
    from crystalicl.instructions import TEXT_COLUMN

    ids = with_t["example_ids"][:kept]
    shown = [pool.frame.iloc[pool.index_of(i)] for i in ids] + [row]
    examples = [(describe(ex, names), ex[TEXT_COLUMN[fmt]]) for ex in shown]
    return with_t | {"prompt": template.generation(describe(row, names), fmt, examples), "shots": kept + 1,
                     "example_ids": ids + [str(row["material_id"])]}


@functools.cache  # every model of one template and format is scored on the same records: build them once
def prompts_of_targets(ds: str, n: int, template, fmt: str, seed: int = 0) -> dict[str, list[dict]]:
    """For the first ``n`` test crystals with three training crystals of their layout, each one's record under
    every prompt kind of :data:`PROMPTS` (demonstrations from the training split)."""
    from crystalicl.data.prepare import load_prepared
    from crystalicl.instructions import generation_record, load_pool

    tests = load_prepared(ds, "test", progress=False)
    pool = load_pool(ds, "train", fingerprints=False, progress=False)
    names = [c for c in CONDITIONS if c in tests.columns]
    rng = np.random.default_rng(seed)
    records: dict[str, list[dict]] = {kind: [] for kind in PROMPTS}
    for _, row in tests.iterrows():
        if len(records["0-shot"]) == n:
            break
        with_t = generation_record(template, fmt, row, names, pool, "T", 3, rng)
        if with_t["fallback"] is not None:  # fewer than three training crystals share its layout
            continue
        built = {"T": with_t, "T, answer last": answer_shown(template, fmt, row, names, pool, with_t),
                 "answer only": answer_shown(template, fmt, row, names, pool, with_t, kept=0)}
        for kind, (strategy, k) in PROMPTS.items():
            records[kind].append(built.get(strategy) or generation_record(template, fmt, row, names, pool, strategy,
                                                                          k, rng))
    return records


def gain(model_dir: Path, ds: str, n: int) -> dict:
    from crystalicl.model.loading import load_trained
    from crystalicl.prompts import PromptTemplate

    model, tok, meta = load_trained(model_dir)
    if meta["format"] not in ("sgs", "sgs-wyckoff"):
        raise ValueError(f"{model_dir}: writes {meta['format']} text; layout tokens are SGS element lines")
    records = prompts_of_targets(ds, n, PromptTemplate.from_dict(meta["template"]), meta["format"])
    out = {}
    for kind, recs in records.items():
        totals = np.array([score(model, tok, r["prompt"], r["response"])
                           for r in tqdm(recs, desc=f"{Path(model_dir).parent.name} {kind}", leave=False)])
        out[kind] = {"targets": len(recs),
                     "nll per token": round(totals[:, 0].sum() / totals[:, 3].sum(), 4),
                     "nll per layout token": round(totals[:, 1].sum() / totals[:, 4].sum(), 4),
                     "layout right (argmax)": round(totals[:, 2].mean(), 4)}
    return out


def table(dataset: str, res: dict) -> str:
    cols = ("nll per token", "nll per layout token", "layout right (argmax)")
    md = ["# Teacher-forced: does a template in the prompt make the target's layout likelier?", "",
          f"{dataset} test crystals with three training crystals of their layout, every condition stated; "
          "NLL in nats. T: three crystals of the target's own layout; C: the benchmarks' selection; R: random; "
          "answer shown: T's prompt, its last demonstration the target itself; answer alone: the target its only "
          "demonstration.", "",
          "| model | prompt | targets | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for m, by in res.items():
        md += [f"| {m} | {kind} | {v['targets']} | " + " | ".join(str(v[c]) for c in cols) + " |"
               for kind, v in by.items()]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="trained SGS or SGS-Wyckoff model directories")
    ap.add_argument("--dataset", default="mp20_biternary")
    ap.add_argument("--n", type=int, default=300, help="test crystals (default 300)")
    ap.add_argument("--name", default="context_gain")
    a = ap.parse_args()
    done = RESULTS / f"{a.name}.json"
    res = {}
    if done.exists():  # resume: models scored by an earlier run on the same crystals are kept, not rescored
        old = json.loads(done.read_text())
        res = old["models"] if (old["dataset"], old["n"]) == (a.dataset, a.n) else {}
    for m in a.models:
        if m not in res:
            res[m] = gain(Path(m), a.dataset, a.n)
            write(a.name, {"dataset": a.dataset, "n": a.n, "models": res}, table(a.dataset, res))
    print(table(a.dataset, res))


if __name__ == "__main__":
    main()

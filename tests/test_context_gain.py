"""Teacher-forced layout scores (benchmarks/context_gain.py) on real MP-20 crystals."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from conftest import sample

from crystalicl.conditions import describe
from crystalicl.data.prepare import prepare_one
from crystalicl.instructions import generation_record
from crystalicl.model.compact import build_model
from crystalicl.model.tokenizer import build_tokenizer
from crystalicl.prompts import DEFAULT
from crystalicl.selection import Pool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import context_gain  # noqa: E402


def _rows(n=8):
    df = sample("mp20_biternary", "test", n=n)
    return [r for r in (prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)) if not r["error"]]


def test_layout_spans_are_the_element_lines_with_the_newline_before_each():
    for r in _rows():
        for fmt in ("sgs_wyckoff", "sgs"):
            text = r[fmt]
            element_lines = text.split("\n")[3::2]
            assert [text[a:b] for a, b in context_gain.layout_spans(text)] == ["\n" + x for x in element_lines]


def test_score_sums_the_models_own_log_likelihood_over_layout_tokens():
    """On an untrained model: the summed NLL equals a direct computation, and the layout tokens are those of the
    element lines, the newline before each, and the end of text."""
    tok = build_tokenizer()
    model = build_model("tiny", tok, seed=0).eval()
    for r in _rows(4):
        prompt = DEFAULT.generation(describe(r, ["formula", "space_group"]), "sgs-wyckoff", [])
        text = r["sgs_wyckoff"]
        total, on_layout, right, n, n_layout = context_gain.score(model, tok, prompt, text)
        p = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        q = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([p + q])).logits[0].float().log_softmax(-1)
        direct = -sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(q))
        assert n == len(q) and math.isclose(total, direct, rel_tol=1e-4)
        lines = text.split("\n")[3::2]
        assert n_layout == sum(len(tok("\n" + x, add_special_tokens=False)["input_ids"]) for x in lines) + 1
        assert 0 < on_layout < total and right is False  # random weights do not write a real layout


def test_answer_shown_is_the_t_prompt_with_the_target_itself_as_its_last_demonstration():
    df = sample("mp20_biternary", "val", n=300, seed=1)
    frame = pd.DataFrame([prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)])
    frame = frame[frame.error.isna()].reset_index(drop=True)
    pool, names, rng = Pool(frame), ["formula", "space_group"], np.random.default_rng(0)
    checked = 0
    for _, row in frame.iterrows():
        with_t = generation_record(DEFAULT, "sgs-wyckoff", row, names, pool, "T", 3, rng, exclude_id=row.material_id)
        if with_t["fallback"] is not None:
            continue
        shown = context_gain.answer_shown(DEFAULT, "sgs-wyckoff", row, names, pool, with_t)
        assert shown["response"] == with_t["response"] == row.sgs_wyckoff
        assert shown["example_ids"] == with_t["example_ids"][:2] + [row.material_id] != with_t["example_ids"]
        before, third = shown["prompt"].split("### Third Example: ")
        assert before == with_t["prompt"].split("### Third Example: ")[0]  # T's first two demonstrations
        assert third.startswith(describe(row, names) + "\n" + row.sgs_wyckoff + "\n")
        assert not with_t["prompt"].split("### Third Example: ")[1].startswith(describe(row, names))
        alone = context_gain.answer_shown(DEFAULT, "sgs-wyckoff", row, names, pool, with_t, kept=0)
        assert alone["example_ids"] == [row.material_id] and alone["shots"] == 1
        assert "Second Example" not in alone["prompt"]
        assert alone["prompt"].split("### First Example: ")[1].startswith(describe(row, names) + "\n" + row.sgs_wyckoff)
        checked += 1
    assert checked >= 20

"""Does a model read the prompt's formula? Teacher-forced element accuracy on instructions.

For each response the model sees the true text up to every element symbol and predicts that symbol. A model
that copies the formula scores ~1; one that has learnt only the dataset's statistics gets the common anions
right and the cations wrong. This separates "the model ignores the condition" from "sampling loses it", and
tells a curriculum when its first stage (learning to read the formula) is done.
"""

from __future__ import annotations

import re
from functools import cache

from crystalicl.conditions import SENTENCES

_FORMULA = re.compile(re.escape(SENTENCES["formula"]).replace(r"\{\}", r"(\S+?)") + r"(?:\s|$)")


@cache
def _element_symbols() -> frozenset[str]:
    from pymatgen.core import Element

    return frozenset(e.symbol for e in Element)


def target_formula(prompt: str) -> str | None:
    """The target's formula: the last one a prompt states (demonstrations state theirs first)."""
    found = _FORMULA.findall(prompt)
    return found[-1] if found else None


def formula_copying_records(records: list[dict]) -> list[dict]:
    """The records :func:`formula_copying` scores: those whose target is conditioned on a formula."""
    return [r for r in records if _states_formula(r)]


def _states_formula(record: dict) -> bool:
    """Whether the target is conditioned on a formula (records without a conditions list: the prompt says)."""
    if "conditions" in record:
        return "formula" in record["conditions"]
    return target_formula(record["prompt"]) is not None


def formula_copying(model, tok, records: list[dict], limit: int | None = None) -> dict:
    """Teacher-forced element accuracy over those of ``records`` (instructions) conditioned on a formula.

    Returns the records and element tokens scored, ``accuracy`` (argmax element = true element) and
    ``in_target_formula`` (argmax element occurs in the target formula at all).
    """
    import torch
    from pymatgen.core import Composition

    symbols = _element_symbols()
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    recs = formula_copying_records(records)[:limit]
    hit = in_formula = total = 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for r in recs:
            allowed = {e.symbol for e in Composition(target_formula(r["prompt"])).elements}
            p = bos + tok(r["prompt"], add_special_tokens=False)["input_ids"]
            q = tok(r["response"], add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([p + q], device=device)).logits[0, len(p) - 1:-1]
            for t, g in zip(q, logits.argmax(-1).tolist(), strict=True):
                if tok.convert_ids_to_tokens(t) in symbols:
                    total += 1
                    hit += g == t
                    in_formula += tok.convert_ids_to_tokens(g) in allowed
    model.train(was_training)
    return {"records": len(recs), "element_tokens": total, "accuracy": round(hit / max(total, 1), 4),
            "in_target_formula": round(in_formula / max(total, 1), 4)}


def demonstration_formulas(prompt: str) -> list[str]:
    """The formulas a few-shot prompt's demonstrations state (all but the target's, which comes last)."""
    return _FORMULA.findall(prompt)[:-1]


FORMULA_ERRORS = ("a demonstration's formula", "an element from a demonstration", "an element from neither",
                  "a target element dropped", "the target's elements, wrong counts")


def formula_error(target: str, sampled: str, demonstrations: list[str] = ()) -> str | None:
    """How a sample's formula misses the target's (None: it matches, as reduced formulas), one of
    :data:`FORMULA_ERRORS` — to tell a model that reads the wrong formula in a few-shot prompt (a demonstration's)
    from one that loses track of the target's elements."""
    from pymatgen.core import Composition

    want, got = Composition(target).reduced_composition, Composition(sampled).reduced_composition
    if got.almost_equals(want):
        return None
    if any(got.almost_equals(Composition(d).reduced_composition) for d in demonstrations):
        return FORMULA_ERRORS[0]
    extra = set(got.elements) - set(want.elements)
    if extra:
        shown = {e for d in demonstrations for e in Composition(d).elements}
        return FORMULA_ERRORS[1] if extra & shown else FORMULA_ERRORS[2]
    return FORMULA_ERRORS[3] if set(got.elements) < set(want.elements) else FORMULA_ERRORS[4]

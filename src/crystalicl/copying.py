"""Does a model read the prompt's conditions? Teacher-forced accuracy on instructions.

For each response the model sees the true text up to every element symbol and predicts that symbol. A model
that copies the formula scores ~1; one that has learnt only the dataset's statistics gets the common anions
right and the cations wrong. The space group is read the same way: an SGS response starts with the symbol of
the group the prompt states by number, and the model must predict that whole line. This separates "the model
ignores the condition" from "sampling loses it", and tells a curriculum when its first stage (learning to
read the conditions) is done — on Carbon-24 the formula is always C, so only the space group tells.
"""

from __future__ import annotations

import re
from functools import cache

from crystalicl.conditions import SENTENCES
from crystalicl.model.batching import collate

_FORMULA = re.compile(re.escape(SENTENCES["formula"]).replace(r"\{\}", r"(\S+?)") + r"(?:\s|$)")
_SPACE_GROUP = re.compile(re.escape(SENTENCES["space_group"]).replace(r"\{\}", r"(\d+)"))
_SYMBOL_LINE = re.compile(r"[PABCFIR]\S*")  # a Hermann-Mauguin symbol starts with its lattice letter


@cache
def _element_symbols() -> frozenset[str]:
    from pymatgen.core import Element

    return frozenset(e.symbol for e in Element)


def require_pymatgen() -> None:
    """Fail before a run trains, not at its first copying check minutes in: the checks read element symbols and
    formulas with pymatgen, which a bare GPU machine may lack (an H200 lease lost its first run that way)."""
    try:
        _element_symbols()
    except ImportError as e:
        raise ImportError(f"condition copying reads formulas with pymatgen, which could not be imported ({e}): "
                          "install pymatgen, or train without copying checks") from e


def target_formula(prompt: str) -> str | None:
    """The target's formula: the last one a prompt states (demonstrations state theirs first)."""
    found = _FORMULA.findall(prompt)
    return found[-1] if found else None


def formula_copying_records(records: list[dict]) -> list[dict]:
    """The records whose formula :func:`condition_copying` scores: those whose target is conditioned on one."""
    return [r for r in records if _states_formula(r)]


def space_group_copying_records(records: list[dict]) -> list[dict]:
    """The records whose space group :func:`condition_copying` scores: conditioned on a space group (by the
    instruction's conditions list), with a response that writes its symbol first (the SGS formats)."""
    return [r for r in records if "space_group" in r.get("conditions", ())
            and _SYMBOL_LINE.fullmatch(r["response"].split("\n", 1)[0])]


def _states_formula(record: dict) -> bool:
    """Whether the target is conditioned on a formula (records without a conditions list: the prompt says)."""
    if "conditions" in record:
        return "formula" in record["conditions"]
    return target_formula(record["prompt"]) is not None


def condition_copying(model, tok, records: list[dict], limit: int | None = None, batch_size: int | None = None) -> dict:
    """Teacher-forced reading of the conditions in ``records`` (instructions), in right-padded batches of
    ``batch_size`` records of similar length; pads after a text cannot change what a causal model reads before it.
    Default: 16 on a GPU, where one pass per record made each check of a LoRA run on an H200 cost about 30 s (some
    150 training steps); 1 on a CPU, where batches of 16 took 1.5 times as long (``copying_speed.py``).

    Formula (records conditioned on one, at most ``limit``): ``element_tokens`` scored, ``accuracy`` (argmax
    element = true element) and ``in_target_formula`` (argmax element occurs in the target formula at all).
    Space group (records conditioned on one whose response starts with its symbol, at most ``limit``):
    ``space_group`` (share whose whole symbol line is the argmax), over ``space_group_records``.
    ``conditions``: the lower of the two rates measured — a model reads its conditions when it reads both.
    ``formula_likelihood``: the mean over records of the probability (temperature 1) the model gives to every
    element symbol of the true response — a sampled response's chance of naming the right elements at each site,
    which an argmax rate near 1 can hide (0.98 of the elements right can be 0.8 of the samples).
    """
    import torch
    from pymatgen.core import Composition

    symbols = _element_symbols()
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    formula = {id(r) for r in formula_copying_records(records)[:limit]}
    space_group = {id(r) for r in space_group_copying_records(records)[:limit]}
    wanted = formula | space_group
    scored = [r for r in records if id(r) in wanted]
    prompts = tok([r["prompt"] for r in scored], add_special_tokens=False)["input_ids"] if scored else []
    responses = tok([r["response"] for r in scored], add_special_tokens=False)["input_ids"] if scored else []
    texts = [(bos + p, q) for p, q in zip(prompts, responses, strict=True)]
    first_lines = [r["response"].split("\n", 1)[0] for r in scored]  # the space-group symbol line
    symbol_tokens = [len(x) for x in tok(first_lines, add_special_tokens=False)["input_ids"]] if scored else []
    order = sorted(range(len(scored)), key=lambda i: len(texts[i][0]) + len(texts[i][1]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    hit = in_target = total = sg_hit = 0
    likelihoods = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or (16 if device.type == "cuda" else 1)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, mask, _ = collate([(texts[i][0] + texts[i][1],) * 2 for i in batch], pad)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(batch):
                r, (p, q) = scored[i], texts[i]
                logits = out[row, len(p) - 1:len(p) + len(q) - 1]
                guess = logits.argmax(-1).tolist()
                if id(r) in space_group:
                    line = symbol_tokens[i]
                    sg_hit += guess[:line] == q[:line]
                if id(r) in formula:
                    allowed = {e.symbol for e in Composition(target_formula(r["prompt"])).elements}
                    sites = [k for k, t in enumerate(q) if tok.convert_ids_to_tokens(t) in symbols]
                    total += len(sites)
                    hit += sum(guess[k] == q[k] for k in sites)
                    in_target += sum(tok.convert_ids_to_tokens(guess[k]) in allowed for k in sites)
                    logp = logits[sites].float().log_softmax(-1)[range(len(sites)), [q[k] for k in sites]]
                    likelihoods.append(float(logp.sum().exp()))
    model.train(was_training)
    res = {"records": len(formula), "element_tokens": total, "accuracy": round(hit / max(total, 1), 4),
           "in_target_formula": round(in_target / max(total, 1), 4), "space_group_records": len(space_group)}
    if likelihoods:
        res["formula_likelihood"] = float(f"{sum(likelihoods) / len(likelihoods):.6g}")  # small for a weak model
    rates = [res["accuracy"]] if formula else []
    if space_group:
        res["space_group"] = round(sg_hit / len(space_group), 4)
        rates.append(res["space_group"])
    res["conditions"] = min(rates, default=0.0)
    return res


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


def demonstration_space_groups(prompt: str) -> list[int]:
    """The space-group numbers a few-shot prompt's demonstrations state (all but the target's, which comes last)."""
    return [int(n) for n in _SPACE_GROUP.findall(prompt)[:-1]]


SPACE_GROUP_ERRORS = ("no group (overlapping atoms)", "right symbol, another group analysed",
                      "a demonstration's group written", "another group of the target's crystal system written",
                      "another crystal system written")


def space_group_error(target: int, written: int | None, analysed: int | None,
                      demonstrations: list[int] = ()) -> str | None:
    """How a sample misses its target space group (None: its crystal analyses to the target), one of
    :data:`SPACE_GROUP_ERRORS` — to tell a model that writes the wrong symbol (a demonstration's, a related
    group's) from one that writes the right symbol with coordinates that realise a higher symmetry."""
    from crystalicl.symmetry import crystal_system

    if analysed == target:
        return None
    if analysed is None:
        return SPACE_GROUP_ERRORS[0]
    if written == target:
        return SPACE_GROUP_ERRORS[1]
    if written in demonstrations:
        return SPACE_GROUP_ERRORS[2]
    if written is not None and crystal_system(written) == crystal_system(target):
        return SPACE_GROUP_ERRORS[3]
    return SPACE_GROUP_ERRORS[4]

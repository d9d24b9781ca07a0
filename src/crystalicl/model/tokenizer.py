"""A tokenizer made for crystal text: one token per template word, space-group symbol, element symbol,
Wyckoff letter, digit, sign, decimal point, space and newline (template words carry their leading space).

Built with Hugging Face ``tokenizers`` (a word-level vocabulary behind a regex pre-tokenizer) and wrapped
as a ``PreTrainedTokenizerFast``, so it saves and loads like any HF tokenizer. Alternation order in the
regex matters: template words (whole words) first, then space-group symbols (followed by a line end),
then element symbols (two letters before one), then anything single-character.
"""

from __future__ import annotations

import re
import string
from functools import cache

from crystalicl.conditions import PROPERTY_LABELS, SENTENCES
from crystalicl.prompts import COUNT_WORDS, DEFAULT, ORDINALS

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
PUNCT = list("#:.,-/_\"[]()+=")


def _template_words() -> list[str]:
    text = " ".join([*DEFAULT.to_dict().values(), *SENTENCES.values(), *PROPERTY_LABELS.values(),
                     *ORDINALS, *COUNT_WORDS])
    return sorted({w for w in re.findall(r"[A-Za-z]+", text) if len(w) > 1} | {"MASK"})


@cache
def vocabulary() -> list[str]:
    from pymatgen.core.periodic_table import Element

    from crystalicl.symmetry import all_space_groups

    words = _template_words()
    groups = [g.symbol for g in all_space_groups()]
    elements = [e.symbol for e in Element]
    chars = list(string.digits) + list(string.ascii_letters) + PUNCT + [" ", "\n"]
    vocab, seen = [], set()
    for tok in [*SPECIAL.values(), "###", *chars, *elements, *groups, *words, *(" " + w for w in words)]:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)
    return vocab


def _pattern() -> str:
    from pymatgen.core.periodic_table import Element

    from crystalicl.symmetry import all_space_groups

    esc = lambda xs: "|".join(re.escape(x) for x in sorted(xs, key=len, reverse=True))  # noqa: E731
    words = _template_words()
    groups = [g.symbol for g in all_space_groups()]
    elements = [e.symbol for e in Element]
    return (rf"###| ?\b(?:{esc(words)})\b|(?:{esc(groups)})(?=\s|$)|{esc(elements)}|\S|\n| ")


def build_tokenizer():
    """The compact model's tokenizer as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_pattern()), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL, clean_up_tokenization_spaces=False)

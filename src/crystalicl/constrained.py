"""Constrained decoding for the compact tokenizer: only text the SGS / XYZ grammar accepts can be sampled.

A logits processor re-reads each sequence's generated text and allows, at every step, only tokens that
keep it a valid prefix of::

    SGS:  <space-group symbol> \\n <len> <len> <len> \\n <ang> <ang> <ang> \\n
          ( <element> [ ' ' <Wyckoff label of that group> ] \\n <coord> <coord> <coord> )+  separated by \\n, then EOS
    XYZ:  the same without the symbol line and labels
    len = [1-9] digit? . digit  (below 100 Å)
    ang = integer in [1, 179] ([60, 119] if triclinic)
    coord = 0 . digit digit

Wyckoff labels are restricted to those of the generated space group (multiplicity and letter must
agree), and a position without free parameters (e.g. ``1a`` at the origin) is offered once only, since
a second orbit there would sit on top of the first. Coordinates need not lie on the labelled position:
the decoder projects them onto it exactly.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

MAX_SITES = 64
SITE_TOKENS = 24  # element, label, three coordinates, separators


@cache
def _int_prefix(s: str, lo: int, hi: int) -> tuple[tuple[str, ...], bool]:
    """Digits that extend ``s`` towards an integer in [lo, hi], and whether ``s`` already is one."""
    values = [str(v) for v in range(lo, hi + 1)]
    nxt = tuple(sorted({v[len(s)] for v in values if v.startswith(s) and len(v) > len(s)}))
    return nxt, s != "" and lo <= int(s) <= hi


class Grammar:
    """Token classes of a tokenizer and the allowed-next-token sets of the crystal grammars."""

    def __init__(self, tokenizer, fmt: str):
        from pymatgen.core.periodic_table import Element

        from crystalicl.symmetry import all_space_groups

        if fmt not in ("sgs", "sgs-wyckoff", "xyz"):
            raise ValueError(f"no grammar for format {fmt!r}")
        self.fmt = fmt
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(tokenizer)
        self.eos = tokenizer.eos_token_id

        def ids(tokens) -> np.ndarray:
            missing = [t for t in tokens if t not in vocab]
            if missing:
                raise ValueError(f"tokenizer lacks tokens {missing[:5]}: constrained decoding needs the compact "
                                 "crystal tokenizer")
            return np.array([vocab[t] for t in tokens], int)

        self.groups = {g.symbol: g for g in all_space_groups()}
        self.cls = {
            "group": ids(list(self.groups)),
            "element": ids([e.symbol for e in Element]),
            "digit": ids(list("0123456789")),
            "nonzero": ids(list("123456789")),
            "zero": ids(["0"]),
            "dot": ids(["."]),
            "space": ids([" "]),
            "newline": ids(["\n"]),
            "eos": np.array([self.eos], int),
        }
        self.token_id = {t: vocab[t] for t in list("0123456789abcdefghijklmnopqrstuvwxyzA")}

    @cache  # noqa: B019  (one grammar per generator; bounded by the 230 groups)
    def labels(self, symbol: str) -> tuple[str, ...]:
        from crystalicl.wyckoff import wyckoff_positions

        return tuple(w.label for w in wyckoff_positions(self.groups[symbol].hall_number))

    @cache  # noqa: B019
    def fixed_labels(self, symbol: str) -> frozenset[str]:
        """Positions without free parameters: each can hold one orbit only (a second would overlap it)."""
        from crystalicl.wyckoff import wyckoff_positions

        return frozenset(w.label for w in wyckoff_positions(self.groups[symbol].hall_number)
                         if not np.any(w.ops[0, :, :3]))

    def _union(self, *names) -> np.ndarray:
        return np.concatenate([self.cls[n] for n in names])

    def allowed(self, text: str, room: int = 10**9) -> np.ndarray:
        """Token ids allowed after the generated ``text`` with ``room`` tokens left in the budget.

        A complete site ends the crystal when another one would not fit (a site is at most ~24 tokens),
        so a sample cut by the budget still parses.
        """
        lines = text.split("\n")
        head = 0 if self.fmt == "xyz" else 1
        n = len(lines)
        cur = lines[-1]
        if head and n == 1:  # space-group symbol line
            return self.cls["group"] if cur == "" else self.cls["newline"]
        if n == head + 1:
            return self._numbers(cur, 3, self._length)
        if n == head + 2:
            triclinic = head and lines[0] in self.groups and self.groups[lines[0]].crystal_system == "triclinic"
            lo, hi = (60, 119) if triclinic else (1, 179)
            return self._numbers(cur, 3, lambda x: self._angle(x, lo, hi))
        site_line = n - head - 3
        if site_line % 2 == 0:  # element line (or end)
            if cur == "":
                return self.cls["element"]
            if self.fmt != "sgs-wyckoff":
                return self.cls["newline"]
            used = {ln.split(" ")[1] for ln in lines[head + 2:-1:2] if " " in ln}
            return self._label(cur, lines[0], used)
        allowed = self._numbers(cur, 3, self._coordinate)
        if self.cls["newline"][0] in allowed and len(allowed) == 1:  # coordinate line complete
            if site_line // 2 + 1 >= MAX_SITES or room < SITE_TOKENS:
                return self.cls["eos"]
            return self._union("newline", "eos")
        return allowed

    def _numbers(self, cur: str, count: int, number) -> np.ndarray:
        parts = cur.split(" ")
        if len(parts) > count:
            return self.cls["eos"]  # cannot happen under the grammar; end the sequence
        done = number(parts[-1])
        nxt = done[0]
        if done[1]:  # the number is complete
            end = self.cls["newline"] if len(parts) == count else self.cls["space"]
            return end if len(nxt) == 0 else np.concatenate([nxt, end])
        return nxt

    def _length(self, s: str):
        if s == "":
            return self.cls["nonzero"], False
        m = re.fullmatch(r"[1-9]\d?(\.\d?)?", s)
        if not m:
            return self.cls["eos"], False
        if "." not in s:
            return (self.cls["dot"] if len(s) == 2 else self._union("digit", "dot")), False
        return (self.cls["digit"], False) if s.endswith(".") else (np.array([], int), True)

    def _angle(self, s: str, lo: int, hi: int):
        """Integer degrees in [lo, hi]; any triple in [60, 119] is a valid triclinic cell, other systems
        only keep the angles their regularisation does not overwrite."""
        nxt, complete = _int_prefix(s, lo, hi)
        return np.array([self.token_id[d] for d in nxt], int), complete

    def _coordinate(self, s: str):
        if s == "":
            return self.cls["zero"], False
        if s == "0":
            return self.cls["dot"], False
        if len(s) < 4:
            return self.cls["digit"], False
        return np.array([], int), True

    def _label(self, cur: str, symbol: str, used: set[str]) -> np.ndarray:
        parts = cur.split(" ")
        if len(parts) == 1:
            return self.cls["space"]
        typed = parts[1]
        taken = used & self.fixed_labels(symbol)
        labels = [lab for lab in self.labels(symbol) if lab.startswith(typed) and lab not in taken]
        nxt = sorted({lab[len(typed)] for lab in labels if len(lab) > len(typed)})
        ids = [self.token_id[c] for c in nxt]
        if typed in labels:
            ids += list(self.cls["newline"])
        return np.array(ids, int)


class GrammarLogitsProcessor:
    """A transformers logits processor applying :class:`Grammar` to each row of a batch."""

    def __init__(self, grammar: Grammar, tokenizer, prompt_length: int, max_new_tokens: int):
        self.grammar = grammar
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens

    def __call__(self, input_ids, scores):
        import torch

        gen = input_ids[:, self.prompt_length:]
        room = self.max_new_tokens - gen.shape[1]
        texts = self.tokenizer.batch_decode(gen, skip_special_tokens=False)
        mask = torch.full_like(scores, float("-inf"))
        for i, text in enumerate(texts):
            if self.tokenizer.eos_token in text or self.tokenizer.pad_token in text:
                mask[i, self.grammar.eos] = 0.0  # finished rows: keep padding with EOS
                continue
            allowed = self.grammar.allowed(text, room)
            mask[i, torch.as_tensor(allowed, dtype=torch.long)] = 0.0
        return scores + mask

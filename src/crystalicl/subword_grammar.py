"""The crystal grammar for a pretrained LLM's subword tokenizer (BPE, SentencePiece).

:class:`crystalicl.constrained.Grammar` speaks in the compact tokenizer's tokens: one per space-group symbol,
element symbol, digit, letter, space or newline. A pretrained LLM's token may hold part of a symbol (``P``,
``6``, ``_``, ``3``, ``/``, ``mm``, ``c``) or several of them (``Na``, ``00``). So the grammar is read a
character at a time here: the characters allowed next are the next characters of the compact tokens the
grammar allows (a symbol typed halfway is held back until it is complete), and a subword token is allowed
when each of its characters is in turn. Walking a trie of the vocabulary keeps that cheap: only branches
the grammar allows are visited, and tokens with characters the crystal text never uses are not in it.

:class:`SubwordGrammar` answers ``allowed(text, room, target)`` in the LLM's token ids, like ``Grammar``, so
:class:`crystalicl.constrained.GrammarLogitsProcessor` applies either. ``room`` counts the LLM's tokens.
"""

from __future__ import annotations

import numpy as np

from crystalicl.constrained import Grammar, Target


class _Node:
    __slots__ = ("children", "ids")

    def __init__(self):
        self.children: dict[str, _Node] = {}
        self.ids: list[int] = []  # tokens whose text ends here


def token_strings(tokenizer) -> list[str | None]:
    """The text each token id adds when appended to a sequence (None for special tokens).

    Decoded after an anchor token, so a SentencePiece token's leading space is kept (decoding it alone
    drops it)."""
    anchor = tokenizer("0", add_special_tokens=False)["input_ids"][:1]
    head = tokenizer.decode(anchor)
    special = set(tokenizer.all_special_ids)
    out: list[str | None] = []
    for i in range(len(tokenizer)):
        if i in special:
            out.append(None)
            continue
        s = tokenizer.decode(anchor + [i], clean_up_tokenization_spaces=False)
        out.append(s[len(head):] if s.startswith(head) else None)
    return out


class SubwordGrammar:
    """The SGS / XYZ grammar of :mod:`crystalicl.constrained` over any Hugging Face tokenizer."""

    def __init__(self, tokenizer, fmt: str, packing=None):
        from crystalicl.model.tokenizer import build_tokenizer

        compact = build_tokenizer()
        self.inner = Grammar(compact, fmt, packing)
        self.fmt = fmt
        self.head = 0 if fmt == "xyz" else 1
        self.strings = {i: t for t, i in compact.get_vocab().items()}  # compact id -> text
        self.inner_eos = compact.eos_token_id
        self.eos = tokenizer.eos_token_id
        self.vocab_size = len(tokenizer)
        alphabet = {c for i in np.concatenate(list(self.inner.cls.values())) if i != self.inner_eos
                    for c in self.strings[int(i)]} | set(self.inner.token_id)  # token_id: digits, Wyckoff letters
        self.root = _Node()
        for i, s in enumerate(token_strings(tokenizer)):
            if s and set(s) <= alphabet:
                node = self.root
                for c in s:
                    node = node.children.setdefault(c, _Node())
                node.ids.append(i)

    def target(self, conditions: dict | None) -> Target | None:
        return self.inner.target(conditions)

    def _pending(self, text: str) -> int:
        """Length of the multi-character symbol (space group or element) being typed at the end of ``text``."""
        lines = text.split("\n")
        cur, n = lines[-1], len(lines)
        if self.head and n == 1:
            return len(cur)
        if n >= self.head + 3 and (n - self.head - 3) % 2 == 0 and " " not in cur:
            return len(cur)
        return 0

    def _next(self, text: str, room: int, target: Target | None) -> tuple[frozenset[str], bool]:
        """Characters that may follow ``text``, and whether the crystal may end there."""
        k = self._pending(text)
        chars: set[str] = set()
        eos = False
        if k:  # a symbol typed halfway: continue it, or, where it is complete, go on after it
            typed = text[-k:]
            offered = [self.strings[int(i)] for i in self.inner.allowed(text[:-k], room, target)]
            chars = {s[k] for s in offered if len(s) > k and s.startswith(typed)}
            if typed not in offered:
                return frozenset(chars), False
        for i in self.inner.allowed(text, room, target):
            if int(i) == self.inner_eos:
                eos = True
            else:
                chars.add(self.strings[int(i)][0])
        return frozenset(chars), eos

    def allowed(self, text: str, room: int = 10**9, target: Target | None = None) -> np.ndarray:
        """Token ids of the LLM allowed after the generated ``text`` (see :meth:`Grammar.allowed`)."""
        memo: dict[str, tuple[frozenset[str], bool]] = {}

        def step(t: str):
            if t not in memo:
                memo[t] = self._next(t, room, target)
            return memo[t]

        ids: list[int] = []
        stack = [(self.root, text)]
        while stack:
            node, t = stack.pop()
            for c in step(t)[0]:
                child = node.children.get(c)
                if child is not None:
                    ids.extend(child.ids)
                    if child.children:  # longer tokens go on from here
                        stack.append((child, t + c))
        if step(text)[1]:
            ids.append(self.eos)
        return np.array(sorted(ids), int)

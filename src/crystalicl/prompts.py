"""Every prompt of CrystalICL, in one place, worded byte for byte as the method specifies (SPEC §2).

The templates are data (a :class:`PromptTemplate`), saved with a trained model and reloaded at
inference, so a checkpoint always generates with the prompts it was trained on.
Line breaks inside the specification's long sentences are typesetting, not part of the prompt.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass

ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth")
COUNT_WORDS = ("one", "two", "three", "four", "five")

_SGS_TASK = ("the space group symbol, a description of the lengths and angles of the lattice vectors and then the "
             "element type and coordinates for each atom within the lattice:")
_XYZ_TASK = ("a description of the lengths and angles of the lattice vectors and then the element type and "
             "coordinates for each atom within the lattice:")


@dataclass(frozen=True)
class PromptTemplate:
    zero_shot: str = "### Instruction: Below is a description of a bulk material. {conditions}Generate {task}\n"
    few_shot_head: str = "### Instruction: Below is {count} description of bulk materials.\n"
    example: str = "### {ordinal} Example: {conditions}\n{crystal}\n"
    few_shot_tail: str = "{conditions}Based on the {count} examples provided, generate {task}\n"
    property_prediction: str = (
        "### Instruction: Below is a partial description of a bulk material where the {name} has been replaced "
        'with the string "[MASK]":\n### The {name} is [MASK].\n### {crystal}\n'
        "### Generate the {name} that could replace [MASK] in the bulk material:\n"
    )
    response: str = "### Response: "
    sgs_task: str = _SGS_TASK
    xyz_task: str = _XYZ_TASK

    def task(self, fmt: str) -> str:
        return self.xyz_task if fmt == "xyz" else self.sgs_task

    def generation(self, conditions: str, fmt: str, examples: list[tuple[str, str]] = ()) -> str:
        """Prompt (up to and including ``### Response: ``) for 0-shot (no examples) or K-shot generation.

        ``conditions`` is a condition description (may be empty: unconditional generation);
        ``examples`` are (condition description, crystal text) pairs.
        """
        cond = f"{conditions} " if conditions else ""
        if not examples:
            return self.zero_shot.format(conditions=cond, task=self.task(fmt)) + self.response
        k = len(examples)
        if k > len(ORDINALS):
            raise ValueError(f"at most {len(ORDINALS)} examples are supported, got {k}")
        parts = [self.few_shot_head.format(count=COUNT_WORDS[k - 1])]
        for i, (c, crystal) in enumerate(examples):
            parts.append(self.example.format(ordinal=ORDINALS[i], conditions=c, crystal=crystal))
        parts.append(self.few_shot_tail.format(conditions=cond, count=COUNT_WORDS[k - 1], task=self.task(fmt)))
        return "".join(parts) + self.response

    def demonstrations(self, prompt: str) -> list[tuple[str, str]]:
        """The (condition description, crystal text) pairs a K-shot prompt of this template shows, in order: the
        inverse of :meth:`generation`'s ``examples``, to ask what a sample owes to its demonstrations."""
        before, after = self.example.split("{conditions}")[0].split("{ordinal}")
        head = re.escape(before) + "(?:" + "|".join(ORDINALS) + ")" + re.escape(after)
        tail = self.few_shot_tail.split("{conditions}")[1].split("{count}")[0]  # ends the last crystal
        out = []
        for chunk in re.split(head, prompt)[1:]:
            conditions, _, body = chunk.partition("\n")
            crystal = itertools.takewhile(lambda line: tail not in line, body.split("\n"))
            out.append((conditions, "\n".join(crystal).strip("\n")))
        return out

    def property(self, name: str, crystal: str) -> str:
        return self.property_prediction.format(name=name, crystal=crystal) + self.response

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PromptTemplate:
        return cls(**d)


DEFAULT = PromptTemplate()

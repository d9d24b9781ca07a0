"""Turning a trained model into crystals: conditional few-shot, unconditional and cross-domain sampling.

Sampling is batched (KV cache, left padding), top-p 0.9 / temperature 0.9 by default, and stops at the
end-of-sequence token. A sample whose text does not decode is drawn again (``attempts`` counts the draws);
with ``check_symmetry`` so is one whose crystal does not have the space group its SGS text names.
:func:`generate_to_file` appends one JSONL record per sample as soon as it exists (and a CIF file per
structure), so rerunning the same command resumes without losing or duplicating a sample id.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from crystalicl.conditions import describe
from crystalicl.errors import ParseError
from crystalicl.packing import Packing
from crystalicl.prompts import PromptTemplate


@dataclass
class Sample:
    id: str
    prompt: str
    text: str | None = None
    structure: object | None = None  # pymatgen Structure when the text decoded
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def record(self) -> dict:
        r = {"id": self.id, "prompt": self.prompt, "text": self.text, "error": self.error,
             "attempts": self.attempts, "seconds": round(self.seconds, 4), **self.meta}
        r["cif"] = self.structure.to(fmt="cif") if self.structure is not None else None
        return r


def model_packing(meta: dict) -> Packing | None:
    """The volume increments a model's instruction set was fitted with (None for models trained before)."""
    d = (meta.get("instructions") or {}).get("packing")
    return Packing.from_dict(d) if d else None


def structure_conditions(structure) -> dict:
    """Formula and space group of a user-supplied crystal (to describe it as a demonstration)."""
    from crystalicl.symmetry import space_group_number

    sg = space_group_number(structure.lattice.matrix, structure.frac_coords, [s.specie.Z for s in structure])
    return {"formula": structure.composition.reduced_formula, "space_group": sg}


class Generator:
    """A trained crystalicl model with its tokenizer, text format and prompt template."""

    def __init__(self, model, tokenizer, fmt: str, template: PromptTemplate, kind: str = "compact",
                 constrained: bool | None = None, enforce_conditions: bool = True, check_symmetry: bool = False,
                 packing: Packing | None = None, packing_spread: float | None = None, charge_balance: bool = False,
                 element_range: bool = False, filler_floor: float | None = None):
        self.model, self.tokenizer, self.fmt, self.template, self.kind = model, tokenizer, fmt, template, kind
        self.tokenizer.padding_side = "left"
        self.constrained = (kind == "compact") if constrained is None else constrained
        # with the grammar on, also hold each sample to its prompt's formula and space group
        self.enforce_conditions = enforce_conditions
        # redraw a decoded SGS sample whose crystal analyses to another group than the one it writes (at the
        # paper's scoring tolerance): the grammar cannot see that a P-1 cell with a = b, alpha = beta is C2/m
        self.check_symmetry = check_symmetry
        # with the grammar on, keep each sample's atoms to what its written cell holds (crystalicl.packing)
        self.packing = packing
        # unconditional samples (no conditions): each draws its own packing-ratio window, ``packing_spread``
        # quantiles either side of a uniform draw over the training ratios (Packing.drawn_window), so that the
        # samples spread over the ratio as the training crystals do; None keeps the whole window for every sample
        self.packing_spread = packing_spread
        # unconditional samples under the grammar: a crystal may end only on a charge-balanced composition, as
        # long as another site fits (the validity metric's SMACT test)
        self.charge_balance = charge_balance
        # unconditional samples under the grammar: no fewer and no more distinct elements than the training
        # crystals have (recorded with the packing; reduced MP-20: 2 to 3)
        self.element_range = element_range
        # unconditional samples under the packing bound: where a crystal may end and only elements the model gives
        # less than this share of its element probability still fit, end it instead of forcing one of them in
        self.filler_floor = filler_floor
        self._grammar = None
        self.source: dict | None = None  # from_pretrained's arguments, where it loaded the model
        self.vllm = None  # a VLLMSampler when loaded with backend="vllm"

    @classmethod
    def from_pretrained(cls, model_dir, constrained: bool | None = None, device: str | None = None,
                        enforce_conditions: bool = True, backend: str = "hf",
                        check_symmetry: bool = False, packing: Packing | bool = False,
                        packing_spread: float | None = None, charge_balance: bool = False,
                        element_range: bool = False, filler_floor: float | None = None) -> Generator:
        """Load a model directory; ``backend="vllm"`` samples with vLLM on a GPU (no grammar there).
        ``packing`` (grammar only): True bounds the atoms by the cell with the volume increments fitted on the
        model's training set, where its instruction set recorded them; a :class:`Packing` is used as given; off
        by default, so that samples measure the model (``crystalicl generate`` turns it on). ``packing_spread``,
        ``charge_balance``, ``element_range``, ``filler_floor``: see the attributes of the same name."""
        import torch

        from crystalicl.model.loading import load_trained, read_meta

        if backend == "vllm":
            from transformers import AutoTokenizer

            from crystalicl.model.vllm_backend import VLLMSampler

            meta = read_meta(Path(model_dir))
            tok = AutoTokenizer.from_pretrained(str(model_dir))
            gen = cls(None, tok, meta["format"], PromptTemplate.from_dict(meta["template"]), meta["kind"], False,
                      enforce_conditions, check_symmetry)
            gen.vllm = VLLMSampler(Path(model_dir), tok)
            return gen
        if backend != "hf":
            raise ValueError(f"unknown backend {backend!r} (hf or vllm)")
        model, tok, meta = load_trained(Path(model_dir))
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if packing is True:
            packing = model_packing(meta)
        gen = cls(model, tok, meta["format"], PromptTemplate.from_dict(meta["template"]), meta["kind"], constrained,
                  enforce_conditions, check_symmetry, packing or None, packing_spread, charge_balance, element_range,
                  filler_floor)
        # how to load it again: parallel sampling workers (crystalicl.parallel) each load their own copy
        gen.source = {"model_dir": str(model_dir), "constrained": constrained, "device": device,
                      "enforce_conditions": enforce_conditions, "check_symmetry": check_symmetry,
                      "packing": packing or False, "packing_spread": packing_spread, "charge_balance": charge_balance,
                      "element_range": element_range, "filler_floor": filler_floor}
        return gen

    @property
    def grammar(self):
        if self._grammar is None:
            if self.kind == "compact":
                from crystalicl.constrained import Grammar

                self._grammar = Grammar(self.tokenizer, self.fmt, self.packing)
            else:  # a pretrained LLM's subword tokens
                from crystalicl.subword_grammar import SubwordGrammar

                self._grammar = SubwordGrammar(self.tokenizer, self.fmt, self.packing)
        return self._grammar

    # --- prompts --------------------------------------------------------------------------------------
    def prompt(self, conditions: dict | None = None, examples: list[tuple[dict, str]] = ()) -> str:
        """A generation prompt from target conditions and (conditions, crystal text) demonstrations."""
        names = list(conditions or {})
        return self.template.generation(describe(conditions or {}, names), self.fmt,
                                        [(describe(c, [n for n in names if n in c]), t) for c, t in examples])

    def examples_from_structures(self, structures) -> list[tuple[dict, str]]:
        from crystalicl.text import encode

        return [(structure_conditions(s), encode(s, self.fmt)) for s in structures]

    # --- sampling -------------------------------------------------------------------------------------
    def sample_texts(self, prompts: list[str], seed: int = 0, temperature: float = 0.9, top_p: float = 0.9,
                     max_new_tokens: int = 512, conditions: list[dict | None] | None = None,
                     windows: list[tuple[float, float] | None] | None = None) -> list[str]:
        """One sampled response per prompt (batched); ``conditions`` (one per prompt) are enforced by the
        grammar when both ``constrained`` and ``enforce_conditions`` are on; ``windows`` (one per prompt, or
        None) are packing-ratio windows the grammar holds prompts without a formula to."""
        import torch
        from transformers import LogitsProcessorList

        torch.manual_seed(seed)
        tok = self.tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        enc = [bos + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if self.vllm is not None:
            return self.vllm.sample(enc, seed, temperature, top_p, max_new_tokens)
        n = max(map(len, enc))
        ids = torch.full((len(enc), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), n), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, n - len(e):] = torch.tensor(e)
            mask[i, n - len(e):] = 1
        procs = LogitsProcessorList()
        if self.constrained:
            from crystalicl.constrained import GrammarLogitsProcessor

            targets = self._targets(conditions, windows, len(prompts))
            procs.append(GrammarLogitsProcessor(self.grammar, tok, n, max_new_tokens, targets))
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device), do_sample=True,
                temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, logits_processor=procs,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return [t.strip() for t in tok.batch_decode(out[:, n:], skip_special_tokens=True)]

    def _targets(self, conditions: list[dict | None] | None, windows: list | None, n: int) -> list:
        """The grammar's Target of each prompt: its conditions where enforced; for a prompt without conditions, its
        packing window, and the charge balance, element range and filler floor where asked for."""
        from crystalicl.constrained import Target

        span = self.packing.elements if self.element_range and self.packing is not None else None
        out = []
        for c, w in zip(conditions or [None] * n, windows or [None] * n, strict=True):
            t = self.grammar.target(c) if self.enforce_conditions and c is not None else None
            if c is None and (w is not None or self.charge_balance or span is not None or self.filler_floor):
                t = replace(t or Target(), window=w, balanced=self.charge_balance, n_elements=span,
                            filler_floor=self.filler_floor or None)
            elif w is not None:
                t = replace(t or Target(), window=w)
            out.append(t)
        return out

    def packing_window(self, sample_id: str, seed: int = 0) -> tuple[float, float] | None:
        """The packing-ratio window of one unconditional sample (see :attr:`packing_spread`): drawn from its id
        and the seed, so a redraw or a resumed run holds the sample to the same window."""
        if self.packing is None or not self.packing_spread or not self.constrained:
            return None
        u = np.random.default_rng([seed, zlib.crc32(sample_id.encode())]).random()
        return self.packing.drawn_window(float(u), self.packing_spread)

    def decode(self, text: str):
        from crystalicl.text import decode

        return decode(text, self.fmt)

    def symmetry_mismatch(self, text: str, structure) -> str | None:
        """Why a decoded sample fails the symmetry check (None when it passes or names no group)."""
        from crystalicl.symmetry import symmetry_mismatch
        from crystalicl.text import written_space_group

        number = written_space_group(text, self.fmt)
        return None if number is None else symmetry_mismatch(structure, number)

    def run(self, jobs: list[tuple[str, str, dict]], batch_size: int = 32, seed: int = 0, max_attempts: int = 5,
            progress: bool = True, stream: int = 0, **sampling):
        """Yield a :class:`Sample` per job ``(id, prompt, meta)``; unparseable texts (and with ``check_symmetry``
        crystals without their written group) are redrawn, up to ``max_attempts`` draws. ``stream`` gives
        parallel workers of one run their own random numbers (0: the run's own)."""
        pending = [Sample(i, p, meta={**m, "format": self.fmt}) for i, p, m in jobs]  # records say how to decode
        bar = tqdm(total=len(pending), desc="generate", unit="cryst", disable=not progress)
        rnd = 0
        while pending:
            batch, pending = pending[:batch_size], pending[batch_size:]
            t = time.perf_counter()
            texts = self.sample_texts([s.prompt for s in batch], seed=seed * 100_003 + stream * 1_000_003 + rnd,
                                      conditions=[s.meta.get("conditions") for s in batch],
                                      windows=[self.packing_window(s.id, seed) if s.meta.get("conditions") is None
                                               else None for s in batch], **sampling)
            dt = (time.perf_counter() - t) / len(batch)
            rnd += 1
            retry = []
            for s, text in zip(batch, texts, strict=True):
                s.attempts += 1
                s.seconds += dt
                s.text = text
                try:
                    s.structure, s.error = self.decode(text), None
                except ParseError as e:
                    s.structure, s.error = None, str(e)
                redraw = s.structure is None
                s.meta.pop("symmetry_mismatch", None)  # an earlier draw's verdict
                if self.check_symmetry and s.structure is not None:  # the last draw is kept, its mismatch noted
                    s.meta["symmetry_mismatch"] = self.symmetry_mismatch(text, s.structure)
                    redraw = s.meta["symmetry_mismatch"] is not None
                if redraw and s.attempts < max_attempts:
                    retry.append(s)
                else:
                    bar.update(1)
                    yield s
            pending = retry + pending
        bar.close()

    def generate(self, conditions: dict | None = None, examples=None, pool=None, k: int = 3, n: int = 1,
                 seed: int = 0, **kw) -> list[Sample]:
        """Sample ``n`` crystals for target ``conditions`` with demonstrations.

        ``examples``: None (zero-shot), a list of pymatgen Structures (your own related crystals), or a
        strategy name ``"C" | "F" | "CF" | "R" | "CL"`` choosing ``k`` demonstrations from ``pool``
        (:class:`crystalicl.selection.Pool`), drawn afresh for every sample.
        """
        rng = np.random.default_rng(seed)
        jobs = []
        for j in range(n):
            if examples is None:
                demos = []
            elif isinstance(examples, str):
                if pool is None:
                    raise ValueError(f"strategy {examples!r} needs a pool of candidate demonstrations")
                demos = select_examples(pool, examples, conditions or {}, k, rng, self.fmt)[0]
            else:
                demos = self.examples_from_structures(examples)
            jobs.append((str(j), self.prompt(conditions, demos), {"conditions": conditions}))
        return list(self.run(jobs, seed=seed, progress=False, **kw))


def select_examples(pool, strategy: str, conditions: dict, k: int, rng, fmt: str, exclude_id=None,
                    shuffle: bool = False):
    """(demonstrations as (conditions, text), their ids, fallback) chosen from a pool (``shuffle``: in random
    order, the ablation)."""
    from crystalicl.instructions import TEXT_COLUMN

    names = list(conditions)
    sel = pool.select(strategy, conditions, names, k, rng, exclude_id=exclude_id, shuffle=shuffle)
    rows = pool.frame.iloc[sel.indices]
    demos = [({n: r[n] for n in names if n in r}, r[TEXT_COLUMN[fmt]]) for _, r in rows.iterrows()]
    return demos, [str(m) for m in rows["material_id"]], sel.fallback


def done_ids(path: Path) -> set[str]:
    """Ids already written to a samples file (a torn last line from a killed run is ignored)."""
    ids = set()
    if Path(path).exists():
        with open(path) as f:
            for line in f:
                try:
                    ids.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError):
                    continue
    return ids


def generate_to_file(gen: Generator, jobs: list[tuple[str, str, dict]], out_dir: Path, write_cifs: bool = True,
                     processes: int = 1, **kw) -> dict:
    """Run ``jobs`` and append records to ``out_dir/samples.jsonl`` (resumable); returns counts.

    ``processes`` > 1 shares the jobs among that many worker processes, each with its own copy of the model
    (:mod:`crystalicl.parallel`): the grammar runs on the CPU, one row at a time, so on a GPU, or on a CPU with
    cores to spare, workers multiply throughput. Samples then depend on the number of workers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "samples.jsonl"
    if processes > 1:
        from crystalicl.parallel import generate_in_parallel

        return generate_in_parallel(gen, jobs, out_dir, processes, write_cifs, **kw)
    _repair_tail(path)
    done = done_ids(path)
    todo = [j for j in jobs if j[0] not in done]
    t = time.perf_counter()
    n_ok, attempts = append_samples(gen, todo, path, out_dir / "cifs" if write_cifs else None, **kw)
    return {"requested": len(jobs), "already_done": len(jobs) - len(todo), "generated": len(todo),
            "parsed": n_ok, "attempts": attempts, "seconds": time.perf_counter() - t}


def append_samples(gen: Generator, jobs: list[tuple[str, str, dict]], path: Path, cif_dir: Path | None = None,
                   **kw) -> tuple[int, int]:
    """Sample ``jobs`` and append a record per crystal to ``path`` as it comes (a killed run keeps what it
    wrote), its CIF to ``cif_dir``; returns (crystals parsed, draws)."""
    if cif_dir is not None:
        cif_dir.mkdir(parents=True, exist_ok=True)
    n_ok = attempts = 0
    with open(path, "a") as f:
        for s in gen.run(jobs, **kw):
            rec = s.record()
            f.write(json.dumps(rec) + "\n")
            f.flush()
            attempts += s.attempts
            if s.structure is not None:
                n_ok += 1
                if cif_dir is not None:
                    (cif_dir / f"{s.id}.cif").write_text(rec["cif"])
    return n_ok, attempts


def _repair_tail(path: Path) -> None:
    """Drop a partial last line left by a killed run, so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def conditional_jobs(gen: Generator, targets, pool, names: list[str], shots: int, strategy: str = "C",
                     seed: int = 0, samples_per_target: int = 1, tag: str = "",
                     shuffle: bool = False) -> list[tuple[str, str, dict]]:
    """One job per (target, sample): target conditions from a prepared frame, demonstrations from ``pool``."""
    rng = np.random.default_rng(seed)
    jobs = []
    for _, row in targets.iterrows():
        cond = {n: (int(row[n]) if n == "space_group" else row[n]) for n in names if n in row}
        for j in range(samples_per_target):
            demos, ids, fallback = ([], [], None)
            if shots:
                demos, ids, fallback = select_examples(pool, strategy, cond, shots, rng, gen.fmt,
                                                       exclude_id=row["material_id"], shuffle=shuffle)
            meta = {"conditions": cond, "target_id": str(row["material_id"]), "example_ids": ids,
                    "shots": shots, "strategy": strategy if shots else None, "fallback": fallback}
            jobs.append((f"{tag}{row['material_id']}-{j}", gen.prompt(cond, demos), meta))
    return jobs


def unconditional_jobs(gen: Generator, n: int, tag: str = "u") -> list[tuple[str, str, dict]]:
    prompt = gen.prompt(None)
    return [(f"{tag}{i}", prompt, {"conditions": None}) for i in range(n)]

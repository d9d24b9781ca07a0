"""Instruction sets for CrystalICL tuning: zero-shot, K-shot (C/F/CF/R demonstrations), property prediction.

One target crystal yields, by default (:class:`Mixture`): one zero-shot generation instruction, one
K-shot instruction per entry of ``few_shot`` (strategy drawn from ``strategies``, K from ``shots``), and
with probability ``aux`` one property-prediction instruction (the paper's auxiliary task). Conditions are
a random subset of what the dataset allows (formula always); demonstrations are described with the same
conditions as the target. Everything is drawn from one seeded generator, so a seed reproduces the set.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crystalicl.conditions import PROPERTY_LABELS, available, describe, format_value, random_subset
from crystalicl.prompts import DEFAULT, PromptTemplate
from crystalicl.selection import STRATEGIES, Pool
from crystalicl.text.sgs import layout

TEXT_COLUMN = {"sgs": "sgs", "sgs-wyckoff": "sgs_wyckoff", "xyz": "xyz"}
# Training only (ours): T's demonstrations with the target itself among them, at a random place. Copying it needs
# plain induction alone; the compact models trained without it gain nothing even from the answer in their prompt
# (benchmarks/context_gain.py, "answer shown"), so this rewards copying where it is easiest to learn.
ANSWER = "A"


@dataclass(frozen=True)
class Mixture:
    zero_shot: bool = True
    few_shot: int = 1  # K-shot instructions per target
    strategies: tuple[str, ...] = STRATEGIES  # or (ours) "T": demonstrations with the target's layout; "A": T's, and
    # the target itself among them
    shots: tuple[int, ...] = (1, 2, 3)
    aux: float = 0.5  # probability of a property-prediction instruction per target (0: the noAux ablation)
    shuffle: bool = False  # random demonstration order (ablation)
    translate: bool = False  # XYZ only: randomly translate the target's atoms (the CrystaLLM baseline's augmentation)
    # Share of zero-shot instructions written with no conditions. The spec always states the formula, so the
    # unconditional prompt is never trained on: a pretrained LLM generalises to it, a compact model from scratch
    # does not (MP-20 tiny: 28 % of unconditional samples unary, median 2 atoms). 0 keeps the paper's mixture.
    unconditional: float = 0.0


def target_conditions(row, names) -> dict:
    return {n: row[n] for n in names}


def translated_xyz(cif: str, rng: np.random.Generator) -> str:
    """XYZ text of a crystal after a random rigid translation of all its atoms."""
    from crystalicl.text import decode, xyz

    s = decode(cif, "cif")
    return xyz.encode(s.lattice.matrix, s.frac_coords, [x.specie.symbol for x in s], shift=rng.random(3))


def generation_record(template: PromptTemplate, fmt: str, row, names, pool: Pool | None = None,
                      strategy: str | None = None, k: int = 0, rng=None, shuffle: bool = False,
                      exclude_id=None, translate: bool = False) -> dict:
    """One generation instruction (0-shot when k == 0) for a target row of a prepared frame."""
    col = TEXT_COLUMN[fmt]
    examples, ids, fallback = [], [], None
    if k:
        answer = strategy == ANSWER
        own = layout(row["sgs_wyckoff"]) if strategy in ("T", ANSWER) else None  # the target's layout
        shown, from_pool = [], k - 1 if answer else k
        if from_pool:
            sel = pool.select("T" if answer else strategy, target_conditions(row, names), names, from_pool, rng,
                              exclude_id=exclude_id, shuffle=shuffle, layout=own)
            fallback = sel.fallback
            shown = [pool.frame.iloc[i] for i in sel.indices]
        if answer:
            shown.insert(int(rng.integers(k)), row)
        for ex in shown:
            examples.append((describe(ex, names), ex[col]))
            ids.append(str(ex["material_id"]))
    return {
        "prompt": template.generation(describe(row, names), fmt, examples),
        "response": translated_xyz(row["cif"], rng) if translate and fmt == "xyz" else row[col],
        "task": "few-shot" if k else "zero-shot",
        "strategy": strategy if k else None,
        "shots": k,
        "target_id": str(row["material_id"]),
        "example_ids": ids,
        "conditions": names,
        "fallback": fallback,
    }


def property_record(template: PromptTemplate, fmt: str, row, prop: str) -> dict:
    return {
        "prompt": template.property(PROPERTY_LABELS[prop], row[TEXT_COLUMN[fmt]]),
        "response": format_value(row[prop]),
        "task": "property",
        "strategy": None,
        "shots": 0,
        "target_id": str(row["material_id"]),
        "example_ids": [],
        "conditions": [prop],
        "fallback": None,
    }


def build(targets: pd.DataFrame, pool: Pool, allowed_conditions, fmt: str = "sgs", mixture: Mixture = Mixture(),
          seed: int = 0, template: PromptTemplate = DEFAULT, progress: bool = True) -> Iterator[dict]:
    """Yield the instruction records for every target row (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    aux_props = [p for p in PROPERTY_LABELS if p in targets.columns]
    k_shots = [k for k in mixture.shots if k > 0]
    for _, row in tqdm(targets.iterrows(), total=len(targets), desc="instructions", disable=not progress):
        names = random_subset(available(row, allowed_conditions), rng)
        if mixture.zero_shot:
            # the extra draw only when asked for, so sets built without it stay identical
            dropped = mixture.unconditional > 0 and rng.random() < mixture.unconditional
            yield generation_record(template, fmt, row, [] if dropped else names, rng=rng,
                                    translate=mixture.translate)
        for _ in range(mixture.few_shot if k_shots else 0):
            strategy = str(rng.choice(mixture.strategies))
            k = int(rng.choice(k_shots))
            yield generation_record(template, fmt, row, names, pool, strategy, k, rng, mixture.shuffle,
                                    exclude_id=row["material_id"], translate=mixture.translate)
        props = [p for p in aux_props if pd.notna(row[p])]
        if props and rng.random() < mixture.aux:
            yield property_record(template, fmt, row, str(rng.choice(props)))


def write_jsonl(records, path: Path) -> int:
    """Write records to JSONL atomically (a half-written set never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_pool(name: str, split: str, fingerprints: bool, workers: int | None = None, progress: bool = True) -> Pool:
    """A pool from a prepared dataset split (fingerprints computed and cached on first use)."""
    from crystalicl.data.prepare import load_prepared

    frame = load_prepared(name, split, workers, progress)
    fps = None
    if fingerprints:
        from crystalicl.features import dataset_fingerprints

        ids, sfp, _, _ = dataset_fingerprints(name, split, workers, progress)
        order = pd.Series(np.arange(len(ids)), index=ids)
        fps = sfp[order.loc[frame["material_id"].astype(str)].to_numpy()]
    return Pool(frame, fps)


def build_dataset(name: str, split: str = "train", fmt: str = "sgs", mixture: Mixture = Mixture(), seed: int = 0,
                  limit: int | None = None, pool_split: str = "train", workers: int | None = None,
                  progress: bool = True, out: Path | None = None) -> dict:
    """Build (and optionally write) the instruction set of a dataset split; returns a summary."""
    from crystalicl.data.prepare import load_prepared
    from crystalicl.data.registry import dataset
    from crystalicl.packing import packing_of_texts

    info = dataset(name)
    targets = load_prepared(name, split, workers, progress)
    if limit:
        targets = targets.iloc[:limit]
    needs_fp = any(s in ("F", "CF") for s in mixture.strategies) and any(k > 0 for k in mixture.shots)
    pool = load_pool(name, pool_split, needs_fp, workers, progress)
    records = build(targets, pool, info.conditions, fmt, mixture, seed, progress=progress)
    summary = {"dataset": name, "split": split, "protocol": targets.attrs["protocol"], "format": fmt,
               "seed": seed, "targets": len(targets), "mixture": asdict(mixture)}
    # the room atoms take, fitted on the pool's crystals: it travels with the trained model (too few crystals to
    # fit, e.g. a tiny test set: the model samples without the bound)
    with contextlib.suppress(ValueError):
        summary["packing"] = packing_of_texts(pool.frame["xyz"]).to_dict()
    if out is not None:
        summary["records"] = write_jsonl(records, out)
        Path(str(out) + ".meta.json").write_text(json.dumps(summary, indent=2))
    else:
        summary["records"] = list(records)
    return summary

"""The paper's tables at CPU scale, every arm trained with the same preset and wall-clock budget.

    python benchmarks/paper_tables.py --tables conditional,unconditional --datasets perov5 \\
        --formats sgs,xyz,sgs-wyckoff --preset tiny --budget 300 --n 200 --runs 2 --n-uncond 1000

Tables (``--tables``):
- ``conditional`` (Table 1 / Fig. 4): CrystalLLM-style baseline (zero-shot instructions only, whole-text loss,
  random translations for XYZ) vs CrystalICL (zero-shot + few-shot C/F/CF/Rand mixture + property task) at 0
  and 3 shots (C demonstrations from the training pool), per text format; ``--runs`` × ``--n`` test prompts
  carrying all the dataset's conditions; mean and std over runs. With ``--curriculum F`` also
  CrystalICL+curriculum: share F of the same budget on the baseline's zero-shot whole-text instructions, then
  the mixture from those weights (a from-scratch model first learns to read the formula, which the paper's
  pretrained LLM could already do). Ours: ``--copy-stage F`` puts share F of the budget on copy instructions (the
  target as its own one demonstration) between the two stages; ``--selection CL`` shows the few-shot rows
  condition-matched demonstrations of one shared Wyckoff layout.
- ``unconditional`` (Table 2): validity, COV-R/P, wdist of ``--n-uncond`` samples per model.
- ``cross-domain`` (Fig. 5): the MP-20 CrystalICL model prompted with Perov-5 / Carbon-24 conditions and
  demonstrations from that domain's training pool.
- ``ablations`` (Tables 3-5): single-strategy and noAux instruction mixtures; inference selection C/CF/F/R
  and shuffled order; K = 1, 2, 3 — on MP-20 with demonstrations from the validation+test pool (offline:
  the training pool, as val is the reduced protocol's training split).

Decoding: the grammar keeps every sample parseable but does not enforce the prompt's conditions, so the
success rates measure the model (the paper redrew unparseable samples instead). Offline the reduced protocol
of ``../shared/data/README.md`` applies and every number is labelled with it; ``mp20`` falls back to
``mp20_biternary`` when MP-20 is not available. Everything is cached under ``--work`` and resumes.
Results: ``benchmarks/results/paper_tables.json`` in the layout of ``paper_results.json`` (std and extra
metrics in parallel keys) and ``paper_tables.md`` with the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import provenance, write  # noqa: E402

from crystalicl.instructions import Mixture  # noqa: E402
from crystalicl.report import PAPER_DATASET as TABLE_KEY  # noqa: E402
from crystalicl.report import UNCOND_COLUMNS  # noqa: E402
from crystalicl.selection import PROMPT_STRATEGIES  # noqa: E402
from crystalicl.train import BEST_BY  # noqa: E402

FORMAT_NAME = {"xyz": "XYZ", "sgs": "SGS", "sgs-wyckoff": "SGS-Wyckoff"}
MIXTURES = {  # training arms
    "CrystalLLM": Mixture(zero_shot=True, few_shot=0, aux=0.0),
    "CrystalICL": Mixture(),
    "Rand": Mixture(strategies=("R",)),
    "F": Mixture(strategies=("F",)),
    "CF": Mixture(strategies=("CF",)),
    "C": Mixture(strategies=("C",)),
    "noAux": Mixture(aux=0.0),
    "T": Mixture(strategies=("T",)),  # ours: every few-shot instruction shows the target's layout where one can
    "TA": Mixture(strategies=("T", "A")),  # ours: T, and half the few-shot instructions show the answer itself
    # ours, --copy-stage: 1-shot instructions whose one demonstration is the target itself, between a curriculum's
    # stages. Copying the answer needs induction alone; a tiny model learns it there, then uses real demonstrations.
    "copy": Mixture(zero_shot=False, strategies=("A",), shots=(1,), aux=0.0),
}
STAGE1_ARM = "CrystalLLM"  # whose zero-shot whole-text instructions a curriculum's first stage trains on
COPY_ARM = "copy"  # what a --copy-stage trains on
DEFAULT_EPOCHS = 20.0  # the cap on epochs; also what runs from before it was recorded used
PAPER_CONDITIONAL = ["formula", "space_group", "formation_energy", "band_gap"]


def mp20_name() -> str:
    from crystalicl.data import sources
    from crystalicl.errors import DatasetError

    try:
        sources.protocol("mp20")
        return "mp20"
    except DatasetError:
        return "mp20_biternary"


def resolve(name: str) -> str:
    return mp20_name() if name == "mp20" else name


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = Path(a.work)
        self.timings: dict[str, float] = {}
        self.keys: set[str] = set()
        self.trained_on: dict[str, set[str]] = {}  # dataset key -> what trained its models (GPU name, CPUs)
        self.training: dict[str, dict[str, dict]] = {}  # dataset key -> model -> how its last stage trained
        self.scoring = not getattr(a, "sample_only", False)  # --sample-only: write samples, score them later

    def wants(self, arm: str) -> bool:
        """Whether ``--arms`` (default: all) includes this arm of the conditional/unconditional tables."""
        return not self.a.arms or arm in self.a.arms

    def table_arms(self) -> list[str]:
        """The trained arms of the conditional/unconditional tables that ``--arms`` asks for."""
        arms = ("CrystalLLM", "CrystalICL") + (("CrystalICL+curriculum",) if self.a.curriculum else ())
        return [a for a in arms if self.wants(a)]

    # --- models ---------------------------------------------------------------------------------------
    def data(self, ds: str, arm: str, fmt: str) -> tuple[Path, Path]:
        """The arm's instruction sets (train, and 128 validation records), built once."""
        from crystalicl.instructions import build_dataset

        d = self.work / ds / f"{arm}-{fmt}"
        mix = MIXTURES[arm]
        if arm == "CrystalLLM" and fmt == "xyz":
            mix = replace(mix, translate=True)  # the CrystaLLM baseline's augmentation
        if self.a.uncond_share:
            mix = replace(mix, unconditional=self.a.uncond_share)
        if mix.few_shot and self.a.few_shot != 1 and arm != COPY_ARM:  # a target has one copy record
            mix = replace(mix, few_shot=self.a.few_shot)
        data, val = d / "train.jsonl", d / "val.jsonl"
        if not data.exists():
            build_dataset(ds, "train", fmt, mix, seed=0, workers=self.a.workers, out=data)
        if not val.exists():
            build_dataset(ds, "val", fmt, mix, seed=1, limit=128, workers=self.a.workers, out=val)
        return data, val

    def model(self, ds: str, arm: str, fmt: str) -> Path:
        """Train (or reuse) one arm: ``--budget`` seconds of the ``--preset`` model on the arm's instructions.

        ``<arm>+curriculum`` spends the first ``--curriculum`` share of the same budget on the zero-shot,
        whole-text instructions of the CrystalLLM arm (with ``--switch-at``: at most that share, until the model
        copies the formula that well; with ``--stage1-patience``: until its validation loss stops falling), then
        the rest on the arm's mixture from those weights; ``--copy-stage``: a copy stage between the two.
        The first stages are the same for every curriculum arm of a dataset and format, so they are trained once.
        """
        from crystalicl.model.loading import read_meta

        base, _, curriculum = arm.partition("+")
        d = self.work / ds / f"{arm}-{fmt}"
        out = d / "model"
        init = d.parent / f"curriculum-stage1-{fmt}" if curriculum else None
        copy = d.parent / f"curriculum-copy-{fmt}" if curriculum and self.copy_share else None
        if not (out / "crystalicl.json").exists():
            self._train(ds, base, fmt, out, init, copy)
        stages = [read_meta(m)["metrics"] for m in (init, copy, out) if m is not None]
        self.timings[f"train {ds} {arm} {fmt}"] = sum(m["seconds"] for m in stages)  # read back: exact on resume
        self.trained_on.setdefault(TABLE_KEY[ds], set()).update(m["hardware"] for m in stages if "hardware" in m)
        self.training.setdefault(TABLE_KEY[ds], {})[f"{arm} ({FORMAT_NAME[fmt]})"] = _training_summary(stages[-1])
        if copy is not None:
            self.training[TABLE_KEY[ds]][f"copy stage ({FORMAT_NAME[fmt]})"] = _training_summary(stages[1])
        return out

    @property
    def copy_share(self) -> float:
        return getattr(self.a, "copy_stage", 0.0) or 0.0

    def prepare(self, ds: str, arm: str, fmt: str) -> None:
        """Build the instruction sets :meth:`model` trains this arm on (a curriculum: the first stage's too)."""
        base, _, curriculum = arm.partition("+")
        if curriculum and not self.a.stage1_from:
            self.data(ds, STAGE1_ARM, fmt)
        if curriculum and self.copy_share:
            self.data(ds, COPY_ARM, fmt)
        self.data(ds, base, fmt)

    def _train(self, ds: str, base: str, fmt: str, out: Path, init: Path | None, copy: Path | None = None) -> None:
        from crystalicl.errors import ConfigError
        from crystalicl.model.loading import META, read_meta
        from crystalicl.train import TrainConfig, train

        common = dict(preset=self.a.preset, base_model=self.a.base_model, epochs=self.a.epochs,
                      batch_size=self.a.train_batch_size, eval_every=200, save_every=200, seed=self.a.train_seed,
                      resume=True, keep_best=self.a.keep_best, best_by=self.a.best_by, track_copying=True)
        # the budget in seconds, or with --token-budget in training tokens (equal compute on a machine whose speed
        # varies): the first stage gets its share of it, the second what the first left
        tokens = getattr(self.a, "token_budget", None)
        budget, spent_key = (tokens, "tokens") if tokens else (self.a.budget, "seconds")
        total = budget

        def share(x: float) -> dict:
            return {"token_budget": int(x)} if tokens else {"time_budget": x}

        if init is not None:
            if not (init / META).exists() and self.a.stage1_from:
                self._copy_stage1(ds, init)
            elif not (init / META).exists():
                data, val = self.data(ds, STAGE1_ARM, fmt)
                train(TrainConfig(data=str(data), val_data=str(val), out=str(init), full_loss=True,
                                  stop_at_copying=self.a.switch_at, **share(budget * self.a.curriculum),
                                  **common | {"patience": self.a.stage1_patience}))
            early = self.a.switch_at or self.a.stage1_patience  # the first stage may end before its share
            budget -= read_meta(init)["metrics"][spent_key] if early else budget * self.a.curriculum
            if budget <= 0:  # the first stage never stopped early: training the mixture on nothing is no arm
                stage1 = read_meta(init)["metrics"]
                raise ConfigError(
                    f"{init}: the curriculum's first stage spent the whole budget ({stage1[spent_key]:,.0f} "
                    f"{spent_key}, stopped by {stage1.get('stopped_by')}, copying {stage1.get('copying')}), so "
                    "nothing is left for the mixture: lower --curriculum or --switch-at, or raise the budget")
        if copy is not None:  # its share of the whole budget, from the first stage's weights; the mixture then
            if not (copy / META).exists():  # starts from the copy stage's
                data, val = self.data(ds, COPY_ARM, fmt)
                train(TrainConfig(data=str(data), val_data=str(val), out=str(copy), init_from=str(init),
                                  **share(min(total * self.copy_share, budget)), **common))
            budget -= read_meta(copy)["metrics"][spent_key]
            init = copy
            if budget <= 0:
                raise ConfigError(f"{copy}: the first stage and the copy stage spent the whole budget: lower "
                                  "--copy-stage, or raise the budget")
        data, val = self.data(ds, base, fmt)
        train(TrainConfig(data=str(data), val_data=str(val), out=str(out), **share(budget),
                          full_loss=base == "CrystalLLM", init_from=None if init is None else str(init), **common))

    def _copy_stage1(self, ds: str, init: Path) -> None:
        """Start from another run's first stage (``--stage1-from``), so two runs differ in their second stage only."""
        import shutil

        from crystalicl.model.loading import META

        src = Path(self.a.stage1_from) / ds / init.name
        if not (src / META).exists():
            raise FileNotFoundError(f"--stage1-from: no trained first stage at {src}")
        shutil.copytree(src, init, dirs_exist_ok=True)

    def stage1(self, ds: str, fmt: str) -> dict:
        """How long the curriculum's first stage trained, and how well it copies its conditions by then."""
        from crystalicl.model.loading import read_meta

        m = read_meta(self.work / ds / f"curriculum-stage1-{fmt}")["metrics"]
        keys = ("seconds", "steps", "tokens", "stopped_by", "copying", "formula_copying", "space_group_copying",
                "val_loss")
        return {k: m[k] for k in keys if k in m}

    def sampled(self, out: Path, samples: list[dict]) -> list[dict]:
        """Note a sampling job's seconds: the sum of its samples' shares of their batches' sampling time, read
        back from the samples, so a resumed or re-scored run reports what the first one measured."""
        self.timings[str(out.relative_to(self.work))] = round(sum(r.get("seconds", 0.0) for r in samples), 1)
        return samples

    def generator(self, model: Path):
        """The compact model samples under the grammar; a LoRA model redraws unparseable samples, as the paper
        did, or with ``--lora-grammar`` samples under the grammar too (over its subword tokens). With
        ``--packing`` the grammar bounds the atoms by the cell: the model's own volume increments, or for a
        model trained before they were recorded, increments fitted on its dataset's training split."""
        from crystalicl.generate import Generator, model_packing
        from crystalicl.model.loading import read_meta

        packing = None
        if self.a.packing:
            meta = read_meta(model)
            packing = model_packing(meta) or self.dataset_packing(meta["instructions"]["dataset"])
        return Generator.from_pretrained(model, constrained=self.a.lora_grammar or None,
                                         enforce_conditions=self.a.enforce_conditions, backend=self.a.backend,
                                         check_symmetry=self.a.check_symmetry, packing=packing or False,
                                         packing_spread=self.a.packing_spread, charge_balance=self.a.charge_balance,
                                         element_range=self.a.element_range, filler_floor=self.a.filler_floor)

    @functools.cache  # noqa: B019  (one Bench per run; a few datasets)
    def dataset_packing(self, name: str):
        """Volume increments fitted on a dataset's training split, for models trained before they were recorded."""
        from crystalicl.data.prepare import load_prepared
        from crystalicl.packing import packing_of_texts

        return packing_of_texts(load_prepared(name, "train")["xyz"])

    @staticmethod
    def attempts(gen) -> int:
        return 1 if gen.constrained and not gen.check_symmetry else 5

    # --- sampling + scoring ---------------------------------------------------------------------------
    def conditional(self, model: Path, target: str, shots: int, strategy: str | None = None,
                    pool_split: str = "train", shuffle: bool = False, tag: str = "", side: bool = False) -> dict:
        """Mean ± std over ``--runs`` runs of ``--n`` test prompts (all of the target's conditions); a ``side`` job
        (cross-domain, ablations) over ``--side-runs`` runs of ``--side-n``, a documented subset where their many
        3-shot jobs at the full size do not fit. Another prompt count samples into its own directories: a run's
        directory is resumed by prompt, so it must not mix prompt sets. ``strategy``: by default ``--selection``
        for few-shot prompts (a 0-shot job keeps C's directory name: it shows no demonstrations)."""
        if strategy is None:
            strategy = getattr(self.a, "selection", "C") if shots else "C"
        n, runs = self.a.n, self.a.runs
        if side:
            n, runs = getattr(self.a, "side_n", None) or n, getattr(self.a, "side_runs", None) or runs
        if n != self.a.n:
            tag += f"-n{n}"
        from crystalicl.data.prepare import load_prepared
        from crystalicl.data.registry import dataset
        from crystalicl.evaluate import aggregate_runs, evaluate_conditional, load_samples
        from crystalicl.generate import conditional_jobs, generate_to_file
        from crystalicl.instructions import load_pool

        gen = self.generator(model)
        test = load_prepared(target, "test")
        names = list(dataset(target).conditions)
        pool = load_pool(target, pool_split, fingerprints=strategy in ("F", "CF"), workers=self.a.workers,
                         progress=False) if shots else None
        scored = []
        for r in range(runs):
            targets = test.sample(n=min(n, len(test)), random_state=r)
            out = model.parent / f"cond-{target}-{shots}shot-{strategy}{tag}-run{r}"
            jobs = conditional_jobs(gen, targets, pool, names, shots, strategy, seed=r, shuffle=shuffle)
            generate_to_file(gen, jobs, out, batch_size=self.a.batch_size, seed=r, processes=self.a.processes,
                             max_new_tokens=self.a.max_tokens, max_attempts=self.attempts(gen), progress=False,
                             temperature=self.a.temperature)
            samples = self.sampled(out, load_samples(out / "samples.jsonl"))
            if self.scoring:
                scored.append(evaluate_conditional(samples, out / "eval", workers=self.a.workers, progress=False))
        return aggregate_runs(scored) if scored else {}

    def unconditional(self, model: Path, ds: str) -> dict:
        from crystalicl.evaluate import evaluate_unconditional, load_samples
        from crystalicl.generate import generate_to_file, unconditional_jobs

        gen = self.generator(model)
        out = model.parent / "uncond"
        generate_to_file(gen, unconditional_jobs(gen, self.a.n_uncond), out, batch_size=self.a.batch_size,
                         max_new_tokens=self.a.max_tokens, max_attempts=5, progress=False,
                         processes=self.a.processes, temperature=self.a.temperature)
        samples = self.sampled(out, load_samples(out / "samples.jsonl"))
        if not self.scoring:
            return {}
        return evaluate_unconditional(samples, (ds, "test"), out / "eval", workers=self.a.workers, progress=False)


def _training_summary(m: dict) -> dict:
    """Steps, tokens, seconds and validation loss of a stage: the lowest seen and where, beside the one it ended
    with (far apart: the budget overfits the training set). Tokens show what a budget in seconds bought: the same
    seconds on a shared machine can buy half the tokens."""
    vals = [(h["val_loss"], h["step"]) for h in m.get("history", []) if "val_loss" in h]
    out = {"steps": m["steps"], "seconds": m["seconds"], "val_loss": round(m.get("val_loss", float("nan")), 4)}
    out |= {k: m[k] for k in ("tokens", "stopped_by") if k in m}
    if vals:
        low, step = min(vals)
        out |= {"lowest_val_loss": round(low, 4), "lowest_at_step": step}
    if "restored_step" in m:
        out["restored_step"] = m["restored_step"]
    from crystalicl.train import COPYING_KEYS

    return out | {k: m[k] for k in COPYING_KEYS if m.get(k) is not None}


def _row(m: dict, keys: list[str]) -> dict:
    return {k: round(m[k], 4) for k in keys if k in m}


def conditional_arms(b: Bench, fmt: str) -> list[tuple[str, str, int]]:
    """(row name, trained arm, shots) of Table 1 for one text format, as ``--arms`` and ``--curriculum`` ask."""
    f = FORMAT_NAME[fmt]
    arms = [(f"CrystalLLM ({f})", "CrystalLLM", 0), (f"CrystalICL ({f}) 0-shot", "CrystalICL", 0),
            (f"CrystalICL ({f}) 3-shot", "CrystalICL", 3)]
    if b.a.curriculum:
        arms += [(f"CrystalICL+curriculum ({f}) {k}-shot", "CrystalICL+curriculum", k) for k in (0, 3)]
    return [(name, arm, shots) for name, arm, shots in arms if b.wants(arm)]


def run_conditional(b: Bench, res: dict) -> None:
    for ds in map(resolve, b.a.datasets):
        key = TABLE_KEY[ds]
        for fmt in b.a.formats:
            f = FORMAT_NAME[fmt]
            for name, arm, shots in conditional_arms(b, fmt):
                m = b.conditional(b.model(ds, arm, fmt), ds, shots)
                if arm.endswith("+curriculum"):
                    res["curriculum_stage1"].setdefault(key, {})[f] = b.stage1(ds, fmt)
                res["conditional_success_rate"].setdefault(key, {})[name] = _row(m, PAPER_CONDITIONAL)
                res["conditional_success_rate_std"].setdefault(key, {})[name] = {
                    k: round(m[f"{k}_std"], 4) for k in PAPER_CONDITIONAL if f"{k}_std" in m}
                res["conditional_extra"].setdefault(key, {})[name] = _row(
                    m, ["parse_rate", "valid_structure", "valid_overall", "space_group_symprec_0.1", "overlap",
                        "negative_formation_energy", "n_samples", "runs"])
                if key == "MP20":
                    res["realism_MP20_conditional"][name] = [
                        round(m["overlap"], 4), round(m.get("space_group", float("nan")), 4),
                        round(m["negative_formation_energy"], 4)]
                res["protocol"][key] = _protocol(ds)
                _save(b, res)


def run_unconditional(b: Bench, res: dict) -> None:
    for ds in map(resolve, b.a.datasets):
        key = TABLE_KEY[ds]
        for fmt in b.a.formats:
            for arm in b.table_arms():
                m = b.unconditional(b.model(ds, arm, fmt), ds)
                res["unconditional"].setdefault(key, {})[f"{arm} ({FORMAT_NAME[fmt]})"] = [
                    round(m[c], 4) if c in m else None for c in UNCOND_COLUMNS]
                res["protocol"][key] = _protocol(ds)
                _save(b, res)


def run_cross_domain(b: Bench, res: dict) -> None:
    src = mp20_name()
    for fmt in b.a.formats:
        model = b.model(src, b.a.icl_arm, fmt)
        for target in ("perov5", "carbon24"):
            for shots in (0, 3):
                m = b.conditional(model, target, shots, tag="-cross", side=True)
                res["cross_domain"].setdefault(TABLE_KEY[target], {})[
                    f"{b.a.icl_arm} ({FORMAT_NAME[fmt]}) {shots}-shot, trained on {TABLE_KEY[src]}"] = _row(
                    m, ["formula", "space_group", "formula_std", "space_group_std", "parse_rate", "valid_overall"])
                _save(b, res)


SAMPLED_ON = "sampled_on.json"  # under --work: the provenance of a --sample-only run


MIXTURE_ARMS = ("Rand", "F", "CF", "C", "noAux", "CrystalICL")  # Table 3's models
EXTRA_MIXTURE_ARMS = ("T", "TA")  # ours, trained only when --mixture-arms names them
KNOWN_MIXTURE_ARMS = MIXTURE_ARMS + EXTRA_MIXTURE_ARMS


def mixture_arms(a) -> tuple[str, ...]:
    """The mixtures ablation's models that ``--mixture-arms`` asks for (default: all of Table 3's, in its order)."""
    wanted = getattr(a, "mixture_arms", None)
    return tuple(m for m in KNOWN_MIXTURE_ARMS if m in wanted.split(",")) if wanted else MIXTURE_ARMS


def needed_models(b: Bench, tables: list[str]) -> list[tuple[str, str, str]]:
    """(dataset, arm, format) of every model the tables sample from, in training order."""
    needed = []
    if {"conditional", "unconditional"} & set(tables):
        needed += [(ds, arm, fmt) for ds in map(resolve, b.a.datasets) for fmt in b.a.formats
                   for arm in b.table_arms()]
    if "cross-domain" in tables:
        needed += [(mp20_name(), b.a.icl_arm, fmt) for fmt in b.a.formats]
    if "ablations" in tables:
        training = b.a.icl_arm.removeprefix("CrystalICL")
        needed += [(mp20_name(), arm + training, b.a.formats[0])
                   for arm in (mixture_arms(b.a) if "mixtures" in b.a.ablations else ("CrystalICL",))]
    return list(dict.fromkeys(needed))


def train_models(b: Bench, tables: list[str]) -> None:
    """Train (or find) every model the tables need and sample nothing: for a GPU lease, after which the same
    command without ``--train-only`` samples and scores on any machine, reusing the models under ``--work``."""
    for ds, arm, fmt in needed_models(b, tables):
        b.model(ds, arm, fmt)


def prepare_models(b: Bench, tables: list[str]) -> None:
    """Build the instruction sets of every model the tables need and train nothing: on a machine with the datasets,
    before a GPU lease on one without them (``--train-only`` there then reads only ``--work``)."""
    for ds, arm, fmt in needed_models(b, tables):
        b.prepare(ds, arm, fmt)


def sample_models(b: Bench, tables: list[str]) -> None:
    """Train and sample what the conditional and unconditional tables need, and score nothing: for a GPU lease
    on a machine without the scoring stack (MEGNet, matminer); the same command without ``--sample-only`` then
    scores the samples it finds under ``--work``."""
    for ds in map(resolve, b.a.datasets):
        for fmt in b.a.formats:
            if "conditional" in tables:
                for _, arm, shots in conditional_arms(b, fmt):
                    b.conditional(b.model(ds, arm, fmt), ds, shots)
            if "unconditional" in tables:
                for arm in b.table_arms():
                    b.unconditional(b.model(ds, arm, fmt), ds)
    (b.work / SAMPLED_ON).write_text(json.dumps(provenance(), indent=1) + "\n")


def run_ablations(b: Bench, res: dict) -> None:
    ds = mp20_name()
    fmt = b.a.formats[0]
    pool = "train"  # offline the reduced protocol trains on val; the full protocol uses val (+test) as the paper
    if _protocol(ds) == "full":
        pool = "val"
    if "inference" in b.a.ablations:
        _ablate_inference(b, res, ds, b.model(ds, b.a.icl_arm, fmt), pool)
    if "mixtures" in b.a.ablations:
        _ablate_mixtures(b, res, ds, fmt, pool)


def _ablate_inference(b: Bench, res: dict, ds: str, model: Path, pool: str) -> None:
    """Tables 4-5: demonstration selection (and shuffled order) at 3 shots, and K = 1, 2, 3 — one model."""
    for strategy, shuffle in (("C", False), ("CF", False), ("F", False), ("R", False), ("C", True)):
        m = b.conditional(model, ds, 3, strategy, pool, shuffle, tag="-shuffled" if shuffle else "",
                          side=True)
        _put_row(res, "ablation_inference_selection", (strategy + (" shuffled" if shuffle else ""),), m)
        _save(b, res)
    for k in (1, 2, 3):
        _put_row(res, "ablation_k", (f"K={k}",), b.conditional(model, ds, k, "C", pool, side=True))
        _save(b, res)


def _ablate_mixtures(b: Bench, res: dict, ds: str, fmt: str, pool: str) -> None:
    """Table 3: one model per instruction mixture, trained the way the CrystalICL arm is."""
    training = b.a.icl_arm.removeprefix("CrystalICL")  # "" or "+curriculum"
    for arm in mixture_arms(b.a):
        model = b.model(ds, arm + training, fmt)
        for shots in (0, 3):
            _put_row(res, "ablation_instruction_types", (f"{shots}-shot", arm),
                     b.conditional(model, ds, shots, pool_split=pool, side=True))
            _save(b, res)


def _put_row(res: dict, table: str, path: tuple[str, ...], m: dict) -> None:
    """One ablation row in the paper's layout (formula, space group, formation energy, band gap: the means over
    runs) and its standard deviations under the same path of ``<table>_std``, as the conditional table keeps them."""
    for key, suffix in ((table, ""), (f"{table}_std", "_std")):
        node = res.setdefault(key, {})
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = [round(m.get(k + suffix, float("nan")), 4) for k in PAPER_CONDITIONAL]


def _protocol(ds: str) -> str:
    from crystalicl.data import sources

    return f"{sources.protocol(ds)} ({ds})"


PER_DATASET = ("conditional_success_rate", "conditional_success_rate_std", "conditional_extra", "unconditional",
               "curriculum_stage1", "training")
ABLATIONS = ("ablation_instruction_types", "ablation_inference_selection", "ablation_k")
MP20_ONLY = ("realism_MP20_conditional", "cross_domain", *ABLATIONS, *(f"{t}_std" for t in ABLATIONS)
             )  # measured with MP-20 models (cross-domain: prompted for other datasets)


def _setup_of(res: dict) -> dict[str, dict]:
    """Each dataset's setup: a file from before setups were kept per dataset had one for all, and runs from
    before ``epochs`` was recorded used the default."""
    if "setup_by_dataset" in res:
        setups = res["setup_by_dataset"]
    else:
        shared = {k: v for k, v in res.get("setup", {}).items() if k != "tables"}
        if "curriculum_share" in res:
            shared["curriculum"] = res["curriculum_share"]
        setups = {key: shared | {"provenance": res.get("provenance", {})} for key in res.get("protocol", {})}
    return {key: {"epochs": DEFAULT_EPOCHS} | s for key, s in setups.items()}


def _same(a: dict, b: dict) -> bool:
    """Same setup, wherever it ran (a run resumed on another machine from the same ``--work`` keeps its cells)."""
    measured = ("provenance", "training_hardware", "sampling_hardware")
    return {k: v for k, v in a.items() if k not in measured} == {k: v for k, v in b.items() if k not in measured}


def _merge_previous(b: Bench, res: dict) -> None:
    """Keep what an earlier run measured for datasets this run does not touch, and for the datasets it does
    when the setup (preset, budget, prompts, curriculum) is the same — so a run on MP-20 at one budget does not
    drop the Perov-5 cells measured at another; each dataset's cells keep their own setup and provenance."""
    from _common import RESULTS

    path = RESULTS / f"{b.a.name}.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    now = res["setup_by_dataset"]
    keep = {key: s for key, s in _setup_of(old).items() if key not in b.keys or _same(s, now[key])}
    for key, s in keep.items():
        now.setdefault(key, s)
        if key in old.get("protocol", {}):
            res["protocol"].setdefault(key, old["protocol"][key])
    for table in PER_DATASET:
        for key, cells in old.get(table, {}).items():
            if key in keep:
                res[table].setdefault(key, {}).update(cells)
    if "MP20" in keep:
        for table in MP20_ONLY:
            res[table].update(old.get(table, {}))
    timings = old.get("timings_seconds", {})
    b.timings.update({k: v for k, v in timings.items() if TABLE_KEY.get(_timing_dataset(k)) in keep})


def _copying(stage: dict) -> str:
    """A stage's copying check (a first stage's last, a sampled model's at its kept weights): formula / space
    group (runs from before space-group copying was measured checked the formula only)."""
    if "formula_copying" not in stage:
        return f"{stage['copying']:.3f} / –" if "copying" in stage else "–"
    sg = stage.get("space_group_copying")
    return f"{stage['formula_copying']:.3f} / " + ("–" if sg is None else f"{sg:.3f}")


def _tokens(stage: dict) -> str:
    """A stage's training tokens in millions ("–" for runs from before they were recorded)."""
    return f"{stage['tokens'] / 1e6:.1f} M" if "tokens" in stage else "–"


def _timing_dataset(key: str) -> str:
    """The dataset a timing belongs to: ``train <dataset> <arm> <format>`` or ``<dataset>/<arm dir>/<job>``."""
    return key.split()[1] if key.startswith("train ") else key.split("/")[0]


def _save(b: Bench, res: dict) -> None:
    """Write the partial results after every arm, so an interrupted run keeps what it measured."""
    res["timings_seconds"] = {k: round(v, 1) for k, v in b.timings.items()}
    stamp = provenance()  # git is asked once per save, not once per dataset
    sampled_on = b.work / SAMPLED_ON
    sampled = _machine(json.loads(sampled_on.read_text())["hardware"]) if sampled_on.exists() else None
    for key in b.keys:
        res["setup_by_dataset"][key]["provenance"] = stamp
        if b.trained_on.get(key):
            res["setup_by_dataset"][key]["training_hardware"] = ", ".join(sorted(b.trained_on[key]))
        if sampled:
            res["setup_by_dataset"][key]["sampling_hardware"] = sampled
        if b.training.get(key):
            res["training"].setdefault(key, {}).update(b.training[key])
    write(b.a.name, res, markdown(res))


def markdown(res: dict) -> str:
    from crystalicl.report import _paper_results

    paper = _paper_results() or {}
    md = ["# The paper's tables at CPU scale", "",
          "Every arm of a dataset: the same model (compact preset, or LoRA on a pretrained LLM) and the same "
          "training budget, in seconds or in tokens (below; the training table says what each arm's bought and "
          "what stopped it). Decoding: compact models under the grammar (syntax "
          "only, conditions not enforced), LoRA models unconstrained with up to 5 draws per prompt unless the "
          "setup says they sampled under the grammar too (`--lora-grammar`). Paper: "
          "Llama-2-7B + LoRA on the full splits, so the "
          "reduced-protocol numbers are reduced-data figures, not the benchmark. CrystalICL+curriculum: the first "
          "share of its budget on the CrystalLLM arm's zero-shot whole-text instructions, the rest on the "
          "CrystalICL mixture. Brackets: the paper's row for the same method, text and shots (SGS-Wyckoff and "
          "+curriculum rows: the paper's SGS CrystalICL row).", "",
          "| dataset | protocol | model | budget per arm | prompts | unconditional samples | curriculum share | "
          "condition-free share | epochs at most | hardware | commit | date |", "|---" * 12 + "|"]
    for key, s in res["setup_by_dataset"].items():
        pv = s.get("provenance", {})
        kept = ", highest copying kept" if s.get("best_by") == "copying" else ", lowest val loss kept"
        model = (s.get("base_model") or s["preset"]) + (kept if s.get("keep_best") else "")
        model += f", training seed {s['train_seed']}" if s.get("train_seed") else ""
        model += f", {s['few_shot']} few-shot instructions per target" if s.get("few_shot", 1) != 1 else ""
        model += f", {s['selection']} demonstrations in few-shot prompts" if s.get("selection", "C") != "C" else ""
        uncond = s["n_uncond"] if key in res["unconditional"] else "–"
        md.append(f"| {key} | {res['protocol'].get(key, '–')} | `{model}` | {_budget(s)} | "
                  f"{s['runs']} × {s['n']} | {uncond} | {_curriculum(s)} | "
                  f"{s.get('uncond_share') or '–'} | {s.get('epochs', DEFAULT_EPOCHS):g} | {_hardware(pv, s)} | "
                  f"{(pv.get('commit') or '')[:7]}{' (dirty)' if pv.get('dirty') else ''} | {pv.get('date', '')} |")
    md.append("")
    if any(res["setup"].get(k) for k in ("enforce_conditions", "check_symmetry", "packing", "charge_balance")):
        md += [f"Decoding in this run: {res['setup']['decoding']}.", ""]
    for key, arms in res["conditional_success_rate"].items():
        md += [f"## Conditional success rates, {key} (ours: mean ± std over runs; paper in brackets)", "",
               "| arm | formula | space group | formation energy | band gap | parse | valid |",
               "|---|---|---|---|---|---|---|"]
        ref = paper.get("conditional_success_rate", {}).get(key, {})
        for name, m in arms.items():
            sd = res["conditional_success_rate_std"][key][name]
            ex = res["conditional_extra"][key][name]
            cells = []
            for k in PAPER_CONDITIONAL:
                if k not in m:
                    cells.append("–")
                    continue
                p = ref.get(_paper_name(name), {}).get(k)
                cells.append(f"{m[k]:.3f} ± {sd.get(k, 0):.3f}" + (f" [{p:.3f}]" if p is not None else ""))
            md.append(f"| {name} | " + " | ".join(cells) + f" | {ex.get('parse_rate', 0):.3f} | "
                      f"{ex.get('valid_overall', 0):.3f} |")
        md.append("")
    md += _table("Curriculum, first stage (zero-shot whole-text; teacher-forced copying on validation: the formula's "
                 "elements, and the space group's symbol where measured)",
                 ["dataset", "text", "seconds", "steps", "tokens", "stopped by", "copying (formula / space group)",
                  "val loss"],
                 [[key, f, f"{m['seconds']:.0f}", m["steps"], _tokens(m), m.get("stopped_by", ""), _copying(m),
                   f"{m.get('val_loss', float('nan')):.3f}"]
                  for key, fmts in res.get("curriculum_stage1", {}).items() for f, m in fmts.items()])
    md += _table("Training (the sampled model's last stage; validation loss at its end and the lowest seen; "
                 "teacher-forced copying of the weights sampled, where tracked)",
                 ["dataset", "model", "steps", "tokens", "seconds", "stopped by", "val loss", "lowest val loss (step)",
                  "weights", "copying (formula / space group)"],
                 [[key, name, m["steps"], _tokens(m), f"{m['seconds']:.0f}", m.get("stopped_by", "–"),
                   f"{m['val_loss']:.3f}",
                   f"{m['lowest_val_loss']:.3f} ({m['lowest_at_step']})" if "lowest_val_loss" in m else "–",
                   f"step {m['restored_step']}" if "restored_step" in m else "last", _copying(m)]
                  for key, arms in res.get("training", {}).items() for name, m in arms.items()])
    for key, arms in res["unconditional"].items():
        md += [f"## Unconditional, {key} (paper in brackets)", "",
               "| model | " + " | ".join(UNCOND_COLUMNS) + " |", "|---" * (len(UNCOND_COLUMNS) + 1) + "|"]
        ref = paper.get("unconditional", {}).get(key, {})
        for name, row in arms.items():
            p = ref.get(_paper_name(name))
            md.append(f"| {name} | " + " | ".join(
                ("–" if v is None else f"{v:.3f}") + (f" [{p[i]:.3f}]" if p and p[i] is not None else "")
                for i, v in enumerate(row)) + " |")
        md.append("")
    mp20 = res["setup_by_dataset"].get("MP20", {})
    side = _side(mp20)
    # a std over one run says nothing: none shown
    std = {t: res.get(f"{t}_std", {}) if _side_runs(mp20) > 1 else {} for t in ABLATIONS}
    for title, key in (("Cross-domain", "cross_domain"),):
        for tgt, arms in res[key].items():
            md += [f"## {title}: {tgt}{side}", "", "| arm | formula | space group | parse |", "|---|---|---|---|"]
            md += [f"| {n} | {m.get('formula', 0):.3f} | {m.get('space_group', 0):.3f} | {m.get('parse_rate', 0):.3f} |"
                   for n, m in arms.items()]
            md.append("")
    realism = paper.get("realism_MP20_conditional", {})
    md += _rows_md("Realism of MP-20 conditional samples: atomic overlap (lower better), symmetry adherence, "
                   "negative formation energy", res["realism_MP20_conditional"], realism,
                   realism.get("columns", ["overlap", "space group", "negative formation energy"]))
    arm = res["setup_by_dataset"].get("MP20", {}).get("icl_arm", "CrystalICL")
    mixtures = paper.get("ablation_instruction_types_3shot_MP20_train_MP30_demos", {})
    for shots, rows in res["ablation_instruction_types"].items():
        md += _rows_md(f"Ablation: instruction mixtures, {shots} (every model trained as {arm} is){side}", rows,
                       mixtures.get(shots, {}), std=std["ablation_instruction_types"].get(shots))
    md += _rows_md(f"Ablation: demonstration selection, 3-shot ({arm}){side}", res["ablation_inference_selection"],
                   paper.get("ablation_inference_selection_3shot", {}), std=std["ablation_inference_selection"])
    md += _rows_md(f"Ablation: number of C demonstrations ({arm}){side}", res["ablation_k"],
                   {f"K={k[0]}": v for k, v in paper.get("ablation_shots", {}).items() if k.endswith("Shot-C")},
                   std=std["ablation_k"])
    return "\n".join(md)


def _budget(setup: dict) -> str:
    """An arm's training budget: tokens where ``--token-budget`` set it, else seconds."""
    tokens = setup.get("token_budget")
    return f"{tokens / 1e6:g} M tokens" if tokens else f"{setup['budget_s']:.0f} s"


def _side_runs(setup: dict) -> int:
    """How many runs of prompts the cross-domain and ablation tables average over."""
    return setup.get("side_runs") or setup.get("runs", 1)


def _side(setup: dict) -> str:
    """The cross-domain and ablation tables' prompts, where ``--side-n``/``--side-runs`` made them a subset."""
    if not (setup.get("side_n") or setup.get("side_runs")):
        return ""
    return f", {_side_runs(setup)} × {setup.get('side_n') or setup['n']} prompts (a subset)"


def _table(title: str, columns: list[str], rows: list[list]) -> list[str]:
    """A markdown section of one row per model (nothing when there are none)."""
    if not rows:
        return []
    return [f"## {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|",
            *("| " + " | ".join(map(str, r)) + " |" for r in rows), ""]


def _curriculum(setup: dict) -> str:
    share = setup.get("curriculum") or 0
    until = ([f"copying ≥ {setup['switch_at']:g}"] if setup.get("switch_at") else []) + \
        ([f"{setup['stage1_patience']} checks without a lower val loss"] if setup.get("stage1_patience") else [])
    text = f"{share:g}" if share else "–"
    if share and until:
        text = f"≤ {share:g}, until {' or '.join(until)}"
    text += f"; first stage from `{setup['stage1_from']}`" if setup.get("stage1_from") else ""
    return text + (f"; then {setup['copy_stage']:g} on a copy stage" if setup.get("copy_stage") else "")


def _machine(hw: dict) -> str:
    """A provenance's hardware in words: its GPU, else its CPU count."""
    return hw.get("gpu") or f"{hw.get('cpus', '?')} CPUs"


def _hardware(provenance: dict, setup: dict | None = None) -> str:
    """The machine of the run, and what trained and sampled its models when that was another (``--train-only``
    or ``--sample-only`` on a GPU)."""
    here = _machine(provenance.get("hardware", {}))
    trained = (setup or {}).get("training_hardware")
    sampled = (setup or {}).get("sampling_hardware")
    if sampled and sampled != here:
        return f"trained on {trained or here}, sampled on {sampled}, scored on {here}"
    return here if not trained or trained == here else f"trained on {trained}, sampled on {here}"


def _paper_name(name: str) -> str:
    """The paper's row to set beside ours: SGS-Wyckoff is our SGS variant, +curriculum our way of training
    the paper's CrystalICL from scratch."""
    return name.replace("+curriculum", "").replace("(SGS-Wyckoff)", "(SGS)")


def _rows_md(title: str, rows: dict[str, list], paper: dict[str, list],
             columns: list[str] = PAPER_CONDITIONAL, std: dict[str, list] | None = None) -> list[str]:
    """One MP-20 table of rows (default columns: formula, space group, formation energy, band gap), ± the std
    over runs where given, the paper's row in brackets."""
    if not rows:
        return []
    md = [f"## {title} (" + ("ours: mean ± std over runs; " if std else "") + "paper in brackets)", "",
          "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        p, sd = paper.get(_paper_name(name)), (std or {}).get(name)
        md.append(f"| {name} | " + " | ".join(
            f"{v:.3f}" + (f" ± {sd[i]:.3f}" if sd else "") + (f" [{p[i]:.3f}]" if p else "")
            for i, v in enumerate(row)) + " |")
    return md + [""]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="conditional,unconditional")
    ap.add_argument("--datasets", default="perov5,carbon24,mp20")
    ap.add_argument("--formats", default="sgs,xyz,sgs-wyckoff")
    ap.add_argument("--preset", default="small", help="compact model preset (ignored with --base-model)")
    ap.add_argument("--base-model", dest="base_model", default=None,
                    help="LoRA on this pretrained LLM (hub id, directory or .gguf) instead of a compact model: "
                         "the paper's setting, for a GPU")
    ap.add_argument("--train-batch-size", dest="train_batch_size", type=int, default=16)
    ap.add_argument("--lora-grammar", dest="lora_grammar", action="store_true",
                    help="sample LoRA models under the crystal grammar too (syntax only, one draw per prompt)")
    ap.add_argument("--enforce-conditions", dest="enforce_conditions", action="store_true",
                    help="the grammar also holds every sample to its prompt's formula and space group (what "
                         "`crystalicl generate` does by default); the rates then measure the tool, not the model")
    ap.add_argument("--check-symmetry", dest="check_symmetry", action="store_true",
                    help="redraw (up to 5 draws) an SGS sample whose crystal analyses, at symprec 0.01, to another "
                         "group than the one it writes")
    ap.add_argument("--packing", action="store_true",
                    help="the grammar keeps each sample's atoms to what its written cell holds (volume increments "
                         "of the training crystals, crystalicl.packing), as `crystalicl generate` does")
    ap.add_argument("--packing-spread", dest="packing_spread", type=float, default=None,
                    help="with --packing: each unconditional sample is held to its own window of the training "
                         "crystals' packing ratios, this many quantiles either side of a uniform draw (e.g. 0.1)")
    ap.add_argument("--charge-balance", dest="charge_balance", action="store_true",
                    help="unconditional samples under the grammar end only on a charge-balanced composition (SMACT, "
                         "as the validity metric checks) while another site fits")
    ap.add_argument("--element-range", dest="element_range", action="store_true",
                    help="with --packing: unconditional samples keep to the training crystals' range of distinct "
                         "elements (recorded with the packing fit)")
    ap.add_argument("--filler-floor", dest="filler_floor", type=float, default=None,
                    help="with --packing: an unconditional crystal that may end ends rather than add an element the "
                         "model gives less than this share of its element probability (e.g. 0.2)")
    ap.add_argument("--temperature", type=float, default=0.9,
                    help="sampling temperature (top-p 0.9 either way)")
    ap.add_argument("--processes", type=int, default=1,
                    help="sampling worker processes, each with its own copy of the model (crystalicl.parallel): "
                         "the grammar is CPU work, so spare cores sample faster; samples depend on it, and the "
                         "sampling seconds recorded add up the workers' seconds")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="sampling backend (vllm: GPU, no grammar)")
    ap.add_argument("--budget", type=float, default=1800, help="training seconds per arm")
    ap.add_argument("--token-budget", dest="token_budget", type=int, default=None,
                    help="training tokens per arm instead of --budget seconds: equal compute where the machine's "
                         "speed varies between arms (a curriculum's first stage gets --curriculum of them)")
    ap.add_argument("--epochs", type=float, default=DEFAULT_EPOCHS)
    ap.add_argument("--train-seed", dest="train_seed", type=int, default=0,
                    help="training seed of every arm (initialisation and batch order; the instructions stay the "
                         "same): rerun with another to see how much a number owes to one training run")
    ap.add_argument("--keep-best", dest="keep_best", action="store_true",
                    help="every stage ends with its lowest-validation-loss weights (a GPU budget overfits small sets)")
    ap.add_argument("--best-by", dest="best_by", choices=BEST_BY, default="val_loss",
                    help="what --keep-best keeps in every stage: the lowest validation loss, or the highest "
                         "teacher-forced condition copying (ties: the lower loss). Few-shot Carbon-24: the loss "
                         "turns up while space-group copying still climbs")
    ap.add_argument("--curriculum", type=float, default=0.0,
                    help="also run CrystalICL+curriculum arms: this share of the budget on zero-shot whole-text "
                         "instructions first (0: off)")
    ap.add_argument("--switch-at", dest="switch_at", type=float, default=None,
                    help="end the curriculum's first stage early once teacher-forced condition copying on validation "
                         "(formula elements and, in SGS text, the space-group symbol; the lower) reaches this (e.g. "
                         "0.95); --curriculum is then its longest share")
    ap.add_argument("--stage1-patience", dest="stage1_patience", type=int, default=None,
                    help="also end the curriculum's first stage once its validation loss has not improved for this "
                         "many checks (200 steps each): on a small set (reduced MP-20) copying plateaus below "
                         "--switch-at while the model overfits, and the rest of the share is better spent on the "
                         "mixture")
    ap.add_argument("--copy-stage", dest="copy_stage", type=float, default=0.0,
                    help="ours: this share of the budget on a copy stage after the curriculum's first stage (1-shot "
                         "instructions whose demonstration is the target itself: a tiny model learns to copy, and "
                         "then uses demonstrations), the mixture after it (0: off; needs --curriculum). Use its own "
                         "--work: its curriculum arms differ from one without it")
    ap.add_argument("--stage1-from", dest="stage1_from", default=None,
                    help="take the curriculum's first stage from this earlier --work directory instead of training "
                         "it (a second-stage ablation: both runs then share their first stage)")
    ap.add_argument("--icl-arm", dest="icl_arm", default="CrystalICL", choices=["CrystalICL", "CrystalICL+curriculum"],
                    help="the model behind cross-domain and the ablations (+curriculum: needs --curriculum)")
    ap.add_argument("--ablations", default="inference,mixtures",
                    help="which ablations: inference (selection, K; one model), mixtures (six models)")
    ap.add_argument("--mixture-arms", dest="mixture_arms", default=None,
                    help=f"only these models of the mixtures ablation (comma list of {', '.join(MIXTURE_ARMS)}; "
                         "default all; T, ours, only when named: demonstrations with the target's own Wyckoff "
                         "layout): one mixture trained without the others")
    ap.add_argument("--arms", default="", help="only these arms of the conditional and unconditional tables "
                    "(e.g. CrystalLLM,CrystalICL+curriculum; default all)")
    ap.add_argument("--few-shot", dest="few_shot", type=int, default=1,
                    help="K-shot instructions per target in the arms that have them (default 1: as many few-shot "
                         "as zero-shot instructions); the zero-shot-only CrystalLLM arm is unchanged")
    ap.add_argument("--uncond-share", dest="uncond_share", type=float, default=0.0,
                    help="share of every arm's zero-shot instructions written without conditions (Mixture."
                         "unconditional; 0: the paper's mixture). Use its own --work and --name.")
    ap.add_argument("--selection", default="C", choices=PROMPT_STRATEGIES,
                    help="how the few-shot prompts of the conditional and cross-domain tables and of the mixtures "
                         "ablation choose their demonstrations (the inference ablation tries the paper's four); CL "
                         "(ours): C's matches of the one Wyckoff layout most of them share")
    ap.add_argument("--name", default="paper_tables", help="results file (benchmarks/results/NAME.json)")
    ap.add_argument("--n", type=int, default=1000, help="prompts per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--side-n", dest="side_n", type=int, default=None,
                    help="prompts per run of the cross-domain and ablation tables (default --n): a documented subset")
    ap.add_argument("--side-runs", dest="side_runs", type=int, default=None,
                    help="runs of the cross-domain and ablation tables (default --runs): a documented subset")
    ap.add_argument("--n-uncond", dest="n_uncond", type=int, default=10000)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    ap.add_argument("--max-tokens", dest="max_tokens", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="runs/paper")
    ap.add_argument("--train-only", dest="train_only", action="store_true",
                    help="train the models the tables need, then stop (e.g. on a GPU); run again without it to "
                         "sample and score from the same --work")
    ap.add_argument("--prepare-only", dest="prepare_only", action="store_true",
                    help="build the instruction sets of the models the tables need, then stop: carry --work to a "
                         "GPU machine without the datasets and run there with --train-only (which then needs "
                         "pymatgen's core and spglib, for its copying checks, but no data)")
    ap.add_argument("--sample-only", dest="sample_only", action="store_true",
                    help="train and sample the conditional and unconditional tables' models, score nothing (e.g. "
                         "on a GPU without the scoring stack); run again without it to score from the same --work")
    a = ap.parse_args()
    a.datasets, a.formats, tables = a.datasets.split(","), a.formats.split(","), a.tables.split(",")
    a.ablations, arms = a.ablations.split(","), a.arms
    a.arms = arms.split(",") if arms else []
    if a.few_shot < 1:
        ap.error("--few-shot is the number of K-shot instructions per target: 1 or more")
    if a.lora_grammar and a.backend == "vllm":
        ap.error("--lora-grammar samples with transformers (the grammar is a logits processor): use --backend hf")
    if a.best_by != "val_loss" and not a.keep_best:
        ap.error("--best-by says what --keep-best keeps: it needs --keep-best")
    if a.copy_stage and not (0 < a.copy_stage < 1 and a.curriculum):
        ap.error("--copy-stage is a share of the budget (between 0 and 1) spent between a curriculum's stages: it "
                 "needs --curriculum")
    if a.stage1_from and not a.curriculum:
        ap.error("--stage1-from reuses a curriculum's first stage: it needs --curriculum")
    if a.stage1_patience is not None and (a.stage1_patience < 1 or not a.curriculum):
        ap.error("--stage1-patience ends a curriculum's first stage after that many checks (1 or more) without a "
                 "new lowest validation loss: it needs --curriculum")
    unknown = set((a.mixture_arms or "").split(",")) - set(KNOWN_MIXTURE_ARMS) - {""}
    if unknown:
        ap.error(f"--mixture-arms: no mixture {', '.join(sorted(unknown))}; "
                 f"choose from {', '.join(KNOWN_MIXTURE_ARMS)}")
    if a.base_model and (a.curriculum or a.icl_arm != "CrystalICL"):
        ap.error("--curriculum teaches a from-scratch compact model to read the formula first; a pretrained LLM "
                 "(--base-model) already can, and LoRA runs cannot continue from a stage-1 model")
    setup = {"preset": a.preset, "budget_s": a.budget, "n": a.n, "runs": a.runs, "n_uncond": a.n_uncond,
             "curriculum": a.curriculum, "epochs": a.epochs,
             "decoding": "unconstrained, up to 5 draws" if a.base_model and not a.lora_grammar else
             "grammar-constrained syntax, conditions not enforced"}
    if a.enforce_conditions and a.base_model and not a.lora_grammar:
        ap.error("--enforce-conditions works through the grammar: a LoRA model needs --lora-grammar")
    if a.enforce_conditions:
        setup["decoding"] = "grammar-constrained, conditions enforced"
    if a.packing:
        setup["decoding"] += "; atoms bounded by the cell volume (packing)"
    # decoding options for unconditional samples: (option, why it needs --packing or None, its decoding phrase)
    unconditional_options = (
        ("packing_spread", "--packing-spread narrows the --packing bound",
         f"; each unconditional sample held to its own packing window (±{a.packing_spread} quantiles of the training "
         "ratios)"),
        ("charge_balance", None, "; unconditional samples end only charge-balanced while another site fits"),
        ("element_range", "--element-range reads the training crystals' element counts from the packing fit",
         "; unconditional samples keep to the training crystals' number of distinct elements"),
        ("filler_floor", "--filler-floor relaxes what the --packing bound forces",
         f"; unconditional samples end rather than take an element the model gives less than {a.filler_floor} of "
         "its element probability, where they may end"),
    )
    for key, needs, phrase in unconditional_options:
        if getattr(a, key):
            if needs and not a.packing:
                ap.error(f"{needs}: it needs --packing")
            setup["decoding"] += phrase
    if a.temperature != ap.get_default("temperature"):
        setup["decoding"] += f"; temperature {a.temperature}"
    if a.check_symmetry:
        setup["decoding"] += "; redrawn (up to 5 draws) when the crystal lacks its written group at symprec 0.01"
    # an option enters the setup only where it differs from its default: setups measured before it existed stay equal
    for key in ("enforce_conditions", "check_symmetry", "packing", "packing_spread", "charge_balance", "element_range",
                "processes", "temperature", "filler_floor", "side_n", "side_runs", "token_budget",
                "uncond_share",
                "few_shot", "switch_at",
                "stage1_patience", "stage1_from", "keep_best", "best_by", "train_seed", "train_batch_size", "backend",
                "icl_arm", "mixture_arms", "selection", "copy_stage"):
        if getattr(a, key) != ap.get_default(key):
            setup[key] = getattr(a, key)
    if a.base_model:
        setup |= {"base_model": a.base_model, "preset": None}
    if arms:
        setup["arms"] = arms
    res = {"setup": setup | {"tables": tables}, **{t: {} for t in ("setup_by_dataset", "protocol", *PER_DATASET,
                                                                  *MP20_ONLY)}}
    res["unconditional_columns"] = UNCOND_COLUMNS
    b = Bench(a)
    # this run's datasets (MP-20 also for cross-domain and ablations): their setup is this run's
    b.keys = {TABLE_KEY[resolve(d)] for d in a.datasets} | (
        {"MP20"} if {"cross-domain", "ablations"} & set(tables) else set())
    for key in b.keys:
        res["setup_by_dataset"][key] = dict(setup)
    if a.sample_only and not set(tables) <= {"conditional", "unconditional"}:
        ap.error("--sample-only samples the conditional and unconditional tables only")
    if a.prepare_only:
        prepare_models(b, tables)
        return
    if a.train_only or a.sample_only:
        (sample_models if a.sample_only else train_models)(b, tables)
        print(json.dumps({k: round(v, 1) for k, v in b.timings.items()}, indent=1))
        return
    _merge_previous(b, res)
    steps = {"conditional": run_conditional, "unconditional": run_unconditional,
             "cross-domain": run_cross_domain, "ablations": run_ablations}
    for t in tables:
        steps[t](b, res)
    _save(b, res)
    print(markdown(res))


if __name__ == "__main__":
    main()

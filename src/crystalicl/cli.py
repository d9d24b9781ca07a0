"""``crystalicl`` command line: one sub-command per pipeline stage (data → text → ... → report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crystalicl.errors import CrystalICLError
from crystalicl.train import BEST_BY


def _data_prepare(a) -> None:
    from crystalicl.data import prepare, sources

    paths = prepare.prepare(a.dataset, workers=a.workers)
    print(f"protocol: {sources.protocol(a.dataset)}")
    for split, p in paths.items():
        fails = prepare.failures(a.dataset, split)
        print(f"{split}: {p}  ({len(fails)} rows could not be used; reasons in {p.with_suffix('.failures.csv')})"
              if len(fails) else f"{split}: {p}")
        for row in fails.head(5).itertuples():
            print(f"  {row.material_id}: {row.error}")


def _data_info(a) -> None:
    from crystalicl.data.registry import DATASETS
    from crystalicl.data.sources import find_split

    for d in DATASETS.values():
        have = [s for s in ("train", "val", "test") if find_split(d.name, s)]
        print(f"{d.name:15s} {d.description}\n{'':15s} conditions: {', '.join(d.conditions)}; "
              f"on disk: {', '.join(have) or 'none'}")


def _encode(a) -> None:
    from pymatgen.core import Structure

    from crystalicl import encode

    for path in a.cif:
        print(encode(Structure.from_file(path), a.format))
        print()


def _decode(a) -> None:
    from crystalicl import decode

    text = sys.stdin.read() if a.text == "-" else Path(a.text).read_text()
    s = decode(text, a.format)
    if a.out:
        s.to(filename=a.out)
        print(f"wrote {a.out}")
    else:
        print(s.to(fmt="cif"))


def _instructions_build(a) -> None:
    from crystalicl.instructions import Mixture, build_dataset

    shots = tuple(int(x) for x in a.shots.split(","))
    strategies = tuple(a.strategies.split(","))
    mixture = Mixture(zero_shot=0 in shots, few_shot=a.few_shot if any(shots) else 0, strategies=strategies,
                      shots=tuple(k for k in shots if k) or (0,), aux=a.aux_fraction if a.aux else 0.0,
                      shuffle=a.shuffle, translate=a.translate, unconditional=a.unconditional)
    out = Path(a.out or f"runs/instructions/{a.dataset}-{a.split}-{a.format}.jsonl")
    summary = build_dataset(a.dataset, a.split, a.format, mixture, a.seed, a.limit, a.pool, a.workers, out=out)
    print(json.dumps({k: v for k, v in summary.items() if k != "mixture"}))
    print(f"wrote {summary['records']} instructions to {out}")


def _train(a) -> None:
    from crystalicl.train import TrainConfig, train

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in fields})
    metrics = train(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    print(f"model written to {cfg.out}")


def _evaluate(a) -> None:
    from crystalicl.evaluate import aggregate_runs, evaluate_conditional, evaluate_unconditional, load_samples

    out = Path(a.out)
    runs = []
    for i, samples in enumerate(a.samples):
        records = load_samples(samples)
        work = out.with_suffix(f".work{i}")
        if a.mode == "unconditional":
            name, _, split = a.reference.partition(":")
            nov = tuple(a.novelty_against.split(":")) if a.novelty_against else None
            runs.append(evaluate_unconditional(records, (name, split or "test"), work, seed=a.seed,
                                               workers=a.workers, novelty_against=nov, uniqueness=a.uniqueness))
        else:
            runs.append(evaluate_conditional(records, work, workers=a.workers))
    metrics = runs[0] if len(runs) == 1 else aggregate_runs(runs) | {"per_run": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


def _report(a) -> None:
    from crystalicl.report import write_report

    print(f"report: {write_report(a.run_dir, a.reference)}")


def _generate(a) -> None:
    from crystalicl.generate import Generator, conditional_jobs, generate_to_file, unconditional_jobs

    gen = Generator.from_pretrained(a.model, constrained=a.constrained, enforce_conditions=a.enforce_conditions,
                                    backend=a.backend, check_symmetry=a.check_symmetry, packing=a.packing,
                                    packing_spread=a.packing_spread, charge_balance=a.charge_balance,
                                    element_range=a.element_range, filler_floor=a.filler_floor)
    kw = {"batch_size": a.batch_size, "seed": a.seed, "temperature": a.temperature, "top_p": a.top_p,
          "max_new_tokens": a.max_new_tokens}
    if a.mode == "unconditional":
        jobs = unconditional_jobs(gen, a.n)
    elif a.mode in ("conditional", "cross-domain"):
        from crystalicl.data.prepare import load_prepared
        from crystalicl.data.registry import dataset
        from crystalicl.instructions import load_pool

        name = a.target if a.mode == "cross-domain" else a.dataset
        targets = load_prepared(name, a.split).iloc[: a.n]
        names = a.condition.split(",") if a.condition else list(dataset(name).conditions)
        pool = load_pool(name, a.pool, fingerprints=a.strategy in ("F", "CF")) if a.shots else None
        jobs = conditional_jobs(gen, targets, pool, names, a.shots, a.strategy, a.seed)
    else:
        from pymatgen.core import Structure

        cond = {k: v for k, v in (("formula", a.formula), ("space_group", a.space_group),
                                  ("band_gap", a.band_gap), ("formation_energy", a.formation_energy)) if v is not None}
        demos = gen.examples_from_structures([Structure.from_file(p) for p in a.examples or []])
        jobs = [(str(i), gen.prompt(cond, demos), {"conditions": cond}) for i in range(a.n)]
    summary = generate_to_file(gen, jobs, Path(a.out), processes=a.processes, **kw)
    print(json.dumps(summary, indent=2))
    print(f"samples: {Path(a.out) / 'samples.jsonl'}, CIF files in {Path(a.out) / 'cifs'}")


def _demo(a) -> None:
    from crystalicl.demo import run

    run(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crystalicl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="benchmark datasets").add_subparsers(dest="data_command", required=True)
    q = data.add_parser("prepare", help="parse, symmetrise and write every text format (cached, resumable)")
    q.add_argument("dataset")
    q.add_argument("--workers", type=int, default=None)
    q.set_defaults(func=_data_prepare)
    q = data.add_parser("info", help="list the datasets, their conditions and what is on disk")
    q.set_defaults(func=_data_info)

    from crystalicl.text import FORMATS

    q = sub.add_parser("encode", help="write CIF files as crystal text")
    q.add_argument("cif", nargs="+")
    q.add_argument("--format", choices=FORMATS, default="sgs")
    q.set_defaults(func=_encode)
    q = sub.add_parser("decode", help="read crystal text (file or - for stdin) into a structure")
    q.add_argument("text")
    q.add_argument("--format", choices=FORMATS, default="sgs")
    q.add_argument("--out", help="output file (CIF, POSCAR, ... by extension); default: CIF on stdout")
    q.set_defaults(func=_decode)

    ins = sub.add_parser("instructions", help="instruction sets").add_subparsers(dest="ins_command", required=True)
    q = ins.add_parser("build", help="write a JSONL instruction set (zero-/few-shot generation, property task)")
    q.add_argument("dataset")
    q.add_argument("--split", default="train")
    q.add_argument("--format", choices=("sgs", "sgs-wyckoff", "xyz"), default="sgs")
    q.add_argument("--shots", default="0,1,2,3", help="0 adds zero-shot instructions; others are the K drawn "
                   "for few-shot ones (default 0,1,2,3)")
    q.add_argument("--strategies", default="C,F,CF,R", help="selection strategies mixed in few-shot instructions;"
                   " one strategy alone gives the paper's ablations (R = Rand); T (ours): demonstrations with"
                   " the target's own Wyckoff layout; A (ours): T's, with the target itself among them")
    q.add_argument("--few-shot", type=int, default=1, help="few-shot instructions per target (default 1)")
    q.add_argument("--aux", action=argparse.BooleanOptionalAction, default=True,
                   help="property-prediction auxiliary task (--no-aux: the noAux ablation)")
    q.add_argument("--aux-fraction", type=float, default=0.5, help="share of targets with a property task")
    q.add_argument("--shuffle", action="store_true", help="random demonstration order (ablation)")
    q.add_argument("--translate", action="store_true",
                   help="xyz only: random translation of each target (the CrystaLLM baseline's augmentation)")
    q.add_argument("--unconditional", type=float, default=0.0,
                   help="share of zero-shot instructions with no conditions, so a model trained from scratch "
                        "learns the unconditional prompt (default 0: the paper's mixture)")
    q.add_argument("--pool", default="train", help="split the demonstrations come from")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--limit", type=int, default=None, help="first N targets only")
    q.add_argument("--workers", type=int, default=None)
    q.add_argument("--out", default=None)
    q.set_defaults(func=_instructions_build)

    q = sub.add_parser("train", help="fine-tune a pretrained LLM with LoRA, or train the compact crystal LM")
    q.add_argument("--data", required=True, help="instruction set (JSONL from `instructions build`)")
    q.add_argument("--out", required=True, help="model directory to write")
    q.add_argument("--val-data", dest="val_data", default=None)
    q.add_argument("--base-model", dest="base_model", default=None,
                   help="hub id, local directory or .gguf file (LoRA); omit for the compact model")
    q.add_argument("--preset", default="tiny", help="compact model size: tiny, small, base")
    q.add_argument("--init-from", dest="init_from", default=None,
                   help="compact model directory to continue from (e.g. a zero-shot stage, then the ICL mixture)")
    q.add_argument("--format", dest="fmt", default=None, help="text format (default: from the instruction set)")
    q.add_argument("--epochs", type=float, default=1.0)
    q.add_argument("--max-steps", dest="max_steps", type=int, default=None)
    q.add_argument("--time-budget", dest="time_budget", type=float, default=None, help="seconds, then stop")
    q.add_argument("--token-budget", dest="token_budget", type=int, default=None,
                   help="training tokens, then stop: equal compute where the machine's speed varies")
    q.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    q.add_argument("--grad-accum", dest="grad_accum", type=int, default=1)
    q.add_argument("--lr", type=float, default=None)
    q.add_argument("--max-length", dest="max_length", type=int, default=2048)
    q.add_argument("--lora-r", dest="lora_r", type=int, default=8)
    q.add_argument("--lora-alpha", dest="lora_alpha", type=int, default=32)
    q.add_argument("--lora-dropout", dest="lora_dropout", type=float, default=0.05)
    q.add_argument("--lora-targets", dest="lora_targets", default="all-linear")
    q.add_argument("--merge", action="store_true", help="save merged weights instead of a LoRA adapter")
    q.add_argument("--full-loss", dest="full_loss", action="store_true",
                   help="score prompt tokens too (the CrystaLLM-style baseline)")
    q.add_argument("--eval-every", dest="eval_every", type=int, default=200)
    q.add_argument("--stop-at-copying", dest="stop_at_copying", type=float, default=None,
                   help="stop once teacher-forced condition copying (formula elements and, in SGS text, the space "
                        "group's symbol) on --val-data reaches this (end of a curriculum's zero-shot stage; checked "
                        "every --eval-every steps)")
    q.add_argument("--keep-best", dest="keep_best", action="store_true",
                   help="end with the weights of the lowest --val-data loss seen (a small set overfits on a GPU)")
    q.add_argument("--best-by", dest="best_by", choices=BEST_BY, default="val_loss",
                   help="what --keep-best keeps: the lowest validation loss, or the highest teacher-forced condition "
                        "copying (ties: the lower loss), which can still climb after the loss turns up")
    q.add_argument("--patience", type=int, default=None,
                   help="stop after this many validation checks without a new lowest loss")
    q.add_argument("--save-every", dest="save_every", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    q.set_defaults(func=_train)

    q = sub.add_parser("generate", help="sample crystals from a trained model (resumable JSONL + CIF files)")
    q.add_argument("mode", nargs="?", default="design", choices=("design", "conditional", "unconditional",
                                                                  "cross-domain"),
                   help="design (default): your conditions and example CIFs; conditional: targets from a "
                   "dataset split; unconditional; cross-domain: targets and demonstrations from --target")
    q.add_argument("--model", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--n", type=int, default=8, help="samples (design, unconditional) or targets (conditional)")
    q.add_argument("--formula")
    q.add_argument("--space-group", dest="space_group", type=int)
    q.add_argument("--band-gap", dest="band_gap", type=float)
    q.add_argument("--formation-energy", dest="formation_energy", type=float)
    q.add_argument("--examples", nargs="*", help="CIF files of related crystals (demonstrations)")
    q.add_argument("--dataset", default="perov5")
    q.add_argument("--target", default="perov5", help="target domain for cross-domain generation")
    q.add_argument("--split", default="test")
    q.add_argument("--condition", default=None, help="comma-separated conditions (default: all the dataset has)")
    q.add_argument("--shots", type=int, default=3)
    q.add_argument("--strategy", default="C", choices=("C", "F", "CF", "R", "CL"),
                   help="demonstration selection (crystalicl.selection); CL (ours): C's matches sharing one layout")
    q.add_argument("--pool", default="train")
    q.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    q.add_argument("--temperature", type=float, default=0.9)
    q.add_argument("--top-p", dest="top_p", type=float, default=0.9)
    q.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=512)
    q.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=None,
                   help="grammar-constrained decoding (default: on for the compact model; a LoRA model's "
                        "subword tokens are constrained too with --constrained)")
    q.add_argument("--enforce-conditions", action=argparse.BooleanOptionalAction, default=True,
                   help="with the grammar on, hold samples to the requested formula and space group")
    q.add_argument("--check-symmetry", dest="check_symmetry", action=argparse.BooleanOptionalAction, default=True,
                   help="redraw (up to 5 draws) an SGS sample whose crystal analyses to another space group than "
                        "the one it writes, at symprec 0.01 (e.g. a P-1 cell that is really C2/m)")
    q.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True,
                   help="with the grammar on, keep each crystal's atoms to what its written cell holds (volume "
                        "increments fitted on the model's training crystals; models trained before they were "
                        "recorded sample without)")
    q.add_argument("--packing-spread", dest="packing_spread", type=float, default=None,
                   help="unconditional samples: hold each to its own window of the training crystals' packing "
                        "ratios, this many quantiles either side of a uniform draw (e.g. 0.1), so that samples "
                        "spread over the ratio as real crystals do; default: the whole window for every sample")
    q.add_argument("--charge-balance", dest="charge_balance", action=argparse.BooleanOptionalAction, default=False,
                   help="unconditional samples: end a crystal only on a charge-balanced composition (SMACT) while "
                        "another site fits the cell")
    q.add_argument("--element-range", dest="element_range", action=argparse.BooleanOptionalAction, default=False,
                   help="unconditional samples (with --packing): no fewer and no more distinct elements than the "
                        "model's training crystals have")
    q.add_argument("--filler-floor", dest="filler_floor", type=float, default=None,
                   help="unconditional samples (with --packing): where a crystal may end, end it rather than add an "
                        "element the model gives less than this share of its element probability (e.g. 0.2); the "
                        "bound otherwise fills a too-empty cell with what still fits: H, B, C, N, O")
    q.add_argument("--processes", type=int, default=1,
                   help="worker processes, each with its own copy of the model: the grammar is CPU work, so spare "
                        "cores sample faster (samples depend on the number)")
    q.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="vllm: sample with vLLM on a GPU (installed separately; no grammar constraint there)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_generate)

    q = sub.add_parser("evaluate", help="metrics of generated crystals (JSONL samples or a directory of CIFs)")
    q.add_argument("mode", choices=("conditional", "unconditional"))
    q.add_argument("--samples", required=True, nargs="+",
                   help="samples.jsonl or a directory of CIFs; several runs give mean and std (<metric>_std)")
    q.add_argument("--uniqueness", action="store_true", help="share of unique valid samples (StructureMatcher)")
    q.add_argument("--novelty-against", dest="novelty_against", default=None,
                   help="dataset:split to measure novelty against (e.g. perov5:train)")
    q.add_argument("--reference", default="perov5:test", help="dataset:split for unconditional metrics")
    q.add_argument("--out", default="metrics.json")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=None)
    q.set_defaults(func=_evaluate)

    q = sub.add_parser("report", help="markdown + HTML report with plots of a run directory")
    q.add_argument("run_dir")
    q.add_argument("--reference", default=None, help="dataset:split to compare distributions with")
    q.set_defaults(func=_report)

    q = sub.add_parser("demo", help="the end-to-end demonstration run by `make demo`")
    q.add_argument("--dataset", default="perov5")
    q.add_argument("--out", default="runs/demo")
    q.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CrystalICLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the model read its demonstrations? Few-shot samples' Wyckoff layouts against the demonstrations'.

    python benchmarks/demonstration_use.py runs/paper-mp20-sw25/mp20_biternary/CrystalICL+curriculum-sgs-wyckoff \
        [--instructions runs/paper-mp20-sw25/mp20_biternary/CrystalICL-sgs-wyckoff/train.jsonl] --name NAME

With C selection and all of MP-20's conditions, most 3-shot prompts show a *template*: a demonstration with the
target's space group and anonymised formula (BaRhF6 for BaCrF6 in R-3m), whose site layout (the Wyckoff labels in
order, ``3b 3a 18h``) gives the target's composition once its elements are renamed. A model that reads its
demonstrations copies that layout; one that does not writes the layouts it writes without them. For every
few-shot job (``cond-*-Kshot-*``, SGS-Wyckoff text) of the given model directories this counts the prompts that
show a template, the samples whose layout is a demonstration's and a template's, and, as the control, the same
count for the 0-shot sample of the same target (the job of the same name at 0 shots): common prototypes match by
chance. Formula success is split by whether the sample copied a template's layout (per-sample analysis
``evaluate_conditional`` cached beside the samples). With ``--instructions``, the same question of a training
set: how many of its few-shot instructions reward copying a demonstration's layout (*copyable*).
Results: ``benchmarks/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import analysed, conditional_jobs, write  # noqa: E402

from crystalicl.copying import formula_error  # noqa: E402
from crystalicl.evaluate import load_samples  # noqa: E402
from crystalicl.prompts import DEFAULT  # noqa: E402
from crystalicl.selection import anonymized_formula  # noqa: E402
from crystalicl.text.sgs import layout  # noqa: E402

COLUMNS = ("prompts", "template shown", "one layout shown", "layout of a demonstration", "layout of a template",
           "0-shot control: layout of a demonstration", "formula right, template layout",
           "formula right, other layout")


def use_of(job: Path, control: Path | None) -> dict:
    """The counts of :data:`COLUMNS` for one few-shot job (and its 0-shot control, where it exists)."""
    zero = {r["target_id"]: r for r in load_samples(control)} if control else {}  # its texts only
    c = dict.fromkeys(COLUMNS, 0)
    right = {"template": [0, 0], "other": [0, 0]}  # formula right, samples
    for r, p in analysed(job):
        shown = [layout(text) for _, text in DEFAULT.demonstrations(r["prompt"])]
        shown = [s for s in shown if s]
        want = (r["conditions"].get("space_group"), anonymized_formula(r["conditions"]["formula"]))
        templates = {s[1] for s in shown if (s[0], s[2]) == want}
        layouts = {s[1] for s in shown}
        got = layout(r.get("text"))
        c["prompts"] += 1
        c["template shown"] += bool(templates)
        c["one layout shown"] += len(shown) > 1 and len(layouts) == 1  # every demonstration of one layout
        c["layout of a demonstration"] += bool(got) and got[1] in layouts
        copied = bool(got) and got[1] in templates
        c["layout of a template"] += copied
        ok = p.get("formula") is not None and formula_error(r["conditions"]["formula"], p["formula"]) is None
        bucket = right["template" if copied else "other"]
        bucket[0] += ok
        bucket[1] += 1
        z = zero.get(r["target_id"])
        if z is not None:
            zl = layout(z.get("text"))
            c["0-shot control: layout of a demonstration"] += bool(zl) and zl[1] in layouts
    c["formula right, template layout"] = f"{right['template'][0]} of {right['template'][1]}"
    c["formula right, other layout"] = f"{right['other'][0]} of {right['other'][1]}"
    if not zero:
        c["0-shot control: layout of a demonstration"] = None
    return c


def taught(instructions: Path) -> dict:
    """How often an instruction set's few-shot instructions show a demonstration with the target response's exact
    layout (what copying would be rewarded for in training), by selection strategy."""
    from crystalicl.instructions import read_jsonl

    out: dict[str, list[int]] = {}
    for r in read_jsonl(instructions):
        if r["task"] != "few-shot":
            continue
        want = layout(r["response"])
        hit = want is not None and any((s := layout(text)) and s[1] == want[1]
                                       for _, text in DEFAULT.demonstrations(r["prompt"]))
        for key in (r["strategy"], "all"):
            out.setdefault(key, [0, 0])
            out[key][0] += hit
            out[key][1] += 1
    return {k: {"copyable": h, "instructions": n} for k, (h, n) in sorted(out.items())}


def control_job(job: Path) -> Path:
    """The 0-shot samples of a few-shot job's prompts: paper_tables names 0-shot jobs for C whatever the selection
    (they show no demonstrations)."""
    return job.parent.parent / re.sub(r"-[1-9]shot-[A-Z]+-", "-0shot-C-", job.parent.name) / job.name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories of a paper_tables.py --work")
    ap.add_argument("--instructions", nargs="*", default=[],
                    help="also count, in these training sets (train.jsonl), the few-shot instructions whose "
                         "demonstrations show the target's layout")
    ap.add_argument("--name", default="demonstration_use")
    a = ap.parse_args()
    res = {}
    for name, job in conditional_jobs(a.models).items():
        if not re.search(r"-[1-9]shot-", job.parent.name):
            continue
        control = control_job(job)
        res[name] = use_of(job, control if control.exists() else None)
    md = ["# Do few-shot samples copy their demonstrations' Wyckoff layouts?", "",
          "A template: a demonstration with the target's space group and anonymised formula. Layouts are the Wyckoff "
          "labels in order; the control is the 0-shot sample of the same target against the same demonstrations.", "",
          "| job | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for job, r in res.items():
        md.append(f"| {job} | " + " | ".join("–" if r[k] is None else str(r[k]) for k in COLUMNS) + " |")
    sets = {path: taught(Path(path)) for path in a.instructions}
    if sets:
        md += ["", "Training sets: few-shot instructions with a demonstration of the target's layout", "",
               "| set | strategy | copyable | instructions |", "|---|---|---|---|"]
        md += [f"| {path} | {k} | {v['copyable']} | {v['instructions']} |"
               for path, by in sets.items() for k, v in by.items()]
    write(a.name, {"jobs": res, "instructions": sets}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

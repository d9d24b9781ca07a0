"""What few-shot samples owe their demonstrations: Wyckoff layouts of real MP-20 crystals, copied or not."""

import json
import sys
from pathlib import Path

from conftest import sample

from crystalicl.conditions import describe
from crystalicl.data.prepare import prepare_one
from crystalicl.prompts import DEFAULT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import demonstration_use  # noqa: E402

NAMES = ["formula", "space_group"]


def _rows(n=12):
    df = sample("mp20_biternary", "test", n=n)
    return [r for r in (prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)) if not r["error"]]


def test_a_copied_template_counts_as_copied_and_the_control_as_chance(tmp_path):
    """Target = a crystal, its demonstrations = itself (a template) and two others: a sample that is the
    template's text copies its layout; the 0-shot control wrote another crystal's layout."""
    rows = _rows()
    target, others = rows[0], rows[1:]
    other = next(r for r in others if r["sgs_wyckoff"].splitlines()[3:] != target["sgs_wyckoff"].splitlines()[3:])
    demos = [(describe(r, NAMES), r["sgs_wyckoff"]) for r in (target, other, others[-1])]
    conditions = {"formula": target["formula"], "space_group": int(target["space_group"])}
    jobs = {}
    for shots, text in ((3, target["sgs_wyckoff"]), (0, other["sgs_wyckoff"])):
        d = tmp_path / f"cond-mp20_biternary-{shots}shot-C-run0"
        d.mkdir()
        prompt = DEFAULT.generation(describe(target, NAMES), "sgs-wyckoff", demos if shots else [])
        record = {"id": "t-0", "target_id": "t", "prompt": prompt, "text": text, "error": None,
                  "conditions": conditions, "format": "sgs-wyckoff", "shots": shots}
        (d / "samples.jsonl").write_text(json.dumps(record) + "\n")
        jobs[shots] = d / "samples.jsonl"
    c = demonstration_use.use_of(jobs[3], jobs[0])
    assert c["prompts"] == 1 and c["template shown"] == 1 and c["one layout shown"] == 0  # two layouts
    assert c["layout of a template"] == 1 and c["layout of a demonstration"] == 1
    assert c["formula right, template layout"] == "1 of 1" and c["formula right, other layout"] == "0 of 0"
    assert c["0-shot control: layout of a demonstration"] == 1  # the other crystal is a demonstration too
    assert demonstration_use.use_of(jobs[3], None)["0-shot control: layout of a demonstration"] is None


def test_a_training_set_counts_the_few_shot_instructions_that_reward_copying(tmp_path):
    from crystalicl.instructions import write_jsonl

    rows = _rows()
    target, other = rows[0], next(r for r in rows[1:] if demonstration_use.layout(r["sgs_wyckoff"])[1]
                                  != demonstration_use.layout(rows[0]["sgs_wyckoff"])[1])
    cond = describe(target, NAMES)

    def record(demos, strategy):
        prompt = DEFAULT.generation(cond, "sgs-wyckoff", [(describe(d, NAMES), d["sgs_wyckoff"]) for d in demos])
        return {"prompt": prompt, "response": target["sgs_wyckoff"], "task": "few-shot", "strategy": strategy}

    records = [record([other, target], "C"), record([other], "C"), record([other], "R"),
               {"prompt": DEFAULT.generation(cond, "sgs-wyckoff"), "response": target["sgs_wyckoff"],
                "task": "zero-shot", "strategy": None}]
    write_jsonl(records, tmp_path / "train.jsonl")
    assert demonstration_use.taught(tmp_path / "train.jsonl") == {
        "C": {"copyable": 1, "instructions": 2}, "R": {"copyable": 0, "instructions": 1},
        "all": {"copyable": 1, "instructions": 3}}


def test_the_control_of_any_selection_is_the_0_shot_job_paper_tables_names_for_c():
    arm = Path("runs/w/mp20_biternary/TA+curriculum-sgs-wyckoff")
    for job in ("cond-mp20_biternary-3shot-C-run0", "cond-mp20_biternary-3shot-CL-run0"):
        assert demonstration_use.control_job(arm / job / "samples.jsonl") == \
            arm / "cond-mp20_biternary-0shot-C-run0" / "samples.jsonl"

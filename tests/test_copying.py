"""Reading the formula of a few-shot prompt, and sorting a sample's formula miss."""

import pytest
from conftest import sample

from crystalicl.conditions import describe
from crystalicl.copying import (
    FORMULA_ERRORS,
    SPACE_GROUP_ERRORS,
    demonstration_formulas,
    demonstration_space_groups,
    formula_error,
    space_group_error,
    target_formula,
)
from crystalicl.data.prepare import prepare_one
from crystalicl.prompts import DEFAULT


def test_a_three_shot_prompt_states_the_demonstrations_formulas_then_the_targets():
    df = sample("perov5", "val", n=4)
    rows = [prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)]
    names = ["formula", "space_group"]
    prompt = DEFAULT.generation(describe(rows[0], names), "sgs", [(describe(r, names), r["sgs"]) for r in rows[1:]])
    assert demonstration_formulas(prompt) == [r["formula"] for r in rows[1:]]
    assert target_formula(prompt) == rows[0]["formula"]
    assert demonstration_formulas(DEFAULT.generation(describe(rows[0], names), "sgs")) == []
    assert demonstration_space_groups(prompt) == [int(r["space_group"]) for r in rows[1:]]
    assert demonstration_space_groups(DEFAULT.generation(describe(rows[0], names), "sgs")) == []


# Misses seen in 3-shot Perov-5 samples (paper_tables_p5_switch_2400): target, sampled, demonstrations
@pytest.mark.parametrize("target, sampled, demos, kind", [
    ("CaYO3", "Y2O6Ca2", ["LaSbO3"], None),  # same reduced formula: a hit
    ("KHfNOF", "KHfNOF", ["KHfNOF"], None),
    ("InAuN2O", "ScAlN2O", ["HfGaN2O", "FeMoN2O", "ScAlN2O"], FORMULA_ERRORS[0]),
    ("CsKO3", "KSrO3", ["RbMgO3", "NbAsN3", "SrMnN3"], FORMULA_ERRORS[1]),
    ("TaBeNOF", "ZrTaNOF", ["KHfNOF", "ZnCdNOF", "SrGeNOF"], FORMULA_ERRORS[2]),
    ("CaYO3", "Y2O3", ["LaSbO3", "MnPbO3", "LaNbN3"], FORMULA_ERRORS[3]),
    ("BaCuNO2", "BaCuNO3", ["Co2NOF", "RbTaNO2", "KBNO2"], FORMULA_ERRORS[4]),
])
def test_a_formula_miss_is_sorted_by_where_its_elements_came_from(target, sampled, demos, kind):
    assert formula_error(target, sampled, demos) == kind


# Misses seen in 3-shot Carbon-24 samples (paper_tables_c24_fs3_copying_4200): target, written, analysed, demos
@pytest.mark.parametrize("target, written, analysed, demos, kind", [
    (12, 12, 12, [12, 12, 12], None),
    (7, 8, 7, [8], None),  # the crystal has the target group whatever it wrote: a hit, as scored
    (2, 2, None, [2], SPACE_GROUP_ERRORS[0]),
    (2, 2, 12, [2, 2, 2], SPACE_GROUP_ERRORS[1]),  # a P-1 cell with a = b and alpha = beta is C2/m
    (44, 74, 74, [74, 44, 44], SPACE_GROUP_ERRORS[2]),
    (7, 8, 8, [7, 7, 7], SPACE_GROUP_ERRORS[3]),  # Pc asked, Cm written: both monoclinic
    (38, 227, 227, [38, 38, 38], SPACE_GROUP_ERRORS[4]),
])
def test_a_space_group_miss_is_sorted_by_what_was_written(target, written, analysed, demos, kind):
    assert space_group_error(target, written, analysed, demos) == kind

"""Conditions, templates, example selection (C, F, CF, R, CL, T, A) and instruction-set building on real crystals."""

import numpy as np
import pandas as pd
import pytest
from conftest import sample
from pymatgen.core import Structure
from scipy.spatial.distance import cdist

from crystalicl.conditions import describe, format_value
from crystalicl.data.prepare import prepare_one
from crystalicl.features import structure_fingerprint
from crystalicl.instructions import Mixture, build
from crystalicl.prompts import DEFAULT
from crystalicl.selection import Pool, anonymized_formula

LICUCO3 = {"formula": "LiCuCO3", "e_above_hull": 0.04690, "space_group": 67, "formation_energy": -1.6810,
           "band_gap": 1.72541}
ALL5 = ["formula", "e_above_hull", "space_group", "formation_energy", "band_gap"]
TASK = ("the space group symbol, a description of the lengths and angles of the lattice vectors and then the "
        "element type and coordinates for each atom within the lattice:")


def test_condition_description_matches_the_spec_example():
    assert describe(LICUCO3, ALL5) == (
        "The chemical formula is LiCuCO3. The energy above the convex hull is 0.0469. The spacegroup number is "
        "67. The formation energy per atom is -1.681. The band gap is 1.7254.")
    assert format_value(-0.00001) == "0" and format_value(np.int64(225)) == "225"


def test_zero_shot_template_renders_exactly():
    prompt = DEFAULT.generation(describe(LICUCO3, ALL5), "sgs")
    assert prompt == (
        "### Instruction: Below is a description of a bulk material. The chemical formula is LiCuCO3. The energy "
        "above the convex hull is 0.0469. The spacegroup number is 67. The formation energy per atom is -1.681. "
        "The band gap is 1.7254. Generate " + TASK + "\n### Response: ")
    assert DEFAULT.generation("", "sgs") == (
        "### Instruction: Below is a description of a bulk material. Generate " + TASK + "\n### Response: ")


def test_three_shot_template_renders_exactly():
    ex = [("The chemical formula is CaTiO3. The spacegroup number is 221.", "Pm-3m\n3.9 3.9 3.9\n90 90 90\nCa\n"
           "0.50 0.50 0.50\nTi\n0.00 0.00 0.00\nO\n0.50 0.00 0.00")] * 3
    prompt = DEFAULT.generation("The chemical formula is SrTiO3. The spacegroup number is 221.", "sgs", ex)
    crystal = ex[0][1]
    assert prompt == (
        "### Instruction: Below is three description of bulk materials.\n"
        f"### First Example: {ex[0][0]}\n{crystal}\n"
        f"### Second Example: {ex[0][0]}\n{crystal}\n"
        f"### Third Example: {ex[0][0]}\n{crystal}\n"
        "The chemical formula is SrTiO3. The spacegroup number is 221. Based on the three examples provided, "
        "generate " + TASK + "\n### Response: ")
    assert DEFAULT.generation("x", "sgs", ex[:2]).startswith("### Instruction: Below is two description")


def test_property_template_renders_exactly():
    assert DEFAULT.property("band gap", "P1\n...") == (
        '### Instruction: Below is a partial description of a bulk material where the band gap has been replaced '
        'with the string "[MASK]":\n### The band gap is [MASK].\n### P1\n...\n'
        "### Generate the band gap that could replace [MASK] in the bulk material:\n### Response: ")


@pytest.fixture(scope="module")
def mp_pool():
    df = sample("mp20_biternary", "val", n=300, seed=1)
    rows = [prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)]
    frame = pd.DataFrame(rows)
    for c in ("formation_energy", "band_gap", "e_above_hull", "cif"):
        frame[c] = df[c].to_numpy()
    frame = frame[frame.error.isna()].reset_index(drop=True)
    fps = np.array([structure_fingerprint(Structure.from_str(c, fmt="cif")) for c in frame.cif[:60]])
    return Pool(frame.iloc[:60].reset_index(drop=True), fps), Pool(frame)


def test_condition_strategy_matches_formula_type_space_group_and_nearest_values(mp_pool):
    _, pool = mp_pool
    rng = np.random.default_rng(0)
    names = ["formula", "space_group", "band_gap"]
    checked = 0
    for i in range(len(pool)):
        target = pool.frame.iloc[i]
        anon = anonymized_formula(target.formula)
        same = pool.frame[(pool.frame.formula.map(anonymized_formula) == anon)
                          & (pool.frame.space_group == target.space_group)
                          & (pool.frame.material_id != target.material_id)]
        if len(same) < 3:
            continue
        sel = pool.select("C", dict(target[names]), names, 3, rng, exclude_id=target.material_id)
        chosen = pool.frame.iloc[sel.indices]
        assert sel.fallback is None
        assert (chosen.formula.map(anonymized_formula) == anon).all()
        assert (chosen.space_group == target.space_group).all()
        best = np.sort(np.abs(same.band_gap - target.band_gap))[:3]
        assert np.allclose(np.sort(np.abs(chosen.band_gap - target.band_gap)), best)
        checked += 1
    assert checked >= 5


def test_condition_strategy_falls_back_and_says_so(mp_pool):
    _, pool = mp_pool
    target = {"formula": "Pu3Np5", "space_group": 1}  # a formula type nowhere in the pool
    sel = pool.select("C", target, ["formula", "space_group"], 3, np.random.default_rng(0))
    assert len(sel.indices) == 3 and sel.fallback == "relaxed-formula"


def test_template_strategy_shows_demonstrations_of_the_targets_own_layout(mp_pool):
    """T: every demonstration shares the target's Wyckoff layout while the pool has K such crystals, then C's
    matches fill in (relaxed-layout); the target itself is never one, and prompts without a layout are refused."""
    from crystalicl.text.sgs import layout

    _, pool = mp_pool
    rng = np.random.default_rng(0)
    layouts = [layout(t) for t in pool.frame.sgs_wyckoff]
    full = relaxed = 0
    for t in range(len(pool)):
        row = pool.frame.iloc[t]
        same = [i for i, x in enumerate(layouts) if x == layouts[t] and i != t]
        sel = pool.select("T", {"formula": row.formula}, ["formula"], 2, rng, exclude_id=row.material_id,
                          layout=layouts[t])
        assert len(sel.indices) == 2 and t not in sel.indices
        shared = [i for i in sel.indices if layouts[i] == layouts[t]]
        assert len(shared) == min(2, len(same))
        assert (sel.fallback is None) == (len(same) >= 2)
        full += len(same) >= 2
        relaxed += sel.fallback == "relaxed-layout"
    assert full >= 20 and relaxed >= 20
    with pytest.raises(ValueError, match="layout"):
        pool.select("T", {"formula": "NaCl"}, ["formula"], 2, rng)


def test_consensus_layout_strategy_shows_the_matches_most_common_layout(mp_pool):
    """CL: condition-matched demonstrations (C's filter) of the one layout most of the matches share, K of them
    while that many share it; else its members first and C's other matches after (relaxed-layout)."""
    from collections import Counter

    from crystalicl.text.sgs import layout

    _, pool = mp_pool
    rng = np.random.default_rng(0)
    names = ["formula", "space_group"]
    layouts = [layout(t) for t in pool.frame.sgs_wyckoff]
    anon = pool.frame.formula.map(anonymized_formula).to_numpy()
    full = relaxed = mixed = 0
    for t in range(len(pool)):
        row = pool.frame.iloc[t]
        matches = [i for i in range(len(pool)) if i != t and anon[i] == anon[t]
                   and pool.frame.space_group[i] == row.space_group]
        if len(matches) < 3:
            continue
        counts = Counter(layouts[i] for i in matches)
        top = max(counts.values())
        sel = pool.select("CL", {"formula": row.formula, "space_group": int(row.space_group)}, names, 3, rng,
                          exclude_id=row.material_id)
        assert len(sel.indices) == 3 and t not in sel.indices and set(sel.indices) <= set(matches)
        first = layouts[sel.indices[0]]
        assert counts[first] == top  # the majority layout (one of them, on a tie)
        assert [layouts[i] == first for i in sel.indices] == [k < min(3, top) for k in range(3)]
        assert (sel.fallback is None) == (top >= 3)
        full += top >= 3
        relaxed += sel.fallback == "relaxed-layout"
        c = pool.select("C", {"formula": row.formula, "space_group": int(row.space_group)}, names, 3, rng,
                        exclude_id=row.material_id)
        mixed += len({layouts[i] for i in c.indices}) > 1
    assert full >= 30 and relaxed >= 15 and mixed >= 30  # where C shows several layouts, CL shows one


def test_answer_strategy_shows_the_target_itself_among_its_layouts_templates(mp_pool):
    """A: the target's own description and text once, at a random place, beside K - 1 of T's demonstrations."""
    from crystalicl.instructions import generation_record
    from crystalicl.text.sgs import layout

    _, pool = mp_pool
    rng = np.random.default_rng(0)
    names = ["formula", "space_group"]
    places = set()
    for t in range(40):
        row = pool.frame.iloc[t]
        for k in (1, 2, 3):
            rec = generation_record(DEFAULT, "sgs-wyckoff", row, names, pool, "A", k, rng, exclude_id=row.material_id)
            ids = rec["example_ids"]
            assert len(ids) == k and ids.count(row.material_id) == 1 and rec["response"] == row.sgs_wyckoff
            assert rec["prompt"].count(describe(row, names) + "\n" + row.sgs_wyckoff + "\n") == 1
            others = [pool.frame.index[pool.frame.material_id == i][0] for i in ids if i != row.material_id]
            if rec["fallback"] is None:
                assert all(layout(pool.frame.sgs_wyckoff[i]) == layout(row.sgs_wyckoff) for i in others)
            places.add((k, ids.index(row.material_id)))
    assert places == {(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)}


def test_fingerprint_strategies_return_true_nearest_neighbours(mp_pool):
    pool, _ = mp_pool
    d = cdist(pool.fingerprints, pool.fingerprints)
    rng = np.random.default_rng(3)
    for t in range(10):
        tid = pool.frame.material_id[t]
        sel = pool.select("F", {"formula": pool.frame.formula[t]}, ["formula"], 3, rng, exclude_id=tid)
        anchor, *neigh = sel.indices
        assert t not in sel.indices and anchor != t
        others = [j for j in np.argsort(d[anchor], kind="stable") if j not in (anchor, t)]
        assert np.allclose(d[anchor, neigh], d[anchor, others[:2]])


def test_cf_anchor_and_neighbours_satisfy_the_conditions(mp_pool):
    pool, _ = mp_pool
    rng = np.random.default_rng(0)
    for t in range(20):
        row = pool.frame.iloc[t]
        sel = pool.select("CF", {"formula": row.formula}, ["formula"], 2, rng, exclude_id=row.material_id)
        if sel.fallback is None:
            assert all(anonymized_formula(pool.frame.formula[i]) == anonymized_formula(row.formula)
                       for i in sel.indices)


def test_instruction_sets_are_reproducible_leak_free_and_follow_the_mixture(mp_pool):
    pool, _ = mp_pool
    conds = ("formula", "space_group", "formation_energy", "band_gap", "e_above_hull")
    a = list(build(pool.frame, pool, conds, "sgs-wyckoff", Mixture(), seed=7, progress=False))
    b = list(build(pool.frame, pool, conds, "sgs-wyckoff", Mixture(), seed=7, progress=False))
    assert a == b
    tasks = {r["task"] for r in a}
    assert tasks == {"zero-shot", "few-shot", "property"}
    for r in a:
        assert r["target_id"] not in r["example_ids"]
        if r["task"] != "property":
            assert "The chemical formula is" in r["prompt"] and r["prompt"].endswith("### Response: ")
            assert r["response"].splitlines()[3].split()[1][-1].isalpha()  # Wyckoff label present
    assert {r["strategy"] for r in a if r["task"] == "few-shot"} == {"C", "F", "CF", "R"}
    rand_only = list(build(pool.frame, pool, conds, "sgs", Mixture(strategies=("R",), aux=0.0), seed=7,
                           progress=False))
    assert {r["strategy"] for r in rand_only if r["task"] == "few-shot"} == {"R"}
    assert not any(r["task"] == "property" for r in rand_only)



def test_demonstrations_reads_back_every_example_of_real_few_shot_prompts(mp_pool):
    pool, _ = mp_pool
    conds = ("formula", "space_group", "formation_energy", "band_gap", "e_above_hull")
    records = [r for r in build(pool.frame, pool, conds, "sgs-wyckoff", Mixture(aux=0.0), seed=3, progress=False)
               if r["task"] == "few-shot"]
    texts = dict(zip(pool.frame["material_id"].astype(str), pool.frame["sgs_wyckoff"], strict=True))
    assert {r["shots"] for r in records} == {1, 2, 3}
    for r in records:
        shown = DEFAULT.demonstrations(r["prompt"])
        assert [crystal for _, crystal in shown] == [texts[i] for i in r["example_ids"]]
        assert all(c.startswith("The chemical formula is") for c, _ in shown)
    assert DEFAULT.demonstrations(DEFAULT.generation("The chemical formula is NaCl.", "sgs")) == []

def test_per_orbit_fingerprint_equals_the_mean_over_all_sites():
    df = sample("mp20_biternary", n=6, seed=4)
    for cif in df.cif:
        s = Structure.from_str(cif, fmt="cif")
        assert np.allclose(structure_fingerprint(s, per_orbit=True), structure_fingerprint(s, per_orbit=False),
                           atol=1e-8)


def test_xyz_translation_augmentation_moves_atoms_but_keeps_the_crystal(mp_pool):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from crystalicl.text import decode

    _, pool = mp_pool
    rows = pool.frame.iloc[:5]
    recs = list(build(rows, pool, ("formula",), "xyz", Mixture(few_shot=0, aux=0.0, translate=True), seed=0,
                      progress=False))
    assert any(r["response"] != row.xyz for r, (_, row) in zip(recs, rows.iterrows(), strict=True))
    for r, (_, row) in zip(recs, rows.iterrows(), strict=True):
        assert StructureMatcher().fit(decode(r["response"], "xyz"), decode(row.xyz, "xyz"))


def test_unconditional_share_trains_the_exact_unconditional_prompt(mp_pool):
    pool, _ = mp_pool
    conds = ("formula", "space_group")
    base = list(build(pool.frame, pool, conds, "sgs", Mixture(few_shot=0, aux=0.0), seed=3, progress=False))
    unconditional = DEFAULT.generation("", "sgs", [])  # what unconditional generation prompts with
    assert not any(r["prompt"] == unconditional for r in base)
    half = list(build(pool.frame, pool, conds, "sgs", Mixture(few_shot=0, aux=0.0, unconditional=0.5), seed=3,
                      progress=False))
    dropped = [r for r in half if r["prompt"] == unconditional]
    assert 0 < len(dropped) < len(half) and all(r["conditions"] == [] for r in dropped)
    assert all("The chemical formula is" in r["prompt"] for r in half if r["prompt"] != unconditional)
    assert [r["response"] for r in half] == [r["response"] for r in base]  # same targets, same crystal text

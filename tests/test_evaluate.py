"""Evaluation metrics on real crystals, cross-checked against straightforward reimplementations."""

import itertools

import numpy as np
import smact
from conftest import sample
from pymatgen.core import Composition, Structure
from scipy.spatial.distance import cdist
from smact.screening import pauling_test

from crystalicl.metrics.distribution import coverage
from crystalicl.metrics.predictors import BANDGAP, EFORM, predict
from crystalicl.metrics.validity import composition_valid_of, structure_valid


def _cdvae_comp_valid(comp: Composition) -> bool:
    """The CDVAE criterion written plainly (all oxidation-state combinations, then the Pauling test)."""
    syms = [e.symbol for e in comp.elements]
    counts = [int(comp[e]) for e in comp.elements]
    g = np.gcd.reduce(counts)
    counts = [c // g for c in counts]
    if len(syms) == 1 or all(s in smact.metals for s in syms):
        return True
    els = [smact.Element(s) for s in syms]
    found = []
    for ox in itertools.product(*[e.oxidation_states or [] for e in els]):
        ratios = smact.neutral_ratios(ox, stoichs=[(c,) for c in counts], threshold=max(counts))
        if ratios:
            try:
                ok = pauling_test(ox, [e.pauling_eneg for e in els])
            except TypeError:
                ok = True
            if ok:
                found.append(ox)
    return len(found) > 0


def test_compositional_validity_matches_the_cdvae_criterion_on_real_compositions():
    df = sample("mp20_biternary", n=300, seed=2)
    comps = [Composition(f) for f in df.cif.map(lambda c: Structure.from_str(c, fmt="cif").composition.formula)]
    extra = [Composition(x) for x in ("NaCl2", "Fe3Al", "Ar2O", "C", "Na3Cl")]
    for c in comps + extra:
        assert composition_valid_of(c) == _cdvae_comp_valid(c), c
    assert np.mean([composition_valid_of(c) for c in comps]) > 0.8  # real MP compounds are mostly valid


def test_an_element_smact_does_not_know_makes_a_composition_invalid_not_an_error():
    # a sampled text may name any element; SMACT 4 has no data for Mc (a real sample crashed an evaluation)
    assert composition_valid_of(Composition("McO2")) is False
    assert composition_valid_of(Composition("SrTiO3")) is True


def test_a_sample_that_breaks_a_metric_is_recorded_not_fatal(monkeypatch):
    from crystalicl import evaluate
    from crystalicl.metrics import validity

    s = Structure.from_str(sample("perov5", n=1).cif[0], fmt="cif")
    s.replace_species({s[0].specie: "Mc"})
    out = evaluate.analyze({"cif": s.to(fmt="cif")})
    assert out["parsed"] and out["valid_composition"] is False and "error" not in out

    def boom(_):
        raise ValueError("library failure")

    monkeypatch.setattr(validity, "composition_valid_of", boom)
    out = evaluate.analyze({"cif": s.to(fmt="cif")})
    assert out == {"parsed": True, "error": "ValueError: library failure", "valid_structure": False,
                   "valid_composition": False}


def test_structural_validity_flags_overlapping_atoms():
    s = Structure.from_str(sample("perov5", n=1).cif[0], fmt="cif")
    assert structure_valid(s)
    bad = s.copy()
    bad.append(s[0].specie, s[0].frac_coords + 0.01)
    assert not structure_valid(bad)


def test_a_crystal_with_overlapping_atoms_still_has_fingerprints():
    """CDVAE fingerprints every crystal it can build: one with two atoms 0.04 Å apart is structurally invalid,
    and it still has a structure and a composition fingerprint, so coverage measures it like any other."""
    from crystalicl import evaluate

    s = Structure.from_str(sample("mp20_biternary", n=1, seed=4).cif[0], fmt="cif")
    bad = s.copy()
    bad.append(s[0].specie, s[0].frac_coords + 0.005)
    out = evaluate.analyze({"cif": bad.to(fmt="cif")})
    assert out["valid_structure"] is False
    assert out["struct_fp"] is not None and np.isfinite(out["struct_fp"]).all() and out["comp_fp"] is not None


def test_coverage_matches_a_plain_reimplementation():
    rng = np.random.default_rng(0)
    gs, gc = rng.random((40, 5)), rng.random((40, 3)) * 5
    rs, rc = rng.random((30, 5)), rng.random((30, 3)) * 5
    gs[3] = np.nan
    cut = (0.6, 3.0)
    ours = coverage(gs, gc, rs, rc, cut)
    ok = ~np.isnan(gs).any(1)
    ds, dc = cdist(gs[ok], rs), cdist(gc[ok], rc)
    recall = np.mean((ds.min(0) <= cut[0]) & (dc.min(0) <= cut[1]))
    precision = np.sum((ds.min(1) <= cut[0]) & (dc.min(1) <= cut[1])) / 40
    assert ours == {"cov_recall": recall, "cov_precision": precision}
    assert coverage(rs, rc, rs, rc, cut) == {"cov_recall": 1.0, "cov_precision": 1.0}


def test_megnet_reproduces_the_original_implementation():
    import json
    import os
    from pathlib import Path

    ref = json.loads((Path(os.environ["CRYSTALICL_MODELS_DIR"]) / "megnet_reference_predictions.json").read_text())
    rows = ref["rows"]
    structs = [Structure.from_str(r["cif"], fmt="cif") for r in rows]
    e = predict(EFORM, structs)
    g = predict(BANDGAP, structs, state=0)
    assert np.nanmax(np.abs(e - [r["formation_energy_per_atom"] for r in rows])) < 1e-3
    assert np.nanmax(np.abs(g - [r["band_gap_pbe"] for r in rows])) < 1e-2


def test_uniqueness_and_novelty_on_real_crystals():
    from crystalicl.data.prepare import load_prepared
    from crystalicl.evaluate import aggregate_runs, uniqueness_novelty

    train = load_prepared("perov5", "train").iloc[:3]
    test = sample("perov5", "test", n=3, seed=5)
    recs = [{"cif": c} for c in list(train.cif) + list(train.cif[:1]) + list(test.cif)]
    valid = np.ones(len(recs), bool)
    m = uniqueness_novelty(recs, valid, ("perov5", "train"))
    assert m["uniqueness"] == 6 / 7  # one duplicate
    assert m["novelty"] == 3 / 7  # the three test crystals are not in the training split
    agg = aggregate_runs([{"formula": 0.5}, {"formula": 0.7}])
    assert agg["formula"] == 0.6 and abs(agg["formula_std"] - 0.1414) < 1e-3

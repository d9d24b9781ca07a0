import numpy as np
import pytest
from conftest import sample
from pymatgen.core import Structure

from crystalicl.constrained import Grammar
from crystalicl.data.prepare import prepare_one
from crystalicl.model.tokenizer import build_tokenizer
from crystalicl.packing import Packing, fit_packing, packing_of_texts
from crystalicl.text import decode


def _crystals(name: str, split: str, n: int, seed: int = 0) -> list[Structure]:
    df = sample(name, split, n=n, seed=seed)
    return [Structure.from_str(c, fmt="cif") for c in df.cif]


def _ratio(packing: Packing, s: Structure) -> float | None:
    need = packing.needed(s.composition.get_el_amt_dict())
    return None if need is None else s.volume / need


@pytest.fixture(scope="module")
def mp20_packing() -> Packing:
    """Volume increments fitted on 600 real MP-20 (binary and ternary) training crystals."""
    train = _crystals("mp20_biternary", "val", 600)
    return fit_packing([s.composition.get_el_amt_dict() for s in train], [s.volume for s in train])


def test_volume_increments_predict_held_out_cell_volumes(mp20_packing):
    ratios = [r for s in _crystals("mp20_biternary", "test", 150) if (r := _ratio(mp20_packing, s)) is not None]
    assert len(ratios) >= 100  # elements seen in fewer than five training crystals leave a crystal unbounded
    r = np.array(ratios)
    assert 0.6 < mp20_packing.low < 1.0 < mp20_packing.high < 2.0
    assert np.mean((r >= mp20_packing.low) & (r <= mp20_packing.high)) >= 0.9
    assert np.median(np.abs(np.log(r))) < 0.12  # the cell's volume per atom alone spreads far wider
    vpa = np.array([s.volume / len(s) for s in _crystals("mp20_biternary", "test", 150)])
    assert np.median(np.abs(np.log(vpa / np.median(vpa)))) > 2 * np.median(np.abs(np.log(r)))
    assert 8 < mp20_packing.volumes["O"] < 20 and mp20_packing.volumes["Cs"] > 3 * mp20_packing.volumes["O"]


def test_fitting_from_xyz_text_matches_fitting_from_structures():
    df = sample("mp20_biternary", "val", n=200, seed=1)
    structures = [Structure.from_str(c, fmt="cif") for c in df.cif]
    texts = [prepare_one(m, c)["xyz"] for m, c in zip(df.material_id, df.cif, strict=True)]
    a = packing_of_texts(texts)
    b = fit_packing([s.composition.get_el_amt_dict() for s in structures], [s.volume for s in structures])
    assert set(a.volumes) == set(b.volumes) and len(a.volumes) > 5
    # the text rounds lengths to 0.1 Å and angles to degrees: the two fits predict the same cell volumes
    pairs = [(a.needed(c), b.needed(c)) for c in (s.composition.get_el_amt_dict() for s in structures)]
    diff = np.array([abs(x / y - 1) for x, y in pairs if x is not None])
    assert len(diff) > 50 and np.median(diff) < 0.03
    assert Packing.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError):
        fit_packing([{"Na": 1}], [1.0, 2.0])


def test_grammar_ends_a_crystal_only_once_its_cell_is_filled():
    """Rock salt, a = 5.6 Å: 175.6 Å^3 holds atoms worth 117-220 Å^3 at Na 20, Cl 22 and ratios 0.8-1.5."""
    tok = build_tokenizer()
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5))
    inv = {v: k for k, v in tok.get_vocab().items()}
    cell = "Fm-3m\n5.6 5.6 5.6\n90 90 90\n"
    half = cell + "Na 4a\n0.00 0.00 0.00"  # 80 Å^3: too empty to end
    assert {inv[int(t)] for t in g.allowed(half)} == {"\n"}
    full = half + "\nCl 4b\n0.50 0.50 0.50"  # 168 Å^3: the smallest site left (8c, 160 Å^3 of Na) overfills it
    assert list(g.allowed(full)) == [tok.eos_token_id]
    # a 24-atom site of Na would overfill the half-filled cell; 4b (80 more, 160 in all) fits
    labels = {inv[int(t)] for t in g.allowed(half + "\nNa ")}
    assert "4" in labels and "2" not in labels and "8" not in labels
    # without the bound both ways stay open
    free = Grammar(tok, "sgs-wyckoff")
    assert {inv[int(t)] for t in free.allowed(half)} == {"\n", tok.eos_token}
    # held to the formula NaCl: one site of each, and the grammar aims at 4 formula units (4 × 42 = 168 Å^3)
    target = g.target({"formula": "NaCl", "space_group": 225})
    assert g._kspan(target.formula, g._fill(half.split("\n"), 1, 1)) == (3, 5)


def test_a_crystal_short_of_its_fewest_elements_keeps_room_for_another():
    """Held to 2-3 elements in a packed cell (Na 20, Cl 22 Å^3, ratios 0.8-1.5): after Na 1a in a 3.9 Å Pm-3m cell
    (atoms worth 39.5-74.1 Å^3), a second Na would leave room for no Cl site (1b, then 3 atoms at least), so only Cl
    is offered; a 4.2 Å cell filled enough by Na 3c may end without the range, but with it must take a Cl site."""
    from crystalicl.constrained import Target

    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5))
    span = Target(n_elements=(2, 3))
    one = "Pm-3m\n3.9 3.9 3.9\n90 90 90\nNa 1a\n0.00 0.00 0.00\n"
    assert {inv[int(t)] for t in g.allowed(one)} == {"Na", "Cl"}
    assert {inv[int(t)] for t in g.allowed(one, target=span)} == {"Cl"}
    filled = "Pm-3m\n4.2 4.2 4.2\n90 90 90\nNa 3c\n0.00 0.50 0.50"
    assert {inv[int(t)] for t in g.allowed(filled)} == {"\n", tok.eos_token}
    assert {inv[int(t)] for t in g.allowed(filled, target=span)} == {"\n"}
    # with no room for a new element at all, the crystal ends as it is rather than overfill its cell
    full = "Pm-3m\n3.9 3.9 3.9\n90 90 90\nNa 1a\n0.00 0.00 0.00\nNa 1b\n0.50 0.50 0.50"
    assert list(g.allowed(full, target=span)) == [tok.eos_token_id]
    # an element line where nothing fits any more: any element without the range, those held with it at its most
    packed = "Pm-3m\n3.9 3.9 3.9\n90 90 90\nNa 1a\n0.00 0.00 0.00\nCl 1b\n0.50 0.50 0.50\n"
    assert len(g.allowed(packed)) > 80
    assert {inv[int(t)] for t in g.allowed(packed, target=Target(n_elements=(1, 2)))} == {"Na", "Cl"}


@pytest.mark.parametrize("fmt", ["sgs-wyckoff", "xyz"])
def test_random_walks_on_real_cells_fill_them_as_real_crystals_do(mp20_packing, fmt):
    """Random tokens after a real crystal's cell: with the bound, the decoded atoms fill the cell as the
    training crystals do; without it, mostly not. (In ``sgs`` text a site's orbit follows from all three of its
    coordinates, and random ones leave the special positions: only the model's own coordinates keep it in.)"""
    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    df = sample("mp20_biternary", "test", n=16, seed=3)
    cells = ["\n".join(prepare_one(m, c)[fmt.replace("-", "_")].split("\n")[:3]) + "\n"
             for m, c in zip(df.material_id, df.cif, strict=True)]
    rng = np.random.default_rng(0)
    inside = {}
    for bounded in (True, False):
        g = Grammar(tok, fmt, mp20_packing if bounded else None)
        hits = []
        for cell in cells:
            text = cell
            for step in range(500):
                t = int(rng.choice(g.allowed(text, room=500 - step)))
                if t == tok.eos_token_id:
                    break
                text += inv[t]
            r = _ratio(mp20_packing, decode(text, fmt))
            hits.append(r is not None and mp20_packing.low <= r <= mp20_packing.high)
        inside[bounded] = np.mean(hits)
    assert inside[True] >= 0.8, inside
    assert inside[False] <= inside[True] - 0.3, inside


def test_a_cell_too_small_for_the_formula_is_not_written():
    """Held to NaCl in Fm-3m (4 or 8 formula units in the conventional cell; Na 20, Cl 22 Å^3), the third length
    can only make a cell that holds a whole number of units: after a = b = 5.6 Å, c = 1.x Å (83 Å^3 at most) is
    refused and c = 10-12 Å (353-484 Å^3: 8 units) is offered."""
    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5))
    target = g.target({"formula": "NaCl", "space_group": 225})
    offered = {inv[int(t)] for t in g.allowed("Fm-3m\n5.6 5.6 1", 400, target)}
    assert "." not in offered and {"0", "1", "2"} <= offered
    assert "." in {inv[int(t)] for t in Grammar(tok, "sgs-wyckoff").allowed("Fm-3m\n5.6 5.6 1", 400, target)}


def test_random_walks_held_to_real_targets_fill_their_cells(mp20_packing):
    """Real MP-20 targets (formula and space group), the target's own a and b, then random tokens: the formula
    is always met and, with the bound, the atoms fill the cell as the training crystals do."""
    from pymatgen.core import Composition

    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    df = sample("mp20_biternary", "test", n=16, seed=5)
    rows = [prepare_one(m, c) for m, c in zip(df.material_id, df.cif, strict=True)]
    rng = np.random.default_rng(2)
    inside = {}
    for bounded in (True, False):
        g = Grammar(tok, "sgs-wyckoff", mp20_packing if bounded else None)
        hits = []
        for row in rows:
            target = g.target({"formula": row["formula"], "space_group": row["space_group"]})
            lines = row["sgs_wyckoff"].split("\n")
            text = lines[0] + "\n" + " ".join(lines[1].split(" ")[:2]) + " "
            for step in range(600):
                t = int(rng.choice(g.allowed(text, room=600 - step, target=target)))
                if t == tok.eos_token_id:
                    break
                text += inv[t]
            s = decode(text, "sgs-wyckoff")
            assert s.composition.reduced_formula == Composition(row["formula"]).reduced_formula, text
            r = _ratio(mp20_packing, s)
            hits.append(r is not None and mp20_packing.low <= r <= mp20_packing.high)
        inside[bounded] = np.mean(hits)
    assert inside[True] >= 0.75, inside
    assert inside[False] <= inside[True] - 0.3, inside


def test_no_cell_holds_more_atoms_than_the_largest_training_cell_allows():
    """At most 2 atoms a primitive cell (so 8 in the face-centred conventional cell of Fm-3m): Cl on 8c after
    Na on 4a would make 12, and a NaCl cell can only be written for 4 formula units (c between 4.2 and 7.7 Å
    after a = b = 5.6 Å), not for 8 (c from 10 Å, offered without the cap)."""
    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    half = "Fm-3m\n5.6 5.6 5.6\n90 90 90\nNa 4a\n0.00 0.00 0.00\nCl "
    capped = Grammar(tok, "sgs-wyckoff", Packing({"Na": 10.0, "Cl": 10.0}, 0.8, 1.5, max_atoms=2))
    uncapped = Grammar(tok, "sgs-wyckoff", Packing({"Na": 10.0, "Cl": 10.0}, 0.8, 1.5))
    assert {inv[int(t)] for t in capped.allowed(half)} == {"4"}
    assert {"4", "8"} <= {inv[int(t)] for t in uncapped.allowed(half)}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5, max_atoms=2))
    target = g.target({"formula": "NaCl", "space_group": 225})
    assert {inv[int(t)] for t in g.allowed("Fm-3m\n5.6 5.6 ", 400, target)} == {"4", "5", "6", "7"}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5))
    assert "1" in {inv[int(t)] for t in g.allowed("Fm-3m\n5.6 5.6 ", 400, target)}


def test_a_sample_window_is_drawn_from_the_training_ratios(mp20_packing):
    """The percentiles of V / Σ n v travel with the fit; a sample's window is the band of training ratios
    around its draw, inside the whole window; a packing recorded without them keeps the whole window."""
    r = np.array(mp20_packing.ratios)
    assert len(r) == 101 and np.all(np.diff(r) >= 0)
    assert r[1] <= mp20_packing.low <= r[2] and r[98] <= mp20_packing.high <= r[99]
    lo, hi = mp20_packing.drawn_window(0.5, 0.1)
    assert (lo, hi) == pytest.approx((r[40], r[60]), rel=1e-3)
    assert mp20_packing.drawn_window(0.0, 0.1) == pytest.approx((mp20_packing.low, r[10]), rel=1e-3)
    assert mp20_packing.drawn_window(1.0, 0.1) == pytest.approx((r[90], mp20_packing.high), rel=1e-3)
    old = Packing.from_dict({k: v for k, v in mp20_packing.to_dict().items() if k != "ratios"})
    assert old.drawn_window(0.5, 0.1) == (mp20_packing.low, mp20_packing.high)
    assert Packing.from_dict(mp20_packing.to_dict()) == mp20_packing
    assert mp20_packing.elements == (2, 3)  # binary and ternary compounds


def test_a_sample_window_decides_where_the_whole_window_leaves_the_choice_open():
    """Pm-3m, a = 5.2 Å (140.6 Å^3; Na 20, Cl 22 Å^3): Na 1a, Cl 1b and Na 3c fill 102 Å^3, and the next site
    (3d, 60 more) would fill 162. The whole window (ratios 0.8-1.5: 94-176 Å^3) allows both; a sample held to
    ratios 0.80-0.85 must go on, one held to 1.3-1.5 must end, and a window that neither allows defers to the
    whole one."""
    from crystalicl.constrained import Target

    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0}, 0.8, 1.5))
    text = ("Pm-3m\n5.2 5.2 5.2\n90 90 90\nNa 1a\n0.00 0.00 0.00\nCl 1b\n0.50 0.50 0.50\nNa 3c\n"
            "0.00 0.50 0.50")
    assert {inv[int(t)] for t in g.allowed(text)} == {"\n", tok.eos_token}
    assert {inv[int(t)] for t in g.allowed(text, target=Target(window=(0.8, 0.85)))} == {"\n"}
    assert list(g.allowed(text, target=Target(window=(1.3, 1.5)))) == [tok.eos_token_id]
    # 1.05-1.1 (128-134 Å^3): too empty now and overfilled by 3d; 102 -> short by 1.25x, 162 -> over by 1.21x
    assert {inv[int(t)] for t in g.allowed(text, target=Target(window=(1.05, 1.1)))} == {"\n"}
    # a window for a formula is ignored: the formula's own bound applies
    held = g.target({"formula": "Na4Cl"})
    assert {inv[int(t)] for t in g.allowed(text, target=Target(held.symbol, held.formula, (1.3, 1.5)))} == \
        {inv[int(t)] for t in g.allowed(text, target=held)}


def test_random_walks_on_real_cells_land_in_their_own_windows(mp20_packing):
    """Random tokens after real MP-20 cells, each walk held to a window drawn from the training ratios: far more
    of them end inside their own window than walks bounded only by the whole window."""
    from crystalicl.constrained import Target

    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    df = sample("mp20_biternary", "test", n=24, seed=7)
    cells = ["\n".join(prepare_one(m, c)["sgs_wyckoff"].split("\n")[:3]) + "\n"
             for m, c in zip(df.material_id, df.cif, strict=True)]
    rng = np.random.default_rng(4)
    windows = [mp20_packing.drawn_window(float(u), 0.1) for u in rng.random(len(cells))]
    g = Grammar(tok, "sgs-wyckoff", mp20_packing)
    inside = {}
    for own in (True, False):
        hits = []
        for cell, w in zip(cells, windows, strict=True):
            text = cell
            for step in range(500):
                t = int(rng.choice(g.allowed(text, room=500 - step, target=Target(window=w) if own else None)))
                if t == tok.eos_token_id:
                    break
                text += inv[t]
            r = _ratio(mp20_packing, decode(text, "sgs-wyckoff"))
            hits.append(r is not None and w[0] <= r <= w[1])
        inside[own] = np.mean(hits)
    assert inside[True] >= 0.5, inside
    assert inside[False] <= inside[True] - 0.25, inside


def test_density_splits_exactly_into_composition_and_packing(mp20_packing):
    """benchmarks/density_errors.py: a real crystal's density is its mass per volume increment over its packing
    ratio, and the test crystals' ratios sit near 1 where their volume per atom does not."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import density_errors

    m = density_errors.measures(_crystals("mp20_biternary", "test", 60, seed=7), mp20_packing)
    ok = np.isfinite(m["packing_ratio"])
    assert ok.sum() >= 40
    np.testing.assert_allclose(m["density"][ok], m["mass_per_increment"][ok] / m["packing_ratio"][ok], rtol=1e-6)
    assert 0.9 < np.median(m["packing_ratio"][ok]) < 1.1
    unpacked = density_errors.measures(_crystals("mp20_biternary", "test", 5, seed=7))
    assert np.isnan(unpacked["packing_ratio"]).all() and set(density_errors.summary(unpacked, m)) == {
        "density", "volume_per_atom", "mass_per_atom", "atoms"}


def test_a_crystal_that_may_end_ends_rather_than_take_a_filler_the_model_does_not_want():
    """Na 1a + Cl 1b fill a 3.9 Å Pm-3m cell enough to end (Na 20, Cl 22, H 2 Å^3; ratios 0.8-1.5); a next site
    (3 atoms at least) fits only as H. Held to a filler floor of 0.2, a model that gives H little of its element
    probability ends the crystal; one that wants H gets it; a crystal too empty to end still goes on."""
    import torch

    from crystalicl.constrained import GrammarLogitsProcessor, Target

    tok = build_tokenizer()
    inv = {v: k for k, v in tok.get_vocab().items()}
    g = Grammar(tok, "sgs-wyckoff", Packing({"Na": 20.0, "Cl": 22.0, "H": 2.0}, 0.8, 1.5))
    cell = "Pm-3m\n3.9 3.9 3.9\n90 90 90\nNa 1a\n0.00 0.00 0.00\n"
    ended = cell + "Cl 1b\n0.50 0.50 0.50\n"
    assert {inv[int(t)] for t in g.allowed(ended)} == {"H"}
    assert g.may_end(ended) and not g.may_end(cell)

    def offered(text: str, h_score: float, floor: float | None = 0.2) -> set[str]:
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        assert tok.decode(ids[0]) == text
        scores = torch.zeros(1, len(tok))
        scores[0, tok.convert_tokens_to_ids("H")] = h_score
        proc = GrammarLogitsProcessor(g, tok, 0, 500, [Target(filler_floor=floor)])
        return {inv[int(t)] for t in torch.nonzero(torch.isfinite(proc(ids, scores))[0]).flatten()}

    assert offered(ended, 0.0) == {tok.eos_token}  # H holds 1/118 of the element probability
    assert offered(ended, 8.0) == {"H"}  # the model wants H
    assert offered(ended, 0.0, None) == {"H"}  # without the floor the bound forces it
    assert "H" in offered(cell, 0.0) and tok.eos_token not in offered(cell, 0.0)

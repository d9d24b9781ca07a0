"""Space-group table and Wyckoff orbit expansion, checked against pymatgen's independent SpaceGroup."""

import numpy as np
import pytest
from pymatgen.symmetry.groups import SpaceGroup as PmgSpaceGroup

from crystalicl import wyckoff
from crystalicl.symmetry import all_space_groups, space_group


def test_all_230_groups_resolve_by_number_and_symbol():
    groups = all_space_groups()
    assert len(groups) == 230 and len({g.symbol for g in groups}) == 230
    for g in groups:
        assert space_group(g.symbol) == g == space_group(g.number)
    assert space_group("P 6_3/m m c").number == 194
    assert space_group("Cmme").number == 67
    with pytest.raises(KeyError):
        space_group("Q4")


# Groups whose spglib default setting is pymatgen's default too (no origin choice / axes ambiguity).
@pytest.mark.parametrize("number", [2, 14, 62, 123, 139, 167, 186, 194, 221, 225, 229, 230])
def test_orbit_expansion_matches_pymatgen(number):
    g = space_group(number)
    pmg = PmgSpaceGroup.from_int_number(number)
    rng = np.random.default_rng(number)
    for wp in wyckoff.wyckoff_positions(g.hall_number):
        u = rng.random(3)
        ours = wp.orbit(u)
        assert len(ours) == wp.multiplicity
        theirs = np.array(pmg.get_orbit(ours[0]))
        assert len(theirs) == wp.multiplicity, wp.label
        diff = ours[:, None, :] - theirs[None, :, :]
        diff -= np.round(diff)
        assert np.abs(diff).max(axis=-1).min(axis=1).max() < 1e-6, wp.label


def test_snap_finds_the_special_position_of_a_rounded_coordinate():
    g = space_group("P6_3/mmc")
    lattice = np.diag([3.2, 3.2, 5.2]).astype(float)
    lattice[1] = [-1.6, 1.6 * 3**0.5, 0]
    wp, u = wyckoff.snap(g.hall_number, np.array([0.33, 0.67, 0.25]), lattice, tol=0.35)
    assert wp.label == "2c" and len(wp.orbit(u)) == 2
    big = lattice * 4  # in a 13 Å cell this point is > 1 Å from every mirror and axis
    wp, _ = wyckoff.snap(g.hall_number, np.array([0.10, 0.37, 0.61]), big, tol=0.35)
    assert wp.multiplicity == 24  # general position: nothing special within tolerance


def _as_p1(text: str) -> str:
    """The same SGS text with its symbol replaced by P1: only the representatives remain, in the same cell."""
    return "\n".join(["P1", *text.splitlines()[1:]])


def test_symmetry_mismatch_names_the_group_a_crystal_really_has():
    from crystals import perovskite
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from crystalicl.symmetry import symmetry_mismatch
    from crystalicl.text import decode, encode, written_space_group

    text = encode(perovskite(), "sgs")
    assert written_space_group(text, "sgs") == 221
    assert symmetry_mismatch(decode(text, "sgs"), 221) is None
    # P1 with Sr, Ti and one O in a cubic cell is SrTiO, whose group pymatgen also finds
    p1 = decode(_as_p1(text), "sgs")
    real = SpacegroupAnalyzer(p1, symprec=0.01).get_space_group_number()
    assert real != 1
    msg = symmetry_mismatch(p1, 1)
    assert msg is not None and f"({real})" in msg and "P1 (1)" in msg
    assert written_space_group(encode(perovskite(), "xyz"), "xyz") is None
    assert written_space_group("Q9\n3.9 3.9 3.9\n90 90 90\nSr\n0.50 0.50 0.50", "sgs") is None

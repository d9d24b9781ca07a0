"""Well-known crystals built from their published space group and Wyckoff coordinates."""

from pymatgen.core import Lattice, Structure


def rock_salt():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])


def wurtzite():
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


def corundum():
    return Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"],
                                     [[0, 0, 0.3523], [0.3064, 0, 0.25]])


def spinel():  # MgAl2O4; pymatgen's group 227 is origin choice 1: Mg 8a, Al 16d, O 32e
    return Structure.from_spacegroup(227, Lattice.cubic(8.08), ["Mg", "Al", "O"],
                                     [[0, 0, 0], [0.625, 0.625, 0.625], [0.3874, 0.3874, 0.3874]])


def garnet():  # Y3Al5O12 (YAG)
    return Structure.from_spacegroup("Ia-3d", Lattice.cubic(12.0), ["Y", "Al", "Al", "O"],
                                     [[0.125, 0, 0.25], [0, 0, 0], [0.375, 0, 0.25], [-0.0306, 0.0512, 0.1500]])


ALL = {"rock_salt": rock_salt, "perovskite": perovskite, "wurtzite": wurtzite, "corundum": corundum,
       "spinel": spinel, "garnet": garnet}

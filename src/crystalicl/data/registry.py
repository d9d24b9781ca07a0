"""The benchmark datasets: where they come from, what properties they carry, what may condition generation."""

from __future__ import annotations

from dataclasses import dataclass, field

CDVAE = "https://raw.githubusercontent.com/txie-93/cdvae/main/data"
DIFFCSP = "https://raw.githubusercontent.com/jiaor17/DiffCSP/main/data"
WYFORMER = "https://raw.githubusercontent.com/SymmetryAdvantage/WyckoffTransformer/main/data"
CRYSTAL_TEXT_LLM = "https://raw.githubusercontent.com/facebookresearch/crystal-text-llm/main/data"

SPLITS = ("train", "val", "test")

# Canonical property names used throughout the package (conditions, instructions, metrics).
PROPERTY_NAMES = {
    "formula": "chemical formula",
    "space_group": "spacegroup number",
    "formation_energy": "formation energy per atom",
    "band_gap": "band gap",
    "e_above_hull": "energy above the convex hull",
    "heat_of_formation": "heat of formation",
    "energy_per_atom": "energy per atom",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    url_template: str  # formatted with split=
    columns: dict[str, str] = field(default_factory=dict)  # canonical property -> source column
    conditions: tuple[str, ...] = ("formula", "space_group")  # valid generation conditions
    cov_cutoffs: tuple[float, float] = (0.4, 10.0)  # (structure, composition) for COV-R/P
    id_column: str = "material_id"
    cif_column: str = "cif"

    def url(self, split: str) -> str:
        return self.url_template.format(split=split)


_MP_COLUMNS = {"formation_energy": "formation_energy_per_atom", "band_gap": "band_gap", "e_above_hull": "e_above_hull"}
_MP_CONDITIONS = ("formula", "space_group", "formation_energy", "band_gap", "e_above_hull")

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("mp20", "Materials Project, ≤20 atoms (CDVAE split; 45,231 structures)",
                    CDVAE + "/mp_20/{split}.csv", _MP_COLUMNS, _MP_CONDITIONS),
        DatasetInfo("mp20_biternary", "binary and ternary compounds of MP-20 (WyckoffTransformer split)",
                    WYFORMER + "/mp_20_biternary/{split}.csv.gz", _MP_COLUMNS, _MP_CONDITIONS),
        DatasetInfo("mp30", "Materials Project, ≤30 atoms (crystal-text-llm split; URL not verified offline)",
                    CRYSTAL_TEXT_LLM + "/basic/{split}.csv.gz", _MP_COLUMNS, _MP_CONDITIONS),
        DatasetInfo("mpts52", "Materials Project time split, ≤52 atoms (DiffCSP)",
                    DIFFCSP + "/mpts_52/{split}.csv",
                    {"formation_energy": "formation_energy_per_atom", "e_above_hull": "energy_above_hull"},
                    ("formula", "space_group", "formation_energy", "e_above_hull")),
        DatasetInfo("perov5", "Perov-5: 18,928 cubic-perovskite-derived ABX3 (CDVAE)",
                    CDVAE + "/perov_5/{split}.csv", {"heat_of_formation": "heat_ref", "band_gap": "dir_gap"},
                    ("formula", "space_group"), (0.2, 4.0)),
        DatasetInfo("carbon24", "Carbon-24: 10,153 carbon allotropes, 6-24 atoms (CDVAE)",
                    CDVAE + "/carbon_24/{split}.csv", {"energy_per_atom": "energy_per_atom"},
                    ("formula", "space_group"), (0.2, 4.0)),
    )
}


def dataset(name: str) -> DatasetInfo:
    from crystalicl.errors import DatasetError

    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None

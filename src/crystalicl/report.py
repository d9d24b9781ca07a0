"""``crystalicl report <run dir>``: a markdown + HTML report with PNG plots of a run's metrics and samples.

A run directory holds ``*.metrics.json`` files (from ``crystalicl evaluate``) and sample folders with
``samples.jsonl``; the report shows every metric beside the paper's number where one exists, property
histograms of generated vs reference crystals, the space-group distribution, and a few structures drawn
as 2-D projections.
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path

import numpy as np


def _paper_results() -> dict:
    import os

    for base in (os.environ.get("CRYSTALICL_REFERENCE_DIR"),
                 str(Path(os.environ.get("CRYSTALICL_DATA_DIR", "/nonexistent")).parent / "reference")):
        if base and (Path(base) / "paper_results.json").is_file():
            return json.loads((Path(base) / "paper_results.json").read_text())
    return {}


def _draw_structure(ax, structure, title: str) -> None:
    from pymatgen.core.periodic_table import Element

    cart = structure.cart_coords
    colors = [Element(s.specie.symbol).Z for s in structure]
    ax.scatter(cart[:, 0], cart[:, 1], c=colors, cmap="tab20", s=60, edgecolors="k", linewidths=0.4)
    m = structure.lattice.matrix
    corners = np.array([[0, 0], m[0, :2], m[0, :2] + m[1, :2], m[1, :2], [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], "k-", lw=0.8)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.axis("off")


def _space_group(structure) -> int | None:
    """Space-group number at the package's tolerance; None for crystals spglib cannot analyse (overlaps)."""
    from crystalicl.symmetry import space_group_number

    return space_group_number(structure.lattice.matrix, structure.frac_coords, [x.specie.Z for x in structure])


def _samples(run: Path) -> list[tuple[str, list[dict]]]:
    out = []
    for p in sorted(run.rglob("samples.jsonl")):
        with open(p) as f:
            out.append((str(p.parent.relative_to(run)), [json.loads(x) for x in f if x.strip()]))
    return out


def write_report(run_dir, reference: str | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and PNG plots into ``run_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.core import Structure

    from crystalicl.symmetry import space_group

    run = Path(run_dir)
    metrics = {p.name.removesuffix(".metrics.json"): json.loads(p.read_text())
               for p in sorted(run.rglob("*.metrics.json"))}
    md = [f"# crystalicl report: {run.name}", ""]
    images = []
    if metrics:
        keys = sorted({k for m in metrics.values() for k, v in m.items() if isinstance(v, int | float)})
        md += ["## Metrics", "", "| metric | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for k in keys:
            md.append(f"| {k} | " + " | ".join(_fmt(m.get(k)) for m in metrics.values()) + " |")
        md.append("")
        rates = [k for k in ("formula", "space_group", "formation_energy", "band_gap", "valid_overall") if
                 any(k in m for m in metrics.values())]
        if rates:
            fig, ax = plt.subplots(figsize=(6, 3))
            w = 0.8 / len(metrics)
            for i, (name, m) in enumerate(metrics.items()):
                ax.bar(np.arange(len(rates)) + i * w, [m.get(r, np.nan) for r in rates], w, label=name)
            ax.set_xticks(np.arange(len(rates)) + 0.4 - w / 2, rates, fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=6)
            ax.set_title("success rates and validity")
            fig.tight_layout()
            fig.savefig(run / "rates.png", dpi=120)
            plt.close(fig)
            images.append(("Success rates and validity", "rates.png"))
    samples = _samples(run)
    structures = []
    for name, recs in samples:
        ok = [r for r in recs if r.get("cif")]
        md.append(f"- `{name}`: {len(recs)} samples, {len(ok)} decoded "
                  f"({np.mean([r.get('attempts', 1) for r in recs]):.2f} draws per sample)")
        from crystalicl.evaluate import to_structure

        structures += [(name, s) for s in map(to_structure, ok[:200]) if s is not None]
    if structures:
        dens = [s.density for _, s in structures]
        sgs = [n for n in map(_space_group, (s for _, s in structures[:200])) if n]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        axes[0].hist(dens, bins=30, alpha=0.7, label="generated", density=True)
        if reference:
            from crystalicl.data.prepare import load_prepared

            name, _, split = reference.partition(":")
            ref = load_prepared(name, split or "test")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rd = [Structure.from_str(c, fmt="cif").density for c in ref["cif"].iloc[:500]]
            axes[0].hist(rd, bins=30, alpha=0.5, label=f"{name} {split}", density=True)
            axes[1].hist(ref["space_group"], bins=np.arange(1, 232), alpha=0.5, label="reference", density=True)
        axes[0].set_xlabel("density (g/cm³)")
        axes[0].legend(fontsize=7)
        axes[1].hist(sgs, bins=np.arange(1, 232), alpha=0.7, label="generated", density=True)
        axes[1].set_xlabel("space group")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run / "distributions.png", dpi=120)
        plt.close(fig)
        images.append(("Density and space-group distributions", "distributions.png"))
        fig, axes = plt.subplots(1, min(4, len(structures)), figsize=(10, 2.8), squeeze=False)
        for ax, (_, s) in zip(axes[0], structures, strict=False):
            n = _space_group(s)
            symbol = space_group(n).symbol if n else "no symmetry found"
            _draw_structure(ax, s, f"{s.composition.reduced_formula} ({symbol})")
        fig.tight_layout()
        fig.savefig(run / "structures.png", dpi=120)
        plt.close(fig)
        images.append(("Generated structures (projection on the ab plane)", "structures.png"))
    md += _paper_tables(_paper_results(), metrics, reference)
    md += [""] + [f"## {t}\n\n![{t}]({f})\n" for t, f in images]
    (run / "report.md").write_text("\n".join(md))
    body = "\n".join(_md_to_html(line) for line in md)
    page = f"<!doctype html><meta charset='utf-8'><title>crystalicl report</title>" \
           f"<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}table{{border-collapse:collapse}}" \
           f"td,th{{border:1px solid #ccc;padding:2px 6px}}</style>{body}"
    (run / "report.html").write_text(page)
    return run / "report.html"


PAPER_DATASET = {"perov5": "P5", "carbon24": "C24", "mp20": "MP20", "mp20_biternary": "MP20", "mpts52": "MPTS52"}
"""Our dataset names to the keys of the paper's tables (a reduced split is reported under its full set's key)."""
UNCOND_COLUMNS = ["valid_composition", "valid_structure", "valid_overall", "cov_recall", "cov_precision",
                  "wdist_density", "wdist_energy", "wdist_num_elements"]
"""The paper's Table 2 columns, in its order; each is a key of ``evaluate_unconditional``'s metrics."""


def _paper_tables(paper: dict, metrics: dict, reference: str | None) -> list[str]:
    """The paper's unconditional rows for the reference dataset, with ours beneath (labelled by protocol)."""
    if not paper or not reference:
        return []
    key = PAPER_DATASET.get(reference.partition(":")[0])
    rows = paper.get("unconditional", {}).get(key)
    if not rows:
        return []
    cols = UNCOND_COLUMNS
    out = ["", f"## Unconditional metrics beside the paper ({key})", "",
           "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    out += [f"| {name} (paper) | " + " | ".join(_fmt(v) for v in vals) + " |" for name, vals in rows.items()]
    for name, m in metrics.items():
        if "cov_recall" in m:
            label = f"crystalicl {name} ({m.get('protocol', '?')} protocol)"
            out.append(f"| {label} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    if reference.startswith("mp20_biternary"):
        out.append("\nmp20_biternary is the binary/ternary part of MP-20: reduced-data figures, not the benchmark.")
    return out


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _md_to_html(line: str) -> str:
    if line.startswith("# "):
        return f"<h1>{html.escape(line[2:])}</h1>"
    if line.startswith("## "):
        return f"<h2>{html.escape(line[3:])}</h2>"
    if line.startswith("|---"):
        return ""
    if line.startswith("|"):
        cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    if line.startswith("!["):
        src = line[line.index("(") + 1:-1]
        return f"<p><img src='{html.escape(src)}' style='max-width:100%'></p>"
    return f"<p>{html.escape(line)}</p>" if line else ""

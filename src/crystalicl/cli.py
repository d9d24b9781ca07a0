"""``crystalicl`` command line: one sub-command per pipeline stage (data → text → ... → report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crystalicl.errors import CrystalICLError


def _data_prepare(a) -> None:
    from crystalicl.data import prepare, sources

    paths = prepare.prepare(a.dataset, workers=a.workers)
    print(f"protocol: {sources.protocol(a.dataset)}")
    for split, p in paths.items():
        fails = prepare.failures(a.dataset, split)
        print(f"{split}: {p}  ({len(fails)} rows could not be used; reasons in {p.with_suffix('.failures.csv')})"
              if len(fails) else f"{split}: {p}")
        for row in fails.head(5).itertuples():
            print(f"  {row.material_id}: {row.error}")


def _data_info(a) -> None:
    from crystalicl.data.registry import DATASETS
    from crystalicl.data.sources import find_split

    for d in DATASETS.values():
        have = [s for s in ("train", "val", "test") if find_split(d.name, s)]
        print(f"{d.name:15s} {d.description}\n{'':15s} conditions: {', '.join(d.conditions)}; "
              f"on disk: {', '.join(have) or 'none'}")


def _encode(a) -> None:
    from pymatgen.core import Structure

    from crystalicl import encode

    for path in a.cif:
        print(encode(Structure.from_file(path), a.format))
        print()


def _decode(a) -> None:
    from crystalicl import decode

    text = sys.stdin.read() if a.text == "-" else Path(a.text).read_text()
    s = decode(text, a.format)
    if a.out:
        s.to(filename=a.out)
        print(f"wrote {a.out}")
    else:
        print(s.to(fmt="cif"))


def _demo(a) -> None:
    from crystalicl.demo import run

    run(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crystalicl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="benchmark datasets").add_subparsers(dest="data_command", required=True)
    q = data.add_parser("prepare", help="parse, symmetrise and write every text format (cached, resumable)")
    q.add_argument("dataset")
    q.add_argument("--workers", type=int, default=None)
    q.set_defaults(func=_data_prepare)
    q = data.add_parser("info", help="list the datasets, their conditions and what is on disk")
    q.set_defaults(func=_data_info)

    from crystalicl.text import FORMATS

    q = sub.add_parser("encode", help="write CIF files as crystal text")
    q.add_argument("cif", nargs="+")
    q.add_argument("--format", choices=FORMATS, default="sgs")
    q.set_defaults(func=_encode)
    q = sub.add_parser("decode", help="read crystal text (file or - for stdin) into a structure")
    q.add_argument("text")
    q.add_argument("--format", choices=FORMATS, default="sgs")
    q.add_argument("--out", help="output file (CIF, POSCAR, ... by extension); default: CIF on stdout")
    q.set_defaults(func=_decode)

    q = sub.add_parser("demo", help="the end-to-end demonstration run by `make demo`")
    q.add_argument("--dataset", default="perov5")
    q.add_argument("--out", default="runs/demo")
    q.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CrystalICLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

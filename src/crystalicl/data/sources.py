"""Finding benchmark splits on disk, downloading them when online, and the offline reduced protocol.

Search order for ``<name>/<split>.csv.gz`` (or ``.csv``): ``$CRYSTALICL_DATA_DIR``, then
``~/.cache/crystalicl/data``. A missing split is downloaded from its public URL into the first writable
of those (set ``CRYSTALICL_OFFLINE=1`` to never try).

Protocols (every result names the one it used):
- ``full``: the original train / val / test splits;
- ``reduced`` (offline, when the train split is unavailable): train on the original ``val`` split minus a
  seeded 5 % hold-out, which serves as ``val``; test on the original ``test``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from crystalicl.data.registry import SPLITS, dataset
from crystalicl.errors import DatasetError

HOLDOUT_FRACTION = 0.05
HOLDOUT_SEED = 0


def data_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("CRYSTALICL_DATA_DIR"):
        dirs.append(Path(os.environ["CRYSTALICL_DATA_DIR"]).expanduser())
    dirs.append(Path.home() / ".cache" / "crystalicl" / "data")
    return dirs


def cache_dir() -> Path:
    """Where prepared data, fingerprints and predictions are cached (``$CRYSTALICL_CACHE_DIR``)."""
    d = Path(os.environ.get("CRYSTALICL_CACHE_DIR", Path.home() / ".cache" / "crystalicl"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def find_split(name: str, split: str) -> Path | None:
    for d in data_dirs():
        for suffix in (".csv.gz", ".csv"):
            p = d / name / f"{split}{suffix}"
            if p.is_file():
                return p
    return None


def _writable_dir() -> Path:
    for d in data_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise DatasetError("no writable data directory; set CRYSTALICL_DATA_DIR to one")


def download_split(name: str, split: str, timeout: float = 30.0) -> Path:
    info = dataset(name)
    url = info.url(split)
    if os.environ.get("CRYSTALICL_OFFLINE"):
        raise DatasetError(f"{name}/{split} is not on disk and CRYSTALICL_OFFLINE is set; download {url} "
                           f"into $CRYSTALICL_DATA_DIR/{name}/ or unset CRYSTALICL_OFFLINE")
    dest = _writable_dir() / name / (split + (".csv.gz" if url.endswith(".gz") else ".csv"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"{name}/{split} is not on disk and downloading {url} failed ({e}); put the file "
                           f"in $CRYSTALICL_DATA_DIR/{name}/{split}.csv[.gz] (CRYSTALICL_DATA_DIR is "
                           f"{os.environ.get('CRYSTALICL_DATA_DIR', 'unset')})") from None
    tmp.rename(dest)
    return dest


def source_path(name: str, split: str, download: bool = True) -> Path:
    """Path of an original split file, downloading it if needed (DatasetError if impossible)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    dataset(name)
    p = find_split(name, split)
    if p is not None:
        return p
    if not download:
        raise DatasetError(f"{name}/{split} not found in {', '.join(map(str, data_dirs()))}")
    return download_split(name, split)


_PROTOCOL_CACHE: dict[str, str] = {}


def protocol(name: str) -> str:
    """``full`` when the original train split is available (on disk or downloadable), else ``reduced``."""
    if name not in _PROTOCOL_CACHE:
        try:
            source_path(name, "train")
            _PROTOCOL_CACHE[name] = "full"
        except DatasetError:
            source_path(name, "val")  # the reduced protocol needs val and test
            source_path(name, "test")
            _PROTOCOL_CACHE[name] = "reduced"
    return _PROTOCOL_CACHE[name]


def protocol_split(name: str, split: str) -> tuple[str, str | None]:
    """(source split file, hold-out part: None | 'keep' | 'holdout') that serves ``split``."""
    if protocol(name) == "full" or split == "test":
        return split, None
    return "val", ("keep" if split == "train" else "holdout")


def holdout_mask(material_ids) -> np.ndarray:
    """Rows of the original val split held out as validation (reduced protocol).

    Decided by a seeded hash of the material id, so the same crystals are held out whichever rows
    a caller still has (raw CSV or prepared cache without its failed rows).
    """
    def held(mid: str) -> bool:
        h = hashlib.blake2b(f"{HOLDOUT_SEED}:{mid}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "little") % 10_000 < HOLDOUT_FRACTION * 10_000

    return np.fromiter((held(str(m)) for m in material_ids), bool, count=len(material_ids))


def read_source(name: str, split: str) -> pd.DataFrame:
    """An original split file as a DataFrame: material_id, cif, and canonical property columns."""
    info = dataset(name)
    path = source_path(name, split)
    try:
        raw = pd.read_csv(path, index_col=0)
    except Exception as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    for col in (info.id_column, info.cif_column):
        if col not in raw.columns:
            raise DatasetError(f"{path} has no column {col!r} (columns: {', '.join(raw.columns)})")
    df = pd.DataFrame({"material_id": raw[info.id_column].astype(str), "cif": raw[info.cif_column]})
    for prop, col in info.columns.items():
        if col in raw.columns:
            df[prop] = pd.to_numeric(raw[col], errors="coerce")
    df.attrs.update(dataset=name, source_split=split, path=str(path))
    return df.reset_index(drop=True)


def select(df: pd.DataFrame, part: str | None) -> pd.DataFrame:
    """Apply the reduced protocol's hold-out to a frame that holds the original val split."""
    if part is None:
        return df
    mask = holdout_mask(df["material_id"].tolist())
    return df[mask if part == "holdout" else ~mask].reset_index(drop=True)


def load_split(name: str, split: str) -> pd.DataFrame:
    """Rows serving ``split`` of ``name`` under the current protocol (raw CIFs and properties)."""
    source, part = protocol_split(name, split)
    df = select(read_source(name, source), part)
    df.attrs.update(dataset=name, split=split, protocol=protocol(name), source_split=source)
    return df

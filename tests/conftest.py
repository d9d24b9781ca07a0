import os
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))

# Offline and hermetic: local benchmark copies, no downloads, a per-session cache.
if (SHARED / "data").is_dir():
    os.environ.setdefault("CRYSTALICL_DATA_DIR", str(SHARED / "data"))
if (SHARED / "models").is_dir():
    os.environ.setdefault("CRYSTALICL_MODELS_DIR", str(SHARED / "models"))
os.environ["CRYSTALICL_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    os.environ["CRYSTALICL_CACHE_DIR"] = str(tmp_path_factory.mktemp("crystalicl-cache"))


def sample(name: str, split: str = "test", n: int = 40, seed: int = 0):
    """A seeded sample of real rows from a benchmark split (raw CIF and properties)."""
    from crystalicl.data.sources import read_source

    df = read_source(name, split)
    return df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def perov_instructions(tmp_path_factory):
    """Zero-shot SGS instructions for 64 real Perov-5 crystals."""
    import json

    from crystalicl.data.prepare import prepare_one
    from crystalicl.instructions import write_jsonl
    from crystalicl.prompts import DEFAULT

    d = tmp_path_factory.mktemp("ins")
    df = sample("perov5", "val", n=64)
    recs = []
    for m, c in zip(df.material_id, df.cif, strict=True):
        r = prepare_one(m, c)
        recs.append({"prompt": DEFAULT.generation(f"The chemical formula is {r['formula']}.", "sgs"),
                     "response": r["sgs"], "task": "zero-shot"})
    path = d / "train.jsonl"
    write_jsonl(recs, path)
    (d / "train.jsonl.meta.json").write_text(json.dumps({"format": "sgs"}))
    return path


@pytest.fixture(scope="module")
def tiny_model(perov_instructions, tmp_path_factory):
    """(model directory, training metrics) of a compact model trained 40 steps on ``perov_instructions``."""
    from crystalicl.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny")
    m = train(TrainConfig(data=str(perov_instructions), out=str(out), max_steps=40, batch_size=8, log_every=5,
                          save_every=20), progress=False)
    return out, m

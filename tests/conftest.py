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

"""Dataset registry, offline reduced protocol, and prepare (failures reported, resume after interruption)."""

import gzip
import os

import pandas as pd
import pytest
from conftest import sample

from crystalicl import DatasetError
from crystalicl.data import prepare, sources
from crystalicl.data.registry import DATASETS, dataset


def test_registry_lists_the_benchmarks_with_their_conditions():
    assert set(DATASETS) == {"mp20", "mp30", "perov5", "carbon24", "mpts52", "mp20_biternary"}
    assert dataset("perov5").conditions == ("formula", "space_group")
    assert "band_gap" in dataset("mp20").conditions
    assert dataset("carbon24").cov_cutoffs == (0.2, 4.0)
    with pytest.raises(DatasetError, match="unknown dataset"):
        dataset("mp21")


def test_offline_reduced_protocol_splits_val_into_train_and_holdout():
    assert sources.protocol("perov5") == "reduced"
    train, val, test = (sources.load_split("perov5", s) for s in ("train", "val", "test"))
    raw_val = sources.read_source("perov5", "val")
    assert len(train) + len(val) == len(raw_val)
    assert not set(train.material_id) & set(val.material_id)
    assert 0.03 < len(val) / len(raw_val) < 0.07
    assert len(test) == 3785 and train.attrs["protocol"] == "reduced"
    assert {"heat_of_formation", "band_gap"} <= set(train.columns)


def test_missing_split_offline_names_the_url_and_variable():
    with pytest.raises(DatasetError, match=r"raw\.githubusercontent\.com.*CRYSTALICL_DATA_DIR"):
        sources.source_path("mp20", "train")


def test_prepare_one_real_rows_and_bad_rows():
    row = sample("mp20_biternary", n=1).iloc[0]
    out = prepare.prepare_one(row.material_id, row.cif)
    assert out["error"] is None and out["sgs"].splitlines()[0] == out["sg_symbol"]
    assert out["formula"] == row.cif.split("data_")[1].split()[0] or out["formula"]
    bad = prepare.prepare_one("x", "data_broken\n_cell_length_a 1\n")
    assert bad["error"] and bad["error"].startswith("unreadable CIF")


def _tiny_dataset(tmp_path, n=9):
    df = sample("perov5", n=n)
    df.loc[3, "cif"] = "not a cif"
    d = tmp_path / "data" / "perov5"
    d.mkdir(parents=True)
    with gzip.open(d / "test.csv.gz", "wt") as f:
        df.rename(columns={"heat_of_formation": "heat_ref", "band_gap": "dir_gap"}).to_csv(f)
    return df


def test_prepare_reports_failures_and_resumes_after_interruption(tmp_path, monkeypatch):
    df = _tiny_dataset(tmp_path)
    monkeypatch.setenv("CRYSTALICL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRYSTALICL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "CHUNK", 4)
    calls = {"n": 0}
    real = prepare.prepare_one

    def flaky(mid, cif):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # interrupted in the middle of the second chunk
        return real(mid, cif)

    monkeypatch.setattr(prepare, "prepare_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_source("perov5", "test", workers=1, progress=False)
    parts = sorted(os.listdir(tmp_path / "cache" / "prepared" / "perov5" / "test.parts"))
    assert parts == ["00000.pkl"]  # the finished chunk survived, the broken one left nothing
    calls["n"] = 100
    path = prepare.prepare_source("perov5", "test", workers=1, progress=False)
    assert calls["n"] == 100 + len(df) - 4  # the first chunk was not redone
    out = pd.read_parquet(path)
    fails = prepare.failures("perov5", "test")
    assert list(fails.material_id) == [df.material_id[3]] and "unreadable CIF" in fails.error[0]
    assert sorted(out.material_id) == sorted(set(df.material_id) - {df.material_id[3]})
    assert out.space_group.between(1, 230).all() and out.sgs_wyckoff.str.len().gt(20).all()
